"""A changelogged store whose change records are its rows, captured by SQLite triggers.

``ChangelogStore`` leaves it to each write method to log what it changed. A store with
many write paths (the claims stage's corrections store and COB ledger: upserts, deletes,
snapshots restored, retention prunes) would have to repeat that in each of them, and a
path that forgot would silently not move with its partition. Here triggers on every
table note each row a statement touched (table and rowid); ``take_changes`` then gives,
per touched row, its current content (or a tombstone once deleted), keyed
``<table>:<rowid>``. Applied in order with ``INSERT OR REPLACE`` (rowid kept, so an
``ORDER BY rowid`` reads the same after a restore) they rebuild the same tables.

With ``recursive_triggers`` on, a row that ``INSERT OR REPLACE`` removes for a conflict
fires its delete trigger too, so it leaves as a tombstone, not as a stale copy.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from pipeline.state import Change, ChangelogStore

_ROW_CHANGES = """
CREATE TABLE IF NOT EXISTS row_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tbl TEXT NOT NULL,
    rid INTEGER NOT NULL
);
-- A row touched twice in a batch is one record. Not a UNIQUE constraint with INSERT OR
-- IGNORE: an outer statement's conflict clause overrides the trigger's, so an upsert that
-- touched a row twice would fail.
CREATE INDEX IF NOT EXISTS row_changes_by_row ON row_changes (tbl, rid);
"""


def _triggers(table: str) -> str:
    note = (
        "INSERT INTO row_changes (tbl, rid) SELECT '{t}', {row}.rowid WHERE NOT EXISTS "
        "(SELECT 1 FROM row_changes WHERE tbl = '{t}' AND rid = {row}.rowid);"
    )
    out = []
    for event, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
        out.append(
            f"CREATE TRIGGER IF NOT EXISTS {table}_{event.lower()}_logged AFTER {event} ON "
            f"{table} BEGIN {note.format(t=table, row=row)} END;"
        )
    return "\n".join(out)


class RowChangelogStore(ChangelogStore):
    """A ``ChangelogStore`` whose listed ``tables`` log every row change by themselves.

    ``changelog=False`` (a store used outside the runner: offline commands, one-off
    tools) creates no triggers and logs nothing."""

    def __init__(
        self, path: Path | str, schema: str, tables: Sequence[str], *, changelog: bool = True
    ) -> None:
        self.tables = tuple(tables)
        self.logged = changelog
        extra = _ROW_CHANGES + "".join(_triggers(t) for t in self.tables) if changelog else ""
        super().__init__(path, schema + extra)
        self.db.execute("PRAGMA recursive_triggers=ON")
        self._columns = {
            t: [str(r[1]) for r in self.db.execute(f"PRAGMA table_info({t})")] for t in self.tables
        }

    def has_changes(self) -> bool:
        if not self.logged:
            return False
        return self.db.execute("SELECT 1 FROM row_changes LIMIT 1").fetchone() is not None

    def take_changes(self) -> list[Change]:
        """Each row touched since the last call: its content now, or None once deleted."""
        if not self.logged:
            return []
        touched = self.db.execute("SELECT tbl, rid FROM row_changes ORDER BY seq").fetchall()
        if not touched:
            return []
        out: list[Change] = []
        for table, rid in touched:
            columns = self._columns[table]
            row = self.db.execute(
                f"SELECT {', '.join(columns)} FROM {table} WHERE rowid = ?", (rid,)
            ).fetchone()
            value = None
            if row is not None:
                value = json.dumps(dict(zip(columns, row, strict=True))).encode()
            out.append((f"{table}:{rid}", value))
        if not self.db.in_transaction:
            self.db.execute("BEGIN")
        self.db.execute("DELETE FROM row_changes")
        return out

    def apply(self, key: str, value: bytes | None) -> None:
        """One change record read back from the changelog (a restore)."""
        table, _, rid = key.rpartition(":")
        if table not in self._columns:
            raise ValueError(f"changelog record for an unknown table: {key!r}")
        if value is None:
            self.db.execute(f"DELETE FROM {table} WHERE rowid = ?", (int(rid),))
            return
        row = json.loads(value)
        columns = [c for c in self._columns[table] if c in row]
        self.db.execute(
            f"INSERT OR REPLACE INTO {table} (rowid, {', '.join(columns)}) "
            f"VALUES (?, {', '.join('?' * len(columns))})",
            (int(rid), *(row[c] for c in columns)),
        )
