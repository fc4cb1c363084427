"""State keyed like its partition: change records, their replay, and the per-partition
stores validation and coding keep (the restore itself runs against the broker in
tests/e2e/test_scale_out.py)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from unit.factories import coded, codesets_bare, dx, encounter, patch, service

from pipeline.models import Coverage
from pipeline.partitioned import NotAssigned, PartitionedStores
from pipeline.stage import Incoming
from services.coding.app import CodingStage, partitioned_risk
from services.coding.domain import Coder
from services.coding.review import BY_PATIENT as CODING_BY_PATIENT
from services.coding.review import ReviewStore
from services.coding.review import patient_key as coding_patient_key
from services.coding.risk_history import RiskHistory
from services.validation.app import BY_PATIENT, CODED, ValidationStage, partitioned_history
from services.validation.duplicates import DuplicateStore, patient_key


def test_every_write_is_a_change_and_replaying_them_rebuilds_the_store() -> None:
    store = DuplicateStore(":memory:", changelog=True)
    first = coded()
    store.record(first, "clean")
    store.record(coded(encounter(encounter_id="ENC-2")), "rejected")
    changes = store.take_changes()
    assert [key for key, _ in changes] == [first.encounter_id, "ENC-2"]
    assert store.take_changes() == []

    copy = DuplicateStore(":memory:")
    for key, value in changes:
        copy.apply(key, value)
    rows = "SELECT * FROM seen ORDER BY encounter_id"
    assert copy.db.execute(rows).fetchall() == store.db.execute(rows).fetchall()
    copy.apply("ENC-2", None)  # a tombstone deletes
    assert [r[0] for r in copy.db.execute(rows)] == [first.encounter_id]


def test_an_input_that_fails_leaves_no_change_behind() -> None:
    store = DuplicateStore(":memory:", changelog=True)
    store.record(coded(), "clean")
    with pytest.raises(RuntimeError), store.atomic():
        store.record(coded(encounter(encounter_id="ENC-FAILS")), "clean")
        raise RuntimeError("the input's handling failed")
    assert [key for key, _ in store.take_changes()] == [coded().encounter_id]
    assert store.db.execute("SELECT count(*) FROM seen").fetchone()[0] == 1


def test_a_store_without_a_changelog_keeps_no_changes() -> None:
    store = DuplicateStore(":memory:")
    store.record(coded(), "clean")
    assert store.take_changes() == []


def test_the_position_only_moves_forward_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "p0.sqlite3"
    store = DuplicateStore(path, changelog=True)
    assert store.position() == 0
    store.set_position(41)
    store.set_position(7)  # an older acknowledgement never moves it back
    store.commit()
    store.close()
    assert DuplicateStore(path).position() == 41


def test_one_store_per_assigned_partition(tmp_path: Path) -> None:
    stores = partitioned_history(tmp_path)
    with pytest.raises(NotAssigned, match="partition 2 of validation.by-patient.v1"):
        stores.get(2)
    stores.open(2).record(coded(), "clean")
    stores.commit()
    stores.close(2)
    assert sorted(p.name for p in (tmp_path / DuplicateStore.NAME).iterdir()) == [
        "claims-seen-p2.sqlite3"
    ]
    assert stores.open(2).db.execute("SELECT count(*) FROM seen").fetchone()[0] == 1
    stores.close_all()


def _incoming(topic: str, value: object, partition: int = 0) -> Incoming:
    return Incoming(topic, "k", value, b"raw-bytes", {"h": b"1"}, partition, 0, 0)


def test_validation_re_keys_coded_encounters_by_patient_then_validates_per_partition(
    tmp_path: Path,
) -> None:
    stores: PartitionedStores[DuplicateStore] = partitioned_history(tmp_path)
    stage = ValidationStage(codesets_bare(), history=stores)
    assert stage.inputs == (CODED, BY_PATIENT)
    first = coded()
    [forward] = stage.handle(_incoming(CODED, first))
    assert (forward.topic, forward.key, forward.raw) == (
        BY_PATIENT,
        patient_key(first),
        b"raw-bytes",
    )
    assert forward.headers == {"h": b"1"}

    stores.open(1)
    [verdict] = stage.handle(_incoming(BY_PATIENT, first, partition=1))
    assert verdict.topic == "encounters.validated.v1"
    later = first.encounter.received_at + timedelta(hours=1)
    dup = patch(first, encounter_id="ENC-DUP", encounter=patch(first.encounter, received_at=later))
    [flagged] = stage.handle(_incoming(BY_PATIENT, dup, partition=1))
    assert [e.rule_id for e in flagged.value.edits if e.rule_id == "CF-DUP-001"] == ["CF-DUP-001"]
    with pytest.raises(NotAssigned):
        stage.handle(_incoming(BY_PATIENT, dup, partition=0))
    stores.close_all()


def test_a_stage_with_one_plain_store_validates_coded_encounters_directly() -> None:
    stage = ValidationStage(codesets_bare(), history=DuplicateStore(":memory:"))
    assert stage.inputs == (CODED,)
    assert stage.partitioned_stores() == []
    [verdict] = stage.handle(_incoming(CODED, coded()))
    assert verdict.topic == "encounters.validated.v1"


def test_the_patient_key_is_the_member_not_the_encounter() -> None:
    a = coded()
    b = coded(encounter(encounter_id="ENC-OTHER"))
    assert patient_key(a) == patient_key(b)
    other_member = patch(a.encounter.coverage, member_id="ZGH000000001")
    assert patient_key(coded(encounter(coverage=other_member))) != patient_key(a)
    assert a.encounter.coverage.member_id not in patient_key(a)


# --- coding: the member's HCCs on the member's partition ----------------------------------


def _medicare_visit(encounter_id: str, code: str, cpt: str) -> Any:
    medicare = Coverage(
        payer_id="MEDICARE_B_AL", payer_name="MEDICARE PART B", plan_type="MB", member_id="1EG4"
    )
    return encounter(
        encounter_id=encounter_id,
        coverage=medicare,
        diagnoses=[dx(code, primary=True)],
        services=[service(cpt)],
    )


def test_risk_history_changes_replay_into_the_same_history() -> None:
    store = RiskHistory(":memory:", changelog=True)
    store.record_risk("member", 2026, "ENC-1", ["I5022", "E119"])
    store.record_risk("member", 2026, "ENC-1", ["I5022"])  # the encounter's codes replaced
    store.record_risk("member", 2026, "ENC-2", ["E119"])
    copy = RiskHistory(":memory:")
    for key, value in store.take_changes():
        copy.apply(key, value)
    assert copy.history("member", 2026, "ENC-3") == store.history("member", 2026, "ENC-3")
    assert copy.history("member", 2026, "ENC-3") == ["E119", "I5022"]


def test_coding_completes_hccs_on_the_members_partition(tmp_path: Path) -> None:
    coder = Coder(codesets_bare())
    risk = partitioned_risk(tmp_path / "risk")
    stage = CodingStage(coder, ReviewStore(":memory:"), risk=risk)
    assert stage.inputs[-1] == CODING_BY_PATIENT and len(stage.partitioned_stores()) == 1
    risk.open(2)
    coded_of: list[Any] = []
    for enc in (
        _medicare_visit("ENC-1", "I50.22", "99214"),
        _medicare_visit("ENC-2", "E11.9", "99213"),
    ):
        [forward] = stage.handle(_incoming("encounters.collected.v1", enc))
        assert (forward.topic, forward.key) == (CODING_BY_PATIENT, coding_patient_key(enc))
        [published] = stage.handle(_incoming(CODING_BY_PATIENT, forward.value, partition=2))
        assert (published.topic, published.key) == ("encounters.coded.v1", enc.encounter_id)
        coded_of.append(published.value)
    assert coded_of[1].hcc == [
        "HCC38",
        "HCC226",
    ]  # this visit's diabetes, the earlier heart failure
    assert (
        coded_of[1].event_id
        == coder.code(coded_of[1].encounter, coded_at=coded_of[1].coded_at).event_id
    )  # the history changes the HCCs, never the event id
    # The internal topic carries no clinical note either.
    noted = _medicare_visit("ENC-N", "E11.9", "99213").model_copy(update={"note_text": "stable"})
    [forward] = stage.handle(_incoming("encounters.collected.v1", noted))
    assert forward.value.encounter.note_text is None
    # Another partition's store has not seen the member: only this visit's HCC.
    risk.open(0)
    [forward] = stage.handle(
        _incoming("encounters.collected.v1", _medicare_visit("ENC-3", "E11.9", "99213"))
    )
    [alone] = stage.handle(_incoming(CODING_BY_PATIENT, forward.value, partition=0))
    assert alone.value.hcc == ["HCC38"]
    risk.close_all()
