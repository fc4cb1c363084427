"""Record sizes along the chain: bytes per record and records per encounter, by topic.

N encounters (the pipeline benchmark's mix) go through the embedded broker and every service;
once each is settled, every topic is read from the beginning and its records counted and
weighed (value bytes as written, Avro single-object encoding; keys and headers apart). What a
topic costs the broker and each consumer grows with both figures, so a record that embeds its
upstream records, or a topic that carries nothing a consumer reads, shows here. The stores'
changelog topics (``<service>.<store>.changelog``) are weighed too and counted apart
(``changelog_records_per_encounter``): the broker stores and the stages produce them as well.
Environment: BENCH_RECORDS_N (default 500); BENCH_RECORDS_PARTITIONS (default 1, as `claimflow
run` creates the topics on the embedded broker; 0: schemas/topics.yaml's counts).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from bench.bench_pipeline import PAYER_SIM_VALIDATE_EVERY, publish, say, wait_settled
from pipeline.broker import EMBEDDED_PARTITIONS, EmbeddedBroker
from pipeline.kafka import client_config, ensure_topics, make_producer
from pipeline.serde import registry
from pipeline.settings import Settings
from pipeline.supervisor import Supervisor
from pipeline.tracker import Tracker
from sim.ehr import generate

PREFIX = "rec."


def weigh(bootstrap: str, settings: Settings, topics: list[str]) -> dict[str, dict[str, int]]:
    """Records and value/key/header bytes of each topic, read from offset 0 until two quiet
    polls in a row (the pipeline is settled: nothing more is being written)."""
    consumer = Consumer(
        {
            **client_config(bootstrap, settings),
            "group.id": f"{PREFIX}weigh",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
        }
    )
    meta = consumer.list_topics(timeout=10)
    topics = [*topics, *changelogs(settings, meta.topics)]
    consumer.assign(
        [
            TopicPartition(settings.topic(t), p, OFFSET_BEGINNING)
            for t in topics
            if settings.topic(t) in meta.topics
            for p in meta.topics[settings.topic(t)].partitions
        ]
    )
    records: Counter[str] = Counter()
    values: Counter[str] = Counter()
    overhead: Counter[str] = Counter()
    quiet = 0
    while quiet < 2:
        batch = consumer.consume(5000, 1.0)
        quiet = 0 if batch else quiet + 1
        for m in batch:
            if m.error():
                continue
            topic = (m.topic() or "").removeprefix(settings.topic_prefix)
            records[topic] += 1
            values[topic] += len(m.value() or b"")
            overhead[topic] += len(m.key() or b"") + sum(
                len(k) + len(v or b"") for k, v in m.headers() or []
            )
    consumer.close()
    return {
        t: {"records": records[t], "value_bytes": values[t], "key_header_bytes": overhead[t]}
        for t in sorted(records)
    }


def changelogs(settings: Settings, existing: Iterable[str]) -> list[str]:
    """The stores' changelog topics among ``existing`` (full names), by logical name."""
    return sorted(
        t.removeprefix(settings.topic_prefix)
        for t in existing
        if t.startswith(settings.topic_prefix) and t.endswith(".changelog")
    )


def main() -> dict[str, Any]:
    return measure(int(os.environ.get("BENCH_RECORDS_N", "500")))


def measure(n: int = 500) -> dict[str, Any]:
    messages = list(generate(n, seed=101, fmt="mix"))
    topics = list(registry().topics)
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        bootstrap = broker.bootstrap
        # as `claimflow run` and `bench pipeline` create them on the embedded broker
        partitions = int(os.environ.get("BENCH_RECORDS_PARTITIONS", EMBEDDED_PARTITIONS))
        settings = Settings(topic_prefix=PREFIX, group_prefix="rec", partitions=partitions)
        ensure_topics(bootstrap, settings, registry())
        sup = Supervisor(
            bootstrap,
            Path(tmp),
            env={
                "CLAIMFLOW_TOPIC_PREFIX": PREFIX,
                "CLAIMFLOW_GROUP_PREFIX": "rec",
                "CLAIMFLOW_PARTITIONS": str(partitions),
                "CLAIMFLOW_LOG_LEVEL": "WARNING",
                "CLAIMFLOW_PAYER_SIM__VALIDATE_EVERY": str(PAYER_SIM_VALIDATE_EVERY),
            },
        )
        sup.start()
        producer = make_producer(bootstrap, settings)
        try:
            tracker = Tracker(bootstrap, settings)
            batch = {s for s, _, _ in messages}
            tracker.ledger.sent.update(batch)
            started = time.time()
            say(f"{n} encounters, then every topic weighed")
            publish(producer, settings, messages, 0, {})
            settled = wait_settled(tracker, batch, started, timeout=600)
            summary = tracker.ledger.summary()
            tracker.close()
            by_topic = weigh(bootstrap, settings, topics)
        finally:
            sup.stop()
            producer.flush(10)
            del producer
    encounters = summary["collected"] or 1
    contract = {t: w for t, w in by_topic.items() if not t.endswith(".changelog")}
    total_records = sum(t["records"] for t in contract.values())
    changelog_records = sum(w["records"] for t, w in by_topic.items() if t not in contract)
    total_bytes = sum(t["value_bytes"] + t["key_header_bytes"] for t in contract.values())
    return {
        "encounters": n,
        "partitions_per_topic": partitions or "topics.yaml",
        "settled": settled,
        "summary": summary,
        # value bytes per record, and records per collected encounter, by topic
        "by_topic": {
            t: {
                **w,
                "bytes_per_record": round(w["value_bytes"] / w["records"]),
                "records_per_encounter": round(w["records"] / encounters, 3),
            }
            for t, w in by_topic.items()
        },
        "records_per_encounter": round(total_records / encounters, 2),
        "bytes_per_encounter": round(total_bytes / encounters),
        "changelog_records_per_encounter": round(changelog_records / encounters, 2),
    }
