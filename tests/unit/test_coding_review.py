"""Coder review: held encounters, decisions that release them, and the store behind it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from factories import RECEIVED_AT, codesets_bare, dx, encounter, service

from pipeline.errors import InputError
from pipeline.models import CodedEncounter, CoderDecision, CodingReview, DecidedDiagnosis
from services.coding.domain import Coder
from services.coding.review import ReviewFlow, ReviewStore, patient_key

DECIDED_AT = datetime(2026, 3, 3, 10, 15, tzinfo=UTC)


@pytest.fixture(scope="module")
def coder() -> Coder:
    return Coder(codesets_bare())


@pytest.fixture
def flow(coder: Coder) -> ReviewFlow:
    return ReviewFlow(coder, ReviewStore(":memory:"))


def header_visit() -> object:
    """A visit the coder must look at: E11 is a header, and nothing says which E11 code."""
    return encounter(
        diagnoses=[dx("E11", primary=True), dx("I10")],
        services=[service("99213", dx_refs=["E11", "I10"])],
    )


def decision(
    action: str = "confirm", *codes: str, eid: str = "d1", **changes: object
) -> CoderDecision:
    fields: dict[str, object] = {
        "event_id": eid,
        "encounter_id": "ENC-2026-000123",
        "coder_id": "jdoe-ccs",
        "action": action,
        "diagnoses": [DecidedDiagnosis(code=c) for c in codes],
        "decided_at": DECIDED_AT,
    }
    return CoderDecision.model_validate(fields | changes)


def test_clean_encounter_is_published_not_held(flow: ReviewFlow) -> None:
    outs = flow.encounter(encounter(), now=RECEIVED_AT)  # type: ignore[arg-type]
    assert [t for t, _, _ in outs] == ["encounters.coded.v1"]
    assert flow.store.held_count() == 0


def test_the_note_stays_with_coding_and_the_coder_not_on_the_coded_record(
    flow: ReviewFlow,
) -> None:
    """Coding reads the note; nothing after it does, so encounters.coded.v1 (and every
    verdict that embeds it) carries the encounter without it. The coder's review keeps it,
    and so does the held encounter the decision is applied to."""
    note = "Follow-up visit, patient stable, continue current medications."
    outs = flow.encounter(encounter(note_text=note), now=RECEIVED_AT)  # type: ignore[arg-type]
    (coded,) = [v for t, _, v in outs if t == "encounters.coded.v1"]
    assert coded.encounter.note_text is None  # type: ignore[attr-defined]
    assert coded == flow.coder.code(encounter(note_text=note), coded_at=RECEIVED_AT).model_copy(  # type: ignore[arg-type, attr-defined]
        update={"encounter": coded.encounter}  # type: ignore[attr-defined]
    )
    held = flow.encounter(
        encounter(
            note_text=note,
            diagnoses=[dx("E11", primary=True), dx("I10")],
            services=[service("99213", dx_refs=["E11", "I10"])],
        ),  # type: ignore[arg-type]
        now=RECEIVED_AT,
    )
    (review,) = [v for t, _, v in held if t == "coding.review.v1"]
    assert review.coded.encounter.note_text == note  # type: ignore[attr-defined]
    assert flow.store.held("ENC-2026-000123").encounter.note_text == note  # type: ignore[union-attr]
    (released,) = [v for t, _, v in flow.decision(decision("amend", "E11.65", "I10"))]
    assert released.encounter.note_text is None  # type: ignore[attr-defined]


def test_encounter_with_reasons_is_held_and_reviewed_not_coded(flow: ReviewFlow) -> None:
    outs = flow.encounter(header_visit(), now=RECEIVED_AT)  # type: ignore[arg-type]
    assert [t for t, _, _ in outs] == ["coding.review.v1"]
    review = outs[0][2]
    assert isinstance(review, CodingReview)
    assert review.reasons[0].startswith("diagnoses[0]: 'E11' is an ICD-10-CM header")
    assert flow.store.held("ENC-2026-000123") is not None


def test_amend_replaces_the_codes_rechecked_and_publishes(flow: ReviewFlow) -> None:
    flow.encounter(header_visit(), now=RECEIVED_AT)  # type: ignore[arg-type]
    outs = flow.decision(decision("amend", "E11.65", "I10"))
    assert [t for t, _, _ in outs] == ["encounters.coded.v1"]
    coded = outs[0][2]
    assert isinstance(coded, CodedEncounter)
    assert [(d.code, d.sequence, d.source, d.confidence) for d in coded.diagnoses] == [
        ("E1165", 1, "coder", 1.0),
        ("I10", 2, "ehr", 1.0),
    ]
    assert coded.review_reasons == [] and coded.confidence == 1.0
    assert coded.lines[0].dx_pointers == [1, 2]  # E11's pointer went to E11.65
    assert coded.coded_at == DECIDED_AT
    assert flow.store.held_count() == 0


def test_an_invalid_amend_is_refused_and_the_encounter_stays_held(flow: ReviewFlow) -> None:
    flow.encounter(header_visit(), now=RECEIVED_AT)  # type: ignore[arg-type]
    with pytest.raises(InputError) as err:
        flow.decision(decision("amend", "E11.2", "I10"))  # a header again
    assert err.value.field == "diagnoses[0].code"
    assert flow.store.held("ENC-2026-000123") is not None


def test_confirm_of_a_non_billable_code_is_refused(flow: ReviewFlow) -> None:
    flow.encounter(header_visit(), now=RECEIVED_AT)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="cannot confirm: E11 is not billable"):
        flow.decision(decision("confirm"))


def test_confirm_publishes_the_suggested_codes(flow: ReviewFlow) -> None:
    enc = encounter(
        diagnoses=[dx("444814009", system="snomed", display="Viral sinusitis", primary=True)],
        services=[service("99213", dx_refs=["444814009"])],
    )
    held = flow.encounter(enc, now=RECEIVED_AT)  # type: ignore[arg-type]
    assert held[0][0] == "coding.review.v1"
    outs = flow.decision(decision("confirm"))
    coded = outs[0][2]
    assert isinstance(coded, CodedEncounter)
    assert [(d.code, d.confidence) for d in coded.diagnoses] == [("J329", 1.0)]


def test_decisions_are_idempotent_and_the_first_one_wins(flow: ReviewFlow) -> None:
    flow.encounter(header_visit(), now=RECEIVED_AT)  # type: ignore[arg-type]
    first = flow.decision(decision("amend", "E11.65", "I10"))
    assert flow.decision(decision("amend", "E11.65", "I10")) == []  # the same event again
    with pytest.raises(InputError, match="already decided"):
        flow.decision(decision("amend", "E11.9", "I10", eid="d2"))
    # The encounter replayed after a crash: released again, with the same event id.
    again = flow.encounter(header_visit(), now=RECEIVED_AT)  # type: ignore[arg-type]
    assert [t for t, _, _ in again] == ["encounters.coded.v1"]
    assert again[0][2].event_id == first[0][2].event_id


def test_a_decision_that_arrives_first_waits_for_its_encounter(flow: ReviewFlow) -> None:
    assert flow.decision(decision("amend", "E11.65", "I10")) == []
    outs = flow.encounter(header_visit(), now=RECEIVED_AT)  # type: ignore[arg-type]
    assert [t for t, _, _ in outs] == ["encounters.coded.v1"]


def test_a_stored_decision_that_no_longer_applies_keeps_the_encounter_held(
    flow: ReviewFlow,
) -> None:
    flow.decision(decision("amend", "E11.2", "I10"))  # invalid, but not yet checkable
    outs = flow.encounter(header_visit(), now=RECEIVED_AT)  # type: ignore[arg-type]
    assert [t for t, _, _ in outs] == ["coding.review.v1"]
    assert "could not be applied" in outs[0][2].reasons[-1]  # type: ignore[attr-defined]
    assert flow.store.decision("ENC-2026-000123") is None  # a new decision can be made


def test_hcc_gathers_a_members_encounters_over_the_year(flow: ReviewFlow) -> None:
    from pipeline.models import Coverage

    medicare = Coverage(
        payer_id="MEDICARE_B_AL", payer_name="MEDICARE PART B", plan_type="MB", member_id="1EG4"
    )
    first = encounter(
        encounter_id="ENC-1",
        coverage=medicare,
        diagnoses=[dx("I50.22", primary=True)],
        services=[service("99214")],
    )
    second = encounter(
        encounter_id="ENC-2",
        coverage=medicare,
        diagnoses=[dx("E11.9", primary=True)],
        services=[service("99213")],
    )
    flow.encounter(first, now=RECEIVED_AT)
    coded = flow.encounter(second, now=RECEIVED_AT)[0][2]
    assert isinstance(coded, CodedEncounter)
    assert coded.hcc == ["HCC38", "HCC226"]  # this visit's diabetes, the earlier heart failure
    key = patient_key(second)
    assert flow.store.history(key, 2026, "ENC-3") == ["E119", "I5022"]


def test_the_store_survives_a_restart_only_with_what_was_committed(
    coder: Coder, tmp_path: Path
) -> None:
    path = tmp_path / "coding.sqlite3"
    store = ReviewStore(path)
    flow = ReviewFlow(coder, store)
    with store.atomic():
        flow.encounter(header_visit(), now=RECEIVED_AT)  # type: ignore[arg-type]
    store.commit()
    with store.atomic():
        flow.decision(decision("amend", "E11.65", "I10"))
    store.close()  # a crash before the batch was committed
    reopened = ReviewStore(path)
    assert reopened.held("ENC-2026-000123") is not None
    assert reopened.decision("ENC-2026-000123") is None
    reopened.close()


def test_a_failed_input_leaves_no_partial_writes(coder: Coder) -> None:
    store = ReviewStore(":memory:")
    flow = ReviewFlow(coder, store)
    flow.encounter(header_visit(), now=RECEIVED_AT)  # type: ignore[arg-type]
    with pytest.raises(InputError), store.atomic():
        flow.decision(decision("amend", "E11.65", "Z99.999"))
    assert store.held("ENC-2026-000123") is not None and store.decision("ENC-2026-000123") is None
