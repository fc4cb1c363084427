"""What a changed verdict does downstream: the claims side's replacement / void decision
(services/claims/corrections.py) and the replay's diff report (services/validation/replay.py)."""

from __future__ import annotations

from base64 import b64decode
from datetime import timedelta

import pytest
from factories import VALIDATED_AT, coded, codesets_bare, patch

from pipeline.models import ClaimRejection, EditHit, ValidatedEncounter
from services.claims.corrections import (
    PriorClaim,
    SubmittedClaims,
    correction_control_number,
    decide,
    read_billed,
    without_note,
    write,
)
from services.claims.domain import build_claim, claim_event_id, claim_id_for, plan_claim
from services.validation.packs import DEFAULT_PACK
from services.validation.replay import ReplayReport, Revalidator, Summary, diff, latest
from services.validation.rules import validate
from services.validation.worklist import WorkQueue

SENDER, RECEIVER = "CLAIMFLOW", "CLEARINGHOUSE"


def verdict(outcome: str = "clean", pack: str = "2026.12.2", **coded_changes: object):
    v = validate(coded(), codesets_bare(), validated_at=VALIDATED_AT)
    hit = EditHit(rule_id="CF-TEST", severity="warning", message="a warning for the test")
    edits = (
        []
        if outcome == "clean"
        else [
            hit.model_copy(
                update={"severity": {"warnings": "warning", "rejected": "error"}[outcome]}
            )
        ]
    )
    changes: dict[str, object] = {"outcome": outcome, "edits": edits, "rule_pack_version": pack}
    if coded_changes:
        changes["coded"] = patch(v.coded, **coded_changes)
    if outcome != "clean" or pack != "2026.12.2":
        changes["event_id"] = f"{v.event_id}-{outcome}-{pack}"
    return v.model_copy(update=changes)


def prior(
    billed: ValidatedEncounter,
    frequency: str = "1",
    payer_icn: str | None = None,
    *,
    rejected: bool = False,
) -> PriorClaim:
    claim_id = claim_id_for(billed.encounter_id)
    if rejected:
        return PriorClaim(claim_id, frequency, billed, payer_icn, rejected=True)  # type: ignore[arg-type]
    return PriorClaim(claim_id, frequency, billed, payer_icn)  # type: ignore[arg-type]


# --- decide: the pure rule -----------------------------------------------------------------


def test_nothing_billed_yet() -> None:
    assert decide(None, verdict("rejected")).kind == "none"
    original = decide(None, verdict("clean"))
    assert (original.kind, original.frequency, original.original_reference) == (
        "original",
        "1",
        None,
    )
    assert decide(None, verdict("warnings")).kind == "original"


def test_unchanged_verdict_of_a_billed_encounter_sends_nothing() -> None:
    billed = verdict("clean")
    again = verdict("clean", pack="2026.12.1")  # another pack, same outcome and content
    assert decide(prior(billed), again).kind == "none"


def test_changed_outcome_that_stays_billable_replaces_the_claim() -> None:
    billed = verdict("clean")
    answer = decide(prior(billed), verdict("warnings", pack="2026.12.1"))
    assert (answer.kind, answer.frequency) == ("replacement", "7")
    assert answer.original_reference == claim_id_for(billed.encounter_id)
    assert answer.source is not None and answer.source.outcome == "warnings"
    assert "clean -> warnings" in answer.reason


def test_replacement_refers_to_the_payer_claim_number_when_known() -> None:
    billed = verdict("clean")
    answer = decide(prior(billed, payer_icn="2226123456789"), verdict("warnings"))
    assert answer.original_reference == "2226123456789"


def test_recoded_content_replaces_even_with_the_same_outcome() -> None:
    billed = verdict("clean")
    recoded = verdict("clean", pack="2026.12.1", review_reasons=["x"])
    assert decide(prior(billed), recoded).kind == "replacement"


def test_rejected_verdict_voids_the_live_claim_from_what_was_billed() -> None:
    billed = verdict("warnings")
    for frequency in ("1", "7"):
        answer = decide(prior(billed, frequency), verdict("rejected"))
        assert (answer.kind, answer.frequency) == ("void", "8")
        assert answer.source is billed and answer.original_reference == claim_id_for(
            billed.encounter_id
        )


