"""The coding stage opens its stores' savepoints around an encounter's writes only.

An encounter sent on by patient with no review reason and not drawn for audit writes
nothing to the review or audit store, so it opens no savepoint (no transaction either);
one drawn for audit or held for a coder writes inside them, and a failure there leaves
none of its writes. The judge is the flow with no savepoint at all (``ReviewFlow`` as the
tests of the review and audits drive it): the same outputs for the same encounters.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from factories import RECEIVED_AT, codesets_bare, dx, encounter, service

from pipeline.errors import InputError
from pipeline.stage import Incoming
from services.coding import app
from services.coding.app import CodingStage, partitioned_risk
from services.coding.audit import AuditPolicy, AuditStore
from services.coding.domain import Coder
from services.coding.review import BY_PATIENT, CODED, ReviewFlow, ReviewStore
from services.coding.terms import default_index


@pytest.fixture(scope="module")
def coder() -> Coder:
    return Coder(codesets_bare(), index=default_index())


@pytest.fixture
def stage(coder: Coder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CodingStage]:
    monkeypatch.setattr(app, "utcnow", lambda: RECEIVED_AT)
    risk = partitioned_risk(tmp_path)
    risk.open(0)
    stage = CodingStage(
        coder,
        ReviewStore(tmp_path / "review.sqlite3"),
        AuditStore(tmp_path / "audit.sqlite3", AuditPolicy(share=0.5)),
        risk,
    )
    yield stage
    stage.store.close()
    stage.audits.close()
    risk.close_all()


def visit(n: int, *codes: str) -> object:
    return encounter(
        encounter_id=f"ENC-S-{n:04d}",
        diagnoses=[dx(c, primary=(i == 0)) for i, c in enumerate(codes)],
        services=[service("99213", "150.00", dx_refs=[codes[0]])],
    )


def incoming(enc: object, n: int) -> Incoming:
    return Incoming("encounters.collected.v1", "k", enc, b"", {}, 0, n, 0)


def test_outputs_and_writes_are_the_flows_without_savepoints(
    stage: CodingStage, coder: Coder
) -> None:
    judge = ReviewFlow(
        coder,
        ReviewStore(":memory:"),
        AuditStore(":memory:", AuditPolicy(share=0.5)),
        by_patient=True,
    )
    kinds = {"clean": 0, "sampled": 0, "held": 0}
    for n in range(40):
        enc = visit(n, "E11.9", "I10") if n % 5 else visit(n, "E11")  # E11: a header, held
        outs = stage.handle(incoming(enc, n))
        expected = judge.encounter(enc, now=RECEIVED_AT)  # type: ignore[arg-type]
        assert [(o.topic, o.key, o.value) for o in outs] == expected
        topics = {o.topic for o in outs}
        wrote = stage.store.db.in_transaction or stage.audits.db.in_transaction
        if "coding.review.v1" in topics:
            kinds["held"] += 1
            assert stage.store.held(enc.encounter_id) is not None  # type: ignore[attr-defined]
        elif "coding.audits.v1" in topics:
            kinds["sampled"] += 1
            assert stage.audits.get(enc.encounter_id) is not None  # type: ignore[attr-defined]
        else:
            kinds["clean"] += 1
            assert not wrote  # no savepoint, no transaction: nothing written
        stage.on_batch_done()
    assert all(kinds.values()), kinds
    assert stage.store.held_count() == judge.store.held_count()
    assert stage.audits.queued_count() == judge.audits.queued_count()  # type: ignore[union-attr]


def test_a_failed_write_leaves_none_of_the_encounters_writes(
    stage: CodingStage, monkeypatch: pytest.MonkeyPatch
) -> None:
    sampled = next(n for n in range(100) if stage.audits.policy.sampled(f"ENC-S-{n:04d}"))

    def fails(*args: object) -> None:
        stage.audits.db.execute("INSERT INTO audits VALUES ('x', '{}', '{}', NULL)")
        raise InputError("encounter_id", "the audit queue refused it")

    monkeypatch.setattr(stage.audits, "queue", fails)
    with pytest.raises(InputError, match="refused"):
        stage.handle(incoming(visit(sampled, "E11.9", "I10"), 0))
    stage.on_batch_done()
    assert stage.audits.queued_count() == 0
    assert stage.audits.db.execute("SELECT count(*) FROM audits").fetchone()[0] == 0


def test_an_encounter_that_cannot_be_coded_raises_as_before(stage: CodingStage) -> None:
    with pytest.raises(InputError, match="diagnoses\\[0\\].code"):
        stage.handle(incoming(visit(1, "ZZZ99"), 0))
    assert not stage.store.db.in_transaction and not stage.audits.db.in_transaction


def test_a_new_encounters_risk_codes_open_no_savepoint(stage: CodingStage) -> None:
    """On coding.by-patient.v1 a new encounter's codes are one INSERT (atomic on its own):
    no SAVEPOINT; an encounter recorded before (a replay) deletes and inserts inside one,
    and a failure there leaves neither. The rows and change records are the same either way
    (``test_risk_history_year``)."""
    history = stage.risk.get(0)  # type: ignore[union-attr]
    statements: list[str] = []
    history.db.set_trace_callback(statements.append)
    (by_patient,) = [
        o for o in stage.handle(incoming(visit(7, "E11.9", "I10"), 7)) if o.topic == BY_PATIENT
    ]
    record = Incoming(BY_PATIENT, by_patient.key, by_patient.value, b"", {}, 0, 7, 0)

    outs = stage.handle(record)
    assert [o.topic for o in outs] == [CODED]
    assert not any("SAVEPOINT" in s for s in statements)
    assert len([s for s in statements if s.startswith("INSERT")]) == 1
    rows = history.db.execute("SELECT code FROM risk_dx").fetchall()
    assert rows  # E11.9 counts for an HCC
    stage.on_batch_done()

    statements.clear()
    history.take_changes()

    def fails(*args: object) -> None:
        raise InputError("encounter_id", "the insert failed")

    original = history._insert
    history._insert = fails  # type: ignore[method-assign]
    with pytest.raises(InputError, match="insert failed"):
        stage.handle(record)  # recorded before: delete, then the insert fails
    history._insert = original  # type: ignore[method-assign]
    assert any(s.startswith("SAVEPOINT") for s in statements)
    assert history.db.execute("SELECT code FROM risk_dx").fetchall() == rows
    assert not history.take_changes()
