"""The claims ledger remittance matches 835s against: a local SQLite store.

Why not a faust memory table: a memory table is rebuilt from its changelog topic on
restart, and that recovery trusts high watermarks, which Tansu reports low (DESIGN.md);
a ledger that silently misses a few claims would post their payments as unmatched.
SQLite on the service's volume survives a SIGKILL, and every write here is idempotent,
so the at-least-once runner can replay a batch after a crash without double-posting:
the runner commits this store after the batch's output is acknowledged and before the
consumed offsets are committed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.models import SubmittedClaim

_SCHEMA = """
CREATE TABLE IF NOT EXISTS claims (
    claim_id TEXT PRIMARY KEY,
    encounter_id TEXT NOT NULL,
    payer_id TEXT NOT NULL,
    record TEXT NOT NULL            -- the SubmittedClaim as JSON, without its X12
);
CREATE TABLE IF NOT EXISTS pending (  -- payments that arrived before their claim
    claim_id TEXT NOT NULL,
    file_key TEXT NOT NULL,
    file_record TEXT NOT NULL,       -- the PayerFile as JSON
    PRIMARY KEY (claim_id, file_key)
);
CREATE TABLE IF NOT EXISTS posted (
    event_id TEXT PRIMARY KEY,
    claim_id TEXT NOT NULL
);
"""


class Ledger:
    """Claims submitted, payments waiting for their claim, and postings already made."""

    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level="DEFERRED")
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self.db.commit()

    def add_claim(self, claim: SubmittedClaim) -> None:
        record = claim.model_copy(update={"x12": ""}).model_dump_json()
        self.db.execute(
            "INSERT INTO claims VALUES (?, ?, ?, ?) ON CONFLICT(claim_id) DO UPDATE SET "
            "encounter_id = excluded.encounter_id, payer_id = excluded.payer_id, "
            "record = excluded.record",
            (claim.claim_id, claim.encounter_id, claim.payer_id, record),
        )

    def claim(self, claim_id: str) -> SubmittedClaim | None:
        row = self.db.execute(
            "SELECT record FROM claims WHERE claim_id = ?", (claim_id,)
        ).fetchone()
        return SubmittedClaim.model_validate_json(row[0]) if row else None

    def add_pending(self, claim_id: str, file_key: str, file_record: str) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO pending VALUES (?, ?, ?)", (claim_id, file_key, file_record)
        )

    def take_pending(self, claim_id: str) -> list[str]:
        rows = self.db.execute(
            "SELECT file_record FROM pending WHERE claim_id = ? ORDER BY file_key", (claim_id,)
        ).fetchall()
        self.db.execute("DELETE FROM pending WHERE claim_id = ?", (claim_id,))
        return [r[0] for r in rows]

    def pending_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM pending").fetchone()[0])

    def mark_posted(self, event_id: str, claim_id: str) -> bool:
        """Record a posting; False when it was already made (a replayed input)."""
        cur = self.db.execute("INSERT OR IGNORE INTO posted VALUES (?, ?)", (event_id, claim_id))
        return cur.rowcount == 1

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """All of one input's writes, or none of them (a savepoint inside the batch)."""
        # Open the batch transaction first: the RELEASE of an outermost savepoint is a
        # COMMIT, which would make this input durable before the batch's output is acked.
        if not self.db.in_transaction:
            self.db.execute("BEGIN")
        self.db.execute("SAVEPOINT one_input")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK TO one_input")
            self.db.execute("RELEASE one_input")
            raise
        self.db.execute("RELEASE one_input")

    def commit(self) -> None:
        self.db.commit()

    def rollback(self) -> None:
        self.db.rollback()

    def close(self) -> None:
        self.db.close()
