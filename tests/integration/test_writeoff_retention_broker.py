"""A console write-off reaches settlement, and coding's retention follows it, on the real
broker: the console publishes the write-off on console.writeoffs.v1, remittance settles the
claim (remittance.settled.v1, written_off), and coding, told so through that topic, prunes
the coded encounter it kept for the audit once the window has passed (the member id and
name gone from its state files, write-ahead log included) while an encounter whose claim
is settled but still inside its window is kept."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from integration.test_claims_service_broker import Reader, running
from integration.test_retention_broker import until
from unit.factories import encounter

from pipeline.kafka import ensure_topics, make_producer
from pipeline.models import ClaimSettled
from pipeline.serde import registry
from services.coding.app import CodingSettings, CodingStage
from services.coding.audit import AuditPolicy, AuditStore
from services.coding.domain import Coder
from services.coding.review import ReviewStore
from services.console import actions
from services.console.app import Publisher
from services.refdata.codesets import CodeSets
from services.remittance.app import RemittanceStage
from services.remittance.ledger import Ledger

pytestmark = pytest.mark.broker
REG = registry()
# (encounter id, last name, member id): the first is written off with a payer whose window
# is 0 days, the second paid by a payer whose window is a year.
PRUNED = ("ENC-WO-1", "Quennell", "XQP111111111")
KEPT = ("ENC-WO-2", "Marchetti", "XQP222222222")


def pruned(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM audits_pruned").fetchone()[0])


def test_a_write_off_settles_its_claim_and_coding_prunes_the_audited_encounter(
    bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    settings = CodingSettings(
        topic_prefix=prefix,
        group_prefix=prefix.rstrip("."),
        state_dir=state,
        coding={"settled_retention_days_by_payer": {"PRUNE-PAYER": 0}, "retention_sweep_s": 0.2},
    )
    ensure_topics(bootstrap, settings, REG)
    producer = make_producer(bootstrap, settings)
    for encounter_id, last_name, member in (PRUNED, KEPT):
        base = encounter()
        visit = encounter(
            encounter_id=encounter_id,
            patient=base.patient.model_copy(update={"last_name": last_name}),
            coverage=base.coverage.model_copy(update={"member_id": member}),
        )
        producer.produce(settings.topic("encounters.collected.v1"), key=encounter_id.encode(),
                         value=REG.encode("encounters.collected.v1", visit))  # fmt: skip
    assert producer.flush(10) == 0
    audits = state / "coding-audit.sqlite3"
    coding = CodingStage(
        Coder(CodeSets.load(None)),
        ReviewStore(state / "coding-review.sqlite3"),
        AuditStore(audits, AuditPolicy(share=1.0), settings.coding.retention_policy()),
        retention_sweep_s=0.2,
    )
    queued = Reader(bootstrap, settings, "coding.audits.v1")  # type: ignore[arg-type]
    settled = Reader(bootstrap, settings, "remittance.settled.v1")  # type: ignore[arg-type]
    disk = lambda: b"".join(p.read_bytes() for p in sorted(state.glob("coding-audit.sqlite3*")))  # noqa: E731
    with running(coding, settings, bootstrap):  # type: ignore[arg-type]
        queued.until(lambda r: len(r) >= 2)
        for _, last_name, member in (PRUNED, KEPT):  # before settlement: both on disk
            assert member.encode() in disk() and last_name.encode() in disk()
        # A biller writes the first claim off in the console; the second is paid.
        action = actions.work_action("denials", "CF-1", "write_off", "bjones", "biller",
                                     encounter_id=PRUNED[0], claim_id="CF-1")  # fmt: skip
        console = Publisher(bootstrap, settings, REG)
        console("console.writeoffs.v1", "CF-1", actions.written_off(action, "PRUNE-PAYER"), None)
        paid = ClaimSettled(
            event_id="settled-2", claim_id="CF-2", encounter_id=KEPT[0], payer_id="KEEP",
            status="paid", posting_event_id="posting-2", settled_at=datetime.now(UTC),
        )  # fmt: skip
        producer.produce(settings.topic("remittance.settled.v1"), key=b"CF-2",
                         value=REG.encode("remittance.settled.v1", paid))  # fmt: skip
        assert producer.flush(10) == 0
        remittance = RemittanceStage(Ledger(state / "remittance-ledger.sqlite3"))
        with running(remittance, settings, bootstrap):  # type: ignore[arg-type]
            events = settled.until(lambda r: len(r) >= 2)
        assert until(lambda: pruned(audits) == 1)
    for reader in (queued, settled):
        reader.close()

    [written_off] = [e for e in events if e.claim_id == "CF-1"]  # type: ignore[attr-defined]
    assert (written_off.status, written_off.encounter_id, written_off.payer_id) == (
        "written_off", PRUNED[0], "PRUNE-PAYER",
    )  # fmt: skip
    kept = disk()
    assert PRUNED[2].encode() not in kept and PRUNED[1].encode() not in kept
    assert KEPT[2].encode() in kept and KEPT[1].encode() in kept  # inside its window
    with sqlite3.connect(audits) as db:  # the outcomes and ids stay, for accuracy
        assert db.execute("SELECT count(*) FROM audits").fetchone()[0] == 2
