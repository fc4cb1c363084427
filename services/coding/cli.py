"""Coding's commands: ``claimflow code`` offline, and the coder review queue
(``review list``, ``review decide``) on the cluster."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from pipeline import offline
from pipeline.settings import Settings


def cmd_code(args: argparse.Namespace) -> int:
    from pipeline.models import Encounter
    from services.coding.app import coding_settings
    from services.coding.domain import Coder
    from services.coding.review import ReviewStore, patient_key

    settings = coding_settings(Settings())
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


def _review_records(wait: float) -> tuple[list[Any], set[str]]:
    """coding.review.v1 records and the encounter ids coding.decisions.v1 decided.

    Reads both topics from the beginning with no consumer group, until ``wait`` seconds
    pass without a record (high watermarks are not trusted: see pipeline/broker.py).
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from pipeline.kafka import consumer_config
    from pipeline.serde import registry

    settings = Settings()
    reg = registry()
    group = f"claimflow-review-cli-{time.time_ns()}"  # nothing is committed under it
    consumer = Consumer(consumer_config(settings.require_bootstrap(), group, settings))
    topics = {settings.topic(t): t for t in ("coding.review.v1", "coding.decisions.v1")}
    meta = consumer.list_topics(timeout=10)
    consumer.assign(
        [
            TopicPartition(name, p, OFFSET_BEGINNING)
            for name in topics
            if name in meta.topics
            for p in meta.topics[name].partitions
        ]
    )
    reviews: list[Any] = []
    decided: set[str] = set()
    quiet_since = time.monotonic()
    try:
        while time.monotonic() - quiet_since < wait:
            batch = consumer.consume(500, 0.2)
            for m in batch:
                if m.error() or (m.topic() or "") not in topics:
                    continue
                quiet_since = time.monotonic()
                topic = topics[m.topic() or ""]
                value = reg.decode(topic, m.value() or b"")
                if topic == "coding.review.v1":
                    reviews.append(value)
                else:
                    decided.add(value.encounter_id)  # type: ignore[attr-defined]
    finally:
        consumer.close()
    return reviews, decided


def cmd_review_list(args: argparse.Namespace) -> int:
    """Encounters waiting for a coder: the latest review of each, minus those decided."""
    reviews, decided = _review_records(args.wait)
    pending: dict[str, Any] = {}
    for review in reviews:
        pending.pop(review.encounter_id, None)
        pending[review.encounter_id] = review
    shown = [r for e, r in pending.items() if e not in decided]
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

    from pipeline.kafka import make_producer
    from pipeline.models import CoderDecision, DecidedDiagnosis, event_id, utcnow
    from pipeline.serde import registry

    diagnoses = []
    for item in args.amend or []:
        code, _, poa = item.partition(":")
        diagnoses.append(DecidedDiagnosis(code=code.strip().upper(), poa=poa.strip() or None))
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
    settings = Settings()
    producer = make_producer(settings.require_bootstrap(), settings)
    producer.produce(
        settings.topic("coding.decisions.v1"),
        key=decision.encounter_id.encode(),
        value=registry().encode("coding.decisions.v1", decision),
    )
    if producer.flush(30):
        print("claimflow: the broker did not acknowledge the decision", file=sys.stderr)
        return 1
    print(decision.model_dump_json())
    return 0


def register(sub: Any) -> None:
    """Add coding's commands to the ``claimflow`` parser."""
    q = sub.add_parser("code", help="encounters (JSON lines) -> coded encounters")
    q.add_argument("files", nargs="*")
    q.set_defaults(func=cmd_code)
    group = sub.add_parser("review", help="coder review").add_subparsers(dest="sub", required=True)
    r = group.add_parser("list", help="encounters held for a coder (coding.review.v1, undecided)")
    r.add_argument("--json", action="store_true", help="the CodingReview records as JSON lines")
    r.add_argument("--wait", type=float, default=2.0, help="seconds of quiet that end the read")
    r.set_defaults(func=cmd_review_list)
    r = group.add_parser("decide", help="confirm or amend a held encounter")
    r.add_argument("encounter_id")
    how = r.add_mutually_exclusive_group(required=True)
    how.add_argument("--confirm", action="store_true", help="publish the codes as they are")
    how.add_argument(
        "--amend", nargs="+", metavar="CODE[:POA]", help="every diagnosis, principal first"
    )
    r.add_argument("--pcs", nargs="*", metavar="CODE", help="amend: every ICD-10-PCS code")
    r.add_argument("--coder", default=None, help="coder id (default: your user name)")
    r.add_argument("--note", default=None)
    r.set_defaults(func=cmd_review_decide)
