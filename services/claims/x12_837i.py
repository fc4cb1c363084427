"""Write X12 005010X223A2 (837I institutional) interchanges from coded encounters.

The hierarchy (billing provider, subscriber, payer, patient) and the envelope are the
837P writer's (``x12_837.py``); this module brings the institutional claim loop:

- CLM05 is the type of bill: facility type 11 (hospital inpatient) or 13 (hospital
  outpatient), qualifier A, and the claim frequency, so TOB 0111 / 0131 for an original.
- DTP*434 statement period, DTP*435 admission date (inpatient), CL1 admission type,
  admission source and patient discharge status.
- HI: principal diagnosis ABK, admitting diagnosis ABJ (inpatient), DRG (DR), other
  diagnoses ABF (up to 24), principal procedure BBR and other procedures BBQ (ICD-10-PCS,
  with their dates). On inpatient claims every diagnosis carries its POA indicator when
  the coder gave one (HIxx-9).
- 2310A attending provider, 2310D rendering provider when it differs from the attending.
- 2400 lines: SV2 with the revenue code and, when there is one, the HCPCS code.

The facility is the billing provider of an institutional claim: 2010AA is the encounter's
facility (its NPI and street address, with the billing provider's EIN) when the facility
has both, else the billing provider, which must then be an organisation.

Assumption, documented because the contract has no field for it: an inpatient claim's
admitting diagnosis (required by payers on inpatient claims) is the principal diagnosis.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from pipeline.errors import InputError
from pipeline.models import CodedEncounter, Encounter, Provider
from services.claims.x12_837 import (
    DEFAULT_SUBMITTER,
    ClaimInput,
    Profile,
    Submitter,
    build_837,
    check_npi,
    modifiers,
    prior_claim_reference,
    procedure_code,
    provider_nm1,
    sorted_diagnoses,
)
from services.x12 import guides
from services.x12.writer import (
    Composite,
    Element,
    Segment,
    Usage,
    amount,
    comp,
    d8,
    ident,
    quantity,
    rd8,
    seg,
)

IMPLEMENTATION = guides.VERSION_837I
MAX_LINES = guides.MAX_INSTITUTIONAL_LINES
MAX_OTHER_DIAGNOSES = 24  # two HI segments of 12
MAX_OTHER_PROCEDURES = 24  # two HI segments of 12
PER_HI = 12
# CLM05-1 facility type code (the first two digits of the type of bill after its leading 0).
FACILITY_TYPE = {"inpatient": "11", "outpatient": "13"}
POA_CODES = frozenset({"Y", "N", "U", "W"})  # "1" (exempt) is sent as no indicator
DEFAULT_OUTPATIENT_STATUS = "01"  # discharged to home: the usual outpatient patient status
_REVENUE = re.compile(r"^\d{3,4}$")
_PCS = re.compile(r"^[0-9A-HJ-NP-Z]{7}$")  # ICD-10-PCS: 7 characters, no I or O
_DRG = re.compile(r"^\d{3}$")


def type_of_bill(setting: str, frequency: str) -> str:
    """The UB-04 type of bill: 0111 for an original inpatient claim, 0131 outpatient."""
    facility = FACILITY_TYPE.get(setting)
    if facility is None:
        raise InputError("encounter.setting", f"{setting!r} is not billed on an 837I")
    return f"0{facility}{frequency}"


def institutional_billing_provider(claim: ClaimInput) -> Provider:
    """2010AA for an institutional claim: the facility, with the billing provider's EIN."""
    enc = claim.coded.encounter
    billing = enc.billing_provider
    facility = enc.facility
    if facility is not None and facility.npi and facility.address is not None:
        return Provider(
            npi=facility.npi,
            name=facility.name,
            entity="organization",
            tax_id=billing.tax_id,
            taxonomy=billing.taxonomy if billing.npi == facility.npi else None,
            address=facility.address,
        )
    if billing.entity == "person":
        raise InputError(
            "encounter.facility",
            "an institutional claim is billed by the facility: give the facility an NPI and a "
            "street address, or bill it under an organisation",
        )
    return billing


