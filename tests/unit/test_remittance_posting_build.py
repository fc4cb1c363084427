"""A posting built from the values it holds is the posting validation built.

``posting.post`` makes the ``RemittancePosting`` (its adjustments, lines and their
adjustments) from its values without validating each model: the values come from
the 835 as read and from the claim as validated when it came in, the money in cents as
``Money`` gives it. The judge is the validated build it replaced, kept below: on every claim
payment of the 835 fixtures, the public sample 835 and the payer simulator's 835s for both
EHR mixes, posted against its claim (and without one, and as the second part of a split, and
with a DRG price), the two postings must be equal, print the same (value types too), dump the
same JSON and encode to the same Avro bytes.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
import sim_corpus
from shared_data import SHARED_DATA
from test_remittance_real_payers import CLAIMS
from test_remittance_split import payer_files

from pipeline.avro_write import SHARED, writer_for
from pipeline.models import (
    Adjustment,
    LineAdjustment,
    PostedLine,
    RemittancePosting,
    SubmittedClaim,
)
from pipeline.serde import registry
from services.remittance.era import CasAdjustment, ClaimPayment, ServicePayment, read_835
from services.remittance.posting import (
    Pricing,
    Prior,
    occurrences,
    payer_of,
    post,
    posting_event_id,
    posting_status,
    sequestration,
    shortfall,
)

AT = datetime(2026, 3, 25, 9, 30, 15, 123000, tzinfo=UTC)
REG = registry()

# --- the validated build (the path before), the judge -------------------------------------------


def judge_post(
    claim_payment: ClaimPayment,
    claim: SubmittedClaim | None,
    *,
    payer_id: str,
    file_id: str,
    payment_trace: str | None,
    payment_date: date | None,
    posted_at: datetime,
    occurrence: int = 0,
    pricing: Pricing | None = None,
    prior: Prior | None = None,
    warnings: tuple[str, ...] = (),
) -> RemittancePosting:
    expected, _basis = (pricing or Pricing()).expected(claim_payment, claim, payer_id)
    status = posting_status(claim_payment, claim, expected, prior)
    variance = shortfall(claim_payment, claim, expected, prior).variance
    claim_id = claim.claim_id if claim is not None else claim_payment.patient_control_number
    return RemittancePosting(
        event_id=posting_event_id(claim_id, claim_payment, payment_trace, file_id, occurrence),
        claim_id=claim_id,
        encounter_id=claim.encounter_id if claim is not None else None,
        payer_id=payer_id,
        payer_claim_control_number=claim_payment.payer_claim_control_number,
        claim_status_code=claim_payment.status_code,
        status=status,
        total_charge=claim_payment.charge,
        paid=claim_payment.paid,
        patient_responsibility=claim_payment.patient_responsibility,
        expected=expected,
        variance=variance,
        adjustments=[
            Adjustment(group=a.group, reason=a.reason, amount=a.amount, line=line)
            for line, a in claim_payment.all_adjustments()
        ],
        remark_codes=claim_payment.all_remark_codes(),
        payment_trace=payment_trace,
        payment_date=payment_date,
        file_id=file_id,
        posted_at=posted_at,
        payer_sequence=claim_payment.payer_sequence,
        crossover_payer=claim_payment.crossover_payer
        or ("unnamed" if claim_payment.forwarded else None),
        warnings=[*warnings, *claim_payment.warnings],
        lines=[_line(n, line) for n, line in enumerate(claim_payment.service_lines, 1)],
        claim_adjustments=[_adjustment(a) for a in claim_payment.adjustments],
    )


def _adjustment(adjustment: CasAdjustment) -> LineAdjustment:
    quantity = float(adjustment.quantity) if adjustment.quantity is not None else None
    group, reason, amount = adjustment.group, adjustment.reason, adjustment.amount
    return LineAdjustment(group=group, reason=reason, amount=amount, quantity=quantity)


def _line(number: int, line: ServicePayment) -> PostedLine:
    return PostedLine(
        line=number,
        qualifier=line.qualifier,
        procedure=line.procedure,
        modifiers=list(line.modifiers),
        revenue_code=line.revenue_code,
        charge=line.charge,
        paid=line.paid,
        units=float(line.units) if line.units is not None else None,
        original_procedure=line.original_procedure,
        line_control_number=line.line_control_number,
        service_date=line.service_date,
        adjustments=[_adjustment(a) for a in line.adjustments],
    )


# --- the corpus ----------------------------------------------------------------------------------


class Weights:
    """A DRG weight for every DRG (the pricing path of a claim without an expected amount)."""

    def weight(self, drg: str, discharge: date) -> Decimal:
        return Decimal("1.2345")


def cases() -> list[tuple[ClaimPayment, SubmittedClaim | None, dict[str, Any]]]:
    bodies: list[bytes | str] = [f.body for f in payer_files()]
    sample = SHARED_DATA / "x12" / "835_mult_loops.txt"
    if sample.is_file():
        bodies.append(sample.read_bytes())
    claims = {c.claim_id: c for c in CLAIMS}
    for mix in sim_corpus.MIXES:
        bodies += sim_corpus.payer_835s(mix)
        claims.update({c.claim_id: c for c in sim_corpus.submitted(mix)})
    drg = Pricing(drg_weights=Weights(), drg_base_rate=Decimal("6500.00"))
    split = Prior(Decimal("10.00"), Decimal("4.10"), Decimal("1.005"), Decimal("0.08"))
    out = []
    for body in bodies:
        for remit in read_835(body).remittances:
            for occurrence, payment in occurrences(remit):
                claim = claims.get(payment.patient_control_number)
                base = {
                    "payer_id": payer_of(remit),
                    "file_id": "F1",
                    "payment_trace": remit.trace_number,
                    "payment_date": remit.payment_date,
                    "posted_at": AT,
                    "occurrence": occurrence,
                    "warnings": ("file warning",) if occurrence else (),
                }
                out.append((payment, claim, base))
                out.append((payment, None, base))
                if claim is not None:
                    out.append((payment, claim, {**base, "prior": split}))
                    bare = claim.model_copy(update={"expected_reimbursement": None})
                    out.append((payment, bare, {**base, "pricing": drg}))
    # Values no file above has: fractions of a cent, whole dollars, a quantity; a reversal.
    payment, claim, base = next(c for c in out if c[0].service_lines and c[1] is not None)
    odd = replace(
        payment,
        charge=Decimal("100"),
        paid=Decimal("40.005"),
        patient_responsibility=Decimal("-0"),
        adjustments=(CasAdjustment("CO", "45", Decimal("59.995"), Decimal("2")),),
        service_lines=(
            replace(
                payment.service_lines[0],
                charge=Decimal("50"),
                paid=Decimal("20.005"),
                units=Decimal("1.5"),
                adjustments=(CasAdjustment("CO", "45", Decimal("29.995"), Decimal("1")),),
            ),
        ),
    )
    out.append((odd, claim, base))
    reversal = replace(payment, status_code="22", charge=-payment.charge, paid=-payment.paid)
    out.append((reversal, claim, base))
    return out


@pytest.fixture(scope="module")
def corpus() -> list[tuple[ClaimPayment, SubmittedClaim | None, dict[str, Any]]]:
    return cases()


def test_the_corpus_has_the_shapes_that_matter(
    corpus: list[tuple[ClaimPayment, SubmittedClaim | None, dict[str, Any]]],
) -> None:
    postings = [judge_post(p, c, **kw) for p, c, kw in corpus]
    assert len(postings) > 1000
    statuses = {p.status for p in postings}
    assert statuses >= {"paid", "partially_paid", "denied", "reversed", "unmatched"}
    assert any(p.expected is not None and p.variance is not None for p in postings)
    assert any(line.adjustments and line.units is not None for p in postings for line in p.lines)
    assert any(p.claim_adjustments for p in postings)
    assert any(p.crossover_payer for p in postings)
    assert any(p.warnings for p in postings)


def test_the_posting_built_is_the_posting_validated(
    corpus: list[tuple[ClaimPayment, SubmittedClaim | None, dict[str, Any]]],
) -> None:
    for payment, claim, kw in corpus:
        built = post(payment, claim, **kw)
        judged = judge_post(payment, claim, **kw)
        where = (payment.patient_control_number, claim is not None, sorted(kw))
        assert built == judged, where
        assert repr(built) == repr(judged), where  # value types too (a Decimal's exponent)
        assert built.model_dump_json() == judged.model_dump_json(), where
        assert REG.encode("remittance.posted.v1", built) == REG.encode(
            "remittance.posted.v1", judged
        ), where
        assert built.model_fields_set == judged.model_fields_set


def test_the_judge_sees_an_amount_not_in_cents(
    corpus: list[tuple[ClaimPayment, SubmittedClaim | None, dict[str, Any]]],
) -> None:
    """The comparison fails on a posting whose money is not in cents as ``Money`` holds it."""
    payment, claim, kw = next(c for c in corpus if c[0].paid == Decimal("40.005"))
    built = post(payment, claim, **kw)
    unrounded = built.model_copy(update={"paid": payment.paid})
    assert repr(unrounded) != repr(judge_post(payment, claim, **kw))


def test_sequestration_is_the_sum_over_all_adjustments(
    corpus: list[tuple[ClaimPayment, SubmittedClaim | None, dict[str, Any]]],
) -> None:
    """``sequestration`` adds the CARC 253 amounts without making ``all_adjustments``: the
    same sum, in the same order (the same Decimal, exponent too)."""
    cut = CasAdjustment("CO", "253", Decimal("1.10"))
    payments = [p for p, _, _ in corpus]
    first = next(p for p in payments if p.service_lines)
    line = replace(first.service_lines[0], adjustments=(cut, replace(cut, amount=Decimal("-0.1"))))
    payments.append(replace(first, adjustments=(cut,), service_lines=(line,)))
    cut_somewhere = 0
    for payment in payments:
        judged = sum(
            (a.amount for _, a in payment.all_adjustments() if a.reason == "253"), Decimal("0.00")
        )
        assert repr(sequestration(payment)) == repr(judged)
        cut_somewhere += judged != 0
    assert cut_somewhere >= 1


def _reference_balance_errors(payment: ClaimPayment) -> list[str]:
    """``ClaimPayment.balance_errors`` as it was: the claim's total over ``all_adjustments``."""
    errors: list[str] = []
    pcn = payment.patient_control_number
    for number, line in enumerate(payment.service_lines, start=1):
        if line.charge - line.adjustment_total != line.paid:
            errors.append(
                f"CLP01 {pcn} line {number}: SVC02 {line.charge} - CAS {line.adjustment_total}"
                f" != SVC03 {line.paid}"
            )
    total_adj = sum((a.amount for _, a in payment.all_adjustments()), Decimal("0.00"))
    if payment.charge - total_adj != payment.paid:
        errors.append(
            f"CLP01 {pcn}: CLP03 {payment.charge} - CAS {total_adj} != CLP04 {payment.paid}"
        )
    return errors


