"""UB-04 (NUBC) facility-claim data: revenue codes, type of bill, and the CMS POA exempt list.

What lives here is shared by the scrubber and the 837I writer, so that they cannot disagree:

- Revenue codes (FL42, SV201): four digits; accommodation codes 0100-0219 (room and board,
  FL42 010x-021x) bill their units as days (SV204 ``DA``), every other code as units
  (``UN``).
- HCPCS on outpatient lines: a payer rule, not an X12 one. The default table is a
  published payer rule, Washington Medicaid's WAC 182-550-1350 (the revenue code
  categories and subcategories whose outpatient lines must carry a CPT/HCPCS code); CMS
  OPPS requires HCPCS on nearly every outpatient line, and a rule pack may name its own.
- Type of bill (FL4): a leading 0, the facility type and classification (11 hospital
  inpatient, 13 hospital outpatient, 21 SNF inpatient, 85 critical access hospital ...)
  and the frequency (1 admit through discharge, 2-4 interim first/continuing/last, 5 late
  charges only, 7 replacement, 8 void; 0 non-payment).
- Present on admission: CMS publishes each fiscal year the ICD-10-CM codes exempt from
  POA reporting (``POAexemptCodesFY25.txt``: tab-separated, a header, order, code with its
  dot, description). Loaded from the reference-data folder when it is there.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.models import CodedDiagnosis, CodedEncounter, ServiceLine

_REVENUE = re.compile(r"[0-9]{3,4}")
ACCOMMODATION_FIRST, ACCOMMODATION_LAST = 100, 219  # 010x-021x

# WAC 182-550-1350: revenue code categories (three digits) and subcategories (four) whose
# outpatient hospital lines must carry a CPT or HCPCS code.
HCPCS_REQUIRED_OUTPATIENT = frozenset(
    {
        *("0260", "0261", "0279", "028", "030", "031", "032", "033", "034", "035"),
        *("0360", "0361", "038", "039", "040", "041", "042", "043", "044", "0450"),
        *("0456", "046", "047", "048", "049", "0510", "0519", "061", "0623", "0634"),
        *("0635", "0636", "0637", "0720", "0721", "0722", "0724", "073", "074", "075"),
        *("0761", "0762"),
    }
)

# FL4 facility type + bill classification (the second and third digits of the type of bill).
FACILITY_TYPES = {
    "11": "hospital inpatient (Part A)",
    "12": "hospital inpatient (Part B)",
    "13": "hospital outpatient",
    "14": "hospital other (Part B, non-patient)",
    "18": "hospital swing bed",
    "21": "skilled nursing inpatient (Part A)",
    "22": "skilled nursing inpatient (Part B)",
    "23": "skilled nursing outpatient",
    "28": "skilled nursing swing bed",
    "32": "home health (Part B)",
    "33": "home health (Part A)",
    "34": "home health (other)",
    "41": "religious non-medical health care institution, inpatient",
    "71": "rural health clinic",
    "72": "end-stage renal disease facility",
    "73": "federally qualified health center",
    "74": "outpatient rehabilitation facility",
    "75": "comprehensive outpatient rehabilitation facility",
    "76": "community mental health center",
    "77": "federally qualified health center",
    "81": "hospice (non-hospital based)",
    "82": "hospice (hospital based)",
    "83": "ambulatory surgery center",
    "85": "critical access hospital",
    "86": "residential facility",
    "89": "other",
}
# Facility types billed for an inpatient stay (POA, admission data, discharge hour apply).
INPATIENT_TYPES = frozenset({"11", "18", "21", "28", "41", "86"})
# FL4 frequency codes an 837I carries in CLM05-3 (X12 code source 235 / NUBC).
FREQUENCIES = {
    "0": "non-payment/zero claim",
    "1": "admit through discharge",
    "2": "interim - first claim",
    "3": "interim - continuing claim",
    "4": "interim - last claim",
    "5": "late charge only",
    "7": "replacement of prior claim",
    "8": "void/cancel of prior claim",
}
INTERIM = frozenset({"2", "3"})  # the patient is still in: no discharge yet
STILL_A_PATIENT = "30"  # FL17 patient status on interim bills
DEFAULT_FACILITY = {"inpatient": "11", "outpatient": "13"}

ClaimType = Literal["professional", "institutional"]


def revenue_code(value: str | None) -> str | None:
    """A revenue code as four digits (a three-digit one gets its leading zero); None if
    the value is not a revenue code."""
    text = (value or "").strip()
    return text.zfill(4) if _REVENUE.fullmatch(text) else None


def is_accommodation(revenue: str) -> bool:
    """Room and board (0100-0219): the units are days."""
    return ACCOMMODATION_FIRST <= int(revenue) <= ACCOMMODATION_LAST


def unit_basis(revenue: str) -> Literal["DA", "UN"]:
    """SV204: days for accommodation revenue codes, units for every other."""
    return "DA" if is_accommodation(revenue) else "UN"


def hcpcs_required_outpatient(
    revenue: str, table: frozenset[str] = HCPCS_REQUIRED_OUTPATIENT
) -> bool:
    """Whether a payer rule (by default WAC 182-550-1350) wants a CPT/HCPCS code on an
    outpatient line with this revenue code (category ``030`` or subcategory ``0450``)."""
    return revenue in table or revenue[:3] in table


@dataclass(frozen=True)
class TypeOfBill:
    """FL4: facility type and classification (two digits) and frequency (one)."""

    facility: str
    frequency: str

    @property
    def code(self) -> str:
        return f"0{self.facility}{self.frequency}"

    @property
    def inpatient(self) -> bool:
        return self.facility in INPATIENT_TYPES

    @property
    def interim(self) -> bool:
        """An interim bill for a stay still going on (no discharge on it)."""
        return self.frequency in INTERIM

    @property
    def discharged(self) -> bool:
        """A bill through discharge: admit-through-discharge, last interim, or their
        replacement/void/late charges (what the discharge hour belongs on)."""
        return self.frequency not in INTERIM

    def with_frequency(self, frequency: str) -> TypeOfBill:
        return TypeOfBill(self.facility, frequency)


def parse_type_of_bill(value: str) -> TypeOfBill:
    """``0111`` or ``111`` -> TypeOfBill; ValueError saying what is wrong."""
    text = value.strip()
    if len(text) == 4 and text.startswith("0"):
        text = text[1:]
    if not re.fullmatch(r"[0-9]{3}", text):
        raise ValueError(f"{value!r} is not a type of bill (0, two facility digits, frequency)")
    facility, frequency = text[:2], text[2]
    if facility not in FACILITY_TYPES:
        raise ValueError(f"{value!r}: {facility} is not a NUBC facility type and classification")
    if frequency not in FREQUENCIES:
        raise ValueError(f"{value!r}: {frequency} is not a claim frequency an 837I carries")
    return TypeOfBill(facility, frequency)


def type_of_bill_for(setting: str, stated: str | None) -> TypeOfBill | None:
    """The encounter's type of bill: as stated, else an original for its setting (0111
    inpatient, 0131 outpatient); None for a professional encounter without one."""
    if stated:
        return parse_type_of_bill(stated)
    facility = DEFAULT_FACILITY.get(setting)
    return TypeOfBill(facility, "1") if facility else None


def line_claim_type(line: ServiceLine, setting: str) -> ClaimType:
    """The claim a line is billed on: as coded, else the encounter's (facility settings
    bill on the 837I)."""
    if line.claim_type is not None:
        return line.claim_type
    return "professional" if setting == "professional" else "institutional"


def claim_kinds(coded: CodedEncounter) -> list[ClaimType]:
    """The claims an encounter bills, in order: the facility's 837I first, then the
    physician's 837P when a facility encounter also has professional lines."""
    kinds = {line_claim_type(line, coded.encounter.setting) for line in coded.lines}
    if len(kinds) < 2:
        return [claim_type_of(coded.encounter.setting)]
    return ["institutional", "professional"]


