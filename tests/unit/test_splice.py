"""Records that carry an input unchanged are written with the input's bytes (``Stage.embeds``,
``serde.Splicer``): coding's coded encounters (to coding.by-patient.v1, then to
encounters.coded.v1) and reviews embed the collected encounter, validation's verdicts the
coded encounter. The spliced bytes must be the bytes the record encodes to field by field.

Differential: every encounter of the offline chain and of both simulator mixes through the
real coding and validation stages, as the runner decodes and encodes them (coding's records
read back from coding.by-patient.v1 included), spliced bytes == normal bytes, and each
splice really happened. And what must not splice: a changed embedded record (in place:
``SpliceMismatch`` in the verification mode the suite runs in), an equal copy, a record
written with an older schema version.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import fastavro
import pytest
import sim_corpus
from confluent_kafka import Message

from bench.chain import offline_chain
from pipeline.models import CodedEncounter, Encounter, ValidatedEncounter
from pipeline.serde import (
    HEADER_LEN,
    MAGIC,
    VERIFY_SPLICE_ENV,
    Datum,
    SpliceMismatch,
    Splicer,
    binary_form,
    registry,
)
from pipeline.settings import Settings
from pipeline.stage import Incoming, Out, Runner
from services.coding.app import CodingStage, partitioned_risk
from services.coding.review import BY_PATIENT, CODED, ReviewStore
from services.validation.app import ValidationStage, partitioned_history

REG = registry()
PREFIX = "t."
COLLECTED = "encounters.collected.v1"
REVIEW = "coding.review.v1"
VALIDATED = "encounters.validated.v1"
VALIDATION_BY_PATIENT = "validation.by-patient.v1"


def corpus() -> dict[str, tuple[Encounter, ...]]:
    chain = tuple(offline_chain(40, seed=11)[COLLECTED])
    return {"chain": chain, **{mix: sim_corpus.encounters(mix) for mix in sim_corpus.MIXES}}


def message(topic: str, offset: int, key: str, value: bytes, partition: int = 0) -> Message:
    return Message(
        topic=PREFIX + topic,
        partition=partition,
        offset=offset,
        key=key.encode(),
        value=value,
        timestamp=(1, 1_700_000_000_000 + offset),
    )


def batches(messages: list[Message], size: int = 50) -> Iterator[list[Message]]:
    for n in range(0, len(messages), size):
        yield messages[n : n + size]


class Differential:
    """Encodes a runner's outputs as ``_produce`` does, beside the normal encode."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.spliced: Counter[str] = Counter()
        self.outputs: Counter[str] = Counter()
        #: Outputs that go on as the bytes read (coding's unchanged by-patient record).
        self.forwarded: Counter[str] = Counter()

    def run(self, batch: list[Message]) -> list[tuple[Out, bytes]]:
        outs, _ = self.runner.process(batch)
        done = []
        for out in outs:
            assert out.value is not None, out.topic
            if out.raw is not None:
                assert out.raw == REG.encode(out.topic, out.value), out.topic
                self.outputs[out.topic] += 1
                self.forwarded[out.topic] += 1
                done.append((out, out.raw))
                continue
            spliced, datum = self.runner._encode(out)
            assert spliced == REG.encode(out.topic, out.value), out.topic
            self.outputs[out.topic] += 1
            if datum is not None:
                self.spliced[out.topic] += 1
            done.append((out, self.runner._encoded(out)))  # as produced (read-back kept)
        self.runner._datums = {}  # what ``_produce`` does once the batch is encoded
        return done


def coding(tmp_path: Path) -> Runner:
    risk = partitioned_risk(tmp_path / "risk")
    for partition in range(3):
        risk.open(partition)
    stage = CodingStage(sim_corpus.coder(), ReviewStore(tmp_path / "review.sqlite3"), risk=risk)
    return Runner(stage, Settings(topic_prefix=PREFIX, state_dir=tmp_path), "localhost:1")


def validation(tmp_path: Path) -> Runner:
    history = partitioned_history(tmp_path / "history")
    for partition in range(3):
        history.open(partition)
    stage = ValidationStage(sim_corpus.codesets(), history=history)
    return Runner(stage, Settings(topic_prefix=PREFIX, state_dir=tmp_path), "localhost:1")


