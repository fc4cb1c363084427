"""Professional coding: dates of service, E/M levels (AMA 2021), lines, HCC (CMS-HCC V28)."""

from __future__ import annotations

from datetime import date

import pytest
from factories import RECEIVED_AT, codesets_bare, dx, encounter, service

from pipeline.errors import InputError
from pipeline.models import Coverage
from services.coding import em
from services.coding.domain import Coder
from services.coding.hcc import eligible, risk


@pytest.fixture(scope="module")
def coder() -> Coder:
    return Coder(codesets_bare())


# --- date of service --------------------------------------------------------------------


def test_a_2019_visit_is_refused_with_the_reason(coder: Coder) -> None:
    # U07.1 (COVID-19) only exists from 2020-04-01; claimflow's code sets start at FY2023,
    # so a 2019 date cannot be checked at all and must not be coded with today's tables.
    day = date(2019, 12, 1)
    enc = encounter(
        service_start=day,
        service_end=day,
        diagnoses=[dx("U07.1", primary=True)],
        services=[service("99213", service_date=day)],
    )
    with pytest.raises(InputError) as err:
        coder.code(enc, coded_at=RECEIVED_AT)
    assert err.value.field == "service_start"
    assert err.value.reason.startswith("2019-12-01 (FY2020) is outside the ICD-10 code sets")
    assert "cannot be coded" in err.value.reason


@pytest.mark.parametrize(
    ("day", "valid"),
    [(date(2024, 9, 30), False), (date(2024, 10, 1), True)],  # FY2024 / FY2025
)
def test_a_code_new_in_fy2025_is_refused_on_a_fy2024_date(
    coder: Coder, day: date, valid: bool
) -> None:
    # E66.811 (obesity, class 1) was added to ICD-10-CM on 2024-10-01 (FY2025).
    enc = encounter(
        service_start=day,
        service_end=day,
        diagnoses=[dx("E66.811", primary=True)],
        services=[service("99213", service_date=day)],
    )
    if valid:
        coded = coder.code(enc, coded_at=RECEIVED_AT)
        assert coded.diagnoses[0].code == "E66811"
        assert coded.code_set_version == "ICD-10-CM FY2025"
        return
    with pytest.raises(InputError) as err:
        coder.code(enc, coded_at=RECEIVED_AT)
    assert err.value.field == "diagnoses[0].code"
    assert err.value.reason == "'E66.811' is not a valid ICD-10-CM code on 2024-09-30 (FY2024)"


# --- E/M --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "minutes", "mdm", "level"),
    [
        ("established", 9, None, None),
        ("established", 10, None, "99212"),
        ("established", 29, None, "99213"),
        ("established", 30, None, "99214"),
        ("established", 40, None, "99215"),
        ("new", 29, None, "99202"),
        ("new", 45, None, "99204"),
        ("new", 60, None, "99205"),
        ("established", None, "straightforward", "99212"),
        ("established", None, "moderate", "99214"),
        ("new", None, "high", "99205"),
        ("established", 25, "moderate", "99214"),  # whichever supports more
        ("established", 41, "low", "99215"),
    ],
)
def test_em_level_from_time_or_mdm(
    family: em.Family, minutes: int | None, mdm: em.MdmLevel | None, level: str | None
) -> None:
    assert em.supported(family, em.Documented(minutes, mdm)).code == level


def test_em_documentation_is_read_from_the_note() -> None:
    doc = em.documented("Total time spent on the date of the encounter: 32 minutes. MDM: low.")
    assert doc == em.Documented(32, "low")
    assert em.documented("I spent 45 min with the patient").minutes == 45
    assert em.documented("Medical decision making: high complexity").mdm == "high"
    assert not em.documented("Follow up in two weeks.")


def test_billed_em_above_the_documentation_goes_to_review_and_is_kept(coder: Coder) -> None:
    enc = encounter(
        services=[service("99214", "220.00", dx_refs=["E11.9", "I10"])],
        note_text="Established patient, diabetes follow-up. Total time: 22 minutes.",
    )
    coded = coder.code(enc, coded_at=RECEIVED_AT)
    assert coded.em_level == "99214" and coded.lines[0].code == "99214"  # never replaced
    assert any("billed 99214 is higher than the 99213" in r for r in coded.review_reasons)


