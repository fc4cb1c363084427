"""remittance: 835s (payer.inbound.v1) matched to claims (claims.submitted.v1), posted.

Out: remittance.posted.v1 (every matched claim payment), remittance.denials.v1 (denied,
partially denied and underpaid claims), remittance.settled.v1 (a claim adjudicated or
reopened, for the stages' retention; a write-off from console.writeoffs.v1 settles it too),
remittance.exceptions.v1 (payments whose claim has
not arrived after the grace period, files that do not balance, X12 that cannot be read).

The live service runs as many instances: each payer file is split (any instance) into
claim payments keyed by claim id (``remittance.claim-payments.v1``, co-partitioned with
``claims.submitted.v1``) and payments keyed by payer (``remittance.payer-payments.v1``);
the claims ledger is one store per partition of ``claims.submitted.v1`` and the payers'
ledger one per partition of ``remittance.payer-payments.v1``, each restored from its
changelog on assignment (``pipeline/partitioned.py``). A stage built with one plain ledger
(tests) does the same in one process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import Gauge

from pipeline.partitioned import PartitionedStores
from pipeline.serde import registry
from pipeline.settings import Settings
from pipeline.stage import ENCOUNTER_HEADER, Incoming, Out, Stage, run_stage
from services.remittance import metrics as domain_metrics
from services.remittance.denials import CodeTables
from services.remittance.ledger import Ledger
from services.remittance.matching import (
    ClaimMatcher,
    Matcher,
    Output,
    PayerBook,
    RemittanceOptions,
)
from services.remittance.posting import Pricing
from services.remittance.settlement import settlement_for_write_off as written_off
from services.remittance.split import CLAIM_PAYMENTS, PAYER_PAYMENTS, split_file

log = logging.getLogger(__name__)

__all__ = ["RemittanceOptions", "RemittanceSettings", "RemittanceStage", "main"]

CLAIMS = "claims.submitted.v1"
INBOUND = "payer.inbound.v1"
WRITEOFFS = "console.writeoffs.v1"

WAITING = Gauge(
    "claimflow_remittance_waiting_payments",
    "Claim payments waiting for their claim (reported to exceptions or not yet)",
)


class RemittanceSettings(Settings):
    """The shared settings plus the remittance options."""

    remittance: RemittanceOptions = RemittanceOptions()


#: Postings and settlements name their encounter in a header, so that the claims stage
#: re-keys them by encounter without decoding them (``pipeline/stage.py``).
BY_ENCOUNTER_HEADER = frozenset({"remittance.posted.v1", "remittance.settled.v1"})


def _out(topic: str, key: str, value: Any) -> Out:
    encounter = getattr(value, "encounter_id", None) if topic in BY_ENCOUNTER_HEADER else None
    return Out(topic, key, value, {ENCOUNTER_HEADER: encounter.encode()} if encounter else {})


def _outs(outputs: list[Output]) -> list[Out]:
    return [_out(o.topic, o.key, o.value) for o in outputs]


class RemittanceStage(Stage):
    """Wiring only: payer files split, claims and claim payments to the matching, payments
    to the payers' book (``split.py``, ``matching.py``)."""

    name = "remittance"
    inputs: tuple[str, ...] = (CLAIMS, INBOUND, WRITEOFFS)
    # A payment posted before (the ledger says so) is not posted again: after a crash the
    # restored ledger must not hold a posting whose records were not all acknowledged.
    outputs_before_state = True

    def prime_metrics(self) -> None:
        domain_metrics.prime()

    def observe(self, topic: str, value: Any, source: Any) -> None:
        domain_metrics.observe(topic, value)

    def __init__(
        self,
        ledger: Ledger | None = None,
        *,
        claims: PartitionedStores[Ledger] | None = None,
        payers: PartitionedStores[Ledger] | None = None,
        **matching: Any,
    ) -> None:
        """``ledger``: one store for everything; or ``claims`` and ``payers``, the stores
        that follow their partitions. ``matching``: options, codes, pricing, clock."""
        if (ledger is None) == (claims is None or payers is None):
            raise ValueError("a RemittanceStage takes one ledger, or claims and payers stores")
        self.ledger = ledger
        self.claims = claims
        self.payers = payers
        self.matching = matching
        self.matcher = Matcher(ledger, **matching) if ledger is not None else None
        self._matchers: dict[int, ClaimMatcher] = {}
        self.options: RemittanceOptions = matching.get("options") or RemittanceOptions()
        self.idle_interval_s = min(self.options.sweep_interval_s, self.options.unmatched_grace_s)
        if claims is not None:
            self.inputs = (CLAIMS, INBOUND, WRITEOFFS, CLAIM_PAYMENTS, PAYER_PAYMENTS)
            self.reread = (CLAIM_PAYMENTS, PAYER_PAYMENTS)  # its own records: not decoded again
        self._set_waiting()

    def partitioned_stores(self) -> list[PartitionedStores[Ledger]]:
        return [s for s in (self.claims, self.payers) if s is not None]

    def _claims_of(self, partition: int) -> ClaimMatcher:
        """The matching over the partition's store (made again when the store is another:
        the partition revoked and assigned again)."""
        assert self.claims is not None
        store = self.claims.get(partition)
        matcher = self._matchers.get(partition)
        if matcher is None or matcher.ledger is not store:
            matcher = self._matchers[partition] = ClaimMatcher(store, **self.matching)
        return matcher

    def handle(self, msg: Incoming) -> Iterable[Out]:
        if msg.topic == WRITEOFFS:  # settled by the biller (settlement.py)
            return [_out("remittance.settled.v1", msg.value.claim_id, written_off(msg.value))]
        if self.matcher is not None:
            if msg.topic == CLAIMS:
                return _outs(self.matcher.claim(msg.value))
            return _outs(self.matcher.payer_file(msg.value, (msg.partition, msg.offset)))
        if msg.topic == INBOUND:
            if msg.value.kind != "835":
                domain_metrics.outcome(f"ignored_{msg.value.kind}").inc()
                return []
            return _outs(split_file(msg.value, (msg.partition, msg.offset)).outputs())
        if msg.topic == CLAIMS:
            return _outs(self._claims_of(msg.partition).claim(msg.value))
        if msg.topic == CLAIM_PAYMENTS:
            return _outs(self._claims_of(msg.partition).payment(msg.value))
        assert self.payers is not None
        return _outs(PayerBook(self.payers.get(msg.partition)).payment(msg.value))

    def on_idle(self) -> Iterable[Out]:
        """Report the payments whose claim has not arrived within the grace period."""
        if self.matcher is not None:
            return _outs(self.matcher.overdue())
        assert self.claims is not None
        outs: list[Output] = []
        for partition, _ in self.claims.items():
            outs += self._claims_of(partition).overdue()
        return _outs(outs)

    def on_batch_done(self) -> None:
        if self.ledger is not None:
            self.ledger.commit()
        self._set_waiting()

    def _set_waiting(self) -> None:
        if self.ledger is not None:
            WAITING.set(self.ledger.waiting_count())
        elif self.claims is not None:
            WAITING.set(sum(store.waiting_count() for _, store in self.claims.items()))

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()


