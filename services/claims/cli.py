"""Claims' commands: ``claimflow claims build`` offline, ``claims rejections`` on the cluster,
and its part of ``claimflow corrections list`` (the payer's front-end rejections)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pipeline import logs, offline
from pipeline.settings import Settings


def cmd_claims_build(args: argparse.Namespace) -> int:
    from pipeline.models import ValidatedEncounter
    from services.claims.billing import ClaimWriter, load_fee_schedule
    from services.claims.settings import ClaimsSettings

    settings = ClaimsSettings()
    writer = ClaimWriter.from_settings(settings, load_fee_schedule(settings))

    def handle(_: str, data: bytes) -> list[str]:
        claims = writer.build(ValidatedEncounter.model_validate_json(data))
        if args.json:
            return [claim.model_dump_json() for claim in claims]
        out: list[str] = []
        for claim in claims:
            # build writes every claim's interchange; were one missing, say so, not "None".
            if claim.x12 is None:
                raise ValueError(f"claim {claim.claim_id} was built without its interchange")
            out.append(claim.x12)
        return out

    return offline.run(
        args.files,
        handle,
        "claims build",
        "a validated encounter (what `claimflow validate` prints)",
    )


def _payer_rejections(bootstrap: str, settings: Settings) -> list[Any]:
    """The last front-end rejection (999/277CA) of each claim, from claims.rejections.v1."""
    from pipeline.errors import DecodeError
    from pipeline.models import ClaimRejection
    from pipeline.replay import read_history
    from pipeline.serde import registry
    from services.claims.acks import latest_rejections

    reg = registry()
    found: list[ClaimRejection] = []
    for rec in read_history(bootstrap, settings, "claims.rejections.v1"):
        try:
            value = reg.decode("claims.rejections.v1", rec.value)
        except (DecodeError, ValueError):
            continue
        if isinstance(value, ClaimRejection):
            found.append(value)
    return latest_rejections(found)


def cmd_claims_rejections(args: argparse.Namespace) -> int:
    """Claims the payer's front end rejected (999/277CA), the last rejection of each."""
    from services.claims.acks import rejection_lines

    settings = Settings()
    logs.setup("WARNING")
    rejections = _payer_rejections(settings.require_bootstrap(), settings)
    if args.json:
        for rejection in rejections:
            print(rejection.model_dump_json())
    else:
        print(rejection_lines(rejections))
    return 0


def _not_written(bootstrap: str, settings: Settings) -> list[Any]:
    """Verdicts the scrubber passed whose claim could not be written or delivered: the
    dead letters of the claims stage that came from encounters.validated.v1, the last one
    per encounter."""
    from pipeline.errors import DecodeError
    from pipeline.models import DeadLetter
    from pipeline.replay import read_history
    from pipeline.serde import registry

    reg = registry()
    last: dict[str, DeadLetter] = {}
    for rec in read_history(bootstrap, settings, "dlq.claims.v1"):
        try:
            value = reg.decode("dlq.claims.v1", rec.value)
        except (DecodeError, ValueError):
            continue
        if isinstance(value, DeadLetter) and value.source_topic.endswith("encounters.validated.v1"):
            last[value.key or f"{value.source_partition}:{value.source_offset}"] = value
    return list(last.values())


def correction_queue(
    bootstrap: str, settings: Settings, *, as_json: bool, messages: bool
) -> list[str]:
    """``claimflow corrections list``: claims the payer's front end rejected (999/277CA),
    and billable encounters whose claim the 837 writer refused (or no adapter delivered)."""
    from services.claims.acks import rejection_lines

    rejections = _payer_rejections(bootstrap, settings)
    refused = _not_written(bootstrap, settings)
    if as_json:
        return [
            json.dumps({"queue": "payer_rejection", **rejection.model_dump(mode="json")})
            for rejection in rejections
        ] + [
            json.dumps(
                {
                    "queue": "claim_not_written",
                    "encounter_id": d.key,
                    "field": d.field,
                    "reason": d.error_message,
                    "error_class": d.error_class,
                }
            )
            for d in refused
        ]
    lines = [rejection_lines(rejections)]
    if refused:
        lines.append(f"claims not written ({len(refused)}): fix the field, then validate again")
        lines += [f"  {d.key}  {d.field or '-'}: {d.error_message}" for d in refused]
    return lines


def register(sub: Any) -> None:
    """Add the claims commands to the ``claimflow`` parser."""
    group = sub.add_parser("claims", help="offline claims").add_subparsers(
        dest="sub", required=True
    )
    r = group.add_parser("build", help="validated encounters -> X12 837P / 837I")
    r.add_argument("files", nargs="*", help="input files (default, or -: JSON lines on stdin)")
    r.add_argument("--json", action="store_true", help="print the claim event, not the X12")
    r.set_defaults(func=cmd_claims_build)
    r = group.add_parser(
        "rejections", help="claims the payer's front end rejected (999/277CA), with the reason"
    )
    r.add_argument("--json", action="store_true", help="one JSON object per claim")
    r.set_defaults(func=cmd_claims_rejections)
