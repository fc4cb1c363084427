"""The ledger writes a payment's claim references in one statement: the rows and the change
records are those that writing them one by one gives (the way before), including references
that come twice and ones that replace what an earlier payment recorded."""

from __future__ import annotations

from typing import Any

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
