"""In which order the runner sends a batch's outputs and its stores' changes.

By default the changes go first: an output implies its state is on its way. A stage that
drops a replayed input its state already holds (``outputs_before_state``: remittance,
whose ledger skips a payment posted before) gets its outputs acknowledged before any
change is sent: a crash between the two then leaves the changelog without the change, so
the restored state replays the input and its outputs come again. The other order lost
postings when remittance was killed in mid-flush: the restored ledger said "posted", the
replay posted nothing, and the postings never reached the broker (the e2e SIGKILL test
failed this way)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message

from pipeline.partitioned import PartitionedStores
from pipeline.serde import registry
from pipeline.settings import Settings
from pipeline.stage import Incoming, Out, Runner, Stage, dead_letter
from pipeline.state import ChangelogStore
from services.remittance.app import RemittanceStage

TOPIC = "intake.raw.v1"
OUT = "dlq.intake.v1"


class Noted(ChangelogStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path, "CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY);")

    def note(self, key: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO kv VALUES (?)", (key,))
        self.log_change(key, b"1")


class Noting(Stage):
    """Notes every input's key in its partition's store and sends one output for it."""

    name = "intake"  # its dead-letter topic carries the outputs
    inputs = (TOPIC,)

    def __init__(self, folder: Path, outputs_first: bool) -> None:
        self.stores = PartitionedStores("noted", TOPIC, folder, Noted)
        self.outputs_before_state = outputs_first

    def partitioned_stores(self) -> Sequence[PartitionedStores[Any]]:
        return [self.stores]

    def decode(self, registry: Any, topic: str, raw: bytes, headers: dict[str, bytes]) -> Any:
        return raw

    def handle(self, msg: Incoming) -> Iterable[Out]:
        self.stores.get(msg.partition).note(msg.key or "")
        return [dead_letter(self.name, msg, ValueError("noted"))]


class Recording:
    """A producer that notes what it is asked, in order, and acknowledges every record."""

    def __init__(self, changelog: str) -> None:
        self.changelog = changelog
        self.calls: list[str] = []
        self.pending: list[Any] = []

    def produce(self, topic: str, *_args: object, **kwargs: Any) -> None:
        self.calls.append("change" if topic == self.changelog else "output")
        self.pending.append((kwargs.get("on_delivery"), kwargs.get("partition") or 0))

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def flush(self, _timeout: float = 0) -> int:
        self.calls.append("flush")
        for n, (done, partition) in enumerate(self.pending):
            if done is not None:
                done(None, Message(topic="t", partition=partition, offset=n))
        self.pending = []
        return 0


def _batch(runner: Runner, stage: Noting) -> list[str]:
    stage.stores.open(0)
    raw = b'{"not": "a message"}'
    batch = [
        Message(topic="o." + TOPIC, partition=0, offset=i, key=f"k{i}".encode(), value=raw)
        for i in range(3)
    ]
    outs, _ = runner.process(batch)
    producer = Recording("o.intake.noted.changelog")
    runner._produce(producer, outs)
    runner._batch_done()
    return producer.calls


@pytest.mark.parametrize("outputs_first", [False, True])
def test_the_order_of_outputs_and_state(tmp_path: Path, outputs_first: bool) -> None:
    stage = Noting(tmp_path, outputs_first)
    runner = Runner(stage, Settings(topic_prefix="o.", state_dir=tmp_path), "localhost:1")
    calls = _batch(runner, stage)
    if outputs_first:
        assert calls == ["output"] * 3 + ["flush"] + ["change"] * 3 + ["flush"]
    else:
        assert calls == ["change"] * 3 + ["output"] * 3 + ["flush"]
    # Either way the store knows how far its file has the changelog, once acknowledged.
    assert stage.stores.get(0).position() == 3


def test_remittance_sends_its_outputs_before_its_ledgers_changes() -> None:
    assert RemittanceStage.outputs_before_state
    assert registry()  # the contracts load: the stage's topics are known
