"""Facility claims (UB-04 / 837I): revenue codes, type of bill, admission and discharge
data, attending and operating physicians, present on admission and hospital-acquired
conditions, and what the 837I writer would refuse.

The limits and tables are the writer's own (``services/x12/guides.py``,
``services/refdata/ub04.py``), so a claim the scrubber passes is a claim that is written.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

from pipeline.models import Address, ServiceLine
from services.refdata import ub04
from services.refdata.codesets import coding_date, normalize_code
from services.refdata.drg import Grouped, Grouper
from services.validation.engine import (
    Context,
    Hit,
    facility_bill,
    facility_lines,
    rule,
    ub04_code_lists,
)
from services.validation.rules._util import where
from services.validation.rules.required import PO_BOX
from services.x12 import guides

_NUBC = re.compile(r"[0-9A-Z]{2}")
_ONE_DIGIT = re.compile(r"\d")
_TWO_DIGITS = re.compile(r"\d{2}")
_POINT_OF_ORIGIN = re.compile(r"[0-9A-Z]")


def _facility_lines(ctx: Context) -> Iterator[tuple[int, ServiceLine]]:
    return iter(ctx.facility_lines)


def _bill(ctx: Context) -> ub04.TypeOfBill | None:
    """The facility claim's type of bill; None when there is none or it is not one."""
    return ctx.bill


def _has_facility_claim(ctx: Context) -> bool:
    return bool(ctx.facility_lines)


@rule(
    "CF-UB-001",
    "error",
    "Every line of a facility claim carries a NUBC revenue code (UB-04 FL42, SV201).",
    category="institutional",
    fix_hint="Map the charge to its revenue code in the chargemaster (0120 room and board, "
    "0250 pharmacy, 0300 laboratory, 0450 emergency room ...).",
    needs=facility_lines,
)
def revenue_codes(ctx: Context) -> Iterator[Hit]:
    for i, line in _facility_lines(ctx):
        if ub04.revenue_code(line.revenue_code) is None:
            yield Hit(
                f"lines[{i}].revenue_code",
                f"{where(line.line_number, line.code)} has no revenue code "
                f"({line.revenue_code!r}); a facility claim bills every line by one.",
                line.line_number,
            )


@rule(
    "CF-UB-002",
    "error",
    "Outpatient facility lines in the revenue code categories the payer rule names carry a "
    "CPT/HCPCS code (WAC 182-550-1350; CMS OPPS requires HCPCS on nearly every line).",
    category="institutional",
    fix_hint="Add the CPT/HCPCS code of the service (the chargemaster's HCPCS for the item).",
    needs=facility_lines,
)
def outpatient_hcpcs(ctx: Context) -> Iterator[Hit]:
    bill = _bill(ctx)
    if bill is None or bill.inpatient:
        return  # HCPCS is optional on inpatient lines
    for i, line in _facility_lines(ctx):
        revenue = ub04.revenue_code(line.revenue_code)
        if revenue and not line.code and ub04.hcpcs_required_outpatient(revenue):
            yield Hit(
                f"lines[{i}].code",
                f"Line {line.line_number} (revenue code {revenue}) on an outpatient bill "
                f"({bill.code}) has no CPT/HCPCS code; the payer requires one for this "
                "revenue code.",
                line.line_number,
            )


@rule(
    "CF-UB-003",
    "error",
    "The type of bill (FL4) is a NUBC facility type, classification and frequency, and a "
    "replacement or void names the claim it corrects.",
    category="institutional",
    fix_hint="Send a type of bill such as 0111 (inpatient), 0131 (outpatient), 0211 (SNF), "
    "0851 (critical access), and with 0xx7/0xx8 the payer's claim number.",
    needs=facility_lines,
)
def type_of_bill(ctx: Context) -> Iterator[Hit]:
    if not _has_facility_claim(ctx):
        return
    stated = ctx.coded.type_of_bill or ctx.coded.encounter.type_of_bill
    try:
        bill = ub04.type_of_bill_for(ctx.setting, stated)
    except ValueError as exc:
        yield Hit("type_of_bill", f"{exc}.")
        return
    if bill is None:
        yield Hit("type_of_bill", "Facility lines need a type of bill.")
        return
    enc = ctx.coded.encounter
    if bill.frequency in ("7", "8") and not enc.prior_claim_reference:
        yield Hit(
            "encounter.prior_claim_reference",
            f"Type of bill {bill.code} replaces or voids a claim, but names no payer claim "
            "number (REF*F8).",
        )
    if bill.interim and not bill.inpatient:
        yield Hit(
            "type_of_bill",
            f"Type of bill {bill.code} is an interim bill, which only an inpatient stay has.",
        )


