"""Posting: turn one 835 claim payment, matched to its submitted claim, into a posting.

Status rules, in order: no matching claim -> unmatched; CLP02 22 -> reversed; CLP02 4, or
nothing paid and nothing owed by the patient -> denied; a line denied (paid 0, no patient
share) or paid below the expected reimbursement -> partially_paid; else paid. Medicare
sequestration (CARC 253) is a statutory cut, not an underpayment: it counts towards the
allowed amount for the status but still shows in the variance, which is money against
expectation: (paid + patient responsibility) - expected.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from pipeline.errors import InputError
from pipeline.models import Adjustment, RemittancePosting, SubmittedClaim, event_id
from services.remittance.era import ZERO, ClaimPayment, Remittance, ServicePayment

STAGE = "remittance"
VERSION = "v1"
SEQUESTRATION = "253"

PostingStatus = Literal["paid", "partially_paid", "denied", "reversed", "unmatched"]
ClaimLookup = Mapping[str, SubmittedClaim] | Callable[[str], SubmittedClaim | None]


def _line_denied(line: ServicePayment) -> bool:
    """Nothing paid on a charged line and nothing of it left to the patient."""
    patient_share = any(a.group == "PR" and a.amount != 0 for a in line.adjustments)
    return line.charge != 0 and line.paid == 0 and not patient_share


def posting_status(payment: ClaimPayment, claim: SubmittedClaim | None) -> PostingStatus:
    """paid, partially_paid, denied, reversed or unmatched (see the module docstring)."""
    if claim is None:
        return "unmatched"
    if payment.status_code == "22":
        return "reversed"
    if payment.status_code == "4" or (payment.paid == 0 and payment.patient_responsibility == 0):
        return "denied"
    if any(_line_denied(line) for line in payment.service_lines):
        return "partially_paid"
    expected = claim.expected_reimbursement
    if expected is not None:
        sequestration = sum(
            (a.amount for _, a in payment.all_adjustments() if a.reason == SEQUESTRATION), ZERO
        )
        if payment.paid + payment.patient_responsibility + sequestration < expected:
            return "partially_paid"
    return "paid"


def post(
    claim_payment: ClaimPayment,
    claim: SubmittedClaim | None,
    *,
    payer_id: str,
    file_id: str,
    payment_trace: str | None,
    payment_date: date | None,
    posted_at: datetime,
) -> RemittancePosting:
    """Post one CLP loop against the claim it answers (None when no claim matched)."""
    if not payer_id:
        raise InputError("payer_id", "a posting needs the payer id")
    status = posting_status(claim_payment, claim)
    expected: Decimal | None = claim.expected_reimbursement if claim is not None else None
    variance: Decimal | None = None
    if expected is not None and status != "reversed":
        variance = claim_payment.paid + claim_payment.patient_responsibility - expected
    claim_id = claim.claim_id if claim is not None else claim_payment.patient_control_number
    # The status code is part of the id: a reversal (22) of a payment carries the same payer
    # control number as the payment and must not be dropped as its duplicate.
    source = claim_payment.payer_claim_control_number or payment_trace or file_id
    return RemittancePosting(
        event_id=event_id(claim_id, source, claim_payment.status_code, STAGE, VERSION),
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
    )


def post_remittance(
    remittance: Remittance,
    claims: ClaimLookup,
    *,
    file_id: str,
    posted_at: datetime,
    payer_id: str | None = None,
) -> list[RemittancePosting]:
    """Post every claim of one 835 payment, matching CLP01 to the submitted claim id."""
    lookup = claims.get if isinstance(claims, Mapping) else claims
    payer = payer_id or remittance.payer_id or remittance.originator_id or remittance.payer_name
    return [
        post(
            payment,
            lookup(payment.patient_control_number),
            payer_id=payer,
            file_id=file_id,
            payment_trace=remittance.trace_number,
            payment_date=remittance.payment_date,
            posted_at=posted_at,
        )
        for payment in remittance.claims
    ]
