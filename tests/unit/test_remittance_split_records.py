"""The split's records are what the general path gives.

A payer payment record takes its figures from the payment itself instead of
``posting.reconcile``'s summary (which also checks every claim's balancing again, which
``triage`` did already). The summary stays the judge: on every postable payment of the 835
fixtures, the public sample 835 and the payer simulator's 835s for both EHR mixes, the
record must carry its figures, and the event id made from them.

Both records are built without validating them again (``model_builder``); the validated
build they replaced is the judge, kept below: the same records, the same JSON, the same Avro
bytes, on the corpus and on amounts that are not in cents.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

from test_remittance_split_json import corpus_files

from pipeline.models import (
    ClaimPaymentRecord,
    PaidClaimReference,
    PayerFile,
    PayerPaymentRecord,
    PlbAdjustment,
    event_id,
)
from pipeline.serde import registry
from services.remittance.era import ClaimPayment, Read835, read_835
from services.remittance.posting import Postable, payer_of, reconcile, triage
from services.remittance.split import (
    CLAIM_PAYMENTS,
    PAYER_PAYMENTS,
    claim_payment_json,
    claim_payment_record,
    payer_payment_record,
)

REG = registry()


def test_a_payer_payment_record_carries_the_reconciled_summary() -> None:
    payments = plbs = 0
    for file in corpus_files():
        postable, _ = triage(read_835(file.body))
        for payment in postable:
            made = payer_payment_record(file, payment)
            summary = reconcile(payment.remittance)
            assert summary.balanced  # only a balanced payment is postable
            parts = (summary.payer_id, summary.payment_trace, summary.transaction_control_number)
            assert made.event_id == event_id(*parts, "payer-payment", "remittance", "v1")
            assert (made.payer_id, made.payment_trace, made.transaction_control_number) == parts
            assert made.payment_amount == summary.payment_amount
            assert made.claims_paid == summary.claims_paid
            assert made.claim_count == summary.claims == len(made.claims)
            assert [
                (a.seq, a.provider_id, a.fiscal_period_end, a.reason, a.reference, a.amount)
                for a in made.provider_adjustments
            ] == [
                (seq, a.provider_id, a.fiscal_period_end, a.reason, a.reference, a.amount)
                for seq, a in enumerate(summary.provider_adjustments)
            ]
            payments += 1
            plbs += len(made.provider_adjustments)
    assert payments > 25
    assert plbs > 3  # the fixtures' PLBs (forward balances, a takeback) are among them


# --- the validated build (the path before), the judge of the records built unvalidated ---------


def judge_claim_payment_record(
    file: PayerFile,
    source: tuple[int, int] | None,
    payment: Postable,
    clp: ClaimPayment,
    occurrence: int,
    sequence: int,
    read: Read835,
) -> ClaimPaymentRecord:
    remit = payment.remittance
    claim_id = clp.patient_control_number
    return ClaimPaymentRecord(
        event_id=event_id(
            claim_id,
            f"{file.payer_id}:{file.file_id}",
            remit.transaction_control_number,
            remit.trace_number,
            str(occurrence),
            "claim-payment",
            "remittance",
            "v1",
        ),
        kind="payment",
        claim_id=claim_id,
        payer_id=file.payer_id,
        file_id=file.file_id,
        received_at=file.received_at,
        source_partition=source[0] if source else None,
        source_offset=source[1] if source else None,
        transaction_control_number=remit.transaction_control_number,
        payment_trace=remit.trace_number,
        payment_date=remit.payment_date,
        payment_amount=remit.net_payment,
        sequence=sequence,
        occurrence=occurrence,
        warnings=[*read.warnings, *remit.warnings],
        payment=claim_payment_json(clp),
    )


def judge_payer_payment_record(file: PayerFile, payment: Postable) -> PayerPaymentRecord:
    remit = payment.remittance
    payer_id = payer_of(remit)
    return PayerPaymentRecord(
        event_id=event_id(
            payer_id,
            remit.trace_number,
            remit.transaction_control_number,
            "payer-payment",
            "remittance",
            "v1",
        ),
        payer_id=payer_id,
        file_payer_id=file.payer_id,
        file_id=file.file_id,
        payment_trace=remit.trace_number,
        transaction_control_number=remit.transaction_control_number,
        payment_amount=remit.net_payment,
        claims_paid=remit.claims_paid,
        claim_count=len(remit.claims),
        claims=[
            PaidClaimReference(
                claim_id=c.patient_control_number,
                payer_claim_control_number=c.payer_claim_control_number,
            )
            for c in remit.claims
        ],
        provider_adjustments=[
            PlbAdjustment(
                seq=seq,
                provider_id=plb.provider_id,
                fiscal_period_end=plb.fiscal_period_end,
                reason=plb.reason,
                reference=plb.reference,
                amount=plb.amount,
            )
            for seq, plb in enumerate(remit.provider_adjustments)
        ],
        received_at=file.received_at,
    )


def _same(made: Any, judged: Any, topic: str) -> None:
    assert made == judged
    assert repr(made) == repr(judged)  # the values' types too
    assert made.model_dump_json() == judged.model_dump_json()
    assert REG.encode(topic, made) == REG.encode(topic, judged)


def test_the_split_records_are_the_validated_records() -> None:
    records = payers = 0
    for file in corpus_files():
        read = read_835(file.body)
        postable, _ = triage(read)
        for source in (None, (3, 17)):
            sequence = 0
            for payment in postable:
                for occurrence, clp in payment.occurrences():
                    args = (file, source, payment, clp, occurrence, sequence, read)
                    made = claim_payment_record(*args)
                    _same(made, judge_claim_payment_record(*args), CLAIM_PAYMENTS)
                    sequence += 1
                    records += 1
                made_payer = payer_payment_record(file, payment)
                _same(made_payer, judge_payer_payment_record(file, payment), PAYER_PAYMENTS)
                payers += 1
    assert records > 100
    assert payers > 50


def test_amounts_of_more_places_are_in_cents_as_validation_gives_them() -> None:
    """A payment made by hand (not read from an 835) with amounts of other exponents."""
    file = corpus_files()[0]
    read = read_835(file.body)
    postable, _ = triage(read)
    payment = postable[0]
    remit = replace(
        payment.remittance,
        payment_amount=Decimal("12.345"),
        provider_adjustments=tuple(
            replace(a, amount=Decimal("1.005")) for a in payment.remittance.provider_adjustments
        ),
        claims=tuple(replace(c, paid=Decimal("7")) for c in payment.remittance.claims),
    )
    odd = Postable(remit, tuple(remit.claims))
    clp = remit.claims[0]
    made = claim_payment_record(file, None, odd, clp, 0, 0, read)
    _same(made, judge_claim_payment_record(file, None, odd, clp, 0, 0, read), CLAIM_PAYMENTS)
    made_payer = payer_payment_record(file, odd)
    _same(made_payer, judge_payer_payment_record(file, odd), PAYER_PAYMENTS)