@rule(
    "CF-UB-004",
    "error",
    "An inpatient bill carries the admission type (FL14) and the patient status (FL17).",
    category="institutional",
    fix_hint="Send the UB-04 admission type (1 emergency, 2 urgent, 3 elective ...) and the "
    "discharge status (01 home, 03 SNF ...; 30 while the patient is still in).",
    needs=facility_bill,
)
def admission_data(ctx: Context) -> Iterator[Hit]:
    bill = _bill(ctx)
    if bill is None or not bill.inpatient:
        return
    enc = ctx.coded.encounter
    if not _ONE_DIGIT.fullmatch((enc.admission_type or "").strip()):
        yield Hit("encounter.admission_type", "The inpatient bill has no one-digit admission type.")
    status = (enc.discharge_status or "").strip()
    if not bill.interim and not _TWO_DIGITS.fullmatch(status):
        yield Hit(
            "encounter.discharge_status",
            f"The inpatient bill has no two-digit patient status ({status!r}).",
        )
    if bill.interim and status not in ("", "30"):
        yield Hit(
            "encounter.discharge_status",
            f"Interim bill {bill.code} is for a patient still in: the status is 30, not {status}.",
        )
    source = (enc.admission_source or "").strip()
    if source and not _POINT_OF_ORIGIN.fullmatch(source):
        yield Hit("encounter.admission_source", f"{source!r} is not a point-of-origin code (FL15).")


@rule(
    "CF-UB-005",
    "error",
    "A facility claim names the attending physician (FL76, 2310A): a person with an NPI.",
    category="institutional",
    fix_hint="Send the attending physician (Encounter.participant ATND, PV1-7).",
    needs=facility_lines,
)
def attending(ctx: Context) -> Iterator[Hit]:
    if not _has_facility_claim(ctx):
        return
    enc = ctx.coded.encounter
    who = enc.attending_provider
    if who is None and enc.rendering_provider is not None:
        who = enc.rendering_provider
    if who is None or who.entity != "person":
        yield Hit(
            "encounter.attending_provider",
            "The facility claim names no attending physician (a person).",
        )


@rule(
    "CF-UB-006",
    "error",
    "A facility claim with a surgical ICD-10-PCS procedure names the operating physician "
    "(FL77, 2310B).",
    category="institutional",
    fix_hint="Send the surgeon (Claim.careTeam role operating, the Procedure's performer).",
    needs=facility_lines,
)
def operating(ctx: Context) -> Iterator[Hit]:
    if not _has_facility_claim(ctx):
        return
    surgical = [p.code for p in ctx.coded.pcs_procedures if ub04.is_surgical_pcs(p.code)]
    who = ctx.coded.encounter.operating_provider
    if surgical and (who is None or who.entity != "person"):
        yield Hit(
            "encounter.operating_provider",
            f"The claim bills surgical procedure {surgical[0]} but names no operating physician.",
        )


@rule(
    "CF-UB-007",
    "warning",
    "Room and board (revenue codes 010x-021x) bills days: no more than the stay has.",
    category="institutional",
    fix_hint="Bill one unit per day of the stay (the day of discharge is not billed).",
    needs=facility_lines,
)
def accommodation_days(ctx: Context) -> Iterator[Hit]:
    enc = ctx.coded.encounter
    days = max(1, (enc.service_end - enc.service_start).days)
    by_code: dict[str, float] = {}
    for _, line in _facility_lines(ctx):
        revenue = ub04.revenue_code(line.revenue_code)
        if revenue and ub04.is_accommodation(revenue):
            by_code[revenue] = by_code.get(revenue, 0) + line.units
    total = sum(by_code.values())
    if total > days:
        yield Hit(
            "lines",
            f"The bill charges {total:g} days of room and board for a stay of {days} "
            f"{'day' if days == 1 else 'days'} ({enc.service_start} to {enc.service_end}).",
        )


