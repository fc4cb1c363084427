"""Coding's commands: ``claimflow code`` offline, the coder review queue (``review list``,
``review decide``) and the coding audit queue (``audit list``, ``audit decide``) on the
cluster."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from pipeline import offline
from pipeline.settings import Settings


def cmd_code(args: argparse.Namespace) -> int:
    from pipeline.models import Encounter
    from services.coding.app import CodingSettings
    from services.coding.domain import Coder
    from services.coding.review import ReviewStore, patient_key

    settings = CodingSettings.from_base(Settings())
    coder = Coder.load(settings.refdata_dir, threshold=settings.coding.review_threshold)
    store = ReviewStore(":memory:")  # a member's HCCs gather over the inputs of this run

    def handle(_: str, data: bytes) -> list[str]:
        enc = Encounter.model_validate_json(data)
        key, year = patient_key(enc), enc.service_end.year
        history = store.history(key, year, enc.encounter_id)
        coded = coder.code(enc, coded_at=offline.now(), history=history)
        store.record_risk(key, year, enc.encounter_id, coder.risk_codes(coded))
        return [coded.model_dump_json()]

    return offline.run(
        args.files, handle, "code", "an encounter (what `claimflow intake parse` prints)"
    )


def _read_topics(names: tuple[str, ...], wait: float) -> list[tuple[str, Any]]:
    """Every record of these topics, (topic, value) in each partition's order.

    Reads from the beginning with no consumer group, until ``wait`` seconds pass without a
    record (high watermarks are not trusted: see pipeline/broker.py).
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from pipeline.kafka import consumer_config
    from pipeline.serde import registry

    settings = Settings()
    reg = registry()
    group = f"claimflow-coding-cli-{time.time_ns()}"  # nothing is committed under it
    consumer = Consumer(consumer_config(settings.require_bootstrap(), group, settings))
    topics = {settings.topic(t): t for t in names}
    meta = consumer.list_topics(timeout=10)
    consumer.assign(
        [
            TopicPartition(name, p, OFFSET_BEGINNING)
            for name in topics
            if name in meta.topics
            for p in meta.topics[name].partitions
        ]
    )
    out: list[tuple[str, Any]] = []
    quiet_since = time.monotonic()
    try:
        while time.monotonic() - quiet_since < wait:
            batch = consumer.consume(500, 0.2)
            for m in batch:
                if m.error() or (m.topic() or "") not in topics:
                    continue
                quiet_since = time.monotonic()
                topic = topics[m.topic() or ""]
                out.append((topic, reg.decode(topic, m.value() or b"")))
    finally:
        consumer.close()
    return out


def _review_records(wait: float) -> tuple[list[Any], set[str]]:
    """coding.review.v1 records and the encounter ids coding.decisions.v1 decided."""
    records = _read_topics(("coding.review.v1", "coding.decisions.v1"), wait)
    reviews = [v for t, v in records if t == "coding.review.v1"]
    decided = {v.encounter_id for t, v in records if t == "coding.decisions.v1"}
    return reviews, decided


def _code_poa(items: list[str] | None) -> list[tuple[str, str | None]]:
    """CODE[:POA] arguments as (code in upper case, POA or None)."""
    out = []
    for item in items or []:
        code, _, poa = item.partition(":")
        out.append((code.strip().upper(), poa.strip() or None))
    return out


def _publish_one(topic: str, value: Any, what: str) -> int:
    """Produce one record keyed by its encounter id, print it, exit 1 if not acknowledged."""
    from pipeline.kafka import make_producer
    from pipeline.serde import registry

    settings = Settings()
    producer = make_producer(settings.require_bootstrap(), settings)
    producer.produce(
        settings.topic(topic),
        key=value.encounter_id.encode(),
        value=registry().encode(topic, value),
    )
    if producer.flush(30):
        print(f"claimflow: the broker did not acknowledge the {what}", file=sys.stderr)
        return 1
    print(value.model_dump_json())
    return 0


def cmd_review_list(args: argparse.Namespace) -> int:
    """Encounters waiting for a coder: the latest review of each, minus those decided."""
    reviews, decided = _review_records(args.wait)
    pending: dict[str, Any] = {}
    for review in reviews:
        pending.pop(review.encounter_id, None)
        pending[review.encounter_id] = review
    shown = [r for e, r in pending.items() if e not in decided]
    if shown and not args.json:
        print(f"{'queued (UTC)':<16} {'encounter':<24} {'codes (confidence)':<40} why held")
    for r in shown:
        if args.json:
            print(r.model_dump_json())
            continue
        codes = " ".join(
            f"{d.code}({d.confidence:.2f})" if d.confidence < 1 else d.code
            for d in r.coded.diagnoses
        )
        print(f"{r.queued_at:%Y-%m-%d %H:%M} {r.encounter_id:<24} {codes:<40} {r.reasons[0]}")
        for reason in r.reasons[1:]:
            print(f"{'':<42}{'':<41} {reason}")
    print(f"{len(shown)} encounter(s) waiting for a coder", file=sys.stderr)
    return 0


