"""The corrections store's submitted rows are found by claim id in a file created now, by
encounter id in a file an older version created (its table keeps its primary key on
encounter_id): both answer alike. The judges of the two layouts side by side are
tests/unit/test_claims_look.py (every verdict of the corpus, fresh, replayed, changed,
refused, settled and pruned: the same claims and the same change records, the reference
on a file of the previous layout) and tests/unit/test_claims_billed_form.py (a file of the
previous version, and its change records restored into a file of today's layout)."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

from sim_corpus import validated

from services.claims.corrections import ClaimPruned, Stored, SubmittedClaims
from services.claims.domain import PROFESSIONAL_PART, claim_id_for

PREVIOUS_SCHEMA = """
CREATE TABLE IF NOT EXISTS submitted (
    encounter_id TEXT PRIMARY KEY,
    claim_id TEXT NOT NULL,
    frequency TEXT NOT NULL,
    claim_event_id TEXT NOT NULL,
    payer_claim_control_number TEXT,
    billed TEXT NOT NULL               -- the ValidatedEncounter the claim was built from:
                                       -- Avro in base64 (``billed_text``), or older JSON
);
-- Acknowledgments (277CA, 835) name the claim, not the encounter.
CREATE INDEX IF NOT EXISTS submitted_by_claim_id ON submitted (claim_id);
CREATE TABLE IF NOT EXISTS answered (  -- every verdict event already answered
    verdict_event_id TEXT PRIMARY KEY,
    encounter_id TEXT NOT NULL
);
-- Claim events a payer's front end refused (999 / 277CA). Keyed by the claim event, not
-- the encounter: the next claim sent for the encounter has a new event id and is live.
CREATE TABLE IF NOT EXISTS rejected (
    claim_event_id TEXT PRIMARY KEY,
    claim_id TEXT NOT NULL,
    source TEXT NOT NULL,              -- 999 | 277CA
    rejection_event_id TEXT NOT NULL   -- the claims.rejections.v1 event
);
-- Claims remittance said are adjudicated (remittance.settled.v1), and when their stored
-- payloads may be pruned (services/claims/retention.py). A claim sent again leaves it.
CREATE TABLE IF NOT EXISTS settled (
    claim_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,              -- paid | partially_paid | denied
    settled_at REAL NOT NULL,          -- unix time remittance posted it
    prune_after REAL NOT NULL          -- unix time the retention window ends
);
CREATE INDEX IF NOT EXISTS settled_due ON settled (prune_after);
-- Encounters (parts) whose verdict was pruned after settlement: what is left of them.
CREATE TABLE IF NOT EXISTS pruned (
    encounter_id TEXT PRIMARY KEY,
    claim_id TEXT NOT NULL,
    settled_at REAL NOT NULL,
    pruned_at REAL NOT NULL
);
"""
"""The corrections store's tables as the version before created them, word for word."""


def previous_file(path: Path) -> Path:
    """A corrections store file as the version before created it (no rows yet)."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(PREVIOUS_SCHEMA)
    db.close()
    return path


def same(value: object) -> object:
    """``value`` with the rows a store gives in the order of its index sorted."""
    if isinstance(value, Stored):
        return replace(value, rows=sorted(value.rows, key=repr))
    if isinstance(value, list) and value and isinstance(value[0], tuple):
        return sorted(value, key=repr)
    if isinstance(value, list):
        return [same(v) for v in value]
    return value


def answer(call: Any, store: SubmittedClaims) -> object:
    try:
        return call(store)
    except ClaimPruned as exc:
        return ("pruned", exc.field, exc.reason)


def plans(store: SubmittedClaims, sql: str, args: tuple[object, ...]) -> str:
    return " ".join(str(r[-1]) for r in store.db.execute(f"EXPLAIN QUERY PLAN {sql}", args))


def test_a_new_file_finds_a_part_by_its_claim_id_an_older_one_by_encounter_id(
    tmp_path: Path,
) -> None:
    new = SubmittedClaims(tmp_path / "new.sqlite3")
    old = SubmittedClaims(previous_file(tmp_path / "old.sqlite3"))
    assert new.by_claim and not old.by_claim
    indexes = {r[1]: (r[2], r[3]) for r in new.db.execute("PRAGMA index_list('submitted')")}
    assert indexes == {"submitted_by_claim_id": (1, "c")}  # unique; no primary key's index
    assert {r[3] for r in old.db.execute("PRAGMA index_list('submitted')")} == {"pk", "c"}
    key = "enc-1"
    sql = "SELECT billed FROM submitted WHERE " + new._part()
    assert "submitted_by_claim_id" in plans(new, sql, new._key(key))
    sql = "SELECT billed FROM submitted WHERE " + old._part()
    assert "sqlite_autoindex_submitted_1" in plans(old, sql, old._key(key))


def test_both_layouts_answer_the_corpus_alike(tmp_path: Path) -> None:
    """Every verdict billed, its claims acknowledged with a payer number, a part settled
    and pruned, then the verdicts billed again changed: the same claims, reads and change
    records from a file of each layout."""
    stores = [
        SubmittedClaims(tmp_path / "new.sqlite3", changelog=True),
        SubmittedClaims(previous_file(tmp_path / "old.sqlite3"), changelog=True),
    ]
    corpus = validated("all")

    def each(call: object) -> Any:
        """What ``call`` answers of each store (the same) and the change records it left
        (the same). A part's two rows may come in another order (by claim id): sorted."""
        out = [answer(call, s) for s in stores]
        assert same(out[0]) == same(out[1])
        assert stores[0].take_changes() == stores[1].take_changes()
        return out[0]

    for v in corpus:
        each(lambda s, v=v: [(p.event_id, p.claim_id, p.claim.frequency) for p in s.claims_for(v)])
    keys = [k for v in corpus for k in (v.encounter_id, f"{v.encounter_id}/{PROFESSIONAL_PART}")]
    found = each(lambda s: s.billed_many([*keys, "none"]))
    billed = [k for k in keys if k in found]
    assert len(billed) > 20
    numbers = [(claim_id_for(k), f"PCN-{i}") for i, k in enumerate(billed)]
    each(lambda s: s.set_payer_claim_control_numbers(numbers))
    each(lambda s: [s.holds(c) for c, _ in numbers] + [s.holds("CF-none")])
    each(lambda s: s.billed_many([*keys, "none"]))
    each(lambda s: [s.snapshot(v.encounter_id) for v in corpus])
    for k in billed[::5]:
        each(lambda s, k=k: s.settle(claim_id_for(k), "paid", 1.0, 2.0))
    due = each(lambda s: s.due(5.0))
    assert due
    for key, claim_id, settled_at in due[::2]:
        each(lambda s, a=(key, claim_id, settled_at): s.prune(*a, 5.0))
    for v in corpus:
        each(lambda s, v=v: s.look(v))
        each(lambda s, v=v: s.prior(v.encounter_id))
        snap = each(lambda s, v=v: s.snapshot(v.encounter_id))
        each(lambda s, v=v, snap=snap: s.restore(v, snap))
    changed = [
        v.model_copy(update={"event_id": v.event_id + "x", "outcome": "rejected"})
        for v in corpus
        if v.encounter_id not in {d[0] for d in due}
    ]
    for v in changed:
        each(lambda s, v=v: [(p.event_id, p.claim.frequency) for p in s.claims_for(v)])