def partitioned_ledgers(state_dir: Path) -> tuple[PartitionedStores[Ledger], ...]:
    """The live service's ledgers: the claims half, one store per partition of
    ``claims.submitted.v1`` (which ``remittance.claim-payments.v1`` is co-partitioned
    with), under ``<state_dir>/ledger/``; the payers' half, one per partition of
    ``remittance.payer-payments.v1``, under ``<state_dir>/payer-ledger/``."""
    topics = registry().topics
    if topics[CLAIMS].partitions != topics[CLAIM_PAYMENTS].partitions:
        raise ValueError(
            f"{CLAIM_PAYMENTS} must have as many partitions as {CLAIMS} (schemas/topics.yaml): "
            "a claim payment meets its claim in the partition of the same number"
        )
    return tuple(
        PartitionedStores(
            name, source, Path(state_dir) / name, lambda path: Ledger(path, changelog=True)
        )
        for name, source in ((Ledger.CLAIMS, CLAIMS), (Ledger.PAYERS, PAYER_PAYMENTS))
    )


def load_pricing(settings: RemittanceSettings) -> Pricing:
    """DRG weights (drgstable-{year}.csv) for payments whose claim has no expected amount."""
    if settings.refdata_dir is None:
        log.warning(
            "no CLAIMFLOW_REFDATA_DIR: DRG pricing of 835s without an expected amount is off"
        )
        return Pricing()
    try:
        from services.refdata.drg import DEFAULT_DRG_BASE_RATE, DrgWeights
    except ImportError:
        log.warning("the DRG weight loader is not installed: DRG pricing is off")
        return Pricing()

    weights = DrgWeights.load(settings.refdata_dir)
    if weights is None:
        log.warning("no drgstable-{year}.csv in CLAIMFLOW_REFDATA_DIR: DRG pricing is off")
        return Pricing()
    rate = settings.remittance.drg_base_rate or DEFAULT_DRG_BASE_RATE
    return Pricing(drg_weights=weights, drg_base_rate=rate)


def load_codes(settings: Settings) -> CodeTables:
    """The curated CARC/RARC tables, with the official descriptions when present."""
    codes = CodeTables.load(settings.refdata_dir)
    if not codes.sources:
        log.info(
            "CARC/RARC: curated table only (no carc*.csv / rarc*.csv in CLAIMFLOW_REFDATA_DIR)"
        )
    return codes


def main(settings: Settings | None = None) -> None:
    config = RemittanceSettings.from_base(settings)
    claims, payers = partitioned_ledgers(config.state_dir)
    stage = RemittanceStage(
        claims=claims,
        payers=payers,
        options=config.remittance,
        codes=load_codes(config),
        pricing=load_pricing(config),
    )
    run_stage(stage, config)
