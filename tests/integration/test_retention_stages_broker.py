"""Retention of hospital accounts' raw HL7 on the real broker, as the live intake runs them
(re-keyed by visit, one changelogged account store per partition): told on
remittance.settled.v1 that a claim is settled, intake sends the settlement on to the
partition of its visit's account, which prunes the messages once the window has passed (the
member id and name gone from the store files, write-ahead logs included) and keeps an account
still inside its window; a late charge to a pruned account is dead-lettered with the reason,
and a store rebuilt from the changelog knows the account was pruned."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from integration.test_claims_service_broker import Reader, running
from integration.test_retention_broker import until
from unit.test_charge_capture import CDM_CSV
from unit.test_hospital_account import ADT_A03, CBC, HL7, dft

from pipeline.kafka import ensure_topics, make_producer
from pipeline.models import ClaimSettled
from pipeline.serde import registry
from services.intake.account import AccountStore
from services.intake.app import IntakeStage, partitioned_accounts
from services.intake.settings import IntakeOptions, IntakeSettings
from sim.ehr import provider_directory

pytestmark = pytest.mark.broker
REG = registry()

# Two patients' visits; the first settles with a payer whose window is 0 days.
PRUNED = ("V500001", "Quennell^Aoife", "XQP111111111")
KEPT = ("V500002", "Marchetti^Bea", "XQP222222222")


def visit(text: str, number: str, name: str, member: str) -> str:
    return (
        text.replace("V778812", number).replace("Neil^Aoife", name).replace("XOD123456789", member)
    )


def pruned(folder: Path) -> int:
    """Accounts pruned in the partitions' store files (one being created counts none)."""
    found = 0
    for path in folder.glob("*.sqlite3"):
        with sqlite3.connect(path) as db:
            try:
                found += int(db.execute("SELECT count(*) FROM account_pruned").fetchone()[0])
            except sqlite3.OperationalError:  # its schema is not written yet
                continue
    return found


def disk(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.glob("*.sqlite3*")))


def test_intake_prunes_a_settled_account_on_its_visits_partition(
    bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    directory = tmp_path / "providers.json"
    directory.write_text(json.dumps(provider_directory().to_json()))
    (tmp_path / "cdm.csv").write_text(CDM_CSV)
    settings = IntakeSettings(
        topic_prefix=prefix, group_prefix=prefix.rstrip("."), state_dir=state,
        provider_directory=directory, chargemaster=tmp_path / "cdm.csv",
        intake=IntakeOptions(settled_retention_days_by_payer={"PRUNE-PAYER": 0},
                             retention_sweep_s=0.2),
    )  # fmt: skip
    ensure_topics(bootstrap, settings, REG)
    producer = make_producer(bootstrap, settings)

    def send(topic: str, key: str, value: bytes, headers: dict[str, str] | None = None) -> None:
        producer.produce(settings.topic(topic), key=key.encode(), value=value, headers=headers)
        assert producer.flush(10) == 0

    policy = settings.intake.retention_policy()
    accounts = state / AccountStore.NAME
    collected = Reader(bootstrap, settings, "encounters.collected.v1")  # type: ignore[arg-type]
    dead = Reader(bootstrap, settings, "dlq.intake.v1")  # type: ignore[arg-type]
    stage = IntakeStage(settings, partitioned_accounts(state, policy))
    with running(stage, settings, bootstrap):  # type: ignore[arg-type]
        for number, name, member in (PRUNED, KEPT):  # discharged: billed at once
            send("intake.raw.v1", number, visit(ADT_A03, number, name, member).encode(),
                 {"content-type": HL7})  # fmt: skip
        encounters = collected.until(lambda r: len(r) >= 2)
        ids = {e.encounter_id for e in encounters}  # type: ignore[attr-defined]
        assert ids == {"STCATH/V500001", "STCATH/V500002"}
        for _, name, member in (PRUNED, KEPT):  # before settlement: both on disk
            assert member.encode() in disk(accounts) and name.encode() in disk(accounts)
        for encounter_id, payer in (("STCATH/V500001", "PRUNE-PAYER"), ("STCATH/V500002", "KEEP")):
            paid = ClaimSettled(
                event_id=f"settled-{encounter_id}", claim_id=f"CF-{encounter_id}",
                encounter_id=encounter_id, payer_id=payer, status="paid",
                posting_event_id=f"posting-{encounter_id}", settled_at=datetime.now(UTC),
            )  # fmt: skip
            send("remittance.settled.v1", paid.claim_id,
                 REG.encode("remittance.settled.v1", paid))  # fmt: skip
        assert until(lambda: pruned(accounts) == 1)
        # A late charge to the pruned account cannot be billed from it any more.
        send("intake.raw.v1", "LATE", visit(dft("D9", CBC), *PRUNED).encode(),
             {"content-type": HL7})  # fmt: skip
        letters = dead.until(lambda r: len(r) >= 1)
    for reader in (collected, dead):
        reader.close()

    assert letters[0].field == "PV1-19"  # type: ignore[attr-defined]
    assert "pruned after the retention window" in letters[0].error_message  # type: ignore[attr-defined]
    kept = disk(accounts)
    assert PRUNED[2].encode() not in kept and PRUNED[1].encode() not in kept
    assert KEPT[2].encode() in kept  # inside its window: kept
    # The partition moves: a store rebuilt from the changelog alone knows it was pruned.
    rebuilt = partitioned_accounts(tmp_path / "elsewhere", policy)
    with running(IntakeStage(settings, rebuilt), settings, bootstrap):  # type: ignore[arg-type]
        assert until(lambda: pruned(tmp_path / "elsewhere" / AccountStore.NAME) == 1)
    assert PRUNED[2].encode() not in disk(tmp_path / "elsewhere" / AccountStore.NAME)