def test_after_a_void_a_billable_verdict_bills_again_and_a_rejected_one_nothing() -> None:
    billed = verdict("clean")
    assert decide(prior(billed, "8"), verdict("rejected")).kind == "none"
    again = decide(prior(billed, "8"), verdict("clean", pack="2026.12.1"))
    assert (again.kind, again.frequency) == ("original", "1")


def test_an_original_the_payer_refused_is_billed_again_as_an_original() -> None:
    billed = verdict("clean")
    refused = prior(billed, "1", rejected=True)
    fixed = verdict("clean", review_reasons=["member id corrected"])
    answer = decide(refused, fixed)
    assert (answer.kind, answer.frequency, answer.original_reference) == ("original", "1", None)
    assert answer.source is fixed
    # Even unchanged content bills again: the payer never took the claim.
    assert decide(refused, verdict("clean", pack="2026.12.1")).kind == "original"
    assert decide(refused, verdict("rejected")).kind == "none"  # nothing at the payer to void
    # The same claim accepted (not refused): unchanged behaviour, a replacement of it.
    assert decide(prior(billed, "1", "2226123456789"), fixed).frequency == "7"


def test_a_refused_replacement_or_void_leaves_the_earlier_claim_live() -> None:
    billed = verdict("warnings")
    refused_7 = prior(billed, "7", "2226123456789", rejected=True)
    again = decide(refused_7, verdict("warnings", pack="2026.12.1"))  # same content
    assert (again.kind, again.frequency, again.original_reference) == (
        "replacement",
        "7",
        "2226123456789",
    )
    assert decide(refused_7, verdict("rejected")).frequency == "8"
    refused_8 = prior(billed, "8", "2226123456789", rejected=True)
    assert decide(refused_8, verdict("warnings", pack="2026.12.1")).kind == "none"
    assert decide(refused_8, verdict("clean")).frequency == "7"
    assert decide(refused_8, verdict("rejected")).frequency == "8"


def test_successive_replacements_get_distinct_deterministic_event_ids() -> None:
    billed = verdict("clean")
    claim_id = claim_id_for(billed.encounter_id)
    second, third = verdict("warnings", pack="p2"), verdict("clean", pack="p3")

    def replacement(v: ValidatedEncounter) -> str:
        return plan_claim(v, frequency="7", original_reference=claim_id).event_id

    assert replacement(second) != replacement(third)  # two replacements of one claim
    assert replacement(second) == replacement(second)  # a re-read verdict: the same event
    assert replacement(second) == claim_event_id(claim_id, "7", second.event_id)
    void = plan_claim(billed, frequency="8", original_reference=claim_id, answers=third.event_id)
    assert void.event_id == claim_event_id(claim_id, "8", third.event_id)
    assert len({replacement(second), void.event_id, claim_event_id(claim_id)}) == 3
    with pytest.raises(ValueError):
        claim_event_id(claim_id, "7")  # a correction is named by the verdict that asked


# --- the store: one answer per verdict, never a second original --------------------------


@pytest.fixture
def store() -> SubmittedClaims:
    return SubmittedClaims(":memory:")


def _send(store: SubmittedClaims, v: ValidatedEncounter) -> list:
    return [write(p, sender_id=SENDER, receiver_id=RECEIVER) for p in store.claims_for(v)]


def test_the_store_keeps_no_note_text_and_a_note_alone_sends_nothing(
    store: SubmittedClaims,
) -> None:
    v = verdict("clean")
    noted = v.model_copy(update={"coded": patch(v.coded, encounter=patch(
        v.coded.encounter, note_text="Pt reports chest pain since Tuesday"))})  # fmt: skip
    [claim] = _send(store, noted)
    assert claim.frequency == "1"
    stored = store.db.execute("SELECT billed FROM submitted").fetchone()[0]
    assert b"chest pain" not in b64decode(stored)  # kept as its Avro record
    assert read_billed(stored).coded.encounter.note_text is None
    assert read_billed(stored) == without_note(noted)
    # Later verdicts (new event ids) that differ only in the note: nothing to correct.
    plain = v.model_copy(update={"event_id": f"{v.event_id}-b"})
    assert _send(store, plain) == [] and store.answered(plain.event_id)
    renoted = patch(noted.coded, encounter=patch(noted.coded.encounter, note_text="another"))
    other = noted.model_copy(update={"event_id": f"{v.event_id}-c", "coded": renoted})
    assert _send(store, other) == []
    recoded = verdict("warnings", pack="test-n")  # a real change still replaces
    assert [c.frequency for c in _send(store, recoded)] == ["7"]


