"""coding: encounters.collected.v1 -> encounters.coded.v1 (+ coding.review.v1)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pipeline.models import CodingReview, event_id, utcnow
from pipeline.settings import Settings
from pipeline.stage import Incoming, Out, Stage, run_stage
from services.coding.domain import code_encounter
from services.refdata.codesets import CodeSets

log = logging.getLogger(__name__)


class CodingStage(Stage):
    name = "coding"
    inputs = ("encounters.collected.v1",)

    def __init__(self, codesets: CodeSets) -> None:
        self.codesets = codesets

    def handle(self, msg: Incoming) -> Iterable[Out]:
        coded = code_encounter(msg.value, self.codesets, coded_at=utcnow())
        outs = [Out("encounters.coded.v1", coded.encounter_id, coded)]
        if coded.review_reasons:
            review = CodingReview(
                event_id=event_id(coded.event_id, "review"),
                encounter_id=coded.encounter_id,
                reasons=coded.review_reasons,
                coded=coded,
                queued_at=coded.coded_at,
            )
            outs.append(Out("coding.review.v1", coded.encounter_id, review))
        return outs


def main(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    codesets = CodeSets.load(settings.refdata_dir)
    log.info("code sets", extra={"capabilities": codesets.capabilities()})
    run_stage(CodingStage(codesets), settings)
