"""The claims service and the payer simulator on the real broker: interchanges per payer,
files dropped for a routed payer, 999/277CA/835 answers, rejections, and control numbers
that stay unique when the claims service is stopped and started again."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from unit.test_claims_837 import COVERAGE, coded_encounter, validated

from pipeline.kafka import ensure_topics, make_producer
from pipeline.models import Coverage
from pipeline.serde import registry
from pipeline.stage import Runner, Stage
from services.claims.acks import parse_277ca, parse_999
from services.claims.app import build_stage
from services.claims.control import owner
from services.claims.settings import ClaimsOptions, ClaimsSettings
from services.x12.validate import validate_x12
from sim.payer_app import PayerSimOptions, PayerSimStage

pytestmark = pytest.mark.broker
REG = registry()
MEDICARE = Coverage(
    payer_id="MEDICARE_B", payer_name="Medicare Part B", plan_type="MB", member_id="1EG4TE5MK73"
)


@contextmanager
def running(stage: Stage, settings: ClaimsSettings, bootstrap: str) -> Iterator[Runner]:
    runner = Runner(stage, settings, bootstrap)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        yield runner
    finally:
        runner.stopping.set()
        thread.join(20)


def publish(bootstrap: str, settings: ClaimsSettings, ids: list[str], coverage: Coverage) -> None:
    producer = make_producer(bootstrap, settings)
    for encounter_id in ids:
        verdict = validated(coded_encounter(encounter_id, coverage=coverage))
        producer.produce(
            settings.topic("encounters.validated.v1"),
            key=encounter_id.encode(),
            value=REG.encode("encounters.validated.v1", verdict),
        )
    assert producer.flush(10) == 0


class Reader:
    """Reads a topic from the beginning, keeping every decoded record."""

    def __init__(self, bootstrap: str, settings: ClaimsSettings, topic: str) -> None:
        self.topic = topic
        self.records: list[object] = []
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"reader-{settings.topic_prefix}{topic}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 100,
            }
        )
        name = settings.topic(topic)
        meta = self.consumer.list_topics(name, timeout=10)
        self.consumer.assign(
            [TopicPartition(name, p, OFFSET_BEGINNING) for p in meta.topics[name].partitions]
        )

    def until(self, done: object, timeout: float = 60) -> list[object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not done(self.records):  # type: ignore[operator]
            for m in self.consumer.consume(200, 0.2):
                if not m.error():
                    self.records.append(REG.decode(self.topic, m.value() or b""))
        return self.records

    def close(self) -> None:
        self.consumer.close()


def test_claims_are_batched_delivered_answered_and_numbered_once_across_a_restart(
    bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    outbox = tmp_path / "sftp-out"
    settings = ClaimsSettings(
        topic_prefix=prefix,
        group_prefix=prefix.rstrip("."),
        state_dir=tmp_path / "state",
        batch_size=200,
        claims=ClaimsOptions(
            routes={"MEDICARE_B": "filedrop", "*": "simulator"},
            adapters={"filedrop": {"directory": str(outbox)}},
            max_claims_per_interchange=10,
        ),
    )
    ensure_topics(bootstrap, settings, REG)
    submitted = Reader(bootstrap, settings, "claims.submitted.v1")
    interchanges = Reader(bootstrap, settings, "claims.interchanges.v1")
    inbound = Reader(bootstrap, settings, "payer.inbound.v1")
    rejections = Reader(bootstrap, settings, "claims.rejections.v1")
    payer = PayerSimStage(PayerSimOptions(front_end_rejection_rate=0.2))
    first_ids = [f"A-{i}" for i in range(30)]
    publish(bootstrap, settings, first_ids, COVERAGE)
    publish(bootstrap, settings, [f"M-{i}" for i in range(5)], MEDICARE)
    with running(payer, settings, bootstrap):
        with running(build_stage(settings), settings, bootstrap):
            claims = submitted.until(lambda r: len(r) >= 35)
        # The claims service is stopped (its store closed) and started again, on new input.
        publish(bootstrap, settings, [f"B-{i}" for i in range(12)], COVERAGE)
        with running(build_stage(settings), settings, bootstrap):
            claims = submitted.until(lambda r: len(r) >= 47)
            files = inbound.until(
                lambda r: Counter(f.kind for f in r)["277CA"] >= 1
                and sum(1 for f in r if f.kind == "835") >= 1,
                timeout=30,
            )
            time.sleep(2)  # answers for the second run's claims, and their rejections
            files = inbound.until(lambda r: False, timeout=3)
            found = rejections.until(lambda r: False, timeout=3)
    # Each claim event names its interchange, published once on claims.interchanges.v1.
    named = {c.interchange_control_number for c in claims}  # type: ignore[attr-defined]
    records = interchanges.until(lambda r: named <= {i.interchange_control_number for i in r})  # type: ignore[attr-defined]
    texts = {i.interchange_control_number: i.x12 for i in records}  # type: ignore[attr-defined]
    for reader in (submitted, interchanges, inbound, rejections):
        reader.close()
    assert all(c.x12 is None for c in claims)  # type: ignore[attr-defined]

    assert len(claims) == 47 and len({c.claim_id for c in claims}) == 47  # type: ignore[attr-defined]
    by_icn: dict[str, list[object]] = {}
    for claim in claims:
        by_icn.setdefault(claim.interchange_control_number, []).append(claim)  # type: ignore[attr-defined]
    # Every interchange carries one payer's claims, at most 10, and is valid.
    for icn, members in by_icn.items():
        assert len({m.payer_id for m in members}) == 1 and len(members) <= 10  # type: ignore[attr-defined]
        assert validate_x12(texts[icn]) == []
        assert f"*{int(icn)}*X*005010X222A1~" in texts[icn]
        assert all(f"CLM*{m.claim_id}*" in texts[icn] for m in members)  # type: ignore[attr-defined]
    # Numbers are never reused: the second run continued where the first stopped.
    first_run = {c.interchange_control_number for c in claims if c.encounter_id[0] in "AM"}  # type: ignore[attr-defined]
    second_run = {c.interchange_control_number for c in claims if c.encounter_id[0] == "B"}  # type: ignore[attr-defined]
    assert first_run.isdisjoint(second_run)
    # Each partition numbers its own interchanges (``control.owner``): within a partition the
    # second run continued where the first stopped.
    for partition in range(3):
        before = [int(n) for n in first_run if owner(int(n), 3) == partition]
        after = [int(n) for n in second_run if owner(int(n), 3) == partition]
        assert not before or not after or min(after) > max(before)
    # Medicare went to the file drop, one file per interchange; the simulator left it alone.
    medicare = {c.interchange_control_number for c in claims if c.payer_id == "MEDICARE_B"}  # type: ignore[attr-defined]
    dropped = sorted(p.name for p in outbox.iterdir())
    assert dropped == [f"MEDICARE_B.837P.{n}.x12" for n in sorted(medicare)]
    assert all(f.payer_id != "MEDICARE_B" for f in files)  # type: ignore[attr-defined]
    # Every simulator interchange got an accepting 999; rejections match the 277CAs.
    acked = {
        g.group_control_number
        for f in files
        if f.kind == "999"  # type: ignore[attr-defined]
        for g in parse_999(f.body.decode())  # type: ignore[attr-defined]
    }
    assert acked == {str(int(n)) for n in by_icn if n not in medicare}
    rejected_277 = {
        a.claim_id
        for f in files
        if f.kind == "277CA"  # type: ignore[attr-defined]
        for a in parse_277ca(f.body.decode())  # type: ignore[attr-defined]
        if a.rejected
    }
    assert {r.claim_id for r in found} == rejected_277  # type: ignore[attr-defined]
