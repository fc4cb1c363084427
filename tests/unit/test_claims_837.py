"""837P serializer and claim building, judged by pyx12: every generated file must have 0 errors."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shared_data import SHARED_DATA, requires_shared

from pipeline.errors import InputError
from pipeline.models import (
    Address,
    CodedDiagnosis,
    CodedEncounter,
    Coverage,
    DocumentedDiagnosis,
    DocumentedService,
    Encounter,
    Facility,
    Patient,
    Provider,
    ServiceLine,
    SubmittedClaim,
    Subscriber,
    ValidatedEncounter,
    event_id,
)
from services.claims.domain import build_claim, claim_id_for, interchange_control_number
from services.claims.x12_837_common import ClaimInput, person_name
from services.claims.x12_837p import build_837p, build_837p_claim
from services.x12.validate import validate_x12
from services.x12.writer import amount, quantity, text

SHARED_X12 = SHARED_DATA / "x12"
CREATED = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


# --- factory -------------------------------------------------------------------------------


def npi(base9: str) -> str:
    """A valid NPI: nine digits plus the Luhn check digit computed over '80840' + them."""
    total = 0
    for i, ch in enumerate(reversed("80840" + base9)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    return base9 + str((10 - total % 10) % 10)


def test_npi_factory_matches_a_known_npi() -> None:
    # 1234567893 is the check-digit example in the CMS NPI standard.
    assert npi("123456789") == "1234567893"


GROUP = Provider(
    npi=npi("123456789"),
    name="Riverside Family Medicine, P.A.",
    entity="organization",
    tax_id="123456789",
    taxonomy="207Q00000X",
    address=Address(
        line1="100 Main St",
        line2="Suite 200",
        city="Springfield",
        state="IL",
        postal_code="627011234",
    ),
)
DOCTOR = Provider(
    npi=npi("198765432"),
    name="Dr. Mary-Jane O'Brien, MD",
    entity="person",
    taxonomy="207R00000X",
)
PATIENT = Patient(
    patient_id="P1",
    last_name="Doe",
    first_name="John",
    birth_date=date(1970, 5, 17),
    sex="M",
    address=Address(line1="12 Elm Street", city="Springfield", state="IL", postal_code="62704"),
)
COVERAGE = Coverage(
    payer_id="87726",
    payer_name="UnitedHealthcare",
    plan_type="CI",
    member_id="W123456789",
    group_number="GRP0042",
)
# The Medicare physician fee schedule prices Medicare claims only; a commercial payer's
# expected payment comes from its contract (test_masterdata_use.py).
MEDICARE_B = Coverage(
    payer_id="04412", payer_name="Medicare Part B", plan_type="MB", member_id="1EG4TE5MK73"
)
DX = ["E11.9", "I10", "J06.9", "E78.5", "R05.9", "Z00.00"]
# (code, modifiers, units, charge, pointers)
LINES: list[tuple[str, list[str], float, str, list[int]]] = [
    ("99213", ["25"], 1, "125.00", [1, 2, 3, 4]),
    ("36415", [], 1, "15.50", [1]),
    ("85025", ["QW"], 1, "32.25", [1, 2]),
    ("93000", ["59", "XU"], 1, "60.00", [2, 5]),
    ("80053", ["91", "59", "XS", "GA"], 2, "88.10", [1, 2, 3, 4, 5]),
    ("G0444", [], 1, "24.00", [6]),
]


def coded_encounter(
    encounter_id: str = "ENC-1",
    *,
    lines: int = 1,
    diagnoses: int = 3,
    billing: Provider = GROUP,
    rendering: Provider | None = None,
    patient: Patient = PATIENT,
    coverage: Coverage = COVERAGE,
    facility: Facility | None = None,
    place_of_service: str = "11",
    start: date = date(2026, 2, 27),
    **encounter_overrides: Any,
) -> CodedEncounter:
    """A realistic coded professional encounter with valid NPIs and code sets."""
    dx = DX[:diagnoses]
    services = [LINES[i % len(LINES)] for i in range(lines)]
    encounter = Encounter(
        event_id=event_id(encounter_id, "intake", "v1"),
        encounter_id=encounter_id,
        source_id=f"src-{encounter_id}",
        source_format="json",
        received_at=datetime(2026, 3, 1, 9, 0, tzinfo=UTC),
        setting="professional",
        service_start=start,
        service_end=start,
        place_of_service=place_of_service,
        patient=patient,
        coverage=coverage,
        billing_provider=billing,
        rendering_provider=rendering,
        facility=facility,
        diagnoses=[
            DocumentedDiagnosis(code=c, system="icd10cm", primary=i == 0) for i, c in enumerate(dx)
        ],
        services=[
            DocumentedService(code=c, system="cpt", modifiers=m, units=u, charge=Decimal(ch))
            for c, m, u, ch, _ in services
        ],
        **encounter_overrides,
    )
    return CodedEncounter(
        event_id=event_id(encounter_id, "coding", "v1"),
        encounter_id=encounter_id,
        encounter=encounter,
        diagnoses=[
            CodedDiagnosis(code=c, sequence=i + 1, source="ehr", confidence=1.0, billable=True)
            for i, c in enumerate(dx)
        ],
        lines=[
            ServiceLine(
                line_number=i + 1,
                code=c,
                code_system="HCPCS" if c[0].isalpha() else "CPT",
                modifiers=m,
                units=u,
                charge=Decimal(ch),
                dx_pointers=[p for p in ptrs if p <= len(dx)] or [1],
                service_date=start,
            )
            for i, (c, m, u, ch, ptrs) in enumerate(services)
        ],
        code_set_version="FY2026",
        confidence=0.97,
        coded_at=datetime(2026, 3, 1, 9, 1, tzinfo=UTC),
    )


def validated(coded: CodedEncounter, outcome: str = "clean") -> ValidatedEncounter:
    return ValidatedEncounter(
        event_id=event_id(coded.encounter_id, "validation", "v1"),
        encounter_id=coded.encounter_id,
        outcome=outcome,  # type: ignore[arg-type]
        edits=[],
        rule_pack_version="2026.1",
        coded=coded,
        validated_at=datetime(2026, 3, 1, 9, 2, 3, 456000, tzinfo=UTC),
    )


def one(coded: CodedEncounter, claim_id: str = "CF0001", **kwargs: Any) -> str:
    return build_837p_claim(
        ClaimInput(claim_id=claim_id, coded=coded, **kwargs),
        sender_id="CLAIMFLOW",
        receiver_id="CLEARHOUSE01",
        control_number=1201,
        created=CREATED,
    )


def segments(x12: str, seg_id: str) -> list[list[str]]:
    return [s.split("*") for s in x12.replace("\n", "").split("~") if s.split("*")[0] == seg_id]


def assert_valid(x12: str) -> None:
    errors = validate_x12(x12)
    assert errors == [], "\n".join(errors) + "\n\n" + x12


# --- value formatting ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("125.00", "125"),
        ("125.50", "125.5"),
        ("125.25", "125.25"),
        ("0", "0"),
        ("0.00", "0"),
        ("1000", "1000"),
        ("10.10", "10.1"),
        ("99.999", "100"),
    ],
)
def test_amounts_are_x12_decimals_without_trailing_zeros(value: str, expected: str) -> None:
    assert amount(Decimal(value)) == expected


def test_units_are_x12_decimals() -> None:
    assert [quantity(u) for u in (1.0, 2, 1.5, 0.25)] == ["1", "2", "1.5", "0.25"]


def test_free_text_loses_delimiters_and_accents_and_is_upper_cased() -> None:
    assert text("Zoë O'Brien*Smith~:^ Jr.", 60) == "ZOE O'BRIEN SMITH JR."
    assert text("x" * 80, 60) == "X" * 60


@pytest.mark.parametrize(
    ("name", "last", "first", "middle", "suffix"),
    [
        ("Dr. Mary-Jane O'Brien, MD", "O'BRIEN", "MARY-JANE", "", ""),
        ("Smith, John A", "SMITH", "JOHN", "A", ""),
        ("John A. Smith Jr., MD", "SMITH", "JOHN", "A.", "JR"),
        ("Maria de la Cruz", "DE LA CRUZ", "MARIA", "", ""),
        ("Cher", "CHER", "", "", ""),
    ],
)
def test_person_names_split_into_nm1_parts(
    name: str, last: str, first: str, middle: str, suffix: str
) -> None:
    got = person_name(name)
    assert (got.last, got.first, got.middle, got.suffix) == (last, first, middle, suffix)


# --- the validator is itself tested ----------------------------------------------------------


def test_validator_reports_a_missing_billing_provider_name() -> None:
    good = one(coded_encounter())
    assert validate_x12(good) == []
    lines = good.splitlines()
    broken = [s for s in lines if not s.startswith("NM1*85*")]
    se = next(i for i, s in enumerate(broken) if s.startswith("SE*"))
    broken[se] = f"SE*{int(broken[se].split('*')[1]) - 1}*0001~"  # keep the count honest
    errors = validate_x12("\n".join(broken))
    assert errors
    assert any("NM1" in e or "Billing Provider Name" in e for e in errors), errors


def test_validator_reports_a_wrong_se_count() -> None:
    good = one(coded_encounter())
    bad = good.replace(f"SE*{segments(good, 'SE')[0][1]}*", "SE*99*")
    assert any("SE count" in e for e in validate_x12(bad))


def test_validator_reports_a_bad_code_value() -> None:
    bad = one(coded_encounter()).replace("DMG*D8*19700517*M~", "DMG*D8*19700517*Q~")
    assert any("Q" in e for e in validate_x12(bad))


def test_validator_rejects_text_that_is_not_x12() -> None:
    assert validate_x12("hello") != []
    assert validate_x12("") != []


@requires_shared
def test_validator_survives_the_shared_complex_file() -> None:
    errors = validate_x12((SHARED_X12 / "x12_complex.txt").read_text())
    assert isinstance(errors, list)
    assert errors  # the file carries known errors (ICD-9 style HI, HL counts)
    assert all(isinstance(e, str) and e for e in errors)


# --- 837P shapes, every one valid ------------------------------------------------------------


def test_one_line_claim_is_valid_and_carries_the_claim() -> None:
    x12 = one(coded_encounter(lines=1, diagnoses=1))
    assert_valid(x12)
    clm = segments(x12, "CLM")[0]
    assert clm[1:3] == ["CF0001", "125"]
    assert clm[5] == "11:B:1"
    assert clm[6:10] == ["Y", "A", "Y", "Y"]
    assert segments(x12, "HI") == [["HI", "ABK:E119"]]
    assert segments(x12, "SV1") == [["SV1", "HC:99213:25", "125", "UN", "1", "", "", "1"]]
    assert segments(x12, "DTP") == [["DTP", "472", "D8", "20260227"]]
    assert segments(x12, "SBR") == [["SBR", "P", "18", "GRP0042", "", "", "", "", "", "CI"]]
    assert segments(x12, "REF")[0] == ["REF", "EI", "123456789"]
    assert not segments(x12, "NM1*82")


def test_six_lines_with_modifiers_and_four_pointers_are_valid() -> None:
    x12 = one(coded_encounter(lines=6, diagnoses=6))
    assert_valid(x12)
    sv1 = segments(x12, "SV1")
    assert [s[1] for s in sv1] == [
        "HC:99213:25",
        "HC:36415",
        "HC:85025:QW",
        "HC:93000:59:XU",
        "HC:80053:91:59:XS:GA",
        "HC:G0444",
    ]
    assert sv1[0][7] == "1:2:3:4"
    assert sv1[4][7] == "1:2:3:4"  # five pointers in, the four allowed out
    assert sv1[4][4] == "2"
    assert [s[1] for s in segments(x12, "LX")] == ["1", "2", "3", "4", "5", "6"]
    assert segments(x12, "CLM")[0][2] == "344.85"
    assert segments(x12, "HI")[0][1:] == [
        "ABK:E119",
        "ABF:I10",
        "ABF:J069",
        "ABF:E785",
        "ABF:R059",
        "ABF:Z0000",
    ]


def test_rendering_provider_is_written_only_when_it_differs_from_billing() -> None:
    x12 = one(coded_encounter(lines=2, rendering=DOCTOR))
    assert_valid(x12)
    nm82 = [s for s in segments(x12, "NM1") if s[1] == "82"]
    assert nm82 == [["NM1", "82", "1", "O'BRIEN", "MARY-JANE", "", "", "", "XX", DOCTOR.npi]]
    assert ["PRV", "PE", "PXC", "207R00000X"] in segments(x12, "PRV")
    same = one(coded_encounter(rendering=GROUP))
    assert_valid(same)
    assert not [s for s in segments(same, "NM1") if s[1] == "82"]


def test_names_with_punctuation_and_delimiters_are_escaped_and_valid() -> None:
    patient = PATIENT.model_copy(
        update={
            "last_name": "O'Connor-Smith*~:^",
            "first_name": "Zoë",
            "address": Address(
                line1="123 Main St. #4*B",
                line2="Apt ^7",
                city="Coeur d'Alene",
                state="ID",
                postal_code="83814",
            ),
        }
    )
    coverage = COVERAGE.model_copy(update={"payer_name": "Blue Cross: Blue Shield ^ ID"})
    billing = GROUP.model_copy(update={"name": "Smith & Jones (Family) Practice, L.L.C.*"})
    x12 = one(
        coded_encounter(patient=patient, coverage=coverage, billing=billing, rendering=DOCTOR)
    )
    assert_valid(x12)
    nm1 = {s[1]: s for s in segments(x12, "NM1")}
    assert nm1["IL"][3:5] == ["O'CONNOR-SMITH", "ZOE"]
    assert nm1["PR"][3] == "BLUE CROSS BLUE SHIELD ID"
    assert nm1["85"][3] == "SMITH & JONES (FAMILY) PRACTICE, L.L.C."
    assert ["N3", "123 MAIN ST. #4 B", "APT 7"] in segments(x12, "N3")


def test_person_billing_provider_is_valid() -> None:
    solo = DOCTOR.model_copy(update={"tax_id": "987654321", "address": GROUP.address})
    x12 = one(coded_encounter(billing=solo, rendering=solo))
    assert_valid(x12)
    assert [s for s in segments(x12, "NM1") if s[1] == "85"][0][2:5] == [
        "1",
        "O'BRIEN",
        "MARY-JANE",
    ]


def test_void_claim_with_several_lines_and_secondary_diagnoses_is_valid() -> None:
    x12 = one(
        coded_encounter(lines=4, diagnoses=6), frequency="8", original_reference="2026061000123"
    )
    assert_valid(x12)
    assert segments(x12, "CLM")[0][5] == "11:B:8"
    assert ["REF", "F8", "2026061000123"] in segments(x12, "REF")
    assert len(segments(x12, "HI")[0]) == 7 and len(segments(x12, "SV1")) == 4


def test_cached_pyx12_maps_find_exactly_what_pyx12_alone_finds() -> None:
    good = one(coded_encounter(lines=3))
    bad = good.replace("HI*ABK:E119", "HI*ABK:E119*XYZ:1").replace("*125*UN*", "*12X*UN*")
    documents = [good, bad]
    if (SHARED_X12 / "x223-test.txt").is_file():
        documents.append((SHARED_X12 / "x223-test.txt").read_text())
    for document in documents:
        assert validate_x12(document) == validate_x12(document, cache_maps=False)
    assert validate_x12(good) == [] and len(validate_x12(bad)) >= 2


def test_replacement_claim_carries_the_payer_claim_number() -> None:
    x12 = one(coded_encounter(), frequency="7", original_reference="PAYER-ICN-778899")
    assert_valid(x12)
    assert segments(x12, "CLM")[0][5] == "11:B:7"
    assert ["REF", "F8", "PAYER-ICN-778899"] in segments(x12, "REF")
    with pytest.raises(InputError) as err:
        one(coded_encounter(), frequency="8")
    assert err.value.field == "original_reference"


def test_inpatient_visit_carries_admission_date_and_service_facility() -> None:
    hospital = Facility(
        name="St. Mary's Hospital",
        npi=npi("155555555"),
        address=Address(
            line1="500 Hospital Dr", city="Springfield", state="IL", postal_code="627020001"
        ),
    )
    coded = coded_encounter(
        place_of_service="21", facility=hospital, rendering=DOCTOR, admission_date=date(2026, 2, 25)
    )
    x12 = one(coded)
    assert_valid(x12)
    assert ["DTP", "435", "D8", "20260225"] in segments(x12, "DTP")
    assert ["NM1", "77", "2", "ST. MARY'S HOSPITAL", "", "", "", "", "XX", hospital.npi] in (
        segments(x12, "NM1")
    )


def test_line_place_of_service_is_written_only_when_it_differs() -> None:
    coded = coded_encounter(lines=2)
    lines = [coded.lines[0], coded.lines[1].model_copy(update={"place_of_service": "81"})]
    x12 = one(coded.model_copy(update={"lines": lines}))
    assert_valid(x12)
    assert [s[5] for s in segments(x12, "SV1")] == ["", "81"]


def test_twelve_diagnoses_at_most_and_pointers_must_fit() -> None:
    codes = [
        "E11.9",
        "I10",
        "J06.9",
        "E78.5",
        "R05.9",
        "Z00.00",
        "M54.50",
        "K21.9",
        "F41.1",
        "G47.00",
        "N39.0",
        "R51.9",
        "L70.0",
    ]
    coded = coded_encounter()
    many = [
        CodedDiagnosis(code=c, sequence=i + 1, source="ehr", confidence=1.0, billable=True)
        for i, c in enumerate(codes)
    ]
    x12 = one(coded.model_copy(update={"diagnoses": many[:12]}))
    assert_valid(x12)
    assert len(segments(x12, "HI")[0]) == 13  # HI + 12 codes
    with pytest.raises(InputError) as err:  # the 13th is refused, never cut off silently
        one(coded.model_copy(update={"diagnoses": many}))
    assert err.value.field == "diagnoses" and "at most 12" in err.value.reason
    far = coded.lines[0].model_copy(update={"dx_pointers": [13]})
    with pytest.raises(InputError) as err:
        one(coded.model_copy(update={"diagnoses": many[:12], "lines": [far]}))
    assert err.value.field == "lines[0].dx_pointers"


def test_identifiers_with_delimiters_and_bad_npis_are_rejected() -> None:
    with pytest.raises(InputError) as err:
        one(coded_encounter(coverage=COVERAGE.model_copy(update={"member_id": "W12*45"})))
    assert err.value.field == "encounter.coverage.member_id"
    bad_npi = GROUP.model_copy(update={"npi": "1234567890"})
    with pytest.raises(InputError) as err:
        one(coded_encounter(billing=bad_npi))
    assert err.value.field == "encounter.billing_provider.npi"
    with pytest.raises(InputError) as err:
        one(coded_encounter(coverage=COVERAGE.model_copy(update={"plan_type": "XX"})))
    assert err.value.field == "encounter.coverage.plan_type"


# --- batches ---------------------------------------------------------------------------------

CLINIC = Provider(
    npi=npi("144444444"),
    name="Lakeside Urgent Care LLC",
    tax_id="222333444",
    address=Address(line1="9 Lake Rd", city="Peoria", state="IL", postal_code="616021111"),
)
SOLO = Provider(
    npi=npi("166666666"),
    name="Chen, Wei, DO",
    entity="person",
    tax_id="555666777",
    taxonomy="208D00000X",
    address=Address(line1="77 Oak Ave", city="Chicago", state="IL", postal_code="606011234"),
)
PAYERS = [
    COVERAGE,
    Coverage(
        payer_id="00952", payer_name="Medicare Part B IL", plan_type="MB", member_id="1EG4TE5MK73"
    ),
    Coverage(
        payer_id="IL-MCD", payer_name="Illinois Medicaid", plan_type="MC", member_id="987654321"
    ),
]


def batch(n: int = 25) -> list[ClaimInput]:
    """n claims over 3 billing providers, 3 payers and 7 patients (some share a subscriber)."""
    claims = []
    for i in range(n):
        k = i % 7
        patient = PATIENT.model_copy(
            update={
                "patient_id": f"P{k}",
                "first_name": f"Pat{chr(65 + k)}",
                "birth_date": date(1950 + k, 1 + k, 1 + k),
            }
        )
        coded = coded_encounter(
            f"ENC-{i}",
            lines=1 + i % 6,
            diagnoses=1 + i % 6,
            billing=[GROUP, CLINIC, SOLO][i % 3],
            rendering=DOCTOR if i % 2 else None,
            patient=patient,
            coverage=PAYERS[i % 7 % 3],
            start=date(2026, 2, 1) + timedelta(days=i),
        )
        claims.append(ClaimInput(claim_id=claim_id_for(f"ENC-{i}"), coded=coded))
    return claims


def hierarchy(x12: str) -> list[tuple[str, str, str, str]]:
    return [tuple(s[1:5]) for s in segments(x12, "HL")]  # type: ignore[misc]


def test_batch_of_25_claims_nests_hl_loops_and_is_valid() -> None:
    claims = batch(25)
    x12 = build_837p(
        claims,
        sender_id="CLAIMFLOW",
        receiver_id="CLEARHOUSE01",
        control_number=42,
        created=CREATED,
    )
    assert_valid(x12)
    assert len(segments(x12, "CLM")) == 25
    assert {s[1] for s in segments(x12, "CLM")} == {c.claim_id for c in claims}
    hls = hierarchy(x12)
    providers = [h for h in hls if h[2] == "20"]
    subscribers = [h for h in hls if h[2] == "22"]
    assert len(providers) == 3
    assert all(h[1] == "" and h[3] == "1" for h in providers)
    provider_ids = {h[0] for h in providers}
    assert all(h[1] in provider_ids and h[3] == "0" for h in subscribers)
    assert [int(h[0]) for h in hls] == list(range(1, len(hls) + 1))
    # claims of one patient with one payer at one provider share one subscriber loop:
    # i and i + 21 coincide on provider (i % 3), patient (i % 7) and payer, for i = 0..3.
    assert len(subscribers) == 21
    body = x12.splitlines()
    first_claim = body.index(next(s for s in body if s.startswith(f"CLM*{claims[0].claim_id}*")))
    twin = body.index(next(s for s in body if s.startswith(f"CLM*{claims[21].claim_id}*")))
    assert not any(s.startswith("HL*") for s in body[first_claim:twin])
    assert len(segments(x12, "ST")) == 1


def test_large_batches_split_into_several_transactions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("services.claims.x12_837_common.MAX_CLAIMS_PER_TRANSACTION", 10)
    x12 = build_837p(
        batch(25),
        sender_id="CLAIMFLOW",
        receiver_id="CLEARHOUSE01",
        control_number=43,
        created=CREATED,
    )
    assert_valid(x12)
    assert [s[2] for s in segments(x12, "ST")] == ["0001", "0002", "0003"]
    assert segments(x12, "GE")[0][1] == "3"
    assert len(segments(x12, "CLM")) == 25


def test_an_error_in_a_batch_names_the_claim() -> None:
    claims = batch(3)
    bad_line = claims[1].coded.lines[0].model_copy(update={"code": "9921"})
    claims[1] = ClaimInput(
        claim_id=claims[1].claim_id, coded=claims[1].coded.model_copy(update={"lines": [bad_line]})
    )
    with pytest.raises(InputError) as err:
        build_837p(
            claims,
            sender_id="CLAIMFLOW",
            receiver_id="CLEARHOUSE01",
            control_number=44,
            created=CREATED,
        )
    assert err.value.field == f"claims[{claims[1].claim_id}].lines[0].code"


# --- build_claim -----------------------------------------------------------------------------


class Schedule:
    """A fee schedule stub: fixed prices per code, times units."""

    def __init__(self, prices: dict[str, str]) -> None:
        self.prices = {k: Decimal(v) for k, v in prices.items()}
        self.calls: list[tuple[str, list[str], float, str | None, str | None, bool]] = []

    def allowed(
        self,
        code: str,
        modifiers: list[str],
        units: float,
        state: str | None,
        postal_code: str | None,
        *,
        facility: bool = False,
    ) -> Decimal | None:
        self.calls.append((code, modifiers, units, state, postal_code, facility))
        price = self.prices.get(code)
        return None if price is None else price * Decimal(str(units))


def test_build_claim_is_deterministic_and_valid() -> None:
    record = validated(coded_encounter("ENC-77", lines=3, diagnoses=3, rendering=DOCTOR))
    first = build_claim(record, sender_id="CLAIMFLOW", receiver_id="CLEARHOUSE01")
    again = build_claim(record, sender_id="CLAIMFLOW", receiver_id="CLEARHOUSE01")
    assert first == again
    assert first.x12 == again.x12
    assert_valid(first.x12)
    assert first.claim_id == claim_id_for("ENC-77")
    assert first.claim_id.startswith("CF") and len(first.claim_id) == 18
    assert first.claim_id.isalnum()
    assert first.event_id == event_id(first.claim_id, "claims", "v1")
    assert len(first.interchange_control_number) == 9
    assert int(first.interchange_control_number) == interchange_control_number(first.claim_id)
    assert f"*{first.interchange_control_number}*0*P*:~" in first.x12
    assert segments(first.x12, "CLM")[0][1] == first.claim_id
    assert first.total_charge == Decimal("172.75")
    assert (first.expected_reimbursement, first.expected_basis) == (None, "no_contract")
    assert first.line_count == 3
    assert first.submitted_at == record.validated_at
    assert (first.payer_id, first.payer_name) == ("87726", "UnitedHealthcare")
    assert SubmittedClaim.model_validate(first.model_dump()) == first


def test_different_encounters_get_different_ids() -> None:
    ids = {claim_id_for(f"ENC-{i}") for i in range(1000)}
    assert len(ids) == 1000
    icns = {interchange_control_number(c) for c in ids}
    assert all(1 <= n <= 999_999_999 for n in icns)


def test_warnings_outcome_is_billed_and_rejected_is_not() -> None:
    coded = coded_encounter()
    claim = build_claim(validated(coded, "warnings"), sender_id="CLAIMFLOW", receiver_id="CH01")
    assert_valid(claim.x12)
    with pytest.raises(InputError) as err:
        build_claim(validated(coded, "rejected"), sender_id="CLAIMFLOW", receiver_id="CH01")
    assert err.value.field == "outcome"


def test_hospital_settings_bill_on_an_837i_and_name_what_is_missing() -> None:
    coded = coded_encounter()
    outpatient = coded.model_copy(
        update={"encounter": coded.encounter.model_copy(update={"setting": "outpatient"})}
    )
    # No attending physician (nor a person who rendered the care): the 837I cannot be written.
    with pytest.raises(InputError) as err:
        build_claim(validated(outpatient), sender_id="CLAIMFLOW", receiver_id="CH01")
    assert err.value.field == "coded.encounter.attending_provider"
    seen = outpatient.model_copy(
        update={"encounter": outpatient.encounter.model_copy(update={"rendering_provider": DOCTOR})}
    )
    # The 837P lines carry no revenue code, which every 837I line needs.
    with pytest.raises(InputError) as err:
        build_claim(validated(seen), sender_id="CLAIMFLOW", receiver_id="CH01")
    assert err.value.field == "coded.lines[0].revenue_code"
    lines = [line.model_copy(update={"revenue_code": "0510"}) for line in seen.lines]
    claim = build_claim(
        validated(seen.model_copy(update={"lines": lines})),
        sender_id="CLAIMFLOW",
        receiver_id="CH01",
    )
    assert claim.claim_type == "institutional"
    assert "005010X223A2" in claim.x12 and segments(claim.x12, "CLM")[0][5] == "13:A:1"
    assert_valid(claim.x12)


def test_expected_reimbursement_from_the_fee_schedule() -> None:
    coded = coded_encounter(lines=5, diagnoses=5, coverage=MEDICARE_B)
    schedule = Schedule(
        {"99213": "92.47", "36415": "3", "85025": "10.5", "93000": "16.8", "80053": "11"}
    )
    claim = build_claim(
        validated(coded), sender_id="CLAIMFLOW", receiver_id="CH01", fee_schedule=schedule
    )
    assert claim.expected_reimbursement == Decimal("144.77")  # 80053 has 2 units
    assert claim.expected_basis == "fee_schedule"
    assert schedule.calls[0] == ("99213", ["25"], 1, "IL", "627011234", False)


def test_hospital_visits_are_priced_at_the_facility_rate_where_they_happened() -> None:
    hospital = Facility(
        name="General Hospital",
        address=Address(line1="1 Care Way", city="Austin", state="TX", postal_code="787010001"),
    )
    coded = coded_encounter(place_of_service="21", facility=hospital, coverage=MEDICARE_B)
    schedule = Schedule({"99213": "92.47"})
    claim = build_claim(
        validated(coded), sender_id="CLAIMFLOW", receiver_id="CH01", fee_schedule=schedule
    )
    assert claim.expected_reimbursement == Decimal("92.47")
    assert schedule.calls == [("99213", ["25"], 1, "TX", "787010001", True)]


def test_an_unpriced_line_leaves_expected_unknown() -> None:
    coded = coded_encounter(lines=2, coverage=MEDICARE_B)
    claim = build_claim(
        validated(coded),
        sender_id="CLAIMFLOW",
        receiver_id="CH01",
        fee_schedule=Schedule({"99213": "92.47"}),
    )
    assert claim.expected_reimbursement is None
    assert claim.expected_basis == "fee_schedule_incomplete"


def test_billing_and_service_locations_follow_the_guide_beyond_pyx12() -> None:
    five_digit = GROUP.model_copy(update={"address": PATIENT.address})
    with pytest.raises(InputError) as err:
        one(coded_encounter(billing=five_digit))
    assert err.value.field == "encounter.billing_provider.address.postal_code"
    po_box = GROUP.address.model_copy(update={"line1": "P.O. Box 1234"})  # type: ignore[union-attr]
    with pytest.raises(InputError) as err:
        one(coded_encounter(billing=GROUP.model_copy(update={"address": po_box})))
    assert err.value.field == "encounter.billing_provider.address.line1"
    no_ein = GROUP.model_copy(update={"tax_id": None})
    with pytest.raises(InputError) as err:
        one(coded_encounter(billing=no_ein))
    assert err.value.field == "encounter.billing_provider.tax_id"


# --- dependents: subscriber in 2000B/2010BA, patient in 2000C/2010CA ----------------------

MOTHER = Subscriber(
    last_name="Doe",
    first_name="Jane",
    birth_date=date(1972, 3, 4),
    sex="F",
    address=Address(line1="12 Elm Street", city="Springfield", state="IL", postal_code="62704"),
)
CHILD = PATIENT.model_copy(
    update={"patient_id": "P-CHILD", "first_name": "Jimmy", "birth_date": date(2015, 6, 1)}
)


def family_coverage(relationship: str, subscriber: Subscriber | None = MOTHER) -> Coverage:
    return COVERAGE.model_copy(update={"relationship": relationship, "subscriber": subscriber})


def hl_loops(x12: str) -> list[tuple[list[str], list[list[str]]]]:
    """Each HL segment with the segments up to the next HL (or SE)."""
    loops: list[tuple[list[str], list[list[str]]]] = []
    for seg in (s.split("*") for s in x12.replace("\n", "").split("~") if s):
        if seg[0] == "HL":
            loops.append((seg, []))
        elif seg[0] == "SE":
            break
        elif loops:
            loops[-1][1].append(seg)
    return loops


def ids(segs: list[list[str]]) -> list[str]:
    return [s[0] if s[0] != "NM1" else f"NM1*{s[1]}" for s in segs]


def assert_hierarchy_follows_the_guide(x12: str) -> None:
    """What pyx12 does not check: HL04, SBR02 and where claims sit, per 005010X222A1."""
    loops = hl_loops(x12)
    level = {hl[1]: hl[3] for hl, _ in loops}
    for i, (hl, segs) in enumerate(loops):
        following = loops[i + 1][0] if i + 1 < len(loops) else None
        if hl[3] == "22":
            has_patients = following is not None and following[3] == "23"
            assert hl[4] == ("1" if has_patients else "0"), hl
            sbr = next(s for s in segs if s[0] == "SBR")
            assert sbr[2] == ("" if has_patients else "18"), (hl, sbr)
            # Claims of a dependent never hang off the subscriber level.
            assert ("CLM" in ids(segs)) is not has_patients, hl
        if hl[3] == "23":
            assert level[hl[2]] == "22" and hl[4] == "0", hl
            assert ids(segs)[:2] == ["PAT", "NM1*QC"]
            assert "CLM" in ids(segs)


def test_a_child_under_a_parent_with_known_address_and_birth_date() -> None:
    x12 = one(coded_encounter(patient=CHILD, coverage=family_coverage("19")))
    assert_valid(x12)
    assert_hierarchy_follows_the_guide(x12)
    assert hierarchy(x12) == [("1", "", "20", "1"), ("2", "1", "22", "1"), ("3", "2", "23", "0")]
    (_, provider), (_, subscriber), (_, patient) = hl_loops(x12)
    assert ids(subscriber) == ["SBR", "NM1*IL", "N3", "N4", "DMG", "NM1*PR"]
    assert subscriber[0] == ["SBR", "P", "", "GRP0042", "", "", "", "", "", "CI"]
    assert subscriber[1] == ["NM1", "IL", "1", "DOE", "JANE", "", "", "", "MI", "W123456789"]
    assert subscriber[4] == ["DMG", "D8", "19720304", "F"]
    assert ids(patient)[:6] == ["PAT", "NM1*QC", "N3", "N4", "DMG", "CLM"]
    assert patient[0] == ["PAT", "19"]
    assert patient[1] == ["NM1", "QC", "1", "DOE", "JIMMY"]  # no id: the guide forbids one
    assert patient[4] == ["DMG", "D8", "20150601", "M"]


def test_a_spouse_whose_subscriber_has_no_address_or_birth_date() -> None:
    husband = Subscriber(last_name="Doe", first_name="John")
    wife = PATIENT.model_copy(update={"first_name": "Jane", "sex": "F"})
    x12 = one(coded_encounter(patient=wife, coverage=family_coverage("01", husband)))
    assert_valid(x12)
    assert_hierarchy_follows_the_guide(x12)
    _, (_, subscriber), (_, patient) = hl_loops(x12)
    assert ids(subscriber) == ["SBR", "NM1*IL", "NM1*PR"]  # N3/N4/DMG are situational here
    assert subscriber[1][3:5] == ["DOE", "JOHN"]
    assert patient[0] == ["PAT", "01"]
    assert ids(patient)[1:5] == ["NM1*QC", "N3", "N4", "DMG"]  # required for the patient
    assert patient[1][3:5] == ["DOE", "JANE"]


@pytest.mark.parametrize("relationship", ["01", "19", "20", "21", "39", "40", "53", "G8"])
def test_every_relationship_the_guide_allows_is_valid(relationship: str) -> None:
    x12 = one(coded_encounter(patient=CHILD, coverage=family_coverage(relationship)))
    assert_valid(x12)
    assert segments(x12, "PAT") == [["PAT", relationship]]


def test_a_mixed_batch_shares_subscriber_loops_between_dependents() -> None:
    jane = PATIENT.model_copy(
        update={
            "patient_id": "P-JANE",
            "first_name": "Jane",
            "birth_date": date(1972, 3, 4),
            "sex": "F",
        }
    )
    spouse = Subscriber(last_name="Roe", first_name="Richard")
    roe = PATIENT.model_copy(
        update={"patient_id": "P-ROE", "last_name": "Roe", "first_name": "Ann"}
    )
    roe_plan = family_coverage("01", spouse).model_copy(update={"member_id": "W555000111"})
    medicaid = PAYERS[2].model_copy(update={"relationship": "19", "subscriber": MOTHER})
    sister = CHILD.model_copy(update={"patient_id": "P-SIS", "first_name": "Sally", "sex": "F"})
    cases = [
        ("self-1", jane, COVERAGE),  # the mother's own visits: her own 2000B, SBR02 18
        ("jimmy-1", CHILD, family_coverage("19")),
        ("roe-1", roe, roe_plan),
        ("sally-1", sister, family_coverage("19")),
        ("jimmy-2", CHILD, family_coverage("19")),  # same 2000C as jimmy-1
        ("self-2", jane, COVERAGE),
        ("jimmy-mc", CHILD, medicaid),  # same subscriber, other payer: its own 2000B
        ("roe-2", roe, roe_plan),
    ]
    claims = [
        ClaimInput(
            claim_id=claim_id_for(name),
            coded=coded_encounter(name, lines=2, patient=patient, coverage=coverage),
        )
        for name, patient, coverage in cases
    ]
    x12 = build_837p(
        claims,
        sender_id="CLAIMFLOW",
        receiver_id="CLEARHOUSE01",
        control_number=45,
        created=CREATED,
    )
    assert_valid(x12)
    assert_hierarchy_follows_the_guide(x12)
    levels = [h[2] for h in hierarchy(x12)]
    #          provider, self, Doe/UHC (Jimmy, Sally), Roe/UHC (Ann), Doe/Medicaid (Jimmy)
    assert levels == ["20", "22", "22", "23", "23", "22", "23", "22", "23"]
    assert len(segments(x12, "CLM")) == len(cases)
    # Which patient (2000C name, or the subscriber for self) each claim is billed for.
    billed_for: dict[str, tuple[str, str]] = {}
    for hl, segs in hl_loops(x12):
        person = next((s for s in segs if s[0] == "NM1" and s[1] in {"IL", "QC"}), None)
        for seg in segs:
            if seg[0] == "CLM":
                assert person is not None
                billed_for[seg[1]] = (hl[3], f"{person[4]} {person[3]}")
    expected = {
        "self-1": ("22", "JANE DOE"),
        "self-2": ("22", "JANE DOE"),
        "jimmy-1": ("23", "JIMMY DOE"),
        "jimmy-2": ("23", "JIMMY DOE"),
        "sally-1": ("23", "SALLY DOE"),
        "roe-1": ("23", "ANN ROE"),
        "roe-2": ("23", "ANN ROE"),
        "jimmy-mc": ("23", "JIMMY DOE"),
    }
    assert billed_for == {claim_id_for(k): v for k, v in expected.items()}
    subscribers = [s[3:5] for s in segments(x12, "NM1") if s[1] == "IL"]
    assert subscribers == [["DOE", "JANE"], ["DOE", "JANE"], ["ROE", "RICHARD"], ["DOE", "JANE"]]


def test_a_dependent_without_a_subscriber_is_refused_with_the_reason() -> None:
    orphan = coded_encounter(patient=CHILD, coverage=family_coverage("19", None))
    with pytest.raises(InputError) as err:
        one(orphan)
    assert err.value.field == "encounter.coverage.subscriber"
    assert "required when the patient is not the subscriber (relationship 19)" in err.value.reason
    with pytest.raises(InputError) as err:
        build_claim(validated(orphan), sender_id="CLAIMFLOW", receiver_id="CH01")
    assert err.value.field == "coded.encounter.coverage.subscriber"
    claims = [*batch(2), ClaimInput(claim_id="CFORPHAN", coded=orphan)]
    with pytest.raises(InputError) as err:
        build_837p(
            claims, sender_id="CLAIMFLOW", receiver_id="CH01", control_number=46, created=CREATED
        )
    assert err.value.field == "claims[CFORPHAN].encounter.coverage.subscriber"


@pytest.mark.parametrize("relationship", ["32", "02", ""])
def test_a_relationship_the_837p_cannot_carry_is_refused(relationship: str) -> None:
    with pytest.raises(InputError) as err:
        one(coded_encounter(patient=CHILD, coverage=family_coverage(relationship)))
    assert err.value.field == "encounter.coverage.relationship"


# --- property: any text, any amount ---------------------------------------------------------

names = st.text(min_size=1, max_size=70).filter(lambda s: text(s, 60) != "")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    last=names,
    first=names,
    payer=names,
    street=names,
    doctor=names,
    charge=st.decimals(min_value=0, max_value=Decimal("99999.99"), places=2),
    units=st.floats(min_value=0.001, max_value=999, allow_nan=False, allow_infinity=False),
)
def test_any_names_and_amounts_make_a_valid_837(
    last: str, first: str, payer: str, street: str, doctor: str, charge: Decimal, units: float
) -> None:
    patient = PATIENT.model_copy(
        update={
            "last_name": last,
            "first_name": first,
            "address": PATIENT.address.model_copy(update={"line1": street}),
        }
    )
    coverage = COVERAGE.model_copy(update={"payer_name": payer})
    rendering = DOCTOR.model_copy(update={"name": doctor})
    coded = coded_encounter(patient=patient, coverage=coverage, rendering=rendering, lines=2)
    line = coded.lines[1].model_copy(update={"charge": charge, "units": units})
    x12 = one(coded.model_copy(update={"lines": [coded.lines[0], line]}))
    assert_valid(x12)
    assert segments(x12, "CLM")[0][2] == amount(Decimal("125") + charge)


def test_build_claim_errors_name_the_field_in_the_validated_record() -> None:
    coded = coded_encounter(billing=GROUP.model_copy(update={"npi": "1234567890"}))
    with pytest.raises(InputError) as err:
        build_claim(validated(coded), sender_id="CLAIMFLOW", receiver_id="CH01")
    assert err.value.field == "coded.encounter.billing_provider.npi"
    with pytest.raises(InputError) as err:
        build_claim(validated(coded_encounter()), sender_id="CLAIM*FLOW", receiver_id="CH01")
    assert err.value.field == "sender_id"
