"""validation: encounters.coded.v1 -> encounters.validated.v1 (the claim scrubber)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, cast

from pydantic import Field, ValidationError

from pipeline import metrics
from pipeline.errors import DecodeError
from pipeline.models import CodedEncounter, ValidatedEncounter, utcnow
from pipeline.replay import Publisher, read_history
from pipeline.serde import Registry, registry
from pipeline.settings import Settings
from pipeline.stage import Incoming, Out, Stage, run_stage
from services.refdata.codesets import CodeSets
from services.refdata.masterdata import load_master_data
from services.refdata.payers import EMPTY_REGISTRY, PayerRegistry
from services.validation import metrics as domain_metrics
from services.validation.duplicates import DuplicateStore
from services.validation.engine import RulePack
from services.validation.packs import get_pack
from services.validation.replay import ReplayReport, Revalidator, Summary, diff
from services.validation.rules import RULE_PACK_VERSION, validate

log = logging.getLogger(__name__)

CODED = "encounters.coded.v1"
VALIDATED = "encounters.validated.v1"


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


def replay(
    bootstrap: str,
    settings: Settings,
    pack: RulePack,
    codesets: CodeSets,
    *,
    since_ms: int | None = None,
    history: DuplicateStore | None = None,
    dry_run: bool = False,
    quiet_s: float = 1.0,
    validated_at: datetime | None = None,
) -> ReplayReport:
    """Re-validate encounters.coded.v1 history with ``pack``; publish the verdicts that are
    new to encounters.validated.v1 and report the outcomes that changed, by rule."""
    reg = registry()
    since = "BEGINNING" if since_ms is None else datetime.fromtimestamp(since_ms / 1000, UTC)
    report = ReplayReport(pack=pack.id, since=str(since), dry_run=dry_run)
    before: dict[str, Summary] = {}
    for rec in read_history(bootstrap, settings, VALIDATED, quiet_s=quiet_s):
        try:
            seen = cast(ValidatedEncounter, reg.decode(VALIDATED, rec.value))
        except (DecodeError, ValidationError):
            report.undecodable += 1
            continue
        before[seen.encounter_id] = Summary.of(seen)
    report.verdicts_before = len(before)
    # Each encounter once, from its latest coded record (keys are encounter ids).
    newest: dict[str, tuple[int, int, int]] = {}
    for rec in read_history(bootstrap, settings, CODED, quiet_s=quiet_s):
        report.coded_records += 1
        key = rec.key or _encounter_id(reg, rec.value)
        if key is not None:
            newest[key] = (rec.partition, rec.offset, rec.timestamp_ms)
    chosen = {(p, o) for p, o, ts in newest.values() if since_ms is None or ts >= since_ms}
    revalidator = Revalidator(
        pack, codesets, before, history=history, validated_at=validated_at or utcnow()
    )
    publisher = None if dry_run else Publisher(bootstrap, settings, reg)
    commit = history.commit if history is not None else None
    for rec in read_history(bootstrap, settings, CODED, since_ms=since_ms, quiet_s=quiet_s):
        if (rec.partition, rec.offset) not in chosen:
            continue
        chosen.discard((rec.partition, rec.offset))
        try:
            coded = cast(CodedEncounter, reg.decode(CODED, rec.value))
        except (DecodeError, ValidationError):
            report.undecodable += 1
            continue
        report.encounters += 1
        verdict = revalidator.verdict(coded)
        if verdict is not None and publisher is not None:
            publisher.publish(VALIDATED, verdict.encounter_id, verdict)
            if publisher.sent % 1000 == 0:
                publisher.flush(commit)
    if publisher is not None:
        publisher.flush(commit)
    elif history is not None:
        history.rollback()  # a dry run leaves no trace
    report.published = revalidator.published if not dry_run else 0
    report.already_published = revalidator.already_published
    report.changes = diff(before, revalidator.after)
    return report


def _encounter_id(reg: Registry, value: bytes) -> str | None:
    try:
        return cast(CodedEncounter, reg.decode(CODED, value)).encounter_id
    except (DecodeError, ValidationError):
        return None
