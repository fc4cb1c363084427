"""The principal-diagnosis edits and the ICD-10-CM checks kept per code and date are the
ones worked out each time.

``CodeSets.principal_dx_edits`` keeps its answers per code and date of service; the judge
is ``CodeSets._principal_dx_edits`` (the path before), on a code set that never answered
before: every diagnosis code of the simulators' encounters (both mixes) plus manifestation,
external-cause, header, invalid and misspelt codes, on days around each MCE version's
bounds and outside the covered range. ``is_manifestation`` reads the same answer. The
ICD-10-CM check, kept per code as asked and date, is judged the same way by
``CodeSets._icd10cm`` (the exact date's answer; ``test_mce_versions.py`` judges it on the
normalized codes every day).
"""

from __future__ import annotations

from datetime import date, timedelta

import sim_corpus

from services.refdata.codesets import (
    ICD10_FIRST_DATE,
    ICD10_LAST_DATE,
    CodeSets,
    icd10_covered,
    mce_version_start,
)

#: Manifestations (G63, F02.80), external causes (W19.XXXA, V43.52XA), a header (E11), a
#: code new in a spring update (Z02.84), codes that do not exist, and spellings as sent.
ODD = ["G63", "F0280", "W19XXXA", "V4352XA", "E11", "Z0284", "ZZZ99", "", "e11.9 ", "I10.", "G30.9"]


def dates() -> list[date]:
    """The first and last day of each MCE version, a day inside, and days outside."""
    out = {ICD10_FIRST_DATE - timedelta(days=1), ICD10_LAST_DATE + timedelta(days=1)}
    day = ICD10_FIRST_DATE
    while day <= ICD10_LAST_DATE:
        start = mce_version_start(day)
        out |= {start, start - timedelta(days=1), start + timedelta(days=40)}
        day = start + timedelta(days=200)
    return sorted(out)


def test_answers_kept_are_the_answers_worked_out() -> None:
    codes = set(ODD)
    for mix in sim_corpus.MIXES:
        for coded in sim_corpus.coded(mix):
            codes |= {d.code for d in coded.diagnoses}
    kept, judge = CodeSets.load(None), CodeSets.load(None)
    try:
        for on in dates():
            for code in sorted(codes):
                expected = judge._principal_dx_edits(code, on)
                assert kept.principal_dx_edits(code, on) == expected, (code, on)
                assert kept.principal_dx_edits(code, on) == expected, (code, on)  # kept
                manifestation = "MANIFESTATION_AS_PDX" in expected if icd10_covered(on) else None
                assert kept.is_manifestation(code, on) == manifestation, (code, on)
                check = judge._icd10cm(code, on)
                assert kept.icd10cm(code, on) == check, (code, on)
                assert kept.icd10cm(code, on) == check, (code, on)  # kept
        assert kept.is_manifestation("G63", date(2026, 3, 2)) is True
        assert "E_CODE_AS_PDX" in kept.principal_dx_edits("W19.XXXA", date(2026, 3, 2))
    finally:
        kept.close()
        judge.close()
