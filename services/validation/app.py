"""validation: encounters.coded.v1 -> encounters.validated.v1 (the claim scrubber).

The duplicate-claim edit needs every claim of a patient in one store, and coded
encounters are keyed by encounter id. So the service re-keys each coded encounter by
patient into ``validation.by-patient.v1`` (its bytes unchanged; the runner does it without
decoding when coding named the patient key in a header) and validates from there,
with one duplicate store per partition of that topic that moves with the partition
(``pipeline/partitioned.py``). A stage built with one plain store (tests, offline runs)
validates ``encounters.coded.v1`` directly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pipeline import metrics
from pipeline.models import ValidatedEncounter, utcnow
from pipeline.partitioned import PartitionedStores
from pipeline.settings import Settings
from pipeline.stage import (
    PATIENT_KEY_HEADER,
    Embed,
    Incoming,
    Out,
    PassThrough,
    Stage,
    run_stage,
)
from services.refdata.codesets import CodeSets
from services.refdata.masterdata import load_master_data
from services.refdata.payers import EMPTY_REGISTRY, PayerRegistry
from services.validation import metrics as domain_metrics
from services.validation.duplicates import DuplicateStore, patient_key
from services.validation.engine import RulePack
from services.validation.packs import get_pack
from services.validation.rules import RULE_PACK_VERSION, validate

log = logging.getLogger(__name__)

CODED = "encounters.coded.v1"
BY_PATIENT = "validation.by-patient.v1"
VALIDATED = "encounters.validated.v1"


class ValidationOptions(BaseModel):
    """``CLAIMFLOW_VALIDATION__…``: what the scrubber runs."""

    model_config = ConfigDict(frozen=True)

    rule_pack: str = Field(
        default=RULE_PACK_VERSION,
        description="Id of the rule pack the live service runs "
        "(CLAIMFLOW_VALIDATION__RULE_PACK; the old CLAIMFLOW_RULE_PACK still works).",
    )


class ValidationSettings(Settings):
    """The scrubber's settings: the shared ones plus the rule pack it runs."""

    aliases = {"CLAIMFLOW_RULE_PACK": "validation.rule_pack"}
    validation: ValidationOptions = ValidationOptions()


class ValidationStage(Stage):
    name = "validation"
    inputs: tuple[str, ...] = ("encounters.coded.v1",)
    outcomes = domain_metrics.OUTCOMES
    # The verdict carries the coded encounter unchanged: its bytes are reused.
    embeds = (Embed("encounters.validated.v1", ("coded",)),)

    def observe(self, topic: str, value: Any, source: Any) -> None:
        domain_metrics.observe(self.name, topic, value)

    def __init__(
        self,
        codesets: CodeSets,
        pack: RulePack | None = None,
        history: DuplicateStore | PartitionedStores[DuplicateStore] | None = None,
        payers: PayerRegistry = EMPTY_REGISTRY,
    ) -> None:
        self.codesets = codesets
        self.pack = pack or get_pack()
        self.history = history
        self.payers = payers
        self.partitioned = history if isinstance(history, PartitionedStores) else None
        self._outcomes: dict[str, Any] = {}
        self._counts: dict[str, int] = {}  # verdicts of the batch by outcome, not counted yet
        self.inputs = (CODED, BY_PATIENT) if self.partitioned else (CODED,)
        if self.partitioned:  # coding names the patient key in a header: no decode needed
            self.pass_through = (PassThrough(CODED, BY_PATIENT, PATIENT_KEY_HEADER),)

    def partitioned_stores(self) -> list[PartitionedStores[DuplicateStore]]:
        return [self.partitioned] if self.partitioned else []

    def handle(self, msg: Incoming) -> Iterable[Out]:
        if self.partitioned is not None and msg.topic == CODED:
            return [Out(BY_PATIENT, patient_key(msg.value), msg.value, msg.headers, raw=msg.raw)]
        history = (
            self.partitioned.get(msg.partition) if self.partitioned is not None else self.history
        )
        assert not isinstance(history, PartitionedStores)
        verdict = validate(
            msg.value,
            self.codesets,
            validated_at=utcnow(),
            pack=self.pack,
            history=history,
            payers=self.payers,
        )
        if history is not None:
            history.record(msg.value, verdict.outcome)
        counts = self._counts  # counted once the batch is done: ``_count``
        counts[verdict.outcome] = counts.get(verdict.outcome, 0) + 1
        return [_verdict_out(verdict)]

    def on_batch_done(self) -> None:
        if isinstance(self.history, DuplicateStore):
            self.history.commit()
        self._count()

    def _count(self) -> None:
        """The batch's verdicts and edits added to their counters: a counter's ``inc`` takes
        its lock (about 1 us), once per outcome and edit of a batch instead of once per
        verdict and edit."""
        for outcome, count in self._counts.items():
            counted = self._outcomes.get(outcome)
            if counted is None:  # the labelled series, found once per outcome
                counted = self._outcomes[outcome] = metrics.OUTCOMES.labels(self.name, outcome)
            counted.inc(count)
        self._counts.clear()
        domain_metrics.flush()

    def close(self) -> None:
        if isinstance(self.history, DuplicateStore):
            self.history.close()


_new_object = object.__new__


def _verdict_out(verdict: ValidatedEncounter) -> Out:
    """``Out("encounters.validated.v1", verdict.encounter_id, verdict)``, built as coding
    builds its outputs (``services/coding/app.py``): the frozen dataclass's ``__init__``
    sets each field through ``object.__setattr__``; filling the new instance's ``__dict__``
    gives the same object (tests/unit/test_validation_out.py) in 0.26 us instead of 0.84
    (timeit), once per encounter validated."""
    out: Out = _new_object(Out)
    fields = out.__dict__
    fields["topic"] = VALIDATED
    fields["key"] = verdict.encounter_id
    fields["value"] = verdict
    fields["headers"] = {}
    fields["raw"] = None
    return out


def partitioned_history(state_dir: Path) -> PartitionedStores[DuplicateStore]:
    """The live service's duplicate history: one store per partition of the by-patient
    topic, under ``<state_dir>/claims-seen/``."""
    return PartitionedStores(
        DuplicateStore.NAME,
        BY_PATIENT,
        Path(state_dir) / DuplicateStore.NAME,
        lambda path: DuplicateStore(path, changelog=True),
    )


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
    pack = get_pack(settings.validation.rule_pack)
    codesets = load_codesets(settings)
    log.info(
        "rule pack",
        extra={"version": pack.id, "rules": len(pack.rules), **codesets.capabilities()},
    )
    payers = load_master_data(settings).payers
    history = partitioned_history(settings.state_dir)
    run_stage(ValidationStage(codesets, pack, history, payers), settings)
