"""Claims already seen across the stream, for the duplicate-claim edit: a SQLite table.

Why SQLite and not a faust table: the same reasons as the remittance ledger
(``services/remittance/ledger.py``): it survives a SIGKILL, and recovery does not trust
Tansu's high watermarks. Writes are idempotent upserts keyed by encounter id, made in the
batch's transaction and committed by the stage runner (``Stage.on_batch_done``) after the
batch's verdicts are acknowledged and before its offsets are committed; a re-read batch
(or a replay) writes the same rows again.

Two encounters are duplicates when they bill the same patient, billing and rendering
provider, dates of service and line codes (with modifiers). The earlier one, by the time
the EHR sent it (then the encounter id), is the original; only encounters whose verdict
was billable count as originals, and an encounter is never a duplicate of itself.

Duplicates are per patient, so with several validation instances the live service keeps
one store per partition of ``validation.by-patient.v1`` (encounters re-keyed by
``patient_key``): every claim of a patient meets the same store. Each write is also a
change record for the store's changelog topic (``pipeline.state.ChangelogStore``), from
which a partition's store is rebuilt on the instance it moves to.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path

from pipeline.models import CodedEncounter
from pipeline.models import patient_key as member_key
from pipeline.state import ChangelogStore

#: The billable claims with the same fingerprint received before an encounter (then, at the
#: same time, with a smaller encounter id): its earlier duplicates, as (received_at,
#: encounter_id) rows in no order.
EARLIER = (
    "SELECT received_at, encounter_id FROM seen WHERE fingerprint = ? AND encounter_id != ? "
    "AND billable = 1 AND (received_at < ? OR (received_at = ? AND encounter_id < ?))"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    encounter_id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    received_at TEXT NOT NULL,      -- ISO-8601 UTC: orders originals before duplicates
    billable INTEGER NOT NULL       -- 1 when the latest verdict was clean or warnings
);
-- By fingerprint alone: ``EARLIER`` filters the few rows of a fingerprint on received_at,
-- and the earliest is picked in Python. The index with received_at in it (a store before
-- this one: ``seen_by_fingerprint``, replaced at open) took twice the bytes per entry, so
-- twice the leaf pages, and each batch's random inserts dirtied more of them: with 20,000
-- encounters in the store, 3.79 -> 3.07 write calls a row and 18.9 and 17.0 -> 16.3 and
-- 14.9 us (two runs each; the store's own writes and queries, batches of 285).
DROP INDEX IF EXISTS seen_by_fingerprint;
CREATE INDEX IF NOT EXISTS seen_fingerprint ON seen (fingerprint);
"""


def fingerprint(coded: CodedEncounter) -> str:
    """What makes two claims the same: patient, providers, dates, line codes and modifiers."""
    enc = coded.encounter
    rendering = enc.rendering_provider.npi if enc.rendering_provider else ""
    # A date's text from ``_ISO`` (dates of service repeat), a line without modifiers
    # without a sort, the lines in a list comprehension, not a generator: 3.9 -> 2.0 us an
    # encounter over the simulator's coded encounters of both mixes, for every encounter
    # the stage validates (tests/unit/test_validation_fingerprint.py keeps the one before as
    # its judge).
    iso = _ISO.get
    lines = [
        f"{line.code or 'rev' + (line.revenue_code or '')}:"
        f"{'.'.join(sorted(line.modifiers)) if line.modifiers else ''}:"
        f"{iso(line.service_date) or _iso(line.service_date)}"
        for line in coded.lines
    ]
    lines.sort()
    parts = [
        enc.patient.patient_id,
        enc.coverage.payer_id,
        enc.coverage.member_id,
        enc.billing_provider.npi,
        rendering,
        iso(enc.service_start) or _iso(enc.service_start),
        iso(enc.service_end) or _iso(enc.service_end),
        *lines,
    ]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


#: ``date.isoformat()`` by date, for ``fingerprint`` (0.2 us a date made, 0.04 found);
#: bounded: emptied when full.
_ISO: dict[date, str] = {}
_ISO_KEPT = 4096


def _iso(day: date) -> str:
    text = _ISO.get(day)
    if text is None:
        if len(_ISO) >= _ISO_KEPT:
            _ISO.clear()
        text = _ISO[day] = day.isoformat()
    return text


def patient_key(coded: CodedEncounter) -> str:
    """The key that brings every claim of one member together (payer and member id, the
    way coding keys risk adjustment), hashed: the key of a record is not PHI-marked."""
    return member_key(coded.encounter)


def _order_key(coded: CodedEncounter) -> str:
    return coded.encounter.received_at.isoformat()


def change_record(fp: str, received_at: str, billable: int) -> bytes:
    """A row as its change record: ``json.dumps([fp, received_at, billable])``, written as
    text (the two strings as ``json.dumps`` writes a string)."""
    return f"[{_str(fp)}, {_str(received_at)}, {billable}]".encode()


_str = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]

#: The bits of a store's billable fingerprints (``DuplicateStore._billable``): 512 KiB. With
#: 100,000 billable rows in a partition, 2.4% of the fingerprints never seen still ask SQLite.
_BILLABLE_BITS = 1 << 22