def cmd_review_decide(args: argparse.Namespace) -> int:
    """Publish a coder's decision (confirm, or amend the codes) to coding.decisions.v1."""
    import getpass
    from typing import Literal

    from pipeline.models import CoderDecision, DecidedDiagnosis, event_id, utcnow

    # Only an encounter coding holds, and that no coder has decided, can be decided: a typo
    # would otherwise publish a decision nothing waits for.
    reviews, decided = _review_records(args.wait)
    if args.encounter_id not in {r.encounter_id for r in reviews}:
        print(
            f"claimflow review decide: {args.encounter_id} is not held for a coder (not on "
            "coding.review.v1); `claimflow review list` shows the held encounters",
            file=sys.stderr,
        )
        return 1
    if args.encounter_id in decided:
        print(
            f"claimflow review decide: {args.encounter_id} is already decided "
            "(on coding.decisions.v1)",
            file=sys.stderr,
        )
        return 1
    diagnoses = [DecidedDiagnosis(code=c, poa=p) for c, p in _code_poa(args.amend)]
    action: Literal["confirm", "amend"] = "confirm" if args.confirm else "amend"
    decided_at = utcnow()
    coder = args.coder or getpass.getuser()
    content = [args.encounter_id, coder, action, decided_at.isoformat()]
    content += [f"{d.code}:{d.poa or ''}" for d in diagnoses] + list(args.pcs or [])
    decision = CoderDecision(
        event_id=event_id(*content),
        encounter_id=args.encounter_id,
        coder_id=coder,
        action=action,
        diagnoses=diagnoses,
        pcs_procedures=[c.strip().upper() for c in args.pcs or []],
        note=args.note,
        decided_at=decided_at,
    )
    return _publish_one("coding.decisions.v1", decision, "decision")


def cmd_audit_list(args: argparse.Namespace) -> int:
    """Encounters in the coding audit queue that no coder has audited yet."""
    latest: dict[str, Any] = {}
    for _, audit in _read_topics(("coding.audits.v1",), args.wait):
        latest[audit.encounter_id] = audit
    shown = [a for a in latest.values() if a.status == "queued"]
    for a in shown:
        if args.json:
            print(a.model_dump_json())
            continue
        print(f"{a.queued_at:%Y-%m-%d %H:%M} {a.encounter_id:<24} {a.setting}")
        for c in a.codes:
            print(f"{'':<17}{c.code:<9}{c.source:<10}{c.rationale or ''}")
    print(f"{len(shown)} encounter(s) waiting for an audit", file=sys.stderr)
    return 0


def cmd_audit_decide(args: argparse.Namespace) -> int:
    """Publish a coder's audit (agree, or the corrected codes) to coding.audit-results.v1."""
    import getpass
    from typing import Literal

    from pipeline.models import AuditDiagnosis, AuditResult, event_id, utcnow

    diagnoses = [AuditDiagnosis(code=c, poa=p) for c, p in _code_poa(args.correct)]
    outcome: Literal["agree", "corrected"] = "agree" if args.agree else "corrected"
    audited_at = utcnow()
    auditor = args.auditor or getpass.getuser()
    content = [args.encounter_id, auditor, outcome, audited_at.isoformat()]
    result = AuditResult(
        event_id=event_id(*content, *(f"{d.code}:{d.poa or ''}" for d in diagnoses)),
        encounter_id=args.encounter_id,
        auditor_id=auditor,
        outcome=outcome,
        diagnoses=diagnoses,
        note=args.note,
        audited_at=audited_at,
    )
    return _publish_one("coding.audit-results.v1", result, "audit")


def register(sub: Any) -> None:
    """Add coding's commands to the ``claimflow`` parser."""
    q = sub.add_parser("code", help="encounters (JSON lines) -> coded encounters")
    q.add_argument("files", nargs="*", help="input files (default, or -: JSON lines on stdin)")
    q.set_defaults(func=cmd_code)
    group = sub.add_parser("review", help="coder review").add_subparsers(dest="sub", required=True)
    r = group.add_parser("list", help="encounters held for a coder (coding.review.v1, undecided)")
    r.add_argument("--json", action="store_true", help="the CodingReview records as JSON lines")
    r.add_argument("--wait", type=float, default=2.0, help="seconds of quiet that end the read")
    r.set_defaults(func=cmd_review_list)
    r = group.add_parser("decide", help="confirm or amend a held encounter")
    r.add_argument("encounter_id", help="the held encounter (see `claimflow review list`)")
    how = r.add_mutually_exclusive_group(required=True)
    how.add_argument("--confirm", action="store_true", help="publish the codes as they are")
    how.add_argument(
        "--amend", nargs="+", metavar="CODE[:POA]", help="every diagnosis, principal first"
    )
    r.add_argument("--pcs", nargs="*", metavar="CODE", help="amend: every ICD-10-PCS code")
    r.add_argument("--coder", default=None, help="coder id (default: your user name)")
    r.add_argument("--note", default=None, help="free text kept with the decision")
    r.add_argument(
        "--wait", type=float, default=2.0, help="seconds of quiet that end the read of the queue"
    )
    r.set_defaults(func=cmd_review_decide)
    group = sub.add_parser("audit", help="coding audits").add_subparsers(dest="sub", required=True)
    r = group.add_parser("list", help="encounters in the audit queue (coding.audits.v1)")
    r.add_argument("--json", action="store_true", help="the CodingAudit records as JSON lines")
    r.add_argument("--wait", type=float, default=2.0, help="seconds of quiet that end the read")
    r.set_defaults(func=cmd_audit_list)
    r = group.add_parser("decide", help="agree with an audited encounter's codes, or correct them")
    r.add_argument("encounter_id", help="the audited encounter (see `claimflow audit list`)")
    how = r.add_mutually_exclusive_group(required=True)
    how.add_argument("--agree", action="store_true", help="every code is right")
    how.add_argument(
        "--correct", nargs="+", metavar="CODE[:POA]", help="every diagnosis, principal first"
    )
    r.add_argument("--auditor", default=None, help="auditor id (default: your user name)")
    r.add_argument("--note", default=None, help="free text kept with the audit")
    r.set_defaults(func=cmd_audit_decide)
