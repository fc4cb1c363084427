"""The scrubber makes its verdicts and their edits unvalidated (``model_maker``): the judge
is pydantic's validation of the very same values. Both simulator mixes, validated on time
and three years late (every claim then past timely filing, and more edits on each), must
give the same verdicts, value for value and type for type, with the same fields set.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sim_corpus
from test_coding_makers import same

from pipeline.models import EditHit, ValidatedEncounter
from services.validation import engine
from services.validation.duplicates import DuplicateStore
from services.validation.rules import validate


def verdicts(mix: str, late: bool) -> list[Any]:
    store = DuplicateStore(":memory:")
    at = sim_corpus.VALIDATED_AT + timedelta(days=3 * 365 if late else 0)
    out = []
    for coded in sim_corpus.coded(mix):
        verdict = validate(coded, sim_corpus.codesets(), validated_at=at, history=store)
        store.record(coded, verdict.outcome)
        out.append(verdict)
    store.close()
    return out


@pytest.mark.parametrize("late", [False, True])
@pytest.mark.parametrize("mix", sim_corpus.MIXES)
def test_the_unvalidated_makes_give_the_validated_verdicts(
    mix: str, late: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = verdicts(mix, late)
    monkeypatch.setattr(engine, "_edit_hit", EditHit)
    monkeypatch.setattr(engine, "_validated", ValidatedEncounter)
    judged = verdicts(mix, late)
    assert len(fast) > 100
    if late:
        assert sum(len(v.edits) for v in fast) >= len(fast)
    for i, (a, b) in enumerate(zip(fast, judged, strict=True)):
        same(a, b, f"[{i}]")
        assert a.model_dump_json() == b.model_dump_json()
