"""Interchange control numbers (ISA13 = GS06) that are never reused, and what each carried.

A SQLite file in ``Settings.state_dir``, like the remittance ledger, and for the same
reason: it survives a SIGKILL without trusting Tansu's watermarks. Each allocation is one
transaction with ``synchronous=FULL``: the counter moves, the interchange text and the
claims it carries are stored, and the commit reaches the disk before anything is sent.

Why store the claims and the text: the claims stage runs on the at-least-once runner, so
after a crash a batch is consumed again. A claim event already assigned to an interchange
must go out in that same interchange (same number, same bytes), never in a second one
under a new number: ``assigned`` finds it, and the stored text is re-delivered as is.
Acknowledgments (999 by group control number, 277CA by claim id) are matched here too.

Several claims instances must not share a number range: ``block`` (0-9) gives each its
own tenth of the space (block b allocates b*10^8 .. (b+1)*10^8-1; block 0 starts at 1).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.models import utcnow
from pipeline.state import private_sqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counter (
    block INTEGER PRIMARY KEY,
    last INTEGER NOT NULL               -- the last control number handed out in this block
);
CREATE TABLE IF NOT EXISTS interchanges (
    icn INTEGER PRIMARY KEY,
    payer_id TEXT NOT NULL,
    claim_type TEXT NOT NULL,
    adapter TEXT NOT NULL,
    text TEXT NOT NULL,                 -- the interchange exactly as (re-)delivered
    status TEXT NOT NULL,               -- built | delivered | dead
    detail TEXT NOT NULL DEFAULT '',    -- receipt or the last delivery error
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS claims (
    event_id TEXT PRIMARY KEY,          -- the claim event: a replay finds its interchange
    claim_id TEXT NOT NULL,
    encounter_id TEXT NOT NULL,
    icn INTEGER NOT NULL REFERENCES interchanges (icn)
);
CREATE INDEX IF NOT EXISTS claims_by_claim_id ON claims (claim_id);
CREATE INDEX IF NOT EXISTS claims_by_icn ON claims (icn);
-- Claims past their retention window (services/claims/retention.py): an interchange's text
-- is blanked once every claim it carried is here.
CREATE TABLE IF NOT EXISTS pruned_claims (
    claim_id TEXT PRIMARY KEY
);
"""

BLOCK_SIZE = 100_000_000
LAST_NUMBER = 999_999_999


class ControlNumbersExhausted(RuntimeError):
    """Every control number of this block has been used: nothing may be sent under a reused one."""


@dataclass(frozen=True)
class ClaimRef:
    """A claim carried by an interchange."""

    event_id: str
    claim_id: str
    encounter_id: str


@dataclass(frozen=True)
class StoredInterchange:
    """An interchange as stored: its number, where it goes, its text and delivery status."""

    icn: int
    payer_id: str
    claim_type: str
    adapter: str
    text: str
    status: str
    detail: str


