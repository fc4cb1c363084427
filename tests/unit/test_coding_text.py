"""Coding from words: the text index, ConText, and notes read the way a coder reads them."""

from __future__ import annotations

from datetime import date

import pytest
from factories import RECEIVED_AT, codesets_bare, dx, encounter, service

from services.coding.context import sentences
from services.coding.domain import Coder
from services.coding.notes import mentions
from services.coding.terms import TermIndex, default_index


@pytest.fixture(scope="module")
def index() -> TermIndex:
    return default_index()


@pytest.fixture(scope="module")
def coder(index: TermIndex) -> Coder:
    return Coder(codesets_bare(), index=index)


def note_visit(note: str, *dxs_: str, billed: str = "99213", **changes: object) -> object:
    """An office visit whose diagnoses come from the note (and any structured codes)."""
    return encounter(
        diagnoses=[dx(c, primary=(n == 0)) for n, c in enumerate(dxs_)],
        services=[service(billed, "150.00")],
        note_text=note,
        **changes,
    )


# --- the index --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Hypertension", "I10"),  # from the "includes" note of I10
        ("Essential hypertension", "I10"),
        ("Chronic sinusitis (disorder)", "J329"),  # a SNOMED CT display, semantic tag dropped
        ("Acute bronchitis (disorder)", "J209"),
        ("Streptococcal sore throat (disorder)", "J020"),  # an inclusion term of J02.0
        ("NSTEMI", "I214"),
        ("acute kidney injury", "N179"),
        ("acute hypoxic respiratory failure", "J9601"),
        ("pneumonia", "J189"),
        ("right hip osteoarthritis", "M1611"),
        ("COPD with acute exacerbation", "J441"),
        ("atrial fibrillation", "I4891"),
        ("UTI", "N390"),
        ("Chronic kidney disease stage 1 (disorder)", "N181"),
    ],
)
def test_phrases_map_to_billable_codes(index: TermIndex, text: str, code: str) -> None:
    hits = index.match(text)
    assert hits and hits[0].code == code
    assert hits[0].confidence >= 0.9


def test_a_phrase_with_two_conditions_gives_both_codes_not_the_vaguer_one(
    index: TermIndex,
) -> None:
    hits = index.match("type 2 diabetes with diabetic CKD stage 3a")
    assert sorted(h.code for h in hits) == ["E1122", "N1831"]  # not E11.9 or N18.9 as well


def test_words_the_code_does_not_explain_lower_the_confidence(index: TermIndex) -> None:
    hits = index.match("Viral sinusitis (disorder)")
    assert hits[0].code == "J329" and hits[0].confidence < 0.5
    assert index.match("Hypertriglyceridemia (disorder)") == []


# --- ConText ----------------------------------------------------------------------------


def _modifiers(note: str) -> dict[str, set[str]]:
    found = mentions(note, default_index())
    return {m.text: set(m.modifiers) for m in found}


def test_context_negation_history_hypothetical_family_and_uncertainty() -> None:
    got = _modifiers(
        "Denies chest pain but reports fatigue. History of stroke. Return if fever. "
        "Possible pneumonia. Pneumonia was ruled out."
    )
    assert got["chest pain"] == {"negated"}
    assert got["fatigue"] == set()  # "but" ends the negation's scope
    assert got["stroke"] == {"historical"}
    assert got["fever"] == {"hypothetical"}
    found = mentions("Possible pneumonia. Pneumonia was ruled out.", default_index())
    assert [set(m.modifiers) for m in found] == [{"uncertain"}, {"negated"}]


def test_sections_modify_what_is_under_them() -> None:
    note = "PMH: COPD.\nFamily history: colon cancer in father.\nAssessment: pneumonia."
    got = {m.code: (set(m.modifiers), m.section) for m in mentions(note, default_index())}
    assert got["J449"] == ({"historical"}, "pmh")
    assert got["J189"] == (set(), "assessment")
    assert "family" in next(mod for code, (mod, _) in got.items() if code.startswith("C"))


def test_pseudo_triggers_do_not_negate() -> None:
    found = mentions("No change in his atrial fibrillation.", default_index())
    assert [(m.code, set(m.modifiers)) for m in found] == [("I4891", set())]


def test_sentence_split_keeps_decimals() -> None:
    assert len(sentences("A1c 7.5 today. Stable.")) == 2


# --- notes through the coder -----------------------------------------------------------


def test_denied_chest_pain_is_never_coded(coder: Coder) -> None:
    coded = coder.code(
        note_visit("Patient denies chest pain. Assessment: essential hypertension.", "I10"),
        coded_at=RECEIVED_AT,
    )
    assert not any(d.code.startswith("R07") for d in coded.diagnoses)
    assert [d.code for d in coded.diagnoses] == ["I10"]
    assert coded.review_reasons == []


def test_an_ehr_code_the_note_negates_goes_to_review(coder: Coder) -> None:
    coded = coder.code(note_visit("Patient denies chest pain.", "R07.9"), coded_at=RECEIVED_AT)
    assert [d.code for d in coded.diagnoses] == ["R079"]  # checked, not silently dropped
    assert any("note says 'chest pain' is absent" in r for r in coded.review_reasons)


