"""The remittance stage on the real broker: postings, the denial queue, and exceptions for
a payment whose claim never arrives (after the grace period) and for an unbalanced file."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.bench_remittance import WHEN, make_835, make_claims
from pipeline.cli import main as cli
from pipeline.kafka import ensure_topics, make_producer
from pipeline.models import PayerFile, event_id
from pipeline.serde import registry
from pipeline.settings import Settings
from pipeline.stage import Runner
from pipeline.tracker import Tracker
from services.remittance.app import RemittanceOptions, RemittanceStage, partitioned_ledgers
from services.remittance.era import parse_835_transactions
from services.remittance.ledger import Ledger

pytestmark = pytest.mark.broker
REG = registry()
PAYER = "BENCHPAYER"


def payer_file(file_id: str, body: bytes) -> PayerFile:
    return PayerFile(
        event_id=event_id(PAYER, file_id),
        payer_id=PAYER,
        file_id=file_id,
        kind="835",
        body=body,
        received_at=WHEN,
    )


def wait_for(tracker: Tracker, done: Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tracker.poll(timeout=0.2)
        if done():
            return True
    return False


def test_remittance_posts_queues_denials_and_holds_what_cannot_be_posted(
    bootstrap: str,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(topic_prefix=prefix, group_prefix=prefix)
    ensure_topics(bootstrap, settings, REG)
    claims = make_claims(43)
    known, late, unbalanced = claims[:40], claims[40], claims[41]
    never = claims[42]  # its payment arrives; the claim never does
    rng = random.Random(7)
    paid_text = make_835([c.claim_id for c in known], 1, rng)
    expected_denials = sum(
        c.status_code == "4" or any(a.reason == "97" for _, a in c.all_adjustments())
        for r in parse_835_transactions(paid_text)
        for c in r.claims
    )
    assert expected_denials > 0
    orphan_text = make_835([late.claim_id, never.claim_id], 2, rng)
    bad_text = make_835([unbalanced.claim_id], 3, rng).replace("BPR*I*", "BPR*I*1", 1)

    producer = make_producer(bootstrap, settings)

    def send(topic: str, key: str, value: object) -> None:
        producer.produce(settings.topic(topic), key=key.encode(), value=REG.encode(topic, value))

    for claim in [*known, unbalanced]:
        send("claims.submitted.v1", claim.claim_id, claim)
    send("payer.inbound.v1", f"{PAYER}:F1", payer_file("F1", paid_text.encode()))
    send("payer.inbound.v1", f"{PAYER}:F2", payer_file("F2", orphan_text.encode()))
    send("payer.inbound.v1", f"{PAYER}:F3", payer_file("F3", bad_text.encode()))
    send("payer.inbound.v1", f"{PAYER}:F4", payer_file("F4", b"\x00not an 835"))
    assert producer.flush(10) == 0

    options = RemittanceOptions(unmatched_grace_s=1.0, sweep_interval_s=0.2)
    claims_stores, payer_stores = partitioned_ledgers(tmp_path)  # the live service's layout
    stage = RemittanceStage(claims=claims_stores, payers=payer_stores, options=options)
    runner = Runner(stage, settings, bootstrap)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    tracker = Tracker(bootstrap, settings)
    books = tracker.ledger
    try:
        assert wait_for(
            tracker,
            lambda: len(books.posted) == 40
            and len(books.denials) == expected_denials
            and len(books.exceptions) == 3  # the two unmatched (each in its partition's time)
            and sum(len(v) for v in books.dead.values()) == 1,
        ), (len(books.posted), books.denials, books.exceptions, dict(books.dead))
        # The unmatched payments were reported only after the grace period, one each.
        assert books.exceptions == {
            late.claim_id: "unmatched_payment",
            never.claim_id: "unmatched_payment",
            unbalanced.claim_id: "unbalanced_payment",
        }
        assert unbalanced.claim_id not in books.posted
        assert books.dead["remittance"][0]["source_topic"] == "payer.inbound.v1"
        # The late claim arrives after its payment was reported: it is posted after all.
        send("claims.submitted.v1", late.claim_id, late)
        assert producer.flush(10) == 0
        assert wait_for(tracker, lambda: late.claim_id in books.posted)
        tracker.poll(timeout=1.0)  # a repeat, if any, would show now
        summary = books.summary()
        assert summary["posted"] == 41 and summary["submitted"] == 42
        assert summary["exceptions"] == 1  # the unbalanced claim, held for a person
        assert books.records["remittance.exceptions.v1"] == 3
        assert books.duplicates("remittance.posted.v1") == 0
        # What an operator reads: the work queue and the exceptions, from the cluster.
        monkeypatch.setenv("CLAIMFLOW_BOOTSTRAP_SERVERS", bootstrap)
        monkeypatch.setenv("CLAIMFLOW_TOPIC_PREFIX", prefix)
        capsys.readouterr()
        assert cli(["denials", "list", "--json", "--wait", "1"]) == 0
        queue = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        listed = {d["claim_id"] for d in queue}
        # The late claim's item (if it has one) may reach the CLI before the tracker.
        assert set(books.denials) <= listed and listed - set(books.denials) <= {late.claim_id}
        assert cli(["remit", "exceptions", "--kind", "unbalanced_payment", "--wait", "1"]) == 0
        header, line = capsys.readouterr().out.splitlines()
        assert header.split()[:3] == ["detected", "(UTC)", "kind"]
        assert "unbalanced_payment" in line and unbalanced.claim_id in line
    finally:
        runner.stopping.set()
        thread.join(15)
        tracker.close()
    ledgers = [Ledger(p) for p in sorted((tmp_path / Ledger.CLAIMS).glob("*.sqlite3"))]
    try:
        assert len(ledgers) == REG.topics["claims.submitted.v1"].partitions
        # The payment whose claim never came still waits.
        assert sum(led.waiting_count() for led in ledgers) == 1
        assert sum(led.waiting_count(reported=True) for led in ledgers) == 1
        (late_posting,) = [p for led in ledgers for p in led.postings(late.claim_id)]
        assert late_posting.status in {"paid", "partially_paid", "denied"}
    finally:
        for led in ledgers:
            led.close()
