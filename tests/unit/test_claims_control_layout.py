"""The control store's claims table: one index of random keys, (claim id, event id), where
it had two (event id, its primary key, and claim id). A file created before keeps its
layout and answers the same; change records move between the two layouts."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from test_store_query_plans import whole_table_scans

from services.claims.control import ClaimRef, ControlNumbers, PartitionNumbers

#: The claims table and its indexes as files created before this layout have them.
OLD_CLAIMS = """
CREATE TABLE claims (
    event_id TEXT PRIMARY KEY,
    claim_id TEXT NOT NULL,
    encounter_id TEXT NOT NULL,
    icn INTEGER NOT NULL
);
CREATE INDEX claims_by_claim_id ON claims (claim_id);
CREATE INDEX claims_by_icn ON claims (icn);
"""


def old_file(path: Path) -> Path:
    db = sqlite3.connect(path)
    db.executescript(OLD_CLAIMS)
    db.close()
    return path


def indexed_columns(db: sqlite3.Connection) -> set[tuple[str, ...]]:
    """The column lists of the claims table's indexes (its primary key's included)."""
    return {
        tuple(row[2] for row in db.execute(f"PRAGMA index_info('{index[1]}')"))
        for index in db.execute("PRAGMA index_list('claims')")
    }


def script(store: PartitionNumbers | ControlNumbers) -> list[Any]:
    """Interchanges numbered for claims (one claim billed twice: an original, then a
    replacement under a new event), what each read answers, then claims forgotten."""
    seen: list[Any] = []
    for n, claims in enumerate(
        (
            [ClaimRef("ev-a1", "CA", "E-A"), ClaimRef("ev-b1", "CB", "E-B")],
            [ClaimRef("ev-c1", "CC", "E-C")],
            [ClaimRef("ev-a2", "CA", "E-A2")],
        )
    ):
        stored = store.allocate(
            claims, payer_id="P", claim_type="professional", adapter="x", build=lambda i: f"I{i}"
        )
        seen.append(stored.icn)
        store.mark(stored.icn, "delivered", f"receipt {n}")
    seen.append(
        store.assigned({"ev-a1": "CA", "ev-a2": "CA", "ev-c1": "CC", "ev-x": "CA", "ev-y": "CY"})
    )
    seen.append(store.assigned({"ev-a1": "CA"}))  # not CA's other event
    seen.append(store.assigned({}))
    seen.append([store.encounter_of(c) for c in ("CA", "CB", "CC", "CY")])
    seen.append([store.claims_of(icn) for icn in seen[:3]])
    seen.append(store.forget(["CB"]))  # its interchange also carried CA: kept
    seen.append(store.forget(["CC"]))  # alone in its interchange: blanked
    seen.append([store.interchange(icn) for icn in seen[:3]])
    return seen


def partition_store(path: Path) -> PartitionNumbers:
    return PartitionNumbers(path, partition=0, partitions=1, floor=1)


def test_a_new_file_indexes_claims_once_by_claim_id_then_event_id(tmp_path: Path) -> None:
    for store in (ControlNumbers(tmp_path / "c.sqlite3"), partition_store(tmp_path / "p.sqlite3")):
        assert indexed_columns(store.db) == {("claim_id", "event_id"), ("icn",)}
        store.close()


def test_a_file_of_the_old_layout_keeps_it_and_answers_the_same(tmp_path: Path) -> None:
    for n, make in enumerate((lambda p: ControlNumbers(p), partition_store)):
        answers = []
        for path in (tmp_path / f"new{n}", old_file(tmp_path / f"old{n}")):
            store = make(path)
            answers.append(script(store))
            store.close()
        assert answers[0] == answers[1]
        first, second, third = answers[0][:3]
        assert answers[0][3:6] == [
            {"ev-a1": first, "ev-a2": third, "ev-c1": second},
            {"ev-a1": first},
            {},
        ]
    store = partition_store(tmp_path / "old1")
    assert indexed_columns(store.db) == {("event_id",), ("claim_id",), ("icn",)}
    store.close()


def test_each_layout_reads_by_index(tmp_path: Path) -> None:
    for store in (
        partition_store(tmp_path / "new.sqlite3"),
        partition_store(old_file(tmp_path / "old.sqlite3")),
    ):
        assert whole_table_scans(store.db, lambda s=store: script(s)) == {}
        store.close()


def test_change_records_rebuild_the_claims_in_either_layout(tmp_path: Path) -> None:
    rows = "SELECT rowid, event_id, claim_id, encounter_id, icn FROM claims ORDER BY rowid"
    for source_old, target_old in ((True, False), (False, True)):
        case = tmp_path / f"{source_old}-{target_old}"
        case.mkdir()
        source = partition_store(old_file(case / "s") if source_old else case / "s")
        script(source)
        changes = source.take_changes()
        source.commit()
        target = partition_store(old_file(case / "t") if target_old else case / "t")
        for key, value in changes:
            target.apply(key, value)
        target.commit()
        assert target.db.execute(rows).fetchall() == source.db.execute(rows).fetchall()
        assert target.assigned({"ev-a1": "CA", "ev-a2": "CA"}) == source.assigned(
            {"ev-a1": "CA", "ev-a2": "CA"}
        )
        source.close()
        target.close()
