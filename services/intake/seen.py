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

Nearly every message is new, and a lookup that finds nothing still costs a query (a
read transaction on the WAL, ~5% of a message's CPU). So the digests in the table are
also kept as bits in memory (a Bloom filter): a digest whose bits are not all set is in
no row, and only the others are looked up. The bits are set before a row is written and
never cleared (a pruned row leaves them: one more query, never a wrong answer); they are
read again from the table when the file is opened, when another connection has written
to it since (``PRAGMA data_version``, checked at the first lookup of each batch), and when
the bits fill up.
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


_MIN_BITS = 1 << 23  # 1 MiB of bits; read again from the table past 8 bits a digest


class SeenMessages(BatchStore):
    """Source messages already read; additions wait in memory until ``commit``."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(path, _SCHEMA)
        self._pending: dict[tuple[str, str], float] = {}
        self._bits = bytearray()
        self._mask = 0
        self._held = 0  # digests marked in the bits (rows pruned since included)
        self._version = -1  # the data_version the bits reflect
        self._checked = False  # whether this batch has compared it
        self._load()

    def _load(self) -> None:
        """Set the bits of every digest in the table, in a filter sized for them."""
        count = int(self.db.execute("SELECT count(*) FROM seen").fetchone()[0])
        size = _MIN_BITS
        while size < count * 16:
            size *= 2
        self._bits, self._mask, self._held = bytearray(size // 8), size - 1, 0
        self._version = int(self.db.execute("PRAGMA data_version").fetchone()[0])
        for (digest,) in self.db.execute("SELECT digest FROM seen"):
            self._mark(digest)

    def _mark(self, digest: str) -> None:
        h = hash(digest)
        a, b = h & self._mask, (h >> 32) & self._mask
        self._bits[a >> 3] |= 1 << (a & 7)
        self._bits[b >> 3] |= 1 << (b & 7)
        self._held += 1

    def _maybe(self, digest: str) -> bool:
        """False when no row holds this digest; True when one may."""
        h = hash(digest)
        a, b = h & self._mask, (h >> 32) & self._mask
        bits = self._bits
        return bool(bits[a >> 3] & (1 << (a & 7)) and bits[b >> 3] & (1 << (b & 7)))

    def seen(self, source_id: str, digest: str) -> bool:
        """Whether this message was read before (committed, or earlier in this batch)."""
        if (source_id, digest) in self._pending:
            return True
        if not self._checked:  # once a batch: written by another connection, or full
            self._checked = True
            version = int(self.db.execute("PRAGMA data_version").fetchone()[0])
            if version != self._version or self._held * 8 > self._mask:
                self._load()
        if not self._maybe(digest):
            return False
        row = self.db.execute(
            "SELECT 1 FROM seen WHERE source_id = ? AND digest = ?", (source_id, digest)
        ).fetchone()
        return row is not None

    def add(self, source_id: str, digest: str, at: float | None = None) -> None:
        """Remember a message once its batch is committed."""
        self._pending[(source_id, digest)] = time.time() if at is None else at

    def commit(self) -> None:
        """Make this batch's additions durable."""
        self._checked = False
        if self._pending:
            for _, digest in self._pending:  # before the rows: never a row without its bits
                self._mark(digest)
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
