"""Validation's commands: ``claimflow validate`` offline, ``claimflow replay`` on the cluster,
and its part of ``claimflow corrections list`` (the scrubber's rejections)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pipeline import logs, offline
from pipeline.settings import Settings


def cmd_validate(args: argparse.Namespace) -> int:
    from pipeline.models import CodedEncounter
    from services.refdata.codesets import CodeSets
    from services.refdata.masterdata import load_master_data
    from services.validation.duplicates import DuplicateStore
    from services.validation.packs import get_pack
    from services.validation.rules import validate

    pack = get_pack(args.rule_pack)
    settings = Settings()
    codesets = CodeSets.load(settings.refdata_dir)
    payers = load_master_data(settings).payers
    history = DuplicateStore(":memory:")  # duplicate claims among the inputs of this run
    rejected = 0

    def handle(_: str, data: bytes) -> list[str]:
        nonlocal rejected
        coded = CodedEncounter.model_validate_json(data)
        verdict = validate(
            coded, codesets, validated_at=offline.now(), pack=pack, history=history, payers=payers
        )
        history.record(coded, verdict.outcome)
        rejected += verdict.outcome == "rejected"
        return [verdict.model_dump_json()]

    code = offline.run(
        args.files, handle, "validate", "a coded encounter (what `claimflow code` prints)"
    )
    return 1 if rejected else code


def cmd_replay(args: argparse.Namespace) -> int:
    """Re-validate encounters.coded.v1 history with a rule pack; print the diff by rule."""
    from pipeline.replay import parse_from
    from services.validation.app import load_codesets
    from services.validation.duplicates import DuplicateStore
    from services.validation.packs import get_pack
    from services.validation.replay_topics import replay

    settings = Settings()
    logs.setup("WARNING")
    try:
        pack = get_pack(args.rule_pack)
        since_ms = parse_from(args.since)
    except ValueError as exc:
        print(f"claimflow replay: {exc}", file=sys.stderr)
        return 2
    bootstrap = settings.require_bootstrap()
    codesets = load_codesets(settings)
    history = DuplicateStore.in_state_dir(settings.state_dir)
    try:
        report = replay(
            bootstrap,
            settings,
            pack,
            codesets,
            since_ms=since_ms,
            history=history,
            dry_run=args.dry_run,
        )
    finally:
        history.close()
    print(report.text())
    print(json.dumps(report.summary()))
    return 0


def correction_queue(
    bootstrap: str, settings: Settings, *, as_json: bool, messages: bool
) -> list[str]:
    """``claimflow corrections list``: encounters whose latest verdict is rejected, with their
    edits (hit messages only with ``messages``: they may quote dates, which are PHI)."""
    from pipeline.errors import DecodeError
    from pipeline.models import ValidatedEncounter
    from pipeline.replay import read_history
    from pipeline.serde import registry
    from services.validation.worklist import WorkQueue

    reg = registry()
    queue = WorkQueue(messages=messages)
    for rec in read_history(bootstrap, settings, "encounters.validated.v1"):
        try:
            verdict = reg.decode("encounters.validated.v1", rec.value)
        except (DecodeError, ValueError):
            continue  # not a verdict this version can read; validation's DLQ has the rest
        assert isinstance(verdict, ValidatedEncounter)
        queue.add(verdict)
    if as_json:
        return [json.dumps(entry.as_dict()) for entry in queue.rejected()]
    return [queue.text()]


def register(sub: Any) -> None:
    """Add validation's commands to the ``claimflow`` parser."""
    q = sub.add_parser("validate", help="coded encounters -> validated encounters")
    q.add_argument("files", nargs="*", help="input files (default, or -: JSON lines on stdin)")
    q.add_argument("--rule-pack", default=None, help="rule pack id (default: the newest)")
    q.set_defaults(func=cmd_validate)
    q = sub.add_parser(
        "replay", help="re-run a stage over its input history with new rules; print the diff"
    )
    q.add_argument("--stage", choices=["validation"], required=True, help="the stage to re-run")
    q.add_argument("--rule-pack", required=True, help="id of the rule pack to re-validate with")
    q.add_argument(
        "--from",
        dest="since",
        default="BEGINNING",
        help="BEGINNING, or an ISO-8601 time: encounters last coded at or after it",
    )
    q.add_argument("--dry-run", action="store_true", help="report the diff, publish nothing")
    q.set_defaults(func=cmd_replay)


def rule_titles() -> dict[str, str]:
    """Each rule's explanation by id: the report names edits with them."""
    import services.validation.rules  # noqa: F401 - registers every rule
    from services.validation.engine import REGISTRY

    return {rule_id: rule.explanation for rule_id, rule in REGISTRY.items()}
