"""The duplicate store picks an encounter's earliest earlier duplicate in Python from the
rows SQLite finds (``DuplicateStore.earliest``); the query that sorted them in SQLite
(``ORDER BY received_at, encounter_id LIMIT 1``) is the judge, on stores with times that
collide, verdicts that are not billable and encounter ids beyond ASCII."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

from services.validation.duplicates import EARLIER, DuplicateStore

SORTED_IN_SQLITE = f"{EARLIER} ORDER BY received_at, encounter_id LIMIT 1"

IDS = ["ENC-1", "ENC-10", "ENC-2", "enc-1", "ENC-é", "ENC-Z", "ENC-ž", "ENC-中", "ENC-😀", "E", ""]


def judged(store: DuplicateStore, fp: str, encounter_id: str, received_at: str) -> str | None:
    row = store.db.execute(
        SORTED_IN_SQLITE, (fp, encounter_id, received_at, received_at, encounter_id)
    ).fetchone()
    return None if row is None else str(row[1])


def test_the_earliest_duplicate_is_the_one_sqlite_sorted_first(tmp_path: Path) -> None:
    rng = random.Random(3)
    store = DuplicateStore(tmp_path / "seen.sqlite3")
    fingerprints = [f"{n:032x}" for n in range(6)]
    times = [f"2026-11-{day:02d}T09:{minute:02d}:00+00:00" for day in (1, 2) for minute in (0, 5)]
    ids = [*IDS, *(f"ENC-{n:04d}" for n in range(60))]
    with store.atomic():
        for encounter_id in ids:
            store._upsert(
                encounter_id, rng.choice(fingerprints), rng.choice(times), int(rng.random() < 0.8)
            )
    found = 0
    for fp in [*fingerprints, "f" * 32]:
        for encounter_id in [*ids, "ENC-new", "ENC-ü"]:
            for received_at in [*times, "2026-10-31T00:00:00+00:00", "2026-12-01T00:00:00+00:00"]:
                expected = judged(store, fp, encounter_id, received_at)
                assert store.earliest(fp, encounter_id, received_at) == expected
                found += expected is not None
    assert found > 500  # most probes have an earlier duplicate; many have none


def test_the_billable_bits_give_what_the_query_gives(tmp_path: Path) -> None:
    """A changelogged store skips the query for a fingerprint without a billable row
    (``DuplicateStore._billable``); a store without the bits, given the same writes, is the
    judge: rows billable or not, turned billable and back, deleted, rolled back, and the
    store opened again on its file (the bits read from the rows)."""
    fast = DuplicateStore(tmp_path / "bits.sqlite3", changelog=True)
    judge = DuplicateStore(tmp_path / "judge.sqlite3")
    assert fast._billable is not None and judge._billable is None
    fingerprints = [f"{n:032x}" for n in range(40)]
    times = [f"2026-11-{day:02d}T09:00:00+00:00" for day in (1, 2, 3)]
    ids = [f"ENC-{n:03d}" for n in range(80)]

    def compare(store: DuplicateStore) -> int:
        skipped = 0
        for fp in [*fingerprints, "f" * 32, "not hex at all"]:
            for encounter_id in [*ids[::7], "ENC-new"]:
                for received_at in times:
                    expected = judge.earliest(fp, encounter_id, received_at)
                    assert store.earliest(fp, encounter_id, received_at) == expected
                    skipped += expected is None
        return skipped

    for round_ in range(4):
        for store in (fast, judge):
            store_rng = random.Random(round_)
            for encounter_id in ids:
                if store_rng.random() < 0.1:
                    store.apply(encounter_id, None)  # deleted
                else:
                    fp = store_rng.choice(fingerprints[: 10 * (round_ + 1)])
                    store._upsert(
                        encounter_id, fp, store_rng.choice(times), int(store_rng.random() < 0.5)
                    )
            if round_ == 2:  # this round's writes are rolled back
                store.rollback()
            else:
                store.commit()
        assert compare(fast) > 0
    fast.close()
    again = DuplicateStore(tmp_path / "bits.sqlite3", changelog=True)
    assert compare(again) > 0


#: The store's layout before its fingerprint index left out received_at.
_OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    encounter_id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    received_at TEXT NOT NULL,
    billable INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS seen_by_fingerprint ON seen (fingerprint, received_at);
"""


def test_a_store_of_the_old_layout_opens_with_the_narrow_index(tmp_path: Path) -> None:
    """A file written with the wider index (fingerprint, received_at) opens with it replaced
    by the index on the fingerprint alone, its rows untouched, and answers as a store
    written with the new layout from the start."""
    path = tmp_path / "old.sqlite3"
    rng = random.Random(11)
    fingerprints = [f"{n:032x}" for n in range(8)]
    times = [f"2026-11-{day:02d}T09:00:00+00:00" for day in (1, 2, 3)]
    rows = [
        (f"ENC-{n:03d}", rng.choice(fingerprints), rng.choice(times), int(rng.random() < 0.7))
        for n in range(120)
    ]
    old = sqlite3.connect(path)
    old.executescript(_OLD_SCHEMA)
    old.executemany("INSERT INTO seen VALUES (?, ?, ?, ?)", rows)
    old.commit()
    old.close()

    store = DuplicateStore(path, changelog=True)
    fresh = DuplicateStore(tmp_path / "new.sqlite3")
    with fresh.atomic():
        for row in rows:
            fresh._upsert(*row)
    indexes = {
        name: sql
        for name, sql in store.db.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'seen' "
            "AND sql IS NOT NULL"
        )
    }
    assert list(indexes) == ["seen_fingerprint"]
    assert store.db.execute("SELECT count(*) FROM seen").fetchone()[0] == len(rows)
    asked = 0
    for fp in [*fingerprints, "f" * 32]:
        for encounter_id, _, received_at, _ in rows[::9]:
            expected = fresh.earliest(fp, encounter_id, received_at)
            assert store.earliest(fp, encounter_id, received_at) == expected
            asked += expected is not None
    assert asked > 20
