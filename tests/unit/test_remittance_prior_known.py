"""A claim whose row this process inserted has no posting until one is made: the ledger's
``prior`` answers for it without reading the postings (``Ledger.add_claim``). The judge is
the read (``prior_read``): on the 835 fixtures, the public sample 835 and the payer
simulator's 835s, drained in shuffled orders with payments before and after their claims,
every answer is the read's, and the run publishes, logs and keeps what a run that always
reads does; a claim sent again, a posting made, a rolled-back batch, a failed input and an
applied change record each make the ledger read again."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from test_remittance_one_write import Clocked, rows
from test_remittance_reread import published, run
from test_remittance_split import CLAIMS

from services.remittance.ledger import Ledger
from services.remittance.posting import Prior

PAYER = CLAIMS[0].payer_id


@pytest.mark.parametrize("seed", [5, 11])
def test_every_prior_known_is_the_prior_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    prior = Ledger.prior
    answered: list[bool] = []

    def judged(self: Ledger, claim_id: str, payer_id: str) -> Prior:
        answered.append(claim_id in self._unposted)
        got = prior(self, claim_id, payer_id)
        assert got == self.prior_read(claim_id, payer_id)
        return got

    with monkeypatch.context() as patched:
        patched.setattr(Ledger, "prior", judged)
        fast = run(Clocked(tmp_path / "fast", seed))
    assert any(answered) and not all(answered)  # split claims' later parts are read
    with monkeypatch.context() as patched:
        patched.setattr(Ledger, "prior", Ledger.prior_read)
        read = run(Clocked(tmp_path / "read", seed))
    assert published(fast) == published(read)
    assert fast.changes == read.changes
    assert rows(fast) == rows(read)


def posting(ledger: Ledger, claim_id: str) -> Any:
    from pipeline.models import RemittancePosting

    fields: dict[str, Any] = {
        "event_id": f"E-{claim_id}",
        "claim_id": claim_id,
        "payer_id": PAYER,
        "status": "paid",
        "claim_status_code": "1",
        "total_charge": "100.00",
        "paid": "80.00",
        "patient_responsibility": "20.00",
        "payment_trace": "T1",
        "file_id": "F1",
        "posted_at": "2026-03-09T08:00:00Z",
        "adjustments": [],
    }
    return RemittancePosting.model_validate(fields)


def test_what_makes_the_ledger_read_again() -> None:
    ledger = Ledger(":memory:", changelog=True)
    claim = CLAIMS[0]
    ledger.add_claim(claim)
    assert claim.claim_id in ledger._unposted
    assert ledger.prior(claim.claim_id, PAYER) == Prior(*[Decimal(0)] * 4)
    # a posting made: read, and found
    assert ledger.mark_posted(posting(ledger, claim.claim_id))
    assert claim.claim_id not in ledger._unposted
    assert ledger.prior(claim.claim_id, PAYER).paid == 80
    # sent again: its row was there, so it may have postings
    ledger.add_claim(claim)
    assert claim.claim_id not in ledger._unposted
    assert ledger.prior(claim.claim_id, PAYER).paid == 80
    assert ledger.stored_claim(claim.claim_id) == ledger.claim(claim.claim_id)
    # a rolled-back batch, a failed input, an applied change record: forgotten
    other = CLAIMS[1]
    ledger.add_claim(other)
    ledger.rollback()
    assert not ledger._unposted
    ledger.add_claim(other)
    with pytest.raises(RuntimeError), ledger.atomic():
        ledger.add_claim(CLAIMS[2])
        raise RuntimeError("failed input")
    assert not ledger._unposted
    ledger.add_claim(CLAIMS[2])
    ledger.apply('["claims", "NOPE"]', None)
    assert not ledger._unposted


def test_a_claim_sent_again_is_updated() -> None:
    """Its row holds the claim as sent last, as the upsert left it."""
    ledger = Ledger(":memory:")
    claim = CLAIMS[0]
    ledger.add_claim(claim)
    changed = claim.model_copy(update={"payer_name": claim.payer_name + " X", "x12": ""})
    ledger.add_claim(changed)
    ledger._claims.clear()
    assert ledger.claim(claim.claim_id) == changed
    count = ledger.db.execute("SELECT count(*) FROM claims").fetchone()[0]
    assert count == 1


def test_a_payment_of_a_claim_inserted_here_runs_one_statement(tmp_path: Path) -> None:
    """The posting written, nothing read, when it is the claim's first (a later one reads the
    claim's postings first); the batch's BEGIN not counted."""
    from test_remittance_reread import files

    ran = Clocked(tmp_path, 3)
    statements = ran.claims_then_files(files()[:3])
    counts: list[int] = []
    expected: list[int] = []
    posted: set[str] = set()
    for _, value, executed in ran.each_input(statements):
        if getattr(value, "kind", None) == "payment":
            counts.append(len([s for s in executed if not s.startswith("BEGIN")]))
            claim_id = getattr(value, "claim_id", "")
            expected.append(2 if claim_id in posted else 1)
            posted.add(claim_id)
    assert counts.count(1) >= 2 and counts == expected
