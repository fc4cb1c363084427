"""Changelog topics: how a partition's state is written out and read back on assignment.

Every write to a changelogged store is produced, with the batch's output, to partition N
of ``<service>.<store>.changelog`` (N: the input partition the write came from), keyed by
the row it changed. On assignment the new owner rebuilds the partition's store by
applying that changelog partition from the offset its local file has already applied.

Where to stop reading is not taken from the broker's end offset: the embedded Tansu
broker reports end offsets and high watermarks low (measured: 1 for a partition holding
6,667 records). The restorer first produces a marker record to the partition and reads
until it has passed the marker's offset (returned by the producer's acknowledgement):
every change acknowledged before the assignment lies before the marker.

The topics are created with ``cleanup.policy=compact`` so Apache Kafka keeps the newest
record per key; Tansu accepts the setting but does not compact (measured: every record of
100 keys written 67 times each was read back), so on it a restore reads every change.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.errors import TransientError
from pipeline.kafka import client_config, consumer_config
from pipeline.settings import Settings
from pipeline.state import ChangelogStore

log = logging.getLogger(__name__)

MARKER_KEY = b"\x00claimflow.restore-marker"
"""Key of the restore markers (compaction keeps the newest); never a store key."""


def changelog_topic(service: str, store: str) -> str:
    """The logical name (no prefix) of a store's changelog topic."""
    return f"{service}.{store}.changelog"


def ensure_changelog(
    bootstrap: str, settings: Settings, source_topic: str, topic: str, timeout: float = 30.0
) -> int:
    """Create the changelog with as many partitions as ``source_topic`` (the topic whose
    partitions it follows); returns that count. An existing changelog with another count
    is an error: its partitions would no longer line up with the source's."""
    admin = AdminClient(client_config(bootstrap, settings))
    deadline = time.monotonic() + timeout
    while True:
        meta = admin.list_topics(timeout=5).topics
        source = meta.get(settings.topic(source_topic))
        if source is not None and source.partitions:
            break
        if time.monotonic() > deadline:
            raise TransientError(f"topic {settings.topic(source_topic)} does not exist")
        time.sleep(0.2)
    partitions = len(source.partitions)
    existing = meta.get(settings.topic(topic))
    if existing is not None:
        if len(existing.partitions) != partitions:
            raise TransientError(
                f"changelog {settings.topic(topic)} has {len(existing.partitions)} partitions, "
                f"{settings.topic(source_topic)} has {partitions}: they must match"
            )
        return partitions
    new = NewTopic(
        settings.topic(topic),
        num_partitions=partitions,
        replication_factor=-1,
        config={
            "cleanup.policy": "compact",
            "max.message.bytes": str(settings.max_message_bytes),
        },
    )
    for future in admin.create_topics([new], request_timeout=15).values():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return partitions


@dataclass(frozen=True)
class Restored:
    """What one restore did: records applied, from which offset, and how long it took."""

    topic: str
    partition: int
    start: int
    applied: int
    seconds: float


class Restorer:
    """Reads changelog partitions back into stores (one consumer, assigned, no group)."""

    def __init__(self, bootstrap: str, settings: Settings, producer: Any) -> None:
        self.settings = settings
        self.producer = producer
        self.consumer = Consumer(
            consumer_config(
                bootstrap,
                f"{settings.group_prefix}.restore.{uuid.uuid4().hex[:8]}",
                settings,
            )
        )

    def marker(self, topic: str, partition: int, timeout: float) -> int:
        """Produce a marker to the partition; its offset once acknowledged."""
        got: list[Any] = []
        self.producer.produce(
            topic,
            key=MARKER_KEY,
            value=b"",
            partition=partition,
            on_delivery=lambda err, msg: got.append((err, msg)),
        )
        self.producer.flush(timeout)
        if not got or got[0][0] is not None:
            raise TransientError(f"restore marker to {topic}[{partition}] not acknowledged")
        return int(got[0][1].offset())

    def restore(
        self, store: ChangelogStore, logical_topic: str, partition: int, stall: float = 60.0
    ) -> Restored:
        """Apply the partition's changes after the store's position, up to a new marker.
        A long changelog takes as long as it takes; a restore that reads nothing for
        ``stall`` seconds fails (TransientError: the service restarts)."""
        topic = self.settings.topic(logical_topic)
        started = time.perf_counter()
        start = store.position()
        end = self.marker(topic, partition, stall)
        applied = 0
        if start < end:
            self.consumer.assign([TopicPartition(topic, partition, start)])
            deadline = time.monotonic() + stall
            position = start
            try:
                while position < end:
                    if time.monotonic() > deadline:
                        raise TransientError(
                            f"restore of {topic}[{partition}] read nothing for {stall:g} s at "
                            f"offset {position} of {end}"
                        )
                    batch = self.consumer.consume(1000, 0.5)
                    if batch:
                        deadline = time.monotonic() + stall
                    for m in batch:
                        error = m.error()
                        if error is not None:
                            if error.fatal():
                                raise TransientError(f"restore consumer: {error}")
                            continue
                        offset = m.offset() or 0
                        position = offset + 1
                        if offset >= end:
                            break
                        key = m.key()
                        if key == MARKER_KEY or key is None:
                            continue
                        with store.atomic():
                            store.apply(key.decode(), m.value())
                        applied += 1
            finally:
                self.consumer.unassign()
        store.take_changes()  # a restore's writes are already in the changelog
        store.set_position(end + 1)
        store.commit()
        return Restored(topic, partition, start, applied, time.perf_counter() - started)

    def close(self) -> None:
        self.consumer.close()
