"""Coding domain: carry over, check and sequence what the EHR documented; never guess."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from factories import RECEIVED_AT, codesets_bare, dx, encounter, service

from pipeline.errors import InputError
from pipeline.models import event_id
from services.coding.domain import code_encounter
from services.refdata.codesets import CodeSets


@pytest.fixture(scope="module")
def cs() -> CodeSets:
    return codesets_bare()


def test_clean_visit_is_carried_over_and_checked(cs: CodeSets) -> None:
    enc = encounter()
    coded = code_encounter(enc, cs, coded_at=RECEIVED_AT)
    assert [(d.code, d.sequence, d.billable, d.source) for d in coded.diagnoses] == [
        ("E119", 1, True, "ehr"),
        ("I10", 2, True, "ehr"),
    ]
    assert coded.diagnoses[0].description == "Type 2 diabetes mellitus without complications"
    assert [(ln.line_number, ln.code, ln.code_system, ln.dx_pointers) for ln in coded.lines] == [
        (1, "99213", "CPT", [1, 2]),
        (2, "83036", "CPT", [1]),
    ]
    assert coded.lines[0].charge == Decimal("145.00") and coded.lines[0].units == 1.0
    assert coded.lines[0].service_date == enc.service_start  # defaulted
    assert coded.code_set_version == "ICD-10-CM FY2026"
    assert coded.confidence == 1.0 and coded.review_reasons == []
    assert coded.encounter == enc and coded.coded_at == RECEIVED_AT


def test_event_id_is_deterministic(cs: CodeSets) -> None:
    enc = encounter()
    first = code_encounter(enc, cs, coded_at=RECEIVED_AT)
    again = code_encounter(enc, cs, coded_at=RECEIVED_AT.replace(hour=23))
    assert first.event_id == again.event_id == event_id(enc.event_id, "coding", "ICD-10-CM FY2026")


def test_primary_goes_first_then_documented_order(cs: CodeSets) -> None:
    enc = encounter(
        diagnoses=[dx("I10"), dx("E78.5"), dx("E11.9", primary=True)],
        services=[service("99213", dx_refs=["E78.5", "E11.9"])],
    )
    coded = code_encounter(enc, cs, coded_at=RECEIVED_AT)
    assert [d.code for d in coded.diagnoses] == ["E119", "I10", "E785"]
    assert [d.sequence for d in coded.diagnoses] == [1, 2, 3]
    # Pointers follow the final order, not the documented one.
    assert coded.lines[0].dx_pointers == [3, 1]


def test_several_primaries_go_to_review(cs: CodeSets) -> None:
    enc = encounter(diagnoses=[dx("I10", primary=True), dx("E11.9", primary=True)])
    coded = code_encounter(enc, cs, coded_at=RECEIVED_AT)
    assert [d.code for d in coded.diagnoses] == ["I10", "E119"]
    assert any("2 diagnoses are marked primary" in r for r in coded.review_reasons)


def test_invalid_dx_raises_input_error_naming_the_field(cs: CodeSets) -> None:
    day = date(2026, 3, 1)
    enc = encounter(
        service_start=day,
        service_end=day,
        diagnoses=[dx("E11.9", primary=True), dx("I10"), dx("Z99.999")],
        services=[service("99213", service_date=day)],
    )
    with pytest.raises(InputError) as err:
        code_encounter(enc, cs, coded_at=RECEIVED_AT)
    assert err.value.field == "diagnoses[2].code"
    assert err.value.reason == "'Z99.999' is not a valid ICD-10-CM code on 2026-03-01 (FY2026)"


def test_category_header_goes_to_review_and_is_not_completed(cs: CodeSets) -> None:
    enc = encounter(
        diagnoses=[dx("E11", primary=True), dx("I10")],
        services=[service("99213", dx_refs=["E11"])],
    )
    coded = code_encounter(enc, cs, coded_at=RECEIVED_AT)
    first = coded.diagnoses[0]
    assert first.code == "E11" and not first.billable and first.source == "ehr"
    assert first.confidence < 1 and coded.confidence == first.confidence
    assert len(coded.review_reasons) == 1
    assert coded.review_reasons[0].startswith("diagnoses[0]: 'E11' is an ICD-10-CM header")
    assert coded.lines[0].dx_pointers == [1]


def test_snomed_and_text_diagnoses_are_mapped_from_their_words(cs: CodeSets) -> None:
    enc = encounter(
        diagnoses=[
            dx("44054006", system="snomed", display="Diabetes mellitus type 2", primary=True),
            dx("", system="text", display="knee pain"),
            dx("I10"),
        ],
        services=[service("99213", dx_refs=["44054006", "I10"])],
    )
    coded = code_encounter(enc, cs, coded_at=RECEIVED_AT)
    assert [(d.code, d.source) for d in coded.diagnoses] == [
        ("E119", "mapped"),
        ("M25569", "mapped"),
        ("I10", "ehr"),
    ]
    assert all(d.confidence >= 0.9 for d in coded.diagnoses)
    assert coded.review_reasons == []
    # The line's SNOMED reference now points at the mapped ICD-10-CM code.
    assert coded.lines[0].dx_pointers == [1, 3]


def test_unmappable_or_doubtful_text_goes_to_review(cs: CodeSets) -> None:
    enc = encounter(
        diagnoses=[
            dx("444814009", system="snomed", display="Viral sinusitis (disorder)", primary=True),
            dx("", system="text", display="feeling off lately"),
            dx("I10"),
        ],
        services=[service("99213", dx_refs=["444814009", "I10"])],
    )
    coded = code_encounter(enc, cs, coded_at=RECEIVED_AT)
    reasons = "\n".join(coded.review_reasons)
    # "sinusitis NOS" does not say "viral": a suggestion, below the threshold.
    viral = (
        "diagnoses[0]: 'Viral sinusitis (disorder)' matches no tabular term fully (nearest J32.9"
    )
    assert viral in reasons
    assert "diagnoses[1]: 'feeling off lately' matches no tabular term fully" in reasons
    assert [d.code for d in coded.diagnoses] == ["J329", "I10"]
    assert coded.diagnoses[0].confidence < 0.85
    assert coded.confidence == 0.0  # the unmapped text


def test_inpatient_codes_by_discharge_date(cs: CodeSets) -> None:
    # E11.A is valid from 2025-10-01 (FY2026): a stay admitted in FY2025 and discharged in
    # FY2026 is coded with FY2026 codes; the same dates on a professional claim are FY2025.
    stay = {
        "service_start": date(2025, 9, 28),
        "service_end": date(2025, 10, 2),
        "diagnoses": [dx("E11.A", primary=True)],
        "services": [service("99223", service_date=date(2025, 9, 28))],
    }
    inpatient = code_encounter(
        encounter(setting="inpatient", place_of_service="21", **stay), cs, coded_at=RECEIVED_AT
    )
    assert inpatient.code_set_version == "ICD-10-CM FY2026"
    assert inpatient.diagnoses[0].code == "E11A"
    with pytest.raises(InputError) as err:
        code_encounter(encounter(**stay), cs, coded_at=RECEIVED_AT)
    assert err.value.field == "diagnoses[0].code" and "FY2025" in err.value.reason


def test_dates_outside_the_code_sets_raise(cs: CodeSets) -> None:
    day = date(2022, 9, 30)
    enc = encounter(service_start=day, service_end=day)
    with pytest.raises(InputError) as err:
        code_encounter(enc, cs, coded_at=RECEIVED_AT)
    assert err.value.field == "service_start"
    assert "outside the ICD-10 code sets" in err.value.reason


def test_hcpcs_and_cpt_by_format_with_modifiers_units_and_dates(cs: CodeSets) -> None:
    enc = encounter(
        service_start=date(2026, 3, 2),
        service_end=date(2026, 3, 3),
        services=[
            service("g0438", "210.00", system="cpt", dx_refs=["I10"]),
            service("99213", modifiers=[" 25 ", "gt"], service_date=date(2026, 3, 3)),
            service("J1100", "12.00", system="hcpcs", units=4),
        ],
    )
    coded = code_encounter(enc, cs, coded_at=RECEIVED_AT)
    assert [(ln.code, ln.code_system) for ln in coded.lines] == [
        ("G0438", "HCPCS"),
        ("99213", "CPT"),
        ("J1100", "HCPCS"),
    ]
    assert coded.lines[0].dx_pointers == [2]
    assert coded.lines[1].modifiers == ["25", "GT"]
    assert coded.lines[1].service_date == date(2026, 3, 3)
    assert coded.lines[2].units == 4 and coded.lines[2].dx_pointers == [1]


@pytest.mark.parametrize("code", ["9921", "99213X", "G43", "E11.9"])
def test_malformed_service_code_raises(cs: CodeSets, code: str) -> None:
    enc = encounter(services=[service("99213"), service(code)])
    with pytest.raises(InputError) as err:
        code_encounter(enc, cs, coded_at=RECEIVED_AT)
    assert err.value.field == "services[1].code"


def test_dx_pointers_cap_at_four_and_send_the_rest_to_review(cs: CodeSets) -> None:
    codes = ["E11.9", "I10", "E78.5", "N18.30", "E66.811", "Z79.84"]
    enc = encounter(
        diagnoses=[dx(c, primary=(n == 0)) for n, c in enumerate(codes)],
        services=[service("99214", dx_refs=list(reversed(codes)))],
    )
    coded = code_encounter(enc, cs, coded_at=RECEIVED_AT)
    assert coded.lines[0].dx_pointers == [6, 5, 4, 3]
    assert any("left off" in r and "I10" in r for r in coded.review_reasons)


def test_duplicate_dx_refs_and_diagnoses_collapse(cs: CodeSets) -> None:
    enc = encounter(
        diagnoses=[dx("E11.9", primary=True), dx("I10"), dx("E119")],
        services=[service("99213", dx_refs=["E11.9", "E119", "I10"])],
    )
    coded = code_encounter(enc, cs, coded_at=RECEIVED_AT)
    assert [d.code for d in coded.diagnoses] == ["E119", "I10"]
    assert coded.lines[0].dx_pointers == [1, 2]


def test_dx_ref_to_nothing_documented_raises(cs: CodeSets) -> None:
    enc = encounter(services=[service("99213", dx_refs=["E11.9", "J45.909"])])
    with pytest.raises(InputError) as err:
        code_encounter(enc, cs, coded_at=RECEIVED_AT)
    assert err.value.field == "services[0].dx_refs[1]"


def test_pcs_services_become_procedures_checked_by_fy(cs: CodeSets) -> None:
    stay = {
        "setting": "inpatient",
        "place_of_service": "21",
        "service_start": date(2026, 2, 20),
        "service_end": date(2026, 2, 23),
        "diagnoses": [dx("K35.80", primary=True)],
        "services": [
            service("99223", service_date=date(2026, 2, 20)),
            service("0DTJ4ZZ", "0.00", system="icd10pcs", service_date=date(2026, 2, 21)),
        ],
    }
    coded = code_encounter(encounter(**stay), cs, coded_at=RECEIVED_AT)
    assert [(p.code, p.date, p.source) for p in coded.pcs_procedures] == [
        ("0DTJ4ZZ", date(2026, 2, 21), "ehr")
    ]
    assert [ln.code for ln in coded.lines] == ["99223"]
    # XW033C6 was deleted for FY2026.
    bad = {**stay, "services": [service("XW033C6", system="icd10pcs")]}
    with pytest.raises(InputError) as err:
        code_encounter(encounter(**bad), cs, coded_at=RECEIVED_AT)
    assert err.value.field == "services[0].code" and "ICD-10-PCS" in err.value.reason


def test_snomed_service_goes_to_review(cs: CodeSets) -> None:
    enc = encounter(services=[service("99213"), service("80146002", system="snomed")])
    coded = code_encounter(enc, cs, coded_at=RECEIVED_AT)
    assert [ln.code for ln in coded.lines] == ["99213"]
    assert any(r.startswith("services[1]: SNOMED CT procedure") for r in coded.review_reasons)
    assert coded.confidence == 0.0
