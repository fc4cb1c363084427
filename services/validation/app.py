"""validation: encounters.coded.v1 -> encounters.validated.v1 (the claim scrubber)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from pydantic import Field

from pipeline import metrics
from pipeline.models import utcnow
from pipeline.settings import Settings
from pipeline.stage import Incoming, Out, Stage, run_stage
from services.refdata.codesets import CodeSets
from services.refdata.masterdata import load_master_data
from services.refdata.payers import EMPTY_REGISTRY, PayerRegistry
from services.validation import metrics as domain_metrics
from services.validation.duplicates import DuplicateStore
from services.validation.engine import RulePack
from services.validation.packs import get_pack
from services.validation.rules import RULE_PACK_VERSION, validate

log = logging.getLogger(__name__)


class ValidationSettings(Settings):
    """The scrubber's settings: the shared ones plus the rule pack it runs."""

    rule_pack: str = Field(
        default=RULE_PACK_VERSION,
        description="Id of the rule pack the live service runs (CLAIMFLOW_RULE_PACK).",
    )


class ValidationStage(Stage):
    name = "validation"
    inputs = ("encounters.coded.v1",)
    outcomes = domain_metrics.OUTCOMES

    def observe(self, topic: str, value: Any, source: Any) -> None:
        domain_metrics.observe(self.name, topic, value)

    def __init__(
        self,
        codesets: CodeSets,
        pack: RulePack | None = None,
        history: DuplicateStore | None = None,
        payers: PayerRegistry = EMPTY_REGISTRY,
    ) -> None:
        self.codesets = codesets
        self.pack = pack or get_pack()
        self.history = history
        self.payers = payers

    def handle(self, msg: Incoming) -> Iterable[Out]:
        verdict = validate(
            msg.value,
            self.codesets,
            validated_at=utcnow(),
            pack=self.pack,
            history=self.history,
            payers=self.payers,
        )
        if self.history is not None:
            self.history.record(msg.value, verdict.outcome)
        metrics.OUTCOMES.labels(self.name, verdict.outcome).inc()
        return [Out("encounters.validated.v1", verdict.encounter_id, verdict)]

    def on_batch_done(self) -> None:
        if self.history is not None:
            self.history.commit()

    def close(self) -> None:
        if self.history is not None:
            self.history.close()


def load_codesets(settings: Settings) -> CodeSets:
    """Code sets and CMS files, with a loud line for every edit that is off."""
    codesets = CodeSets.load(settings.refdata_dir)
    for capability, on in codesets.capabilities().items():
        if not on:
            log.warning(
                "edit off",
                extra={"capability": capability, "reason": codesets.notes.get(capability)},
            )
    return codesets


def main(settings: Settings | None = None) -> None:
    settings = ValidationSettings.from_base(settings or Settings())
    pack = get_pack(settings.rule_pack)
    codesets = load_codesets(settings)
    log.info(
        "rule pack",
        extra={"version": pack.id, "rules": len(pack.rules), **codesets.capabilities()},
    )
    payers = load_master_data(settings).payers
    history = DuplicateStore.in_state_dir(settings.state_dir)
    run_stage(ValidationStage(codesets, pack, history, payers), settings)
