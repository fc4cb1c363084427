"""Write X12 005010X223A2 (837I institutional) interchanges from coded encounters.

The hierarchy (billing provider, subscriber, payer, patient), the loops both claim types
share and the envelope are in ``x12_837_common.py``; this module brings the institutional
claim loop, built from the 837I TR3 and the NUBC UB-04 data specifications:

- CLM02 the sum of the lines; CLM05 the type of bill (FL4): facility type and
  classification (11 hospital inpatient, 13 outpatient, 21 SNF, 85 critical access ...),
  qualifier A, and the frequency (1, interim 2-4, late charges 5; a correction's 7 or 8).
- DTP*096 discharge hour on bills through discharge of an inpatient stay, DTP*434
  statement period, DTP*435 admission date and hour (inpatient); CL1 admission type,
  point of origin and patient status (30, still a patient, on interim bills).
- HI in the TR3's order: principal diagnosis ABK, admitting diagnosis ABJ (inpatient),
  patient's reason for visit APR (unscheduled outpatient visits), external causes ABN,
  the MS-DRG (DR), other diagnoses ABF, principal and other ICD-10-PCS procedures BBR/BBQ,
  occurrence spans BI, occurrences BH, value codes BE, condition codes BG. On inpatient
  bills every diagnosis carries its POA indicator (HIxx-9); exempt codes carry none.
- 2310A attending (always), 2310B operating physician when a surgical (Medical and
  Surgical section) ICD-10-PCS procedure is billed, 2310D rendering when someone else
  rendered.
- 2400 lines: SV2 with the revenue code, the HCPCS code when there is one, the charge,
  days (DA) for accommodation codes 010x-021x else units (UN), and the non-covered part.

The facility is the billing provider of an institutional claim: 2010AA is the encounter's
facility (its NPI and street address, with the billing provider's EIN) when the facility
has both, else the billing provider, which must then be an organisation.

Admitting diagnosis: the diagnosis the source marked as admitting, else the principal.
The scrubber runs the same checks first (``services/validation/rules/institutional.py``),
so a claim it passes is a claim written here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pipeline.errors import InputError
from pipeline.models import (
    CodedDiagnosis,
    CodedEncounter,
    Encounter,
    Facility,
    Provider,
    ServiceLine,
)
from services.claims.cob import line_adjudication_loops
from services.claims.x12_837_common import (
    KEPT_MAX,
    ClaimInput,
    Profile,
    build_837,
    check_npi,
    dx_code_kept,
    keep_procedure,
    kept_dx_code,
    kept_procedure,
    modifiers,
    prior_claim_reference,
    prior_payer_section,
    procedure_code,
    provider_nm1,
    provider_taxonomy,
)
from services.refdata import ub04
from services.x12 import guides
from services.x12.writer import (
    COMPONENT,
    DELIMITERS,
    ELEMENT,
    Rendered,
    Segment,
    amount,
    comp,
    d8,
    early,
    hhmm,
    ident,
    quantity,
    rd8,
)

IMPLEMENTATION = guides.VERSION_837I
MAX_LINES = guides.MAX_INSTITUTIONAL_LINES
MAX_OTHER_DIAGNOSES = guides.MAX_INSTITUTIONAL_OTHER_DIAGNOSES
MAX_OTHER_PROCEDURES = guides.MAX_INSTITUTIONAL_OTHER_PROCEDURES
MAX_REASONS_FOR_VISIT = guides.MAX_REASONS_FOR_VISIT
MAX_EXTERNAL_CAUSES = guides.MAX_EXTERNAL_CAUSES
MAX_UB04_CODES = guides.MAX_UB04_CODES
PER_HI = 12
POA_CODES = frozenset({"Y", "N", "U", "W"})  # "1" (exempt) is sent as no indicator
DEFAULT_OUTPATIENT_STATUS = "01"  # discharged to home: the usual outpatient patient status
_PCS = re.compile(r"^[0-9A-HJ-NP-Z]{7}$")  # ICD-10-PCS: 7 characters, no I or O
_DRG = re.compile(r"^\d{3}$")
_UB04_CODE = re.compile(r"^[0-9A-Z]{2}$")
_STATUS = re.compile(r"\d{2}")
_ADMISSION_TYPE = re.compile(r"\d")
_SOURCE = re.compile(r"[0-9A-Z]")


def type_of_bill(setting: str, frequency: str) -> str:
    """The UB-04 type of bill of an encounter without one: 0111 inpatient, 0131 outpatient."""
    bill = ub04.type_of_bill_for(setting, None)
    if bill is None:
        raise InputError("encounter.setting", f"{setting!r} is not billed on an 837I")
    return bill.with_frequency(frequency).code


_BILLS: dict[tuple[str, str | None], ub04.TypeOfBill] = {}


def claim_type_of_bill(claim: ClaimInput) -> ub04.TypeOfBill:
    """The bill this claim is: the coded (or stated) type of bill, the correction's
    frequency (7, 8) over it.

    The type of bill of a setting and stated code is kept (a ``TypeOfBill`` cannot change):
    reading it again cost 1.4 us a claim (kept: 0.16)."""
    enc = claim.coded.encounter
    stated = claim.coded.type_of_bill or enc.type_of_bill
    key = (enc.setting, stated)
    bill = _BILLS.get(key)
    if bill is None:
        bill = _type_of_bill(enc.setting, stated)
        if len(_BILLS) >= KEPT_MAX:
            _BILLS.clear()
        _BILLS[key] = bill
    return bill.with_frequency(claim.frequency) if claim.frequency != "1" else bill


def _type_of_bill(setting: str, stated: str | None) -> ub04.TypeOfBill:
    """``claim_type_of_bill``'s bill of a setting and stated code, or its refusal."""
    try:
        bill = ub04.type_of_bill_for(setting, stated)
    except ValueError as exc:
        raise InputError("type_of_bill", str(exc)) from None
    if bill is None:
        raise InputError("encounter.setting", f"{setting!r} is not billed on an 837I")
    return bill


