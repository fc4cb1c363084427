"""Retention after settlement: how long a stage keeps what it stored of a settled claim.

Remittance says when a claim is adjudicated on ``remittance.settled.v1`` (paid, partially
paid, denied, or written off in the console; ``reopened`` after a reversal). A stage that
stored patient data to do its work (the claims stage's billed verdicts, intake's raw HL7 of
hospital accounts, coding's audited encounters) keeps it for a window after that, for
reversals, corrected claims and late charges, then prunes it and keeps only ids and times.

This module holds what those stages share: the window (``RetentionPolicy``, set by the
``settled_retention_days`` options every such stage reads the same way) and the marks of
settled encounters in a stage's own SQLite store (``SettledMarks``), with the time each
encounter's stored payloads may go. Deleted rows are overwritten (``BatchStore`` runs
``secure_delete``) and the write-ahead log is emptied after a prune (``checkpoint``). No
Kafka here.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, Field

from pipeline.models import ClaimSettled

DAY_S = 86_400.0

SCHEMA = """
-- Encounters remittance said are settled (remittance.settled.v1): when the payloads this
-- store keeps of them may be pruned. The latest settlement of any of the encounter's claims
-- (a later payer, a corrected payment) moves the window; a reversal removes the mark.
CREATE TABLE IF NOT EXISTS settled_encounter (
    encounter_id TEXT PRIMARY KEY,
    settled_at REAL NOT NULL,          -- unix time of the latest settlement
    prune_after REAL NOT NULL          -- unix time its window ends
);
CREATE INDEX IF NOT EXISTS settled_encounter_due ON settled_encounter (prune_after);
"""


@dataclass(frozen=True)
class RetentionPolicy:
    """How long a settled claim's payloads are kept, in days (per payer where set)."""

    days: float = 365.0
    by_payer: tuple[tuple[str, float], ...] = ()

    def days_for(self, payer_id: str) -> float:
        return dict(self.by_payer).get(payer_id, self.days)


class RetentionOptions(BaseModel):
    """The retention options of a stage that prunes after settlement
    (``CLAIMFLOW_<STAGE>__SETTLED_RETENTION_DAYS`` and the rest)."""

    settled_retention_days: float = Field(
        default=365.0,
        ge=0,
        description="How long what the stage stored of a settled claim (patient data, "
        "payloads) is kept for reversals, corrected claims and late charges before it is "
        "pruned; a payer's reopening limit (Medicare reopens for any reason within a year).",
    )
    settled_retention_days_by_payer: dict[str, float] = Field(
        default_factory=dict, description="payer id -> its own retention window in days"
    )
    retention_sweep_s: float = Field(
        default=3600.0, gt=0, description="least time between two looks for what to prune"
    )

    def retention_policy(self) -> RetentionPolicy:
        """The retention window these options describe."""
        by_payer = tuple(sorted(self.settled_retention_days_by_payer.items()))
        return RetentionPolicy(days=self.settled_retention_days, by_payer=by_payer)


class SettledMarks:
    """The ``settled_encounter`` table of one store (its schema must include ``SCHEMA``):
    written in the store's open transaction, committed with the batch."""

    def __init__(self, db: sqlite3.Connection, policy: RetentionPolicy) -> None:
        self.db = db
        self.policy = policy

    def settle(self, event: ClaimSettled) -> bool:
        """Record one settlement (or reopening) of a claim of ``event.encounter_id``;
        False when the event names no encounter (nothing here to keep or prune)."""
        if event.encounter_id is None:
            return False
        if event.status == "reopened":
            self.db.execute(
                "DELETE FROM settled_encounter WHERE encounter_id = ?", (event.encounter_id,)
            )
            return True
        at = event.settled_at.timestamp()
        window = self.policy.days_for(event.payer_id) * DAY_S
        self.db.execute(
            "INSERT INTO settled_encounter VALUES (?, ?, ?) ON CONFLICT(encounter_id) DO "
            "UPDATE SET settled_at = max(settled_at, excluded.settled_at), "
            "prune_after = max(prune_after, excluded.prune_after)",
            (event.encounter_id, at, at + window),
        )
        return True

    def due(self, now: float) -> list[tuple[str, float]]:
        """(encounter id, settled at) of the encounters whose window has ended by ``now``."""
        rows = self.db.execute(
            "SELECT encounter_id, settled_at FROM settled_encounter WHERE prune_after <= ? "
            "ORDER BY encounter_id",
            (now,),
        )
        return [(str(e), float(t)) for e, t in rows.fetchall()]

    def forget(self, encounter_id: str) -> None:
        """The encounter's payloads are pruned: its mark is no longer needed."""
        self.db.execute("DELETE FROM settled_encounter WHERE encounter_id = ?", (encounter_id,))


class RetentionSweep:
    """When a stage looks for what to prune (at most every ``every_s``, and at the first
    look after start-up), and the write-ahead log emptied once a prune is committed."""

    def __init__(
        self,
        prune: Callable[[float], int],
        checkpoint: Callable[[], bool | None],
        *,
        every_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.prune, self.checkpoint = prune, checkpoint
        self.every_s, self.clock = every_s, clock
        self._swept_at: float | None = None
        self._pruned = False

    def sweep(self) -> int:
        """Prune what is past its window, when a sweep is due; how many were pruned."""
        now = self.clock()
        if self._swept_at is not None and now - self._swept_at < self.every_s:
            return 0
        self._swept_at = now
        pruned = self.prune(now)
        self._pruned = self._pruned or pruned > 0
        return pruned

    def committed(self) -> None:
        """After the store's commit: pruned rows' old pages leave the write-ahead log
        (``checkpoint`` returns False while a store's prune is not committed yet: the next
        call checkpoints again)."""
        if self._pruned and self.checkpoint() is not False:
            self._pruned = False
