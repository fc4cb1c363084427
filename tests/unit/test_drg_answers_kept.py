"""The MS-DRG grouper's kept answers are the grouper's answers.

``Grouper.group`` keeps its last answers by its arguments (validation groups each stay
twice: its HAC and its POA edits). The judge is ``Grouper._group``, the grouper asked:
every stay of the simulator's mix with inpatient stays, as validation asks about it, and
the same stays with their POA indicators changed, give the same answer both ways; the
validated stays are the same with and without the kept answers.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
import sim_corpus

from services.refdata import drg
from services.refdata.drg import Grouper
from services.validation.rules import institutional, validate


def asked_of(grouper: Grouper) -> list[dict[str, Any]]:
    """Every question validation asks the grouper about the mix with inpatient stays."""
    asked: list[dict[str, Any]] = []
    group = Grouper.group

    def record(self: Grouper, **kw: Any) -> Any:
        asked.append(kw)
        return group(self, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Grouper, "group", record)
        mp.setattr(institutional, "_grouper", lambda: grouper)
        for coded in sim_corpus.coded("all"):
            validate(coded, sim_corpus.codesets(), validated_at=sim_corpus.VALIDATED_AT)
    return asked


def test_kept_answers_are_the_groupers() -> None:
    grouper = Grouper()
    asked = asked_of(grouper)
    assert len(asked) > 20
    kept = len(grouper._answers)
    assert kept <= len(asked) / 2  # each stay asked at least twice
    other_poa = [
        {
            **kw,
            "principal": (kw["principal"][0], "N"),
            "secondary": [(c, "U") for c, _ in kw["secondary"]],
        }
        for kw in asked
    ]
    for kw in [*asked, *other_poa, *asked]:
        args = [kw[k] for k in ("discharge", "age", "sex", "discharge_status", "principal")]
        assert grouper.group(**kw) == grouper._group(*args, kw["secondary"], kw["procedures"])
    grouper.close()


def test_validated_stays_are_the_same_without_kept_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    def verdicts() -> list[str]:
        grouper = Grouper()
        monkeypatch.setattr(institutional, "_grouper", lambda: grouper)
        out = [
            validate(
                c, sim_corpus.codesets(), validated_at=sim_corpus.VALIDATED_AT
            ).model_dump_json()
            for c in sim_corpus.coded("all")
        ]
        grouper.close()
        return out

    kept = verdicts()
    monkeypatch.setattr(drg, "_ANSWERS_KEPT", 0)  # every answer dropped before the next
    assert verdicts() == kept


def test_the_kept_answers_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drg, "_ANSWERS_KEPT", 3)
    grouper = Grouper()
    for age in range(10):
        grouper.group(
            discharge=date(2026, 3, 1),
            age=40 + age,
            sex="F",
            discharge_status="01",
            principal=("I10", "Y"),
            secondary=[],
            procedures=[],
        )
        assert len(grouper._answers) <= 3
    grouper.close()