def test_balance_errors_sum_the_adjustments_as_all_adjustments_lists_them(
    corpus: list[tuple[ClaimPayment, SubmittedClaim | None, dict[str, Any]]],
) -> None:
    payments = list({id(p): p for p, _, _ in corpus}.values())
    off = [replace(p, paid=p.paid + Decimal("0.01")) for p in payments[:50]]
    unbalanced = 0
    for payment in payments + off:
        errors = payment.balance_errors()
        assert errors == _reference_balance_errors(payment)
        unbalanced += bool(errors)
    assert unbalanced >= 50


def test_the_cas_models_kept_are_those_of_the_very_same_amounts(
    corpus: list[tuple[ClaimPayment, SubmittedClaim | None, dict[str, Any]]],
) -> None:
    """A triplet's two models are kept by the amount and quantity objects the reader made:
    amounts equal but written otherwise (a signed zero, another exponent) are made anew, and
    the same objects again give the same models; every posting is the validated one."""
    payment, claim, kw = next(c for c in corpus if c[0].service_lines and c[1] is not None)
    values = [
        (Decimal("0.00"), None),
        (Decimal("-0.00"), Decimal("-0")),
        (Decimal("0.00"), Decimal("0")),
        (Decimal("12.5"), Decimal("1")),
        (Decimal("12.50"), Decimal("1.0")),
        (Decimal("12.505"), Decimal("2")),
    ]
    for amount, quantity in values:
        cas = CasAdjustment("CO", "45", amount, quantity)
        first = replace(payment.service_lines[0], adjustments=(cas, cas))
        variant = replace(
            payment, adjustments=(cas,), service_lines=(first, *payment.service_lines[1:])
        )
        built = [post(variant, claim, **kw) for _ in range(2)]  # made, then kept
        judged = judge_post(variant, claim, **kw)
        for posting in built:
            assert repr(posting) == repr(judged), (amount, quantity)
            assert REG.encode("remittance.posted.v1", posting) == REG.encode(
                "remittance.posted.v1", judged
            )
        assert built[0].lines[0].adjustments[0] is built[1].lines[0].adjustments[0]


