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

The model is asked once per distinct input that can change its answer (``_model_key``):
only the diagnoses the V28 map knows count (a code it does not map is ignored by every
later step), and the age only through the CMS-HCC age/sex band and the 65 boundary, unless
one of those diagnoses has an age edit (then the exact age). On the simulators' encounters
about nineteen calls in twenty are answered from the cache; ``tests/unit/test_hcc_cache.py``
checks the key against hccinfhir's demographics and the model itself.
"""

from __future__ import annotations

import warnings
from bisect import bisect_left
from collections.abc import Iterable
from datetime import date
from typing import NamedTuple

with warnings.catch_warnings():
    # hccinfhir reads its tables with importlib.resources.path, deprecated in 3.11.
    warnings.simplefilter("ignore", DeprecationWarning)
    from hccinfhir import calculate_raf
    from hccinfhir.defaults import dx_to_cc_default, edits_default, proc_filtering_default

MODEL = "CMS-HCC Model V28"
MODEL_LABEL = "CMS-HCC V28 2026"
MEDICARE_PLANS = frozenset({"MA", "MB", "16"})

AGE_BANDS = (34, 44, 54, 59, 64, 69, 74, 79, 84, 89, 94)
"""Upper ages of the CMS-HCC age/sex cells (0-34 ... 90-94, then 95+). 64 is also where
the model's aged / non-aged split falls (and so the OREC this module passes)."""
_AGE_EDITED = frozenset(
    dx
    for (dx, model), rule in edits_default.items()
    if model == MODEL and (rule.age_min is not None or rule.age_max is not None)
)
"""Diagnoses whose HCC depends on the exact age (hccinfhir's age edits, e.g. J44.9)."""
_MAPPED = frozenset(dx for dx, model in dx_to_cc_default if model == MODEL)
"""The diagnoses the V28 map knows: ``(dx, MODEL) in dx_to_cc_default`` without a tuple
built per code asked."""
_CACHE_MAX = 65536
_raf_cache: dict[tuple[tuple[str, ...], int, str], tuple[tuple[str, ...], float]] = {}
_mapped_of: dict[tuple[str, ...], tuple[tuple[str, ...], bool]] = {}
"""``_mapped`` of the codes as asked (in the caller's order, with repeats): the same few
code lists come back member after member, and normalising, sorting and filtering them
took 0.9 us of each ``risk`` (2.1 -> 1.3 us a call over 300 office visits)."""


class RiskResult(NamedTuple):
    """The patient's HCCs ("HCC37") and risk score (None outside Medicare). A named tuple,
    not a frozen dataclass: one is made for every encounter and every by-patient record
    with a year, and the dataclass's ``object.__setattr__`` per field took 0.9 us of it."""

    hccs: list[str]
    score: float | None
    model: str


def eligible(setting: str, procedure_codes: Iterable[str]) -> bool:
    """Whether an encounter's diagnoses count for risk adjustment."""
    if setting == "inpatient":
        return True
    # isdisjoint stops at the first code on the list, as any() did, without a generator
    return not proc_filtering_default.isdisjoint(procedure_codes)


def age_on(birth: date, on: date) -> int:
    """Age in whole years on a date."""
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def risk(
    codes: Iterable[str], *, birth_date: date, sex: str, on: date, plan_type: str
) -> RiskResult:
    """HCCs and (for Medicare members) the risk score of a patient's diagnoses."""
    age = age_on(birth_date, on)
    sex_code = sex if sex in ("M", "F") else "F"  # hierarchies and labels do not use it
    if age < 0:
        hccs, raw_score = _model(_dx(codes), age, sex_code)  # born after the visit: its error
    else:
        asked = codes if isinstance(codes, tuple) else tuple(codes)
        found = _mapped_of.get(asked)
        if found is None:
            found = _mapped(_dx(asked))
            if len(_mapped_of) >= _CACHE_MAX:
                _mapped_of.clear()
            _mapped_of[asked] = found
        mapped, age_edited = found
        key = (mapped, age if age_edited else -1 - age_band(age), sex_code)
        answer = _raf_cache.get(key)
        if answer is None:
            answer = _model(_dx(asked), age, sex_code)
            if len(_raf_cache) >= _CACHE_MAX:
                _raf_cache.clear()
            _raf_cache[key] = answer
        hccs, raw_score = answer
    score: float | None = None
    if plan_type in MEDICARE_PLANS and sex in ("M", "F"):
        score = round(raw_score, 3)
    return RiskResult(list(hccs), score, MODEL_LABEL)


def _model(dx: list[str], age: int, sex_code: str) -> tuple[tuple[str, ...], float]:
    """hccinfhir's answer: the HCCs ("HCC37", in order) and the unrounded risk score."""
    result = calculate_raf(
        dx, model_name=MODEL, age=age, sex=sex_code, orec="0" if age >= 65 else "1"
    )
    hccs = sorted(result.hcc_list, key=lambda h: (len(h), h))
    return tuple(f"HCC{h}" for h in hccs), float(result.risk_score)


def _dx(codes: Iterable[str]) -> list[str]:
    """The diagnoses as the model is asked about them: undotted, upper case, each once, in
    order."""
    return sorted({c.replace(".", "").upper() for c in codes})


def _mapped(dx: list[str]) -> tuple[tuple[str, ...], bool]:
    """The diagnoses of ``dx`` the V28 map knows, and whether one of them has an age edit."""
    # filter and isdisjoint, not generator expressions: asked for every code list
    mapped = tuple(filter(_MAPPED.__contains__, dx))
    return mapped, not _AGE_EDITED.isdisjoint(mapped)


def _model_key(dx: list[str], age: int, sex_code: str) -> tuple[tuple[str, ...], int, str]:
    """What the model's answer depends on: the diagnoses it maps, the sex, and the age band
    (negative: -1 for 0-34 ... -12 for 95+), or the exact age when one of those diagnoses
    has an age edit. (``risk`` makes the same key from ``_mapped``, kept per code list.)"""
    mapped, age_edited = _mapped(dx)
    if age_edited:
        return mapped, age, sex_code
    return mapped, -1 - age_band(age), sex_code


def age_band(age: int) -> int:
    """The CMS-HCC age/sex cell an age falls in: 0 (0-34) ... 11 (95 and over): the first
    band whose upper age is at least ``age`` (``len(AGE_BANDS)`` past the last)."""
    return bisect_left(AGE_BANDS, age)
