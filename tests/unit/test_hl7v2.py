"""Intake's HL7 v2 reader: ADT^A03 and DFT^P03 into encounters, rejections, fuzzing."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import InputError
from pipeline.models import Address, Facility, Provider
from services.intake.domain import ParseResult, parse_raw
from services.intake.hl7v2 import ProviderDirectory
from sim.ehr import generate, provider_directory

RECEIVED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
REFERENCE = date(2026, 3, 1)
HL7 = "x-application/hl7-v2+er7"
LOCATION = re.compile(
    r"^(message\[\d+\]\.)?(MSH|EVN|PID|PV1|PV2|DG1|PR1|ROL|IN1|FT1)(\[\d+\])?(-\d+(\.\d+)?)?$"
)

HOSPITAL = Provider(
    npi="1093847264",
    name="St. Catherine Medical Center",
    entity="organization",
    tax_id="742018365",
    taxonomy="282N00000X",
    address=Address(line1="3100 Red River St", city="Austin", state="TX", postal_code="787051234"),
)
DIRECTORY = ProviderDirectory(
    billing={"STCATH": HOSPITAL},
    facilities={"STCATH": Facility(name=HOSPITAL.name, npi=HOSPITAL.npi, address=HOSPITAL.address)},
)


def seg(name: str, fields: dict[int, str]) -> str:
    """A segment from its fields by position (1-based), so tests never miscount pipes."""
    return "|".join([name, *(fields.get(k, "") for k in range(1, max(fields) + 1))])


# A discharge from a real-world-shaped feed: Z-segment, next of kin, observations, an
# escaped name, two insurances (the secondary listed first), a dependent on a parent's plan.
ADT_A03 = "\r".join(
    [
        "MSH|^~\\&|EPICADT|STCATH^1093847264^NPI|CLAIMFLOW|CF|20250604143000-0500||ADT^A03^ADT_A03|"
        "A03-000917|P|2.5.1|||AL|NE",
        "EVN|A03|20250604143000-0500",
        seg("PID", {1: "1", 3: "E4417^^^STCATH^MR~123-45-6789^^^SSA^SS",
                    5: "O\\T\\Neil^Aoife^M^^^^L~Neil^A^^^^^A", 7: "20150312", 8: "F",
                    11: "88 Elm St^Apt 2^Austin^TX^78704-1234^USA^H",
                    13: "^PRN^PH^^^512^5550101"}),
        "NK1|1|O\\T\\Neil^Brigid|MTH|88 Elm St^^Austin^TX^78704",
        seg("PV1", {1: "1", 2: "I", 3: "4N^401^A^STCATH&1093847264&NPI", 4: "E",
                    7: "1234567893^House^Greg^^^^MD^^^^^^NPI", 10: "MED", 14: "1",
                    19: "V778812^^^STCATH", 36: "01", 44: "20250601221500-0500",
                    45: "20250604120000-0500"}),
        "PV2|||^Appendicitis",
        "OBX|1|NM|8867-4^Heart rate^LN||88|/min|||||F",
        seg("DG1", {1: "1", 2: "I10", 3: "K35.80^Unspecified acute appendicitis^I10",
                    5: "20250601", 6: "A", 15: "1", 26: "Y"}),
        seg("DG1", {1: "2", 2: "I10", 3: "E11.9^Type 2 diabetes mellitus without complications^I10",
                    5: "20250601", 6: "F", 15: "2"}),
        seg("DG1", {1: "3", 2: "I9", 3: "540.9^Acute appendicitis NOS^I9C", 6: "F"}),
        seg("PR1", {1: "1", 3: "0DTJ4ZZ^Resection of appendix^I10P", 5: "20250602083000-0500"}),
        seg("IN1", {1: "2", 2: "CI", 3: "62308", 4: "Cigna", 8: "G55", 15: "CI",
                    16: "O\\T\\Neil^Brigid", 17: "MTH", 18: "19840211",
                    19: "88 Elm St^^Austin^TX^78704^USA^H", 36: "U12345678"}),
        seg("IN1", {1: "1", 2: "BL", 3: "84980", 4: "Blue Cross Blue Shield", 8: "G77",
                    15: "BL", 16: "O\\T\\Neil^Brigid", 17: "MTH", 18: "19840211",
                    19: "88 Elm St^^Austin^TX^78704^USA^H", 36: "XOD123456789", 43: "F"}),
        "ZPV|1|private stuff",
    ]
)  # fmt: skip

# Charges for the same visit, in 2.7 (FT1-41 revenue code), one credit and one payment.
DFT_P03 = "\r".join(
    [
        "MSH|^~\\&|EPICADT|STCATH^1093847264^NPI|CLAIMFLOW|CF|20250605090000||DFT^P03^DFT_P03|"
        "P03-000221|P|2.7",
        "EVN|P03|20250605090000",
        seg("PID", {1: "1", 3: "E4417^^^STCATH^MR", 5: "O\\T\\Neil^Aoife", 7: "20150312",
                    8: "F", 11: "88 Elm St^^Austin^TX^78704^USA^H"}),
        seg("PV1", {1: "1", 2: "I", 3: "4N^401^A^STCATH&1093847264&NPI", 4: "E",
                    19: "V778812^^^STCATH"}),
        seg("FT1", {1: "1", 4: "20250601", 6: "CG", 7: "44970^^C4", 10: "1",
                    11: "14500.00&USD", 19: "K35.80^^I10", 25: "44970^^C4",
                    41: "0360^Operating room^NUBC"}),
        seg("FT1", {1: "2", 4: "20250601^20250603", 6: "CG", 7: "J0696^^HCPCS", 10: "8",
                    11: "560.00&USD", 19: "K35.80^^I10", 25: "J0696^^HCPCS", 41: "636^^NUBC"}),
        seg("FT1", {1: "3", 4: "20250602", 6: "CD", 7: "44970^^C4", 10: "1", 11: "-100.00"}),
        seg("FT1", {1: "4", 4: "20250602", 6: "PY", 11: "50.00"}),
    ]
)  # fmt: skip


def parse(
    body: str | bytes, ctype: str | None = HL7, directory: ProviderDirectory = DIRECTORY
) -> ParseResult:
    raw = body.encode() if isinstance(body, str) else body
    return parse_raw(raw, ctype, source_id="m1", received_at=RECEIVED, directory=directory)


def refused(body: str, ctype: str | None = HL7) -> InputError:
    with pytest.raises(InputError) as info:
        parse(body, ctype)
    return info.value


def replace_segment(message: str, prefix: str, new: str | None) -> str:
    lines = message.split("\r")
    out = [new if line.startswith(prefix) else line for line in lines]
    return "\r".join(line for line in out if line is not None)


def test_discharge_matches_the_message() -> None:
    result = parse(ADT_A03)
    [enc] = result.encounters
    assert result.source_format == "hl7v2"
    assert enc.encounter_id == "STCATH/V778812"  # PV1-19 with its assigning authority
    assert (enc.setting, enc.place_of_service) == ("inpatient", "21")
    assert (enc.service_start, enc.service_end) == (date(2025, 6, 1), date(2025, 6, 4))
    assert enc.admission_date == date(2025, 6, 1)
    assert (enc.admission_type, enc.admission_source, enc.discharge_status) == ("1", "1", "01")
    p = enc.patient
    assert (p.patient_id, p.last_name, p.first_name, p.sex) == ("E4417", "O&Neil", "Aoife", "F")
    assert p.birth_date == date(2015, 3, 12)
    assert (p.address.line2, p.address.postal_code) == ("Apt 2", "787041234")
    assert [(d.code, d.system, d.primary, d.poa) for d in enc.diagnoses] == [
        ("K35.80", "icd10cm", True, None),  # DG1-26 needs 2.6+: this is 2.5.1
        ("E11.9", "icd10cm", False, None),
    ]
    assert result.ignored["DG1 (ICD-9)"] == 1
    [pcs] = enc.services
    assert (pcs.code, pcs.system, pcs.charge, pcs.service_date) == (
        "0DTJ4ZZ",
        "icd10pcs",
        Decimal("0.00"),
        date(2025, 6, 2),
    )
    assert enc.attending_provider is not None and enc.attending_provider.npi == "1234567893"
    assert enc.attending_provider.name == "House, Greg"
    assert enc.rendering_provider is None
    assert enc.billing_provider == HOSPITAL
    assert enc.facility is not None and enc.facility.npi == "1093847264"
    cov = enc.coverage
    # IN1-1 1 is primary though listed second; MTH as the insured makes the patient a child.
    assert (cov.payer_id, cov.payer_name, cov.plan_type) == (
        "84980",
        "Blue Cross Blue Shield",
        "BL",
    )
    assert (cov.member_id, cov.group_number, cov.relationship) == ("XOD123456789", "G77", "19")
    assert cov.subscriber is not None
    sub = cov.subscriber
    assert (sub.last_name, sub.first_name, sub.birth_date, sub.sex) == (
        "O&Neil",
        "Brigid",
        date(1984, 2, 11),
        "F",
    )
    # Segments intake never reads are counted, not parsed: next of kin, observations, Z.
    assert {k: result.ignored[k] for k in ("NK1", "OBX", "ZPV")} == {"NK1": 1, "OBX": 1, "ZPV": 1}
    dumped = enc.model_dump_json()
    assert "123-45-6789" not in dumped and "5550101" not in dumped  # SSN, phone: not carried


SURGEON_XCN = "1245319599^Whitfield^Laura^^^^MD^^^^^^NPI"
ASSISTANT_XCN = "1336457589^Ibarra^Tomas^^^^MD^^^^^^NPI"


def _in_27(message: str, *after_pr1: str) -> str:
    """The discharge in HL7 2.7 with these segments after its PR1 (the procedure group)."""
    lines = message.replace("|2.5.1|", "|2.7|").split("\r")
    at = next(i for i, line in enumerate(lines) if line.startswith("PR1"))
    return "\r".join(lines[: at + 1] + list(after_pr1) + lines[at + 1 :])


def test_surgeon_from_the_rol_of_the_procedure_in_2_7() -> None:
    """HL7 2.7 withdrew PR1-11: the surgeon is a ROL in the procedure's group (ROL-3 a
    surgeon role; an assistant or a deleted role is not the operating physician)."""
    body = _in_27(
        ADT_A03,
        seg("ROL", {2: "AD", 3: "AS^Assistant Surgeon^HL70133", 4: ASSISTANT_XCN}),
        seg("ROL", {2: "DE", 3: "PR^Procedure MD/Surgeon^HL70133", 4: ASSISTANT_XCN}),
        seg("ROL", {2: "AD", 3: "PR^Procedure MD/Surgeon^HL70133", 4: SURGEON_XCN}),
    )
    [enc] = parse(body).encounters
    assert enc.operating_provider is not None
    assert (enc.operating_provider.npi, enc.operating_provider.name) == (
        "1245319599",
        "Whitfield, Laura",
    )
    local = _in_27(ADT_A03, seg("ROL", {2: "UC", 3: "^Primary surgeon^L", 4: SURGEON_XCN}))
    [enc] = parse(local).encounters
    assert enc.operating_provider is not None and enc.operating_provider.npi == "1245319599"


def test_surgeon_only_from_a_procedure_group_and_pr1_11_only_before_2_7() -> None:
    # A ROL of the visit (before the PR1) is not the surgeon of the procedure.
    visit_rol = seg("ROL", {2: "AD", 3: "PR^Procedure MD/Surgeon^HL70133", 4: SURGEON_XCN})
    lines = _in_27(ADT_A03).split("\r")
    at = next(i for i, line in enumerate(lines) if line.startswith("DG1"))
    [enc] = parse("\r".join(lines[:at] + [visit_rol] + lines[at:])).encounters
    assert enc.operating_provider is None
    with_pr1_11 = replace_segment(
        ADT_A03,
        "PR1",
        seg("PR1", {1: "1", 3: "0DTJ4ZZ^Resection of appendix^I10P", 5: "20250602",
                    11: SURGEON_XCN}),
    )  # fmt: skip
    [enc] = parse(with_pr1_11).encounters  # 2.5.1: PR1-11 is the surgeon
    assert enc.operating_provider is not None and enc.operating_provider.npi == "1245319599"
    result = parse(with_pr1_11.replace("|2.5.1|", "|2.7|"))
    assert result.encounters[0].operating_provider is None  # withdrawn in 2.7: said, not used
    assert any("PR1-11" in note and "ROL" in note for note in result.notes)


def test_batch_of_discharge_and_charges_is_one_encounter() -> None:
    batch = "\r".join(["BHS|^~\\&|EPICADT|STCATH", ADT_A03, DFT_P03, "BTS|2"])
    result = parse(batch)
    [enc] = result.encounters
    assert enc.encounter_id == "STCATH/V778812"
    assert enc.service_end == date(2025, 6, 4)  # from the ADT^A03's PV1-45
    lines = [(s.code, s.units, s.charge, s.revenue_code, s.dx_refs) for s in enc.services]
    assert lines == [
        ("44970", 1.0, Decimal("14400.00"), "0360", ["K35.80"]),  # the $100 credit netted
        ("J0696", 8.0, Decimal("560.00"), "0636", ["K35.80"]),
        ("0DTJ4ZZ", 1.0, Decimal("0.00"), None, []),
    ]
    assert enc.services[1].service_date == date(2025, 6, 1)  # FT1-4 range start
    assert "FT1 (CD)" not in result.ignored and result.ignored["FT1 (PY)"] == 1
    assert "FT1 credit (CD) netted against its charge" in result.notes


def test_messages_about_different_visits_are_different_encounters() -> None:
    other = DFT_P03.replace("V778812", "V990001").replace("P03-000221", "P03-000222")
    pv1 = seg("PV1", {1: "1", 2: "I", 3: "4N^401^A^STCATH", 19: "V990001^^^STCATH",
                      44: "20250610"})  # fmt: skip
    other = replace_segment(other, "PV1", pv1)
    result = parse(ADT_A03 + "\r" + other)
    assert [e.encounter_id for e in result.encounters] == ["STCATH/V778812", "STCATH/V990001"]
    second = result.encounters[1]
    assert second.service_start == date(2025, 6, 10)
    assert [s.code for s in second.services] == ["44970", "J0696"]
    assert second.diagnoses[0].code == "K35.80"  # from FT1-19, no DG1 in that message
    assert any("FT1-19" in n for n in result.notes)


def test_office_dft_with_modifiers_and_performer() -> None:
    dft = "\r".join(
        [
            "MSH|^~\\&|ATHENA|RIVERSIDE|CLAIMFLOW|CF|20250610170000||DFT^P03|C88|P|2.3.1",
            seg("PID", {1: "1", 3: "55501^^^RIV^MR", 5: "Gonzalez^George", 7: "19700603",
                        8: "M", 11: "9549 Maple Ave^^Austin^TX^78704"}),
            seg("PV1", {1: "1", 2: "O", 3: "CLINIC^^^RIVERSIDE", 19: "V1",
                        44: "20250610093000"}),
            seg("DG1", {1: "1", 3: "R51.9^Headache, unspecified^I10"}),
            seg("FT1", {1: "1", 4: "20250610", 6: "CG", 7: "99213", 10: "1", 11: "150",
                        19: "R51.9", 20: "1782049369^Okafor^Daniel^^^^^^NPI",
                        25: "99213^^CPT", 26: "25^^CPT"}),
            seg("FT1", {1: "2", 4: "20250610", 6: "CG", 7: "36415^^C4", 10: "1", 11: "18.5",
                        19: "R51.9"}),
            seg("IN1", {1: "1", 3: "61101", 4: "Humana HMO", 15: "HM",
                        16: "Gonzalez^George", 17: "SEL", 36: "H16613186"}),
        ]
    )  # fmt: skip
    [enc] = parse(dft, "application/hl7-v2").encounters
    assert enc.encounter_id == "ATHENA/V1"
    assert (enc.setting, enc.place_of_service, enc.service_end) == (
        "professional",
        "11",
        date(2025, 6, 10),
    )
    assert [(s.code, s.system, s.modifiers, s.charge) for s in enc.services] == [
        ("99213", "cpt", ["25"], Decimal("150.00")),
        ("36415", "cpt", [], Decimal("18.50")),
    ]
    assert enc.rendering_provider is not None and enc.rendering_provider.npi == "1782049369"
    assert enc.attending_provider is None
    # RIVERSIDE is neither in the directory nor sent with an NPI: the clinician bills.
    assert enc.billing_provider.npi == "1782049369"
    assert (enc.coverage.plan_type, enc.coverage.member_id) == ("HM", "H16613186")


def test_facility_npi_bills_when_the_directory_does_not_know_it() -> None:
    result = parse(ADT_A03, directory=ProviderDirectory())
    enc = result.encounters[0]
    assert (enc.billing_provider.npi, enc.billing_provider.tax_id) == ("1093847264", None)
    assert any("provider directory" in n for n in result.notes)


def test_provider_directory_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "directory.json"
    directory = provider_directory()
    path.write_text(json.dumps(directory.to_json()))
    assert ProviderDirectory.load(path) == directory
    with pytest.raises(ValueError, match="provider directory"):
        ProviderDirectory.from_json({"billing": {"X": {"npi": "12"}}})


@pytest.mark.parametrize(
    ("code", "x12"),
    [("SEL", "18"), ("SPO", "01"), ("MTH", "19"), ("CHD", "19"), ("DOM", "53"), ("19", "19"),
     ("UNK", "21"), ("FND", "G8")],
)  # fmt: skip
def test_insured_relationship_maps_to_x12(code: str, x12: str) -> None:
    body = ADT_A03.replace("|O\\T\\Neil^Brigid|MTH|", f"|O\\T\\Neil^Brigid|{code}|")
    assert parse(body).encounters[0].coverage.relationship == x12


def test_no_insurance_is_self_pay() -> None:
    body = replace_segment(ADT_A03, "IN1", None)
    cov = parse(body).encounters[0].coverage
    assert (cov.payer_id, cov.plan_type, cov.member_id) == ("SELFPAY", "09", "E4417")


def test_line_endings_framing_and_latin1() -> None:
    lf = ADT_A03.replace("\r", "\n")
    assert parse(lf).encounters[0].encounter_id == "STCATH/V778812"
    framed = b"\x0b" + ADT_A03.encode() + b"\x1c\r"
    assert parse(framed, None).encounters[0].encounter_id == "STCATH/V778812"  # sniffed
    latin = ADT_A03.replace("Aoife", "Aoífe").encode("latin-1")
    assert parse(latin).encounters[0].patient.first_name == "Aoífe"


@pytest.mark.parametrize(
    ("prefix", "segment", "field", "reason"),
    [
        ("PID", "PID|1||E4417^^^STCATH^MR||O'Neil^Aoife||||||88 Elm St^^Austin^TX^78704",
         "PID-7", "birth date missing"),
        ("PID", "PID|1||E4417^^^STCATH^MR||O'Neil^Aoife||2015|F|||88 Elm St^^Austin^TX^78704",
         "PID-7", "birth date needs a full date (YYYYMMDD)"),
        ("PID", "PID|1||E4417^^^STCATH^MR||O'Neil^Aoife||20150230|F|||88 Elm St^^Austin^TX^78704",
         "PID-7", "birth date is not a calendar date"),
        ("PID", "PID|1||E4417^^^STCATH^MR||O'Neil||20150312|F|||88 Elm St^^Austin^TX^78704",
         "PID-5.2", "patient given name missing"),
        ("PID", "PID|1||||O'Neil^Aoife||20150312|F|||88 Elm St^^Austin^TX^78704",
         "PID-3", "patient identifier (MRN) missing"),
        ("PID", "PID|1||E4417^^^STCATH^MR||O'Neil^Aoife||20150312|F",
         "PID-11", "patient address missing"),
        ("PID", "PID|1||E4417^^^STCATH^MR||O'Neil^Aoife||20150312|F|||88 Elm St^^Austin^XX^78704",
         "PID-11.4", "not a US state code or name"),
        ("PV1", "PV1|1|P|4N||||||||||||||||V1", "PV1-2",
         "patient class P is not billed by intake (O, R, E, I)"),
        ("PV1", "PV1|1|I|4N||||||||||||||||V1", "PV1-44",
         "admit/visit date missing (and no FT1-4 date)"),
        ("DG1|1", "DG1|1|X|K35.80^Appendicitis^ZZZ", "DG1[1]-3.3",
         "coding system not understood (I10, SCT …)"),
        ("DG1|1", "DG1|1||12345^Something", "DG1[1]-3.3", "coding system missing"),
        ("IN1|1", "IN1|1|BL|84980", "IN1[2]-4", "insurance company name missing"),
        ("MSH", "MSH|^~\\&|EPICADT|STCATH|CF|CF|20250604||ORU^R01|X1|P|2.5.1", "MSH-9",
         "message type ORU^R01 is not read by intake (ADT^A01, ADT^A03, DFT^P03)"),
        ("MSH", "MSH|^~\\&|EPICADT|STCATH|CF|CF|20250604||ADT^A03|X1|P|9.9", "MSH-12",
         "HL7 version not supported (2.1 to 2.8.2)"),
        ("MSH", "MSH|^~\\&|EPICADT|STCATH|CF|CF|20250604||ADT^A03||P|2.5.1", "MSH-10",
         "message control id missing"),
        ("PID", None, "PID", "segment missing"),
    ],
)  # fmt: skip
def test_rejections_name_the_segment_and_field(
    prefix: str, segment: str | None, field: str, reason: str
) -> None:
    err = refused(replace_segment(ADT_A03, prefix, segment))
    assert (err.field, err.reason) == (field, reason)
    assert "O'Neil" not in err.reason and "Aoife" not in err.reason  # no PHI in reasons


def test_charge_rejections() -> None:
    bad = DFT_P03.replace("|14500.00&USD|", "|-5|")
    assert refused(bad).field == "FT1[1]-11"
    bad = DFT_P03.replace("|||1|14500.00", "|||0|14500.00")
    assert refused(bad).field == "FT1[1]-10"
    bad = DFT_P03.replace("|||1|14500.00", "|||lots|14500.00")
    assert (refused(bad).field, refused(bad).reason) == ("FT1[1]-10", "not a number")
    bad = DFT_P03.replace("0360^Operating room^NUBC", "36X")
    assert refused(bad).field == "FT1[1]-41"


def test_not_hl7_at_all() -> None:
    assert refused("hello").field == "MSH"
    assert refused("PID|1||123\rMSH|^~\\&|A").field == "MSH"
    assert refused("MSH|").field == "MSH-2"
    assert refused("   ").field in ("MSH", "body")


# --- the simulator's HL7 v2 ------------------------------------------------------------


def test_simulator_hl7_matches_json_for_every_setting() -> None:
    directory = provider_directory()
    pairs = zip(
        generate(120, seed=5, fmt="json", reference_date=REFERENCE, mix="all"),
        generate(120, seed=5, fmt="hl7v2", reference_date=REFERENCE, mix="all"),
        strict=True,
    )
    settings_seen = set()
    for (sid, jtype, jbody), (sid2, htype, hbody) in pairs:
        assert sid == sid2 and htype == HL7
        a = parse(jbody, jtype).encounters
        b = parse(hbody, htype, directory=directory).encounters
        assert [e.model_dump(exclude={"source_format"}) for e in a] == [
            e.model_dump(exclude={"source_format"}) for e in b
        ]
        settings_seen.add(b[0].setting)
        text = hbody.decode()
        if b[0].setting == "professional":
            assert "DFT^P03" in text and "ADT^A03" not in text and "|2.5.1" in text
        else:
            assert text.startswith("BHS|") and "ADT^A03" in text and "DFT^P03" in text
    assert settings_seen == {"professional", "outpatient", "inpatient"}


# --- fuzz: nothing but InputError naming a location escapes ------------------------------

FUZZ = settings(
    max_examples=int(os.environ.get("INTAKE_FUZZ_EXAMPLES", "300")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SEEDS = [ADT_A03, DFT_P03] + [
    body.decode()
    for _, _, body in generate(6, seed=13, fmt="hl7v2", reference_date=REFERENCE, mix="all")
]
hl7_text = st.text(alphabet=st.sampled_from("AZ09 .-|^~\\&\r\n\x00é\x0b"), max_size=30)


def _safe(body: bytes, ctype: str | None = HL7) -> None:
    try:
        result = parse(body, ctype, directory=provider_directory())
    except InputError as exc:
        assert exc.field in ("body", "content_type") or LOCATION.match(exc.field), exc.field
        assert exc.reason
        return
    for enc in result.encounters:
        enc.model_dump_json()


@FUZZ
@given(body=st.binary(max_size=300))
def test_fuzz_arbitrary_bytes_as_hl7(body: bytes) -> None:
    _safe(body)
    _safe(b"MSH|^~\\&|" + body)


@FUZZ
@given(
    seed=st.sampled_from(range(len(SEEDS))),
    segment=st.integers(min_value=0, max_value=40),
    position=st.integers(min_value=0, max_value=50),
    value=hl7_text,
    action=st.sampled_from(["replace", "delete-field", "delete-segment", "duplicate-segment"]),
)
def test_fuzz_mutated_messages(
    seed: int, segment: int, position: int, value: str, action: str
) -> None:
    lines = re.split(r"\r", SEEDS[seed].strip("\r"))
    k = segment % len(lines)
    fields = lines[k].split("|")
    j = position % len(fields)
    if action == "replace":
        fields[j] = value
        lines[k] = "|".join(fields)
    elif action == "delete-field" and len(fields) > 1:
        del fields[j]
        lines[k] = "|".join(fields)
    elif action == "delete-segment":
        del lines[k]
    else:
        lines.insert(k, lines[k])
    _safe("\r".join(lines).encode())


def test_hl7apy_library_kept_by_version_is_hl7apys_own() -> None:
    """The module kept per version (services/intake/hl7v2.py) is the one hl7apy's own
    ``load_library`` gives; a version it refuses raises as before, and is not kept."""
    import hl7apy
    import hl7apy.core
    import hl7apy.factories
    from hl7apy.exceptions import UnsupportedVersion

    from services.intake import hl7v2

    for module in (hl7apy, hl7apy.core, hl7apy.factories):
        assert module.load_library is hl7v2._load_library
    for version in hl7apy.SUPPORTED_LIBRARIES:
        assert hl7v2._load_library(version) is hl7v2._hl7apy_load_library(version)
        assert hl7v2._load_library(version) is hl7v2._load_library(version)
    for bad in ("9.9", "", None):
        with pytest.raises(UnsupportedVersion):
            hl7v2._load_library(bad)  # type: ignore[arg-type]
        assert bad not in hl7v2._LIBRARIES
