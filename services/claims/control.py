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

``ControlNumbers`` is the store of one process that bills everything (``block`` (0-9)
gives it its own tenth of the space: block b allocates b*10^8 .. (b+1)*10^8-1; block 0
starts at 1). The service keeps ``PartitionNumbers`` instead, one per partition of
encounters.validated.v1, each row change a changelog record, so numbering and the
interchange -> claims map move with the partition:

- Interchanges are built per partition, and any instance can tell the partition that
  owns a number from the number alone: ``owner(n, P)`` = CRC-32 of its nine digits
  modulo P, the partition of encounters.validated.v1 (P partitions) that the Kafka
  client's default partitioner gives the key ``%09d``. Each partition takes, in order, the
  numbers it owns, so no two partitions can ever take the same one, and an
  acknowledgment keyed by the number it answers lands on the partition that sent it.
- Numbers start above every block a single instance could have used (``floor``: block
  0 used numbers below 10^8, so the first is 10^8), so none is reused after an upgrade.
- A number is used only once the allocation is in the partition's changelog (the stage
  produces and flushes the store's changes before it delivers): an instance that takes
  the partition over after a crash restores the counter and the interchanges, so a batch
  read again sends the same interchange again (same number, same bytes), never its claims
  under a new number, and no number twice.
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.models import utcnow
from pipeline.row_changelog import RowChangelogStore
from pipeline.state import Change, StateError, private_sqlite, rows_in
from services.claims.parsed import STORE_PAGE_SIZE

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
-- A claim's rows by claim id, and a claim event found under its claim id: a replay finds
-- its interchange (``assigned``). One index of random keys, not two: each one costs a leaf
-- page written per claim once it outgrows a batch. A file created before keeps its primary
-- key on event_id and its index on claim_id (claims_by_claim_id), read the same way.
CREATE TABLE IF NOT EXISTS claims (
    event_id TEXT NOT NULL,             -- the claim event
    claim_id TEXT NOT NULL,
    encounter_id TEXT NOT NULL,
    icn INTEGER NOT NULL REFERENCES interchanges (icn),
    UNIQUE (claim_id, event_id)
);
CREATE INDEX IF NOT EXISTS claims_by_icn ON claims (icn);
-- Claims past their retention window (services/claims/retention.py): an interchange's text
-- is blanked once every claim it carried is here.
CREATE TABLE IF NOT EXISTS pruned_claims (
    claim_id TEXT PRIMARY KEY
);
"""

BLOCK_SIZE = 100_000_000
LAST_NUMBER = 999_999_999
TABLES = ("counter", "interchanges", "claims", "pruned_claims")


def owner(number: int, partitions: int) -> int:
    """The partition of encounters.validated.v1 that allocated ``number`` (and reads its
    acknowledgments): where librdkafka's default partitioner (CRC-32 of the key) puts the
    key ``%09d``."""
    return zlib.crc32(b"%09d" % number) % partitions


def number_key(number: int) -> str:
    """The record key of an interchange control number (nine digits, as in ISA13)."""
    return f"{number:09d}"


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


class _Reads:
    """What both stores answer from their tables (and the retention write they share)."""

    db: sqlite3.Connection

    def _store(
        self, counter: int, number: int, claims: Sequence[ClaimRef], what: tuple[str, ...]
    ) -> None:
        """The counter moved to ``number``, the interchange (payer, claim type, adapter,
        text) and the claims it carries stored under it."""
        self.db.execute(
            "INSERT INTO counter VALUES (?, ?) ON CONFLICT(block) DO UPDATE SET last = ?",
            (counter, number, number),
        )
        self.db.execute(
            "INSERT INTO interchanges VALUES (?, ?, ?, ?, ?, 'built', '', ?)",
            (number, *what, utcnow().isoformat()),
        )
        self.db.executemany(
            "INSERT INTO claims VALUES (?, ?, ?, ?)",
            [(c.event_id, c.claim_id, c.encounter_id, number) for c in claims],
        )

    def _blank(self, claim_ids: Sequence[str]) -> int:
        """Claims past their retention window: blank the text of every interchange all of
        whose claims are now forgotten; how many were blanked."""
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
        return cur.rowcount

    def assigned(self, claims: Mapping[str, str]) -> dict[str, int]:
        """Claim event id -> control number, for the claim events already sent (or tried);
        ``claims``: claim event id -> its claim id (the rows are found by claim id)."""
        sql = "SELECT event_id, icn FROM claims WHERE claim_id IN ({marks})"
        return {
            event_id: icn
            for event_id, icn in rows_in(self.db, sql, claims.values())
            if event_id in claims
        }

    def interchange(self, icn: int) -> StoredInterchange | None:
        """The stored interchange numbered ``icn``."""
        row = self.db.execute(
            "SELECT icn, payer_id, claim_type, adapter, text, status, detail "
            "FROM interchanges WHERE icn = ?",
            (icn,),
        ).fetchone()
        return StoredInterchange(*row) if row else None

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


class ControlNumbers(_Reads):
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
            self._store(self.block, number, claims, (payer_id, claim_type, adapter, text))
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return StoredInterchange(number, payer_id, claim_type, adapter, text, "built", "")

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

    def forget(self, claim_ids: Sequence[str]) -> int:
        """Claims past their retention window: blank the text of every interchange all of whose
        claims are now forgotten (numbers, payer, status and the claim ids stay, for 999s and
        audits). Returns how many interchanges were blanked."""
        if not claim_ids:
            return 0
        self.db.execute("BEGIN IMMEDIATE")
        try:
            blanked = self._blank(claim_ids)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # old pages leave the WAL too
        return blanked

    def commit(self) -> None:
        """Nothing to do: every write above is its own transaction (``PartitionNumbers``
        keeps the batch's, and commits it here)."""

    def last_number(self) -> int | None:
        """The last control number handed out in this block (None before the first)."""
        row = self.db.execute("SELECT last FROM counter WHERE block = ?", (self.block,))
        found = row.fetchone()
        return int(found[0]) if found else None

    def close(self) -> None:
        self.db.close()


class PartitionNumbers(_Reads, RowChangelogStore):
    """The numbers one partition of encounters.validated.v1 allocates and the interchanges
    they carried, in the batch's transaction, each row change a changelog record."""

    def __init__(
        self,
        path: Path | str,
        *,
        partition: int,
        partitions: int,
        floor: int = BLOCK_SIZE,
        changelog: bool = True,
    ) -> None:
        if not 0 <= partition < partitions:
            raise ValueError(f"partition {partition} of {partitions}")
        super().__init__(
            path,
            _SCHEMA,
            TABLES,
            changelog=changelog,
            bulky={"interchanges": ("text",)},
            page_size=STORE_PAGE_SIZE,
        )
        self.partition = partition
        self.partitions = partitions
        self.floor = max(1, floor)
        #: The counter as this transaction left it (None: read it from the file), whether
        #: its row was written since the changes were last taken, and whether a number was
        #: taken since that write (``allocate``; written by ``_write_counter``).
        self._last: int | None = None
        self._noted = False
        self._pending = False

    def owns(self, number: int) -> bool:
        return owner(number, self.partitions) == self.partition

    def allocate(
        self,
        claims: Sequence[ClaimRef],
        *,
        payer_id: str,
        claim_type: str,
        adapter: str,
        build: Callable[[int], str],
    ) -> StoredInterchange:
        """Take this partition's next number, build the interchange under it and store both
        in the batch's transaction (the stage makes them durable before delivering).

        If ``build`` raises, nothing is stored and the number is not used up.

        The counter is read once per transaction and its row written once per changelog
        window (at the first allocation, where its change record has always come first),
        then once more with the last number before the changes are taken or committed
        (``_write_counter``): it was read and written by every allocation, with a savepoint
        around them: 4 of the 6 statements each allocation ran. Nothing is written before
        ``build`` has succeeded, so a failed build leaves nothing to roll back."""
        last = self._last
        if last is None:
            row = self.db.execute(
                "SELECT last FROM counter WHERE block = ?", (self.partition,)
            ).fetchone()
            last = row[0] if row else None
        number = max(self.floor, (last + 1) if last is not None else self.floor)
        while not self.owns(number):
            number += 1
        if number > LAST_NUMBER:
            raise ControlNumbersExhausted(
                f"control numbers of partition {self.partition} are used up"
            )
        text = build(number)
        self._last = number  # used up from here, even if a write below fails
        if self._noted:
            self._pending = True
        else:
            self._noted = True
            self._pending = True
            self._write_counter()
        self.db.execute(
            "INSERT INTO interchanges VALUES (?, ?, ?, ?, ?, 'built', '', ?)",
            (number, payer_id, claim_type, adapter, text, utcnow().isoformat()),
        )
        self.db.executemany(
            "INSERT INTO claims VALUES (?, ?, ?, ?)",
            [(c.event_id, c.claim_id, c.encounter_id, number) for c in claims],
        )
        return StoredInterchange(number, payer_id, claim_type, adapter, text, "built", "")

    def _write_counter(self) -> None:
        """The counter row at the last number taken, if one was taken since it was written."""
        if self._pending and self._last is not None:
            self._pending = False
            self.db.execute(
                "INSERT INTO counter VALUES (?, ?) ON CONFLICT(block) DO UPDATE SET last = ?",
                (self.partition, self._last, self._last),
            )

    def has_changes(self) -> bool:
        self._write_counter()
        return super().has_changes()

    def take_changes(self) -> list[Change]:
        self._write_counter()
        self._noted = False  # the next window's first allocation notes the row again
        return super().take_changes()

    def commit(self) -> None:
        self._write_counter()
        super().commit()

    def rollback(self) -> None:
        self._last = None
        self._noted = self._pending = False
        super().rollback()

    def apply(self, key: str, value: bytes | None) -> None:
        self._last = None  # a restore may write the counter
        super().apply(key, value)

    def mark(self, icn: int, status: str, detail: str = "") -> None:
        """The outcome of a delivery, in the batch's transaction. The caller commits the
        outcomes of what it delivered together, right after the deliveries (``Billing``:
        once per call, with what the store holds of the batch: its allocations are already
        in the changelog), so a batch read again after a crash on this instance does not
        deliver them again; their change records go with the batch. An outcome lost before
        that commit, or with the instance, only means the interchange is delivered again
        under the same number (same bytes), which the adapters make idempotent."""
        self.db.execute(
            "UPDATE interchanges SET status = ?, detail = ? WHERE icn = ?",
            (status, detail[:2000], icn),
        )

    def forget(self, claim_ids: Sequence[str]) -> int:
        """As ``ControlNumbers.forget``, in the batch's transaction (the retention sweep
        checkpoints the write-ahead log after the commit)."""
        return self._blank(claim_ids) if claim_ids else 0

    def last_number(self) -> int | None:
        self._write_counter()
        row = self.db.execute("SELECT last FROM counter WHERE block = ?", (self.partition,))
        found = row.fetchone()
        return int(found[0]) if found else None


def legacy_ceiling(path: Path, floor: int) -> None:
    """Refuse to start when a single instance's store (``ControlNumbers``) has used a number
    at or above ``floor``, where the partitions' numbers start: one could be reused."""
    if not path.exists():
        return
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT max(last) FROM counter").fetchone()
    finally:
        db.close()
    if row and row[0] is not None and row[0] >= floor:
        raise StateError(
            f"{path} has used control number {row[0]}, at or above {floor} where the "
            "partitions' numbers start: set CLAIMFLOW_CLAIMS__CONTROL_NUMBER_BLOCK to the "
            "block that store used, so numbering starts above it"
        )


Numbers = ControlNumbers | PartitionNumbers
"""Either store: the one of a process that bills everything, or one partition's."""
