"""The claim scrubber's rule pack: explainable edits over a coded encounter.

Each rule has a stable id, a severity and a one-sentence explanation; each hit names the
field (a dotted path into the coded encounter) and, for line edits, the line number. The
outcome is ``rejected`` when any error fires, ``warnings`` when only warnings fire and
``clean`` otherwise. Bump ``RULE_PACK_VERSION`` whenever a rule is added or changes what it
decides: the version is part of every verdict's event id, so a replay after a rule change
produces new events instead of duplicates.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

from pipeline.models import CodedEncounter, EditHit, ValidatedEncounter, event_id
from services.refdata.codesets import (
    CodeSets,
    coding_date,
    dotted,
    icd10_covered,
    uncovered_reason,
)

RULE_PACK_VERSION = "2026.11.1"
STAGE = "validation"
MAX_DX_POINTERS = 4
MAX_MODIFIERS = 4

Severity = Literal["error", "warning", "info"]
Outcome = Literal["clean", "warnings", "rejected"]


@dataclass(frozen=True)
class Hit:
    """One place a rule fired: the field, the line (if any) and the message."""

    field: str
    message: str
    line: int | None = None


@dataclass(frozen=True)
class Context:
    """What every rule may look at."""

    coded: CodedEncounter
    codesets: CodeSets
    validated_at: datetime
    on: date  # the date whose code set applies


Check = Callable[[Context], Iterator[Hit]]


@dataclass(frozen=True)
class Rule:
    """An edit: id, severity, what it checks and why, and the check itself."""

    id: str
    severity: Severity
    explanation: str
    check: Check


RULES: list[Rule] = []


def rule(rule_id: str, severity: Severity, explanation: str) -> Callable[[Check], Check]:
    """Register a check function as a rule of this pack, in definition order."""

    def register(check: Check) -> Check:
        RULES.append(Rule(rule_id, severity, explanation, check))
        return check

    return register


def _one_line(text: str) -> str:
    """A multi-line tabular note as one sentence: 'head: item; item; item'."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " ".join(lines[:1] + ["; ".join(lines[1:])]).strip()


def _blank(value: str | None) -> bool:
    return value is None or not str(value).strip()


# --- required fields ---------------------------------------------------------------------


@rule("CF-REQ-001", "error", "A claim must name the payer it is sent to.")
def _payer_id(ctx: Context) -> Iterator[Hit]:
    if _blank(ctx.coded.encounter.coverage.payer_id):
        yield Hit("encounter.coverage.payer_id", "The payer id is missing: the claim has no payer.")


@rule("CF-REQ-002", "error", "A payer finds the patient's policy by the member id.")
def _member_id(ctx: Context) -> Iterator[Hit]:
    if _blank(ctx.coded.encounter.coverage.member_id):
        yield Hit(
            "encounter.coverage.member_id",
            "The member id is missing: the payer cannot find the patient's coverage.",
        )


@rule("CF-REQ-003", "error", "The billing provider's NPI identifies who is paid.")
def _billing_npi(ctx: Context) -> Iterator[Hit]:
    if _blank(ctx.coded.encounter.billing_provider.npi):
        yield Hit("encounter.billing_provider.npi", "The billing provider's NPI is missing.")


@rule("CF-REQ-004", "error", "Payers match the patient by date of birth.")
def _dob(ctx: Context) -> Iterator[Hit]:
    if ctx.coded.encounter.patient.birth_date is None:
        yield Hit("encounter.patient.birth_date", "The patient's date of birth is missing.")


@rule("CF-REQ-005", "error", "Every claim needs at least one diagnosis to justify the services.")
def _has_dx(ctx: Context) -> Iterator[Hit]:
    if not ctx.coded.diagnoses:
        yield Hit("diagnoses", "The encounter has no ICD-10-CM diagnosis.")


@rule("CF-REQ-006", "error", "A claim bills service lines; without one there is nothing to pay.")
def _has_lines(ctx: Context) -> Iterator[Hit]:
    if not ctx.coded.lines:
        yield Hit("lines", "The encounter has no CPT or HCPCS service line.")


SELF = "18"
DEPENDENT_RELATIONSHIPS = frozenset({"01", "19", "20", "21", "39", "40", "53", "G8"})
"""Individual relationship codes the 837P (005010X222A1 PAT01) takes for a dependent patient."""


@rule(
    "CF-REQ-007",
    "error",
    "A patient who is not the subscriber is billed under the policy holder: the 837P needs a "
    "relationship it allows (18 self, or 01, 19, 20, 21, 39, 40, 53, G8) and, for a "
    "dependent, the subscriber's name.",
)
def _subscriber(ctx: Context) -> Iterator[Hit]:
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


