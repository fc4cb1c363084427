"""A posting that bills no next payer whatever the earlier payers' adjudications are (a
reversal, a crossover, the last payer, nothing left: ``secondary.bills_none``) is answered
without reading them from the COB ledger. Judged on the postings of the simulator's
encounters of both mixes through the claims stage: for each such posting, ``next_claim``
gives the same answer with or without the earlier adjudications it would have read, and
``bills_none`` never holds for a posting that bills the next payer. The payer's claim
numbers a batch of postings gives are set by one statement, with what each posting's own
statement wrote."""

from __future__ import annotations

import io
import json
import sqlite3
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any, cast

import pytest
from sim_corpus import MIXES, validated

import bench.bench_claims_stage as claims_bench
from pipeline.models import Coverage, RemittancePosting, ValidatedEncounter
from services.claims import billing
from services.claims.corrections import SubmittedClaims
from services.claims.secondary import CobLedger, bills_none, next_claim, position_of


@pytest.mark.parametrize("mix", MIXES)
def test_a_posting_that_bills_none_is_answered_without_the_earlier_adjudications(
    monkeypatch: pytest.MonkeyPatch, mix: str
) -> None:
    seen: Counter[str] = Counter()

    def judged(
        posting: RemittancePosting,
        verdict: ValidatedEncounter,
        primary: str,
        earlier: Sequence[RemittancePosting],
        master: Any,
        coverages: Sequence[Coverage],
    ) -> Any:
        found = next_claim(posting, verdict, primary, earlier, master, coverages)
        position = position_of(posting.payer_id, coverages)
        assert position is not None
        if bills_none(posting, position, coverages):
            seen["none"] += 1
            assert found.planned is None
            # The same answer whatever the payers before it adjudicated.
            for before in ([], [posting] * (position - 1), [posting] * position):
                assert next_claim(posting, verdict, primary, before, master, coverages) == found
        else:
            seen["read"] += 1
            seen["billed"] += found.planned is not None
        return found

    monkeypatch.setattr(billing, "next_claim", judged)
    # Read from the verdict, as the posting of a claim not billed in this process is.
    monkeypatch.setattr(billing.Billing, "payers_kept", False)
    claims_bench.run(list(validated(mix)))
    assert seen["none"] > seen["read"] > 0
    assert seen["billed"] > 0


def _submitted_records(mix: str) -> list[str]:
    """What the claims stage benchmark's run writes of the corrections stores and claims."""
    dump = io.StringIO()
    claims_bench.run(list(validated(mix)), dump)
    return [
        line
        for line in dump.getvalue().splitlines()
        if line.startswith(("changelog\tsubmitted\t", "claims.submitted.v1\t"))
    ]


@pytest.mark.parametrize("mix", MIXES)
def test_a_batch_of_postings_sets_the_payer_numbers_as_each_posting_did(
    monkeypatch: pytest.MonkeyPatch, mix: str
) -> None:
    batched = _submitted_records(mix)
    calls: list[int] = []
    each = SubmittedClaims.set_payer_claim_control_numbers

    def refused_for_the_batch(self: SubmittedClaims, numbers: Any) -> None:
        numbers = list(numbers)
        if sys._getframe(1).f_code.co_name == "number_next_payers":  # not an acknowledgment's
            calls.append(len(numbers))
            raise sqlite3.OperationalError("the batch's statement failed")
        each(self, numbers)

    # The statement for the batch failing: each posting sets its own number, as before.
    monkeypatch.setattr(SubmittedClaims, "set_payer_claim_control_numbers", refused_for_the_batch)
    assert _submitted_records(mix) == batched
    assert max(calls) > 1
    assert any('"payer_claim_control_number": "' in line for line in batched)


@pytest.mark.parametrize("mix", MIXES)
def test_the_payers_billed_read_for_a_batch_answer_as_each_posting_read_them(
    monkeypatch: pytest.MonkeyPatch, mix: str
) -> None:
    """``CobLedger.billed_many``, kept up to date by the batch's loop, answers each posting
    as ``CobLedger.billed`` read at its turn did (the reference, asked at each lookup); the
    same records either way."""
    looked: Counter[bool] = Counter()
    many = CobLedger.billed_many

    class Judged(set[tuple[str, int]]):
        ledger: CobLedger

        def __contains__(self, item: object) -> bool:
            got = super().__contains__(item)
            key, position = cast(tuple[str, int], item)
            assert got == (self.ledger.billed(key, position) is not None), item
            looked[got] += 1
            return got

    def judged(self: CobLedger, encounter_ids: Any) -> set[tuple[str, int]]:
        out = Judged(many(self, encounter_ids))
        out.ledger = self
        return out

    batched = _submitted_records(mix)
    monkeypatch.setattr(CobLedger, "billed_many", judged)
    assert _submitted_records(mix) == batched
    assert looked[False] > 0


def _records(mix: str) -> tuple[list[str], Counter[str]]:
    """The claims stage benchmark's run: every record but the COB ledger's changes, and the
    values of those changes (their keys name rowids, which follow the rows stored)."""
    dump = io.StringIO()
    claims_bench.run(list(validated(mix)), dump)
    other: list[str] = []
    cob: Counter[str] = Counter()
    for line in dump.getvalue().splitlines():
        if line.startswith("changelog\tcob\t"):
            _, _, part, key, value = line.split("\t")
            cob[f"{part}\t{key.partition(':')[0]}\t{value}"] += 1
        else:
            other.append(line)
    return other, cob


@pytest.mark.parametrize("mix", MIXES)
def test_the_last_payers_posting_is_not_stored_and_nothing_billed_changes(
    monkeypatch: pytest.MonkeyPatch, mix: str
) -> None:
    """The last payer's posting is no longer kept in the COB ledger: no later payer's claim
    is ever built from it. Judged by storing it as before: every output record and every
    other change record are the same, and the ledger's changes are the same but for
    postings, each one of a payer after which no claim is billed."""
    other, cob = _records(mix)
    monkeypatch.setattr(billing.Billing, "store_last_postings", True)
    judge_other, judge_cob = _records(mix)
    assert other == judge_other
    left_out = judge_cob - cob
    assert cob + left_out == judge_cob  # nothing stored that the judge did not store
    assert left_out and all("\tcob_postings\t" in k for k in left_out)
    billed_after = {
        (json.loads(k.split("\t")[2])["encounter_id"], json.loads(k.split("\t")[2])["position"])
        for k in judge_cob
        if "\tcob_billed\t" in k
    }
    for record in left_out:
        row = json.loads(record.split("\t")[2])
        # A payer after which someone was billed is not the last one.
        assert (row["encounter_id"], row["position"] + 1) not in billed_after
