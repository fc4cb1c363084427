"""The corrections store answers a verdict from one read (``SubmittedClaims.look``): the
claims it plans and every row it writes are those of the reads one by one (``answered``,
``snapshot``, ``prior`` per part, and a settlement dropped whether or not there was one),
kept here as the reference, on the simulator's verdicts of both mixes: fresh, billed again,
replayed, rejected, with claims refused by the payer, settled and pruned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sim_corpus import validated
from test_claims_submitted_layout import previous_file

from pipeline.models import ValidatedEncounter, event_id
from services.claims import corrections
from services.claims.corrections import (
    ClaimPruned,
    SubmittedClaims,
    decide,
    plan,
)
from services.claims.domain import PROFESSIONAL_PART, PlannedClaim, claim_id_for, claim_parts


def reference_claims_for(store: SubmittedClaims, verdict: ValidatedEncounter) -> list[PlannedClaim]:
    """``SubmittedClaims.claims_for`` as it read the store before ``look``."""
    if store.answered(verdict.event_id):
        return []
    out: list[PlannedClaim] = []
    for key, part in claim_parts(verdict):
        prior = store.prior(key)
        correction = decide(prior, part)
        first = prior is None and correction.kind == "original"
        planned = plan(correction, part, first_original=first, claim_id=claim_id_for(key))
        store.record(part, correction, planned, key=key)
        if planned is not None:
            out.append(planned)
    return out


def outcome(call: Any) -> tuple[object, ...]:
    """What a call planned (without the time it ran), or the error it raised."""
    try:
        planned = call()
    except ClaimPruned as exc:
        return ("pruned", exc.field, exc.reason)
    return tuple(
        (p.event_id, p.claim_id, p.claim.frequency, p.claim_type, p.encounter_id, p.total_charge)
        for p in planned
    )


def keys(verdict: ValidatedEncounter) -> tuple[str, str]:
    return (verdict.encounter_id, f"{verdict.encounter_id}/{PROFESSIONAL_PART}")


def prior_or_pruned(store: SubmittedClaims, key: str) -> object:
    try:
        return store.prior(key)
    except ClaimPruned as exc:
        return ("pruned", exc.field, exc.reason)


def same_reads(store: SubmittedClaims, verdict: ValidatedEncounter) -> None:
    """``look`` gives what the reads one by one give."""
    stored = store.look(verdict)
    assert stored.answered == store.answered(verdict.event_id)
    assert sorted(map(repr, stored.rows)) == sorted(map(repr, store.snapshot(verdict.encounter_id)))
    for key in keys(verdict):
        try:
            looked: object = store._prior_in(stored, key)
        except ClaimPruned as exc:
            looked = ("pruned", exc.field, exc.reason)
        assert looked == prior_or_pruned(store, key)
        row = store.db.execute("SELECT 1 FROM settled WHERE claim_id = ?", (claim_id_for(key),))
        assert (claim_id_for(key) in stored.settled) == (row.fetchone() is not None)


def same_looks(store: SubmittedClaims, verdicts: list[ValidatedEncounter]) -> None:
    """``look_many`` gives each verdict what ``look`` gives it, or None for a verdict whose
    encounter or event id another shares (read in its turn)."""
    encounters = [v.encounter_id for v in verdicts]
    events = [v.event_id for v in verdicts]
    for verdict, stored in zip(verdicts, store.look_many(verdicts), strict=True):
        if encounters.count(verdict.encounter_id) > 1 or events.count(verdict.event_id) > 1:
            assert stored is None
            continue
        assert stored is not None
        want = store.look(verdict)
        assert (stored.answered, stored.refused, stored.pruned, stored.settled) == (
            want.answered,
            want.refused,
            want.pruned,
            want.settled,
        )
        assert sorted(map(repr, stored.rows)) == sorted(map(repr, want.rows))


def same_billed(store: SubmittedClaims, parts: list[str]) -> None:
    """``billed_many`` then ``billed_of`` give each part what ``prior`` gives a claim to the
    next payer (the claim id and the verdict), or raise as it raises."""
    found = store.billed_many([*parts, "no-such-encounter", *parts[:3]])
    for key in [*parts, "no-such-encounter"]:
        try:
            got: object = store.billed_of(key, found)
        except ClaimPruned as exc:
            got = ("pruned", exc.field, exc.reason)
        want = prior_or_pruned(store, key)
        if want is not None and not isinstance(want, tuple):
            want = (want.claim_id, want.billed)  # type: ignore[attr-defined]
        assert got == want, key


class Pair:
    """Two stores fed the same: one answers through ``look``, one through the reference."""

    def __init__(self, tmp_path: Path) -> None:
        self.new = SubmittedClaims(tmp_path / "new.sqlite3", changelog=True)
        # The reference on a file of the previous layout (rows found by encounter id).
        self.old = SubmittedClaims(previous_file(tmp_path / "old.sqlite3"), changelog=True)
        assert self.new.by_claim and not self.old.by_claim

    def answer(self, verdict: ValidatedEncounter) -> tuple[object, ...]:
        same_reads(self.new, verdict)
        got = outcome(lambda: self.new.claims_for(verdict))
        want = outcome(lambda: reference_claims_for(self.old, verdict))
        assert got == want, verdict.encounter_id
        assert self.new.take_changes() == self.old.take_changes(), verdict.encounter_id
        return got

    def each(self, sql: str, rows: list[tuple[object, ...]]) -> None:
        for store in (self.new, self.old):
            store.db.executemany(sql, rows)
        assert self.new.take_changes() == self.old.take_changes()


def changed(verdict: ValidatedEncounter, what: str, **update: object) -> ValidatedEncounter:
    return verdict.model_copy(update={"event_id": event_id(verdict.event_id, what), **update})


@pytest.mark.parametrize("mix", ["office", "all"])
def test_one_read_answers_every_verdict_as_the_reads_one_by_one(
    tmp_path: Path, mix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = validated(mix)
    pair = Pair(tmp_path)
    planned = [pair.answer(v) for v in corpus]
    assert sum(len(p) for p in planned) > len(corpus) // 2
    assert any(len(p) == 2 for p in planned) or mix == "office"  # facility + physician
    assert [pair.answer(v) for v in corpus] == [()] * len(corpus)  # answered already

    # Some claims refused by the payer, some settled, some settled and then pruned.
    claims = [
        (key, claim_id_for(key), str(p[0][0]))
        for v, p in zip(corpus, planned, strict=True)
        if p
        for key in keys(v)[: len(p)]
    ]
    pair.each(
        "INSERT INTO rejected VALUES (?, ?, '999', 'rej')",
        [(event, claim) for _, claim, event in claims[::3]],
    )
    pair.each(
        "INSERT INTO settled VALUES (?, 'paid', 1.0, 2.0)",
        [(claim,) for _, claim, _ in claims[1::2]],
    )
    pruned = claims[1::10]
    pair.each("DELETE FROM submitted WHERE encounter_id = ?", [(key,) for key, _, _ in pruned])
    pair.each(
        "INSERT INTO pruned VALUES (?, ?, 1.0, 3.0)", [(key, claim) for key, claim, _ in pruned]
    )

    same_billed(pair.new, [key for v in corpus for key in keys(v)])
    # Read together: the whole corpus (more verdicts than one query reads), and with
    # verdicts of one encounter twice.
    monkeypatch.setattr(corrections, "LOOK_CHUNK", 40)
    same_looks(pair.new, corpus)
    same_looks(pair.new, [*corpus[:5], changed(corpus[0], "again"), corpus[3]])
    # Replayed (same content), changed (replacements), rejected now (voids), billable again.
    kinds: set[object] = set()
    for verdict in corpus:
        replay = changed(verdict, "replay")
        other = "warnings" if verdict.outcome == "clean" else "clean"
        toggled = changed(verdict, "toggled", outcome=other)
        rejected = changed(verdict, "rejected", outcome="rejected")
        for again in (replay, toggled, rejected, changed(verdict, "back"), replay):
            result = pair.answer(again)
            kinds |= {r[2] if isinstance(r, tuple) else r for r in result}
    assert {"1", "7", "8", "pruned"} <= kinds
    same_billed(pair.new, [key for v in corpus for key in keys(v)])
    same_looks(pair.new, [changed(v, "later") for v in corpus])
