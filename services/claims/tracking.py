"""What the claims stage's records tell the tracker (``pipeline/tracker.py``): how many
claims a verdict bills, each claim sent (its encounter, payer, type, charge), the interchanges
that carried them and each claim a payer's front end refused."""

from __future__ import annotations

from typing import Any


def claims_billed(coded: Any) -> int:
    """How many claims a verdict bills: one per claim type among its lines (a line's own
    type, else the setting's: facility settings bill on the 837I)."""
    setting = coded.encounter.setting
    default = "professional" if setting == "professional" else "institutional"
    return max(1, len({line.claim_type or default for line in coded.lines}))


def verdict(ledger: Any, key: str | None, value: Any) -> None:
    coded = getattr(value, "coded", None)
    if coded is not None:
        ledger.expected_claims[value.encounter_id] = claims_billed(coded)


def submitted(ledger: Any, key: str | None, value: Any) -> None:
    ledger.touch_encounter(value.encounter_id)
    ledger.claim_encounter[value.claim_id] = value.encounter_id
    if value.claim_type == "institutional" or value.encounter_id not in ledger.encounter_claim:
        ledger.encounter_claim[value.encounter_id] = value.claim_id
    ledger.encounter_claims[value.encounter_id].add(value.claim_id)
    ledger.claim_event(value.claim_id, value.event_id)
    ledger.payers[value.claim_id] = value.payer_id
    ledger.payer_names.setdefault(value.payer_id, value.payer_name)
    ledger.claim_types[value.claim_id] = value.claim_type
    ledger.charges[value.claim_id] = value.total_charge
    if ledger.keep_x12 and value.x12:  # written before the claim check
        ledger.x12[value.claim_id] = value.x12


submitted.milestone = "submitted"  # type: ignore[attr-defined]  # the report's timeline


def interchange(ledger: Any, key: str | None, value: Any) -> None:
    if ledger.keep_x12:  # each claim event names its interchange: stored once
        for claim_id in value.claim_ids:
            ledger.x12[claim_id] = value.x12


interchange.x12_only = True  # type: ignore[attr-defined]  # only a test that checks 837s


def refused(ledger: Any, key: str | None, value: Any) -> None:
    ledger.touch_claim(value.claim_id)
    ledger.payer_rejections[value.claim_id] = value.source


TOPICS = {
    "encounters.validated.v1": verdict,
    "claims.submitted.v1": submitted,
    "claims.interchanges.v1": interchange,
    "claims.rejections.v1": refused,
}
