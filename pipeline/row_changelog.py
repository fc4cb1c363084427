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

A table may name ``bulky`` columns (an interchange's 837 text, the verdict a claim was
built from) that an update of a status leaves as they are. An update that sets none of
them is logged as the row's other columns only, keyed ``<table>:<rowid>:slim`` and applied
as an ``UPDATE``, so a delivery mark does not send the 837 again. Its own key keeps
compaction exact: the full record (``<table>:<rowid>``) it updates is only superseded by a
later full record or tombstone, which a restore applies after it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from pipeline.state import Change, ChangelogStore

_ROW_CHANGES = """
CREATE TABLE IF NOT EXISTS row_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tbl TEXT NOT NULL,
    rid INTEGER NOT NULL,
    full INTEGER NOT NULL DEFAULT 1     -- 0: an update that set no bulky column
);
-- A row touched twice in a batch is one record. Not a UNIQUE constraint with INSERT OR
-- IGNORE: an outer statement's conflict clause overrides the trigger's, so an upsert that
-- touched a row twice would fail.
CREATE INDEX IF NOT EXISTS row_changes_by_row ON row_changes (tbl, rid);
"""


_ADD_FULL = "ALTER TABLE row_changes ADD COLUMN full INTEGER NOT NULL DEFAULT 1;"

_SLIM = ":slim"
"""Key suffix of a record carrying a row's columns other than its bulky ones."""


def _triggers(table: str, bulky: Sequence[str]) -> str:
    """Drop and create the table's logging triggers (a file written before bulky columns
    existed has an update trigger that logs the whole row)."""
    note = (
        "INSERT INTO row_changes (tbl, rid, full) SELECT '{t}', {row}.rowid, {full} WHERE "
        "NOT EXISTS (SELECT 1 FROM row_changes WHERE tbl = '{t}' AND rid = {row}.rowid "
        "AND full = {full});"
    )
    events = [("insert", "INSERT", "NEW", 1), ("delete", "DELETE", "OLD", 1)]
    if bulky:
        events += [
            ("update", "UPDATE", "NEW", 0),
            ("update_bulky", f"UPDATE OF {', '.join(bulky)}", "NEW", 1),
        ]
    else:
        events.append(("update", "UPDATE", "NEW", 1))
    out = [f"DROP TRIGGER IF EXISTS {table}_update_bulky_logged;"]
    for name, event, row, full in events:
        out.append(
            f"DROP TRIGGER IF EXISTS {table}_{name}_logged;\n"
            f"CREATE TRIGGER {table}_{name}_logged AFTER {event} ON {table} "
            f"BEGIN {note.format(t=table, row=row, full=full)} END;"
        )
    return "\n".join(out)


class RowChangelogStore(ChangelogStore):
    """A ``ChangelogStore`` whose listed ``tables`` log every row change by themselves.

    ``changelog=False`` (a store used outside the runner: offline commands, one-off
    tools) creates no triggers and logs nothing."""

    def __init__(
        self,
        path: Path | str,
        schema: str,
        tables: Sequence[str],
        *,
        changelog: bool = True,
        bulky: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.tables = tuple(tables)
        self.logged = changelog
        self.bulky = {t: tuple(c) for t, c in (bulky or {}).items() if c}
        unknown = set(self.bulky) - set(self.tables)
        if unknown:
            raise ValueError(f"bulky columns named for tables not logged: {sorted(unknown)}")
        super().__init__(path, schema + (_ROW_CHANGES if changelog else ""))
        self.db.execute("PRAGMA recursive_triggers=ON")
        self._columns = {
            t: [str(r[1]) for r in self.db.execute(f"PRAGMA table_info({t})")] for t in self.tables
        }
        for table, columns in self.bulky.items():
            missing = set(columns) - set(self._columns[table])
            if missing:
                raise ValueError(f"bulky columns not in table {table}: {sorted(missing)}")
        if changelog:
            logged = {str(r[1]) for r in self.db.execute("PRAGMA table_info(row_changes)")}
            script = "" if "full" in logged else _ADD_FULL
            script += "".join(_triggers(t, self.bulky.get(t, ())) for t in self.tables)
            self.db.executescript(script)
            self.db.commit()

    def has_changes(self) -> bool:
        if not self.logged:
            return False
        return self.db.execute("SELECT 1 FROM row_changes LIMIT 1").fetchone() is not None

    def take_changes(self) -> list[Change]:
        """Each row touched since the last call: its content now, or None once deleted."""
        if not self.logged:
            return []
        # In the order each row was first touched; full if any statement logged it whole.
        touched = self.db.execute(
            "SELECT tbl, rid, max(full) FROM row_changes GROUP BY tbl, rid ORDER BY min(seq)"
        ).fetchall()
        if not touched:
            return []
        out: list[Change] = []
        for table, rid, full in touched:
            columns = self._columns[table]
            key = f"{table}:{rid}"
            if not full:
                columns = [c for c in columns if c not in self.bulky[table]]
                key += _SLIM
            row = self.db.execute(
                f"SELECT {', '.join(columns)} FROM {table} WHERE rowid = ?", (rid,)
            ).fetchone()
            value = None
            if row is not None:
                value = json.dumps(dict(zip(columns, row, strict=True))).encode()
            out.append((key, value))
            if row is None and table in self.bulky:
                # Compaction may then drop the slim record of the deleted row too.
                out.append((key + _SLIM, None))
        if not self.db.in_transaction:
            self.db.execute("BEGIN")
        self.db.execute("DELETE FROM row_changes")
        return out

    def apply(self, key: str, value: bytes | None) -> None:
        """One change record read back from the changelog (a restore)."""
        slim = key.endswith(_SLIM)
        table, _, rid = key.removesuffix(_SLIM).rpartition(":")
        if table not in self._columns:
            raise ValueError(f"changelog record for an unknown table: {key!r}")
        if slim:
            # The row's other columns since its last full record (a tombstone: nothing).
            if value is not None:
                row = json.loads(value)
                columns = [c for c in self._columns[table] if c in row]
                self.db.execute(
                    f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in columns)} WHERE rowid = ?",
                    (*(row[c] for c in columns), int(rid)),
                )
            return
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
