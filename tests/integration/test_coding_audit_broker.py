"""Coding audits on the real broker: sampled encounters reach the audit queue, an audit result
changes the accuracy metric and re-codes the billed encounter, and the failing category is
then held for a coder instead of being coded automatically."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from test_coding_review_broker import Reader
from unit.factories import dx, encounter, service

from pipeline import cli
from pipeline.kafka import ensure_topics, make_producer
from pipeline.serde import registry
from pipeline.settings import Settings
from pipeline.stage import Runner
from services.coding.app import CodingStage
from services.coding.audit import AuditPolicy, AuditStore
from services.coding.domain import Coder
from services.coding.review import ReviewStore
from services.refdata.codesets import CodeSets

pytestmark = pytest.mark.broker
REG = registry()


def accuracy(category: str) -> float | None:
    return REGISTRY.get_sample_value("claimflow_coding_audit_accuracy", {"category": category})


def test_audit_round_trip(
    bootstrap: str,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(topic_prefix=prefix, group_prefix=prefix, state_dir=tmp_path)
    ensure_topics(bootstrap, settings, REG)
    producer = make_producer(bootstrap, settings)

    def send(topic: str, key: str, value: object) -> None:
        producer.produce(settings.topic(topic), key=key, value=REG.encode(topic, value))  # type: ignore[arg-type]
        assert producer.flush(10) == 0

    def visit(eid: str, *problems: str) -> object:
        return encounter(
            encounter_id=eid,
            diagnoses=[
                dx("", system="text", display=p, primary=(i == 0)) for i, p in enumerate(problems)
            ],
            services=[service("99213", "150.00")],
        )

    policy = AuditPolicy(share=1.0, threshold=0.9, min_audits=2, window=10)
    audits = AuditStore(tmp_path / "coding-audit.sqlite3", policy)
    stage = CodingStage(Coder(CodeSets.load(None)), ReviewStore(tmp_path / "r.sqlite3"), audits)
    runner = Runner(stage, settings, bootstrap)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    coded = Reader(bootstrap, settings.topic("encounters.coded.v1"))
    queue = Reader(bootstrap, settings.topic("coding.audits.v1"))
    reviews = Reader(bootstrap, settings.topic("coding.review.v1"))
    try:
        send("encounters.collected.v1", "ENC-AUD-1", visit("ENC-AUD-1", "DM2", "CKD stage 3b"))
        (billed,) = coded.wait(1)
        (queued,) = queue.wait(1)
        first = REG.decode("coding.audits.v1", queued.value())
        assert first.status == "queued" and first.billed  # type: ignore[attr-defined]
        assert [c.code for c in first.codes] == ["E1122", "N1832"]  # type: ignore[attr-defined]
        assert accuracy("N18") is None  # nothing audited yet

        # The coder sees the queue and corrects the CKD stage, through the CLI.
        monkeypatch.setenv("CLAIMFLOW_BOOTSTRAP_SERVERS", bootstrap)
        monkeypatch.setenv("CLAIMFLOW_TOPIC_PREFIX", prefix)
        capsys.readouterr()
        assert cli.main(["audit", "list", "--json", "--wait", "1"]) == 0
        waiting = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [w["encounter_id"] for w in waiting] == ["ENC-AUD-1"]
        assert cli.main(["audit", "decide", "ENC-AUD-1", "--correct", "E11.22", "N18.31"]) == 0
        scored = REG.decode("coding.audits.v1", queue.wait(2)[-1].value())
        assert scored.status == "audited"  # type: ignore[attr-defined]
        recoded = REG.decode("encounters.coded.v1", coded.wait(2)[-1].value())
        assert [d.code for d in recoded.diagnoses] == ["E1122", "N1831"]  # type: ignore[attr-defined]
        assert recoded.event_id != REG.decode("encounters.coded.v1", billed.value()).event_id  # type: ignore[attr-defined]

        # The accuracy metric moved: N18 0/2 (one wrong, one missed), E11 1/1.
        assert accuracy("N18") == 0.0 and accuracy("E11") == 1.0
        assert REGISTRY.get_sample_value("claimflow_coding_failing_categories") == 1.0

        # N18 now fails its audits: the next CKD encounter is held for a coder.
        send("encounters.collected.v1", "ENC-AUD-2", visit("ENC-AUD-2", "CKD stage 4"))
        (held,) = reviews.wait(1)
        review = REG.decode("coding.review.v1", held.value())
        assert review.encounter_id == "ENC-AUD-2"  # type: ignore[attr-defined]
        assert any(r.startswith("audit: category N18") for r in review.reasons)  # type: ignore[attr-defined]
    finally:
        runner.stopping.set()
        thread.join(15)
        for reader in (coded, queue, reviews):
            reader.close()
    reopened = AuditStore(tmp_path / "coding-audit.sqlite3", policy)
    assert set(reopened.failing()) == {"N18"}  # durable: committed with the batch
    reopened.close()