def claim_type_of(setting: str) -> ClaimType:
    """Professional encounters bill on an 837P; outpatient and inpatient stays on an 837I."""
    return "professional" if setting == "professional" else "institutional"


def claim_part(coded: CodedEncounter, kind: ClaimType, *, renumber: bool = True) -> CodedEncounter:
    """The encounter as one of its claims bills it: the lines of that claim type (renumbered
    from 1 unless told not to). The professional claim of a facility encounter is billed by
    ``professional_billing_provider`` (else the billing provider), with the physician (the
    rendering provider, else the attending) rendering, as a professional encounter: the
    claim's diagnoses, no procedures, DRG, type of bill, attending or operating physician."""
    enc = coded.encounter
    lines = [ln for ln in coded.lines if line_claim_type(ln, enc.setting) == kind]
    if kind == "institutional":
        if renumber:
            lines = [ln.model_copy(update={"line_number": n}) for n, ln in enumerate(lines, 1)]
        return coded.model_copy(update={"lines": lines})
    # A professional line renumbered and without its claim type in one copy, not two (the
    # same values and fields set): splitting the 103 split encounters of 600 claims stage
    # bench verdicts: 32.3M to 30.2M instructions (callgrind).
    if renumber:
        lines = [
            ln.model_copy(update={"line_number": n, "claim_type": None})
            for n, ln in enumerate(lines, 1)
        ]
    else:
        lines = [ln.model_copy(update={"claim_type": None}) for ln in lines]
    encounter = enc.model_copy(
        update={
            "setting": "professional",
            "billing_provider": enc.professional_billing_provider or enc.billing_provider,
            "rendering_provider": enc.rendering_provider or enc.attending_provider,
            "attending_provider": None,
            "operating_provider": None,
            "type_of_bill": None,
        }
    )
    return coded.model_copy(
        update={
            "encounter": encounter,
            "lines": lines,
            "diagnoses": claim_diagnoses(coded),
            "pcs_procedures": [],
            "drg": None,
            "type_of_bill": None,
        }
    )