def test_t2dm_with_ckd_3a_is_e11_22_then_n18_31(coder: Coder) -> None:
    coded = coder.code(
        note_visit("Assessment: Type 2 diabetes with diabetic CKD stage 3a."),
        coded_at=RECEIVED_AT,
    )
    assert [(d.code, d.sequence, d.source) for d in coded.diagnoses] == [
        ("E1122", 1, "inferred"),
        ("N1831", 2, "inferred"),
    ]
    assert coded.review_reasons == []
    assert coded.lines[0].dx_pointers == [1, 2]  # the visit points at both


def test_code_first_puts_the_etiology_before_the_manifestation(coder: Coder) -> None:
    # N18.31 says "code first any associated diabetic chronic kidney disease (E11.22)".
    coded = coder.code(
        encounter(
            diagnoses=[dx("N18.31"), dx("E11.22")],
            services=[service("99214", dx_refs=["N18.31", "E11.22"])],
        ),
        coded_at=RECEIVED_AT,
    )
    assert [d.code for d in coded.diagnoses] == ["E1122", "N1831"]
    assert coded.lines[0].dx_pointers == [2, 1]  # still the EHR's order of relevance
    assert coded.review_reasons == []


def test_missing_required_additional_code_goes_to_review(coder: Coder) -> None:
    coded = coder.code(
        encounter(diagnoses=[dx("E11.22", primary=True)], services=[service("99213")]),
        coded_at=RECEIVED_AT,
    )
    assert any(
        "E11.22 requires an additional code" in r and "N18.1-N18.6" in r
        for r in coded.review_reasons
    )


def test_excludes1_pair_goes_to_review(coder: Coder) -> None:
    coded = coder.code(
        encounter(diagnoses=[dx("E11.9", primary=True), dx("E11.A")], services=[service("99213")]),
        coded_at=RECEIVED_AT,
    )
    assert any("E11.9 and E11.A are not coded together" in r for r in coded.review_reasons)


def test_header_is_completed_only_when_the_record_says_how(coder: Coder) -> None:
    said = coder.code(
        encounter(
            diagnoses=[
                dx("E11", primary=True, display="Type 2 diabetes mellitus with hyperglycemia")
            ],
            services=[service("99213")],
        ),
        coded_at=RECEIVED_AT,
    )
    assert [(d.code, d.source, d.billable) for d in said.diagnoses] == [
        ("E1165", "completed", True)
    ]
    assert said.review_reasons == []
    vague = coder.code(
        encounter(
            diagnoses=[dx("E11", primary=True, display="Type 2 diabetes mellitus")],
            services=[service("99213")],
        ),
        coded_at=RECEIVED_AT,
    )
    assert [(d.code, d.billable) for d in vague.diagnoses] == [("E11", False)]
    assert "suggested E11.9 (0.70)" in vague.review_reasons[0]


def test_header_completed_from_the_note(coder: Coder) -> None:
    coded = coder.code(
        note_visit("A/P: type 2 diabetes mellitus with diabetic neuropathy.", "E11"),
        coded_at=RECEIVED_AT,
    )
    assert [(d.code, d.source) for d in coded.diagnoses] == [("E1140", "completed")]
    assert coded.review_reasons == []


def test_symptoms_are_not_added_beside_a_definitive_diagnosis_of_their_system(
    coder: Coder,
) -> None:
    coded = coder.code(
        note_visit("Cough and fever for three days. Assessment: acute bronchitis."),
        coded_at=RECEIVED_AT,
    )
    assert [d.code for d in coded.diagnoses] == ["J209"]
    # Nausea is not explained by hypertension: both are coded.
    other = coder.code(note_visit("Assessment: nausea. Hypertension."), coded_at=RECEIVED_AT)
    assert [d.code for d in other.diagnoses] == ["R110", "I10"]


def test_uncertain_diagnoses_are_coded_for_inpatients_only(coder: Coder) -> None:
    note = "Assessment: probable pneumonia. Hypertension."
    office = coder.code(note_visit(note), coded_at=RECEIVED_AT)
    assert [d.code for d in office.diagnoses] == ["I10"]  # IV.H: not coded outpatient
    stay = coder.code(
        encounter(
            setting="inpatient",
            place_of_service="21",
            service_start=date(2026, 2, 20),
            service_end=date(2026, 2, 23),
            diagnoses=[],
            services=[service("99223", service_date=date(2026, 2, 20))],
            note_text=note,
        ),
        coded_at=RECEIVED_AT,
    )
    assert [d.code for d in stay.diagnoses] == ["J189", "I10"]  # II.H: coded as established
    assert stay.diagnoses[0].confidence < 0.9
    assert any("guideline II.H" in r for r in stay.review_reasons)
    assert any(
        "principal diagnosis J18.9 was taken from the note" in r for r in stay.review_reasons
    )


def test_family_and_history_mentions_are_not_current_conditions(coder: Coder) -> None:
    coded = coder.code(
        note_visit(
            "Family history: diabetes in mother. History of pneumonia. "
            "Assessment: essential hypertension."
        ),
        coded_at=RECEIVED_AT,
    )
    assert [d.code for d in coded.diagnoses] == ["I10"]
    # "Family history of diabetes" is itself reportable (Z83.3), but only when relevant to
    # the visit: history codes are left to the coder.