class ControlNumbers:
    """The durable counter and the interchanges it numbered."""

    def __init__(self, path: Path | str, *, block: int = 0) -> None:
        if not 0 <= block <= 9:
            raise ValueError("block must be 0..9")
        self.block = block
        self.first = max(1, block * BLOCK_SIZE)
        self.last = min(LAST_NUMBER, (block + 1) * BLOCK_SIZE - 1)
        # Autocommit mode: every transaction below is explicit (BEGIN IMMEDIATE .. COMMIT).
        # The stage is built in one thread and may run in another; it is used by one at a time.
        self.db = sqlite3.connect(
            private_sqlite(path), isolation_level=None, check_same_thread=False
        )
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA secure_delete=ON")  # pruned 837 text is overwritten, not freed
        self.db.executescript(_SCHEMA)

    def allocate(
        self,
        claims: Sequence[ClaimRef],
        *,
        payer_id: str,
        claim_type: str,
        adapter: str,
        build: Callable[[int], str],
    ) -> StoredInterchange:
        """Take the next number, build the interchange under it, store both, durably.

        If ``build`` raises, nothing is stored and the number is not used up.
        """
        self.db.execute("BEGIN IMMEDIATE")
        try:
            row = self.db.execute("SELECT last FROM counter WHERE block = ?", (self.block,))
            found = row.fetchone()
            number = (found[0] if found else self.first - 1) + 1
            if number > self.last:
                raise ControlNumbersExhausted(
                    f"control numbers {self.first}..{self.last} are used up; "
                    "configure another block (CLAIMFLOW_CLAIMS__CONTROL_NUMBER_BLOCK)"
                )
            text = build(number)
            self.db.execute(
                "INSERT INTO counter VALUES (?, ?) ON CONFLICT(block) DO UPDATE SET last = ?",
                (self.block, number, number),
            )
            self.db.execute(
                "INSERT INTO interchanges VALUES (?, ?, ?, ?, ?, 'built', '', ?)",
                (number, payer_id, claim_type, adapter, text, utcnow().isoformat()),
            )
            self.db.executemany(
                "INSERT INTO claims VALUES (?, ?, ?, ?)",
                [(c.event_id, c.claim_id, c.encounter_id, number) for c in claims],
            )
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return StoredInterchange(number, payer_id, claim_type, adapter, text, "built", "")

    def assigned(self, event_ids: Iterable[str]) -> dict[str, int]:
        """Claim event id -> control number, for the claim events already sent (or tried)."""
        ids = list(dict.fromkeys(event_ids))
        out: dict[str, int] = {}
        for start in range(0, len(ids), 500):  # SQLite caps the number of parameters
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT event_id, icn FROM claims WHERE event_id IN ({marks})", chunk
            )
            out.update(dict(rows.fetchall()))
        return out

    def interchange(self, icn: int) -> StoredInterchange | None:
        """The stored interchange numbered ``icn``."""
        row = self.db.execute(
            "SELECT icn, payer_id, claim_type, adapter, text, status, detail "
            "FROM interchanges WHERE icn = ?",
            (icn,),
        ).fetchone()
        return StoredInterchange(*row) if row else None

    def mark(self, icn: int, status: str, detail: str = "") -> None:
        """Record the outcome of a delivery: delivered (with the receipt) or dead (why).

        Without waiting for the disk: a number must never be reused, so ``allocate`` syncs;
        an outcome lost to a power cut only means the interchange is delivered again under
        the same number, which the adapters make idempotent (file name, idempotency key).
        """
        self.db.execute("PRAGMA synchronous=NORMAL")
        try:
            self.db.execute(
                "UPDATE interchanges SET status = ?, detail = ? WHERE icn = ?",
                (status, detail[:2000], icn),
            )
        finally:
            self.db.execute("PRAGMA synchronous=FULL")

    def claims_of(self, icn: int) -> list[ClaimRef]:
        """The claims an interchange carried, in the order they were stored."""
        rows = self.db.execute(
            "SELECT event_id, claim_id, encounter_id FROM claims WHERE icn = ? ORDER BY rowid",
            (icn,),
        )
        return [ClaimRef(*row) for row in rows.fetchall()]

    def encounter_of(self, claim_id: str) -> str | None:
        """The encounter a claim id was billed for (the latest event when there are several)."""
        row = self.db.execute(
            "SELECT encounter_id FROM claims WHERE claim_id = ? ORDER BY rowid DESC LIMIT 1",
            (claim_id,),
        ).fetchone()
        return row[0] if row else None

    def forget(self, claim_ids: Sequence[str]) -> int:
        """Claims past their retention window: blank the text of every interchange all of whose
        claims are now forgotten (numbers, payer, status and the claim ids stay, for 999s and
        audits). Returns how many interchanges were blanked."""
        if not claim_ids:
            return 0
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(
                "INSERT OR IGNORE INTO pruned_claims VALUES (?)", [(c,) for c in claim_ids]
            )
            marks = ",".join("?" * len(claim_ids))
            cur = self.db.execute(
                "UPDATE interchanges SET text = '' WHERE text != '' AND icn IN "
                f"(SELECT icn FROM claims WHERE claim_id IN ({marks})) AND NOT EXISTS "
                "(SELECT 1 FROM claims c WHERE c.icn = interchanges.icn AND c.claim_id NOT IN "
                "(SELECT claim_id FROM pruned_claims))",
                list(claim_ids),
            )
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # old pages leave the WAL too
        return cur.rowcount

    def last_number(self) -> int | None:
        """The last control number handed out in this block (None before the first)."""
        row = self.db.execute("SELECT last FROM counter WHERE block = ?", (self.block,))
        found = row.fetchone()
        return int(found[0]) if found else None

    def close(self) -> None:
        self.db.close()
