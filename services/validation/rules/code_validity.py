"""Code validity on the date of service: ICD-10-CM (billable leaf codes), ICD-10-PCS, CPT
and HCPCS Level II."""

from __future__ import annotations

from collections.abc import Iterator

from services.refdata.codesets import icd10_covered, uncovered_reason
from services.validation.engine import NONE, Context, Hit, Hits, pcs_procedures, rule


@rule(
    "CF-CODE-000",
    "error",
    "Codes are only checked against code sets that cover the date.",
    category="code_validity",
    fix_hint="Check the date of service; claims outside FY2023-FY2027 need another scrubber.",
)
def covered(ctx: Context) -> Hits:
    if not icd10_covered(ctx.on):
        field = "service_end" if ctx.coded.encounter.setting == "inpatient" else "service_start"
        return (Hit(f"encounter.{field}", f"Codes cannot be checked: {uncovered_reason(ctx.on)}."),)
    return NONE


@rule(
    "CF-CODE-001",
    "error",
    "Each diagnosis must be a valid ICD-10-CM code on the service date.",
    category="code_validity",
    fix_hint="Recode from the ICD-10-CM edition in force on the date of service.",
)
def dx_valid(ctx: Context) -> Hits:
    if not icd10_covered(ctx.on):
        return NONE
    return [
        Hit(f"diagnoses[{i}].code", check.reason + ".")
        for i, check in enumerate(ctx.dx_checks)
        if check.status == "invalid"
    ]


@rule(
    "CF-CODE-002",
    "error",
    "Only billable (complete) ICD-10-CM codes may be reported.",
    category="code_validity",
    fix_hint="Choose the most specific code under the header that the documentation supports.",
)
def dx_billable(ctx: Context) -> Hits:
    if not icd10_covered(ctx.on):
        return NONE
    return [
        Hit(f"diagnoses[{i}].code", check.reason + ".")
        for i, check in enumerate(ctx.dx_checks)
        if check.status == "not_billable"
    ]


@rule(
    "CF-CODE-003",
    "error",
    "Each line's CPT or HCPCS code must exist on the service date.",
    category="code_validity",
    fix_hint="Use a CPT/HCPCS code in force on the date of service (check deleted codes).",
)
def line_codes(ctx: Context) -> Hits:
    return [
        Hit(f"lines[{i}].code", check.reason + ".", line.line_number)
        for i, line, check in ctx.line_checks
        if check.status == "invalid"
    ]


@rule(
    "CF-CODE-004",
    "error",
    "Each ICD-10-PCS procedure must be valid on the service date.",
    category="code_validity",
    fix_hint="Recode the procedure with all 7 characters from the PCS tables of that year.",
    needs=pcs_procedures,
)
def pcs_valid(ctx: Context) -> Iterator[Hit]:
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
    category="code_validity",
    fix_hint="Load the fee schedule / HCPCS file of the service year to check it.",
)
def line_codes_unchecked(ctx: Context) -> Hits:
    return [
        Hit(f"lines[{i}].code", check.reason + ".", line.line_number)
        for i, line, check in ctx.line_checks
        if check.status == "unknown"
    ]
