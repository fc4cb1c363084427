"""The stage runner against the real embedded broker: output, dead letters, offsets."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from pipeline.errors import InputError
from pipeline.kafka import ensure_topics, make_producer
from pipeline.models import Model, PayerFile, event_id, utcnow
from pipeline.serde import registry
from pipeline.settings import Settings
from pipeline.stage import Incoming, Out, Runner, Stage
from services.validation.app import ValidationStage

pytestmark = pytest.mark.broker
REG = registry()


class EchoPayerFiles(Stage):
    """A stand-in stage: copies payer files to payer.inbound.v1 under a new file id and
    rejects 999s as domain-invalid, so the runner's routing can be checked alone."""

    name = "remittance"
    inputs = ("claims.submitted.v1",)

    def decode(self, reg, topic, raw, headers):  # type: ignore[no-untyped-def]
        return reg.decode("payer.inbound.v1", raw)

    def handle(self, msg: Incoming) -> Iterable[Out]:
        value: PayerFile = msg.value
        if value.kind == "999":
            raise InputError("kind", "999 acknowledgments are not handled by this stage")
        return [
            Out(
                "payer.inbound.v1",
                value.file_id,
                value.model_copy(update={"file_id": "x" + value.file_id}),
            )
        ]


def read_all(bootstrap: str, topic: str, expect: int, timeout: float = 20) -> list:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "reader-" + topic,
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
        }
    )
    md = c.list_topics(topic, timeout=5)
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.topics[topic].partitions])
    got, deadline = [], time.monotonic() + timeout
    while len(got) < expect and time.monotonic() < deadline:
        got += [m for m in c.consume(100, 0.2) if not m.error()]
    c.close()
    return got


def payer_file(i: int, kind: str = "835") -> PayerFile:
    return PayerFile(
        event_id=event_id("f", str(i)),
        payer_id="P1",
        file_id=f"F{i}",
        kind=kind,
        body=b"ISA*...~",
        received_at=utcnow(),
    )


def test_runner_produces_output_routes_poison_to_dlq_and_commits(
    bootstrap: str, prefix: str
) -> None:
    settings = Settings(topic_prefix=prefix, group_prefix=prefix)
    ensure_topics(bootstrap, settings, REG)
    producer = make_producer(bootstrap, settings)
    src = settings.topic("claims.submitted.v1")
    for i in range(20):
        producer.produce(src, key=f"k{i}", value=REG.encode("payer.inbound.v1", payer_file(i)))
    producer.produce(src, key="bad-bytes", value=b"{not avro")
    producer.produce(
        src, key="bad-kind", value=REG.encode("payer.inbound.v1", payer_file(99, "999"))
    )
    assert producer.flush(10) == 0

    runner = Runner(EchoPayerFiles(), settings, bootstrap)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        out = read_all(bootstrap, settings.topic("payer.inbound.v1"), 20)
        dead = read_all(bootstrap, settings.topic("dlq.remittance.v1"), 2)
    finally:
        runner.stopping.set()
        thread.join(15)
    assert sorted(REG.decode("payer.inbound.v1", m.value()).file_id for m in out) == sorted(
        f"xF{i}" for i in range(20)
    )
    letters = {m.key().decode(): REG.decode("dlq.remittance.v1", m.value()) for m in dead}
    assert set(letters) == {"bad-bytes", "bad-kind"}
    assert letters["bad-bytes"].value == b"{not avro"
    assert letters["bad-bytes"].field == "value" and "C3 01" in letters["bad-bytes"].error_message
    assert (
        letters["bad-kind"].field == "kind"
        and letters["bad-kind"].source_topic == "claims.submitted.v1"
    )
    # Offsets were committed: the group has nothing left to read from the source topic.
    c = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"{settings.group_prefix}.remittance"}
    )
    tps = c.committed([TopicPartition(src, p) for p in range(3)], timeout=10)
    c.close()
    assert sum(tp.offset for tp in tps if tp.offset >= 0) == 22


def test_topics_are_created_idempotently(bootstrap: str, prefix: str) -> None:
    settings = Settings(topic_prefix=prefix)
    first = ensure_topics(bootstrap, settings, REG)
    assert len(first) == len(REG.topics)
    assert ensure_topics(bootstrap, settings, REG) == []


class CountingValidation(ValidationStage):
    """The real validation stage, counting what the runner decoded per topic."""

    def __init__(self, history_dir: Path) -> None:
        from services.refdata.codesets import CodeSets
        from services.validation.app import partitioned_history

        super().__init__(CodeSets.load(None), history=partitioned_history(history_dir))
        self.decoded: Counter[str] = Counter()

    def decode(self, reg, topic, raw, headers):  # type: ignore[no-untyped-def]
        self.decoded[topic] += 1
        return super().decode(reg, topic, raw, headers)