# --- identifiers -------------------------------------------------------------------------


def npi_is_valid(npi: str) -> bool:
    """The NPI check digit: Luhn over the 9 digits prefixed with the card issuer 80840."""
    if not re.fullmatch(r"\d{10}", npi or ""):
        return False
    digits = [int(c) for c in "80840" + npi[:9]]
    total = 0
    for k, d in enumerate(reversed(digits)):
        if k % 2 == 0:  # every second digit from the right of the payload is doubled
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return (10 - total % 10) % 10 == int(npi[9])


def _npi_hits(npi: str | None, field: str, who: str) -> Iterator[Hit]:
    if _blank(npi):
        return
    assert npi is not None
    if not npi_is_valid(npi):
        yield Hit(
            field,
            f"The {who} NPI {npi} is not a valid NPI: it must be 10 digits whose last digit is "
            "the Luhn check digit (with the 80840 prefix); it is probably mistyped.",
        )


@rule("CF-NPI-001", "error", "A mistyped billing NPI is rejected by every payer.")
def _billing_npi_check(ctx: Context) -> Iterator[Hit]:
    npi = ctx.coded.encounter.billing_provider.npi
    yield from _npi_hits(npi, "encounter.billing_provider.npi", "billing provider's")


@rule("CF-NPI-002", "error", "A mistyped rendering NPI is rejected by every payer.")
def _rendering_npi_check(ctx: Context) -> Iterator[Hit]:
    rendering = ctx.coded.encounter.rendering_provider
    if rendering is not None:
        yield from _npi_hits(rendering.npi, "encounter.rendering_provider.npi", "rendering")


@rule("CF-NPI-003", "error", "A mistyped facility NPI is rejected by every payer.")
def _facility_npi_check(ctx: Context) -> Iterator[Hit]:
    facility = ctx.coded.encounter.facility
    if facility is not None:
        yield from _npi_hits(facility.npi, "encounter.facility.npi", "service facility")


_EIN_BAD_PREFIXES = frozenset(
    {"00", "07", "08", "09", "17", "18", "19", "28", "29", "49", "69", "70", "78", "79", "89"}
    | {"96", "97"}
)
"""Two-digit prefixes the IRS has never assigned to an EIN."""


@rule("CF-EIN-001", "error", "The billing provider's tax id (EIN) is reported on every claim.")
def _ein(ctx: Context) -> Iterator[Hit]:
    provider = ctx.coded.encounter.billing_provider
    field = "encounter.billing_provider.tax_id"
    tin = provider.tax_id
    if _blank(tin):
        yield Hit(field, "The billing provider's tax id (EIN) is missing.")
        return
    assert tin is not None
    if not re.fullmatch(r"\d{9}", tin):
        yield Hit(field, f"The tax id {tin!r} is not an EIN: it must be 9 digits, no dash.")
    elif provider.entity == "organization" and tin[:2] in _EIN_BAD_PREFIXES:
        yield Hit(
            field,
            f"The tax id {tin} starts with {tin[:2]}, a prefix the IRS does not assign to EINs.",
        )


_PO_BOX = re.compile(r"\b(P\.?\s*O\.?\s*BOX|POST\s+OFFICE\s+BOX|LOCK\s*BOX)\b", re.I)


@rule(
    "CF-ADDR-001",
    "error",
    "The 837P billing provider address (loop 2010AA) must be a street address with a "
    "9-digit ZIP code.",
)
def _billing_address(ctx: Context) -> Iterator[Hit]:
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
    if _PO_BOX.search(f"{address.line1} {address.line2 or ''}"):
        yield Hit(
            f"{field}.line1",
            "The billing provider address is a post office box; the 837P requires a street "
            "address (a PO box may only be a pay-to address).",
        )


# --- dates -------------------------------------------------------------------------------


@rule("CF-DATE-001", "error", "A service period cannot end before it starts.")
def _period(ctx: Context) -> Iterator[Hit]:
    enc = ctx.coded.encounter
    if enc.service_end < enc.service_start:
        yield Hit(
            "encounter.service_end",
            f"The service ends on {enc.service_end} before it starts on {enc.service_start}.",
        )


@rule("CF-DATE-002", "error", "Services cannot be billed before they happen.")
def _future(ctx: Context) -> Iterator[Hit]:
    enc = ctx.coded.encounter
    today = ctx.validated_at.date()
    for name, value in (("service_start", enc.service_start), ("service_end", enc.service_end)):
        if value > today:
            yield Hit(
                f"encounter.{name}",
                f"The {name.replace('_', ' ')} {value} is in the future (validated {today}).",
            )


