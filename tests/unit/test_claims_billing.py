"""The claims domain without the runner: ``ClaimWriter`` (what ``claims build`` prints) and
``Billing`` (batching, numbering, delivery, the next payer), on plain inputs, real stores,
real X12 checked by pyx12."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest
from test_claims_837 import COVERAGE, coded_encounter, validated
from test_claims_secondary import MEDICAID, MEDIGAP, clean, primary_posting, with_a_deductible
from test_claims_service import AETNA, Recorder

from pipeline.errors import InputError
from services.claims.adapters import Router
from services.claims.billing import (
    Billed,
    Billing,
    Carried,
    ClaimWriter,
    DeliveryFailed,
    Refused,
    Result,
    chunks,
)
from services.claims.control import ControlNumbers
from services.claims.corrections import SubmittedClaims
from services.claims.delivery import RetryPolicy
from services.claims.domain import build_claims, plan_claim
from services.claims.secondary import CobLedger
from services.x12.validate import validate_x12

WRITER = ClaimWriter("CLAIMFLOW", "CLEARINGHOUSE")


def billing(tmp_path: Path, adapter: Recorder | None = None, **options: object) -> Billing[str]:
    adapter = adapter or Recorder()
    return Billing(
        WRITER,
        ControlNumbers(tmp_path / "numbers.sqlite3"),
        Router({"*": adapter.name}, {adapter.name: adapter}),
        SubmittedClaims(tmp_path / "submitted.sqlite3"),
        CobLedger(tmp_path / "cob.sqlite3"),
        sleep=lambda _: None,
        **options,  # type: ignore[arg-type]
    )


def billed(results: list[Result[str]]) -> list[Billed[str]]:
    return [r for r in results if isinstance(r, Billed)]


def texts(results: list[Result[str]]) -> dict[str, str]:
    """Each interchange delivered, by control number (the claims name it, a claim check)."""
    carried = [r.interchange for r in results if isinstance(r, Carried)]
    return {i.interchange_control_number: i.x12 for i in carried}


def verdicts(n: int, coverage: object = COVERAGE) -> list[tuple[str, object]]:
    payer = coverage.payer_id  # type: ignore[attr-defined]
    return [
        (f"in-{payer}-{i}", validated(coded_encounter(f"ENC-{payer}-{i}", coverage=coverage)))
        for i in range(n)
    ]


def test_the_offline_writer_prints_what_build_claims_writes() -> None:
    verdict = validated(coded_encounter("ENC-OFF"))
    built = WRITER.build(verdict)
    assert built == build_claims(verdict, sender_id="CLAIMFLOW", receiver_id="CLEARINGHOUSE")
    assert [validate_x12(c.x12) for c in built] == [[]]


def test_chunks_bound_the_size_and_carry_a_claim_id_once() -> None:
    a = plan_claim(validated(coded_encounter("ENC-A")))
    b = plan_claim(validated(coded_encounter("ENC-B")))
    items = [("1", a), ("2", b), ("3", a), ("4", b), ("5", b)]
    assert [[s for s, _ in c] for c in chunks(items, 2)] == [["1", "2"], ["3", "4"], ["5"]]
    assert [[s for s, _ in c] for c in chunks(items, 10)] == [["1", "2"], ["3", "4"], ["5"]]
    assert list(chunks([], 3)) == []


def test_verdicts_become_interchanges_per_payer_each_result_naming_its_input(
    tmp_path: Path,
) -> None:
    book = billing(tmp_path, max_per_interchange=3)
    inputs = verdicts(4) + verdicts(2, AETNA)
    results = book.bill(inputs)  # type: ignore[arg-type]
    assert not [r for r in results if isinstance(r, Refused)]
    claims = billed(results)
    assert [r.source for r in claims] == [s for s, _ in inputs]
    sizes = Counter(r.claim.interchange_control_number for r in claims)
    assert sorted(sizes.values()) == [1, 2, 3]
    assert book.outcomes == Counter({"interchange_professional": 3})
    assert book.deliveries == Counter({("recorder", "delivered"): 3})
    # Each interchange once, before its claims, which name it and carry no text of their own.
    assert sorted(texts(results)) == sorted(sizes)
    assert isinstance(results[0], Carried)
    for r in claims:
        assert r.claim.x12 is None
        text = texts(results)[r.claim.interchange_control_number]
        assert f"CLM*{r.claim.claim_id}*" in text
    assert all(validate_x12(text) == [] for text in texts(results).values())
    book.commit()
    # The same verdicts again: nothing new to bill, each counted as unchanged.
    book.outcomes.clear()
    assert book.bill(inputs) == []  # type: ignore[arg-type]
    assert book.outcomes == Counter({"unchanged": 6})


def test_a_verdict_whose_claim_is_not_delivered_is_billed_when_it_comes_again(
    tmp_path: Path,
) -> None:
    book = billing(tmp_path, Recorder(failures=99), retry=RetryPolicy(attempts=2))
    inputs = verdicts(2)
    results = book.bill(inputs)  # type: ignore[arg-type]
    assert [type(r) for r in results] == [Refused, Refused]
    assert all(isinstance(r.error, DeliveryFailed) for r in results)  # type: ignore[union-attr]
    assert "after 2 attempt(s)" in str(results[0].error)  # type: ignore[union-attr]
    assert book.deliveries == Counter({("recorder", "failed"): 1})
    book.commit()
    book.router = Router({"*": "recorder"}, {"recorder": Recorder()})
    again = book.bill(inputs)  # type: ignore[arg-type]
    assert [type(r) for r in again] == [Carried, Billed, Billed]
    # Under the number the first attempt took: never a second interchange for the claims.
    assert {r.claim.interchange_control_number for r in billed(again)} == {"000000001"}


def test_a_payer_without_a_route_is_refused_with_how_to_fix_it(tmp_path: Path) -> None:
    book = billing(tmp_path)
    book.router = Router({"60054": "recorder"}, {"recorder": Recorder()})
    (only,) = book.bill(verdicts(1))  # type: ignore[arg-type]
    assert isinstance(only, Refused) and isinstance(only.error, InputError)
    assert only.error.field == "payer_id" and "CLAIMFLOW_CLAIMS__ROUTES" in only.error.reason


def test_a_posting_bills_the_next_payer_once_and_a_refused_one_again(tmp_path: Path) -> None:
    record = with_a_deductible(other_coverages=[MEDIGAP, MEDICAID])
    _, posting = primary_posting(record)
    book = billing(tmp_path)
    (primary,) = billed(book.bill([("verdict", clean(record))]))
    book.commit()
    # No route to the Medigap plan: the posting is refused, and the next payer not marked.
    book.router = Router({"04412": "recorder"}, {"recorder": Recorder()})
    (refused,) = book.bill_next_payers([("posting", posting)])
    assert isinstance(refused, Refused) and refused.source == "posting"
    assert book.outcomes["cob_billed_2"] == 1
    book.router = Router({"*": "recorder"}, {"recorder": Recorder()})
    results = book.bill_next_payers([("posting again", posting)])
    (secondary,) = billed(results)
    assert (secondary.claim.claim_id, secondary.claim.payer_id) == (
        f"{primary.claim.claim_id}-2",
        MEDIGAP.payer_id,
    )
    assert validate_x12(texts(results)[secondary.claim.interchange_control_number]) == []
    assert book.bill_next_payers([("redelivered", posting)]) == []  # billed once


def test_a_posting_for_an_encounter_never_billed_bills_nothing(tmp_path: Path) -> None:
    record = with_a_deductible(other_coverages=[MEDIGAP])
    _, posting = primary_posting(record)
    book = billing(tmp_path)
    assert book.bill_next_payers([("posting", posting)]) == []
    assert book.outcomes == Counter({"cob_unknown_encounter": 1})


def test_a_next_payer_owed_a_claim_without_the_earlier_adjudications_is_warned_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The secondary's posting arrives (crossed over, say) while the primary's is not in the
    ledger: the tertiary is owed a claim that cannot be built. Not billing it must not be
    silent: its own outcome and a warning naming the encounter."""
    record = with_a_deductible(other_coverages=[MEDIGAP, MEDICAID])
    _, posting = primary_posting(record)
    book = billing(tmp_path)
    billed(book.bill([("verdict", clean(record))]))
    book.commit()
    secondary = posting.model_copy(update={"payer_id": MEDIGAP.payer_id})
    assert secondary.patient_responsibility > 0
    with caplog.at_level(logging.WARNING, logger="services.claims.billing"):
        assert book.bill_next_payers([("secondary's posting", secondary)]) == []
    assert book.outcomes["cob_earlier_missing"] == 1
    assert book.outcomes["cob_not_billed"] == 0
    (warned,) = [r for r in caplog.records if "earlier payer" in r.getMessage()]
    assert warned.encounter_id == record.encounter_id  # type: ignore[attr-defined]
