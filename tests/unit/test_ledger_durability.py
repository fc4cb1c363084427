"""The remittance ledger makes nothing durable before the batch commits."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pipeline.models import SubmittedClaim
from services.remittance.ledger import Ledger

GOLDEN = Path(__file__).resolve().parents[1] / "contract" / "golden" / "claims.submitted.v1.json"


def claim(claim_id: str) -> SubmittedClaim:
    return SubmittedClaim.model_validate_json(GOLDEN.read_text()).model_copy(
        update={"claim_id": claim_id}
    )


def _count(path: Path, table: str) -> int:
    other = sqlite3.connect(str(path))
    try:
        return int(other.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        other.close()


def test_an_inputs_writes_are_not_durable_until_the_batch_commits(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(path)
    with ledger.atomic():
        ledger.add_claim(claim("CF1"))
    # A crash now (output not yet acknowledged) must leave no trace of the input.
    assert _count(path, "claims") == 0
    ledger.commit()
    assert _count(path, "claims") == 1
    ledger.close()


def test_a_failed_input_leaves_the_rest_of_the_batch(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(path)
    with ledger.atomic():
        ledger.add_claim(claim("CF1"))
    with pytest.raises(ValueError), ledger.atomic():
        ledger.add_claim(claim("CF2"))
        raise ValueError("poison")
    ledger.commit()
    assert _count(path, "claims") == 1
    ledger.close()