def test_first_original_is_exactly_what_build_claim_makes(store: SubmittedClaims) -> None:
    v = verdict("clean")
    [claim] = _send(store, v)
    assert claim == build_claim(v, sender_id=SENDER, receiver_id=RECEIVER)
    assert claim.event_id == claim_event_id(claim.claim_id) and claim.frequency == "1"
    assert claim.rule_pack_version == "2026.12.2"
    assert _send(store, v) == []  # the same verdict again (a re-read): nothing


def test_replacement_and_void_reference_the_original(store: SubmittedClaims) -> None:
    [original] = _send(store, verdict("clean"))
    [replacement] = _send(store, verdict("warnings", pack="test-b"))
    assert replacement.frequency == "7" and replacement.claim_id == original.claim_id
    assert replacement.original_reference == original.claim_id
    assert replacement.rule_pack_version == "test-b"
    assert replacement.event_id != original.event_id
    assert replacement.interchange_control_number != original.interchange_control_number
    assert int(replacement.interchange_control_number) == correction_control_number(
        replacement.event_id
    )
    assert f"REF*F8*{original.claim_id}~" in replacement.x12
    assert f"CLM*{original.claim_id}*" in replacement.x12 and ":B:7*" in replacement.x12
    assert _send(store, verdict("warnings", pack="test-b")) == []  # replayed twice: nothing
    [void] = _send(store, verdict("rejected", pack="test-c"))
    assert (void.frequency, void.original_reference) == ("8", original.claim_id)
    assert ":B:8*" in void.x12 and void.total_charge == original.total_charge
    assert _send(store, verdict("rejected", pack="test-d")) == []  # already void


def test_two_replacements_of_one_claim_are_two_events(store: SubmittedClaims) -> None:
    _send(store, verdict("clean"))
    [first] = _send(store, verdict("warnings", pack="p2"))
    [second] = _send(store, verdict("clean", pack="p3"))
    assert first.frequency == second.frequency == "7" and first.event_id != second.event_id


def test_store_survives_reopen(tmp_path) -> None:
    s = SubmittedClaims.in_state_dir(tmp_path)
    _send(s, verdict("clean"))
    s.commit()
    s.close()
    again = SubmittedClaims.in_state_dir(tmp_path)
    assert _send(again, verdict("clean")) == []
    [replacement] = _send(again, verdict("warnings", pack="p2"))
    assert replacement.frequency == "7"


def test_uncommitted_answers_are_forgotten_on_rollback(tmp_path) -> None:
    s = SubmittedClaims.in_state_dir(tmp_path)
    _send(s, verdict("clean"))
    s.rollback()  # the batch's claims were never acknowledged
    [again] = _send(s, verdict("clean"))
    assert again.frequency == "1"


def test_replacement_validates_with_pyx12(store: SubmittedClaims) -> None:
    from services.x12.validate import validate_x12

    _send(store, verdict("clean"))
    [replacement] = _send(store, verdict("warnings", pack="p2"))
    assert validate_x12(replacement.x12) == []


def test_verdict_time_is_the_correction_time(store: SubmittedClaims) -> None:
    _send(store, verdict("clean"))
    later = verdict("warnings", pack="p2").model_copy(
        update={"validated_at": VALIDATED_AT + timedelta(days=30)}
    )
    [replacement] = _send(store, later)
    assert replacement.submitted_at == later.validated_at