def through_coding(runner: Runner, encounters: Iterable[Encounter]) -> Differential:
    diff = Differential(runner)
    collected = [
        message(COLLECTED, i, enc.encounter_id, REG.encode(COLLECTED, enc))
        for i, enc in enumerate(encounters)
    ]
    read_back = []
    for batch in batches(collected):
        for out, raw in diff.run(batch):
            if out.topic == BY_PATIENT:
                read_back.append(message(BY_PATIENT, len(read_back), out.key, raw))
    for batch in batches(read_back):
        diff.run(batch)
    return diff


@pytest.mark.parametrize("name", ["chain", *sim_corpus.MIXES])
def test_coding_and_validation_write_the_same_bytes_spliced(name: str, tmp_path: Path) -> None:
    encounters = corpus()[name]
    code = through_coding(coding(tmp_path / "coding"), encounters)
    runner = coding(tmp_path / "coding-again")
    coded: list[Message] = []
    for batch in batches(
        [
            message(COLLECTED, i, enc.encounter_id, REG.encode(COLLECTED, enc))
            for i, enc in enumerate(encounters)
        ]
    ):
        outs, _ = runner.process(batch)
        for out in outs:
            if out.topic == BY_PATIENT:
                raw = runner._encoded(out)
                read, _ = runner.process([message(BY_PATIENT, len(coded), out.key, raw)])
                coded += [
                    message(VALIDATION_BY_PATIENT, len(coded), o.key, runner._encoded(o))
                    for o in read
                    if o.topic == CODED
                ]
    # Every encounter is published (by patient, then coded) or sent to review.
    assert code.outputs[BY_PATIENT] + code.outputs[REVIEW] >= len(encounters) - 2
    assert code.spliced[BY_PATIENT] == code.outputs[BY_PATIENT] > 0
    # a coded encounter the risk step did not change goes on as the by-patient bytes read
    assert code.spliced[CODED] + code.forwarded[CODED] == code.outputs[CODED]
    assert code.outputs[CODED] == code.outputs[BY_PATIENT]
    assert code.forwarded[CODED] > 0 and code.spliced[CODED] > 0
    assert code.spliced[REVIEW] == code.outputs[REVIEW]
    check = Differential(validation(tmp_path / "validation"))
    for batch in batches(coded):
        check.run(batch)
    assert check.spliced[VALIDATED] == check.outputs[VALIDATED] == len(coded) > 0


def test_the_simulator_mixes_send_some_encounters_to_review(tmp_path: Path) -> None:
    # So that the review path above is spliced on real records, not only counted as zero.
    reviews = sum(
        through_coding(coding(tmp_path / mix), sim_corpus.encounters(mix)).spliced[REVIEW]
        for mix in sim_corpus.MIXES
    )
    assert reviews > 0


def test_a_note_taken_off_is_a_changed_encounter_and_is_not_spliced(tmp_path: Path) -> None:
    # coding.by-patient.v1 and encounters.coded.v1 carry no note: the encounter is a copy.
    encounters = [
        e.model_copy(update={"note_text": "Patient seen for follow-up of hypertension."})
        for e in sim_corpus.encounters("office")[:20]
    ]
    code = through_coding(coding(tmp_path), encounters)
    assert code.outputs[BY_PATIENT] > 0 and code.spliced[BY_PATIENT] == 0
    assert code.spliced[CODED] == 0
    assert code.spliced[REVIEW] == code.outputs[REVIEW]  # the review keeps the note


class MutatesInPlace(ValidationStage):
    """A stage that changes the coded encounter it passes on, in place (a list inside it)."""

    def handle(self, msg: Incoming) -> Iterable[Out]:
        outs = list(super().handle(msg))
        msg.value.review_reasons.append("changed after it was read")
        return outs


def coded_messages(n: int = 10) -> list[Message]:
    values = sim_corpus.coded("office")[:n]
    return [
        message(VALIDATION_BY_PATIENT, i, c.encounter_id, REG.encode(CODED, c))
        for i, c in enumerate(values)
    ]