@rule("CF-DATE-003", "error", "Each line's date must fall inside the encounter's period.")
def _line_dates(ctx: Context) -> Iterator[Hit]:
    enc = ctx.coded.encounter
    for i, line in enumerate(ctx.coded.lines):
        if not enc.service_start <= line.service_date <= enc.service_end:
            yield Hit(
                f"lines[{i}].service_date",
                f"Line {line.line_number} is dated {line.service_date}, outside the encounter's "
                f"{enc.service_start} to {enc.service_end}.",
                line.line_number,
            )


@rule("CF-DATE-004", "error", "A patient cannot be treated before being born.")
def _dob_before_service(ctx: Context) -> Iterator[Hit]:
    enc = ctx.coded.encounter
    dob = enc.patient.birth_date
    if dob is not None and dob > enc.service_start:
        yield Hit(
            "encounter.patient.birth_date",
            f"The date of birth {dob} is after the service start {enc.service_start}.",
        )


# --- service lines -----------------------------------------------------------------------


@rule("CF-LINE-001", "error", "Every billed line must carry a positive charge.")
def _charges(ctx: Context) -> Iterator[Hit]:
    for i, line in enumerate(ctx.coded.lines):
        if line.charge <= 0:
            yield Hit(
                f"lines[{i}].charge",
                f"Line {line.line_number} ({line.code}) has a charge of {line.charge}; it must "
                "be more than zero.",
                line.line_number,
            )


@rule("CF-LINE-002", "error", "Every billed line must bill a positive number of units.")
def _units(ctx: Context) -> Iterator[Hit]:
    for i, line in enumerate(ctx.coded.lines):
        if line.units <= 0:
            yield Hit(
                f"lines[{i}].units",
                f"Line {line.line_number} ({line.code}) bills {line.units:g} units; it must "
                "be more than zero.",
                line.line_number,
            )


@rule(
    "CF-LINE-003",
    "error",
    "Each line points at 1 to 4 of the claim's diagnoses, to say why the service was done.",
)
def _pointers(ctx: Context) -> Iterator[Hit]:
    n = len(ctx.coded.diagnoses)
    for i, line in enumerate(ctx.coded.lines):
        field = f"lines[{i}].dx_pointers"
        where = f"Line {line.line_number} ({line.code})"
        if not line.dx_pointers:
            yield Hit(field, f"{where} points at no diagnosis.", line.line_number)
        if len(line.dx_pointers) > MAX_DX_POINTERS:
            yield Hit(
                field,
                f"{where} points at {len(line.dx_pointers)} diagnoses; a claim line holds "
                f"{MAX_DX_POINTERS}.",
                line.line_number,
            )
        bad = [p for p in line.dx_pointers if not 1 <= p <= n]
        if bad:
            yield Hit(
                field,
                f"{where} points at diagnosis {', '.join(map(str, bad))}, but the claim has "
                f"{n} {'diagnosis' if n == 1 else 'diagnoses'}.",
                line.line_number,
            )


@rule("CF-LINE-004", "error", "Modifiers are 2 characters, at most 4 per line.")
def _modifiers(ctx: Context) -> Iterator[Hit]:
    for i, line in enumerate(ctx.coded.lines):
        where = f"Line {line.line_number} ({line.code})"
        if len(line.modifiers) > MAX_MODIFIERS:
            yield Hit(
                f"lines[{i}].modifiers",
                f"{where} has {len(line.modifiers)} modifiers; a claim line holds {MAX_MODIFIERS}.",
                line.line_number,
            )
        for j, mod in enumerate(line.modifiers):
            if not re.fullmatch(r"[A-Z0-9]{2}", mod):
                yield Hit(
                    f"lines[{i}].modifiers[{j}]",
                    f"{where} has modifier {mod!r}; modifiers are 2 letters or digits.",
                    line.line_number,
                )


# --- codes -------------------------------------------------------------------------------


@rule("CF-CODE-000", "error", "Codes are only checked against code sets that cover the date.")
def _covered(ctx: Context) -> Iterator[Hit]:
    if not icd10_covered(ctx.on):
        field = "service_end" if ctx.coded.encounter.setting == "inpatient" else "service_start"
        yield Hit(f"encounter.{field}", f"Codes cannot be checked: {uncovered_reason(ctx.on)}.")


@rule("CF-CODE-001", "error", "Each diagnosis must be a valid ICD-10-CM code on the service date.")
def _dx_valid(ctx: Context) -> Iterator[Hit]:
    if not icd10_covered(ctx.on):
        return
    for i, dx in enumerate(ctx.coded.diagnoses):
        check = ctx.codesets.icd10cm(dx.code, ctx.on)
        if check.status == "invalid":
            yield Hit(f"diagnoses[{i}].code", check.reason + ".")


