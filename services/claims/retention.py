"""Retention: what the claims stage stored to bill a claim goes once the claim is settled.

To build a replacement (7), a void (8) or the next payer's claim, the claims stage keeps
the verdict each claim was built from (the patient's name, birth date, member id,
address, diagnoses and lines) and the text of every 837 it sent. Once remittance says a
claim is adjudicated (``remittance.settled.v1``), those are kept for a window, for
reversals and corrected claims (a payer's reopening limit: Medicare reopens for any
reason within a year), then pruned: the verdict is deleted, the interchange text blanked
once every claim it carried is pruned. Ids, amounts, dates, codes, statuses and control
numbers stay, for the KPIs and audits; a correction that comes after the window is
refused with the reason (``ClaimPruned``, to the dead-letter topic), never billed blind.

A verdict that billed later payers is kept until every payer's claim is settled and past
its window; a reversal (``reopened``) or a claim sent again starts over. The window is
``CLAIMFLOW_CLAIMS__SETTLED_RETENTION_DAYS`` (365), per payer
``CLAIMFLOW_CLAIMS__SETTLED_RETENTION_DAYS_BY_PAYER`` (e.g. ``{"MEDICARE_A": 1460}``).
No Kafka here: the stage calls ``settle`` per event and ``sweep`` at most every
``CLAIMFLOW_CLAIMS__RETENTION_SWEEP_S``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from pipeline.models import ClaimSettled
from pipeline.settled import DAY_S, RetentionPolicy
from services.claims.control import PartitionNumbers
from services.claims.corrections import SubmittedClaims
from services.claims.secondary import CobLedger


class Retention:
    """Records settlements in the claims stores and prunes what is past its window.

    The stores are given per call: the service keeps one corrections store, COB ledger and
    control-number store per partition of encounters.validated.v1, and sweeps each
    partition it holds."""

    def __init__(
        self,
        policy: RetentionPolicy,
        *,
        sweep_every_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.sweep_every_s = sweep_every_s
        self.clock = clock
        self._swept_at: float | None = None
        self._pruned: list[SubmittedClaims | PartitionNumbers] = []

    def settle(self, submitted: SubmittedClaims, event: ClaimSettled) -> None:
        """One remittance.settled.v1 event, in the batch's transaction: one statement, so
        the stage runs it without a savepoint for a settlement of one store."""
        if event.status == "reopened":
            submitted.reopen(event.claim_id)
            return
        at = event.settled_at.timestamp()
        window = self.policy.days_for(event.payer_id) * DAY_S
        submitted.settle(event.claim_id, event.status, at, at + window)

    def due(self) -> bool:
        """Whether a sweep is due (the first call after start-up always is)."""
        now = self.clock()
        return self._swept_at is None or now - self._swept_at >= self.sweep_every_s

    def sweep(self, stores: Iterable[tuple[SubmittedClaims, CobLedger, PartitionNumbers]]) -> int:
        """Prune every verdict whose claims (its own and the later payers') are all past
        their window; returns how many. The verdicts go in the stores' open transaction
        (committed with the batch), and so are the blanked interchange texts."""
        now = self.clock()
        self._swept_at = now
        pruned = 0
        for submitted, cob, control in stores:
            before = pruned
            forgotten: list[str] = []
            for key, claim_id, settled_at in submitted.due(now):
                later = cob.later_claims(key)
                if not submitted.window_ended(later, now):
                    continue
                submitted.prune(key, claim_id, settled_at, now)
                forgotten += [claim_id, *later]
                pruned += 1
            if pruned > before:
                control.forget(forgotten)
                self._pruned += [submitted, control]
        return pruned

    def committed(self) -> None:
        """After the stores' commit: pruned rows' old pages leave the write-ahead log."""
        for store in self._pruned:
            store.checkpoint()
        self._pruned = []
