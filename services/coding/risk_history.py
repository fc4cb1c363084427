"""A member's risk-adjustment codes per year, from every encounter coded for them.

The HCCs of an encounter count the member's diagnoses of the whole year, so the codes
each encounter contributes are kept by patient key (a hash of payer id and member id:
no member id in clear). With several coding instances the live service keeps one store
per partition of ``coding.by-patient.v1`` (coded encounters re-keyed by patient key), so
every encounter of a member meets the same store; each write is a change record for the
store's changelog (``pipeline.state.ChangelogStore``): one per (member, year, encounter),
the encounter's whole contribution, which a newer one replaces.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from pipeline.state import ChangelogStore

# WITHOUT ROWID: the primary key is the table, not an index beside a rowid table, so a row
# is one B-tree insert instead of two and a member's year is read from the table itself.
# 20,000 encounters of 3 codes, in batches of 100, over up to 20,000 members (wall time per
# statement): SELECT 8.1 -> 5.2 us, INSERT 16.7 -> 9.0 us, file 11.7 -> 6.1 MB. A file
# created before keeps its rowid table (CREATE TABLE IF NOT EXISTS), read the same way.
RISK_SCHEMA = """
CREATE TABLE IF NOT EXISTS risk_dx (    -- codes that count for a member's HCCs, per year
    patient_key TEXT NOT NULL,
    year INTEGER NOT NULL,
    encounter_id TEXT NOT NULL,
    code TEXT NOT NULL,
    PRIMARY KEY (patient_key, year, encounter_id, code)
) WITHOUT ROWID;
"""

_SEP = "\x1f"
_str = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]
"""A string as ``json.dumps`` writes it (ASCII, escaped)."""


def change_record(codes: list[str]) -> bytes:
    """An encounter's contribution as its change record: ``json.dumps(codes)``, written as
    text (each code as ``json.dumps`` writes a string; the JSON encoder was ~2% of the risk
    step's CPU for a list of a few codes)."""
    return f"[{', '.join(map(_str, codes))}]".encode()


#: The most codes ``_insert`` writes in one statement (4 parameters a row, well under
#: SQLite's 999 parameters of older builds); an encounter has a few dozen at most.
ONE_STATEMENT_ROWS = 200
_VALUES = [
    "INSERT OR IGNORE INTO risk_dx VALUES " + ", ".join(["(?, ?, ?, ?)"] * n)
    for n in range(ONE_STATEMENT_ROWS + 1)
]


def writes_in_one_statement(codes: list[str], *, recorded: bool) -> bool:
    """Whether ``record_risk`` writes ``codes`` in at most one statement, which is atomic on
    its own: nothing recorded before to delete, and rows for one ``_insert`` statement."""
    return not recorded and len(set(codes)) <= ONE_STATEMENT_ROWS


#: The bits of a store's members' years (``RiskHistory._years``): 512 KiB, as the
#: duplicate store's billable fingerprints (services/validation/duplicates.py).
_YEAR_BITS = 1 << 22


class RiskHistory(ChangelogStore):
    """The codes behind each member's HCCs; ``changelog``: keep each write as a change."""

    NAME = "risk-history"
    """The store's name in its changelog topic and per-partition files."""

    def __init__(self, path: Path | str, schema: str = "", *, changelog: bool = False) -> None:
        super().__init__(path, RISK_SCHEMA + schema)
        self.changelog = changelog
        #: The members' years that have rows, as bits (``_YEAR_BITS``, by the hash of patient
        #: key and year): a year whose bit is not set has no row, so ``year_of`` answers
        #: without its query: 210 of the 300 by-patient records of the stage benchmark's
        #: office visits are a member's first of the year, and the SQL of coding's timed
        #: sections over 200 of them went from 6.34M to 4.95M instructions (callgrind). A
        #: returning member still asks SQLite.
        #: A bit is never cleared (rows replaced by none, a write rolled back): the bits are
        #: a superset. Only in a changelogged store (the live service's, one per partition of
        #: its instance): its file has no other writer, whose rows the bits would miss.
        self._years: bytearray | None = None
        if changelog:
            self._years = bytearray(_YEAR_BITS >> 3)
            for key, year in self.db.execute("SELECT DISTINCT patient_key, year FROM risk_dx"):
                self._mark(key, year)

    def _mark(self, key: str, year: int) -> None:
        """Set the bit of a member's year that has rows (``_years``)."""
        assert self._years is not None
        bit = hash((key, year)) & (_YEAR_BITS - 1)
        self._years[bit >> 3] |= 1 << (bit & 7)

    def history(self, key: str, year: int, encounter_id: str) -> list[str]:
        """The member's risk-adjustment codes of the year from other encounters."""
        rows = self.db.execute(
            "SELECT code FROM risk_dx WHERE patient_key = ? AND year = ? AND encounter_id != ?",
            (key, year, encounter_id),
        )
        # Distinct and in order here, not by SQLite's DISTINCT ... ORDER BY: a temporary
        # B-tree on every query, most of which find no row (3.2 -> 2.8 us a query). Python
        # orders str as SQLite's BINARY collation orders TEXT: the same list.
        return sorted({r[0] for r in rows})

    def year_of(self, key: str, year: int, encounter_id: str) -> tuple[list[str], bool]:
        """``history``, and whether the encounter has codes recorded already (for
        ``record_risk``), in one query."""
        years = self._years
        if years is not None:
            bit = hash((key, year)) & (_YEAR_BITS - 1)
            if not years[bit >> 3] & (1 << (bit & 7)):
                return [], False
        earlier: set[str] = set()
        recorded = False
        for eid, code in self.db.execute(
            "SELECT encounter_id, code FROM risk_dx WHERE patient_key = ? AND year = ?",
            (key, year),
        ):
            if eid == encounter_id:
                recorded = True
            else:
                earlier.add(code)
        return sorted(earlier), recorded

    def record_risk(
        self,
        key: str,
        year: int,
        encounter_id: str,
        codes: Iterable[str],
        *,
        recorded: bool = True,
    ) -> None:
        """Set the codes an encounter contributes (replacing what it contributed before).
        ``recorded`` False: the encounter is known to have none (``year_of``, in this
        input's savepoint), so there is nothing to delete (most encounters are new)."""
        codes = sorted(set(codes))
        if recorded:
            self._delete(key, year, encounter_id)
        self._insert(key, year, encounter_id, codes)
        if self.changelog:
            self.log_change(_SEP.join((key, str(year), encounter_id)), change_record(codes))

    def apply(self, key: str, value: bytes | None) -> None:
        """One change from the changelog: an encounter's contribution (None: none)."""
        patient, year, encounter_id = key.split(_SEP)
        self._replace(patient, int(year), encounter_id, json.loads(value) if value else [])

    def _replace(self, key: str, year: int, encounter_id: str, codes: list[str]) -> None:
        self._delete(key, year, encounter_id)
        self._insert(key, year, encounter_id, codes)

    def _delete(self, key: str, year: int, encounter_id: str) -> None:
        self.db.execute(
            "DELETE FROM risk_dx WHERE patient_key = ? AND year = ? AND encounter_id = ?",
            (key, year, encounter_id),
        )

    def _insert(self, key: str, year: int, encounter_id: str, codes: list[str]) -> None:
        """The encounter's codes as rows, in one statement (all rows or none of them: SQLite
        undoes a statement that fails) when they are at most ``ONE_STATEMENT_ROWS``."""
        if not codes:
            return
        if self._years is not None:
            self._mark(key, year)
        if len(codes) > ONE_STATEMENT_ROWS:
            self.db.executemany(
                "INSERT OR IGNORE INTO risk_dx VALUES (?, ?, ?, ?)",
                [(key, year, encounter_id, c) for c in codes],
            )
            return
        values = _VALUES[len(codes)]
        self.db.execute(values, [v for c in codes for v in (key, year, encounter_id, c)])
