"""Row change records of the claims stores: a status update does not re-send the bulky
columns (an interchange's 837 text, the verdict a claim was built from), and a restore
from the changelog, compacted or not, rebuilds the same rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pipeline.row_changelog import RowChangelogStore
from pipeline.state import Change
from services.claims.control import ClaimRef, PartitionNumbers, owner

TEXT = "ISA*00*" + "X" * 4000 + "~IEA*1*{n:09d}~"


def numbers(path: Path) -> PartitionNumbers:
    return PartitionNumbers(path, partition=1, partitions=3)


def allocate(store: PartitionNumbers, n: int) -> int:
    """Number, build and store one interchange carrying claim ``CLM-<n>``."""
    ref = ClaimRef(f"evt-{n}", f"CLM-{n}", f"ENC-{n}")
    stored = store.allocate(
        [ref],
        payer_id="P1",
        claim_type="837P",
        adapter="file",
        build=lambda number: TEXT.format(n=number),
    )
    store.commit()
    return stored.icn


def compacted(records: list[Change]) -> list[Change]:
    """What a compacted topic keeps: the newest record of each key, in offset order."""
    last = {key: i for i, (key, _) in enumerate(records)}
    return [r for i, r in enumerate(records) if last[r[0]] == i]


def rows(store: RowChangelogStore) -> dict[str, list[tuple[object, ...]]]:
    return {
        t: store.db.execute(f"SELECT rowid, * FROM {t} ORDER BY rowid").fetchall()
        for t in store.tables
    }


def restored(path: Path, records: list[Change]) -> PartitionNumbers:
    store = numbers(path)
    for key, value in records:
        with store.atomic():
            store.apply(key, value)
    store.take_changes()
    store.commit()
    return store


def test_a_delivery_mark_does_not_send_the_837_again(tmp_path: Path) -> None:
    store = numbers(tmp_path / "numbers.sqlite3")
    icn = allocate(store, 1)
    assert owner(icn, 3) == 1
    built = store.take_changes()
    assert sum(TEXT.format(n=icn).encode() in (v or b"") for _, v in built) == 1
    store.commit()

    store.mark(icn, "delivered", "receipt-1")
    marked = store.take_changes()
    store.commit()
    assert marked, "the status change is logged"
    assert all(b"ISA*00*" not in (v or b"") for _, v in marked)
    assert [k for k, _ in marked] == [f"interchanges:{icn}:slim"]
    store.close()


@pytest.mark.parametrize("compact", [False, True], ids=["every-record", "compacted"])
def test_restore_from_status_updates_and_blanking_is_exact(tmp_path: Path, compact: bool) -> None:
    store = numbers(tmp_path / "first.sqlite3")
    records: list[Change] = []
    first = allocate(store, 1)
    second = allocate(store, 2)
    records += store.take_changes()
    store.mark(first, "delivered", "receipt-1")
    records += store.take_changes()
    store.mark(second, "dead", "refused")
    store.mark(second, "delivered", "receipt-2")
    records += store.take_changes()
    # Retention blanks the first interchange's text: a full record again.
    assert store.forget(["CLM-1"]) == 1
    store.commit()
    records += store.take_changes()
    store.mark(first, "delivered", "receipt-1 again")
    records += store.take_changes()
    third = allocate(store, 3)
    records += store.take_changes()
    store.commit()
    assert third > second

    again = restored(tmp_path / "second.sqlite3", compacted(records) if compact else records)
    assert rows(again) == rows(store)
    assert again.db.execute(
        "SELECT status, detail, text FROM interchanges WHERE icn = ?", (first,)
    ).fetchone() == ("delivered", "receipt-1 again", "")
    store.close()
    again.close()


def test_a_deleted_row_leaves_its_slim_record_a_tombstone(tmp_path: Path) -> None:
    schema = "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, big TEXT, status TEXT);"
    store = RowChangelogStore(tmp_path / "t.sqlite3", schema, ["t"], bulky={"t": ["big"]})
    store.db.execute("INSERT INTO t VALUES ('a', 'payload', 'new')")
    store.db.execute("UPDATE t SET status = 'old'")
    assert store.take_changes() == [("t:1", b'{"k": "a", "big": "payload", "status": "old"}')]
    store.commit()
    store.db.execute("UPDATE t SET status = 'done'")
    assert store.take_changes() == [("t:1:slim", b'{"k": "a", "status": "done"}')]
    store.commit()
    store.db.execute("DELETE FROM t")
    assert store.take_changes() == [("t:1", None), ("t:1:slim", None)]
    store.commit()
    store.close()


def test_a_file_logged_by_an_older_version_is_upgraded(tmp_path: Path) -> None:
    """Older versions noted changes in a table of the file, through triggers in the file
    (and before bulky columns, without the ``full`` column): the notes not yet produced are
    taken over, and the file's triggers and table are dropped."""
    path = tmp_path / "old.sqlite3"
    schema = "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, big TEXT, status TEXT);"
    db = sqlite3.connect(path)
    db.executescript(
        schema + "CREATE TABLE row_changes (seq INTEGER PRIMARY KEY "
        "AUTOINCREMENT, tbl TEXT NOT NULL, rid INTEGER NOT NULL); "
        "CREATE TRIGGER t_update_logged AFTER UPDATE ON t BEGIN "
        "INSERT INTO row_changes (tbl, rid) VALUES ('t', NEW.rowid); END; "
        "INSERT INTO t VALUES ('a', 'payload', 'new'); "
        "INSERT INTO row_changes (tbl, rid) VALUES ('t', 1);"
    )
    db.close()
    store = RowChangelogStore(path, schema, ["t"], bulky={"t": ["big"]})
    assert store.take_changes() == [("t:1", b'{"k": "a", "big": "payload", "status": "new"}')]
    store.commit()
    store.db.execute("UPDATE t SET status = 'done'")
    assert store.take_changes() == [("t:1:slim", b'{"k": "a", "status": "done"}')]
    store.commit()
    in_file = store.db.execute(
        "SELECT type, name FROM main.sqlite_master WHERE type = 'trigger' OR name = 'row_changes'"
    ).fetchall()
    assert in_file == []
    store.close()


