"""Read a topic's history from the beginning: the plumbing under replays and work lists.

Tansu, the embedded broker, cannot be asked where a time starts (``offsets_for_times``
always answers 0) nor where a partition ends (high watermarks read a few percent low).
So a history is read by assigning every partition at ``OFFSET_BEGINNING``, filtering
record timestamps in the client, and deciding that it is caught up only when every
partition has reported end-of-partition (``enable.partition.eof``) and then nothing more
arrived for a quiet period. Nothing is committed: the group id is throwaway.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import OFFSET_BEGINNING, KafkaError, Producer, TopicPartition

from pipeline.errors import TransientError
from pipeline.kafka import make_consumer, make_producer
from pipeline.models import Model
from pipeline.serde import Registry
from pipeline.settings import Settings

log = logging.getLogger(__name__)

BEGINNING = "BEGINNING"


def parse_from(text: str) -> int | None:
    """``BEGINNING`` -> None; an ISO-8601 time (UTC when no zone) -> epoch milliseconds."""
    if text.strip().upper() == BEGINNING:
        return None
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--from {text!r}: give BEGINNING or an ISO-8601 time such as 2026-11-01T00:00:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


@dataclass(frozen=True)
class Record:
    """One record of a topic's history. ``topic`` is the logical name (no prefix)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    value: bytes


@dataclass
class ReadStats:
    """What a history read saw: records read, kept after the time filter, partitions."""

    read: int = 0
    kept: int = 0
    partitions: int = 0
    seconds: float = 0.0
    per_partition: dict[int, int] = field(default_factory=dict)


def read_history(
    bootstrap: str,
    settings: Settings,
    topic: str,
    *,
    since_ms: int | None = None,
    quiet_s: float = 1.0,
    timeout_s: float = 600.0,
    stats: ReadStats | None = None,
) -> Iterator[Record]:
    """Every record of ``topic`` from the beginning (those at or after ``since_ms`` when
    given), in partition order, until caught up; raises TransientError on a timeout."""
    stats = stats if stats is not None else ReadStats()
    name = settings.topic(topic)
    consumer = make_consumer(
        bootstrap,
        f"{settings.group_prefix}.history.{uuid.uuid4().hex[:8]}",
        settings,
        **{"enable.partition.eof": True},
    )
    started = time.monotonic()
    try:
        meta = consumer.list_topics(name, timeout=10).topics.get(name)
        if meta is None or meta.error is not None or not meta.partitions:
            raise TransientError(f"topic {name} not found")
        partitions = sorted(meta.partitions)
        stats.partitions = len(partitions)
        consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in partitions])
        at_end: set[int] = set()
        last_activity = time.monotonic()
        while True:
            now = time.monotonic()
            if len(at_end) == len(partitions) and now - last_activity >= quiet_s:
                break
            if now - started > timeout_s:
                raise TransientError(
                    f"reading {name}: not caught up after {timeout_s:.0f}s "
                    f"({stats.read} records, {len(at_end)}/{len(partitions)} partitions at end)"
                )
            for m in consumer.consume(500, 0.1):
                error = m.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        at_end.add(m.partition() or 0)
                        last_activity = time.monotonic()
                        continue
                    if error.fatal():
                        raise TransientError(f"reading {name}: {error}")
                    log.warning("consumer error", extra={"error": str(error)})
                    continue
                partition = m.partition() or 0
                at_end.discard(partition)
                last_activity = time.monotonic()
                stats.read += 1
                stats.per_partition[partition] = stats.per_partition.get(partition, 0) + 1
                timestamp = m.timestamp()[1]
                if since_ms is not None and timestamp < since_ms:
                    continue
                stats.kept += 1
                key = m.key()
                yield Record(
                    topic=topic,
                    partition=partition,
                    offset=m.offset() or 0,
                    timestamp_ms=timestamp,
                    key=key.decode("utf-8", "replace") if isinstance(key, bytes) else key,
                    value=m.value() or b"",
                )
    finally:
        stats.seconds = time.monotonic() - started
        consumer.close()


class Publisher:
    """Produces records for a replay and checks that the broker acknowledged every one."""

    def __init__(self, bootstrap: str, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self.producer: Producer = make_producer(bootstrap, settings)
        self.errors: list[str] = []
        self.sent = 0

    def _on_delivery(self, err: object, _msg: object) -> None:
        if err is not None:
            self.errors.append(str(err))

    def publish(self, topic: str, key: str, value: Model) -> None:
        data = self.registry.encode(topic, value)
        while True:
            try:
                self.producer.produce(
                    self.settings.topic(topic),
                    key=key.encode(),
                    value=data,
                    on_delivery=self._on_delivery,
                )
                break
            except BufferError:
                self.producer.poll(0.05)
        self.producer.poll(0)
        self.sent += 1

    def flush(self, on_flushed: Callable[[], None] | None = None) -> None:
        """Wait for every acknowledgment; then run ``on_flushed`` (commit local state)."""
        remaining = self.producer.flush(60)
        if remaining or self.errors:
            raise TransientError(
                f"{remaining} records unacknowledged, delivery errors: {self.errors[:3]}"
            )
        if on_flushed is not None:
            on_flushed()
