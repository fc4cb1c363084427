"""Charge capture in intake: provider profiles in every format, the chargemaster, credits."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.models import Address, Provider
from services.intake.domain import parse_raw
from services.refdata.chargemaster import Chargemaster, load_chargemaster
from services.refdata.providers import ProviderDirectory
from sim.ehr import generate, provider_directory

RECEIVED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HL7 = "x-application/hl7-v2+er7"
EIN_OID = "urn:oid:2.16.840.1.113883.4.4"

# A CMS price-transparency file (v3.0 CSV tall), as a hospital publishes it: charge numbers
# (CDM) with their revenue code and CPT/HCPCS. Item 30025 is numbered like a CPT code.
CDM_CSV = """\
hospital_name,last_updated_on,version,location_name,hospital_address,license_number | TX
St. Catherine Medical Center,2026-01-01,3.0.0,St. Catherine,3100 Red River St Austin TX,1234
description,code | 1,code | 1 | type,code | 2,code | 2 | type,code | 3,code | 3 | type,\
setting,standard_charge | gross,standard_charge | discounted_cash,payer_name,plan_name,\
standard_charge | negotiated_dollar,standard_charge | negotiated_percentage,\
standard_charge | negotiated_algorithm,standard_charge | methodology,additional_generic_notes
CBC with differential,30025,CDM,300,RC,85025,CPT,both,52.00,40,State Medicaid,Medicaid,11.02,,,\
fee schedule,
Room and board semi-private,10120,CDM,120,RC,,,inpatient,2400,,,,,,,,
Ceftriaxone 250 mg,25001,CDM,636,RC,J0696,HCPCS,both,70,,,,,,,,
Laparoscopic appendectomy,36044970,CDM,360,RC,44970,CPT,inpatient,14500,,,,,,,,
"""


def seg(name: str, fields: dict[int, str]) -> str:
    return "|".join([name, *(fields.get(k, "") for k in range(1, max(fields) + 1))])


def dft(*ft1s: dict[int, str], klass: str = "I", version: str = "2.5.1") -> str:
    return "\r".join(
        [
            f"MSH|^~\\&|EPICADT|STCATH|CLAIMFLOW|CF|20250604150000||DFT^P03|D1|P|{version}",
            seg("PID", {1: "1", 3: "E4417^^^STCATH^MR", 5: "Neil^Aoife", 7: "20150312", 8: "F",
                        11: "88 Elm St^^Austin^TX^78704"}),
            seg("PV1", {1: "1", 2: klass, 3: "4N^401^A^STCATH&1093847264&NPI", 4: "E",
                        19: "V778812^^^STCATH", 44: "20250601", 45: "20250604"}),
            seg("DG1", {1: "1", 3: "K35.80^^I10"}),
            *(seg("FT1", {1: str(i), **f}) for i, f in enumerate(ft1s, 1)),
            seg("IN1", {1: "1", 3: "84980", 4: "Blue Cross Blue Shield", 15: "BL", 17: "SEL",
                        36: "XOD123456789"}),
        ]
    )  # fmt: skip


@pytest.fixture
def cdm(tmp_path: Path) -> Chargemaster:
    path = tmp_path / "chargemaster.csv"
    path.write_text(CDM_CSV)
    return load_chargemaster(path)


def parse(body: str, cdm: Chargemaster | None = None, directory: ProviderDirectory | None = None):
    return parse_raw(
        body.encode(),
        HL7,
        source_id="m1",
        received_at=RECEIVED,
        directory=directory or ProviderDirectory(),
        chargemaster=cdm,
    )


def test_charge_codes_become_revenue_code_hcpcs_and_price(cdm: Chargemaster) -> None:
    body = dft(
        {4: "20250601", 6: "CG", 7: "10120^Room semi^CDM", 10: "3"},  # priced: 3 x 2400
        {4: "20250602", 6: "CG", 7: "30025", 10: "1", 11: "52.00"},  # CDM number, not CPT 30025
        {4: "20250602", 6: "CG", 7: "36044970", 10: "1", 11: "14500", 25: "44970^^C4"},
    )
    [enc] = parse(body, cdm).encounters
    lines = [(s.code, s.system, s.revenue_code, s.units, s.charge) for s in enc.services]
    assert lines == [
        (None, None, "0120", 3.0, Decimal("7200.00")),
        ("85025", "cpt", "0300", 1.0, Decimal("52.00")),
        ("44970", "cpt", "0360", 1.0, Decimal("14500.00")),
    ]
    assert enc.services[0].display == "Room and board semi-private"


def test_an_unknown_charge_code_is_refused_never_guessed(cdm: Chargemaster) -> None:
    body = dft({4: "20250602", 6: "CG", 7: "99213", 10: "1", 11: "150"})
    with pytest.raises(InputError) as caught:
        parse(body, cdm)
    assert caught.value.field == "FT1[1]-7"
    assert caught.value.reason == "charge code 99213 is not in the chargemaster (chargemaster.csv)"
    with pytest.raises(InputError, match="no chargemaster is configured"):
        parse(body)  # without one, a shape is not a code system


def test_a_revenue_code_only_item_cannot_go_on_a_professional_claim(cdm: Chargemaster) -> None:
    body = dft({4: "20250601", 6: "CG", 7: "10120", 10: "1"}, klass="O")
    with pytest.raises(InputError, match="a professional claim needs one"):
        parse(body, cdm)


def test_credits_net_against_the_charges_they_reverse(cdm: Chargemaster) -> None:
    body = dft(
        {4: "20250601", 6: "CG", 7: "25001", 10: "4", 11: "280.00"},
        {4: "20250602", 6: "CG", 7: "30025", 10: "1", 11: "52.00"},
        {4: "20250603", 6: "CD", 7: "25001", 10: "-1", 11: "-70.00"},  # one dose reversed
        {4: "20250603", 6: "CD", 7: "30025", 10: "1", 11: "52.00"},  # the whole test
        {4: "20250603", 6: "PY", 11: "50.00"},
    )
    result = parse(body, cdm)
    [enc] = result.encounters
    assert [(s.code, s.units, s.charge) for s in enc.services] == [
        ("J0696", 3.0, Decimal("210.00")),
    ]
    assert "FT1 credit (CD) netted against its charge" in result.notes
    too_much = dft(
        {4: "20250601", 6: "CG", 7: "25001", 10: "1", 11: "70.00"},
        {4: "20250603", 6: "CD", 7: "25001", 10: "2", 11: "140.00"},
    )
    with pytest.raises(InputError) as caught:
        parse(too_much, cdm)
    assert caught.value.field == "FT1[2]-6"


# --- provider profiles in FHIR and JSON ---------------------------------------------------


def _strip_tax_ids(bundle: dict) -> None:
    for entry in bundle["entry"]:
        res = entry["resource"]
        if res["resourceType"] == "Organization":
            res["identifier"] = [i for i in res.get("identifier", []) if i.get("system") != EIN_OID
                                 and "TAX" not in json.dumps(i.get("type", {}))]  # fmt: skip
            res.pop("address", None)


def test_a_fhir_bundle_without_a_tax_id_is_billed_with_the_profiles() -> None:
    source_id, ctype, body = next(generate(1, seed=11, fmt="fhir"))
    bundle = json.loads(body)
    _strip_tax_ids(bundle)
    stripped = json.dumps(bundle).encode()
    bare = parse_raw(stripped, ctype, source_id=source_id, received_at=RECEIVED)
    assert bare.encounters[0].billing_provider.tax_id is None
    directory = provider_directory()
    result = parse_raw(
        stripped, ctype, source_id=source_id, received_at=RECEIVED, directory=directory
    )
    billing = result.encounters[0].billing_provider
    profile = directory.billing_for([billing.npi])
    assert profile is not None and billing.tax_id == profile.tax_id is not None
    assert billing.address == profile.address is not None
    assert "billing provider completed from its provider profile" in result.notes


def test_a_fhir_organisation_without_npi_bills_through_the_profile_its_identifier_names() -> None:
    source_id, ctype, body = next(generate(1, seed=11, fmt="fhir"))
    bundle = json.loads(body)
    for entry in bundle["entry"]:
        res = entry["resource"]
        if res["resourceType"] == "Organization" and "identifier" in res:
            res["identifier"] = [{"system": "http://ehr.example/org", "value": "ORG-77"}]
    profile = Provider(
        npi="1093847264", name="Profiled Clinic LLC", tax_id="742018365", taxonomy="261QP2300X",
        address=Address(line1="1 Main St", city="Austin", state="TX", postal_code="787011234"),
    )  # fmt: skip
    directory = ProviderDirectory(billing={"http://ehr.example/org|ORG-77": profile})
    result = parse_raw(
        json.dumps(bundle).encode(), ctype, source_id=source_id, received_at=RECEIVED,
        directory=directory,
    )  # fmt: skip
    assert result.encounters[0].billing_provider == profile


def test_a_json_encounter_is_completed_by_npi() -> None:
    source_id, ctype, body = next(generate(1, seed=12, fmt="json"))
    data = json.loads(body)
    for key in ("tax_id", "taxonomy", "address"):
        data["billing_provider"].pop(key, None)
    result = parse_raw(
        json.dumps(data).encode(), ctype, source_id=source_id, received_at=RECEIVED,
        directory=provider_directory(),
    )  # fmt: skip
    billing = result.encounters[0].billing_provider
    assert billing.tax_id and billing.taxonomy and billing.address is not None


def test_an_unpriced_service_is_priced_from_the_chargemaster(cdm: Chargemaster) -> None:
    source_id, ctype, body = next(generate(1, seed=12, fmt="json"))
    data = json.loads(body)
    data["services"] = [{"code": "85025", "system": "cpt", "charge": 0, "units": 2},
                        {"code": "99213", "system": "cpt", "charge": 0}]  # fmt: skip
    data["diagnoses"][0]["primary"] = True
    result = parse_raw(json.dumps(data).encode(), ctype, source_id=source_id,
                       received_at=RECEIVED, chargemaster=cdm)  # fmt: skip
    services = result.encounters[0].services
    assert [(s.code, s.charge) for s in services] == [
        ("85025", Decimal("104.00")),  # 2 x the gross charge
        ("99213", Decimal("0.00")),  # not in this chargemaster: left as sent
    ]
    assert "unpriced service priced from the chargemaster" in result.notes
