"""The Medicare Code Editor asked once per version gives what it gives for the exact date.

``CodeSets`` caches the MCE's answers by the first day of the MCE version in force
(1 October and 1 April) instead of by the date of service. The judge is the editor asked
about the exact date (``_Mce._edits`` / ``_claim_edits``, the path before): for codes whose
edits change at a version (a spring update's new codes, a fiscal year's), every day of the
covered range; for every code of the simulators' encounters (both mixes), the first, a
middle and the last day of each version; and coding and validation on those encounters
with the MCE asked per exact date give the same coded encounters and verdicts. The same
for the ICD-10-CM check, whose "valid" answers are kept per code and version
(``CodeSets._icd10cm``, worked out for the exact date, is the judge).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta

import pytest
import sim_corpus

from pipeline.errors import InputError
from services.coding.domain import Coder
from services.refdata.codesets import (
    _CARRIER_PDX,
    ICD10_FIRST_DATE,
    ICD10_LAST_DATE,
    CodeSets,
    MceClaim,
    _Mce,
    mce_version_start,
    normalize_code,
)
from services.validation.duplicates import DuplicateStore
from services.validation.rules import validate

#: Codes whose edits change at a version: new on 2023-04-01 (T74A1XA) and on 2024-04-01
#: (Z0284, an age edit), changed on 2023-10-01 (Q75029), and everyday ones.
CHANGING = ["T74A1XA", "Z0284", "Q75029", "I10", "E119"]


def days(first: date = ICD10_FIRST_DATE, last: date = ICD10_LAST_DATE) -> Iterator[date]:
    for n in range((last - first).days + 1):
        yield first + timedelta(days=n)


def versions() -> list[tuple[date, date]]:
    """(first, last) day of each MCE version in the covered range."""
    starts = sorted({mce_version_start(d) for d in days()})
    ends = [s - timedelta(days=1) for s in starts[1:]] + [ICD10_LAST_DATE]
    return list(zip(starts, ends, strict=True))


@pytest.fixture(scope="module")
def mce() -> Iterator[_Mce]:
    editor = _Mce()
    yield editor
    editor.close()


def corpus_codes() -> tuple[set[str], set[str]]:
    """Diagnosis and ICD-10-PCS codes of the simulators' coded encounters, both mixes."""
    dx: set[str] = set()
    pcs: set[str] = set()
    for mix in sim_corpus.MIXES:
        for coded in sim_corpus.coded(mix):
            dx |= {normalize_code(d.code) for d in coded.diagnoses}
            pcs |= {normalize_code(p.code) for p in coded.pcs_procedures}
    return dx, pcs


def test_versions_start_on_1_october_and_1_april() -> None:
    assert mce_version_start(date(2025, 9, 30)) == date(2025, 4, 1)
    assert mce_version_start(date(2025, 10, 1)) == date(2025, 10, 1)
    assert mce_version_start(date(2026, 3, 31)) == date(2025, 10, 1)
    assert mce_version_start(date(2026, 4, 1)) == date(2026, 4, 1)
    assert versions()[0] == (date(2022, 10, 1), date(2023, 3, 31))
    assert versions()[-1] == (date(2026, 10, 1), date(2027, 3, 31))


def test_every_day_the_version_answers_as_the_exact_date(mce: _Mce) -> None:
    _, pcs = corpus_codes()
    some_pcs = sorted(pcs)[:2]
    assert some_pcs, "the inpatient stays carry ICD-10-PCS codes"
    for day in days():
        for code in CHANGING:
            assert mce.edits(day, _CARRIER_PDX, code, None) == mce._edits(
                day, _CARRIER_PDX, code, None
            ), (code, day)
            assert mce.edits(day, code, None, None) == mce._edits(day, code, None, None)
        for code in some_pcs:
            assert mce.edits(day, _CARRIER_PDX, None, code) == mce._edits(
                day, _CARRIER_PDX, None, code
            ), (code, day)


def test_every_corpus_code_in_every_version(mce: _Mce) -> None:
    dx, pcs = corpus_codes()
    assert len(dx) > 40
    for first, last in versions():
        for day in (first, first + (last - first) / 2, last):
            for code in sorted(dx):
                for pdx, sdx in ((_CARRIER_PDX, code), (code, None)):
                    assert mce.edits(day, pdx, sdx, None) == mce._edits(day, pdx, sdx, None), (
                        code,
                        day,
                    )
            for code in sorted(pcs):
                assert mce.edits(day, _CARRIER_PDX, None, code) == mce._edits(
                    day, _CARRIER_PDX, None, code
                )
            claim = MceClaim(day, 70, 1, 1, "I214", tuple(sorted(dx)[:24]), tuple(sorted(pcs)))
            assert mce.claim_edits(claim) == mce._claim_edits(claim), day


