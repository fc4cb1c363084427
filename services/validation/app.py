"""validation: encounters.coded.v1 -> encounters.validated.v1 (the claim scrubber)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pipeline import metrics
from pipeline.models import utcnow
from pipeline.settings import Settings
from pipeline.stage import Incoming, Out, Stage, run_stage
from services.refdata.codesets import CodeSets
from services.validation.rules import RULE_PACK_VERSION, validate

log = logging.getLogger(__name__)


class ValidationStage(Stage):
    name = "validation"
    inputs = ("encounters.coded.v1",)

    def __init__(self, codesets: CodeSets) -> None:
        self.codesets = codesets

    def handle(self, msg: Incoming) -> Iterable[Out]:
        verdict = validate(msg.value, self.codesets, validated_at=utcnow())
        metrics.OUTCOMES.labels(self.name, verdict.outcome).inc()
        return [Out("encounters.validated.v1", verdict.encounter_id, verdict)]


def main(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    codesets = CodeSets.load(settings.refdata_dir)
    log.info(
        "rule pack", extra={"version": RULE_PACK_VERSION, "capabilities": codesets.capabilities()}
    )
    run_stage(ValidationStage(codesets), settings)