_BILLED_BY: dict[tuple[int, int], tuple[Facility, Provider, Provider]] = {}


def institutional_billing_provider(claim: ClaimInput) -> Provider:
    """2010AA for an institutional claim: the facility, with the billing provider's EIN.

    The facility's Provider is kept by the facility and billing provider instances (both
    immutable, shared by the decoder: ``provider_nm1``), so that it is one instance too,
    built once, and the billing loop kept by instance (``_billing_lines``) finds it."""
    enc = claim.coded.encounter
    billing = enc.billing_provider
    facility = enc.facility
    if facility is not None and facility.npi and facility.address is not None:
        key = (id(facility), id(billing))
        hit = _BILLED_BY.get(key)
        if hit is not None and hit[0] is facility and hit[1] is billing:
            return hit[2]
        provider = Provider(
            npi=facility.npi,
            name=facility.name,
            entity="organization",
            tax_id=billing.tax_id,
            taxonomy=billing.taxonomy if billing.npi == facility.npi else None,
            address=facility.address,
        )
        if len(_BILLED_BY) >= KEPT_MAX:
            _BILLED_BY.clear()
        _BILLED_BY[key] = (facility, billing, provider)
        return provider
    if billing.entity == "person":
        raise InputError(
            "encounter.facility",
            "an institutional claim is billed by the facility: give the facility an NPI and a "
            "street address, or bill it under an organisation",
        )
    return billing


def revenue_code(value: str | None, field: str) -> str:
    """A four-digit NUBC revenue code (a three-digit one gets its leading zero)."""
    code = ub04.revenue_code(value)
    if code is None:
        raise InputError(field, f"an institutional line needs a revenue code, got {value!r}")
    return code


# Every HI composite is written as text: its values are codes checked for shape (or POA
# indicators, dates, amounts), none carries a delimiter, and none ends empty.
Info = str  # an HI composite, written


def _info(*parts: str) -> Info:
    """One HI composite: its components joined."""
    return COMPONENT.join(parts)


def _code_info(qualifier: str, code: str, poa: str | None) -> Info:
    """One HI composite, with the POA indicator in HIxx-9 when there is one."""
    if poa:
        return _info(qualifier, code, "", "", "", "", "", "", poa)
    return _info(qualifier, code)


