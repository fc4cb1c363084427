"""The claims stage secures the control numbers of every partition of a batch with one
wait for the changelog, before it delivers any interchange: on the real broker, every
interchange is in its partition's changelog and in its partition's file when its adapter
is handed it, and each file records how far it has the changelog."""

from __future__ import annotations

import sqlite3
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from unit.test_claims_837 import COVERAGE, coded_encounter, validated

from pipeline.changelog import changelog_topic, ensure_changelog
from pipeline.kafka import ensure_topics, make_producer
from pipeline.serde import registry
from pipeline.stage import Incoming
from services.claims.adapters import DeliveryMeta, Receipt, Router
from services.claims.app import CONTROL_STORE, VALIDATED, ClaimsStage
from services.claims.control import owner
from services.claims.settings import ClaimsOptions, ClaimsSettings

pytestmark = pytest.mark.broker
REG = registry()
PARTITIONS = 3


class Flushes:
    """The runner's producer, counting the waits for the broker's acknowledgements."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self.count = 0

    def produce(self, *args: Any, **kwargs: Any) -> None:
        self.producer.produce(*args, **kwargs)

    def poll(self, timeout: float) -> int:
        return int(self.producer.poll(timeout))

    def flush(self, timeout: float) -> int:
        self.count += 1
        return int(self.producer.flush(timeout))


class Witness:
    """An adapter that notes, at each delivery, how many waits there were and whether the
    interchange's row is committed in the file of the partition that numbered it."""

    name = "witness"

    def __init__(self, flushes: Flushes, files: dict[int, Path]) -> None:
        self.flushes = flushes
        self.files = files
        self.seen: list[tuple[int, int, bool]] = []  # (number, waits so far, in its file)

    def deliver(self, interchange: bytes, meta: DeliveryMeta) -> Receipt:
        path = self.files[owner(meta.control_number, PARTITIONS)]
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = db.execute(
                "SELECT 1 FROM interchanges WHERE icn = ?", (meta.control_number,)
            ).fetchone()
        finally:
            db.close()
        self.seen.append((meta.control_number, self.flushes.count, row is not None))
        return Receipt(self.name, str(meta.control_number))


def test_one_wait_secures_every_partitions_numbers_before_any_delivery(
    bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    settings = ClaimsSettings(
        topic_prefix=prefix,
        group_prefix=prefix.rstrip("."),
        state_dir=tmp_path / "state",
        claims=ClaimsOptions(routes={"*": "witness"}, max_claims_per_interchange=2),
    )
    ensure_topics(bootstrap, settings, REG)
    changelog = changelog_topic(ClaimsStage.name, CONTROL_STORE)
    ensure_changelog(bootstrap, settings, VALIDATED, changelog)
    flushes = Flushes(make_producer(bootstrap, settings))
    claims = ClaimsStage(settings, None, Router({}, {}), sleep=lambda _: None)
    files = {p: claims.control_stores.path(p) for p in range(PARTITIONS)}
    witness = Witness(flushes, files)
    claims.router = Router({"*": witness.name}, {witness.name: witness})
    claims.attach(flushes)

    batch = []
    for i in range(12):
        verdict = validated(coded_encounter(f"ENC-SECURE-{i}", coverage=COVERAGE))
        part = zlib.crc32(verdict.encounter_id.encode()) % PARTITIONS
        raw = REG.encode(VALIDATED, verdict)
        batch.append(Incoming(VALIDATED, verdict.encounter_id, verdict, raw, {}, part, i, 0))
    assert {m.partition for m in batch} == set(range(PARTITIONS))
    outs = list(claims.handle_batch(batch))
    assert sum(o.topic == "claims.submitted.v1" for o in outs) == 12

    # Every partition numbered interchanges; one wait secured them all, before the first
    # delivery, and each was committed to its partition's file by then.
    numbers = [n for n, _, _ in witness.seen]
    assert {owner(n, PARTITIONS) for n in numbers} == set(range(PARTITIONS))
    assert len(numbers) == len(set(numbers)) >= 6
    assert [(waits, stored) for _, waits, stored in witness.seen] == [(1, True)] * len(numbers)
    assert flushes.count == 1

    # The changelog holds each interchange in the partition that numbered it, and each
    # partition's file records how far it has that partition's changelog (a new topic:
    # offsets from 0, one per record).
    claims.on_batch_done()
    positions = {p: claims.numbers(p).position() for p in range(PARTITIONS)}
    claims.close()
    assert all(positions.values())
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"{prefix}check", "enable.auto.commit": False}
    )
    topic = settings.topic(changelog)
    records: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        deadline = time.monotonic() + 30
        while any(len(records[p]) < positions[p] for p in range(PARTITIONS)):
            assert time.monotonic() < deadline, "the changelog could not be read back"
            for m in consumer.consume(100, 0.5):
                assert not m.error()
                assert m.offset() == len(records[m.partition()])
                records[m.partition()].append(m.value() or b"")
    finally:
        consumer.close()
    for n in numbers:
        assert any(f'"icn": {n},'.encode() in v for v in records[owner(n, PARTITIONS)])
