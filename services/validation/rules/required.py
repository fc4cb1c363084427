"""Required fields: payer, member, billing provider, patient, diagnoses, lines, subscriber."""

from __future__ import annotations

import re
from collections.abc import Iterator

from services.validation.engine import Context, Hit, rule
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
def payer_id(ctx: Context) -> Iterator[Hit]:
    if blank(ctx.coded.encounter.coverage.payer_id):
        yield Hit("encounter.coverage.payer_id", "The payer id is missing: the claim has no payer.")


@rule(
    "CF-REQ-002",
    "error",
    "A payer finds the patient's policy by the member id.",
    category="required",
    fix_hint="Copy the member id from the insurance card or the eligibility response.",
)
def member_id(ctx: Context) -> Iterator[Hit]:
    if blank(ctx.coded.encounter.coverage.member_id):
        yield Hit(
            "encounter.coverage.member_id",
            "The member id is missing: the payer cannot find the patient's coverage.",
        )


@rule(
    "CF-REQ-003",
    "error",
    "The billing provider's NPI identifies who is paid.",
    category="required",
    fix_hint="Enter the billing provider's 10-digit NPI (NPPES registry).",
)
def billing_npi(ctx: Context) -> Iterator[Hit]:
    if blank(ctx.coded.encounter.billing_provider.npi):
        yield Hit("encounter.billing_provider.npi", "The billing provider's NPI is missing.")


@rule(
    "CF-REQ-004",
    "error",
    "Payers match the patient by date of birth.",
    category="required",
    fix_hint="Record the patient's date of birth in the EHR registration.",
)
def birth_date(ctx: Context) -> Iterator[Hit]:
    if ctx.coded.encounter.patient.birth_date is None:
        yield Hit("encounter.patient.birth_date", "The patient's date of birth is missing.")


@rule(
    "CF-REQ-005",
    "error",
    "Every claim needs at least one diagnosis to justify the services.",
    category="required",
    fix_hint="Code the diagnosis the documentation supports, or send the encounter to a coder.",
)
def has_diagnosis(ctx: Context) -> Iterator[Hit]:
    if not ctx.coded.diagnoses:
        yield Hit("diagnoses", "The encounter has no ICD-10-CM diagnosis.")


@rule(
    "CF-REQ-006",
    "error",
    "A claim bills service lines; without one there is nothing to pay.",
    category="required",
    fix_hint="Add the CPT or HCPCS codes of the services performed.",
)
def has_lines(ctx: Context) -> Iterator[Hit]:
    if not ctx.coded.lines:
        yield Hit("lines", "The encounter has no CPT or HCPCS service line.")


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
def subscriber(ctx: Context) -> Iterator[Hit]:
    coverage = ctx.coded.encounter.coverage
    code = coverage.relationship.strip().upper()
    if code != SELF and code not in DEPENDENT_RELATIONSHIPS:
        yield Hit(
            "encounter.coverage.relationship",
            f"The relationship {coverage.relationship!r} is not one an 837P can carry: use 18 "
            f"when the patient is the subscriber, else one of "
            f"{', '.join(sorted(DEPENDENT_RELATIONSHIPS))}.",
        )
    if code != SELF and coverage.subscriber is None:
        yield Hit(
            "encounter.coverage.subscriber",
            f"The patient is not the subscriber (relationship {code}) but the coverage names "
            "no subscriber; the claim must carry the policy holder's name.",
        )


PO_BOX = re.compile(r"\b(P\.?\s*O\.?\s*BOX|POST\s+OFFICE\s+BOX|LOCK\s*BOX)\b", re.I)


@rule(
    "CF-ADDR-001",
    "error",
    "The 837P billing provider address (loop 2010AA) must be a street address with a "
    "9-digit ZIP code.",
    category="required",
    fix_hint="Use the practice's street address with its ZIP+4; a PO box may only be the "
    "pay-to address.",
)
def billing_address(ctx: Context) -> Iterator[Hit]:
    address = ctx.coded.encounter.billing_provider.address
    field = "encounter.billing_provider.address"
    if address is None:
        yield Hit(field, "The billing provider has no address; the 837P requires one.")
        return
    if len(address.postal_code) != 9:
        yield Hit(
            f"{field}.postal_code",
            f"The billing provider ZIP {address.postal_code} has 5 digits; the 837P requires "
            "all 9 (ZIP+4).",
        )
    if PO_BOX.search(f"{address.line1} {address.line2 or ''}"):
        yield Hit(
            f"{field}.line1",
            "The billing provider address is a post office box; the 837P requires a street "
            "address (a PO box may only be a pay-to address).",
        )