def test_an_embedded_record_changed_in_place_fails_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    history = partitioned_history(tmp_path)
    history.open(0)
    stage = MutatesInPlace(sim_corpus.codesets(), history=history)
    runner = Runner(stage, Settings(topic_prefix=PREFIX, state_dir=tmp_path), "localhost:1")
    outs, _ = runner.process(coded_messages())
    assert outs
    with pytest.raises(SpliceMismatch, match="changed after it was read"):
        runner._encode(outs[0])
    # Without the verification the old bytes would go out: what the mode is there for.
    monkeypatch.setenv(VERIFY_SPLICE_ENV, "0")
    unverified = Splicer(REG, VALIDATED, ("coded",))
    spliced = unverified.encode(outs[0].value, runner._datums)
    assert spliced is not None
    assert spliced[0] != REG.encode(VALIDATED, outs[0].value)


def test_the_suite_runs_with_the_verification_on() -> None:
    assert REG.splicer(VALIDATED, ("coded",)).verify


def test_an_equal_copy_is_not_spliced(tmp_path: Path) -> None:
    runner = validation(tmp_path)
    outs, _ = runner.process(coded_messages(3))
    for out in outs:
        assert isinstance(out.value, ValidatedEncounter)
        copy = out.value.model_copy(update={"coded": out.value.coded.model_copy()})
        assert copy == out.value
        assert runner._encode(out)[1] is not None
        assert runner._encode(Out(out.topic, out.key, copy))[1] is None


def written_with_v1(coded: CodedEncounter) -> bytes | None:
    """``coded`` as a producer of encounters.coded.v1 schema v1 wrote it (None when v1
    cannot carry it: a service line without a code, which v2 allows)."""
    v1 = REG.versions[CODED][0]
    assert v1.version == 1
    buf = io.BytesIO()
    buf.write(MAGIC + v1.fingerprint)
    try:
        fastavro.schemaless_writer(buf, v1.parsed, coded.model_dump())
    except (TypeError, ValueError):
        return None
    return buf.getvalue()


def test_a_record_written_with_an_older_schema_is_encoded_anew(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = validation(tmp_path)
    old_records = [(c, raw) for c in sim_corpus.coded("office") if (raw := written_with_v1(c))]
    batch = [
        message(VALIDATION_BY_PATIENT, i, c.encounter_id, raw)
        for i, (c, raw) in enumerate(old_records[:10])
    ]
    outs, _ = runner.process(batch)
    assert len(outs) == len(batch) == 10
    splicer = REG.splicer(VALIDATED, ("coded",))
    monkeypatch.setenv(VERIFY_SPLICE_ENV, "0")
    unverified = Splicer(REG, VALIDATED, ("coded",))
    for out in outs:
        data, datum = runner._encode(out)
        assert datum is None
        assert data == REG.encode(VALIDATED, out.value)
        # Its bytes are another layout: spliced anyway, the record would differ.
        assert isinstance(out.value, ValidatedEncounter)
        old = runner._datums[id(out.value.coded)]
        assert old.form != splicer.form
        forced = Datum(old.value, splicer.form, old.data)
        bad = unverified.encode(out.value, {id(old.value): forced})
        assert bad is not None and bad[0] != data


def test_the_binary_form_tells_logical_types_apart_and_ignores_docs() -> None:
    millis = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}],
    }
    micros = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}}],
    }
    documented = {**millis, "doc": "when", "fields": [{**millis["fields"][0], "doc": "at"}]}
    assert binary_form(millis) != binary_form(micros)
    assert binary_form(millis) == binary_form(documented)
    assert binary_form(millis, "org.x") == binary_form({**millis, "namespace": "org.x"})
    assert binary_form(millis, "org.x") != binary_form(millis, "org.y")


def test_only_records_a_stage_wrote_are_kept_with_their_bytes() -> None:
    value: Any = object()
    raw = REG.encode(COLLECTED, sim_corpus.encounters("office")[0])
    assert REG.datum(COLLECTED, raw, value) is not None
    assert REG.datum(COLLECTED, raw[:2] + b"\0" * 8 + raw[HEADER_LEN:], value) is None
    assert not REG.topics["coding.decisions.v1"].trusted  # an edge: validated, maybe normalised
