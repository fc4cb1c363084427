"""The EHR's own words for a code it sent: review when they clearly name something else.

The answer is kept per words and code (``Coder._misread``); the judge is the same check
worked out every time, by a coder that keeps nothing.
"""

from __future__ import annotations

import pytest
import sim_corpus
from factories import RECEIVED_AT, codesets_bare, dx, encounter, service

from pipeline.errors import InputError
from pipeline.models import CodedEncounter, Encounter
from services.coding.domain import Coder


class _Forgetful(dict[tuple[str, str], str | None]):
    """A memo that keeps nothing: every check is worked out again."""

    def __setitem__(self, key: tuple[str, str], value: str | None) -> None:
        pass


def _twin(coder: Coder) -> Coder:
    """A coder with the same code sets and index that keeps no answer."""
    twin = Coder(
        coder.codesets,
        drg_weights=coder.drg_weights,
        index=coder.index,
        threshold=coder.threshold,
        sources=coder.sources,
    )
    twin._misread = _Forgetful()
    return twin


def _code(coder: Coder, enc: Encounter) -> CodedEncounter | str:
    try:
        return coder.code(enc, coded_at=RECEIVED_AT)
    except InputError as exc:
        return f"{exc.field}: {exc.reason}"


def test_words_naming_another_condition_go_to_review_each_time() -> None:
    coder = Coder(codesets_bare())
    misread = encounter(
        diagnoses=[dx("I10", display="Type 2 diabetes mellitus", primary=True), dx("E11.9")],
        services=[service("99213", dx_refs=["I10"])],
    )
    agreeing = encounter(
        diagnoses=[dx("I10", display="Essential hypertension", primary=True), dx("E11.9")],
        services=[service("99213", dx_refs=["I10"])],
    )
    second = encounter(
        diagnoses=[dx("E11.9", primary=True), dx("I10", display="Type 2 diabetes mellitus")],
        services=[service("99213", dx_refs=["I10"])],
    )
    expected = (
        "diagnoses[{}]: the EHR sent I10 but its text 'Type 2 diabetes mellitus' reads as "
        "E11.9; a coder must choose"
    )
    for _ in range(2):  # worked out, then answered from what was kept
        assert coder.code(misread, coded_at=RECEIVED_AT).review_reasons == [expected.format(0)]
        assert coder.code(agreeing, coded_at=RECEIVED_AT).review_reasons == []
        assert coder.code(second, coded_at=RECEIVED_AT).review_reasons == [expected.format(1)]
    assert coder._misread == {
        ("Type 2 diabetes mellitus", "I10"): "E119",
        ("Essential hypertension", "I10"): None,
    }


@pytest.mark.parametrize("mix", sim_corpus.MIXES)
def test_kept_answers_agree_with_the_check_worked_out_each_time(mix: str) -> None:
    encounters = sim_corpus.encounters(mix)
    coder = Coder(
        sim_corpus.coder().codesets,
        drg_weights=sim_corpus.coder().drg_weights,
        index=sim_corpus.coder().index,
        threshold=sim_corpus.coder().threshold,
        sources=sim_corpus.coder().sources,
    )
    judge = _twin(coder)
    first = [_code(coder, enc) for enc in encounters]
    kept = len(coder._misread)
    again = [_code(coder, enc) for enc in encounters]
    assert kept > 0 and len(coder._misread) == kept  # the second pass asked nothing new
    assert first == again == [_code(judge, enc) for enc in encounters]
    assert judge._misread == {}
