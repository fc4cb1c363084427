"""When a claim counts as settled, for the retention of stored claim payloads.

Remittance is where a claim's adjudication is known, so it says so on
``remittance.settled.v1``; the claims stage keeps what it stored to bill the claim (the
verdict with the patient's demographics, the 837 text) for a window after that, for
reversals and corrected claims, and then prunes it (``services/claims/retention.py``).

Every posted adjudication settles the claim: paid, partially paid, and denied (CLP02 4, a
denial the payer finalised; an appeal or a corrected claim is what the window is for). A
reversal (CLP02 22) opens it again; the corrected payment that follows settles it anew.
A write-off in the console (``console.writeoffs.v1``) settles the claim too
(``written_off``), when it is made: a claim the provider stopped collecting needs no 835
to settle, and an 835 that comes later settles it again. No Kafka here.
"""

from __future__ import annotations

from typing import Literal

from pipeline.models import ClaimSettled, ClaimWrittenOff, RemittancePosting, event_id
from pipeline.serde import model_builder

STAGE, VERSION = "remittance", "v1"
SettledStatus = Literal["paid", "partially_paid", "denied", "written_off", "reopened"]
SETTLES: dict[str, SettledStatus] = {
    "paid": "paid",
    "partially_paid": "partially_paid",
    "denied": "denied",
    "reversed": "reopened",
}
"""Posting status -> what it means for the claim's settlement (others: nothing)."""


def settlement_for(posting: RemittancePosting) -> ClaimSettled | None:
    """The settlement (or reopening) a posting means for its claim; None for a status that
    says nothing about adjudication."""
    status = SETTLES.get(posting.status)
    if status is None:
        return None
    return _build_settled(
        {
            "event_id": event_id(posting.event_id, "settled", STAGE, VERSION),
            "claim_id": posting.claim_id,
            "encounter_id": posting.encounter_id,
            "payer_id": posting.payer_id,
            "status": status,
            "posting_event_id": posting.event_id,
            "settled_at": posting.posted_at,
        }
    )


# A posting's settlement is built from the posting's own values, which its model holds as
# the settlement's fields want them (a non-empty claim id: the ledger found its claim):
# validating them again cost 1.9 us a posting, the trusted build 0.75.
# tests/unit/test_remittance_settlement.py compares it with the validated build.
_build_settled = model_builder(ClaimSettled)


def settlement_for_write_off(write_off: ClaimWrittenOff) -> ClaimSettled:
    """A claim written off in the console is settled from then on."""
    return ClaimSettled(
        event_id=event_id(write_off.event_id, "settled", STAGE, VERSION),
        claim_id=write_off.claim_id,
        encounter_id=write_off.encounter_id,
        payer_id=write_off.payer_id,
        status="written_off",
        posting_event_id=write_off.event_id,
        settled_at=write_off.written_off_at,
    )