def test_noting_a_change_writes_nothing_to_the_file(tmp_path: Path) -> None:
    """The notes of rows touched are the connection's (a temporary table): the file holds
    the store's tables only, and a batch rolled back leaves no note."""
    schema = "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, big TEXT, status TEXT);"
    store = RowChangelogStore(tmp_path / "t.sqlite3", schema, ["t"], bulky={"t": ["big"]})
    with store.atomic():
        store.db.execute("INSERT INTO t VALUES ('a', 'payload', 'new')")
    store.rollback()
    assert not store.has_changes()
    with pytest.raises(RuntimeError), store.atomic():
        store.db.execute("INSERT INTO t VALUES ('b', 'payload', 'new')")
        raise RuntimeError("this input fails")
    store.db.execute("INSERT INTO t VALUES ('c', 'payload', 'new')")
    assert store.take_changes() == [("t:1", b'{"k": "c", "big": "payload", "status": "new"}')]
    store.commit()
    names = {r[0] for r in store.db.execute("SELECT name FROM main.sqlite_master")}
    assert "row_changes" not in names and not any(n.endswith("_logged") for n in names)
    store.close()


def test_a_payer_number_the_claim_already_has_writes_no_change_record(tmp_path: Path) -> None:
    """The 835 repeats the payer claim control number the 277CA gave: the row is not
    written again, so it sends no second change record; a new number does."""
    from test_claims_837 import coded_encounter, validated

    from services.claims.corrections import SubmittedClaims

    store = SubmittedClaims(tmp_path / "submitted.sqlite3", changelog=True)
    (planned,) = store.claims_for(validated(coded_encounter("ENC-PCN")))
    store.take_changes()
    store.commit()
    store.set_payer_claim_control_numbers([(planned.claim_id, "PCN-1")])
    (slim,) = store.take_changes()
    assert slim[0].endswith(":slim") and b'"PCN-1"' in (slim[1] or b"")
    store.set_payer_claim_control_number(planned.claim_id, "PCN-1")
    assert store.take_changes() == []
    store.set_payer_claim_control_number(planned.claim_id, "PCN-2")
    assert [b'"PCN-2"' in (v or b"") for _, v in store.take_changes()] == [True]
    assert store.prior("ENC-PCN").payer_claim_control_number == "PCN-2"  # type: ignore[union-attr]
    store.close()
