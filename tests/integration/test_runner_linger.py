"""The stage runner's producer lingers long (``Settings.stage_linger_ms``) because every
batch ends in a flush, and a flush sends what is queued at once: librdkafka ignores linger
while flushing. Were that not so, each batch would wait the whole linger."""

from __future__ import annotations

import time

import pytest

from pipeline.kafka import ensure_topics, make_producer
from pipeline.serde import registry
from pipeline.settings import Settings

pytestmark = pytest.mark.broker


def test_a_flush_sends_at_once_whatever_the_runners_linger(bootstrap: str) -> None:
    settings = Settings(topic_prefix="linger.", group_prefix="linger")
    assert settings.stage_linger_ms >= 1000
    ensure_topics(bootstrap, settings, registry())
    producer = make_producer(bootstrap, settings, **{"linger.ms": settings.stage_linger_ms})
    topic = settings.topic("payer.inbound.v1")
    producer.produce(topic, key=b"warm", value=b"x")
    assert producer.flush(30) == 0  # connected, the topic's leader known
    took = []
    for i in range(5):
        producer.produce(topic, key=f"k{i}".encode(), value=b"x")
        started = time.monotonic()
        assert producer.flush(30) == 0
        took.append(time.monotonic() - started)
    assert max(took) < settings.stage_linger_ms / 1000 / 2, took