def _his(items: Sequence[Info]) -> list[Segment | Rendered]:
    """HI segments of at most 12 composites each."""
    return [f"HI*{ELEMENT.join(items[i : i + PER_HI])}~" for i in range(0, len(items), PER_HI)]


def _poa(value: str | None, inpatient: bool) -> str | None:
    code = (value or "").strip().upper()
    return code if inpatient and code in POA_CODES else None


@dataclass(frozen=True)
class InstitutionalDiagnoses:
    """The claim's diagnoses in the roles the 837I gives them (code as HI carries it, POA)."""

    principal: tuple[str, str | None]
    others: list[tuple[str, str | None]]
    admitting: str
    reasons: list[str]
    external: list[tuple[str, str | None]]


def institutional_diagnoses(coded: CodedEncounter) -> InstitutionalDiagnoses:
    """Principal, other, admitting, reason-for-visit and external-cause diagnoses
    (``ub04.facility_diagnoses``), as HI carries them; the admitting diagnosis is the one
    marked admitting, else the principal."""
    position = {id(d): i for i, d in enumerate(coded.diagnoses)}

    def code(d: CodedDiagnosis) -> str:
        return dx_code_kept(d.code, f"diagnoses[{position[id(d)]}].code")

    roles = ub04.facility_diagnoses(coded)
    if roles.principal is None:
        raise InputError("diagnoses", "an institutional claim needs a principal diagnosis")
    claim = [(code(d), d.poa) for d in [roles.principal, *roles.others]]
    external = [(code(d), d.poa) for d in roles.external]
    admitting = [code(d) for d in roles.admitting]
    reasons = [code(d) for d in roles.reasons]
    if len(claim) > 1 + MAX_OTHER_DIAGNOSES:
        raise InputError(
            "diagnoses", f"an 837I carries {1 + MAX_OTHER_DIAGNOSES} diagnoses, not {len(claim)}"
        )
    if len(external) > MAX_EXTERNAL_CAUSES:
        raise InputError(
            "diagnoses",
            f"an 837I carries {MAX_EXTERNAL_CAUSES} external causes, not {len(external)}",
        )
    if len(reasons) > MAX_REASONS_FOR_VISIT:
        raise InputError(
            "diagnoses",
            f"an 837I carries {MAX_REASONS_FOR_VISIT} reasons for visit, not {len(reasons)}",
        )
    return InstitutionalDiagnoses(
        claim[0], claim[1:], admitting[0] if admitting else claim[0][0], reasons, external
    )


def is_ed_visit(coded: CodedEncounter) -> bool:
    """An emergency department visit: an ED revenue code (045x) on the bill."""
    return any((ub04.revenue_code(ln.revenue_code) or "").startswith("045") for ln in coded.lines)


def _diagnosis_segments(coded: CodedEncounter, inpatient: bool) -> list[Segment | Rendered]:
    """The HI segments of the diagnoses and the DRG: written from the codes ``dx_code``
    accepted before (``_diagnosis_text``), else checked one by one, which names what it
    refuses (``_checked_diagnosis_segments``, the judge of the other)."""
    out = _diagnosis_text(coded, inpatient)
    return out if out is not None else _checked_diagnosis_segments(coded, inpatient)


