"""Kafka clients (confluent-kafka) with the settings that suit both Tansu and Apache Kafka."""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.serde import Registry
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def client_config(bootstrap: str, settings: Settings) -> dict[str, Any]:
    """What every client shares: the cluster, security (TLS/SASL) and quiet logs."""
    return {"bootstrap.servers": bootstrap, "log_level": 3, **settings.kafka.client_config()}


def producer_config(bootstrap: str, settings: Settings, **extra: Any) -> dict[str, Any]:
    return {
        **client_config(bootstrap, settings),
        "enable.idempotence": True,  # implies acks=all
        "linger.ms": settings.linger_ms,
        "compression.type": "lz4",
        "message.max.bytes": settings.max_message_bytes,
        **extra,
    }


def consumer_config(bootstrap: str, group: str, settings: Settings, **extra: Any) -> dict[str, Any]:
    return {
        **client_config(bootstrap, settings),
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": max(500, settings.session_timeout_ms // 3),
        # Tansu answers a waiting fetch late; a short wait keeps latency low.
        "fetch.wait.max.ms": settings.fetch_wait_max_ms,
        "partition.assignment.strategy": "range",
        **extra,
    }


def make_producer(bootstrap: str, settings: Settings, **extra: Any) -> Producer:
    return Producer(producer_config(bootstrap, settings, **extra))


def make_consumer(bootstrap: str, group: str, settings: Settings, **extra: Any) -> Consumer:
    return Consumer(consumer_config(bootstrap, group, settings, **extra))


def ensure_topics(
    bootstrap: str, settings: Settings, registry: Registry, timeout: float = 30.0
) -> list[str]:
    """Create every topic in schemas/topics.yaml that does not exist yet; returns those made."""
    admin = AdminClient(client_config(bootstrap, settings))
    deadline = time.monotonic() + timeout
    while True:
        try:
            existing = set(admin.list_topics(timeout=5).topics)
            break
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    wanted = [
        NewTopic(
            settings.topic(spec.name),
            num_partitions=settings.partitions_of(spec),
            replication_factor=-1,
            config={
                "retention.ms": str(spec.retention_ms),
                "max.message.bytes": str(settings.max_message_bytes),
            },
        )
        for spec in registry.topics.values()
        if settings.topic(spec.name) not in existing
    ]
    created = []
    if wanted:
        for name, future in admin.create_topics(wanted, request_timeout=15).items():
            try:
                future.result()
                created.append(name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
    if created:
        log.info("topics created", extra={"count": len(created)})
    return created
