"""Scale-out: several validation instances on partitioned topics, instances killed and
added mid-run, and the duplicate-claim edit still sees every claim of a patient.

Phase 1 sends originals while instances are SIGKILLed and added (rebalances); phase 2
sends planted duplicates of some of them, and unrelated claims, to instances started
afterwards on empty state folders: they catch each duplicate only if the partitions'
duplicate history was restored from its changelog. Every encounter gets exactly one
verdict (re-reads repeat its event id), and no claim is flagged that should not be.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from unit.factories import coded, encounter, patch

from pipeline.changelog import changelog_topic
from pipeline.kafka import ensure_topics, make_producer
from pipeline.models import CodedEncounter, Coverage, ValidatedEncounter, event_id
from pipeline.serde import registry
from pipeline.settings import Settings
from pipeline.supervisor import Supervisor
from services.validation.app import BY_PATIENT, CODED
from services.validation.duplicates import DuplicateStore, patient_key

pytestmark = [pytest.mark.broker, pytest.mark.e2e, pytest.mark.timeout(360)]
WAIT_S = 90.0  # per phase; a run on an idle 2-core machine takes ~50 s in all
REG = registry()

PATIENTS = 90  # spread over every partition of the by-patient topic
DUPLICATES = 30
CONTROLS = 30


def original(n: int) -> CodedEncounter:
    enc = encounter(
        encounter_id=f"ENC-SCALE-{n:05d}",
        source_id=f"scale-{n:05d}",
        event_id=event_id("scale", str(n)),
        coverage=Coverage(
            payer_id="00510",
            payer_name="Blue Cross and Blue Shield of Alabama",
            plan_type="BL",
            member_id=f"ZGH{n:09d}",
            group_number="GRP55120",
        ),
    )
    return coded(enc)


def resent(first: CodedEncounter, encounter_id: str) -> CodedEncounter:
    """The same claim sent again under a new encounter id, an hour later: a duplicate."""
    enc = patch(
        first.encounter,
        encounter_id=encounter_id,
        source_id="src-" + encounter_id,
        event_id=event_id("scale", encounter_id),
        received_at=first.encounter.received_at + timedelta(hours=1),
    )
    return patch(first, encounter_id=encounter_id, encounter=enc, event_id="e-" + encounter_id)


class Verdicts:
    """Reads encounters.validated.v1 from the beginning, without a group."""

    def __init__(self, bootstrap: str, settings: Settings) -> None:
        topic = settings.topic("encounters.validated.v1")
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "verdicts", "fetch.wait.max.ms": 20}
        )
        parts = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        self.seen: dict[str, list[ValidatedEncounter]] = defaultdict(list)

    def wait(self, done: Callable[[Verdicts], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done(self):
            if time.monotonic() > deadline:
                return False
            for m in self.consumer.consume(500, 0.2):
                if m.error() is None:
                    v = REG.decode("encounters.validated.v1", m.value())
                    self.seen[v.encounter_id].append(v)
        return True

    def have(self, ids: set[str]) -> Callable[[Verdicts], bool]:
        return lambda v: ids <= set(v.seen)


def send(bootstrap: str, settings: Settings, records: list[CodedEncounter]) -> None:
    producer = make_producer(bootstrap, settings)
    for r in records:
        producer.produce(
            settings.topic(CODED), key=r.encounter_id.encode(), value=REG.encode(CODED, r)
        )
        producer.poll(0)
    assert producer.flush(30) == 0


def test_duplicates_are_caught_across_rebalances_with_state_restored(
    bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    group = prefix.rstrip(".")
    settings = Settings(topic_prefix=prefix, group_prefix=group)
    ensure_topics(bootstrap, settings, REG)
    partitions = REG.topics[BY_PATIENT].partitions
    assert partitions > 1 and REG.topics[CODED].partitions > 1
    originals = [original(n) for n in range(PATIENTS)]
    keys = {patient_key(o) for o in originals}
    assert len(keys) == PATIENTS
    dups = [resent(originals[n * 3], f"ENC-SCALE-DUP-{n:05d}") for n in range(DUPLICATES)]
    controls = [original(PATIENTS + n) for n in range(CONTROLS)]

    sup = Supervisor(
        bootstrap,
        tmp_path,
        env={"CLAIMFLOW_TOPIC_PREFIX": prefix, "CLAIMFLOW_GROUP_PREFIX": group},
        services=(),
        restart=False,
    )
    verdicts = Verdicts(bootstrap, settings)
    try:
        sup.add("validation-1", "validation")
        sup.add("validation-2", "validation")
        # Phase 1: the originals, while one instance is killed and another joins.
        send(bootstrap, settings, originals[: PATIENTS // 3])
        first_third = {o.encounter_id for o in originals[: PATIENTS // 3]}
        assert verdicts.wait(verdicts.have(first_third), WAIT_S), "first originals not validated"
        sup.kill("validation-1")  # SIGKILL: nothing flushed, committed or closed
        sup.add("validation-3", "validation")
        send(bootstrap, settings, originals[PATIENTS // 3 :])
        assert verdicts.wait(verdicts.have({o.encounter_id for o in originals}), WAIT_S), (
            "originals not validated after the rebalance"
        )
        # Phase 2: every instance that saw the originals is gone; fresh instances (empty
        # state folders) get the duplicates and the controls.
        sup.add("validation-4", "validation")
        sup.kill("validation-2")
        sup.kill("validation-3")
        sup.add("validation-5", "validation")
        send(bootstrap, settings, dups + controls)
        everything = {r.encounter_id for r in [*originals, *dups, *controls]}
        assert verdicts.wait(verdicts.have(everything), WAIT_S), (
            f"no verdict for {sorted(everything - set(verdicts.seen))[:5]}"
        )
        assert sup.alive() == {
            "validation-1": False,
            "validation-2": False,
            "validation-3": False,
            "validation-4": True,
            "validation-5": True,
        }
    finally:
        sup.stop()
        verdicts.consumer.close()

    def dup_hits(encounter_id: str) -> list[str]:
        [verdict] = {v.event_id: v for v in verdicts.seen[encounter_id]}.values()
        return [e.message for e in verdict.edits if e.rule_id == "CF-DUP-001"]

    # Nothing lost, no claim twice: one verdict per encounter (a re-read repeats its id).
    assert set(verdicts.seen) == everything
    assert all(len({v.event_id for v in vs}) == 1 for vs in verdicts.seen.values())
    # Every planted duplicate caught, naming its original; nothing else flagged.
    for n, dup in enumerate(dups):
        [message] = dup_hits(dup.encounter_id)
        assert originals[n * 3].encounter_id in message
    for clean in [*originals, *controls]:
        assert dup_hits(clean.encounter_id) == []
    # The fresh instances held no state before: they restored it from the changelog.
    restored = [
        line
        for name in ("validation-4", "validation-5")
        for line in (tmp_path / f"{name}.log").read_text().splitlines()
        if '"state restored"' in line
    ]
    assert restored, "the fresh instances logged no restore"
    files = {
        p.name
        for n in ("validation-4", "validation-5")
        for p in (tmp_path / "state" / n / DuplicateStore.NAME).glob("*.sqlite3")
    }
    assert files == {f"{DuplicateStore.NAME}-p{p}.sqlite3" for p in range(partitions)}
    assert changelog_topic("validation", DuplicateStore.NAME) == "validation.claims-seen.changelog"
    for name in ("validation-4", "validation-5"):
        assert "Traceback" not in (tmp_path / f"{name}.log").read_text()
