"""The split's records are what the general path gives.

A payer payment record takes its figures from the payment itself instead of
``posting.reconcile``'s summary (which also checks every claim's balancing again, which
``triage`` did already). The summary stays the judge: on every postable payment of the 835
fixtures, the public sample 835 and the payer simulator's 835s for both EHR mixes, the
record must carry its figures, and the event id made from them.
"""

from __future__ import annotations

from test_remittance_split_json import corpus_files

from pipeline.models import event_id
from services.remittance.era import read_835
from services.remittance.posting import reconcile, triage
from services.remittance.split import payer_payment_record


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