def test_billed_em_that_matches_passes(coder: Coder) -> None:
    enc = encounter(services=[service("99204", "270.00")], note_text="New patient. MDM: moderate.")
    coded = coder.code(enc, coded_at=RECEIVED_AT)
    assert coded.em_level == "99204" and coded.review_reasons == []


def test_em_without_time_or_mdm_is_not_second_guessed(coder: Coder) -> None:
    coded = coder.code(encounter(), coded_at=RECEIVED_AT)
    assert coded.em_level == "99213" and coded.review_reasons == []


# --- service lines ----------------------------------------------------------------------


def test_visit_without_references_points_at_the_first_four_diagnoses(coder: Coder) -> None:
    codes = ["E11.9", "I10", "E78.5", "N18.30", "E66.811"]
    enc = encounter(
        diagnoses=[dx(c, primary=(n == 0)) for n, c in enumerate(codes)],
        services=[service("99214"), service("83036", "38.00")],
    )
    coded = coder.code(enc, coded_at=RECEIVED_AT)
    assert coded.lines[0].dx_pointers == [1, 2, 3, 4]
    assert coded.lines[1].dx_pointers == [1]


def test_bad_modifier_is_a_dead_letter_and_five_go_to_review(coder: Coder) -> None:
    with pytest.raises(InputError) as err:
        coder.code(
            encounter(services=[service("99213", modifiers=["25", "XYZ"])]), coded_at=RECEIVED_AT
        )
    assert err.value.field == "services[0].modifiers[1]"
    coded = coder.code(
        encounter(services=[service("99213", modifiers=["25", "59", "XS", "GT", "95"])]),
        coded_at=RECEIVED_AT,
    )
    assert any("5 modifiers but a claim line holds 4" in r for r in coded.review_reasons)


# --- HCC --------------------------------------------------------------------------------


MEDICARE = Coverage(
    payer_id="MEDICARE_B_AL", payer_name="MEDICARE PART B", plan_type="MB", member_id="1EG4TE5MK73"
)


def test_hcc_categories_and_score_for_a_medicare_member(coder: Coder) -> None:
    enc = encounter(
        coverage=MEDICARE,
        diagnoses=[dx("E11.22", primary=True), dx("N18.31")],
        services=[service("99214", dx_refs=["E11.22", "N18.31"])],
    )
    coded = coder.code(enc, coded_at=RECEIVED_AT)
    # V28: diabetes with chronic complications is HCC 37, CKD stage 3a is HCC 329.
    assert coded.hcc == ["HCC37", "HCC329"]
    assert coded.hcc_model == "CMS-HCC V28 2026"
    assert coded.hcc_risk_score is not None and coded.hcc_risk_score > 0.5


def test_hcc_accumulates_the_members_year_and_needs_a_face_to_face_service(
    coder: Coder,
) -> None:
    enc = encounter(
        coverage=MEDICARE, diagnoses=[dx("I10", primary=True)], services=[service("99213")]
    )
    alone = coder.code(enc, coded_at=RECEIVED_AT)
    with_history = coder.code(enc, coded_at=RECEIVED_AT, history=["I5022"])
    assert alone.hcc == [] and with_history.hcc == ["HCC226"]  # heart failure, from before
    assert (with_history.hcc_risk_score or 0) > (alone.hcc_risk_score or 0)
    lab_only = encounter(
        coverage=MEDICARE, diagnoses=[dx("I50.22", primary=True)], services=[service("83036")]
    )
    assert coder.code(lab_only, coded_at=RECEIVED_AT).hcc == []
    assert eligible("inpatient", []) and not eligible("professional", ["83036"])


def test_no_risk_score_outside_medicare() -> None:
    result = risk(
        ["E1122"], birth_date=date(1980, 1, 1), sex="F", on=date(2026, 3, 2), plan_type="BL"
    )
    assert result.hccs == ["HCC37"] and result.score is None
