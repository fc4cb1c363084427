"""Required fields: payer, member, billing provider, patient, diagnoses, lines, subscriber."""

from __future__ import annotations

import functools
import re

from services.validation.engine import NONE, Context, Hit, Hits, rule
from services.validation.rules._util import blank

SELF = "18"
DEPENDENT_RELATIONSHIPS = frozenset({"01", "19", "20", "21", "39", "40", "53", "G8"})
"""Individual relationship codes the 837P (005010X222A1 PAT01) takes for a dependent patient."""


@rule(
    "CF-REQ-001",
    "error",
    "A claim must name the payer it is sent to.",
    category="required",
    fix_hint="Fill coverage.payer_id with the payer's id from the eligibility response.",
)
def payer_id(ctx: Context) -> Hits:
    if blank(ctx.coded.encounter.coverage.payer_id):
        return (
            Hit("encounter.coverage.payer_id", "The payer id is missing: the claim has no payer."),
        )
    return NONE


@rule(
    "CF-REQ-002",
    "error",
    "A payer finds the patient's policy by the member id.",
    category="required",
    fix_hint="Copy the member id from the insurance card or the eligibility response.",
)
def member_id(ctx: Context) -> Hits:
    if blank(ctx.coded.encounter.coverage.member_id):
        return (
            Hit(
                "encounter.coverage.member_id",
                "The member id is missing: the payer cannot find the patient's coverage.",
            ),
        )
    return NONE


@rule(
    "CF-REQ-003",
    "error",
    "The billing provider's NPI identifies who is paid.",
    category="required",
    fix_hint="Enter the billing provider's 10-digit NPI (NPPES registry).",
)
def billing_npi(ctx: Context) -> Hits:
    if blank(ctx.coded.encounter.billing_provider.npi):
        return (Hit("encounter.billing_provider.npi", "The billing provider's NPI is missing."),)
    return NONE


@rule(
    "CF-REQ-004",
    "error",
    "Payers match the patient by date of birth.",
    category="required",
    fix_hint="Record the patient's date of birth in the EHR registration.",
)
def birth_date(ctx: Context) -> Hits:
    if ctx.coded.encounter.patient.birth_date is None:
        return (Hit("encounter.patient.birth_date", "The patient's date of birth is missing."),)
    return NONE


@rule(
    "CF-REQ-005",
    "error",
    "Every claim needs at least one diagnosis to justify the services.",
    category="required",
    fix_hint="Code the diagnosis the documentation supports, or send the encounter to a coder.",
)
def has_diagnosis(ctx: Context) -> Hits:
    if not ctx.coded.diagnoses:
        return (Hit("diagnoses", "The encounter has no ICD-10-CM diagnosis."),)
    return NONE


@rule(
    "CF-REQ-006",
    "error",
    "A claim bills service lines; without one there is nothing to pay.",
    category="required",
    fix_hint="Add the CPT or HCPCS codes of the services performed.",
)
def has_lines(ctx: Context) -> Hits:
    if not ctx.coded.lines:
        return (Hit("lines", "The encounter has no CPT or HCPCS service line."),)
    return NONE


@rule(
    "CF-REQ-007",
    "error",
    "A patient who is not the subscriber is billed under the policy holder: the 837P needs a "
    "relationship it allows (18 self, or 01, 19, 20, 21, 39, 40, 53, G8) and, for a "
    "dependent, the subscriber's name.",
    category="required",
    fix_hint="Record the policy holder (name, date of birth) and the patient's relationship "
    "to them from the insurance card.",
)
def subscriber(ctx: Context) -> Hits:
    coverage = ctx.coded.encounter.coverage
    code = coverage.relationship.strip().upper()
    if code == SELF:
        return NONE  # the patient is the subscriber: nearly every encounter
    hits = []
    if code not in DEPENDENT_RELATIONSHIPS:
        hits.append(
            Hit(
                "encounter.coverage.relationship",
                f"The relationship {coverage.relationship!r} is not one an 837P can carry: use 18 "
                f"when the patient is the subscriber, else one of "
                f"{', '.join(sorted(DEPENDENT_RELATIONSHIPS))}.",
            )
        )
    if coverage.subscriber is None:
        hits.append(
            Hit(
                "encounter.coverage.subscriber",
                f"The patient is not the subscriber (relationship {code}) but the coverage names "
                "no subscriber; the claim must carry the policy holder's name.",
            )
        )
    return hits


PO_BOX = re.compile(r"\b(P\.?\s*O\.?\s*BOX|POST\s+OFFICE\s+BOX|LOCK\s*BOX)\b", re.I)


@functools.lru_cache(maxsize=4096)
def po_box(line1: str, line2: str | None) -> bool:
    """Whether an address's street lines name a post office box (``PO_BOX``), kept per
    lines: a billing provider's address comes back on every encounter it bills."""
    return PO_BOX.search(f"{line1} {line2 or ''}") is not None


@rule(
    "CF-ADDR-001",
    "error",
    "The 837P billing provider address (loop 2010AA) must be a street address with a "
    "9-digit ZIP code.",
    category="required",
    fix_hint="Use the practice's street address with its ZIP+4; a PO box may only be the "
    "pay-to address.",
)
def billing_address(ctx: Context) -> Hits:
    address = ctx.coded.encounter.billing_provider.address
    field = "encounter.billing_provider.address"
    if address is None:
        return (Hit(field, "The billing provider has no address; the 837P requires one."),)
    hits = NONE
    if len(address.postal_code) != 9:
        hits = (
            Hit(
                f"{field}.postal_code",
                f"The billing provider ZIP {address.postal_code} has 5 digits; the 837P "
                "requires all 9 (ZIP+4).",
            ),
        )
    if po_box(address.line1, address.line2):
        hits += (
            Hit(
                f"{field}.line1",
                "The billing provider address is a post office box; the 837P requires a "
                "street address (a PO box may only be a pay-to address).",
            ),
        )
    return hits