@rule(
    "CF-UB-008",
    "error",
    "An 837I carries at most 25 diagnoses, 25 procedures, 12 external causes, 3 reasons for "
    "visit and 24 of each UB-04 code kind; nothing beyond is cut silently.",
    category="institutional",
    fix_hint="Keep the codes that matter for payment (the DRG's), or split the bill.",
    needs=facility_lines,
)
def capacity(ctx: Context) -> Iterator[Hit]:
    if not _has_facility_claim(ctx):
        return
    roles = ub04.facility_diagnoses(ctx.coded)
    enc = ctx.coded.encounter
    counts = [
        ("diagnoses", 1 + len(roles.others), 1 + guides.MAX_INSTITUTIONAL_OTHER_DIAGNOSES),
        (
            "pcs_procedures",
            len(ctx.coded.pcs_procedures),
            1 + guides.MAX_INSTITUTIONAL_OTHER_PROCEDURES,
        ),
        ("diagnoses", len(roles.external), guides.MAX_EXTERNAL_CAUSES),
        ("diagnoses", len(roles.reasons), guides.MAX_REASONS_FOR_VISIT),
        ("encounter.occurrence_codes", len(enc.occurrence_codes), guides.MAX_UB04_CODES),
        ("encounter.occurrence_spans", len(enc.occurrence_spans), guides.MAX_UB04_CODES),
        ("encounter.value_codes", len(enc.value_codes), guides.MAX_UB04_CODES),
        ("encounter.condition_codes", len(enc.condition_codes), guides.MAX_UB04_CODES),
        ("lines", len(list(_facility_lines(ctx))), guides.MAX_INSTITUTIONAL_LINES),
    ]
    for field, n, most in counts:
        if n > most:
            yield Hit(field, f"The bill has {n} of these; an 837I carries {most}.")


@rule(
    "CF-UB-009",
    "error",
    "Occurrence, occurrence span, value and condition codes are two NUBC characters.",
    category="institutional",
    fix_hint="Send the NUBC code (e.g. occurrence 11 onset, value 80 covered days).",
    needs=ub04_code_lists,
)
def ub04_codes(ctx: Context) -> Iterator[Hit]:
    enc = ctx.coded.encounter
    if not (enc.occurrence_codes or enc.occurrence_spans or enc.value_codes
            or enc.condition_codes):  # fmt: skip
        return  # most encounters (every office visit): 2.3 us of empty lists (now 0.9)
    named = [
        *(("encounter.occurrence_codes", i, o.code) for i, o in enumerate(enc.occurrence_codes)),
        *(("encounter.occurrence_spans", i, o.code) for i, o in enumerate(enc.occurrence_spans)),
        *(("encounter.value_codes", i, v.code) for i, v in enumerate(enc.value_codes)),
    ]
    for field, i, code in named:
        if not _NUBC.fullmatch(code.strip().upper()):
            yield Hit(f"{field}[{i}].code", f"{code!r} is not a two-character NUBC code.")
    for i, code in enumerate(enc.condition_codes):
        if not _NUBC.fullmatch(code.strip().upper()):
            yield Hit(f"encounter.condition_codes[{i}]", f"{code!r} is not a NUBC condition code.")
    for i, span in enumerate(enc.occurrence_spans):
        if span.end < span.start:
            yield Hit(f"encounter.occurrence_spans[{i}].end", "The span ends before it starts.")


@rule(
    "CF-UB-010",
    "warning",
    "A final inpatient bill carries the discharge hour (FL16, DTP*096).",
    category="institutional",
    fix_hint="Send the discharge time (Encounter.period.end with its time, PV1-45).",
    needs=facility_bill,
)
def discharge_hour(ctx: Context) -> Iterator[Hit]:
    bill = _bill(ctx)
    if bill is None or not bill.inpatient or not bill.discharged or bill.frequency == "8":
        return
    if ctx.coded.encounter.discharge_time is None:
        yield Hit("encounter.discharge_time", "The discharge hour is missing on a final bill.")


@rule(
    "CF-UB-011",
    "error",
    "The facility bills a facility claim (2010AA): its NPI and a street address with a "
    "9-digit ZIP, else the billing provider as an organisation.",
    category="institutional",
    fix_hint="Give the facility its NPI and street address with ZIP+4 (a PO box may only be "
    "the pay-to address).",
    needs=facility_lines,
)
def facility_billing(ctx: Context) -> Iterator[Hit]:
    if not _has_facility_claim(ctx):
        return
    enc = ctx.coded.encounter
    facility = enc.facility
    address: Address | None  # the billing provider's may be missing: a hit below
    if facility is not None and facility.npi and facility.address is not None:
        address, field = facility.address, "encounter.facility.address"
    elif enc.billing_provider.entity == "person":
        yield Hit(
            "encounter.facility",
            "A person cannot bill a facility claim: give the facility an NPI and a street "
            "address, or bill it under an organisation.",
        )
        return
    else:
        address, field = enc.billing_provider.address, "encounter.billing_provider.address"
    if address is None:
        yield Hit(field, "The facility billing the claim has no address.")
        return
    if len(address.postal_code) != 9:
        yield Hit(
            f"{field}.postal_code",
            f"ZIP {address.postal_code} has 5 digits; the 837I billing provider needs all 9.",
        )
    if PO_BOX.search(f"{address.line1} {address.line2 or ''}"):
        yield Hit(f"{field}.line1", "The billing address is a post office box.")


