"""Remittance's commands: ``claimflow remit parse|post`` offline, and the work queues
(``remit exceptions``, ``denials list``) read from the cluster."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pipeline import offline
from pipeline.settings import Settings


def cmd_remit_parse(args: argparse.Namespace) -> int:
    """Each 835 transaction set as JSON: the payment, its balancing, defects and warnings."""
    from services.remittance.era import read_835
    from services.remittance.posting import reconcile

    unbalanced = 0

    def handle(_: str, data: bytes) -> list[str]:
        nonlocal unbalanced
        out = []
        read = read_835(data)
        for transaction in read.transactions:
            remittance = transaction.remittance
            if remittance is None:
                unbalanced += 1
                record = {
                    "transaction_control_number": transaction.control_number,
                    "error": transaction.error,
                }
                out.append(json.dumps(record))
                continue
            summary = reconcile(remittance)
            unbalanced += not summary.balanced
            record = json.loads(json.dumps(remittance, default=offline.json_default))
            record["warnings"] = [*read.warnings, *remittance.warnings]
            record["balance_errors"] = list(summary.balance_errors)
            record["balance_warnings"] = remittance.balance_warnings()
            record["summary"] = {
                "claims": summary.claims,
                "claims_paid": summary.claims_paid,
                "provider_adjustment_total": summary.provider_adjustment_total,
                "cash": summary.cash,
                "payment_amount": summary.payment_amount,
                "balanced": summary.balanced,
            }
            out.append(json.dumps(record, default=offline.json_default))
        return out

    code = offline.run(args.files, handle, "remit parse")
    return 1 if unbalanced else code


def cmd_remit_post(args: argparse.Namespace) -> int:
    """Post 835 files offline against claims: postings, denials and exceptions as JSON lines
    (the service's matching, ``matching.py``, over an in-memory ledger)."""
    from pipeline.models import PayerFile, SubmittedClaim, event_id
    from services.remittance.app import RemittanceSettings, load_codes, load_pricing
    from services.remittance.era import read_835
    from services.remittance.ledger import Ledger
    from services.remittance.matching import Matcher, Output
    from services.remittance.posting import payer_of

    settings = RemittanceSettings.from_base(Settings())
    matcher = Matcher(
        Ledger(":memory:"),
        options=settings.remittance.model_copy(update={"unmatched_grace_s": 0.0}),
        codes=load_codes(settings),
        pricing=load_pricing(settings),
    )
    exceptions = 0

    def emit(outs: list[Output]) -> list[str]:
        nonlocal exceptions
        exceptions += sum(o.topic == "remittance.exceptions.v1" for o in outs)
        return [
            json.dumps({"topic": o.topic, "key": o.key, "value": o.value.model_dump(mode="json")})
            for o in outs
        ]

    for name, data in offline.inputs(args.claims) if args.claims else ():
        if isinstance(data, offline.Unreadable):
            print(f"claimflow remit post: --claims {name}: {data}", file=sys.stderr)
            return 1
        matcher.claim(SubmittedClaim.model_validate_json(data))

    def handle(name: str, data: bytes) -> list[str]:
        try:
            payer = args.payer or payer_of(read_835(data).remittances[0])
        except Exception:  # noqa: BLE001 - the matching reports why the file cannot be read
            payer = args.payer or "unknown"
        file_id = Path(name).name
        file = PayerFile(
            event_id=event_id(payer, file_id, "835"),
            payer_id=payer,
            file_id=file_id,
            kind="835",
            body=data,
            received_at=offline.now(),
        )
        return emit(matcher.payer_file(file))

    code = offline.run(args.files, handle, "remit post")
    for line in emit(matcher.overdue()):  # payments whose claim is not among --claims
        print(line)
    print(json.dumps({"ledger": _plb_ledger(matcher.ledger)}))
    matcher.ledger.close()
    return 1 if exceptions else code


def _plb_ledger(ledger: Any) -> dict[str, Any]:
    """Where the PLB adjustments went: each one, the claims they changed (net paid after
    them), and the forward balances still owed per payer."""
    applied = ledger.plb_applications()
    claims = sorted({a["claim_id"] for a in applied if a["claim_id"]})
    payers = sorted({a["payer_id"] for a in applied})
    return {
        "provider_adjustments": applied,
        "claims": {c: str(ledger.net_paid(c)) for c in claims},
        "forward_balances": {p: str(ledger.forward_balance(p)) for p in payers},
    }


def cmd_remit_exceptions(args: argparse.Namespace) -> int:
    items = offline.read_topic("remittance.exceptions.v1", args.wait)
    items = [e for e in items if not args.kind or e.kind == args.kind]
    if items and not args.json:
        print(
            f"{'detected (UTC)':<16} {'kind':<17} {'payer':<12} {'file':<14} "
            f"{'claims':<40} first error"
        )
    for item in items:
        if args.json:
            print(item.model_dump_json(exclude={"body"}))
            continue
        claims = ",".join(c.claim_id for c in item.claims[:3])
        claims += f" (+{len(item.claims) - 3})" if len(item.claims) > 3 else ""
        print(
            f"{item.detected_at:%Y-%m-%d %H:%M} {item.kind:<17} {item.payer_id:<12} "
            f"{item.file_id:<14} {claims:<40} {(item.errors or [''])[0][:80]}"
        )
    print(f"{len(items)} exception(s)", file=sys.stderr)
    return 0


def cmd_denials_list(args: argparse.Namespace) -> int:
    items = offline.read_topic("remittance.denials.v1", args.wait)
    latest: dict[str, Any] = {}
    for item in items:  # the newest item of each claim, in the order they were queued
        latest.pop(item.claim_id, None)
        latest[item.claim_id] = item
    shown = [
        d
        for d in (latest.values() if not args.all else items)
        if (not args.category or d.category == args.category)
        and (not args.payer or d.payer_id == args.payer)
        and (not args.kind or d.kind == args.kind)
    ]
    if shown and not args.json:
        print(
            f"{'claim':<20} {'payer':<12} {'kind':<16} {'category':<24} {'at stake':>10} "
            f"{'CARC':<20} {'RARC':<12} next action"
        )
    for d in shown:
        if args.json:
            print(d.model_dump_json())
            continue
        codes = ",".join(dict.fromkeys(f"{r.group}-{r.carc}" for r in d.reasons))
        remarks = ",".join(r.code for r in d.remarks)
        print(
            f"{d.claim_id:<20} {d.payer_id:<12} {d.kind:<16} {d.category:<24} "
            f"{d.at_stake:>10} {codes:<20} {remarks:<12} {d.action}"
        )
    print(f"{len(shown)} denial(s)", file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    """Add remittance's commands to the ``claimflow`` parser."""
    group = sub.add_parser("remit", help="offline remittance").add_subparsers(
        dest="sub", required=True
    )
    r = group.add_parser("parse", help="X12 835 files -> one JSON object per payment")
    r.add_argument("files", nargs="*", help="X12 835 files (default, or -: stdin)")
    r.set_defaults(func=cmd_remit_parse)
    r = group.add_parser(
        "post", help="X12 835 files posted against claims -> postings, denials, exceptions"
    )
    r.add_argument("files", nargs="*", help="X12 835 files (default, or -: stdin)")
    r.add_argument("--claims", nargs="*", help="claims.submitted JSON lines (claims build --json)")
    r.add_argument("--payer", default=None, help="payer id (default: the 835's own)")
    r.set_defaults(func=cmd_remit_post)
    r = group.add_parser("exceptions", help="remittance.exceptions.v1 from the cluster")
    r.add_argument(
        "--kind",
        choices=[
            "unmatched_payment",
            "unbalanced_payment",
            "unbalanced_claim",
            "unreadable_claim",
            "unreadable_file",
        ],
        help="only this kind",
    )
    r.add_argument("--json", action="store_true", help="JSON lines (without file bodies)")
    r.add_argument("--wait", type=float, default=2.0, help="seconds of quiet that end the read")
    r.set_defaults(func=cmd_remit_exceptions)
    group = sub.add_parser("denials", help="the denial work queue").add_subparsers(
        dest="sub", required=True
    )
    r = group.add_parser("list", help="remittance.denials.v1: the latest item per claim")
    r.add_argument("--category", default=None, help="only this category (e.g. coding)")
    r.add_argument(
        "--kind", choices=["denied", "partially_denied", "underpaid"], help="only this kind"
    )
    r.add_argument("--payer", default=None, help="only this payer id")
    r.add_argument("--all", action="store_true", help="every item, not only the latest per claim")
    r.add_argument("--json", action="store_true", help="the Denial records as JSON lines")
    r.add_argument("--wait", type=float, default=2.0, help="seconds of quiet that end the read")
    r.set_defaults(func=cmd_denials_list)
