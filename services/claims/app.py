"""claims: validated encounters -> 837 interchanges per payer, delivered -> each interchange
once on claims.interchanges.v1, its claims on claims.submitted.v1;
999/277CA on payer.inbound.v1 -> claims.rejections.v1; remittance.posted.v1 -> the claim to
the next payer.

Postings come keyed by claim id, while what the next payer's claim is built from (the
encounter's submitted claims and its coordination-of-benefits ledger) is kept by the
instance that billed the encounter, i.e. the one reading the encounter's partition of
encounters.validated.v1. So each posting is first re-keyed by its encounter id into
``claims.postings-by-encounter.v1`` (its bytes unchanged; co-partitioned with
encounters.validated.v1) and the next payer is billed from there; settlements, which
start the retention window of what that instance stored, go the same way through
``claims.settled-by-encounter.v1`` (a posting and its settlement each take one hop, so
the posting is still handled first).

This module wires topics to the domain (``billing.py``: batching into interchanges,
numbering, delivery with retries, the next payer, acknowledgments) and reports what it
counted. One consumed batch of clean encounters becomes, per payer and claim type,
interchanges of at most ``max_claims_per_interchange`` claims (the time bound of a batch is
the runner's consume timeout: an interchange waits for at most one poll, 10 ms by default).
See README.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client import Counter

from pipeline import metrics
from pipeline.settings import Settings
from pipeline.stage import (
    ENCOUNTER_HEADER,
    Incoming,
    Out,
    PassThrough,
    Stage,
    dead_letter,
    reason_of,
    run_stage,
)
from services.claims import metrics as domain_metrics
from services.claims.adapters import Router, build_router
from services.claims.billing import (
    Billed,
    Billing,
    Carried,
    ClaimWriter,
    DeliveryFailed,
    Result,
    load_fee_schedule,
)
from services.claims.control import ControlNumbers
from services.claims.corrections import SubmittedClaims
from services.claims.domain import FeeSchedule
from services.claims.retention import Retention
from services.claims.secondary import CobLedger
from services.claims.settings import ClaimsSettings

log = logging.getLogger(__name__)

__all__ = ["ADAPTER_HEADER", "ClaimsStage", "DeliveryFailed", "build_stage", "main"]

ADAPTER_HEADER = "claimflow-adapter"
DELIVERIES = Counter(
    "claimflow_claims_deliveries_total",
    "Interchanges handed to a payer adapter, by adapter and outcome",
    ["adapter", "outcome"],
)


POSTED = "remittance.posted.v1"
BY_ENCOUNTER = "claims.postings-by-encounter.v1"
SETTLED = "remittance.settled.v1"
SETTLED_BY_ENCOUNTER = "claims.settled-by-encounter.v1"


class ClaimsStage(Stage):
    name = "claims"
    inputs = (
        "encounters.validated.v1",
        "payer.inbound.v1",
        POSTED,
        BY_ENCOUNTER,
        SETTLED,
        SETTLED_BY_ENCOUNTER,
    )
    batch_mode = True
    # Remittance names the encounter in a header: the runner forwards those undecoded.
    pass_through = (
        PassThrough(POSTED, BY_ENCOUNTER, ENCOUNTER_HEADER),
        PassThrough(SETTLED, SETTLED_BY_ENCOUNTER, ENCOUNTER_HEADER),
    )

    def prime_metrics(self) -> None:
        domain_metrics.prime()

    def observe(self, topic: str, value: Any, source: Any) -> None:
        domain_metrics.observe(topic, value, source)

    def __init__(
        self,
        settings: ClaimsSettings,
        fee_schedule: FeeSchedule | None,
        store: ControlNumbers,
        router: Router,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        options = settings.claims
        writer = ClaimWriter.from_settings(settings, fee_schedule)
        log.info("master data: %s", writer.master.describe())
        writer.check()
        self.billing: Billing[Incoming] = Billing(
            writer,
            store,
            router,
            SubmittedClaims.in_state_dir(settings.state_dir),
            CobLedger.in_state_dir(settings.state_dir),
            max_per_interchange=options.max_claims_per_interchange,
            retry=options.retry_policy(),
            sleep=sleep,
        )
        # Retention: a settled claim's stored payloads are pruned after their window.
        self.retention = Retention(
            self.submitted,
            self.billing.cob,
            store,
            options.retention_policy(),
            sweep_every_s=options.retention_sweep_s,
        )

    @property
    def store(self) -> ControlNumbers:
        return self.billing.store

    @property
    def submitted(self) -> SubmittedClaims:
        return self.billing.submitted

    @property
    def router(self) -> Router:
        return self.billing.router

    @router.setter
    def router(self, router: Router) -> None:
        self.billing.router = router

    def handle_batch(self, msgs: list[Incoming]) -> Iterable[Out]:
        # Acknowledgments first: they answer claims sent in earlier batches, and a verdict in
        # this batch must see a front-end rejection of its encounter's claim.
        outs: list[Out] = []
        for msg in msgs:
            if msg.topic == "payer.inbound.v1":
                try:
                    found = self.billing.acknowledgment(msg.value)
                except Exception as exc:  # noqa: BLE001 - one bad payer file must not stop us
                    outs.append(self._dead(msg, exc))
                    continue
                outs += [Out("claims.rejections.v1", r.claim_id, r) for r in found]
        bills = [(m, m.value) for m in msgs if m.topic == "encounters.validated.v1"]
        if bills:
            outs += self._outs(self.billing.bill(bills))
        # Postings and settlements go to the partition of their encounter, whose instance
        # billed it (without an encounter: no next payer, and settled where it is).
        for topic, by_encounter in ((POSTED, BY_ENCOUNTER), (SETTLED, SETTLED_BY_ENCOUNTER)):
            outs += [
                Out(by_encounter, m.value.encounter_id, m.value, m.headers, raw=m.raw)
                for m in msgs
                if m.topic == topic and m.value.encounter_id
            ]
        postings = [(m, m.value) for m in msgs if m.topic == BY_ENCOUNTER]
        if postings:
            outs += self._outs(self.billing.bill_next_payers(postings))
        outs += self._retain(
            [
                m
                for m in msgs
                if m.topic == SETTLED_BY_ENCOUNTER
                or (m.topic == SETTLED and not m.value.encounter_id)
            ]
        )
        self._report()
        return outs

    def on_idle(self) -> Iterable[Out]:
        if self.retention.due():
            self._retain([])
            self.on_batch_done()  # between batches: nothing else is in the transaction
        return []

    def _retain(self, settled: Sequence[Incoming]) -> list[Out]:
        """Settlements recorded, then what is past its retention window pruned."""
        outs: list[Out] = []
        for msg in settled:
            try:
                with self.submitted.atomic():
                    self.retention.settle(msg.value)
            except Exception as exc:  # noqa: BLE001 - every failure of one input is routed
                outs.append(self._dead(msg, exc))
        if self.retention.due() and (pruned := self.retention.sweep()):
            metrics.OUTCOMES.labels(self.name, "retention_pruned").inc(pruned)
        return outs

    def on_batch_done(self) -> None:
        self.billing.commit()
        self.retention.committed()

    def close(self) -> None:
        self.billing.close()

    def _outs(self, results: list[Result[Incoming]]) -> list[Out]:
        """Each interchange on claims.interchanges.v1, each claim on claims.submitted.v1 (its
        adapter in a header), a refusal a dead letter."""
        outs: list[Out] = []
        for r in results:
            if isinstance(r, Carried):
                icn = r.interchange.interchange_control_number
                outs.append(Out("claims.interchanges.v1", icn, r.interchange))
            elif isinstance(r, Billed):
                headers = {ADAPTER_HEADER: r.adapter.encode()}
                outs.append(Out("claims.submitted.v1", r.claim.claim_id, r.claim, headers))
            else:
                outs.append(self._dead(r.source, r.error))
        return outs

    def _report(self) -> None:
        """What the domain counted, to Prometheus."""
        for outcome, n in self.billing.outcomes.items():
            metrics.OUTCOMES.labels(self.name, outcome).inc(n)
        for (adapter, outcome), n in self.billing.deliveries.items():
            DELIVERIES.labels(adapter, outcome).inc(n)
        self.billing.outcomes.clear()
        self.billing.deliveries.clear()

    def _dead(self, msg: Incoming, exc: Exception) -> Out:
        letter = dead_letter(self.name, msg, exc)  # raises for a failing state volume
        metrics.DEAD_LETTERS.labels(self.name, type(exc).__name__).inc()
        log.info(
            "input sent to the dead-letter topic",
            extra={"topic": msg.topic, "offset": msg.offset, "reason": reason_of(exc)[:300]},
        )
        return letter


def build_stage(settings: ClaimsSettings) -> ClaimsStage:
    """The stage with its fee schedule, control-number store and payer adapters."""
    store = ControlNumbers(
        settings.state_dir / "claims-control-numbers.sqlite3",
        block=settings.claims.control_number_block,
    )
    router = build_router(settings.claims.routes, settings.claims.adapters, settings.state_dir)
    return ClaimsStage(settings, load_fee_schedule(settings), store, router)


def main(settings: Settings | None = None) -> None:
    claims_settings = ClaimsSettings.from_base(settings or Settings())
    run_stage(build_stage(claims_settings), claims_settings)
