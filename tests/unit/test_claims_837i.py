"""837I serializer and institutional claims, judged by pyx12: every file must have 0 errors."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from factories import (
    BILLING_NPI,
    EIN,
    FACILITY_NPI,
    RENDERING_NPI,
    address,
    coded,
    encounter,
    procedure,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import InputError
from pipeline.models import (
    CodedDiagnosis,
    CodedEncounter,
    Coverage,
    Drg,
    Facility,
    Provider,
    ServiceLine,
    Subscriber,
    ValidatedEncounter,
    event_id,
)
from services.claims.domain import (
    DEFAULT_DRG_BASE_RATE,
    build_claim,
    plan_claim,
    write_interchange,
)
from services.claims.x12_837_common import ClaimError, ClaimInput
from services.claims.x12_837i import build_837i, type_of_bill
from services.x12.validate import validate_x12

ADMITTED = date(2026, 2, 27)
DISCHARGED = date(2026, 3, 2)
CREATED = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)
HOSPITAL = Facility(
    name="Princeton Baptist Medical Center",
    npi=FACILITY_NPI,
    address=address(line1="701 Princeton Ave SW", postal_code="352112303"),
)
ATTENDING = Provider(
    npi=RENDERING_NPI, name="Okafor, Adaeze", entity="person", taxonomy="207RH0003X"
)
SURGEON = Provider(npi="1234567893", name="Dr. Luis Ortega, MD", entity="person")
# Appendicitis with diabetes and hypertension; 35 secondary codes are cut at the guide's 24.
DX = ["K3580", "E119", "I10", "E785", "Z794", "K219", "F17210", "J449", "N183", "D649"]
DX += ["E039", "G4733", "M1990", "Z87891", "R739", "E669", "Z6833", "I2510", "Z7982"]
DX += ["Z952", "E1165", "E1122", "N179", "E871", "D696", "R6520", "A419"]


def dx(code: str, sequence: int, poa: str | None = "Y") -> CodedDiagnosis:
    return CodedDiagnosis(
        code=code, sequence=sequence, source="ehr", confidence=1.0, billable=True, poa=poa
    )


def rev_line(number: int, revenue: str, charge: str, code: str = "", **more: Any) -> ServiceLine:
    """An institutional line: a revenue code, and a HCPCS code when the service has one."""
    fields: dict[str, Any] = {
        "line_number": number,
        "code": code,
        "code_system": "HCPCS" if code[:1].isalpha() or not code else "CPT",
        "units": 1.0,
        "charge": Decimal(charge),
        "dx_pointers": [1],
        "service_date": ADMITTED,
        "revenue_code": revenue,
    }
    return ServiceLine(**(fields | more))


MEDICARE_A = Coverage(
    payer_id="04411", payer_name="Medicare Part A", plan_type="MA", member_id="1EG4TE5MK73"
)


def inpatient(encounter_id: str = "ENC-IP-1", **changes: Any) -> CodedEncounter:
    """An appendectomy stay: PCS procedures, MS-DRG 343, room and board, OR, lab."""
    stay: dict[str, Any] = {
        "encounter_id": encounter_id,
        "event_id": event_id(encounter_id, "intake", "v1"),
        "setting": "inpatient",
        "place_of_service": "21",
        "service_start": ADMITTED,
        "service_end": DISCHARGED,
        "admission_date": ADMITTED,
        "admission_type": "1",
        "admission_source": "7",
        "discharge_status": "01",
        "attending_provider": ATTENDING,
        "rendering_provider": SURGEON,
        "operating_provider": SURGEON,
        "facility": HOSPITAL,
        "coverage": MEDICARE_A,  # MS-DRG pricing is Medicare's
    }
    enc = encounter(**(stay | changes.pop("encounter", {})))
    fields: dict[str, Any] = {
        "diagnoses": [dx(c, i + 1) for i, c in enumerate(DX[:4])],
        "pcs_procedures": [procedure("0DTJ4ZZ", ADMITTED), procedure("3E0234Z", ADMITTED)],
        "drg": Drg(code="343", weight=1.0284, grouper_version="MS-DRG V43.0"),
        "lines": [
            rev_line(1, "0120", "7200.00", units=3.0),
            rev_line(2, "0360", "5200.00"),
            rev_line(3, "0250", "310.40"),
            rev_line(4, "0300", "45.00", "85025", service_date=DISCHARGED),
        ],
    }
    return coded(enc, **(fields | changes))


def outpatient(encounter_id: str = "ENC-OP-1", **changes: Any) -> CodedEncounter:
    """An emergency department visit: E/M with modifier 25, CT, lab, all with HCPCS codes."""
    visit: dict[str, Any] = {
        "encounter_id": encounter_id,
        "event_id": event_id(encounter_id, "intake", "v1"),
        "setting": "outpatient",
        "place_of_service": "23",
        "attending_provider": ATTENDING,
        "facility": HOSPITAL,
    }
    enc = encounter(**(visit | changes.pop("encounter", {})))
    fields: dict[str, Any] = {
        "diagnoses": [dx("R1031", 1, None), dx("E119", 2, None)],
        "lines": [
            rev_line(1, "0450", "1250.00", "99284", modifiers=["25"]),
            rev_line(2, "0350", "2100.00", "74177"),
            rev_line(3, "300", "45.00", "85025"),
        ],
    }
    return coded(enc, **(fields | changes))


def validated(c: CodedEncounter) -> ValidatedEncounter:
    return ValidatedEncounter(
        event_id=event_id(c.encounter_id, "validation", "v1"),
        encounter_id=c.encounter_id,
        outcome="clean",
        edits=[],
        rule_pack_version="2026.1",
        coded=c,
        validated_at=CREATED,
    )


def one(c: CodedEncounter, claim_id: str = "CF00000001", **kwargs: Any) -> str:
    return build_837i(
        [ClaimInput(claim_id, c, **kwargs)],
        sender_id="CLAIMFLOW",
        receiver_id="PAYER01",
        control_number=4201,
        created=CREATED,
    )


def segments(x12: str, seg_id: str) -> list[list[str]]:
    return [s.split("*") for s in x12.replace("\n", "").split("~") if s.split("*")[0] == seg_id]


def assert_valid(x12: str) -> None:
    errors = validate_x12(x12)
    assert errors == [], "\n".join(errors) + "\n\n" + x12


# --- inpatient --------------------------------------------------------------------------------


def test_inpatient_claim_carries_bill_type_cl1_pcs_drg_and_poa() -> None:
    x12 = one(inpatient())
    assert_valid(x12)
    assert "GS*HC*CLAIMFLOW*PAYER01*20260303*1000*4201*X*005010X223A2~" in x12
    (clm,) = segments(x12, "CLM")
    assert clm[1] == "CF00000001" and clm[2] == "12755.4" and clm[5] == "11:A:1"
    assert ["DTP", "434", "RD8", "20260227-20260302"] in segments(x12, "DTP")
    assert ["DTP", "435", "D8", "20260227"] in segments(x12, "DTP")
    assert segments(x12, "CL1") == [["CL1", "1", "7", "01"]]
    his = segments(x12, "HI")
    assert his[0] == ["HI", "ABK:K3580:::::::Y"]
    assert his[1] == ["HI", "ABJ:K3580"]  # admitting: the principal (documented assumption)
    assert his[2] == ["HI", "DR:343"]
    assert his[3] == ["HI", "ABF:E119:::::::Y", "ABF:I10:::::::Y", "ABF:E785:::::::Y"]
    assert his[4] == ["HI", "BBR:0DTJ4ZZ:D8:20260227"]
    assert his[5] == ["HI", "BBQ:3E0234Z:D8:20260227"]


def test_the_facility_bills_and_the_attending_and_surgeon_are_named() -> None:
    x12 = one(inpatient())
    nm1 = {s[1]: s for s in segments(x12, "NM1")}
    assert nm1["85"][2:4] == ["2", "PRINCETON BAPTIST MEDICAL CENTER"]
    assert nm1["85"][-1] == FACILITY_NPI
    assert segments(x12, "REF")[0] == ["REF", "EI", EIN]  # the billing provider's EIN
    assert nm1["71"][3:5] == ["OKAFOR", "ADAEZE"] and nm1["71"][-1] == RENDERING_NPI
    assert ["PRV", "AT", "PXC", "207RH0003X"] in segments(x12, "PRV")
    assert nm1["72"][3:5] == ["ORTEGA", "LUIS"]  # 2310B: the surgeon of 0DTJ4ZZ
    assert nm1["82"][3:5] == ["ORTEGA", "LUIS"]  # 2310D: someone other than the attending


def test_lines_carry_revenue_codes_and_hcpcs_only_when_there_is_one() -> None:
    x12 = one(inpatient())
    assert segments(x12, "SV2") == [
        ["SV2", "0120", "", "7200", "DA", "3"],  # room and board: days
        ["SV2", "0360", "", "5200", "UN", "1"],
        ["SV2", "0250", "", "310.4", "UN", "1"],
        ["SV2", "0300", "HC:85025", "45", "UN", "1"],
    ]
    assert [s[2] for s in segments(x12, "REF") if s[1] == "6R"] == [
        f"CF00000001L{n}" for n in (1, 2, 3, 4)
    ]


def test_many_secondary_diagnoses_and_procedures_split_across_hi_segments() -> None:
    codes = [dx(c, i + 1, "N" if i % 3 else "Y") for i, c in enumerate(DX[:25])]
    procs = [procedure(p, ADMITTED) for p in ("0DTJ4ZZ", "3E0234Z", "5A1955Z", "0BH17EZ")]
    x12 = one(inpatient(diagnoses=codes, pcs_procedures=procs * 4))
    assert_valid(x12)
    others = [s for s in segments(x12, "HI") if s[1].startswith("ABF")]
    assert [len(s) - 1 for s in others] == [12, 12]  # 24 secondary codes at most
    assert others[0][1] == "ABF:E119:::::::N" and others[0][3] == "ABF:E785:::::::Y"
    procedures = [s for s in segments(x12, "HI") if s[1].startswith(("BBR", "BBQ"))]
    assert [len(s) - 1 for s in procedures] == [1, 12, 3]


def test_more_diagnoses_than_the_837i_carries_are_refused_not_cut() -> None:
    codes = [dx(c, i + 1) for i, c in enumerate(DX)]  # 27: one principal and 26 others
    with pytest.raises(InputError, match="carries 25 diagnoses, not 27"):
        one(inpatient(diagnoses=codes))


def test_outpatient_claim_is_bill_type_013x_without_inpatient_segments() -> None:
    x12 = one(outpatient())
    assert_valid(x12)
    (clm,) = segments(x12, "CLM")
    assert clm[5] == "13:A:1"
    assert segments(x12, "CL1") == [["CL1", "", "", "01"]]  # patient status only
    assert not [s for s in segments(x12, "DTP") if s[1] == "435"]
    his = segments(x12, "HI")
    assert his[0] == ["HI", "ABK:R1031"]  # no POA, no ABJ
    assert his[1] == ["HI", "APR:R1031"]  # an ED visit: the reason for the visit
    assert his[2] == ["HI", "ABF:E119"]
    assert segments(x12, "SV2")[0] == ["SV2", "0450", "HC:99284:25", "1250", "UN", "1"]
    assert segments(x12, "SV2")[2][1] == "0300"  # a three-digit revenue code gets its zero


@pytest.mark.parametrize(("frequency", "bill"), [("7", "0117"), ("8", "0118")])
def test_replacement_and_void_carry_the_bill_type_and_the_payer_claim_number(
    frequency: str, bill: str
) -> None:
    x12 = one(inpatient(), frequency=frequency, original_reference="2026061000123")
    assert_valid(x12)
    assert type_of_bill("inpatient", frequency) == bill
    assert segments(x12, "CLM")[0][5] == f"11:A:{frequency}"
    assert ["REF", "F8", "2026061000123"] in segments(x12, "REF")
    with pytest.raises(InputError) as err:
        one(inpatient(), frequency=frequency)
    assert err.value.field == "original_reference"


def test_a_dependent_on_a_hospital_claim_gets_a_patient_loop() -> None:
    child = Coverage(
        payer_id="00510",
        payer_name="Blue Cross and Blue Shield of Alabama",
        plan_type="BL",
        member_id="ZGH884512093",
        relationship="19",
        subscriber=Subscriber(last_name="Whitfield", first_name="Dana", address=address()),
    )
    x12 = one(outpatient(encounter={"coverage": child}))
    assert_valid(x12)
    assert segments(x12, "PAT") == [["PAT", "19"]]
    assert [s[3] for s in segments(x12, "HL")] == ["20", "22", "23"]


def test_a_batch_of_inpatient_and_outpatient_claims_is_one_valid_interchange() -> None:
    claims = [ClaimInput(f"CF{i:08d}", inpatient(f"IP-{i}")) for i in range(3)] + [
        ClaimInput(f"CF{i:08d}", outpatient(f"OP-{i}")) for i in range(3, 6)
    ]
    x12 = build_837i(
        claims, sender_id="CLAIMFLOW", receiver_id="PAYER01", control_number=9, created=CREATED
    )
    assert_valid(x12)
    assert [s[1] for s in segments(x12, "CLM")] == [c.claim_id for c in claims]
    assert len(segments(x12, "NM1")) >= 6 and len(segments(x12, "ST")) == 1


# --- what the 837I refuses, and where -----------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"encounter": {"discharge_status": None}}, "encounter.discharge_status"),
        ({"encounter": {"admission_type": None}}, "encounter.admission_type"),
        (
            {"encounter": {"attending_provider": None, "rendering_provider": None}},
            "encounter.attending_provider",
        ),
        ({"pcs_procedures": [procedure("0DTJ4ZO", ADMITTED)]}, "pcs_procedures[0].code"),
        ({"lines": [rev_line(1, "", "10.00")]}, "lines[0].revenue_code"),
        ({"drg": Drg(code="34A")}, "drg.code"),
    ],
)
def test_missing_institutional_data_is_refused_with_the_field(
    changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(InputError) as err:
        one(inpatient(**changes))
    assert err.value.field == field


def test_a_person_cannot_bill_an_institutional_claim_without_a_facility() -> None:
    doctor = Provider(
        npi=BILLING_NPI, name="Okafor, Adaeze", entity="person", tax_id=EIN, address=address()
    )
    with pytest.raises(InputError) as err:
        one(outpatient(encounter={"billing_provider": doctor, "facility": None}))
    assert err.value.field == "encounter.facility"


def test_a_bad_claim_in_a_batch_is_named_so_the_rest_can_be_sent() -> None:
    good = ClaimInput("CFGOOD0001", inpatient("IP-GOOD"))
    bad = ClaimInput("CFBAD00001", inpatient("IP-BAD", encounter={"discharge_status": None}))
    with pytest.raises(ClaimError) as err:
        build_837i(
            [good, bad],
            sender_id="CLAIMFLOW",
            receiver_id="PAYER01",
            control_number=10,
            created=CREATED,
        )
    assert err.value.claim_id == "CFBAD00001"
    assert err.value.field == "claims[CFBAD00001].encounter.discharge_status"


# --- claims built from validated encounters ------------------------------------------------------


def test_build_claim_chooses_the_837i_and_prices_the_drg() -> None:
    claim = build_claim(validated(inpatient()), sender_id="CLAIMFLOW", receiver_id="PAYER01")
    assert claim.claim_type == "institutional"
    assert claim.expected_reimbursement == Decimal("7483.42")  # 1.0284 x 7276.76
    assert claim.expected_basis == f"ms_drg 343 weight 1.0284 x base {DEFAULT_DRG_BASE_RATE}"
    assert claim.rule_pack_version == "2026.1"
    assert_valid(claim.x12)


def test_without_a_drg_weight_the_expected_amount_is_unknown_and_says_why() -> None:
    no_weight = plan_claim(validated(inpatient(drg=Drg(code="343"))))
    assert (no_weight.expected, no_weight.expected_basis) == (None, "drg_weight_unknown")
    no_drg = plan_claim(validated(inpatient(drg=None)))
    assert (no_drg.expected, no_drg.expected_basis) == (None, "drg_missing")
    op = plan_claim(validated(outpatient()))
    assert op.expected is None and op.expected_basis == "no_contract"  # a commercial payer
    medicare = outpatient(encounter={"coverage": MEDICARE_A})
    op = plan_claim(validated(medicare))
    assert op.expected is None and op.expected_basis == "outpatient_facility_rates_not_loaded"
    rate = plan_claim(validated(inpatient()), drg_base_rate=Decimal("10000"))
    assert rate.expected == Decimal("10284.00")


def test_an_interchange_carries_one_claim_type() -> None:
    ip = plan_claim(validated(inpatient()))
    prof = plan_claim(validated(coded()))
    with pytest.raises(InputError, match="one type"):
        write_interchange([ip, prof], sender_id="CLAIMFLOW", receiver_id="P1", control_number=1)
    x12 = write_interchange([ip], sender_id="CLAIMFLOW", receiver_id="P1", control_number=1)
    assert "ISA*00*" in x12 and "*260303*1000*" in x12  # created from the record, not the clock


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.text(min_size=1, max_size=40).filter(lambda s: any(c.isalpha() for c in s)),
    charges=st.lists(st.decimals(min_value=0, max_value=99999, places=2), min_size=1, max_size=30),
    units=st.sampled_from([1.0, 2.0, 0.5, 12.0]),
    n_dx=st.integers(min_value=1, max_value=25),
    n_pcs=st.integers(min_value=0, max_value=25),
    setting=st.sampled_from(["inpatient", "outpatient"]),
    frequency=st.sampled_from(["1", "7", "8"]),
)
def test_any_hospital_claim_makes_a_valid_837i(
    name: str,
    charges: list[Decimal],
    units: float,
    n_dx: int,
    n_pcs: int,
    setting: str,
    frequency: str,
) -> None:
    lines = [
        rev_line(
            i + 1, ("0120", "0250", "0300", "0450")[i % 4], str(c), ("", "85025")[i % 2]
        ).model_copy(update={"units": units})
        for i, c in enumerate(charges)
    ]
    factory = inpatient if setting == "inpatient" else outpatient
    c = factory(
        encounter={
            "facility": HOSPITAL.model_copy(update={"name": name or "X"}),
            "operating_provider": SURGEON,
        },
        diagnoses=[dx(code, i + 1) for i, code in enumerate(DX[:n_dx])],
        pcs_procedures=[procedure("0DTJ4ZZ", ADMITTED)] * n_pcs,
        lines=lines,
    )
    try:
        x12 = one(c, frequency=frequency, original_reference="R1" if frequency != "1" else None)
    except InputError as err:  # a facility name with nothing X12 can carry is refused
        assert err.field.endswith(".name")
        return
    assert_valid(x12)
