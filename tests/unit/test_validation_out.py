"""Validation builds its verdict's output without the frozen dataclass's ``__init__``
(``app._verdict_out``); the judge is ``Out(...)`` as it was: equal, field for field, for
the verdicts of both simulator mixes."""

from __future__ import annotations

import dataclasses

import pytest
import sim_corpus

from pipeline.stage import Out
from services.validation import app


@pytest.mark.parametrize("mix", sim_corpus.MIXES)
def test_verdict_out_is_the_dataclass_made(mix: str) -> None:
    for verdict in sim_corpus.validated(mix):
        made = app._verdict_out(verdict)
        judge = Out("encounters.validated.v1", verdict.encounter_id, verdict)
        assert made == judge
        names = [f.name for f in dataclasses.fields(Out)]
        assert [getattr(made, n) for n in names] == [getattr(judge, n) for n in names]
        assert made.value is verdict
        with pytest.raises(dataclasses.FrozenInstanceError):
            made.key = "other"  # type: ignore[misc]
