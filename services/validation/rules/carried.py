"""What intake did not carry, and what the 837 writer would refuse, as edits.

Intake writes a note on the encounter for every item, code or coverage it could not carry
(``Encounter.notes``). A note that changes what is billed becomes an edit here: a charge
left behind is an error (the claim would bill less than the record), a coverage or code
left behind a warning, anything else an info. The writer refuses identifiers that carry
an X12 delimiter and a claim filing code the guides do not have (09 self-pay): the
scrubber says so first, so a claim it passes is a claim that is written.
"""

from __future__ import annotations

from collections.abc import Iterator

from services.validation.engine import NONE, Context, Hit, Hits, encounter_notes, rule
from services.x12 import guides
from services.x12.writer import DELIMITERS


@rule(
    "CF-NOTE-001",
    "error",
    "A charge the source sent is not on the claim: intake could not carry the item.",
    category="not_carried",
    fix_hint="Give the item a revenue code or a CPT/HCPCS code in the source (or the "
    "chargemaster), then send it again; or write the charge off on purpose.",
    needs=encounter_notes,
)
def charge_not_carried(ctx: Context) -> Iterator[Hit]:
    for i, note in enumerate(ctx.coded.encounter.notes):
        if note.kind == "item_not_carried" and note.charge:
            yield Hit(
                f"encounter.notes[{i}]",
                f"{note.field or 'an item'}: {note.message}; its charge of {note.charge} is "
                "not billed.",
            )


@rule(
    "CF-NOTE-002",
    "warning",
    "A coverage or a code the source sent is not on the claim.",
    category="not_carried",
    fix_hint="Check the source: another payer may need a claim, or the code belongs on it.",
    needs=encounter_notes,
)
def other_not_carried(ctx: Context) -> Iterator[Hit]:
    for i, note in enumerate(ctx.coded.encounter.notes):
        if note.kind in ("coverage_not_carried", "code_not_carried"):
            yield Hit(f"encounter.notes[{i}]", f"{note.field or 'the source'}: {note.message}.")


@rule(
    "CF-NOTE-003",
    "info",
    "Data the source sent that the claim does not need was not carried.",
    category="not_carried",
    fix_hint="Nothing to bill differently; map it in intake if a payer needs it.",
    needs=encounter_notes,
)
def data_not_carried(ctx: Context) -> Iterator[Hit]:
    for i, note in enumerate(ctx.coded.encounter.notes):
        if note.kind == "data_not_carried" or (note.kind == "item_not_carried" and not note.charge):
            yield Hit(f"encounter.notes[{i}]", f"{note.field or 'the source'}: {note.message}.")


@rule(
    "CF-X12-001",
    "error",
    "The payer is billed with a claim filing indicator the 837 carries (SBR09).",
    category="identifiers",
    fix_hint="A self-pay encounter (09) is billed to the patient, not on an 837; otherwise "
    "send the payer's plan type (MB, MA, MC, CI, BL, HM ...).",
)
def filing_code(ctx: Context) -> Hits:
    code = ctx.coded.encounter.coverage.plan_type.strip().upper()
    if code not in guides.CLAIM_FILING_CODES:
        why = " (self-pay)" if code == "09" else ""
        return (
            Hit(
                "encounter.coverage.plan_type",
                f"Claim filing indicator {code!r}{why} is not one an 837 carries.",
            ),
        )
    return NONE


@rule(
    "CF-X12-002",
    "error",
    "Identifiers on the claim carry no X12 delimiter (* : ^ ~): X12 has no way to escape one.",
    category="identifiers",
    fix_hint="Correct the identifier at its source; the writer never alters an identifier.",
)
def delimiters(ctx: Context) -> Hits:
    enc = ctx.coded.encounter
    cov, billing = enc.coverage, enc.billing_provider
    # The identifiers run together, looked at once: a delimiter is one character, so it is
    # in the joined text exactly when it is in one of them (in none, nearly always). Naming
    # each and looking at it alone was 2.65 us per encounter of the stage benchmark (now 2.0).
    together = (
        f"{enc.patient.patient_id}{cov.payer_id}{cov.member_id}{cov.group_number or ''}"
        f"{enc.prior_claim_reference or ''}{billing.tax_id or ''}{billing.taxonomy or ''}"
    )
    if DELIMITERS.isdisjoint(together):
        return NONE
    values = {
        "encounter.patient.patient_id": enc.patient.patient_id,
        "encounter.coverage.payer_id": enc.coverage.payer_id,
        "encounter.coverage.member_id": enc.coverage.member_id,
        "encounter.coverage.group_number": enc.coverage.group_number,
        "encounter.prior_claim_reference": enc.prior_claim_reference,
        "encounter.billing_provider.tax_id": enc.billing_provider.tax_id,
        "encounter.billing_provider.taxonomy": enc.billing_provider.taxonomy,
    }
    return [
        Hit(field, f"{field.rsplit('.', 1)[-1]} contains an X12 delimiter.")
        for field, value in values.items()
        if value and not DELIMITERS.isdisjoint(value)
    ]