SIDE_ROLES = frozenset({"admitting", "reason_for_visit"})


def claim_diagnoses(coded: CodedEncounter) -> list[CodedDiagnosis]:
    """The diagnoses of the claim, without the admitting diagnosis and the reasons for
    visit that coding keeps after them (UB-04 FL69, FL70; pointers never reach them)."""
    return [d for d in coded.diagnoses if d.role not in SIDE_ROLES]


@dataclass(frozen=True)
class FacilityDiagnoses:
    """A facility claim's diagnoses in the roles the UB-04 and the 837I give them."""

    principal: CodedDiagnosis | None
    others: list[CodedDiagnosis]
    admitting: list[CodedDiagnosis]
    reasons: list[CodedDiagnosis]
    external: list[CodedDiagnosis]


def facility_diagnoses(coded: CodedEncounter) -> FacilityDiagnoses:
    """Principal (FL67), others (FL67A-Q), admitting (FL69), reasons for visit (FL70) and
    external causes (FL72): an external-cause code (V00-Y99) is never principal."""
    claim: list[CodedDiagnosis] = []
    external: list[CodedDiagnosis] = []
    admitting: list[CodedDiagnosis] = []
    reasons: list[CodedDiagnosis] = []
    for d in sorted(coded.diagnoses, key=lambda d: d.sequence):
        if d.role == "admitting":
            admitting.append(d)
        elif d.role == "reason_for_visit":
            reasons.append(d)
        elif d.role == "external_cause" or (claim and d.code[:1].upper() in "VWXY"):
            external.append(d)
        else:
            claim.append(d)
    return FacilityDiagnoses(claim[0] if claim else None, claim[1:], admitting, reasons, external)


def is_surgical_pcs(code: str) -> bool:
    """ICD-10-PCS section 0, Medical and Surgical: what needs an operating physician."""
    return code.strip().upper().startswith("0")


# --- present on admission -------------------------------------------------------------

POA_VALUES = frozenset({"Y", "N", "U", "W", "1"})


@dataclass(frozen=True)
class PoaExempt:
    """The CMS list of ICD-10-CM codes exempt from POA reporting (codes without dots)."""

    codes: frozenset[str]
    source: str

    def exempt(self, code: str) -> bool:
        return code.replace(".", "").strip().upper() in self.codes

    @classmethod
    def read(cls, path: Path) -> PoaExempt:
        """One ``POAexemptCodesFY{yy}.txt`` file as CMS publishes it."""
        codes: set[str] = set()
        with path.open(newline="", encoding="utf-8-sig", errors="replace") as fh:
            rows = csv.reader(fh, delimiter="\t")
            header = next(rows, [])
            try:
                col = [h.strip().lower() for h in header].index("poaexemptcode")
            except ValueError:
                raise ValueError(f"{path.name}: no POAexemptCode column in {header!r}") from None
            for row in rows:
                if len(row) > col and row[col].strip():
                    codes.add(row[col].replace(".", "").strip().upper())
        if not codes:
            raise ValueError(f"{path.name}: no codes")
        return cls(frozenset(codes), path.name)

    @classmethod
    def load(cls, refdata_dir: Path | None) -> PoaExempt | None:
        """The newest ``POAexemptCodesFY*.txt`` in the folder; None when there is none."""
        if refdata_dir is None or not Path(refdata_dir).is_dir():
            return None
        found = sorted(
            p
            for p in Path(refdata_dir).iterdir()
            if re.fullmatch(r"POAexemptCodesFY\d{2,4}\.txt", p.name, re.I)
        )
        return cls.read(found[-1]) if found else None
