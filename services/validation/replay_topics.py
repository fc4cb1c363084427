"""``claimflow replay --stage validation``: re-validate the history of encounters.coded.v1 with
a rule pack, publish the verdicts that are new to encounters.validated.v1, and report what
changed by rule. The topics are read and written here; what is decided (which encounters,
which verdicts are new, the diff) is ``replay.py``'s plain domain code. The live stage
(``app.py``) does not replay.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

from pydantic import ValidationError

from pipeline.errors import DecodeError
from pipeline.models import CodedEncounter, ValidatedEncounter, utcnow
from pipeline.replay import Publisher, read_history
from pipeline.serde import Registry, registry
from pipeline.settings import Settings
from services.refdata.codesets import CodeSets
from services.validation.duplicates import DuplicateStore
from services.validation.engine import RulePack
from services.validation.replay import ReplayReport, Revalidator, Summary, diff

CODED = "encounters.coded.v1"
VALIDATED = "encounters.validated.v1"


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
