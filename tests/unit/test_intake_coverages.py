"""Coverages in coordination-of-benefits order, from every intake format."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from test_hl7v2 import ADT_A03
from test_intake import add, minimal_bundle

from pipeline.errors import InputError
from services.intake.domain import parse_raw

RECEIVED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
X12_FILING = "https://x12.org/codes/claim-filing-indicator-code"


def parse(body: bytes, ctype: str) -> Any:
    return parse_raw(body, ctype, source_id="m1", received_at=RECEIVED).encounters[0]


def coverage(
    cid: str, payer: str, payer_id: str, filing: str, member: str, order: int
) -> dict[str, Any]:
    return {
        "resourceType": "Coverage",
        "id": cid,
        "status": "active",
        "order": order,
        "type": {"coding": [{"system": X12_FILING, "code": filing}]},
        "subscriberId": member,
        "beneficiary": {"reference": "urn:uuid:p1"},
        "payor": [{"display": payer, "identifier": {"value": payer_id}}],
    }


def test_fhir_coverages_follow_coverage_order() -> None:
    bundle = minimal_bundle()
    add(bundle, coverage("cov2", "AARP Medicare Supplement", "36273", "CI", "AARP99", 2))
    add(bundle, coverage("cov1", "Medicare Part B", "04412", "MB", "1EG4TE5MK72", 1))
    add(bundle, coverage("cov3", "Alabama Medicaid", "77027", "MC", "AM5511", 3))
    enc = parse(json.dumps(bundle).encode(), "application/fhir+json")
    assert enc.coverage.plan_type == "MB"
    assert [c.plan_type for c in enc.other_coverages] == ["CI", "MC"]


def test_hl7_in1_segments_follow_their_set_ids() -> None:
    enc = parse(ADT_A03.encode(), "application/hl7-v2")
    assert (enc.coverage.payer_id, enc.coverage.member_id) == ("84980", "XOD123456789")
    assert [(c.payer_id, c.member_id) for c in enc.other_coverages] == [("62308", "U12345678")]


def json_encounter(**changes: Any) -> dict[str, Any]:
    record = {
        "encounter_id": "E1",
        "service_start": "2026-01-05",
        "service_end": "2026-01-05",
        "place_of_service": "11",
        "patient": {"patient_id": "P1", "last_name": "Doe", "first_name": "Jane",
                    "birth_date": "1950-01-01", "sex": "F",
                    "address": {"line1": "1 Main St", "city": "Boston", "state": "MA",
                                "postal_code": "02101"}},
        "billing_provider": {"npi": "1234567893", "name": "Clinic"},
        "diagnoses": [{"code": "I10", "system": "icd10cm", "primary": True}],
        "services": [{"code": "99213", "system": "cpt", "charge": "100.00"}],
    }  # fmt: skip
    return record | changes


MEDICARE = {"payer_id": "04412", "payer_name": "Medicare", "plan_type": "MB", "member_id": "1EG4"}
MEDIGAP = {"payer_id": "36273", "payer_name": "AARP", "plan_type": "CI", "member_id": "AARP99"}


def test_json_coverages_in_order() -> None:
    enc = parse(
        json.dumps(json_encounter(coverages=[MEDICARE, MEDIGAP])).encode(), "application/json"
    )
    assert (enc.coverage.payer_id, [c.payer_id for c in enc.other_coverages]) == (
        "04412",
        ["36273"],
    )
    same = json_encounter(coverage=MEDICARE, other_coverages=[MEDIGAP])
    assert (
        parse(json.dumps(same).encode(), "application/json").other_coverages == enc.other_coverages
    )


def test_json_coverages_errors_name_the_field() -> None:
    bad = json_encounter(coverages=[MEDICARE, MEDIGAP | {"relationship": "XX"}])
    try:
        parse(json.dumps(bad).encode(), "application/json")
    except InputError as exc:
        assert exc.field == "encounter.coverages[1].relationship"
    else:
        raise AssertionError("a bad relationship on the secondary coverage was accepted")
    both = json_encounter(coverages=[MEDICARE], coverage=MEDICARE)
    try:
        parse(json.dumps(both).encode(), "application/json")
    except InputError as exc:
        assert exc.field == "encounter.coverages"
    else:
        raise AssertionError("coverages and coverage together were accepted")
