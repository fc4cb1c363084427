"""A posting whose claim's payers tell it bills no one is answered from the payer ids kept
as the claim was billed (``SubmittedClaims.billed_payers``), without reading the verdict
back from the corrections store: at maximum rate a claim's 835 comes back thousands of
claims after it was billed, long after the verdict left the stage's parsed models
(``PARSED_MAX``), and reading it again cost ~55 us a posting.

Judged by reading the verdict for every posting, as before (``Billing.payers_kept``
False): every output record, every change record and every posting's outcome and reason
are the same, on the simulator's encounters of both mixes, with the verdicts kept parsed
and with none kept."""

from __future__ import annotations

import io
from typing import Any

import pytest
from sim_corpus import MIXES, validated

import bench.bench_claims_stage as claims_bench
from pipeline.models import ValidatedEncounter
from services.claims import billing, parsed
from services.claims.corrections import SubmittedClaims
from services.claims.secondary import NextClaim


def _run(mix: str, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The claims stage benchmark's run: its records, and each posting billing no one."""
    answered: list[tuple[Any, ...]] = []
    not_billed = billing.Billing._not_billed

    def noted(self: Any, found: NextClaim, encounter_id: str = "") -> None:
        answered.append((encounter_id, found.reason, found.position, found.missing))
        not_billed(self, found, encounter_id)

    with monkeypatch.context() as m:
        m.setattr(billing.Billing, "_not_billed", noted)
        dump = io.StringIO()
        claims_bench.run(list(validated(mix)), dump)
    return dump.getvalue().splitlines(), answered


@pytest.mark.parametrize("kept_parsed", [SubmittedClaims.PARSED_MAX, 1])
@pytest.mark.parametrize("mix", MIXES)
def test_postings_answered_from_the_payers_kept_answer_as_from_the_verdict(
    monkeypatch: pytest.MonkeyPatch, mix: str, kept_parsed: int
) -> None:
    monkeypatch.setattr(SubmittedClaims, "PARSED_MAX", kept_parsed)
    records, answered = _run(mix, monkeypatch)
    monkeypatch.setattr(billing.Billing, "payers_kept", False)
    judge_records, judge_answered = _run(mix, monkeypatch)
    assert records == judge_records
    assert answered == judge_answered
    reasons = {reason for _, reason, _, _ in answered}
    assert {"the last payer: what is left is the patient's"} < reasons


@pytest.mark.parametrize("mix", MIXES)
def test_a_posting_that_bills_no_one_does_not_read_its_verdict_again(
    monkeypatch: pytest.MonkeyPatch, mix: str
) -> None:
    """With no verdict kept parsed (as in a stage whose postings trail their claims by more
    than ``PARSED_MAX``), only the postings that may bill a next payer read theirs."""
    monkeypatch.setattr(SubmittedClaims, "PARSED_MAX", 1)
    read = parsed.read_text
    reads: list[int] = []

    def counted(topic: str, model: type[Any], text: str) -> Any:
        if model is ValidatedEncounter:
            reads.append(1)
        return read(topic, model, text)

    monkeypatch.setattr(parsed, "read_text", counted)
    _, answered = _run(mix, monkeypatch)
    kept = len(reads)
    reads.clear()
    monkeypatch.setattr(billing.Billing, "payers_kept", False)
    _run(mix, monkeypatch)
    assert len(reads) - kept >= len(answered) > 0  # each posting billing no one read it
    assert kept < len(reads) / 3


def test_payers_kept_with_other_master_data_are_not_used() -> None:
    """The payer ids kept name the master data they were billed with: asked with another
    (the payer registry reloaded), the verdict is read again."""
    store = SubmittedClaims(":memory:")
    verdict = next(v for v in validated("office") if v.outcome != "rejected")
    master = billing.MasterData()
    assert store.claims_for(verdict, master=master)
    found = store.billed_many([verdict.encounter_id])
    claim_id, payers = store.billed_payers(verdict.encounter_id, found, master) or ("", ())
    assert payers == (verdict.coded.encounter.coverage.payer_id,)
    assert claim_id == found[verdict.encounter_id][0]
    assert store.billed_payers(verdict.encounter_id, found, billing.MasterData()) is None
    assert store.billed_payers("another", found, master) is None


def test_the_payers_kept_are_bounded_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SubmittedClaims, "PAYERS_MAX", 2)
    store = SubmittedClaims(":memory:")
    master = billing.MasterData()
    verdicts = [v for v in validated("office") if v.outcome != "rejected"][:3]
    for verdict in verdicts:
        assert store.claims_for(verdict, master=master)
    kept_claims = [claim_id for claim_id, _ in store._payers]
    found = store.billed_many([v.encounter_id for v in verdicts])
    assert kept_claims == [found[v.encounter_id][0] for v in verdicts[1:]]
    # the oldest is answered by reading its verdict again
    assert store.billed_payers(verdicts[0].encounter_id, found, master) is None
    assert store.billed_payers(verdicts[2].encounter_id, found, master) is not None