def test_the_store_names_corrections_by_the_verdict_that_asked(store: SubmittedClaims) -> None:
    _send(store, verdict("clean"))
    asked = verdict("warnings", pack="p2")
    [replacement] = _send(store, asked)
    assert replacement.event_id == claim_event_id(replacement.claim_id, "7", asked.event_id)
    void_asked = verdict("rejected", pack="p3")
    [void] = _send(store, void_asked)  # built from the verdict billed, named by the one asking
    assert void.event_id == claim_event_id(void.claim_id, "8", void_asked.event_id)


def rejection(claim_id: str, source: str = "277CA", file_id: str = "277CA.1") -> ClaimRejection:
    return ClaimRejection(
        event_id=f"rejection-{claim_id}-{file_id}",
        claim_id=claim_id,
        encounter_id=None,
        payer_id="87726",
        source=source,  # type: ignore[arg-type]
        file_id=file_id,
        codes=["A3:164:IL"],
        reason="277CA: claim rejected",
        rejected_at=VALIDATED_AT,
    )


def test_the_fix_of_a_claim_refused_at_the_front_end_goes_out_as_a_new_original(
    store: SubmittedClaims,
) -> None:
    [original] = _send(store, verdict("clean"))
    store.record_rejection(rejection(original.claim_id))  # a 277CA: by claim id only
    fixed = verdict("clean", pack="p2", review_reasons=["member id corrected"])
    [again] = _send(store, fixed)
    assert (again.frequency, again.original_reference) == ("1", None)
    assert again.claim_id == original.claim_id and "REF*F8" not in again.x12
    assert ":B:1*" in again.x12
    assert again.event_id == claim_event_id(again.claim_id, "1", fixed.event_id)
    assert again.event_id != original.event_id  # not mistaken for the refused one
    # The new original is live: the next change replaces it.
    [replacement] = _send(store, verdict("warnings", pack="p3"))
    assert (replacement.frequency, replacement.original_reference) == ("7", original.claim_id)


def test_a_rejection_is_kept_with_the_batch(tmp_path) -> None:
    s = SubmittedClaims.in_state_dir(tmp_path)
    [original] = _send(s, verdict("clean"))
    s.commit()
    s.record_rejection(rejection(original.claim_id))
    s.rollback()  # the batch that read the 277CA was not committed: read again later
    prior_claim = s.prior(original.encounter_id)
    assert prior_claim is not None and not prior_claim.rejected
    s.record_rejection(rejection(original.claim_id))
    s.commit()
    s.close()
    again = SubmittedClaims.in_state_dir(tmp_path)
    [claim] = _send(again, verdict("clean", pack="p2"))
    assert claim.frequency == "1"


def test_a_999_rejection_of_an_earlier_claim_event_leaves_the_current_one_live(
    store: SubmittedClaims,
) -> None:
    [original] = _send(store, verdict("clean"))
    _send(store, verdict("warnings", pack="p2"))  # a replacement went out since
    store.record_rejection(rejection(original.claim_id, "999"), [original.event_id])
    [replacement] = _send(store, verdict("clean", pack="p3"))
    assert replacement.frequency == "7"


def test_a_void_refused_at_the_front_end_is_sent_again_as_a_new_event(
    store: SubmittedClaims,
) -> None:
    [original] = _send(store, verdict("clean"))
    [void] = _send(store, verdict("rejected", pack="p2"))
    store.record_rejection(rejection(original.claim_id))
    [again] = _send(store, verdict("rejected", pack="p3"))
    assert (again.frequency, again.original_reference) == ("8", original.claim_id)
    assert again.event_id != void.event_id


def test_a_new_original_does_not_refer_to_the_payer_number_of_the_claim_before(
    store: SubmittedClaims,
) -> None:
    [original] = _send(store, verdict("clean"))
    store.set_payer_claim_control_number(original.claim_id, "2226123456789")
    _send(store, verdict("rejected", pack="p2"))  # void
    _send(store, verdict("clean", pack="p3"))  # billed again: a new original
    [replacement] = _send(store, verdict("warnings", pack="p4"))
    # The payer has not numbered the new original yet: refer to it by our claim id.
    assert replacement.original_reference == original.claim_id


# --- the replay's diff, and the correction work queue --------------------------------------