# --- present on admission and hospital-acquired conditions -----------------------------


@rule(
    "CF-POA-000",
    "info",
    "The CMS POA exempt list is not loaded: a missing POA indicator is checked only on "
    "diagnoses the MS-DRG grouper's HAC logic reads.",
    category="poa",
    settings=("inpatient",),
    fix_hint="Put the fiscal year's POAexemptCodesFY*.txt in CLAIMFLOW_REFDATA_DIR.",
)
def poa_list_missing(ctx: Context) -> Iterator[Hit]:
    if ctx.codesets.poa_exempt is None:
        yield Hit("diagnoses", ctx.codesets.notes.get("poa_exempt_list", "not loaded") + ".")


@rule(
    "CF-POA-001",
    "error",
    "Every inpatient diagnosis not on the CMS POA exempt list carries a present-on-admission "
    "indicator (Y, N, U or W).",
    category="poa",
    settings=("inpatient",),
    fix_hint="Report Y (present at admission), N (not), U (not documented) or W (clinically "
    "undetermined); exempt codes take none.",
)
def poa_missing(ctx: Context) -> Iterator[Hit]:
    bill = _bill(ctx)
    if bill is not None and not bill.inpatient:
        return
    exempt = ctx.codesets.poa_exempt
    hac_checked = _hac_poa_errors(ctx) if exempt is None else set()
    for i, d in enumerate(ctx.coded.diagnoses):
        if d.role in ub04.SIDE_ROLES:
            continue
        poa = (d.poa or "").strip().upper()
        if poa in ("Y", "N", "U", "W"):
            continue
        if exempt is not None:
            if exempt.exempt(d.code):
                continue
        elif normalize_code(d.code) not in hac_checked:
            continue
        yield Hit(
            f"diagnoses[{i}].poa",
            f"{d.code} has no present-on-admission indicator"
            + (f" ({poa!r})" if poa else "")
            + f" and is not POA-exempt ({exempt.source if exempt else 'a HAC diagnosis'}).",
        )


@rule(
    "CF-HAC-001",
    "warning",
    "A secondary diagnosis not present on admission meets a CMS hospital-acquired condition "
    "category: Medicare groups the stay as if it were absent.",
    category="poa",
    settings=("inpatient",),
    fix_hint="Confirm the POA indicator with the record; a true HAC is reported to quality.",
)
def hospital_acquired(ctx: Context) -> Iterator[Hit]:
    grouped = _grouped(ctx)
    if grouped is None:
        return
    index = {normalize_code(d.code): i for i, d in enumerate(ctx.coded.diagnoses)}
    seen: set[tuple[str, str]] = set()
    for hac in grouped.hacs:
        if (hac.code, hac.category) in seen:
            continue
        seen.add((hac.code, hac.category))
        i = index.get(normalize_code(hac.code))
        yield Hit(
            f"diagnoses[{i}].poa" if i is not None else "diagnoses",
            f"{hac.code} was not present on admission and meets {hac.category} "
            f"({hac.description}).",
        )


@functools.cache
def _grouper() -> Grouper:
    return Grouper()


def _grouped(ctx: Context) -> Grouped | None:
    """The stay grouped with its POA indicators (HACs included), or None."""
    dxs = ub04.claim_diagnoses(ctx.coded)
    if not dxs or ctx.age is None:
        return None
    enc = ctx.coded.encounter
    return _grouper().group(
        discharge=coding_date(enc.setting, enc.service_start, enc.service_end),
        age=ctx.age,
        sex=enc.patient.sex,
        discharge_status=enc.discharge_status,
        principal=(normalize_code(dxs[0].code), dxs[0].poa),
        secondary=[(normalize_code(d.code), d.poa) for d in dxs[1:]],
        procedures=[normalize_code(p.code) for p in ctx.coded.pcs_procedures],
    )


def _hac_poa_errors(ctx: Context) -> set[str]:
    """Diagnoses the grouper's HAC logic reads: their POA indicator is never optional."""
    grouped = _grouped(ctx)
    return set(grouped.poa_unreadable) if grouped is not None else set()