def send_coded(
    bootstrap: str, settings: Settings
) -> tuple[dict[str, tuple[bytes, str, dict[str, bytes]]], bytes]:
    """12 coded encounters of 5 members to encounters.coded.v1 (every third without the
    patient-key header, as an older producer wrote it), then bytes that are not Avro and a
    record of another schema, both with the header. Returns each encounter's (bytes,
    patient key, headers) and the other record."""
    from unit.factories import coded, encounter

    from pipeline.models import Coverage
    from services.coding.app import _outs as coding_outs
    from services.validation.duplicates import patient_key

    ensure_topics(bootstrap, settings, REG)
    producer = make_producer(bootstrap, settings)
    src = settings.topic("encounters.coded.v1")
    sent: dict[str, tuple[bytes, str, dict[str, bytes]]] = {}
    for i in range(12):
        enc = encounter(
            encounter_id=f"ENC-{i}",
            coverage=Coverage(
                payer_id="00510", payer_name="BCBS AL", plan_type="BL", member_id=f"M{i % 5}"
            ),
        )
        value = coded(enc)
        (out,) = coding_outs([("encounters.coded.v1", value.encounter_id, value)])
        headers = out.headers if i % 3 else {}  # every third as an older producer wrote it
        raw = REG.encode("encounters.coded.v1", value)
        sent[value.encounter_id] = (raw, patient_key(value), headers)
        producer.produce(src, key=out.key, value=raw, headers=list(headers.items()) or None)
    header = [("claimflow-patient-key", b"0" * 32)]
    producer.produce(src, key="bad-bytes", value=b"{not avro", headers=header)
    other = REG.encode("payer.inbound.v1", payer_file(1))
    producer.produce(src, key="other-schema", value=other, headers=header)
    assert producer.flush(10) == 0
    return sent, other


