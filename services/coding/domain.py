"""Code assignment for the walking skeleton: check and carry over what the EHR documented.

The EHR's ICD-10-CM diagnoses are kept when they are valid and billable for the date of
service (the discharge date for inpatient stays, the first day otherwise) and sequenced
primary first, then in documented order. Nothing is guessed: a category header such as
E11, or a SNOMED CT / text-only diagnosis, goes to a coder (``review_reasons``) with a
confidence below 1. A code that does not exist on that date is bad input and raises
``InputError`` naming the field, so the stage runner dead-letters it with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from pipeline.errors import InputError
from pipeline.models import (
    CodedDiagnosis,
    CodedEncounter,
    CodedProcedure,
    DocumentedDiagnosis,
    Encounter,
    ServiceLine,
    event_id,
)
from services.refdata.codesets import (
    CodeSets,
    code_set_version,
    coding_date,
    dotted,
    icd10_covered,
    normalize_code,
    procedure_system,
    uncovered_reason,
)

STAGE = "coding"
MAX_DX_POINTERS = 4
"""An 837P service line points at no more than four diagnoses (SV107)."""

CONFIDENCE_EHR = 1.0
CONFIDENCE_HEADER = 0.5  # the right category is known; the billable code under it is not
CONFIDENCE_UNMAPPED = 0.0  # no ICD-10-CM code at all yet


@dataclass
class _Dx:
    """A documented diagnosis on its way to the coded list."""

    index: int  # position in encounter.diagnoses, for error fields
    doc: DocumentedDiagnosis
    coded: CodedDiagnosis | None  # None: not carried over (SNOMED / text)


def code_encounter(enc: Encounter, codesets: CodeSets, *, coded_at: datetime) -> CodedEncounter:
    """Assign codes to one encounter; raises InputError when a documented code is invalid."""
    on = coding_date(enc.setting, enc.service_start, enc.service_end)
    if not icd10_covered(on):
        field = "service_end" if enc.setting == "inpatient" else "service_start"
        raise InputError(field, uncovered_reason(on) + "; the encounter cannot be coded")
    version = code_set_version(on)
    reviews: list[str] = []
    confidences: list[float] = []

    dxs = _diagnoses(enc, codesets, on, reviews, confidences)
    coded_dx = [d.coded for d in dxs if d.coded is not None]
    lines: list[ServiceLine] = []
    pcs: list[CodedProcedure] = []
    for i, svc in enumerate(enc.services):
        if svc.system == "icd10pcs":
            check = codesets.icd10pcs(svc.code, on)
            if not check.valid:
                raise InputError(f"services[{i}].code", check.reason)
            pcs.append(
                CodedProcedure(
                    code=check.code,
                    date=svc.service_date or enc.service_start,
                    source="ehr",
                    confidence=CONFIDENCE_EHR,
                )
            )
            confidences.append(CONFIDENCE_EHR)
            continue
        if svc.system == "snomed":
            reviews.append(
                f"services[{i}]: SNOMED CT procedure {svc.code!r} needs a CPT or HCPCS code; "
                "automatic mapping is not available yet, so a coder must assign one"
            )
            confidences.append(CONFIDENCE_UNMAPPED)
            continue
        code = normalize_code(svc.code)
        system = procedure_system(code)
        if system is None:
            raise InputError(
                f"services[{i}].code",
                f"{svc.code!r} is neither a CPT code (5 digits, or 4 digits and F, T or U) nor "
                "a HCPCS Level II code (a letter and 4 digits)",
            )
        pointers = _pointers(i, svc.dx_refs, dxs, coded_dx, reviews)
        lines.append(
            ServiceLine(
                line_number=len(lines) + 1,
                code=code,
                code_system=system,
                modifiers=[m.strip().upper() for m in svc.modifiers if m.strip()],
                units=svc.units,
                charge=svc.charge,
                dx_pointers=pointers,
                service_date=svc.service_date or enc.service_start,
            )
        )
        confidences.append(CONFIDENCE_EHR)

    return CodedEncounter(
        event_id=event_id(enc.event_id, STAGE, version),
        encounter_id=enc.encounter_id,
        encounter=enc,
        diagnoses=coded_dx,
        pcs_procedures=pcs,
        lines=lines,
        code_set_version=version,
        confidence=min(confidences, default=CONFIDENCE_UNMAPPED),
        review_reasons=reviews,
        coded_at=coded_at,
    )


def _diagnoses(
    enc: Encounter,
    codesets: CodeSets,
    on: date,
    reviews: list[str],
    confidences: list[float],
) -> list[_Dx]:
    """Documented diagnoses, checked and sequenced: primary first, then documented order."""
    primaries = [i for i, d in enumerate(enc.diagnoses) if d.primary]
    if len(primaries) > 1:
        reviews.append(
            f"diagnoses: {len(primaries)} diagnoses are marked primary "
            f"({', '.join(f'diagnoses[{i}]' for i in primaries)}); the first was sequenced "
            "first, and a coder must confirm the principal diagnosis"
        )
    order = primaries[:1] + [i for i in range(len(enc.diagnoses)) if i not in primaries[:1]]
    out: list[_Dx] = []
    seen: set[str] = set()
    sequence = 0
    for i in order:
        doc = enc.diagnoses[i]
        if doc.system != "icd10cm":
            what = "SNOMED CT" if doc.system == "snomed" else "text-only"
            label = doc.display or doc.code or "(no text)"
            reviews.append(
                f"diagnoses[{i}]: {what} diagnosis {label!r} needs an ICD-10-CM code; automatic "
                "mapping is not available yet, so a coder must assign one"
            )
            confidences.append(CONFIDENCE_UNMAPPED)
            out.append(_Dx(i, doc, None))
            continue
        check = codesets.icd10cm(doc.code, on)
        if check.status in ("invalid", "unknown"):
            raise InputError(f"diagnoses[{i}].code", check.reason)
        if check.code in seen:
            out.append(_Dx(i, doc, None))  # documented twice: one claim entry is enough
            continue
        seen.add(check.code)
        billable = check.status == "valid"
        confidence = CONFIDENCE_EHR if billable else CONFIDENCE_HEADER
        if not billable:
            reviews.append(f"diagnoses[{i}]: {check.reason}")
        sequence += 1
        confidences.append(confidence)
        out.append(
            _Dx(
                i,
                doc,
                CodedDiagnosis(
                    code=check.code,
                    sequence=sequence,
                    description=check.description,
                    poa=doc.poa.strip().upper() if doc.poa else None,
                    source="ehr",
                    confidence=confidence,
                    billable=billable,
                ),
            )
        )
    return out


def _pointers(
    i: int,
    refs: list[str],
    dxs: list[_Dx],
    coded: list[CodedDiagnosis],
    reviews: list[str],
) -> list[int]:
    """1-based positions of a service's dx_refs in the coded diagnosis list (default [1])."""
    position = {d.code: n for n, d in enumerate(coded, 1)}
    pointers: list[int] = []
    for j, ref in enumerate(refs):
        norm = normalize_code(ref)
        if norm in position:
            if position[norm] not in pointers:
                pointers.append(position[norm])
            continue
        documented = [d for d in dxs if d.doc.code.strip() == ref.strip()]
        if not documented:
            raise InputError(
                f"services[{i}].dx_refs[{j}]",
                f"{ref!r} is not one of the encounter's documented diagnoses",
            )
        reviews.append(
            f"services[{i}].dx_refs[{j}]: diagnosis {ref!r} has no ICD-10-CM code yet, so the "
            "line cannot point at it; a coder must set the pointer"
        )
    if len(pointers) > MAX_DX_POINTERS:
        shown = ", ".join(dotted(coded[p - 1].code) for p in pointers[MAX_DX_POINTERS:])
        reviews.append(
            f"services[{i}].dx_refs: the line points at {len(pointers)} diagnoses but a claim "
            f"line holds {MAX_DX_POINTERS}; {shown} were left off, a coder must choose"
        )
        pointers = pointers[:MAX_DX_POINTERS]
    return pointers or [1]
