"""The stores written for every record find their rows by index: a statement that scans a
whole table costs more with every encounter of history (the payer simulator's interchange
store did: 57 ms a write once it kept 4,000 interchanges). Each store is driven through its
own methods with tracing on, and SQLite's plan of every statement it ran is checked."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from factories import coded
from test_payer_sim_front_end import checked, interchange

from services.claims.control import ClaimRef, ControlNumbers
from services.coding.risk_history import RiskHistory
from services.intake.seen import SeenMessages
from services.validation.duplicates import DuplicateStore
from sim.payer_app import InterchangeStore, PayerSimStage

_DATA = ("SELECT", "INSERT", "DELETE", "UPDATE")


def whole_table_scans(db: sqlite3.Connection, work: Callable[[], object]) -> dict[str, list[str]]:
    """Statements ``work`` ran on ``db`` whose plan reads a whole table, with that plan."""
    statements: list[str] = []
    db.set_trace_callback(statements.append)
    try:
        work()
    finally:
        db.set_trace_callback(None)
    ran = {s for s in statements if s.split()[0].upper() in _DATA}
    assert ran, "the work ran no query"
    found = {}
    for sql in ran:
        plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}")]
        # "SCAN n CONSTANT ROWS" is a multi-row VALUES list being read, not a table.
        if any(
            step.startswith("SCAN ") and " INDEX " not in step and "CONSTANT ROWS" not in step
            for step in plan
        ):
            found[sql] = plan
    return found


def test_the_payer_simulator_keeps_and_answers_interchanges_by_index(tmp_path: Path) -> None:
    store = InterchangeStore(tmp_path / "sim.sqlite3")
    stage = PayerSimStage(store=store)

    def work() -> None:
        for icn in (501, 502):
            record, refs = checked(interchange(2, icn=icn, prefix=f"I{icn}-"), icn=icn)
            assert list(stage.handle_batch([*refs, record]))
        stage.on_batch_done()

    assert whole_table_scans(store.db, work) == {}


def test_intake_looks_up_and_remembers_messages_by_index(tmp_path: Path) -> None:
    store = SeenMessages(tmp_path / "seen.sqlite3")

    def work() -> None:
        for n in range(3):
            assert not store.seen(f"S{n}", "d" * 32)
            store.add(f"S{n}", "d" * 32)
        store.commit()
        assert store.seen("S1", "d" * 32)

    assert whole_table_scans(store.db, work) == {}


def test_coding_reads_and_replaces_risk_history_by_index(tmp_path: Path) -> None:
    store = RiskHistory(tmp_path / "risk.sqlite3", changelog=True)

    def work() -> None:
        with store.atomic():
            store.record_risk("P1", 2026, "E1", ["E11.9", "I10"])
            store.record_risk("P1", 2026, "E2", ["N18.3"])
        assert store.history("P1", 2026, "E2") == ["E11.9", "I10"]
        assert store.year_of("P1", 2026, "E2") == (["E11.9", "I10"], True)

    assert whole_table_scans(store.db, work) == {}


def test_validation_finds_earlier_duplicates_by_index(tmp_path: Path) -> None:
    store = DuplicateStore(tmp_path / "seen.sqlite3")
    first = coded()
    again = first.model_copy(update={"encounter_id": "ENC-2026-000999"})

    def work() -> None:
        with store.atomic():
            assert store.earlier_duplicate(first) is None
            store.record(first, "clean")
            assert store.earlier_duplicate(again) == first.encounter_id
            store.record(again, "rejected")

    assert whole_table_scans(store.db, work) == {}


def test_claims_numbers_and_finds_interchanges_by_index(tmp_path: Path) -> None:
    store = ControlNumbers(tmp_path / "control.sqlite3")

    def work() -> None:
        for n in range(2):
            stored = store.allocate(
                [ClaimRef(f"ev{n}", f"C{n}", f"E{n}")],
                payer_id="P",
                claim_type="professional",
                adapter="simulator",
                build=lambda icn: f"ISA*{icn:09d}~",
            )
            store.mark(stored.icn, "delivered")
            assert store.interchange(stored.icn) is not None
            assert [c.claim_id for c in store.claims_of(stored.icn)] == [f"C{n}"]
        assert store.assigned({"ev0": "C0", "ev1": "C1"}) == {"ev0": 1, "ev1": 2}
        assert store.encounter_of("C1") == "E1"

    assert whole_table_scans(store.db, work) == {}