@rule("CF-CODE-002", "error", "Only billable (complete) ICD-10-CM codes may be reported.")
def _dx_billable(ctx: Context) -> Iterator[Hit]:
    if not icd10_covered(ctx.on):
        return
    for i, dx in enumerate(ctx.coded.diagnoses):
        check = ctx.codesets.icd10cm(dx.code, ctx.on)
        if check.status == "not_billable":
            yield Hit(f"diagnoses[{i}].code", check.reason + ".")


@rule("CF-CODE-003", "error", "Each line's CPT or HCPCS code must exist on the service date.")
def _line_codes(ctx: Context) -> Iterator[Hit]:
    for i, line in enumerate(ctx.coded.lines):
        check = ctx.codesets.procedure(line.code, line.service_date)
        if check.status == "invalid":
            yield Hit(f"lines[{i}].code", check.reason + ".", line.line_number)


@rule("CF-CODE-004", "error", "Each ICD-10-PCS procedure must be valid on the service date.")
def _pcs_valid(ctx: Context) -> Iterator[Hit]:
    if not icd10_covered(ctx.on):
        return
    for i, proc in enumerate(ctx.coded.pcs_procedures):
        check = ctx.codesets.icd10pcs(proc.code, ctx.on)
        if check.status == "invalid":
            yield Hit(f"pcs_procedures[{i}].code", check.reason + ".")


@rule(
    "CF-CODE-005",
    "info",
    "A line code the loaded reference files cannot vouch for is passed, and said so.",
)
def _line_codes_unchecked(ctx: Context) -> Iterator[Hit]:
    for i, line in enumerate(ctx.coded.lines):
        check = ctx.codesets.procedure(line.code, line.service_date)
        if check.status == "unknown":
            yield Hit(f"lines[{i}].code", check.reason + ".", line.line_number)


@rule(
    "CF-DX-001",
    "warning",
    "A manifestation code describes a consequence of another disease and may not be listed "
    "first; the underlying condition is coded first.",
)
def _manifestation_first(ctx: Context) -> Iterator[Hit]:
    if not ctx.coded.diagnoses or not icd10_covered(ctx.on):
        return
    first = ctx.coded.diagnoses[0]
    if ctx.codesets.is_manifestation(first.code, ctx.on):
        note = ctx.codesets.code_first_note(first.code)
        hint = f" The tabular says: code first {_one_line(note)}." if note else ""
        yield Hit(
            "diagnoses[0].code",
            f"The principal diagnosis {dotted(first.code)} is a manifestation code and cannot "
            f"be listed first; sequence the underlying condition before it.{hint}",
        )


@rule(
    "CF-DX-002",
    "warning",
    "External-cause codes (V00-Y99) say how an injury happened and are never listed first.",
)
def _external_cause_first(ctx: Context) -> Iterator[Hit]:
    if not ctx.coded.diagnoses or not icd10_covered(ctx.on):
        return
    first = ctx.coded.diagnoses[0]
    if "E_CODE_AS_PDX" in ctx.codesets.principal_dx_edits(first.code, ctx.on):
        yield Hit(
            "diagnoses[0].code",
            f"The principal diagnosis {dotted(first.code)} is an external-cause code; list the "
            "injury or condition it explains first.",
        )


@rule("CF-REV-001", "warning", "Coding asked a coder to confirm something that is still open.")
def _review(ctx: Context) -> Iterator[Hit]:
    for i, reason in enumerate(ctx.coded.review_reasons):
        yield Hit(f"review_reasons[{i}]", f"Awaiting coder review: {reason}")


def validate(
    coded: CodedEncounter, codesets: CodeSets, *, validated_at: datetime
) -> ValidatedEncounter:
    """Run every rule of the pack over a coded encounter and give the verdict."""
    enc = coded.encounter
    ctx = Context(
        coded=coded,
        codesets=codesets,
        validated_at=validated_at,
        on=coding_date(enc.setting, enc.service_start, enc.service_end),
    )
    edits = [
        EditHit(
            rule_id=r.id,
            severity=r.severity,
            line=hit.line,
            field=hit.field,
            message=hit.message,
        )
        for r in RULES
        for hit in r.check(ctx)
    ]
    severities = {e.severity for e in edits}
    outcome: Outcome = "clean"
    if "error" in severities:
        outcome = "rejected"
    elif "warning" in severities:
        outcome = "warnings"
    return ValidatedEncounter(
        event_id=event_id(coded.event_id, STAGE, RULE_PACK_VERSION),
        encounter_id=coded.encounter_id,
        outcome=outcome,
        edits=edits,
        rule_pack_version=RULE_PACK_VERSION,
        coded=coded,
        validated_at=validated_at,
    )