def test_postings_are_written_the_same_with_their_adjustments_bytes_kept(
    corpus: list[tuple[ClaimPayment, SubmittedClaim | None, dict[str, Any]]],
) -> None:
    """The posting's Avro writer keeps the bytes of the adjustment models ``_cas_models``
    shares between postings (``avro_write.SHARED``); the writer that keeps none is the
    judge. Every posting is written twice (the second time from what was kept)."""
    sv = REG.latest("remittance.posted.v1")
    named = sv.parsed["__named_schemas"]
    kept = writer_for(sv.parsed, named, RemittancePosting)
    plain = writer_for(sv.parsed, named, RemittancePosting, kept=frozenset())
    assert kept is not None and plain is not None
    assert {m.__name__ for m in SHARED[RemittancePosting]} == {"Adjustment", "LineAdjustment"}
    postings = [post(payment, claim, **kw) for payment, claim, kw in corpus]
    shared = [a for p in postings for a in p.adjustments]
    assert len({id(a) for a in shared}) < len(shared) / 2  # the models are shared
    for _ in range(2):
        for posting in postings:
            with_kept, judged = bytearray(), bytearray()
            kept(posting, with_kept)
            plain(posting, judged)
            assert with_kept == judged, posting.event_id
    memos = [v for k, v in kept.__globals__.items() if k.startswith("kept")]
    assert len(memos) == 2 and all(memos)