def _diagnosis_text(coded: CodedEncounter, inpatient: bool) -> list[Segment | Rendered] | None:
    """``_checked_diagnosis_segments`` of diagnoses whose codes were all accepted before,
    with counts and a DRG the guide takes; None for anything else (10.9 us a claim to 4.8,
    the simulator's 837Is): no field's name made, no role's list of codes."""
    roles = ub04.facility_diagnoses(coded)
    principal = roles.principal
    others, external, reasons = roles.others, roles.external, roles.reasons
    if (
        principal is None
        or len(others) > MAX_OTHER_DIAGNOSES
        or len(external) > MAX_EXTERNAL_CAUSES
        or len(reasons) > MAX_REASONS_FOR_VISIT
    ):
        return None
    first = kept_dx_code(principal.code)
    other_codes = _kept_codes(others)
    external_codes = _kept_codes(external)
    admitting_codes = _kept_codes(roles.admitting)
    reason_codes = _kept_codes(reasons)
    if (
        first is None
        or other_codes is None
        or external_codes is None
        or admitting_codes is None
        or reason_codes is None
    ):
        return None
    out: list[Segment | Rendered] = [f"HI*{_hi_code('ABK', first, principal.poa, inpatient)}~"]
    if inpatient:
        out.append(f"HI*ABJ:{admitting_codes[0] if admitting_codes else first}~")
    else:
        if not reason_codes and is_ed_visit(coded):
            reason_codes = [first]
        if reason_codes:
            out += _his([f"APR:{code}" for code in reason_codes])
    if external:
        out += _his(
            [
                _hi_code("ABN", code, d.poa, inpatient)
                for code, d in zip(external_codes, external, strict=True)
            ]
        )
    drg = coded.drg
    if inpatient and drg is not None:
        drg_code = drg.code.strip()
        if not _DRG.match(drg_code):
            return None
        out.append(f"HI*DR:{drg_code}~")
    if others:
        out += _his(
            [
                _hi_code("ABF", code, d.poa, inpatient)
                for code, d in zip(other_codes, others, strict=True)
            ]
        )
    return out


def _kept_codes(diagnoses: Sequence[CodedDiagnosis]) -> list[str] | None:
    """The codes as HI carries them, when ``dx_code`` accepted each before; else None."""
    out = []
    for d in diagnoses:
        code = kept_dx_code(d.code)
        if code is None:
            return None
        out.append(code)
    return out


def _hi_code(qualifier: str, code: str, poa: str | None, inpatient: bool) -> Info:
    """``_code_info`` of a code with the POA indicator as sent (``_poa``)."""
    if inpatient and poa:
        indicator = poa if poa in POA_CODES else _poa(poa, inpatient)
        if indicator:
            return f"{qualifier}:{code}:::::::{indicator}"
    return f"{qualifier}:{code}"


def _checked_diagnosis_segments(coded: CodedEncounter, inpatient: bool) -> list[Segment | Rendered]:
    """``_diagnosis_segments`` of any diagnoses, each code checked (and kept, when one is
    accepted, for ``_diagnosis_text``)."""
    dxs = institutional_diagnoses(coded)
    principal, principal_poa = dxs.principal
    out = _his([_code_info("ABK", principal, _poa(principal_poa, inpatient))])
    if inpatient:
        out += _his([_info("ABJ", dxs.admitting)])
    else:
        reasons = dxs.reasons or ([principal] if is_ed_visit(coded) else [])
        if reasons:
            out += _his([_info("APR", code) for code in reasons])
    if dxs.external:
        out += _his([_code_info("ABN", c, _poa(p, inpatient)) for c, p in dxs.external])
    drg = coded.drg
    if inpatient and drg is not None:
        if not _DRG.match(drg.code.strip()):
            raise InputError("drg.code", f"not an MS-DRG: {drg.code!r}")
        out += _his([_info("DR", drg.code.strip())])
    out.extend(_his([_code_info("ABF", c, _poa(p, inpatient)) for c, p in dxs.others]))
    return out


def _procedure_segments(coded: CodedEncounter) -> list[Segment | Rendered]:
    if not coded.pcs_procedures:
        return []
    if len(coded.pcs_procedures) > 1 + MAX_OTHER_PROCEDURES:
        raise InputError(
            "pcs_procedures",
            f"an 837I carries {1 + MAX_OTHER_PROCEDURES} procedures, not "
            f"{len(coded.pcs_procedures)}",
        )
    items = []
    for i, proc in enumerate(coded.pcs_procedures):
        code = proc.code.replace(".", "").strip().upper()
        if not _PCS.match(code):
            raise InputError(f"pcs_procedures[{i}].code", f"not an ICD-10-PCS code: {proc.code!r}")
        when = proc.date or coded.encounter.service_start
        items.append(_info("BBR" if i == 0 else "BBQ", code, "D8", d8(when)))
    return [*_his(items[:1]), *_his(items[1:])]


