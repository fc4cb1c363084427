"""Scale-out of remittance: several instances on partitioned topics, one killed and others
added mid-run (rebalances), and every payment still meets its claim.

The 835s pay claims of every partition: multi-claim files from the payer simulator's
writer, a claim split over two CLPs, a crossover and the Medigap payment after it, a WO
takeback whose PLB names a claim paid in an earlier file, a forward balance opened in one
file and collected in the next, a payment a cent off (held) and claims that arrive after
their payment. The same inputs run through one ledger in this process (``Matcher``) give
the expected records; the cluster must give exactly those (by event id, and the same
content), no posting twice, and its ledgers, rebuilt from their changelog topics alone,
must say the same about PLBs, net paid, forward balances and the payments still waiting.

With the claims stage: two claims instances (each its own control-number block), the
payer simulator and remittance instances (one killed, one added mid-run) over Medicare
visits with a Medigap plan: every claim is posted, and every primary posting that leaves
the patient something bills the Medigap plan once (postings reach the claims instance that
billed the encounter through ``claims.postings-by-encounter.v1``).

Phases are waited for (bounded) before the next is sent: a PLB naming an earlier file's
claim, or a balance collected in a later file, needs that earlier file handled first, on
one instance as on many.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from e2e.test_scale_out import logged
from unit.factories import MEDICARE_B, MEDIGAP_F, VALIDATED_AT, coded, encounter
from unit.test_remittance_real_payers import CLAIMS as FIXTURE_CLAIMS
from unit.test_remittance_real_payers import FIXTURES, MEDICARE, MEDIGAP

from bench.bench_remittance import PAYER, WHEN, make_835, make_claims
from pipeline.changelog import Restorer, changelog_topic
from pipeline.kafka import ensure_topics, make_producer
from pipeline.models import Model, PayerFile, SubmittedClaim, ValidatedEncounter, event_id
from pipeline.serde import registry
from pipeline.settings import Settings
from pipeline.supervisor import Supervisor
from services.remittance.ledger import Ledger
from services.remittance.matching import Matcher, Output, RemittanceOptions

pytestmark = [pytest.mark.broker, pytest.mark.e2e, pytest.mark.timeout(240)]
WAIT_S = 60.0  # per phase; each takes a few seconds on a quiet 2-core machine
REG = registry()
OUT_TOPICS = (
    "remittance.posted.v1",
    "remittance.denials.v1",
    "remittance.settled.v1",
    "remittance.exceptions.v1",
)
#: Fields of the clock, and of where the file was in payer.inbound.v1 (no topic here).
_NOW_FIELDS = {
    "posted_at",
    "queued_at",
    "detected_at",
    "settled_at",
    "source_partition",
    "source_offset",
}
GRACE_S = 3600.0  # no unmatched-payment report fires during the test (it is not timed)
PER_FILE = 12


def payer_file(payer: str, name: str, body: bytes) -> PayerFile:
    return PayerFile(
        event_id=event_id(payer, name),
        payer_id=payer,
        file_id=name,
        kind="835",
        body=body,
        received_at=WHEN,
    )


def fixture(name: str, payer: str = MEDICARE) -> PayerFile:
    return payer_file(payer, name, (FIXTURES / name).read_bytes())


def bench_files(claims: list[SubmittedClaim], first: int, rng: random.Random) -> list[PayerFile]:
    """Multi-claim 835s (the payer simulator's writer) paying ``claims``, PER_FILE each."""
    files = []
    for n in range(0, len(claims), PER_FILE):
        number = first + n // PER_FILE
        text = make_835([c.claim_id for c in claims[n : n + PER_FILE]], number, rng)
        files.append(payer_file(PAYER, f"BENCH-{number}", text.encode()))
    return files


class Phase:
    """What one phase sends: claims, then payer files."""

    def __init__(self, claims: Iterable[SubmittedClaim], files: Iterable[PayerFile]) -> None:
        self.claims = list(claims)
        self.files = list(files)


def phases() -> list[Phase]:
    rng = random.Random(20)
    bench = make_claims(6 * PER_FILE + 1)
    late = bench[PER_FILE : PER_FILE + 4]  # their payments come in phase 1, they in phase 2
    never = bench[-1]  # a payment whose claim never comes: it waits
    on_time = [c for c in bench if c not in late and c is not never]
    by_id = {c.claim_id: c for c in FIXTURE_CLAIMS}
    return [
        Phase(
            [*on_time, *FIXTURE_CLAIMS],
            [
                *bench_files(bench[: 3 * PER_FILE], 1, rng),
                fixture("bpr16_impossible_date.835"),  # PCN1001 (its CLP07 named later), 1002
                fixture("split_claim.835"),  # PCN2001 over two CLPs
                fixture("medicare_crossover.835"),  # PCN4001, Medicare as primary
            ],
        ),
        Phase(
            late,
            [
                *bench_files([*bench[3 * PER_FILE : 6 * PER_FILE], never], 10, rng),
                fixture("plb_wo_takeback.835"),  # PCN1003; a WO naming PCN1001's CLP07
                fixture("medigap_secondary.835", MEDIGAP),  # PCN4001, the Medigap plan
                fixture("plb_forward_balance_1.835"),  # PCN3001; WO again, FB opened
            ],
        ),
        Phase(
            [by_id["PCN1002"]],  # sent again: a repeat changes nothing
            [
                fixture("plb_forward_balance_2.835"),  # PCN3002; the FB collected
                fixture("two_payments_one_off_by_a_cent.835"),  # PCN1001 held, PCN1002 paid
            ],
        ),
    ]


def comparable(topic: str, key: str, value: Model) -> tuple[str, str, dict[str, Any]]:
    data = {k: v for k, v in value.model_dump(mode="json").items() if k not in _NOW_FIELDS}
    return topic, key, data


def expected_records(tmp_path: Path, plan: list[Phase]) -> tuple[dict[str, Any], Ledger]:
    """What one ledger in one process gives for the same inputs, by event id."""
    ledger = Ledger(tmp_path / "reference.sqlite3")
    matcher = Matcher(ledger, options=RemittanceOptions(unmatched_grace_s=GRACE_S))
    outs: list[Output] = []
    for phase in plan:
        for claim in phase.claims:
            outs += matcher.claim(claim)
        for file in phase.files:
            outs += matcher.payer_file(file)
    ledger.commit()
    return {o.value.event_id: comparable(*o) for o in outs}, ledger  # type: ignore[attr-defined]


class Records:
    """Reads topics from the beginning, without a group: every copy of every record (a
    batch read again after a kill repeats its event ids)."""

    def __init__(self, bootstrap: str, settings: Settings, topics: Iterable[str]) -> None:
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "records", "fetch.wait.max.ms": 20}
        )
        assigned = []
        for logical in topics:
            topic = settings.topic(logical)
            parts = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
            assigned += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts]
        self.consumer.assign(assigned)
        self.prefix = len(settings.topic_prefix)
        #: event id -> every copy read, as (topic, key, value)
        self.seen: dict[str, list[tuple[str, str, Any]]] = {}

    def until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Read until ``done()`` (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                return False
            for m in self.consumer.consume(500, 0.2):
                if m.error() is None:
                    topic = (m.topic() or "")[self.prefix :]
                    value = REG.decode(topic, m.value())
                    copy = (topic, (m.key() or b"").decode(), value)
                    self.seen.setdefault(value.event_id, []).append(copy)  # type: ignore[attr-defined]
        return True

    def wait(self, ids: set[str], timeout: float) -> bool:
        """Until every event id in ``ids`` has been read."""
        return self.until(lambda: ids <= set(self.seen), timeout)

    def by_claim(self, topic: str) -> dict[str, list[Any]]:
        """The values of one topic by claim id, each event once."""
        out: dict[str, list[Any]] = {}
        for (where, _, value), *_ in self.seen.values():
            if where == topic:
                out.setdefault(value.claim_id, []).append(value)
        return out


def send(bootstrap: str, settings: Settings, phase: Phase) -> None:
    producer = make_producer(bootstrap, settings)
    for claim in phase.claims:
        topic = "claims.submitted.v1"
        producer.produce(
            settings.topic(topic), key=claim.claim_id.encode(), value=REG.encode(topic, claim)
        )
    for file in phase.files:
        topic = "payer.inbound.v1"
        key = f"{file.payer_id}:{file.file_id}".encode()
        producer.produce(settings.topic(topic), key=key, value=REG.encode(topic, file))
    assert producer.flush(30) == 0


def rebuilt(bootstrap: str, settings: Settings, folder: Path) -> list[Ledger]:
    """Every partition of both halves of the ledger, rebuilt from its changelog alone."""
    producer = make_producer(bootstrap, settings)
    restorer = Restorer(bootstrap, settings, producer)
    ledgers = []
    try:
        for name, source in (
            (Ledger.CLAIMS, "claims.submitted.v1"),
            (Ledger.PAYERS, "remittance.payer-payments.v1"),
        ):
            for partition in range(REG.topics[source].partitions):
                ledger = Ledger(folder / f"{name}-p{partition}.sqlite3", changelog=True)
                restorer.restore(ledger, changelog_topic("remittance", name), partition)
                ledgers.append(ledger)
    finally:
        restorer.close()
    return ledgers


def plb_view(ledgers: list[Ledger], claim_ids: Iterable[str]) -> dict[str, Any]:
    applied = sorted(
        (tuple(sorted(a.items())) for led in ledgers for a in led.plb_applications()), key=str
    )
    return {
        "applied": applied,
        "net": {c: sum((led.net_paid(c) for led in ledgers), Decimal(0)) for c in claim_ids},
        "forward_balances": {
            p: sum((led.forward_balance(p) for led in ledgers), Decimal(0))
            for p in (MEDICARE, MEDIGAP, PAYER)
        },
        "waiting": sum(led.waiting_count() for led in ledgers),
    }


def test_every_payment_meets_its_claim_across_instances_and_rebalances(
    bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    group = prefix.rstrip(".")
    settings = Settings(topic_prefix=prefix, group_prefix=group)
    ensure_topics(bootstrap, settings, REG)
    for topic in ("claims.submitted.v1", "remittance.claim-payments.v1", "payer.inbound.v1"):
        assert REG.topics[topic].partitions > 1
    plan = phases()
    expected, reference = expected_records(tmp_path, plan)
    kinds = {record[0] for record in expected.values()}
    assert kinds == set(OUT_TOPICS)  # postings, denials, settlements and an exception

    sup = Supervisor(
        bootstrap,
        tmp_path,
        env={
            "CLAIMFLOW_TOPIC_PREFIX": prefix,
            "CLAIMFLOW_GROUP_PREFIX": group,
            "CLAIMFLOW_REMITTANCE__UNMATCHED_GRACE_S": str(GRACE_S),
        },
        services=(),
        restart=False,
    )
    outputs = Records(bootstrap, settings, OUT_TOPICS)
    done: set[str] = set()
    reference_by_phase: list[set[str]] = []
    try:
        sup.add("remittance-1", "remittance")
        sup.add("remittance-2", "remittance")
        # What each phase adds, from the reference run over the phases so far.
        for n in range(len(plan)):
            ids = set(expected_records(tmp_path / f"upto-{n}", plan[: n + 1])[0])
            reference_by_phase.append(ids - done)
            done |= ids
        send(bootstrap, settings, plan[0])
        assert outputs.wait(reference_by_phase[0], WAIT_S), "phase 1 not posted"
        # An instance dies (SIGKILL: nothing flushed or committed) and a new one joins on an
        # empty folder: the survivors and the newcomer restore the partitions they take.
        sup.kill("remittance-1")
        sup.add("remittance-3", "remittance")
        assert logged(tmp_path / "remittance-3.log", '"state restored"', WAIT_S)
        send(bootstrap, settings, plan[1])
        assert outputs.wait(reference_by_phase[1], WAIT_S), "phase 2 not posted"
        # One more joins (the running ones revoke partitions, committing them), then the
        # last of the first instances is killed.
        sup.add("remittance-4", "remittance")
        assert logged(tmp_path / "remittance-4.log", '"state restored"', WAIT_S)
        assert logged(tmp_path / "remittance-2.log", '"partitions revoked', WAIT_S)
        sup.kill("remittance-2")
        send(bootstrap, settings, plan[2])
        assert outputs.wait(reference_by_phase[2], WAIT_S), "phase 3 not posted"
        assert {n for n, up in sup.alive().items() if up} == {"remittance-3", "remittance-4"}
    finally:
        sup.stop()
        outputs.consumer.close()

    # Exactly the records one instance gives: none missing, none extra, a repeat (a batch
    # read again after a kill) only under the same event id and with the same content.
    missing = set(expected) - set(outputs.seen)
    extra = set(outputs.seen) - set(expected)
    assert not missing and not extra, (sorted(missing)[:3], sorted(extra)[:3])
    for eid, copies in outputs.seen.items():
        assert all(comparable(*copy) == expected[eid] for copy in copies), eid
    # The ledgers, rebuilt from the changelogs alone, hold what the one ledger holds.
    claim_ids = {c.claim_id for phase in plan for c in phase.claims}
    ledgers = rebuilt(bootstrap, settings, tmp_path / "rebuilt")
    try:
        view = plb_view(ledgers, sorted(claim_ids))
        assert view == plb_view([reference], sorted(claim_ids))
        assert view["waiting"] == 1  # the payment whose claim never came
        assert {a["target"] for led in ledgers for a in led.plb_applications()} == {
            "claim",
            "forward_balance",
        }  # the WOs went to PCN1001, paid in another file and maybe another partition
        assert view["forward_balances"][MEDICARE] == Decimal("0.00")  # opened, then collected
    finally:
        for ledger in ledgers:
            ledger.close()
        reference.close()


# --- with the claims stage: a posting bills the next payer once ----------------------------

CLAIM_TOPICS = ("claims.submitted.v1", "remittance.posted.v1", "dlq.claims.v1")


def verdicts(count: int) -> list[ValidatedEncounter]:
    """Clean Medicare visits with a Medigap plan after Medicare: each primary posting that
    leaves the patient something bills the Medigap plan (a claim ``<id>-2``)."""
    out = []
    for n in range(count):
        enc = encounter(
            encounter_id=f"ENC-COB-SCALE-{n:04d}",
            event_id=event_id("cob-scale", str(n)),
            source_id=f"cob-scale-{n:04d}",
            coverage=MEDICARE_B,
            other_coverages=[MEDIGAP_F],
        )
        record = coded(enc)
        out.append(
            ValidatedEncounter(
                event_id=event_id(record.encounter_id, "validation", "scale"),
                encounter_id=record.encounter_id,
                outcome="clean",
                edits=[],
                rule_pack_version="scale",
                coded=record,
                validated_at=VALIDATED_AT,
            )
        )
    return out


def test_secondary_claims_are_billed_once_with_claims_and_remittance_scaled_out(
    bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    group = prefix.rstrip(".")
    settings = Settings(topic_prefix=prefix, group_prefix=group)
    ensure_topics(bootstrap, settings, REG)
    feed = verdicts(24)
    sup = Supervisor(
        bootstrap,
        tmp_path,
        env={
            "CLAIMFLOW_TOPIC_PREFIX": prefix,
            "CLAIMFLOW_GROUP_PREFIX": group,
            "CLAIMFLOW_PAYER_SIM__FRONT_END_REJECTION_RATE": "0",
            "CLAIMFLOW_PAYER_SIM__VALIDATE_EVERY": "100",
            "CLAIMFLOW_REMITTANCE__UNMATCHED_GRACE_S": str(GRACE_S),
        },
        services=(),
        restart=False,
    )
    records = Records(bootstrap, settings, CLAIM_TOPICS)
    producer = make_producer(bootstrap, settings)

    def send(batch: list[ValidatedEncounter]) -> None:
        topic = "encounters.validated.v1"
        for verdict in batch:
            key = verdict.encounter_id.encode()
            producer.produce(settings.topic(topic), key=key, value=REG.encode(topic, verdict))
        assert producer.flush(30) == 0

    def settled(batch: list[ValidatedEncounter]) -> bool:
        """Every claim of the batch's encounters posted, and each primary posting that
        leaves the patient something followed by the Medigap claim, posted too."""
        claims = records.by_claim("claims.submitted.v1")
        posted = records.by_claim("remittance.posted.v1")
        mine = {c for c, [first, *_] in claims.items() if first.encounter_id in ids(batch)}
        if len(mine) < len(batch) or not mine <= set(posted):
            return False
        return all(
            f"{p.claim_id}-2" in claims
            for c in mine
            for p in posted[c]
            if p.payer_sequence == 1 and p.patient_responsibility > 0
        )

    def ids(batch: list[ValidatedEncounter]) -> set[str]:
        return {v.encounter_id for v in batch}

    try:
        sup.add("payer-sim")
        for block in (1, 2):  # each claims instance numbers interchanges in its own block
            sup.env["CLAIMFLOW_CLAIMS__CONTROL_NUMBER_BLOCK"] = str(block)
            sup.add(f"claims-{block}", "claims")
        sup.add("remittance-1", "remittance")
        sup.add("remittance-2", "remittance")
        half = len(feed) // 2
        send(feed[:half])
        assert records.until(lambda: settled(feed[:half]), WAIT_S), "first half not settled"
        sup.kill("remittance-1")  # SIGKILL, while secondary claims may still be in flight
        sup.add("remittance-3", "remittance")
        send(feed[half:])
        assert records.until(lambda: settled(feed), WAIT_S), "second half not settled"
        records.until(lambda: False, 1.0)  # a claim billed twice would show by now
    finally:
        sup.stop()
        records.consumer.close()

    claims = records.by_claim("claims.submitted.v1")
    posted = records.by_claim("remittance.posted.v1")
    secondaries = {c for c in claims if c.endswith("-2")}
    assert secondaries  # the Medigap plan was billed
    # Each claim once (a repeat after a kill only under its event id), each one posted.
    assert all(len(events) == 1 for events in claims.values()), {
        c: len(e) for c, e in claims.items() if len(e) > 1
    }
    assert set(claims) == set(posted)
    assert {claims[c][0].payer_id for c in secondaries} == {MEDIGAP_F.payer_id}
    assert not [c for c, *_ in records.seen.values() if c[0] == "dlq.claims.v1"]
    assert {c.removesuffix("-2") for c in secondaries} <= set(claims)