def test_a_fiscal_year_key_would_be_wrong(mce: _Mce) -> None:
    """The spring update matters: the judge above fails a cache keyed by fiscal year."""
    march, april = date(2023, 3, 31), date(2023, 4, 1)
    assert mce._edits(march, _CARRIER_PDX, "T74A1XA", None) != mce._edits(
        april, _CARRIER_PDX, "T74A1XA", None
    )
    assert mce.edits(april, _CARRIER_PDX, "T74A1XA", None) != mce.edits(
        march, _CARRIER_PDX, "T74A1XA", None
    )


def exact_dates(codesets: CodeSets) -> CodeSets:
    """The code sets with the MCE asked about each exact date, uncached, and ICD-10-CM
    codes checked for the exact date (the path before)."""
    mce = codesets._mce
    mce.edits = mce._edits  # type: ignore[method-assign]
    mce.claim_edits = mce._claim_edits  # type: ignore[method-assign]
    mce.claim_edits_of = mce._ask  # type: ignore[method-assign]
    codesets.icd10cm = codesets._icd10cm  # type: ignore[method-assign]
    return codesets


@pytest.fixture(scope="module")
def codesets() -> Iterator[CodeSets]:
    sets = CodeSets.load(sim_corpus.refdata())  # type: ignore[arg-type]
    yield sets
    sets.close()


#: Codes whose check is not "valid" on some or all days: a header (E11), a code added on
#: 2024-10-01 (E66.811), one that is no code at all, and one that is not even shaped as one.
NOT_ALWAYS_VALID = ["E11", "E66811", "E1199", "XYZ"]


def test_icd10cm_every_day_as_the_exact_date(codesets: CodeSets) -> None:
    """The ICD-10-CM check kept per MCE version equals the exact date's, every day of the
    covered range and a month either side of it."""
    month = timedelta(days=31)
    answers: set[str] = set()
    for day in days(ICD10_FIRST_DATE - month, ICD10_LAST_DATE + month):
        for code in CHANGING + NOT_ALWAYS_VALID:
            check = codesets.icd10cm(code, day)
            assert check == codesets._icd10cm(code, day), (code, day)
            answers.add(check.status)
    assert answers == {"valid", "not_billable", "invalid", "unknown"}


def test_icd10cm_every_corpus_code_in_every_version(codesets: CodeSets) -> None:
    dx, _ = corpus_codes()
    for first, last in versions():
        for day in (first, first + (last - first) / 2, last):
            for code in sorted(dx):
                assert codesets.icd10cm(code, day) == codesets._icd10cm(code, day), (code, day)


def test_coding_and_validation_are_unchanged() -> None:
    refdata = sim_corpus.refdata()
    before_coder = Coder.load(refdata)  # type: ignore[arg-type]
    exact_dates(before_coder.codesets)
    before_sets = exact_dates(CodeSets.load(refdata))  # type: ignore[arg-type]
    try:
        for mix in sim_corpus.MIXES:
            coded = []
            for enc, after in zip(sim_corpus.encounters(mix), _coded_or_none(mix), strict=True):
                try:
                    before = before_coder.code(enc, coded_at=sim_corpus.RECEIVED_AT)
                except InputError as exc:
                    assert after == str(exc)
                    continue
                assert not isinstance(after, str)
                assert before.model_dump() == after.model_dump()
                coded.append(before)
            store = DuplicateStore(":memory:")
            at = sim_corpus.VALIDATED_AT
            for c, after_verdict in zip(coded, sim_corpus.validated(mix), strict=True):
                verdict = validate(c, before_sets, validated_at=at, history=store)
                store.record(c, verdict.outcome)
                assert verdict.model_dump() == after_verdict.model_dump()
            assert any(v.edits for v in sim_corpus.validated(mix))
    finally:
        before_coder.close()
        before_sets.close()


def _coded_or_none(mix: str) -> list[object]:
    """The corpus coded with the version-keyed MCE: each coded encounter or its error."""
    out: list[object] = []
    for enc in sim_corpus.encounters(mix):
        try:
            out.append(sim_corpus.coder().code(enc, coded_at=sim_corpus.RECEIVED_AT))
        except InputError as exc:
            out.append(str(exc))
    return out
