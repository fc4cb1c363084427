"""Small builders of realistic encounters for the coding and validation unit tests.

Defaults describe one clean office visit: a type 2 diabetic with hypertension seen in
Birmingham, Alabama on 2026-03-02 (FY2026), billed with 99213 and an HbA1c (83036).
Every NPI below carries a correct Luhn check digit.
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pytest
from shared_data import SHARED_DATA

from pipeline.models import (
    Address,
    CodedDiagnosis,
    CodedEncounter,
    CodedProcedure,
    Coverage,
    DocumentedDiagnosis,
    DocumentedService,
    Encounter,
    Facility,
    Patient,
    Provider,
    ServiceLine,
    event_id,
)
from services.refdata.codesets import CodeSets

REPO = Path(__file__).resolve().parents[2]
CMS_DIR = SHARED_DATA / "cms"
"""Public CMS files for tests (found by tests/shared_data.py); never copied into the repo."""

requires_cms = pytest.mark.skipif(
    not (CMS_DIR / "PPRRVU2025_Oct.nodesc.csv").is_file(),
    reason=f"CMS reference files not found in {CMS_DIR}",
)

BILLING_NPI = "1847520396"
RENDERING_NPI = "1663019283"
FACILITY_NPI = "1508624370"
EIN = "631234567"

VISIT = date(2026, 3, 2)
RECEIVED_AT = datetime(2026, 3, 2, 17, 30, tzinfo=UTC)
VALIDATED_AT = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)

#: Medicare Part B, and a Medicare supplement (Medigap) that pays after it.
MEDICARE_B = Coverage(
    payer_id="04412",
    payer_name="Palmetto GBA Medicare Part B",
    plan_type="MB",
    member_id="1EG4TE5MK72",
)
MEDIGAP_F = Coverage(
    payer_id="36273",
    payer_name="AARP Medicare Supplement",
    plan_type="CI",
    member_id="AARP99120044",
    group_number="MEDSUPF",
)


@functools.cache
def codesets_with_cms() -> CodeSets:
    """One CodeSets over the shared CMS files, reused by every test module."""
    return CodeSets.load(CMS_DIR)


@functools.cache
def codesets_bare() -> CodeSets:
    """One CodeSets with no reference folder: only the packaged code sets."""
    return CodeSets.load(None)


def address(**changes: Any) -> Address:
    """A Birmingham, AL street address."""
    fields: dict[str, Any] = {
        "line1": "1600 7th Ave S",
        "city": "Birmingham",
        "state": "AL",
        "postal_code": "352332105",
    }
    return Address(**(fields | changes))


def dx(
    code: str,
    *,
    primary: bool = False,
    system: Literal["icd10cm", "snomed", "text"] = "icd10cm",
    **changes: Any,
) -> DocumentedDiagnosis:
    """A documented diagnosis."""
    return DocumentedDiagnosis(code=code, system=system, primary=primary, **changes)


def service(
    code: str,
    charge: str = "100.00",
    *,
    system: Literal["cpt", "hcpcs", "icd10pcs", "snomed"] = "cpt",
    **changes: Any,
) -> DocumentedService:
    """A documented service with its charge."""
    return DocumentedService(code=code, system=system, charge=Decimal(charge), **changes)


def encounter(**changes: Any) -> Encounter:
    """A clean professional office visit; keyword arguments replace top-level fields."""
    fields: dict[str, Any] = {
        "event_id": event_id("ehr-msg-20260302-0001", "intake", "v1"),
        "encounter_id": "ENC-2026-000123",
        "source_id": "ehr-msg-20260302-0001",
        "source_format": "json",
        "received_at": RECEIVED_AT,
        "setting": "professional",
        "service_start": VISIT,
        "service_end": VISIT,
        "place_of_service": "11",
        "patient": Patient(
            patient_id="MRN0048213",
            last_name="Whitfield",
            first_name="Loretta",
            birth_date=date(1957, 8, 14),
            sex="F",
            address=address(line1="412 Cahaba Rd", postal_code="35213"),
        ),
        "coverage": Coverage(
            payer_id="00510",
            payer_name="Blue Cross and Blue Shield of Alabama",
            plan_type="BL",
            member_id="ZGH884512093",
            group_number="GRP55120",
        ),
        "billing_provider": Provider(
            npi=BILLING_NPI,
            name="Magic City Family Medicine PC",
            entity="organization",
            tax_id=EIN,
            taxonomy="207Q00000X",
            address=address(),
        ),
        "rendering_provider": Provider(
            npi=RENDERING_NPI, name="Okafor, Adaeze", entity="person", taxonomy="207Q00000X"
        ),
        "facility": None,
        "diagnoses": [
            dx("E11.9", primary=True, display="Type 2 diabetes mellitus"),
            dx("I10", display="Essential hypertension"),
        ],
        "services": [
            service("99213", "145.00", dx_refs=["E11.9", "I10"]),
            service("83036", "38.00", dx_refs=["E11.9"]),
        ],
    }
    return Encounter(**(fields | changes))


def facility() -> Facility:
    """An outpatient clinic with its own NPI."""
    return Facility(name="Southside Diabetes Clinic", npi=FACILITY_NPI, address=address())


def coded(enc: Encounter | None = None, **changes: Any) -> CodedEncounter:
    """A coded encounter built by hand (not by the coding stage) from the clean visit."""
    enc = enc or encounter()
    fields: dict[str, Any] = {
        "event_id": event_id(enc.event_id, "coding", "ICD-10-CM FY2026"),
        "encounter_id": enc.encounter_id,
        "encounter": enc,
        "diagnoses": [
            CodedDiagnosis(code="E119", sequence=1, source="ehr", confidence=1.0, billable=True),
            CodedDiagnosis(code="I10", sequence=2, source="ehr", confidence=1.0, billable=True),
        ],
        "lines": [line(1, "99213", "145.00", [1, 2]), line(2, "83036", "38.00", [1])],
        "code_set_version": "ICD-10-CM FY2026",
        "confidence": 1.0,
        "coded_at": RECEIVED_AT,
    }
    return CodedEncounter(**(fields | changes))


def line(
    number: int,
    code: str,
    charge: str = "100.00",
    pointers: list[int] | None = None,
    **changes: Any,
) -> ServiceLine:
    """A coded CPT line on the visit date."""
    fields: dict[str, Any] = {
        "line_number": number,
        "code": code,
        "code_system": "HCPCS" if code[0].isalpha() else "CPT",
        "units": 1.0,
        "charge": Decimal(charge),
        "dx_pointers": pointers or [1],
        "service_date": VISIT,
    }
    return ServiceLine(**(fields | changes))


def procedure(code: str, on: date = VISIT) -> CodedProcedure:
    """An ICD-10-PCS procedure as coding records it."""
    return CodedProcedure(code=code, date=on, source="ehr", confidence=1.0)


def patch(model: Any, **changes: Any) -> Any:
    """A copy with fields replaced WITHOUT validation, to craft input the models would refuse."""
    return model.model_copy(update=changes)
