"""Scale-out: several coding and validation instances on partitioned topics, instances
killed and added mid-run, and the per-patient state still sees every encounter of a
patient: the duplicate-claim edit (validation) and the HCCs over a member's year (coding).
And several intake instances: the HL7 v2 messages of a hospital visit, sent apart and
keyed by message, still meet one account across a rebalance.

Phase 1 sends originals, and a first visit of some Medicare members, while instances are
SIGKILLed and added (rebalances). Phase 2 sends planted duplicates of some originals, a
second visit of those members, and unrelated controls, to instances started afterwards
on empty state folders: they catch each duplicate, and count the first visit's HCC in the
second visit's, only if the partitions' state was restored from its changelog. Every
encounter is coded once and gets one verdict (a re-read repeats its event id), and
nothing is flagged that should not be.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from unit.factories import dx, encounter, patch, service
from unit.test_charge_capture import CDM_CSV, seg

from pipeline.changelog import changelog_topic
from pipeline.kafka import ensure_topics, make_producer
from pipeline.models import Coverage, Encounter, RawMessage, ValidatedEncounter, event_id
from pipeline.serde import registry
from pipeline.settings import Settings
from pipeline.supervisor import Supervisor
from services.coding.review import BY_PATIENT as CODING_BY_PATIENT
from services.coding.risk_history import RiskHistory
from services.intake.account import AccountStore
from services.intake.app import BY_VISIT, RAW
from services.validation.app import BY_PATIENT
from services.validation.duplicates import DuplicateStore
from sim.ehr import provider_directory

pytestmark = [pytest.mark.broker, pytest.mark.e2e, pytest.mark.timeout(540)]
WAIT_S = 150.0  # per phase; a run on a quiet 2-core machine takes about a minute in all
REG = registry()
COLLECTED = "encounters.collected.v1"

PATIENTS = 60  # spread over every partition of the by-patient topics
DUPLICATES = 20
MEMBERS = 15  # Medicare members with a visit in each phase
CONTROLS = 15


def visit(n: int, **changes: object) -> Encounter:
    fields: dict[str, object] = {
        "encounter_id": f"ENC-SCALE-{n:05d}",
        "source_id": f"scale-{n:05d}",
        "event_id": event_id("scale", str(n)),
        "coverage": Coverage(
            payer_id="00510",
            payer_name="Blue Cross and Blue Shield of Alabama",
            plan_type="BL",
            member_id=f"ZGH{n:09d}",
            group_number="GRP55120",
        ),
    }
    return encounter(**(fields | changes))


def medicare_visit(member: int, n: int, code: str, cpt: str) -> Encounter:
    coverage = Coverage(
        payer_id="MEDICARE_B_AL",
        payer_name="MEDICARE PART B",
        plan_type="MB",
        member_id=f"1EG4TE5MK{member:03d}",
    )
    return visit(n, coverage=coverage, diagnoses=[dx(code, primary=True)], services=[service(cpt)])


def resent(first: Encounter, n: int) -> Encounter:
    """The same visit sent again under a new encounter id, an hour later: a duplicate."""
    return patch(
        first,
        encounter_id=f"ENC-SCALE-DUP-{n:05d}",
        source_id=f"scale-dup-{n:05d}",
        event_id=event_id("scale", "dup", str(n)),
        received_at=first.received_at + timedelta(hours=1),
    )


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

    def wait(self, ids: set[str], timeout: float) -> bool:
        """Until every encounter in ``ids`` has a verdict (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        while not ids <= set(self.seen):
            if time.monotonic() > deadline:
                return False
            for m in self.consumer.consume(500, 0.2):
                if m.error() is None:
                    v = REG.decode("encounters.validated.v1", m.value())
                    self.seen[v.encounter_id].append(v)
        return True

    def one(self, encounter_id: str) -> ValidatedEncounter:
        """The encounter's verdict; re-reads after a kill repeat it under the same id."""
        [verdict] = {v.event_id: v for v in self.seen[encounter_id]}.values()
        return verdict


def send(bootstrap: str, settings: Settings, records: list[Encounter]) -> None:
    producer = make_producer(bootstrap, settings)
    for r in records:
        producer.produce(
            settings.topic(COLLECTED), key=r.encounter_id.encode(), value=REG.encode(COLLECTED, r)
        )
        producer.poll(0)
    assert producer.flush(30) == 0


def logged(path: Path, text: str, timeout: float) -> bool:
    """Until the service's log at ``path`` has a line with ``text`` (bounded)."""
    deadline = time.monotonic() + timeout
    while not (path.exists() and text in path.read_text(errors="replace")):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def ids(records: list[Encounter]) -> set[str]:
    return {r.encounter_id for r in records}


def test_per_patient_state_follows_its_partitions_across_rebalances(
    bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    group = prefix.rstrip(".")
    settings = Settings(topic_prefix=prefix, group_prefix=group)
    ensure_topics(bootstrap, settings, REG)
    for topic in (COLLECTED, "encounters.coded.v1", BY_PATIENT, CODING_BY_PATIENT):
        assert REG.topics[topic].partitions > 1
    originals = [visit(n) for n in range(PATIENTS)]
    dups = [resent(originals[n * 3], n) for n in range(DUPLICATES)]
    first_visits = [medicare_visit(m, 1000 + m, "I50.22", "99214") for m in range(MEMBERS)]
    second_visits = [medicare_visit(m, 2000 + m, "E11.9", "99213") for m in range(MEMBERS)]
    controls = [medicare_visit(100 + m, 3000 + m, "E11.9", "99213") for m in range(CONTROLS)]
    phase_1 = originals + first_visits
    phase_2 = dups + second_visits + controls

    sup = Supervisor(
        bootstrap,
        tmp_path,
        env={"CLAIMFLOW_TOPIC_PREFIX": prefix, "CLAIMFLOW_GROUP_PREFIX": group},
        services=(),
        restart=False,
    )
    verdicts = Verdicts(bootstrap, settings)
    try:
        for name in ("coding-1", "coding-2", "validation-1", "validation-2"):
            sup.add(name, name.partition("-")[0])
        # Phase 1, while an instance of each stage is killed: the survivors take over its
        # partitions, restoring their state from the changelogs.
        half = len(phase_1) // 2
        send(bootstrap, settings, phase_1[:half])
        assert verdicts.wait(ids(phase_1[:half]), WAIT_S), "first half of phase 1 not validated"
        sup.kill("coding-1")  # SIGKILL: nothing flushed, committed or closed
        sup.kill("validation-1")
        send(bootstrap, settings, phase_1[half:])
        assert verdicts.wait(ids(phase_1), WAIT_S), "phase 1 not validated after the rebalance"
        # Phase 2: fresh instances on empty folders join (a rebalance with the survivors,
        # whose revoked partitions are committed and closed), then the survivors are killed.
        for name in ("coding-3", "validation-3"):
            sup.add(name, name.partition("-")[0])
        for name in ("coding-3", "validation-3"):  # joined: partitions assigned to it
            assert logged(tmp_path / f"{name}.log", '"state restored"', WAIT_S), name
        for name in ("coding-2", "validation-2"):
            sup.kill(name)
        send(bootstrap, settings, phase_2)
        everything = ids(phase_1 + phase_2)
        assert verdicts.wait(everything, WAIT_S), (
            f"no verdict for {sorted(everything - set(verdicts.seen))[:5]}"
        )
        alive = {name for name, up in sup.alive().items() if up}
        assert alive == {"coding-3", "validation-3"}
    finally:
        sup.stop()
        verdicts.consumer.close()

    # Nothing lost, no claim twice: one verdict per encounter (a re-read repeats its id).
    assert set(verdicts.seen) == everything
    assert all(len({v.event_id for v in vs}) == 1 for vs in verdicts.seen.values())

    def dup_hits(encounter_id: str) -> list[str]:
        edits = verdicts.one(encounter_id).edits
        return [e.message for e in edits if e.rule_id == "CF-DUP-001"]

    # Every planted duplicate caught, naming its original; nothing else flagged.
    for n, dup in enumerate(dups):
        [message] = dup_hits(dup.encounter_id)
        assert originals[n * 3].encounter_id in message
    for clean in [*originals, *first_visits, *second_visits, *controls]:
        assert dup_hits(clean.encounter_id) == []
    # A member's second visit counts the first visit's heart failure; controls do not.
    for second in second_visits:
        assert verdicts.one(second.encounter_id).coded.hcc == ["HCC38", "HCC226"]
    for control in controls:
        assert verdicts.one(control.encounter_id).coded.hcc == ["HCC38"]
    # The fresh instances held no state: they restored every partition from a changelog.
    for store, names, topic in (
        (DuplicateStore.NAME, ("validation-3",), BY_PATIENT),
        (RiskHistory.NAME, ("coding-3",), CODING_BY_PATIENT),
    ):
        files = {p.name for n in names for p in (tmp_path / "state" / n / store).glob("*.sqlite3")}
        assert files == {f"{store}-p{p}.sqlite3" for p in range(REG.topics[topic].partitions)}
    for name in ("coding-3", "validation-3"):
        log = (tmp_path / f"{name}.log").read_text()
        assert '"state restored"' in log and "Traceback" not in log
    for name in ("coding-2", "validation-2"):  # gave partitions up when the new ones joined
        assert (
            "partitions revoked; their state and offsets committed"
            in (tmp_path / f"{name}.log").read_text()
        )


# --- intake: hospital accounts across instances -------------------------------------------

VISITS = 12  # spread over every partition of the by-visit topic
HL7 = "x-application/hl7-v2+er7"
ROOM = {4: "20250601", 6: "CG", 7: "10120", 10: "3"}
CBC = {4: "20250602", 6: "CG", 7: "30025", 10: "2"}
SURGERY = {4: "20250602", 6: "CG", 7: "36044970", 10: "1", 25: "44970^^C4"}


def hl7(visit: int, kind: str, control: str, *segments: str, **pv1: str) -> RawMessage:
    """One message of visit ``visit`` as the gateway stores it (source id: MSH-4 + MSH-10)."""
    fields = {1: "1", 2: "I", 3: "4N^401^A^STCATH", 4: "E", 7: "1497758544^Chen^Li^^^^^^NPI",
              14: "7", 19: f"V{visit:05d}^^^STCATH", 44: "20250601"}  # fmt: skip
    fields.update({int(k[1:]): v for k, v in pv1.items()})
    pid = {
        1: "1",
        3: f"E{visit:05d}^^^STCATH^MR",
        5: "Neil^Aoife",
        7: "19480312",
        8: "F",
        11: "88 Elm St^^Austin^TX^78704",
    }
    in1 = {1: "1", 3: "84980", 4: "Blue Cross Blue Shield", 15: "BL", 17: "SEL",
           36: f"XOD{visit:09d}"}  # fmt: skip
    control = f"{control}-{visit}"
    text = "\r".join([
        f"MSH|^~\\&|EPICADT|STCATH|CLAIMFLOW|CF|20250604143000||{kind}|{control}|P|2.7",
        seg("PID", pid), seg("PV1", fields), *segments, seg("IN1", in1),
    ])  # fmt: skip
    return RawMessage(
        source_id=f"hl7v2:STCATH:{control}",
        content_type=HL7,
        source_system="EPICADT",
        body=text.encode(),
        received_at=datetime.now(UTC),
    )


def admit(v: int) -> RawMessage:
    return hl7(v, "ADT^A01^ADT_A01", "A0")


def charges(v: int, control: str, *ft1s: dict[int, str]) -> RawMessage:
    lines = [seg("FT1", {1: str(i), **f}) for i, f in enumerate(ft1s, 1)]
    return hl7(v, "DFT^P03^DFT_P03", control, *lines)


def discharge(v: int) -> RawMessage:
    dg1 = seg("DG1", {1: "1", 3: "K35.80^^I10", 15: "1", 26: "Y"})
    pr1 = seg("PR1", {1: "1", 3: "0DTJ4ZZ^^I10P", 5: "20250602"})
    return hl7(v, "ADT^A03^ADT_A03", "A1", dg1, pr1, f45="20250604", f36="01")


def send_raw(bootstrap: str, settings: Settings, records: list[RawMessage]) -> None:
    producer = make_producer(bootstrap, settings)
    for r in records:
        value = REG.encode(RAW, r)
        producer.produce(settings.topic(RAW), key=r.source_id.encode(), value=value)
        producer.poll(0)
    assert producer.flush(30) == 0


class Reader:
    """Reads a topic from the beginning, without a group."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "reader", "fetch.wait.max.ms": 20}
        )
        parts = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])

    def until(self, done: object, read: object, timeout: float) -> bool:
        """Feed each record to ``read`` until ``done()`` (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        while not done():  # type: ignore[operator]
            if time.monotonic() > deadline:
                return False
            for m in self.consumer.consume(500, 0.2):
                if m.error() is None:
                    read(m)  # type: ignore[operator]
        return True


def test_hospital_accounts_follow_their_partitions_across_rebalances(
    bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    """Each visit's ADT^A01, DFT^P03s and ADT^A03 are sent apart, keyed by message (as the
    gateway keys them), to two intake instances; between the charges and the discharge
    one instance is SIGKILLed and a fresh one joins. Each visit is billed once, with every
    charge on it once (a charge resent after the rebalance included), and the fresh
    instance could only know the first charges from the accounts' changelog."""
    group = prefix.rstrip(".")
    settings = Settings(topic_prefix=prefix, group_prefix=group)
    ensure_topics(bootstrap, settings, REG)
    assert REG.topics[RAW].partitions > 1 and REG.topics[BY_VISIT].partitions > 1
    (tmp_path / "cdm.csv").write_text(CDM_CSV)
    (tmp_path / "providers.json").write_text(json.dumps(provider_directory().to_json()))
    sup = Supervisor(
        bootstrap,
        tmp_path,
        env={
            "CLAIMFLOW_TOPIC_PREFIX": prefix,
            "CLAIMFLOW_GROUP_PREFIX": group,
            "CLAIMFLOW_CHARGEMASTER": str(tmp_path / "cdm.csv"),
            "CLAIMFLOW_PROVIDER_DIRECTORY": str(tmp_path / "providers.json"),
        },
        services=(),
        restart=False,
    )
    visits = range(VISITS)
    first = [m for v in visits for m in (admit(v), charges(v, "D1", ROOM, CBC))]
    then = [m for v in visits for m in (charges(v, "D2", SURGERY), charges(v, "D1", ROOM, CBC))]
    last = [discharge(v) for v in visits]
    held: dict[str, int] = {}  # visit -> messages its account holds, from the changelog
    bills: dict[str, list[Encounter]] = defaultdict(list)
    changelog: Reader | None = None
    collected = Reader(bootstrap, settings.topic(COLLECTED))

    def account(m: object) -> None:
        if m.value():  # type: ignore[attr-defined]
            held[m.key().decode()] = len(json.loads(json.loads(m.value())[0]))  # type: ignore[attr-defined]

    def bill(m: object) -> None:
        enc = REG.decode(COLLECTED, m.value())  # type: ignore[attr-defined]
        bills[enc.encounter_id].append(enc)

    try:
        for name in ("intake-1", "intake-2"):
            sup.add(name, "intake")
        for name in ("intake-1", "intake-2"):  # the changelog topic exists once they consume
            assert logged(tmp_path / f"{name}.log", '"consuming"', WAIT_S), name
        changelog = Reader(bootstrap, settings.topic(changelog_topic("intake", AccountStore.NAME)))
        every_visit = {f"STCATH|V{v:05d}" for v in visits}

        def holding(n: int) -> bool:
            return {k for k, count in held.items() if count == n} == every_visit

        send_raw(bootstrap, settings, first)
        assert changelog.until(lambda: holding(2), account, WAIT_S), f"not opened: {held}"
        sup.kill("intake-1")  # SIGKILL: its accounts are in the changelog only
        sup.add("intake-3", "intake")  # empty state folder: joins, restores
        assert logged(tmp_path / "intake-3.log", '"state restored"', WAIT_S)
        # Messages keyed apart may be read in any order: the discharge goes once the
        # charges are on their accounts, else it would be billed first (then a late bill).
        send_raw(bootstrap, settings, then)
        assert changelog.until(lambda: holding(3), account, WAIT_S), f"no charges: {held}"
        send_raw(bootstrap, settings, last)
        expected = {f"STCATH/V{v:05d}" for v in visits}
        assert collected.until(lambda: expected <= set(bills), bill, WAIT_S), sorted(bills)
        assert {name for name, up in sup.alive().items() if up} == {"intake-2", "intake-3"}
    finally:
        sup.stop()
        collected.consumer.close()
        if changelog is not None:
            changelog.consumer.close()

    # One bill per visit (a re-read repeats its event id), nothing late, every charge once.
    assert set(bills) == expected
    for encounter_id, encs in bills.items():
        [enc] = {e.event_id: e for e in encs}.values()
        assert [(s.revenue_code, s.units, s.charge) for s in enc.services] == [
            ("0120", 3.0, Decimal("7200.00")),
            ("0300", 2.0, Decimal("104.00")),  # the resent DFT is not counted again
            ("0360", 1.0, Decimal("14500.00")),
            (None, 1.0, Decimal("0.00")),  # the ICD-10-PCS procedure
        ], encounter_id
    files = {p.name for p in (tmp_path / "state" / "intake-3" / AccountStore.NAME).iterdir()}
    assert files and all(f.startswith(f"{AccountStore.NAME}-p") for f in files)
    log = (tmp_path / "intake-3.log").read_text()
    assert '"state restored"' in log and "Traceback" not in log
    assert (
        "partitions revoked; their state and offsets committed"
        in (tmp_path / "intake-2.log").read_text()
    )
