"""claims: clean encounters.validated.v1 -> claims.submitted.v1 (X12 837P)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pipeline import metrics
from pipeline.settings import Settings
from pipeline.stage import Incoming, Out, Stage, run_stage
from services.claims.domain import FeeSchedule, build_claim

log = logging.getLogger(__name__)


class ClaimsStage(Stage):
    name = "claims"
    inputs = ("encounters.validated.v1",)

    def __init__(self, settings: Settings, fee_schedule: FeeSchedule | None) -> None:
        self.settings = settings
        self.fee_schedule = fee_schedule

    def handle(self, msg: Incoming) -> Iterable[Out]:
        if msg.value.outcome == "rejected":
            metrics.OUTCOMES.labels(self.name, "not_billed_rejected").inc()
            return []
        claim = build_claim(
            msg.value,
            sender_id=self.settings.sender_id,
            receiver_id=self.settings.receiver_id,
            fee_schedule=self.fee_schedule,
        )
        return [Out("claims.submitted.v1", claim.claim_id, claim)]


def load_fee_schedule(settings: Settings) -> FeeSchedule | None:
    if settings.refdata_dir is None:
        log.warning("no CLAIMFLOW_REFDATA_DIR: expected reimbursement is off (null on claims)")
        return None
    from services.refdata.fee_schedule import FeeSchedule

    return FeeSchedule.load(settings.refdata_dir)


def main(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    run_stage(ClaimsStage(settings, load_fee_schedule(settings)), settings)
