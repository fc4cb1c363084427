"""The ledger writes a payment's claim references in one statement: the rows and the change
records are those that writing them one by one gives (the way before), including references
that come twice and ones that replace what an earlier payment recorded. A row's change record
is written out per table and set of columns: the same bytes as ``json.dumps`` of the key and
the row (the way before, the judge), on every row the corpus logs and on odd values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_remittance_reread import Partitioned, run

from services.remittance import ledger as ledger_module
from services.remittance.ledger import Ledger

PAYER = "MEDICARE_B"
FIRST = [("PCN1", "PCN1"), ("PCN2", "PCN2"), ("ICN1", "PCN1"), ("ICN2", "PCN2")]
# A later payment: a CLP07 reused for another claim, a reference twice in one payment.
SECOND = [("PCN3", "PCN3"), ("ICN1", "PCN3"), ("PCN3", "PCN3"), ("ICN3", "PCN3")]


def one_by_one(ledger: Ledger, references: list[tuple[str, str]]) -> None:
    """The way before: one upsert per reference."""
    for reference, claim_id in references:
        row = {"payer_id": PAYER, "reference": reference, "claim_id": claim_id}
        ledger._write("claim_refs", row, replace=True)


def state(ledger: Ledger) -> tuple[list[Any], list[tuple[str, bytes | None]]]:
    rows = ledger.db.execute("SELECT * FROM claim_refs ORDER BY rowid").fetchall()
    return rows, ledger.take_changes()


def test_references_in_one_statement_write_and_log_what_one_by_one_did() -> None:
    new, old = Ledger(":memory:", changelog=True), Ledger(":memory:", changelog=True)
    for references in (FIRST, SECOND, []):
        with new.atomic():
            new.add_references(PAYER, references)
        with old.atomic():
            one_by_one(old, references)
        assert state(new) == state(old)
    assert new.claim_for_reference(PAYER, "ICN1") == "PCN3"
    assert new.claim_for_reference(PAYER, "ICN2") == "PCN2"


def test_the_comparison_sees_a_missing_change_record() -> None:
    new, old = Ledger(":memory:", changelog=True), Ledger(":memory:", changelog=True)
    new.add_references(PAYER, FIRST)
    one_by_one(old, FIRST + [("ICN1", "PCN1")])
    assert state(new) != state(old)


def reference_change(table: str, row: dict[str, Any]) -> tuple[str, bytes]:
    """The change record as it was written before: ``json.dumps`` of the key and the row."""
    key = json.dumps([table, *(row[k] for k in ledger_module._KEYS[table])])
    return key, json.dumps(row).encode()


def test_every_change_record_of_the_corpus_is_the_json_of_its_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The live layout over the 835 fixtures, the public sample and the simulator's 835s
    (claims, waiting payments reported unmatched, postings, references, payments)."""
    logged: list[tuple[Any, Any]] = []
    log_row = Ledger._log_row

    def spy(self: Ledger, table: str, row: dict[str, Any]) -> None:
        before = len(self._changes)
        log_row(self, table, row)
        logged.append((self._changes[before:], [reference_change(table, dict(row))]))

    monkeypatch.setattr(Ledger, "_log_row", spy)
    run(Partitioned(tmp_path, seed=3))
    tables = {json.loads(expected[0][0])[0] for _, expected in logged}
    assert tables >= {"claims", "waiting", "posted", "claim_refs", "payments", "claim_plb"}
    assert len(logged) > 1000
    for written, expected in logged:
        assert written == expected


ODD = 'M\u00dcLLER "Q" \\ \x00\x1f\t\u2028 \U0001f600'


@pytest.mark.parametrize(
    "row",
    [
        {"claim_id": ODD, "encounter_id": "", "payer_id": "P", "record": json.dumps({"a": ODD})},
        {"claim_id": "C", "event_id": "E", "file_key": "P:F", "sequence": 2**70,
         "record": "{}", "first_seen": 1.0e-7, "reported": float("nan")},
        {"claim_id": "C", "event_id": "E", "file_key": "P:F", "sequence": -1,
         "record": "{}", "first_seen": float("inf"), "reported": None},
        {"event_id": "E", "claim_id": "C", "status": True, "paid": 1.5, "payer_sequence": False},
    ],
)  # fmt: skip
def test_a_change_record_is_the_json_of_odd_values(row: dict[str, Any]) -> None:
    table = "claims" if "encounter_id" in row else "posted" if "status" in row else "waiting"
    assert ledger_module._change_writer(table, tuple(row))(row) == reference_change(table, row)
