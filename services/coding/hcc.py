"""CMS-HCC risk adjustment (V28) with hccinfhir: the patient's HCCs and risk score.

Risk adjustment is per patient and year, so the diagnoses that count are the patient's
from every risk-adjustment-eligible encounter of the calendar year so far (the caller
passes the earlier ones), not just this visit's. An encounter is eligible when it is an
inpatient stay or has a service line whose CPT/HCPCS code is on CMS's list of
face-to-face services (hccinfhir ships it per year). hccinfhir applies the V28
diagnosis-to-HCC map, the age/sex edits, the hierarchies and the coefficients of its
default model year (2026).

The score uses the community, non-dual, aged/disabled segment (OREC "0" from 65, "1"
under 65): the encounter does not say more. It is computed for Medicare members only
(claim filing indicator MA, MB or 16) because CMS-HCC is the Medicare Advantage model;
for other payers only the HCC list is given (ACA plans use the HHS-HCC model, which
hccinfhir does not implement).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

with warnings.catch_warnings():
    # hccinfhir reads its tables with importlib.resources.path, deprecated in 3.11.
    warnings.simplefilter("ignore", DeprecationWarning)
    from hccinfhir import calculate_raf
    from hccinfhir.defaults import proc_filtering_default

MODEL = "CMS-HCC Model V28"
MODEL_LABEL = "CMS-HCC V28 2026"
MEDICARE_PLANS = frozenset({"MA", "MB", "16"})


@dataclass(frozen=True)
class RiskResult:
    """The patient's HCCs ("HCC37") and risk score (None outside Medicare)."""

    hccs: list[str]
    score: float | None
    model: str


def eligible(setting: str, procedure_codes: Iterable[str]) -> bool:
    """Whether an encounter's diagnoses count for risk adjustment."""
    if setting == "inpatient":
        return True
    return any(code in proc_filtering_default for code in procedure_codes)


def age_on(birth: date, on: date) -> int:
    """Age in whole years on a date."""
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def risk(
    codes: Iterable[str], *, birth_date: date, sex: str, on: date, plan_type: str
) -> RiskResult:
    """HCCs and (for Medicare members) the risk score of a patient's diagnoses."""
    dx = sorted({c.replace(".", "").upper() for c in codes})
    age = age_on(birth_date, on)
    sex_code = sex if sex in ("M", "F") else "F"  # hierarchies and labels do not use it
    result = calculate_raf(
        dx, model_name=MODEL, age=age, sex=sex_code, orec="0" if age >= 65 else "1"
    )
    hccs = sorted(result.hcc_list, key=lambda h: (len(h), h))
    score: float | None = None
    if plan_type in MEDICARE_PLANS and sex in ("M", "F"):
        score = round(float(result.risk_score), 3)
    return RiskResult([f"HCC{h}" for h in hccs], score, MODEL_LABEL)