def revenue_code(value: str | None, field: str) -> str:
    """A four-digit NUBC revenue code (a three-digit one gets its leading zero)."""
    if value is None or not _REVENUE.match(value.strip()):
        raise InputError(field, f"an institutional line needs a revenue code, got {value!r}")
    return value.strip().zfill(4)


def _code_info(qualifier: str, code: str, poa: str | None) -> Composite:
    """One HI composite, with the POA indicator in HIxx-9 when there is one."""
    if poa:
        return comp(qualifier, code, "", "", "", "", "", "", poa)
    return comp(qualifier, code)


def _his(items: Sequence[Composite]) -> list[Segment]:
    """HI segments of at most 12 composites each."""
    return [seg("HI", *items[i : i + PER_HI]) for i in range(0, len(items), PER_HI)]


def _poa(value: str | None, inpatient: bool) -> str | None:
    code = (value or "").strip().upper()
    return code if inpatient and code in POA_CODES else None


def _diagnosis_segments(coded: CodedEncounter, inpatient: bool) -> list[Segment]:
    diagnoses = sorted_diagnoses(coded, 1 + MAX_OTHER_DIAGNOSES)
    if not diagnoses:
        raise InputError("diagnoses", "an institutional claim needs a principal diagnosis")
    (principal, principal_poa), others = diagnoses[0], diagnoses[1:]
    out = [seg("HI", _code_info("ABK", principal, _poa(principal_poa, inpatient)))]
    if inpatient:
        out.append(seg("HI", comp("ABJ", principal)))
        drg = coded.drg
        if drg is not None:
            if not _DRG.match(drg.code.strip()):
                raise InputError("drg.code", f"not an MS-DRG: {drg.code!r}")
            out.append(seg("HI", comp("DR", drg.code.strip())))
    out.extend(_his([_code_info("ABF", c, _poa(p, inpatient)) for c, p in others]))
    return out


def _procedure_segments(coded: CodedEncounter) -> list[Segment]:
    if not coded.pcs_procedures:
        return []
    procs = coded.pcs_procedures[: 1 + MAX_OTHER_PROCEDURES]
    items = []
    for i, proc in enumerate(procs):
        code = proc.code.replace(".", "").strip().upper()
        if not _PCS.match(code):
            raise InputError(f"pcs_procedures[{i}].code", f"not an ICD-10-PCS code: {proc.code!r}")
        when = proc.date or coded.encounter.service_start
        items.append(comp("BBR" if i == 0 else "BBQ", code, "D8", d8(when)))
    return [seg("HI", items[0]), *_his(items[1:])]


def _cl1(enc: Encounter, inpatient: bool) -> Segment:
    """CL1: admission type and source (inpatient), patient discharge status (every claim)."""
    status = (enc.discharge_status or "").strip()
    if not status:
        if inpatient:
            raise InputError("encounter.discharge_status", "an inpatient claim needs it (CL103)")
        status = DEFAULT_OUTPATIENT_STATUS
    if not re.fullmatch(r"\d{2}", status):
        raise InputError("encounter.discharge_status", f"not a patient status code: {status!r}")
    admission_type = source = ""
    if inpatient:
        admission_type = (enc.admission_type or "").strip()
        if not re.fullmatch(r"\d", admission_type):
            raise InputError(
                "encounter.admission_type", "an inpatient claim needs a one-digit type (CL101)"
            )
        source = (enc.admission_source or "").strip()
        if source and not re.fullmatch(r"[0-9A-Z]", source):
            raise InputError("encounter.admission_source", f"not a source code: {source!r}")
    return seg("CL1", admission_type, source, status)


def _attending(enc: Encounter) -> Provider:
    attending = enc.attending_provider
    rendering = enc.rendering_provider
    if attending is None and rendering is not None and rendering.entity == "person":
        attending = rendering  # the physician who saw the patient, when no attending is named
    if attending is None or attending.entity != "person":
        raise InputError(
            "encounter.attending_provider", "an institutional claim needs the attending physician"
        )
    return attending


