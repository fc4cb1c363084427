"""Inpatient coding: MS-DRG by discharge date, POA, sequencing rules, with textbook answers.

The expected MS-DRGs are the CMS definitions (MS-DRG V43, FY2026): AMI discharged alive
280/281/282 (with MCC / with CC / without CC/MCC), simple pneumonia with MCC 193,
septicemia without MV >96 hours with MCC 871, major hip and knee joint replacement
without MCC 470. Weights are the FY2026 relative weights from the CMS table.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from factories import CMS_DIR, RECEIVED_AT, dx, encounter, requires_cms, service

from pipeline.errors import InputError
from pipeline.models import CodedEncounter, DocumentedDiagnosis
from services.coding.domain import Coder
from services.refdata.drg import DrgWeights, grouper_version, version_label

ADMIT, DISCHARGE = date(2026, 2, 20), date(2026, 2, 23)


@pytest.fixture(scope="module")
def coder() -> Coder:
    return Coder.load(CMS_DIR if CMS_DIR.is_dir() else None)


def stay(
    coder: Coder, diagnoses: list[DocumentedDiagnosis], *pcs: str, **changes: Any
) -> CodedEncounter:
    services = [service("99223", service_date=ADMIT)] + [
        service(code, "0.00", system="icd10pcs", service_date=ADMIT) for code in pcs
    ]
    fields: dict[str, Any] = {
        "setting": "inpatient",
        "place_of_service": "21",
        "service_start": ADMIT,
        "service_end": DISCHARGE,
        "admission_date": ADMIT,
        "discharge_status": "01",
        "diagnoses": diagnoses,
        "services": services,
    }
    return coder.code(encounter(**(fields | changes)), coded_at=RECEIVED_AT)


@pytest.mark.parametrize(
    ("secondary", "drg", "severity"),
    [
        ([], "282", "without CC/MCC"),
        (["N17.9"], "281", "with CC"),  # acute kidney failure: a CC
        (["J96.01"], "280", "with MCC"),  # acute respiratory failure with hypoxia: an MCC
    ],
)
def test_nstemi_drg_by_cc_and_mcc(
    coder: Coder, secondary: list[str], drg: str, severity: str
) -> None:
    diagnoses = [dx("I21.4", primary=True, poa="Y")] + [dx(c, poa="Y") for c in secondary]
    coded = stay(coder, diagnoses)
    assert coded.drg is not None
    assert coded.drg.code == drg
    assert coded.drg.description and severity in coded.drg.description
    assert coded.drg.mdc == "05"
    assert coded.drg.grouper_version == "MS-DRG V43.0"
    assert coded.review_reasons == []


@requires_cms
def test_drg_weight_comes_from_the_cms_table(coder: Coder) -> None:
    coded = stay(coder, [dx("I21.4", primary=True, poa="Y"), dx("J96.01", poa="Y")])
    assert coded.drg is not None and coded.drg.weight == pytest.approx(1.6041)


def test_pneumonia_with_sepsis_after_admission_is_drg_193(coder: Coder) -> None:
    # Sepsis that develops after admission (POA N) is secondary: pneumonia is principal
    # (guideline I.C.1.d.4), and A41.9 as an MCC gives simple pneumonia with MCC.
    coded = stay(coder, [dx("J18.9", poa="Y"), dx("A41.9", poa="N")])
    assert [d.code for d in coded.diagnoses] == ["J189", "A419"]
    assert coded.drg is not None and coded.drg.code == "193"
    assert coded.review_reasons == []


def test_sepsis_present_on_admission_is_sequenced_first(coder: Coder) -> None:
    coded = stay(coder, [dx("J18.9", poa="Y"), dx("A41.9", poa="Y")])
    assert [(d.code, d.sequence) for d in coded.diagnoses] == [("A419", 1), ("J189", 2)]
    assert coded.drg is not None and coded.drg.code == "871"
    assert coded.review_reasons == []


def test_sepsis_on_admission_against_an_ehr_principal_goes_to_review(coder: Coder) -> None:
    coded = stay(coder, [dx("J18.9", primary=True, poa="Y"), dx("A41.9", poa="Y")])
    assert [d.code for d in coded.diagnoses] == ["J189", "A419"]  # kept as sent
    assert coded.drg is not None and coded.drg.code == "193"
    assert any("I.C.1.d.4" in r for r in coded.review_reasons)


def test_hip_replacement_is_drg_470(coder: Coder) -> None:
    coded = stay(coder, [dx("M16.11", primary=True, poa="Y")], "0SR9019")
    assert [p.code for p in coded.pcs_procedures] == ["0SR9019"]
    assert coded.drg is not None and coded.drg.code == "470"
    assert coded.drg.mdc == "08"


def test_poa_indicators_are_carried_and_checked(coder: Coder) -> None:
    coded = stay(coder, [dx("I21.4", primary=True, poa="y"), dx("N17.9", poa="N")])
    assert [d.poa for d in coded.diagnoses] == ["Y", "N"]
    bad = stay(coder, [dx("I21.4", primary=True, poa="Q")])
    assert any("'Q' is not a present-on-admission indicator" in r for r in bad.review_reasons)


def test_missing_poa_on_a_hac_code_makes_the_stay_ungroupable(coder: Coder) -> None:
    # T80.211A (CLABSI) is a hospital-acquired condition: without POA the grouper cannot
    # decide whether it may count, and returns an error code.
    coded = stay(coder, [dx("I21.4", primary=True, poa="Y"), dx("T80.211A")])
    assert any("grouper returned HAC_MISSING_ONE_POA" in r for r in coded.review_reasons)


@pytest.mark.parametrize(
    ("discharge", "version"),
    [
        (date(2022, 10, 1), 400),
        (date(2023, 4, 1), 401),
        (date(2023, 9, 30), 401),
        (date(2024, 10, 1), 420),
        (date(2025, 4, 1), 421),
        (date(2026, 3, 31), 430),
        (date(2026, 4, 1), 431),
        (date(2026, 10, 1), 440),
        (date(2022, 9, 30), None),
        (date(2027, 4, 1), None),
    ],
)
def test_grouper_version_follows_the_discharge_date(discharge: date, version: int | None) -> None:
    assert grouper_version(discharge) == version


def test_the_grouper_version_and_weight_follow_the_discharge(coder: Coder) -> None:
    coded = stay(
        coder,
        [dx("I21.4", primary=True, poa="Y")],
        service_start=date(2025, 3, 28),
        service_end=date(2025, 4, 2),
        admission_date=date(2025, 3, 28),
    )
    assert coded.drg is not None and coded.drg.code == "282"
    assert coded.drg.grouper_version == version_label(421) == "MS-DRG V42.1"
    assert coded.drg.weight is None  # FY2025: the FY2026 table must not price it
    assert coded.code_set_version == "ICD-10-CM FY2025"


@requires_cms
def test_drg_weights_load_by_fiscal_year() -> None:
    weights = DrgWeights.load(CMS_DIR)
    assert weights is not None and weights.years() == [2026]
    row = weights.weight("470", date(2026, 1, 15))
    assert row is not None and row.weight == pytest.approx(1.9289)
    assert weights.weight("470", date(2025, 9, 30)) is None
    assert DrgWeights.load(None) is None


def test_invalid_pcs_procedure_is_a_dead_letter(coder: Coder) -> None:
    with pytest.raises(InputError) as err:
        stay(coder, [dx("M16.11", primary=True, poa="Y")], "0SR90ZZ")
    assert err.value.field == "services[1].code"