def _external_cause_first(encounter_id: str) -> object:
    c = coded()
    return patch(
        c,
        encounter_id=encounter_id,
        event_id=f"coded-{encounter_id}",
        diagnoses=[
            d.model_copy(update={"code": code})
            for d, code in zip(c.diagnoses, ["V0001XA", "S82101A"], strict=True)
        ],
    )


def _clean(encounter_id: str) -> object:
    return patch(coded(), encounter_id=encounter_id, event_id=f"coded-{encounter_id}")


def test_replay_diff_names_exactly_the_changed_encounters_by_rule() -> None:
    cs = codesets_bare()
    old = DEFAULT_PACK.derive("t-old", severities={"CF-DX-002": "info"})
    new = DEFAULT_PACK.derive("t-new", severities={"CF-DX-002": "error"})
    items = [_clean("E1"), _external_cause_first("E2"), _clean("E3"), _external_cause_first("E4")]
    before = latest(validate(c, cs, validated_at=VALIDATED_AT, pack=old) for c in items)
    assert {s.outcome for s in before.values()} == {"clean"}
    again = Revalidator(new, cs, before, validated_at=VALIDATED_AT)
    published = [again.verdict(c) for c in items]
    assert all(v is not None for v in published) and again.published == 4
    changes = diff(before, again.after)
    assert [c.encounter_id for c in changes] == ["E2", "E4"]
    assert changes[0].rules() == {"CF-DX-002": "added error"}
    report = ReplayReport(pack="t-new", since="BEGINNING", changes=changes)
    assert report.summary()["by_rule"] == {"CF-DX-002": ["E2", "E4"]}
    assert "E2  clean -> rejected  (added error; was pack t-old)" in report.text()


def test_replaying_the_same_pack_publishes_nothing_and_changes_nothing() -> None:
    cs = codesets_bare()
    items = [_clean("E1"), _external_cause_first("E2")]
    before = latest(validate(c, cs, validated_at=VALIDATED_AT) for c in items)
    again = Revalidator(DEFAULT_PACK, cs, before, validated_at=VALIDATED_AT + timedelta(days=1))
    assert [again.verdict(c) for c in items] == [None, None]
    assert (again.published, again.already_published) == (0, 2)
    assert diff(before, again.after) == []


def test_severity_change_is_described() -> None:
    was = Summary("a", "warnings", "p1", frozenset({("CF-X", "warning")}))
    now = Summary("b", "rejected", "p2", frozenset({("CF-X", "error")}))
    [change] = diff({"E": was}, {"E": now})
    assert change.rules() == {"CF-X": "warning -> error"}
    [first_time] = diff({}, {"E": now})
    assert first_time.before is None and first_time.rules() == {"CF-X": "added error"}


def test_work_queue_keeps_the_latest_verdict_per_encounter() -> None:
    cs = codesets_bare()
    bad = coded().model_copy(
        update={
            "encounter": coded().encounter.model_copy(
                update={
                    "billing_provider": coded().encounter.billing_provider.model_copy(
                        update={"npi": "1847520397"}
                    )
                }
            )
        }
    )
    rejected = validate(bad, cs, validated_at=VALIDATED_AT)
    fixed = validate(coded(), cs, validated_at=VALIDATED_AT + timedelta(hours=1))
    other = rejected.model_copy(update={"encounter_id": "ENC-OTHER"})
    queue = WorkQueue()
    for v in (rejected, other, fixed):  # ENC-2026-000123 was corrected afterwards
        queue.add(v)
    [entry] = queue.rejected()
    assert entry.encounter_id == "ENC-OTHER"
    [edit] = entry.edits
    assert edit["rule_id"] == "CF-NPI-001" and edit["field"] == "encounter.billing_provider.npi"
    assert edit["fix_hint"] and edit["why"] and "message" not in edit
    text = queue.text()
    assert "1 encounter(s) to correct" in text and "CF-NPI-001" in text
    assert "1847520397" not in text  # hit messages only with --messages
    loud = WorkQueue(messages=True)
    loud.add(other)
    assert "1847520397" in loud.rejected()[0].edits[0]["message"]
