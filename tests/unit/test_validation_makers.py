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
    monkeypatch.setattr(engine, "_edit", engine._edit_made)  # not the edits kept
    judged = verdicts(mix, late)
    assert len(fast) > 100
    if late:
        assert sum(len(v.edits) for v in fast) >= len(fast)
    for i, (a, b) in enumerate(zip(fast, judged, strict=True)):
        same(a, b, f"[{i}]")
        assert a.model_dump_json() == b.model_dump_json()


@pytest.mark.parametrize("late", [False, True])
@pytest.mark.parametrize("mix", sim_corpus.MIXES)
def test_the_edits_kept_are_the_edits_made(
    mix: str, late: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An edit found among those kept (``engine._EDITS``) is the edit that would be made,
    also when the kept ones are emptied on the way (a bound of 3)."""
    monkeypatch.setattr(engine, "_EDITS", {})
    kept = verdicts(mix, late)
    assert len(engine._EDITS) > 1
    monkeypatch.setattr(engine, "_EDITS", {})
    monkeypatch.setattr(engine, "_EDITS_KEPT", 3)
    bounded = verdicts(mix, late)
    assert len(engine._EDITS) <= 3
    monkeypatch.setattr(engine, "_edit", engine._edit_made)
    made = verdicts(mix, late)
    for i, (a, b, c) in enumerate(zip(kept, bounded, made, strict=True)):
        same(a, c, f"[{i}]")
        same(b, c, f"[{i}]")
        assert a.model_dump_json() == b.model_dump_json() == c.model_dump_json()