class DuplicateStore(ChangelogStore):
    """Encounters seen, by fingerprint; ``path`` may be ``":memory:"`` (offline runs).
    With ``changelog`` each write is kept as a change record for the runner to produce."""

    FILENAME = "validation-claims-seen.sqlite3"
    NAME = "claims-seen"
    """The store's name in its changelog topic and per-partition files."""

    def __init__(self, path: Path | str, *, changelog: bool = False) -> None:
        super().__init__(path, _SCHEMA)
        self.changelog = changelog
        self._last: tuple[CodedEncounter | None, str, str] = (None, "", "")
        # One cursor for the two statements run per encounter (``earliest``, ``_upsert``):
        # ``Connection.execute`` makes a cursor each time (0.3 us of a 2.2 us query).
        self._cursor = self.db.cursor()
        #: The fingerprints of the billable rows as bits (``_BILLABLE_BITS``, by the string's
        #: hash): a fingerprint whose bit is not set has no billable row, so ``earliest``
        #: answers None without its query (nearly every encounter: a query that finds no
        #: row cost 3.9 us on a file, the look at the bit 0.2). A bit is never cleared (a
        #: row deleted or no longer billable, a write rolled back): the bits are a superset,
        #: and a set bit asks SQLite. Only in a changelogged store (the live service's, one
        #: per partition of its instance): its file has no other writer, whose rows the bits
        #: would miss.
        self._billable: bytearray | None = None
        if changelog:
            self._billable = bytearray(_BILLABLE_BITS >> 3)
            for (fp,) in self.db.execute("SELECT fingerprint FROM seen WHERE billable = 1"):
                self._mark(fp)

    def _keys(self, coded: CodedEncounter) -> tuple[str, str]:
        """``fingerprint`` and ``_order_key``, worked out once for the encounter the
        duplicate edit asks about and the stage then records (the same object: models are
        frozen)."""
        last, fp, order = self._last
        if last is not coded:
            fp, order = fingerprint(coded), _order_key(coded)
            self._last = (coded, fp, order)
        return fp, order

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> DuplicateStore:
        """The store of a validation service (or replay) using ``state_dir``."""
        return cls(Path(state_dir) / cls.FILENAME)

    def earlier_duplicate(self, coded: CodedEncounter) -> str | None:
        """The encounter id of an earlier billable claim this one duplicates, if any: the
        earliest, by the time it was received, then by encounter id."""
        fp, order = self._keys(coded)
        return self.earliest(fp, coded.encounter_id, order)

    def earliest(self, fp: str, encounter_id: str, received_at: str) -> str | None:
        """The first billable encounter of fingerprint ``fp`` received before
        ``received_at`` (or then, with a smaller id), other than ``encounter_id``."""
        billable = self._billable
        if billable is not None:
            bit = hash(fp) & (_BILLABLE_BITS - 1)
            if not billable[bit >> 3] & (1 << (bit & 7)):
                return None
        rows = self._cursor.execute(
            EARLIER, (fp, encounter_id, received_at, received_at, encounter_id)
        )
        # The earliest picked here, not by ORDER BY ... LIMIT 1: SQLite sorted in a temporary
        # B-tree for that on every query, most of which find no row (4.2 -> 2.8 us a query).
        # Python orders str as SQLite's BINARY collation orders TEXT (UTF-8 bytes follow the
        # code points), and encounter ids are unique: the same row.
        found = min(rows, default=None)
        return None if found is None else str(found[1])

    def record(self, coded: CodedEncounter, outcome: str) -> None:
        """Remember the encounter with its latest verdict (idempotent)."""
        fp, order = self._keys(coded)
        billable = int(outcome != "rejected")
        self._upsert(coded.encounter_id, fp, order, billable)
        if self.changelog:
            self.log_change(coded.encounter_id, change_record(fp, order, billable))

    def apply(self, key: str, value: bytes | None) -> None:
        """One change from the changelog: the row as ``record`` wrote it."""
        if value is None:
            self.db.execute("DELETE FROM seen WHERE encounter_id = ?", (key,))
            return
        fp, received_at, billable = json.loads(value)
        self._upsert(key, fp, received_at, int(billable))

    def _upsert(self, encounter_id: str, fp: str, received_at: str, billable: int) -> None:
        self._cursor.execute(
            "INSERT INTO seen VALUES (?, ?, ?, ?) ON CONFLICT(encounter_id) DO UPDATE SET "
            "fingerprint = excluded.fingerprint, received_at = excluded.received_at, "
            "billable = excluded.billable",
            (encounter_id, fp, received_at, billable),
        )
        if billable and self._billable is not None:
            self._mark(fp)

    def _mark(self, fp: str) -> None:
        """Set the bit of a fingerprint that has a billable row (``_billable``)."""
        assert self._billable is not None
        bit = hash(fp) & (_BILLABLE_BITS - 1)
        self._billable[bit >> 3] |= 1 << (bit & 7)
