"""remittance: 835s (payer.inbound.v1) matched to claims (claims.submitted.v1), posted.

Out: remittance.posted.v1 (every matched claim payment), remittance.denials.v1 (denied,
partially denied and underpaid claims), remittance.settled.v1 (a claim adjudicated or
reopened, for the claims stage's retention), remittance.exceptions.v1 (payments whose claim has
not arrived after the grace period, files that do not balance, X12 that cannot be read).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from prometheus_client import Gauge

from pipeline.settings import Settings
from pipeline.stage import Incoming, Out, Stage, run_stage
from services.remittance import metrics as domain_metrics
from services.remittance.denials import CodeTables
from services.remittance.ledger import Ledger
from services.remittance.matching import Matcher, Output, RemittanceOptions
from services.remittance.posting import Pricing

log = logging.getLogger(__name__)

__all__ = ["RemittanceOptions", "RemittanceSettings", "RemittanceStage", "main"]

WAITING = Gauge(
    "claimflow_remittance_waiting_payments",
    "Claim payments waiting for their claim (reported to exceptions or not yet)",
)


class RemittanceSettings(Settings):
    """The shared settings plus the remittance options."""

    remittance: RemittanceOptions = RemittanceOptions()


def _outs(outputs: list[Output]) -> list[Out]:
    return [Out(o.topic, o.key, o.value) for o in outputs]


class RemittanceStage(Stage):
    """Wiring only: claims and payer files to the matching (``matching.py``)."""

    name = "remittance"
    inputs = ("claims.submitted.v1", "payer.inbound.v1")

    def prime_metrics(self) -> None:
        domain_metrics.prime()

    def observe(self, topic: str, value: Any, source: Any) -> None:
        domain_metrics.observe(topic, value)

    def __init__(self, ledger: Ledger, **matching: Any) -> None:
        """``matching``: the ``Matcher``'s options (options, codes, pricing, clock)."""
        self.matcher = Matcher(ledger, **matching)
        self.ledger = ledger
        self.options = self.matcher.options
        self.idle_interval_s = min(self.options.sweep_interval_s, self.options.unmatched_grace_s)
        WAITING.set(ledger.waiting_count())

    def handle(self, msg: Incoming) -> Iterable[Out]:
        if msg.topic == "claims.submitted.v1":
            return _outs(self.matcher.claim(msg.value))
        return _outs(self.matcher.payer_file(msg.value, (msg.partition, msg.offset)))

    def on_idle(self) -> Iterable[Out]:
        """Report the payments whose claim has not arrived within the grace period."""
        return _outs(self.matcher.overdue())

    def on_batch_done(self) -> None:
        self.ledger.commit()
        WAITING.set(self.ledger.waiting_count())

    def close(self) -> None:
        self.ledger.close()


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
    ledger = Ledger(config.state_dir / "remittance-ledger.sqlite3")
    stage = RemittanceStage(
        ledger, options=config.remittance, codes=load_codes(config), pricing=load_pricing(config)
    )
    run_stage(stage, config)
