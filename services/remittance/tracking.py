"""What remittance's records tell the tracker (``pipeline/tracker.py``): payer files read,
claims posted (with what each payer left the patient), payments held in exceptions and the
denial queue."""

from __future__ import annotations

from decimal import Decimal
from typing import Any


def payer_file(ledger: Any, key: str | None, value: Any) -> None:
    ledger.payer_files += 1


def posted(ledger: Any, key: str | None, value: Any) -> None:
    ledger.touch_claim(value.claim_id)
    ledger.posted[value.claim_id] = value.status
    ledger.paid[value.claim_id] = value.paid
    ledger.last_posting[value.claim_id] = (
        getattr(value, "payer_id", ""),
        getattr(value, "patient_responsibility", Decimal(0)),
        bool(getattr(value, "crossover_payer", None)),
        value.status,
    )
    ledger.posting_events[value.claim_id][value.event_id] += 1


posted.milestone = "posted"  # type: ignore[attr-defined]  # the report's timeline


def held(ledger: Any, key: str | None, value: Any) -> None:
    for claim in value.claims:
        ledger.touch_claim(claim.claim_id)
    for claim in value.claims:
        ledger.exceptions[claim.claim_id] = value.kind


def denied(ledger: Any, key: str | None, value: Any) -> None:
    ledger.denials[value.claim_id] = value.category
    ledger.denial_reasons[value.claim_id] = [(r.group, r.carc) for r in value.reasons]
    ledger.denial_kinds[value.claim_id] = value.kind
    for r in value.reasons:
        if r.description:
            ledger.carc_text.setdefault(r.carc, r.description)


TOPICS = {
    "payer.inbound.v1": payer_file,
    "remittance.posted.v1": posted,
    "remittance.exceptions.v1": held,
    "remittance.denials.v1": denied,
}