def _ub04_code(value: str, field: str) -> str:
    code = value.strip().upper()
    if not _UB04_CODE.match(code):
        raise InputError(field, f"a NUBC code is two letters or digits, got {value!r}")
    return code


def _ub04_segments(enc: Encounter) -> list[Segment | Rendered]:
    """HI occurrence spans (BI), occurrences (BH), values (BE), conditions (BG)."""
    if not (enc.occurrence_spans or enc.occurrence_codes or enc.value_codes or enc.condition_codes):
        return []  # none to write: four empty lists not made (2.1 us a claim to 0.1)
    groups: list[tuple[str, list[Info]]] = [
        (
            "occurrence_spans",
            [
                _info("BI", _ub04_code(o.code, f"encounter.occurrence_spans[{i}].code"), "RD8",
                     rd8(o.start, o.end))
                for i, o in enumerate(enc.occurrence_spans)
            ],
        ),
        (
            "occurrence_codes",
            [
                _info("BH", _ub04_code(o.code, f"encounter.occurrence_codes[{i}].code"), "D8",
                     d8(o.date))
                for i, o in enumerate(enc.occurrence_codes)
            ],
        ),
        (
            "value_codes",
            [
                _info("BE", _ub04_code(v.code, f"encounter.value_codes[{i}].code"), "", "",
                     amount(v.amount))
                for i, v in enumerate(enc.value_codes)
            ],
        ),
        (
            "condition_codes",
            [
                _info("BG", _ub04_code(c, f"encounter.condition_codes[{i}]"))
                for i, c in enumerate(enc.condition_codes)
            ],
        ),
    ]  # fmt: skip
    out: list[Segment | Rendered] = []
    for name, items in groups:
        if len(items) > MAX_UB04_CODES:
            raise InputError(
                f"encounter.{name}", f"an 837I carries {MAX_UB04_CODES}, not {len(items)}"
            )
        out.extend(_his(items))
    return out


def _prior_claim(claim: ClaimInput, bill: ub04.TypeOfBill) -> list[Segment | Rendered]:
    """REF*F8: the correction's payer claim number, or the one the EHR gave with a
    replacement or void type of bill (xx7, xx8)."""
    if claim.frequency == "1" and bill.frequency in ("7", "8"):
        reference = claim.coded.encounter.prior_claim_reference
        if not reference:
            raise InputError(
                "encounter.prior_claim_reference",
                f"type of bill {bill.code} corrects a claim: name its payer claim number",
            )
        field = "encounter.prior_claim_reference"
        return [early("REF", "F8", ident(reference, field, max_len=50))]
    return prior_claim_reference(claim)


def _cl1(enc: Encounter, bill: ub04.TypeOfBill) -> Segment | Rendered:
    """CL1: admission type and source (inpatient), patient status (every claim; 30 on an
    interim bill, the patient is still in)."""
    inpatient = bill.inpatient
    status = (enc.discharge_status or "").strip()
    if bill.interim:
        status = status or ub04.STILL_A_PATIENT
    if not status:
        if inpatient:
            raise InputError("encounter.discharge_status", "an inpatient claim needs it (CL103)")
        status = DEFAULT_OUTPATIENT_STATUS
    if not _STATUS.fullmatch(status):
        raise InputError("encounter.discharge_status", f"not a patient status code: {status!r}")
    admission_type = source = ""
    if inpatient:
        admission_type = (enc.admission_type or "").strip()
        if not _ADMISSION_TYPE.fullmatch(admission_type):
            raise InputError(
                "encounter.admission_type", "an inpatient claim needs a one-digit type (CL101)"
            )
        source = (enc.admission_source or "").strip()
        if source and not _SOURCE.fullmatch(source):
            raise InputError("encounter.admission_source", f"not a source code: {source!r}")
    # Digits and a letter, the status never empty: ``early``'s text, without its look
    # (with the patterns compiled once, 3.1 us a claim to 0.8).
    return f"CL1*{admission_type}*{source}*{status}~"


