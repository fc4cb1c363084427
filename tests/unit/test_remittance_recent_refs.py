"""A payer's claim references are appended to ``recent_refs``, kept in memory by key and
merged into ``claim_refs`` in key order (``Ledger._add_references``): what a lookup finds and
what the two tables say is what upserting each reference into ``claim_refs`` as it came
gave (the way before, the judge), on every payment of the 835 fixtures and both simulator
mixes, on references that come again or name another claim, across merges, after an input
or a batch rolled back, in a ledger restored from its changelog, reopened, or written by a
version before (without ``recent_refs``)."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import pytest
from test_remittance_ledger_writes import references
from test_remittance_reread import published, run
from test_remittance_split import Partitioned

from services.remittance import ledger as ledger_module
from services.remittance.ledger import Ledger, _upsert

AMOUNTS = (Decimal("10.00"), 2, Decimal("10.00"))
PAYERS = ("MEDICARE_B", "AETNA")
POOL = [f"REF{n}" for n in range(12)]


def upsert_each(ledger: Ledger, payer_id: str, refs: Sequence[tuple[str, str]]) -> None:
    """The way before: every reference upserted into ``claim_refs`` as it came."""
    if refs:
        sql = _upsert("claim_refs", ("payer_id", "reference", "claim_id"), True)
        ledger.db.executemany(sql, [(payer_id, ref, claim_id) for ref, claim_id in refs])


def looked_up_before(ledger: Ledger, payer_id: str, reference: str) -> str | None:
    row = ledger.db.execute(
        "SELECT claim_id FROM claim_refs WHERE payer_id = ? AND reference = ?",
        (payer_id, reference),
    ).fetchone()
    return str(row[0]) if row else None


class Judge(Ledger):
    """A ledger that writes and reads its references the way before."""

    def _add_references(self, payer_id: str, references: Sequence[tuple[str, str]]) -> None:
        upsert_each(self, payer_id, references)

    def claim_for_reference(self, payer_id: str, reference: str) -> str | None:
        return looked_up_before(self, payer_id, reference)


def payments(seed: int, count: int) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(payer, trace, references): references drawn from a small pool, so they come again,
    twice in one payment, and name another claim than before."""
    rng = random.Random(seed)
    out = []
    for n in range(count):
        refs = [(rng.choice(POOL), f"PCN{rng.randrange(30)}") for _ in range(rng.randrange(4))]
        out.append((rng.choice(PAYERS), f"T{n}", refs))
    return out


def lookups(ledger: Ledger) -> list[str | None]:
    return [ledger.claim_for_reference(p, r) for p in PAYERS for r in [*POOL, "NONE"]]


def pay(ledger: Ledger, payment: tuple[str, str, list[tuple[str, str]]]) -> bool:
    payer, trace, refs = payment
    return ledger.add_payment(payer, trace, "0001", "P:F", AMOUNTS, (), refs)


@pytest.mark.parametrize("merge_at", [1, 3, 7, 8192])
def test_references_read_and_merge_as_their_upsert_did(
    monkeypatch: pytest.MonkeyPatch, merge_at: int
) -> None:
    monkeypatch.setattr(Ledger, "_MERGE_REFS", merge_at)
    new, judge = Ledger(":memory:", changelog=True), Judge(":memory:", changelog=True)
    merged = False
    for payment in payments(seed=merge_at, count=60):
        assert pay(new, payment) == pay(judge, payment)
        assert lookups(new) == lookups(judge)
        assert references(new) == references(judge)
        merged = merged or new.db.execute("SELECT count(*) FROM claim_refs").fetchone()[0] > 0
        assert new.take_changes() == judge.take_changes()  # the payment's record, unchanged
    assert merged == (merge_at < 8192)
    new.merge_references()
    assert new.db.execute("SELECT count(*) FROM recent_refs").fetchone()[0] == 0
    query = "SELECT * FROM claim_refs ORDER BY payer_id, reference"
    assert new.db.execute(query).fetchall() == judge.db.execute(query).fetchall()
    assert lookups(new) == lookups(judge)


def test_the_comparison_sees_a_reference_that_names_another_claim() -> None:
    new, judge = Ledger(":memory:"), Judge(":memory:")
    pay(new, ("AETNA", "T1", [("REF1", "PCN1")]))
    pay(judge, ("AETNA", "T1", [("REF1", "PCN2")]))
    assert lookups(new) != lookups(judge)
    assert references(new) != references(judge)