def _provider_segments(enc: Encounter) -> list[Segment]:
    """2310A attending (with taxonomy) and 2310D rendering when someone else rendered."""
    attending = _attending(enc)
    field = "encounter.attending_provider"
    out = [provider_nm1("71", attending, field)]
    if attending.taxonomy:
        taxonomy = ident(attending.taxonomy, f"{field}.taxonomy", min_len=10, max_len=10)
        out.append(seg("PRV", "AT", "PXC", taxonomy))
    rendering = enc.rendering_provider
    if rendering is not None and rendering.entity == "person" and rendering.npi != attending.npi:
        check_npi(rendering.npi, "encounter.rendering_provider.npi")
        out.append(provider_nm1("82", rendering, "encounter.rendering_provider"))
    return out


def _line(coded: CodedEncounter, index: int, claim_id: str) -> list[Segment]:
    """2400 loop: LX, SV2 (revenue code, HCPCS when present), DTP*472, REF*6R."""
    line = coded.lines[index]
    number = index + 1
    field = f"lines[{index}]"
    revenue = revenue_code(line.revenue_code, f"{field}.revenue_code")
    if line.charge < 0:
        raise InputError(f"{field}.charge", "must not be negative")
    procedure: Element = ""
    if line.code:
        code = procedure_code(line.code, f"{field}.code")
        procedure = comp("HC", code, *modifiers(line.modifiers, field))
    return [
        seg("LX", str(number)),
        seg("SV2", revenue, procedure, amount(line.charge), "UN", quantity(line.units)),
        seg("DTP", "472", "D8", d8(line.service_date)),
        seg("REF", "6R", f"{claim_id}L{number}"),
    ]


def institutional_claim_loop(claim: ClaimInput) -> list[Segment]:
    """The 837I 2300 claim loop with its 2310 providers and 2400 lines."""
    coded = claim.coded
    enc = coded.encounter
    inpatient = enc.setting == "inpatient"
    claim_id = ident(claim.claim_id, "claim_id", max_len=38)
    if not coded.lines:
        raise InputError("lines", "a claim needs at least one service line")
    if len(coded.lines) > MAX_LINES:
        raise InputError("lines", f"an institutional claim carries at most {MAX_LINES} lines")
    bill = type_of_bill(enc.setting, claim.frequency)
    total = sum((line.charge for line in coded.lines), Decimal("0"))
    out = [
        seg(
            "CLM",
            claim_id,
            amount(total),
            "",
            "",
            comp(bill[1:3], "A", claim.frequency),
            "",
            "A",
            "Y",
            "Y",
        ),
        seg("DTP", "434", "RD8", rd8(enc.service_start, enc.service_end)),
    ]
    if inpatient:
        out.append(seg("DTP", "435", "D8", d8(enc.admission_date or enc.service_start)))
    out.append(_cl1(enc, inpatient))
    out.extend(prior_claim_reference(claim))
    out.extend(_diagnosis_segments(coded, inpatient))
    out.extend(_procedure_segments(coded))
    out.extend(_provider_segments(enc))
    for index in range(len(coded.lines)):
        out.extend(_line(coded, index, claim_id))
    return out


INSTITUTIONAL = Profile(
    implementation=IMPLEMENTATION,
    claim_loop=institutional_claim_loop,
    billing_provider=institutional_billing_provider,
)


def build_837i(
    claims: Sequence[ClaimInput],
    *,
    sender_id: str,
    receiver_id: str,
    control_number: int,
    created: datetime,
    receiver_name: str | None = None,
    submitter: Submitter = DEFAULT_SUBMITTER,
    usage: Usage = "P",
) -> str:
    """One 837I interchange (ISA..IEA) for a batch of institutional claims."""
    return build_837(
        claims,
        INSTITUTIONAL,
        sender_id=sender_id,
        receiver_id=receiver_id,
        control_number=control_number,
        created=created,
        receiver_name=receiver_name,
        submitter=submitter,
        usage=usage,
    )
