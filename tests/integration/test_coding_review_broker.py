"""The coding service on the real broker: doubtful encounters are held until a coder decides."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from unit.factories import dx, encounter, service  # tests/ is on the path (pyproject)

from pipeline import cli
from pipeline.kafka import ensure_topics, make_producer
from pipeline.serde import registry
from pipeline.settings import Settings
from pipeline.stage import Runner
from services.coding.app import CodingStage
from services.coding.domain import Coder
from services.coding.review import ReviewStore
from services.refdata.codesets import CodeSets

pytestmark = pytest.mark.broker
REG = registry()


class Reader:
    """Reads a topic from the beginning, keeping what it has seen between calls."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "reader-" + topic,
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 100,
            }
        )
        md = self.consumer.list_topics(topic, timeout=5)
        self.consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.topics[topic].partitions]
        )
        self.seen: list = []

    def wait(self, expect: int, timeout: float = 30) -> list:
        deadline = time.monotonic() + timeout
        while len(self.seen) < expect and time.monotonic() < deadline:
            self.seen += [m for m in self.consumer.consume(100, 0.2) if not m.error()]
        return self.seen

    def close(self) -> None:
        self.consumer.close()


def test_held_until_decided_then_coded(
    bootstrap: str,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(topic_prefix=prefix, group_prefix=prefix, state_dir=tmp_path)
    ensure_topics(bootstrap, settings, REG)
    clean = encounter(encounter_id="ENC-CLEAN")
    doubtful = encounter(
        encounter_id="ENC-HELD",
        diagnoses=[dx("E11", primary=True), dx("I10")],
        services=[service("99213", dx_refs=["E11", "I10"])],
    )
    producer = make_producer(bootstrap, settings)
    for enc in (clean, doubtful):
        producer.produce(
            settings.topic("encounters.collected.v1"),
            key=enc.encounter_id,
            value=REG.encode("encounters.collected.v1", enc),
        )
    assert producer.flush(10) == 0

    store = ReviewStore(tmp_path / "coding-review.sqlite3")
    runner = Runner(CodingStage(Coder(CodeSets.load(None)), store), settings, bootstrap)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    coded = Reader(bootstrap, settings.topic("encounters.coded.v1"))
    reviews = Reader(bootstrap, settings.topic("coding.review.v1"))
    try:
        (review,) = reviews.wait(1)
        assert review.key() == b"ENC-HELD"
        got = coded.wait(2, timeout=5)  # only the clean one may arrive
        assert [m.key() for m in got] == [b"ENC-CLEAN"]

        # The coder's view and answer, through the CLI.
        monkeypatch.setenv("CLAIMFLOW_BOOTSTRAP_SERVERS", bootstrap)
        monkeypatch.setenv("CLAIMFLOW_TOPIC_PREFIX", prefix)
        capsys.readouterr()
        assert cli.main(["review", "list", "--json", "--wait", "1"]) == 0
        pending = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [p["encounter_id"] for p in pending] == ["ENC-HELD"]
        assert pending[0]["reasons"][0].startswith("diagnoses[0]: 'E11' is an ICD-10-CM header")
        # A typo is an error, not a decision nothing waits for.
        assert cli.main(["review", "decide", "ENC-HLED", "--confirm", "--wait", "1"]) == 1
        assert "ENC-HLED is not held for a coder" in capsys.readouterr().err
        assert cli.main(["review", "decide", "ENC-HELD", "--amend", "E11.65", "I10"]) == 0
        got = coded.wait(2)
        assert cli.main(["review", "decide", "ENC-HELD", "--confirm", "--wait", "1"]) == 1
        assert "ENC-HELD is already decided" in capsys.readouterr().err
    finally:
        runner.stopping.set()
        thread.join(15)
        coded.close()
        reviews.close()
    released = REG.decode("encounters.coded.v1", got[-1].value())
    assert released.encounter_id == "ENC-HELD"  # type: ignore[attr-defined]
    assert [d.code for d in released.diagnoses] == ["E1165", "I10"]  # type: ignore[attr-defined]
    assert released.review_reasons == []  # type: ignore[attr-defined]
    reopened = ReviewStore(tmp_path / "coding-review.sqlite3")
    assert reopened.held_count() == 0 and reopened.decision("ENC-HELD") is not None
    reopened.close()
