"""claims: clean encounters.validated.v1 -> claims.submitted.v1 (X12 837P)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pipeline import metrics
from pipeline.settings import Settings
from pipeline.stage import Incoming, Out, Stage, run_stage
from services.claims.corrections import SubmittedClaims, write
from services.claims.domain import FeeSchedule

log = logging.getLogger(__name__)


class ClaimsStage(Stage):
    name = "claims"
    inputs = ("encounters.validated.v1",)

    def __init__(self, settings: Settings, fee_schedule: FeeSchedule | None) -> None:
        self.settings = settings
        self.fee_schedule = fee_schedule
        # Corrections hook: the claim last submitted per encounter (services/claims/corrections.py)
        self.submitted = SubmittedClaims.in_state_dir(settings.state_dir)

    def handle(self, msg: Incoming) -> Iterable[Out]:
        # Corrections hook: an original the first time; a replacement (7) or void (8) when a
        # billed encounter's verdict changes; nothing for a verdict already answered.
        planned = self.submitted.claims_for(msg.value, fee_schedule=self.fee_schedule)
        if not planned:
            label = "not_billed_rejected" if msg.value.outcome == "rejected" else "unchanged"
            metrics.OUTCOMES.labels(self.name, label).inc()
        claims = [
            write(p, sender_id=self.settings.sender_id, receiver_id=self.settings.receiver_id)
            for p in planned
        ]
        return [Out("claims.submitted.v1", c.claim_id, c) for c in claims]

    def on_batch_done(self) -> None:
        self.submitted.commit()

    def close(self) -> None:
        self.submitted.close()


def load_fee_schedule(settings: Settings) -> FeeSchedule | None:
    if settings.refdata_dir is None:
        log.warning("no CLAIMFLOW_REFDATA_DIR: expected reimbursement is off (null on claims)")
        return None
    from services.refdata.fee_schedule import FeeSchedule

    return FeeSchedule.load(settings.refdata_dir)


def main(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    run_stage(ClaimsStage(settings, load_fee_schedule(settings)), settings)
