"""The risk step asks the HCC model again only when the member's year has other encounters.

By patient (the live service), an encounter is coded with an empty history, and the risk
step completes its HCCs with the member's other encounters of the year. With none, the
HCCs it was coded with are the year's already: the step keeps them instead of asking the
model a second time. The judge is the step as it was (``with_history`` on every record):
both simulator mixes, coded as the live service codes them, must give the same records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sim_corpus

from pipeline.errors import InputError
from pipeline.models import CodedEncounter, patient_key
from services.coding.review import BY_PATIENT, CODED, Output, ReviewFlow, ReviewStore, without_note
from services.coding.risk_history import RiskHistory


def risk_before(self: ReviewFlow, coded: CodedEncounter, history: RiskHistory) -> list[Output]:
    """``ReviewFlow.risk`` before: the HCCs worked out again for every record."""
    enc = coded.encounter
    key, year = patient_key(enc), enc.service_end.year
    if self.by_patient:
        coded = self.coder.with_history(coded, history.history(key, year, enc.encounter_id))
    history.record_risk(key, year, enc.encounter_id, self.coder.risk_codes(coded))
    return [(CODED, coded.encounter_id, without_note(coded))]


def coded_by_patient(mix: str, repeat: int = 2) -> list[Any]:
    """The mix's encounters coded by patient, each twice (the second time the member's year
    has the first), every record the flow writes, and the risk history's rows."""
    flow = ReviewFlow(sim_corpus.coder(), ReviewStore(":memory:"), by_patient=True)
    history = RiskHistory(":memory:")
    out: list[Any] = []
    for _ in range(repeat):
        for enc in sim_corpus.encounters(mix):
            try:
                outs = flow.encounter(enc, now=sim_corpus.RECEIVED_AT)
            except InputError as exc:
                out.append(str(exc))
                continue
            for topic, _, value in outs:
                if topic == BY_PATIENT:
                    outs += flow.risk(value, history)  # type: ignore[arg-type]
                out.append((topic, value.model_dump_json()))
    out.append(history.db.execute("SELECT * FROM risk_dx ORDER BY 1, 2, 3, 4").fetchall())
    history.close()
    return out


@pytest.mark.parametrize("mix", sim_corpus.MIXES)
def test_the_risk_step_writes_what_it_wrote_before(
    mix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[int] = []
    with_history: Callable[..., Any] = sim_corpus.coder().with_history

    def counted(coded: CodedEncounter, history: list[str], **kwargs: Any) -> CodedEncounter:
        asked.append(len(history))
        return with_history(coded, history, **kwargs)

    monkeypatch.setattr(sim_corpus.coder(), "with_history", counted)
    now = coded_by_patient(mix)
    once = len(asked)
    monkeypatch.setattr(ReviewFlow, "risk", risk_before)
    before = coded_by_patient(mix)
    assert now == before
    empty = sum(1 for n in asked[once:] if n == 0)
    assert empty > 0 and once > 0  # both cases met: no other encounter, and some
    assert once == len(asked) - once - empty  # only the empty ones were skipped


@pytest.mark.parametrize("mix", sim_corpus.MIXES)
def test_an_empty_year_gives_the_hccs_the_encounter_was_coded_with(mix: str) -> None:
    coder = sim_corpus.coder()
    for coded in sim_corpus.coded(mix):
        again = coder.with_history(coded, [])
        assert (again.hcc, again.hcc_risk_score, again.hcc_model) == (
            coded.hcc,
            coded.hcc_risk_score,
            coded.hcc_model,
        )
