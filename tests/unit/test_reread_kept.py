"""The models a stage keeps for reading back its own records (``Stage.reread``): a record
delivered to a partition another instance reads is not kept, and the number kept is bounded
(``pipeline/stage.py``). With several coding instances two thirds of the by-patient records
go to other instances; keeping their models (~27 KB each) until the bound pushed them out
would hold hundreds of megabytes nobody asks for."""

from __future__ import annotations

from pathlib import Path

from confluent_kafka import Message, TopicPartition

from pipeline import stage as stage_module
from pipeline.settings import Settings
from pipeline.stage import Runner, Stage

TOPIC = "coding.by-patient.v1"


class ReadsBack(Stage):
    name = "coding"
    inputs = ("encounters.coded.v1", TOPIC)
    reread = (TOPIC,)


def runner(tmp_path: Path, prefix: str = "t.") -> Runner:
    settings = Settings(topic_prefix=prefix, group_prefix=prefix, state_dir=tmp_path)
    return Runner(ReadsBack(), settings, "localhost:1")


def delivered(topic: str, partition: int, value: bytes) -> Message:
    return Message(topic=topic, partition=partition, value=value)


def test_a_record_another_instance_reads_is_not_kept(tmp_path: Path) -> None:
    r = runner(tmp_path)
    r._owned = {("t." + TOPIC, 0), ("t.encounters.coded.v1", 0)}  # what an assignment sets
    r._remember(TOPIC, b"mine", "model-0")
    r._remember(TOPIC, b"theirs", "model-1")
    r._on_delivery(None, delivered("t." + TOPIC, 0, b"mine"))
    r._on_delivery(None, delivered("t." + TOPIC, 1, b"theirs"))
    assert r._written == {(TOPIC, b"mine"): "model-0"}


def test_a_lost_partition_is_no_longer_ours(tmp_path: Path) -> None:
    r = runner(tmp_path)
    r._owned = {("t." + TOPIC, 0), ("t." + TOPIC, 1)}
    r._on_lost(None, [TopicPartition("t." + TOPIC, 1)])
    r._remember(TOPIC, b"a", "model-a")
    r._remember(TOPIC, b"b", "model-b")
    r._on_delivery(None, delivered("t." + TOPIC, 0, b"a"))
    r._on_delivery(None, delivered("t." + TOPIC, 1, b"b"))
    assert r._written == {(TOPIC, b"a"): "model-a"}


def test_without_known_assignments_everything_is_kept_up_to_the_bound(tmp_path: Path) -> None:
    r = runner(tmp_path)
    assert r._owned is None  # no partitioned stores: the runner does not track assignments
    r._remember(TOPIC, b"x", "model-x")
    r._on_delivery(None, delivered("t." + TOPIC, 2, b"x"))
    assert r._written == {(TOPIC, b"x"): "model-x"}
    for i in range(stage_module.REREAD_KEPT + 5):
        r._remember(TOPIC, str(i).encode(), i)
    assert len(r._written) == stage_module.REREAD_KEPT
    assert (TOPIC, b"x") not in r._written  # the oldest went first
    assert r._written[(TOPIC, str(stage_module.REREAD_KEPT + 4).encode())] == (
        stage_module.REREAD_KEPT + 4
    )


def test_a_delivery_error_keeps_nothing_new_and_is_reported(tmp_path: Path) -> None:
    r = runner(tmp_path)
    r._owned = set()
    r._on_delivery("broker down", delivered("t." + TOPIC, 0, b"z"))
    assert r._delivery_errors == ["broker down"]
