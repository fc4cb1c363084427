"""``RowChangelogStore.take_changes`` reads a batch's touched rows in one query, writes each
record's JSON without ``json.dumps`` and answers at once when no statement changed a row
since the last call. The records must be those of the reads it replaced, kept here as the
reference (the notes grouped by row, one query per table and columns, ``json.dumps``),
on the claims stage's stores as the simulator's encounters of both mixes, their payers'
acknowledgments and remittances go through it, in small and large batches."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from sim_corpus import MIXES, validated

import bench.bench_claims_stage as claims_bench
from pipeline.row_changelog import RowChangelogStore, record_writer, row_record
from pipeline.state import Change
from services.claims.control import ClaimRef, PartitionNumbers


def reference_changes(store: RowChangelogStore) -> list[Change]:
    """What ``take_changes`` gave before, read without taking the notes."""
    touched = store.db.execute(
        "SELECT tbl, rid, max(full) FROM row_changes GROUP BY tbl, rid ORDER BY min(seq)"
    ).fetchall()
    out: list[Change] = []
    for table, rid, full in touched:
        names = store._logged_columns(table, full)
        row = store.db.execute(
            f"SELECT {', '.join(names)} FROM {table} WHERE rowid = ?", (rid,)
        ).fetchone()
        key = f"{table}:{rid}" if full else f"{table}:{rid}:slim"
        value = None if row is None else json.dumps(dict(zip(names, row, strict=True))).encode()
        out.append((key, value))
        if row is None and table in store.bulky:
            out.append((key + ":slim", None))
    return out


def judged(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every ``take_changes`` compared with the reference; how many records each gave."""
    taken: list[int] = []
    take = RowChangelogStore.take_changes

    def checked(self: RowChangelogStore) -> list[Change]:
        expected = reference_changes(self) if self.logged else []
        got = take(self)
        assert got == expected
        assert self.db.execute("SELECT count(*) FROM row_changes").fetchone()[0] == 0
        taken.append(len(got))
        return got

    monkeypatch.setattr(RowChangelogStore, "take_changes", checked)
    return taken


@pytest.mark.parametrize("batch", [5, 50])
@pytest.mark.parametrize("mix", MIXES)
def test_take_changes_gives_the_records_of_the_reads_it_replaced(
    monkeypatch: pytest.MonkeyPatch, mix: str, batch: int
) -> None:
    taken = judged(monkeypatch)
    monkeypatch.setattr(claims_bench, "BATCH", batch)
    corpus = list(validated(mix))
    claims_bench.run(corpus)
    assert sum(taken) > 3 * len(corpus)
    assert 0 in taken  # stores a batch did not touch


VALUES: list[Any] = [
    "",
    "plain",
    'quote " and backslash \\ and slash /',
    "tab\t new line\n nul\x00 bell\x07 del\x7f",
    "é ñ ü 漢字 \u2028 \U0001f600",
    "\ud800 lone surrogate",
    # Long texts (a stored verdict's base64, an 837), looked at whole before they are escaped.
    "wwEO9BSqD+WfRkBlYTRhMmFl/29iZWEy=" * 40,
    "ISA*00*          *00~\nGS*HC*SENDER*RECEIVER~\n" * 40,
    "x" * 255 + "\n",
    "x" * 256 + "\n",
    "\n" * 300,
    "ISA*00~\r\n" * 60,
    "ISA*00~\n" * 60 + '"',
    "ISA*00~\n" * 60 + "\\",
    "ISA*00~\n" * 60 + "\t",
    "ISA*00~\n" * 60 + "\x7f",
    "ISA*00~\n" * 60 + "\x00",
    "ISA*00~\n" * 60 + "é",
    "plain text " * 40 + "\U0001f600",
    0,
    -1,
    2**63 - 1,
    -(2**70),
    0.0,
    -0.0,
    0.1,
    1e16,
    1.5e-7,
    5e-324,
    1.7976931348623157e308,
    None,
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_a_record_is_written_as_json_dumps_writes_it(value: Any) -> None:
    names = ["a", 'name with "quote" and é', "z"]
    keys = [f"{json.dumps(n)}: " for n in names]
    row = [value, value, 7]
    assert row_record(keys, row) == json.dumps(dict(zip(names, row, strict=True))).encode()
    # A column left out, and values past the last key (a narrower table's padding).
    assert (
        row_record([keys[0], None], [value, "skipped", None]) == json.dumps({"a": value}).encode()
    )


@pytest.mark.parametrize("value", [*VALUES, math.nan, math.inf, True, b"blob"], ids=repr)
def test_a_table_s_record_writer_writes_what_row_record_writes(value: Any) -> None:
    """The writer made for a table's keys is judged by ``row_record`` (and, through it,
    by ``json.dumps``) on every value, in every place, a column left out or not."""
    names = ["a", 'name {with} "quote" and é', "z"]
    keys = [f"{json.dumps(n)}: " for n in names]
    for row in ([value, value, 7], [7, "text", value], [None, value, value]):
        for kept in (keys, [keys[0], None, keys[2]], [None, None, None]):
            padded = ("first note", "rowid", *row, None, None)  # the query's row
            assert record_writer(kept, 2)(padded) == row_record(kept, row)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, True, b"blob"], ids=repr)
def test_a_value_json_writes_by_name_is_left_to_json_dumps(value: Any) -> None:
    assert row_record(['"a": '], [value]) is None


def test_an_infinite_or_blob_column_still_gives_the_json_dumps_record(tmp_path: Path) -> None:
    store = PartitionNumbers(tmp_path / "n.sqlite3", partition=0, partitions=1)
    store.db.execute("INSERT INTO counter VALUES (0, ?)", (math.inf,))
    store.db.execute("INSERT INTO counter VALUES (1, ?)", (2.5,))
    expected = reference_changes(store)
    assert b"Infinity" in (expected[0][1] or b"")
    assert store.take_changes() == expected
    store.db.execute("INSERT INTO pruned_claims VALUES (?)", (b"\x00blob",))
    with pytest.raises(TypeError):  # json.dumps refuses bytes, as it did
        store.take_changes()
    store.close()


def test_notes_taken_then_rolled_back_are_taken_again(tmp_path: Path) -> None:
    store = PartitionNumbers(tmp_path / "n.sqlite3", partition=0, partitions=1)
    store.commit()
    assert store.take_changes() == []
    assert not store.has_changes()
    stored = store.allocate(
        [ClaimRef("e1", "c1", "enc1")],
        payer_id="P",
        claim_type="837P",
        adapter="file",
        build=lambda n: f"ISA*{n}~",
    )
    store.commit()  # the rows (and, in the connection, their notes)
    assert store.has_changes()
    first = store.take_changes()
    assert [k for k, _ in first] == ["counter:0", f"interchanges:{stored.icn}", "claims:1"]
    assert store.take_changes() == []
    assert not store.has_changes()
    store.rollback()  # the batch that took them failed: the notes are back
    assert store.has_changes()
    assert store.take_changes() == first
    store.commit()
    store.mark(stored.icn + 1, "delivered")  # no such row: nothing changes
    assert not store.has_changes()
    assert store.take_changes() == []
    store.mark(stored.icn, "delivered", "ok")
    assert [k for k, _ in store.take_changes()] == [f"interchanges:{stored.icn}:slim"]
    store.close()
