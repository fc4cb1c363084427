"""Which source messages intake has already turned into encounters: a small SQLite set.

EHRs and interface engines resend: an MLLP sender that missed our ACK, an HTTP client that
timed out after the gateway had stored its message. Encounter and event ids are
deterministic, so a resend would produce the same records again; dropping it here keeps
downstream from seeing it at all. Keyed by source id and a hash of the body, so a
corrected message sent under the same id is read again.

The stage runner commits this set after a batch's output is acknowledged and before the
consumed offsets are committed (as ``services/remittance/ledger.py``). A crash between the
two re-reads the batch and drops it as seen: its output is already on the topic. A crash
before leaves the batch out of the set, and it is read again (at-least-once, with the same
event ids). The set is per instance: a partition that moves to another intake instance
brings no history, and downstream drops such repeats by event id.
"""

from __future__ import annotations

import time
from pathlib import Path

from pipeline.state import BatchStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    source_id TEXT NOT NULL,
    digest TEXT NOT NULL,       -- sha256 of the body, 32 hex characters
    seen_at REAL NOT NULL,      -- unix time, for pruning
    PRIMARY KEY (source_id, digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_at ON seen (seen_at);
"""


class SeenMessages(BatchStore):
    """Source messages already read; additions wait in memory until ``commit``."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(path, _SCHEMA)
        self._pending: dict[tuple[str, str], float] = {}

    def seen(self, source_id: str, digest: str) -> bool:
        """Whether this message was read before (committed, or earlier in this batch)."""
        if (source_id, digest) in self._pending:
            return True
        row = self.db.execute(
            "SELECT 1 FROM seen WHERE source_id = ? AND digest = ?", (source_id, digest)
        ).fetchone()
        return row is not None

    def add(self, source_id: str, digest: str, at: float | None = None) -> None:
        """Remember a message once its batch is committed."""
        self._pending[(source_id, digest)] = time.time() if at is None else at

    def commit(self) -> None:
        """Make this batch's additions durable."""
        if self._pending:
            self.db.executemany(
                "INSERT OR IGNORE INTO seen VALUES (?, ?, ?)",
                [(s, d, t) for (s, d), t in self._pending.items()],
            )
            self.db.commit()
            self._pending.clear()

    def prune(self, older_than: float) -> int:
        """Forget messages read before a unix time; returns how many."""
        cur = self.db.execute("DELETE FROM seen WHERE seen_at < ?", (older_than,))
        self.db.commit()
        return cur.rowcount

    def __len__(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM seen").fetchone()[0]) + len(self._pending)