def test_what_an_input_or_a_batch_takes_back_is_not_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failed input (its savepoint) and a rolled-back batch take their references back,
    merged or not: the lookups are those of the ledger before them."""
    monkeypatch.setattr(Ledger, "_MERGE_REFS", 5)
    ledger, judge = Ledger(":memory:"), Judge(":memory:")
    batches = payments(seed=3, count=40)
    for n, payment in enumerate(batches):
        pay(judge, payment)
        if n % 4 == 1:  # a failing input, then a batch rolled back, each after a merge or not
            with pytest.raises(RuntimeError), ledger.atomic():
                pay(ledger, payment)
                assert lookups(ledger) == lookups(judge)
                raise RuntimeError("the input fails")
        elif n % 4 == 3:
            ledger.commit()
            before = lookups(ledger)
            pay(ledger, payment)
            pay(ledger, (payment[0], f"{payment[1]}b", [(r, "OTHER") for r in POOL[:6]]))
            ledger.rollback()
            assert lookups(ledger) == before
        pay(ledger, payment)
        assert lookups(ledger) == lookups(judge)
        assert references(ledger) == references(judge)


def test_a_ledger_restored_or_reopened_finds_what_it_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Restored from its change records (with another merge point, and with a reference's
    own records of before among them), and reopened with rows not merged yet."""
    monkeypatch.setattr(Ledger, "_MERGE_REFS", 7)
    ledger, judge = Ledger(tmp_path / "a.sqlite3", changelog=True), Judge(":memory:")
    for payment in payments(seed=11, count=30):
        pay(ledger, payment)
        pay(judge, payment)
    ledger.commit()
    changes = ledger.take_changes()
    old_records = [(ref, f"OLD{n}") for n, ref in enumerate(POOL)]
    before = [  # a reference's own records, as a version before wrote them, then the rest
        (json.dumps(["claim_refs", "AETNA", ref]),
         json.dumps({"payer_id": "AETNA", "reference": ref, "claim_id": claim_id}).encode())
        for ref, claim_id in old_records
    ]  # fmt: skip
    judge_with_before = Judge(":memory:")
    upsert_each(judge_with_before, "AETNA", old_records)
    for payment in payments(seed=11, count=30):
        pay(judge_with_before, payment)
    for merge_at, records, expected in (
        (3, changes, judge),
        (8192, changes, judge),
        (4, before + changes, judge_with_before),
    ):
        monkeypatch.setattr(Ledger, "_MERGE_REFS", merge_at)
        copy = Ledger(":memory:", changelog=True)
        for key, value in records:
            with copy.atomic():
                copy.apply(key, value)
        assert copy.take_changes() == []
        assert lookups(copy) == lookups(expected)
        assert references(copy) == references(expected)
    assert ledger.db.execute("SELECT count(*) FROM recent_refs").fetchone()[0] > 0
    ledger.close()
    reopened = Ledger(tmp_path / "a.sqlite3", changelog=True)
    assert lookups(reopened) == lookups(judge)
    for payment in payments(seed=12, count=10):
        pay(reopened, payment)
        pay(judge, payment)
        assert lookups(reopened) == lookups(judge)
    assert references(reopened) == references(judge)


def test_a_ledger_of_before_reads_its_references_and_merges_into_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file written before has no ``recent_refs``: it gains it, its ``claim_refs`` is read
    as before, newer references replace its rows, and they merge into it."""
    path = tmp_path / "before.sqlite3"
    start = ledger_module._SCHEMA.index("CREATE TABLE IF NOT EXISTS recent_refs")
    end = ledger_module._SCHEMA.index(");", start) + 3
    schema = ledger_module._SCHEMA[:start] + ledger_module._SCHEMA[end:]
    with monkeypatch.context() as patched:
        patched.setattr(ledger_module, "_SCHEMA", schema)
        old = Judge(path)
    assert not old.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'recent_refs'").fetchall()
    judge = Judge(":memory:")
    for payment in payments(seed=21, count=20):
        pay(old, payment)
        pay(judge, payment)
    old.commit()
    old.close()
    monkeypatch.setattr(Ledger, "_MERGE_REFS", 6)
    new = Ledger(path)
    assert lookups(new) == lookups(judge)
    for payment in payments(seed=22, count=20):
        pay(new, payment)
        pay(judge, payment)
        assert lookups(new) == lookups(judge)
        assert references(new) == references(judge)


def test_the_corpus_posts_and_references_as_the_upsert_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every 835 of the fixtures and of both simulator mixes through the live layout, merging
    every few references, against the way before: the same records published, the same
    references, and each PLB adjustment applied where it was."""
    monkeypatch.setattr(Ledger, "_MERGE_REFS", 5)
    new = run(Partitioned(tmp_path / "new", seed=9))
    with monkeypatch.context() as patched:
        patched.setattr(Ledger, "_add_references", Judge._add_references)
        patched.setattr(Ledger, "claim_for_reference", Judge.claim_for_reference)
        judged = run(Partitioned(tmp_path / "judged", seed=9))
    assert published(new) == published(judged)
    merged = 0
    for ran_new, ran_judged in ((new.payers, judged.payers), (new.claims, judged.claims)):
        for (_, store), (_, judge) in zip(ran_new.items(), ran_judged.items(), strict=True):
            assert references(store) == references(judge)
            merged += store.db.execute("SELECT count(*) FROM claim_refs").fetchone()[0]
            applied = "SELECT * FROM provider_adjustments ORDER BY rowid"
            assert store.db.execute(applied).fetchall() == judge.db.execute(applied).fetchall()
    assert merged > 0 and any(references(s) for _, s in new.payers.items())