def test_a_re_key_hop_forwards_records_with_the_key_header_undecoded(
    bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    """Coded encounters with coding's patient-key header go to validation.by-patient.v1
    without being decoded; those without it (older producers) are decoded and re-keyed by
    the stage; both get the same key and bytes. Bytes that are not a coded encounter go to
    the dead-letter topic from the source topic, header or not, as before."""
    settings = Settings(topic_prefix=prefix, group_prefix=prefix)
    sent, other = send_coded(bootstrap, settings)
    stage = CountingValidation(tmp_path)
    runner = Runner(stage, settings, bootstrap)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        rekeyed = read_all(bootstrap, settings.topic("validation.by-patient.v1"), 12)
        verdicts = read_all(bootstrap, settings.topic("encounters.validated.v1"), 12)
        dead = read_all(bootstrap, settings.topic("dlq.validation.v1"), 2)
    finally:
        runner.stopping.set()
        thread.join(15)
    assert len(rekeyed) == 12
    for m in rekeyed:
        value = REG.decode("validation.by-patient.v1", m.value())
        raw, key, headers = sent[value.encounter_id]
        assert m.value() == raw
        assert m.key() == key.encode()
        assert dict(m.headers() or []) == headers
    assert sorted(
        REG.decode("encounters.validated.v1", m.value()).encounter_id for m in verdicts
    ) == sorted(sent)
    # Decoded on the source topic: the 4 without a header and the 2 bad records only.
    assert stage.decoded["encounters.coded.v1"] == 6
    assert stage.decoded["validation.by-patient.v1"] == 12
    letters = {m.key().decode(): REG.decode("dlq.validation.v1", m.value()) for m in dead}
    assert set(letters) == {"bad-bytes", "other-schema"}
    assert letters["bad-bytes"].value == b"{not avro"
    assert letters["other-schema"].value == other
    assert {x.source_topic for x in letters.values()} == {"encounters.coded.v1"}


def validate_all(
    bootstrap: str, settings: Settings, tmp_path: Path, *, hop: bool = False
) -> tuple[CountingValidation, dict[str, Any], dict[str, Any], int]:
    """``send_coded`` through the real validation stage (``hop``: every re-key through its
    topic, as before in-process hops): the stage, the verdicts by encounter, the dead
    letters by key, and how many records validation.by-patient.v1 got."""
    send_coded(bootstrap, settings)
    stage = CountingValidation(tmp_path)
    runner = Runner(stage, settings, bootstrap)
    if hop:
        runner._single_partition_routes = lambda _consumer: frozenset()  # type: ignore[method-assign]
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        verdicts = read_all(bootstrap, settings.topic("encounters.validated.v1"), 12)
        dead = read_all(bootstrap, settings.topic("dlq.validation.v1"), 2)
    finally:
        runner.stopping.set()
        thread.join(15)
    rekeyed = read_all(bootstrap, settings.topic("validation.by-patient.v1"), 12, timeout=3)
    decoded = [REG.decode("encounters.validated.v1", m.value()) for m in verdicts]
    letters = {m.key().decode(): REG.decode("dlq.validation.v1", m.value()) for m in dead}
    return stage, {v.encounter_id: v for v in decoded}, letters, len(rekeyed)


def test_with_one_partition_the_re_key_hop_is_done_in_process(
    bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    """``claimflow run``'s topics have one partition: a coded encounter re-keyed by
    patient would come back to the same validation instance, so the runner hands it over
    at once instead of writing it to validation.by-patient.v1 and reading it again. The
    verdicts are those of the hop through the topic on the same topology (duplicates found
    by the same history, in the same order); the dead letters name the same records."""
    hop_settings = Settings(topic_prefix=prefix, group_prefix=prefix, partitions=1)
    _, hop, hop_dead, hop_rekeyed = validate_all(
        bootstrap, hop_settings, tmp_path / "hop", hop=True
    )
    one = Settings(topic_prefix="one" + prefix, group_prefix="one" + prefix, partitions=1)
    stage, local, local_dead, local_rekeyed = validate_all(bootstrap, one, tmp_path / "one")

    assert (hop_rekeyed, local_rekeyed) == (12, 0)  # the stage's own re-keys too
    assert sorted(local) == sorted(hop) == [f"ENC-{i}" for i in sorted(range(12), key=str)]

    def verdict(v: Any) -> dict[str, Any]:
        return v.model_dump(mode="json", exclude={"validated_at", "event_id"})

    assert {k: verdict(v) for k, v in local.items()} == {k: verdict(v) for k, v in hop.items()}
    assert any(v.outcome != "clean" for v in local.values())  # the history was consulted
    # Header records are decoded once, as the target's; the 4 without a header once as the
    # source's (then handed over as the model); the 2 bad ones as the source's.
    assert stage.decoded == {"encounters.coded.v1": 6, "validation.by-patient.v1": 8}
    assert set(local_dead) == set(hop_dead) == {"bad-bytes", "other-schema"}
    for key, letter in local_dead.items():
        assert letter.source_topic == "encounters.coded.v1"
        assert letter.source_partition == 0
        assert letter.error_class == hop_dead[key].error_class
        assert letter.source_offset == hop_dead[key].source_offset
    assert local_dead["bad-bytes"].value == b"{not avro"
    assert REG.decode("payer.inbound.v1", local_dead["other-schema"].value).file_id == "F1"


class RekeyAndReadBack(Stage):
    """Writes each coded encounter to coding.by-patient.v1 and reads it back (as coding
    does), noting what it was handed and what the runner decoded."""

    name = "coding"
    inputs = ("encounters.coded.v1", "coding.by-patient.v1")
    reread = ("coding.by-patient.v1",)

    def __init__(self) -> None:
        self.decoded: Counter[str] = Counter()
        self.written: dict[str, Model] = {}
        self.read_back: dict[str, Model] = {}

    def decode(self, reg, topic, raw, headers):  # type: ignore[no-untyped-def]
        self.decoded[topic] += 1
        return super().decode(reg, topic, raw, headers)

    def handle(self, msg: Incoming) -> Iterable[Out]:
        if msg.topic == "coding.by-patient.v1":
            self.read_back[msg.value.encounter_id] = msg.value
            return []
        value = msg.value.model_copy(update={"confidence": 0.5})  # a new model, re-encoded
        self.written[value.encounter_id] = value
        return [Out("coding.by-patient.v1", value.encounter_id, value)]


def test_a_record_read_back_is_the_model_written_not_decoded_again(
    bootstrap: str, prefix: str
) -> None:
    from unit.factories import coded, encounter

    settings = Settings(topic_prefix=prefix, group_prefix=prefix)
    ensure_topics(bootstrap, settings, REG)
    producer = make_producer(bootstrap, settings)
    values = [coded(encounter(encounter_id=f"ENC-{i}")) for i in range(8)]
    for value in values:
        producer.produce(
            settings.topic("encounters.coded.v1"),
            key=value.encounter_id,
            value=REG.encode("encounters.coded.v1", value),
        )
    # Written by another process (another instance): decoded as usual.
    other = coded(encounter(encounter_id="ENC-other"))
    producer.produce(
        settings.topic("coding.by-patient.v1"),
        key=other.encounter_id,
        value=REG.encode("coding.by-patient.v1", other),
    )
    assert producer.flush(10) == 0

    stage = RekeyAndReadBack()
    runner = Runner(stage, settings, bootstrap)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    try:
        while len(stage.read_back) < 9 and time.monotonic() < deadline:
            runner.stopping.wait(0.05)
    finally:
        runner.stopping.set()
        thread.join(15)
    assert set(stage.read_back) == {v.encounter_id for v in values} | {"ENC-other"}
    for encounter_id, value in stage.written.items():
        assert stage.read_back[encounter_id] is value
    assert stage.read_back["ENC-other"] == other
    assert stage.decoded == {"encounters.coded.v1": 8, "coding.by-patient.v1": 1}
    # What went through the topic is what a reader elsewhere decodes: the model written.
    got = read_all(bootstrap, settings.topic("coding.by-patient.v1"), 9)
    decoded = {m.key().decode(): REG.decode("coding.by-patient.v1", m.value()) for m in got}
    assert all(decoded[k] == v for k, v in stage.written.items())
