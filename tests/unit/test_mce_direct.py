"""The Medicare Code Editor asked directly gives what ``MceEditor.edit`` gives.

``_Mce._ask`` writes the request as text and calls the native editor itself, reading the
usual no-edit answer by its text; the judge is ``_Mce._edit``, the editor's own ``edit``
(its checks, ``json.dumps``, ``json.loads``). Checked: the request bytes against
``json.dumps`` for plain and awkward codes; the answers for every question coding and
validation ask about both simulator mixes, and for edge cases (dates outside the tables,
ages, sexes, discharge statuses, codes the editor does not know, long claims); and the
same errors for what ``edit`` refuses.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest
import sim_corpus

from services.refdata import codesets as cs
from services.refdata.codesets import MceClaim, _Mce
from services.validation.rules import validate

AWKWARD = ["I10", "", "i10", "E11.9", 'A"B', "A\\B", "Ä01", "\u2028", "Z 00", "A\x00"]


def payload(on: date, age: Any, sex: Any, status: Any, pdx: str, sdx: Any, pcs: Any) -> Any:
    return {
        "discharge_date": int(on.strftime("%Y%m%d")),
        "age": age,
        "sex": sex,
        "discharge_status": status,
        "pdx": {"code": pdx},
        "sdx": [{"code": c} for c in sdx],
        "procedures": [{"code": c} for c in pcs],
    }


def test_the_request_is_what_json_dumps_writes() -> None:
    on = date(2026, 3, 1)
    cases = [
        (60, 2, 1, "I10", (), ()),
        (0, 0, 20, "Z3800", ("P0710", "Q210"), ("0VTTXZZ",)),
        (124, 1, 99, "O80", tuple(AWKWARD), tuple(AWKWARD)),
        *[(45, 1, 1, code, (code,), (code,)) for code in AWKWARD],
    ]
    for age, sex, status, pdx, sdx, pcs in cases:
        want = json.dumps(payload(on, age, sex, status, pdx, sdx, pcs)).encode()
        assert cs._request(20260301, age, sex, status, pdx, sdx, pcs) == want


def questions() -> list[tuple[Any, ...]]:
    """Every question coding and validation ask the editor about both mixes."""
    asked: list[tuple[Any, ...]] = []
    ask = _Mce._ask

    def record(self: _Mce, *args: Any) -> Any:
        asked.append(args)
        return ask(self, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_Mce, "_ask", record)
        fresh = cs.CodeSets.load(sim_corpus.refdata())  # type: ignore[arg-type]
        for mix in sim_corpus.MIXES:
            for coded in sim_corpus.coded(mix):
                validate(coded, fresh, validated_at=sim_corpus.VALIDATED_AT)
        fresh.close()
    return asked


def edge_cases() -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for on in (date(2000, 1, 1), date(2015, 9, 30), date(2023, 10, 1), date(2099, 12, 31)):
        out.append((on, 60, 2, 1, "I10", (), ()))
    on = date(2026, 3, 1)
    for age in (0, 1, 17, 65, 124, 150):
        for sex in (0, 1, 2):
            out.append((on, age, sex, 1, "O80", ("Z370",), ()))
            out.append((on, age, sex, 1, "N401", (), ("0VT04ZZ",)))
    for status in (0, 1, 20, 30, 99, 123456):
        out.append((on, 70, 0, status, "Z0000", (), ()))
    for code in AWKWARD:
        out.append((on, 70, 0, 1, code, (code,), (code,)))
    out.append(
        (on, 70, 1, 1, "I5020", tuple(["E119", "I10", "N179", "Z23"] * 7), ("02703DZ",) * 30)
    )
    return out


def test_every_answer_is_the_editors() -> None:
    mce = _Mce()
    asked = questions()
    assert len(asked) > 200
    kinds = set()
    for args in [*asked, *edge_cases()]:
        direct = mce._ask(*args)
        assert direct == mce._edit(*args), args
        kinds.add("none" if direct is None else "edits" if direct else "clean")
    assert kinds == {"none", "edits", "clean"}
    mce.close()


@pytest.mark.parametrize(
    "args",
    [
        (date(1999, 12, 31), 60, 2, 1, "I10", (), ()),  # before the editor's date range
        (date(2101, 1, 1), 60, 2, 1, "I10", (), ()),
        (date(2026, 3, 1), True, 2, 1, "I10", (), ()),
        (date(2026, 3, 1), 60, 3, 1, "I10", (), ()),
        (date(2026, 3, 1), 60, 2, "01", "I10", (), ()),
        (date(2026, 3, 1), 60.0, 2, 1, "I10", (), ()),
    ],
)
def test_what_edit_refuses_is_refused_alike(args: tuple[Any, ...]) -> None:
    mce = _Mce()
    with pytest.raises(ValueError) as direct:
        mce._ask(*args)
    with pytest.raises(ValueError) as judged:
        mce._edit(*args)
    assert str(direct.value) == str(judged.value)
    mce.close()


def test_a_closed_editor_says_so() -> None:
    mce = _Mce()
    mce.close()
    with pytest.raises(RuntimeError, match="closed"):
        mce._ask(date(2026, 3, 1), 60, 2, 1, "I10", (), ())


def test_claims_and_codes_ask_through_the_direct_path() -> None:
    mce = _Mce()
    claim = MceClaim(date(2026, 3, 1), 30, 0, 1, "O80")
    assert mce._claim_edits(claim) == mce._edit(claim.on, 30, 0, 1, "O80", (), ())
    assert mce._edits(date(2026, 3, 1), "I10", "E119", None) == mce._edit(
        date(2026, 3, 1), 60, 2, 1, "I10", ("E119",), ()
    )
    mce.close()
