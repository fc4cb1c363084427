"""The HCC model asked once per input that can change its answer gives what asking it
every time gives.

``hcc.risk`` keeps hccinfhir's answers under a narrower key than its inputs
(``hcc._model_key``): the diagnoses the V28 map knows, the sex, and the age band, or the
exact age when one of those diagnoses has an age edit. The judge is the path before: the
model asked for every call (``reference_risk``, the code as it was). Checked: the key
against hccinfhir's own demographics for every age; every age 0-110, both sexes and no
sex, for every diagnosis set of the simulators' encounters and for the age-edited
diagnoses; and coding both simulator mixes (members' years accumulating in the risk
history) with and without the cache, coded encounter for coded encounter.
"""

from __future__ import annotations

from datetime import date

import pytest
import sim_corpus
from hccinfhir.model_demographics import categorize_demographics

from pipeline.errors import InputError
from services.coding import hcc
from services.coding.review import BY_PATIENT, ReviewFlow, ReviewStore
from services.coding.risk_history import RiskHistory

ON = date(2026, 3, 1)
AGES = range(0, 111)
SEXES = ("M", "F", "U")
PLANS = ("MB", "CI")


def reference_risk(
    codes: object, *, birth_date: date, sex: str, on: date, plan_type: str
) -> hcc.RiskResult:
    """``hcc.risk`` before the cache: hccinfhir asked on every call."""
    dx = sorted({c.replace(".", "").upper() for c in codes})  # type: ignore[attr-defined]
    age = hcc.age_on(birth_date, on)
    sex_code = sex if sex in ("M", "F") else "F"
    result = hcc.calculate_raf(
        dx, model_name=hcc.MODEL, age=age, sex=sex_code, orec="0" if age >= 65 else "1"
    )
    hccs = sorted(result.hcc_list, key=lambda h: (len(h), h))
    score = None
    if plan_type in hcc.MEDICARE_PLANS and sex in ("M", "F"):
        score = round(float(result.risk_score), 3)
    return hcc.RiskResult([f"HCC{h}" for h in hccs], score, hcc.MODEL_LABEL)


def born(age: int) -> date:
    return date(ON.year - age, ON.month, ON.day)


def coded_mixes(flow_risk: object = None) -> list[object]:
    """Both simulator mixes through coding as the live service runs it: coded on their
    own partition, then completed with the member's year from the risk history."""
    out: list[object] = []
    for mix in sim_corpus.MIXES:
        flow = ReviewFlow(sim_corpus.coder(), ReviewStore(":memory:"), by_patient=True)
        history = RiskHistory(":memory:")
        for enc in sim_corpus.encounters(mix):
            try:
                outs = flow.encounter(enc, now=sim_corpus.RECEIVED_AT)
            except InputError as exc:
                out.append(str(exc))
                continue
            for topic, _, value in outs:
                if topic == BY_PATIENT:
                    outs += flow.risk(value, history)  # type: ignore[arg-type]
                out.append((topic, value.model_dump()))
        history.close()
    return out


@pytest.fixture(autouse=True)
def empty_cache() -> None:
    hcc._raf_cache.clear()
    hcc._mapped_of.clear()


def test_the_age_band_decides_the_models_demographics() -> None:
    """Within a band, hccinfhir's demographics differ only in the age itself, and the
    model's 65 boundary (aged, OREC, coefficient prefix) never falls inside one."""
    for sex in ("M", "F"):
        by_band: dict[int, dict[str, object]] = {}
        for age in range(0, 131):
            orec = "0" if age >= 65 else "1"
            seen = categorize_demographics(age, sex, orec=orec).model_dump()
            seen.pop("age")
            seen["aged"] = age >= 65
            first = by_band.setdefault(hcc.age_band(age), seen)
            assert seen == first, (sex, age)
    assert [hcc.age_band(a) for a in (0, 34, 35, 64, 65, 94, 95, 120)] == [
        0, 0, 1, 4, 5, 10, 11, 11
    ]  # fmt: skip


def test_every_age_and_sex_for_the_corpus_diagnoses() -> None:
    """Every age 0-110 and sex for: a diagnosis list of the simulators' encounters per
    distinct set of codes the model maps (with the codes it ignores), all of them together,
    and one age-edited diagnosis per kind of edit (their thresholds: 1, 2, 14, 17, 18, 49
    and 65)."""
    by_mapped: dict[tuple[str, ...], tuple[str, ...]] = {}
    for mix in sim_corpus.MIXES:
        for coded in sim_corpus.coded(mix):
            codes = tuple(sorted(d.code for d in coded.diagnoses if d.billable))
            by_mapped.setdefault(hcc._model_key(list(codes), 70, "F")[0], codes)
    assert len(by_mapped) > 5
    edits: dict[tuple[int | None, int | None], str] = {}
    for (dx, model), rule in sorted(hcc.edits_default.items()):
        if model == hcc.MODEL and rule.edit_type != "sex":
            edits.setdefault((rule.age_min, rule.age_max), dx)
    assert len(edits) >= 6
    together = sorted({c for codes in by_mapped.values() for c in codes})
    cases = [list(c) for c in by_mapped.values()] + [[dx] for dx in edits.values()] + [together]
    for codes in cases:
        for age in AGES:
            for sex in SEXES:
                for plan in PLANS if age % 10 == 0 else PLANS[:1]:
                    kw = {"birth_date": born(age), "sex": sex, "on": ON, "plan_type": plan}
                    assert hcc.risk(codes, **kw) == reference_risk(codes, **kw), (codes, kw)


def test_an_age_edit_keeps_the_exact_age() -> None:
    """J44.9 (COPD) counts from age 18 only: one band (0-34) holds both answers."""
    under = hcc.risk(["J44.9"], birth_date=born(17), sex="F", on=ON, plan_type="MB")
    over = hcc.risk(["J44.9"], birth_date=born(18), sex="F", on=ON, plan_type="MB")
    assert hcc.age_band(17) == hcc.age_band(18)
    assert under.hccs == [] and over.hccs == ["HCC280"]
    assert under == reference_risk(["J44.9"], birth_date=born(17), sex="F", on=ON, plan_type="MB")


def test_born_after_the_visit_is_still_the_models_error() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        hcc.risk(["E119"], birth_date=date(2026, 3, 2), sex="F", on=ON, plan_type="MB")


def test_coding_both_mixes_is_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    cached = coded_mixes()
    hits = len(hcc._raf_cache)
    monkeypatch.setattr(hcc, "risk", reference_risk)
    assert coded_mixes() == cached
    assert 0 < hits < len(cached) / 4  # the cache answered most calls