def _dates(enc: Encounter, bill: ub04.TypeOfBill) -> list[Segment | Rendered]:
    """DTP*096 discharge hour, DTP*434 statement period, DTP*435 admission date and hour."""
    out: list[Segment | Rendered] = []
    if bill.inpatient and bill.discharged and enc.discharge_time is not None:
        out.append(f"DTP*096*TM*{hhmm(enc.discharge_time)}~")  # digits
    out.append(f"DTP*434*RD8*{rd8(enc.service_start, enc.service_end)}~")  # digits
    if bill.inpatient:
        admitted = enc.admission_date or enc.service_start
        if enc.admission_time is not None:
            stamp = f"{d8(admitted)}{hhmm(enc.admission_time)}"  # strftime's %H%M
            out.append(f"DTP*435*DT*{stamp}~")
        else:
            out.append(f"DTP*435*D8*{d8(admitted)}~")
    return out


def attending_of(enc: Encounter) -> Provider:
    """2310A: the attending, else the person who rendered; refused when there is neither."""
    attending = enc.attending_provider
    rendering = enc.rendering_provider
    if attending is None and rendering is not None and rendering.entity == "person":
        attending = rendering  # the physician who saw the patient, when no attending is named
    if attending is None or attending.entity != "person":
        raise InputError(
            "encounter.attending_provider", "an institutional claim needs the attending physician"
        )
    return attending


def needs_operating_physician(coded: CodedEncounter) -> bool:
    """The TR3 asks for 2310B when a surgical procedure code is on the claim."""
    return any(ub04.is_surgical_pcs(p.code) for p in coded.pcs_procedures)


def _provider_segments(coded: CodedEncounter) -> list[Segment | Rendered]:
    """2310A attending (with taxonomy), 2310B operating physician for surgical procedures,
    2310D rendering when someone else rendered."""
    enc = coded.encounter
    attending = attending_of(enc)
    field = "encounter.attending_provider"
    out = [provider_nm1("71", attending, field)]
    if attending.taxonomy:
        out.append(provider_taxonomy("AT", attending.taxonomy, field))
    if needs_operating_physician(coded):
        operating = enc.operating_provider
        if operating is None or operating.entity != "person":
            raise InputError(
                "encounter.operating_provider",
                "a claim with a surgical ICD-10-PCS procedure needs the operating physician",
            )
        check_npi(operating.npi, "encounter.operating_provider.npi")
        out.append(provider_nm1("72", operating, "encounter.operating_provider"))
    rendering = enc.rendering_provider
    if rendering is not None and rendering.entity == "person" and rendering.npi != attending.npi:
        check_npi(rendering.npi, "encounter.rendering_provider.npi")
        out.append(provider_nm1("82", rendering, "encounter.rendering_provider"))
    return out


#: A revenue code as sent -> (SV201, SV204), once ``revenue_code`` accepted it.
_REVENUES: dict[str | None, tuple[str, str]] = {}


def _line(line: ServiceLine, number: int, claim_id: str) -> list[Segment | Rendered]:
    """2400 loop: LX, SV2 (revenue code, HCPCS when present, days or units), DTP*472, REF*6R.

    Written from the revenue code and procedure accepted before (kept by their values as
    sent), when the line has no non-covered part and its charge is not negative: 2.2 us a
    line to 1.05, the simulator's 837Is. Anything else is ``_checked_line``'s, the judge."""
    kept = _REVENUES.get(line.revenue_code)
    procedure: str | None = ""
    if line.code:
        procedure = kept_procedure(line.code, line.modifiers)
    if kept is None or procedure is None or line.non_covered_charge or line.charge < 0:
        return _checked_line(line, number, claim_id)
    revenue, basis = kept
    # As ``_checked_line`` writes it: SV206 and SV207 empty, dropped.
    return [
        f"LX*{number}~",
        f"SV2*{revenue}*{procedure}*{amount(line.charge)}*{basis}*{quantity(line.units)}~",
        f"DTP*472*D8*{d8(line.service_date)}~",
        f"REF*6R*{claim_id}L{number}~",
    ]


def _checked_line(line: ServiceLine, number: int, claim_id: str) -> list[Segment | Rendered]:
    """``_line`` of any line, each value checked (what it accepts is kept for ``_line``)."""
    field = f"lines[{number - 1}]"
    revenue = revenue_code(line.revenue_code, f"{field}.revenue_code")
    if len(_REVENUES) >= KEPT_MAX:
        _REVENUES.clear()
    _REVENUES[line.revenue_code] = (revenue, ub04.unit_basis(revenue))
    if line.charge < 0:
        raise InputError(f"{field}.charge", "must not be negative")
    procedure = ""
    if line.code:
        code = procedure_code(line.code, f"{field}.code")
        procedure = COMPONENT.join(("HC", code, *modifiers(line.modifiers, field)))
        keep_procedure(line.code, line.modifiers, procedure)
    non_covered = ""
    if line.non_covered_charge:
        if not 0 <= line.non_covered_charge <= line.charge:
            raise InputError(f"{field}.non_covered_charge", "must be between 0 and the charge")
        non_covered = amount(line.non_covered_charge)
    # No value carries a delimiter: the revenue code is digits, the procedure code and
    # modifiers are checked for shape, the rest are numbers (the claim id is an ``ident``).
    # Only SV207 can be empty at the end (SV206 before it is).
    sv2 = (
        f"{revenue}*{procedure}*{amount(line.charge)}*{ub04.unit_basis(revenue)}*"
        f"{quantity(line.units)}**{non_covered}"
    )
    return [
        f"LX*{number}~",
        f"SV2*{sv2.rstrip(ELEMENT)}~",
        f"DTP*472*D8*{d8(line.service_date)}~",
        f"REF*6R*{claim_id}L{number}~",
    ]


def institutional_claim_loop(claim: ClaimInput) -> list[Segment | Rendered]:
    """The 837I 2300 claim loop with its 2310 providers and 2400 lines."""
    coded = claim.coded
    enc = coded.encounter
    bill = claim_type_of_bill(claim)
    claim_id = ident(claim.claim_id, "claim_id", max_len=38)
    if not coded.lines:
        raise InputError("lines", "a claim needs at least one service line")
    if len(coded.lines) > MAX_LINES:
        raise InputError("lines", f"an institutional claim carries at most {MAX_LINES} lines")
    total = sum((line.charge for line in coded.lines), Decimal("0"))
    clm: Segment | Rendered
    if bill.facility and bill.frequency and DELIMITERS.isdisjoint(bill.facility + bill.frequency):
        # ``early``'s text: the claim id is an ``ident``, the total a number, the bill's
        # codes neither empty nor carrying a delimiter (2.1 us a claim to 0.2).
        clm = f"CLM*{claim_id}*{amount(total)}***{bill.facility}:A:{bill.frequency}**A*Y*Y~"
    else:
        clm = early(
            "CLM",
            claim_id,
            amount(total),
            "",
            "",
            comp(bill.facility, "A", bill.frequency),
            "",
            "A",
            "Y",
            "Y",
        )
    out = [
        clm,
        *_dates(enc, bill),
        _cl1(enc, bill),
        *_prior_claim(claim, bill),
        *_diagnosis_segments(coded, bill.inpatient),
        *_procedure_segments(coded),
        *_ub04_segments(enc),
        *_provider_segments(coded),
    ]
    out.extend(prior_payer_section(claim, institutional=True))
    for index, line in enumerate(coded.lines):
        out.extend(_line(line, index + 1, claim_id))
        if claim.prior_payers:
            revenue = revenue_code(line.revenue_code, f"lines[{index}].revenue_code")
            out.extend(line_adjudication_loops(claim.prior_payers, index + 1, revenue))
    return out


INSTITUTIONAL = Profile(
    implementation=IMPLEMENTATION,
    claim_loop=institutional_claim_loop,
    billing_provider=institutional_billing_provider,
)


def build_837i(claims: Sequence[ClaimInput], **options: Any) -> str:
    """One 837I interchange (ISA..IEA) for a batch of institutional claims;
    the options are ``build_837``'s."""
    return build_837(claims, INSTITUTIONAL, **options)
