"""A record the generated Avro reader or writer leaves to fastavro is still decoded or
encoded the usual way, and shows: counted in claimflow_serde_fallbacks_total, the first of
each contract logged."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from factories import encounter

from bench.chain import offline_chain
from pipeline import metrics
from pipeline.serde import GeneratedReader, Registry

TOPIC = "encounters.collected.v1"


def _fails(*_args: Any) -> Any:
    raise IndexError("the generated code could not read or write this")


def _count(direction: str, contract: str) -> float:
    return float(metrics.SERDE_FALLBACKS.labels(direction, contract)._value.get())


def test_a_record_the_generated_reader_cannot_read_is_decoded_the_usual_way_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reg = Registry()
    value = encounter()
    data = reg.encode(TOPIC, value)
    usual = reg.decode(TOPIC, data)
    fast = reg.generated_reader(TOPIC)
    assert fast is not None
    # Verification off: the suite's verify mode would (rightly) call this reader wrong.
    reg._fast[TOPIC] = GeneratedReader(fast.fingerprint, _fails, verify=False)
    before = _count("decode", TOPIC)
    with caplog.at_level(logging.WARNING, logger="pipeline.serde"):
        assert reg.decode(TOPIC, data) == usual == value
        assert reg.decode(TOPIC, data) == value
    assert _count("decode", TOPIC) - before == 2
    logged = [r for r in caplog.records if "generated reader" in r.getMessage()]
    assert len(logged) == 1 and TOPIC in logged[0].getMessage()


def test_a_record_the_generated_writer_leaves_to_fastavro_is_written_the_same_and_counted() -> None:
    reg = Registry()
    value = encounter()
    expected = reg.encode(TOPIC, value)
    writer = reg.writer(TOPIC)
    assert writer is not None
    writer.write_record = _fails
    writer.verify = False  # the suite's verify mode would (rightly) call this writer wrong
    before = _count("encode", writer.name)
    assert reg.encode(TOPIC, value) == expected
    assert _count("encode", writer.name) - before == 1


def test_a_splice_without_verification_writes_the_record_s_bytes_fallbacks_counted() -> None:
    # The suite verifies every splice and every generated write; unverified, a part of a
    # spliced record is written by the generated function directly, and a part it leaves
    # to fastavro is written by fastavro, counted.
    reg = Registry()
    topic, source = "encounters.coded.v1", "encounters.collected.v1"
    splicer = reg.splicer(topic, ("encounter",))
    splicer.verify = False
    parts = [part.fast for part in (*splicer.before, *splicer.after) if not part.empty]
    assert parts and all(fast is not None for fast in parts)
    for coded in offline_chain(3, seed=7)[topic]:
        inner = reg.decode(source, reg.encode(source, coded.encounter))  # type: ignore[attr-defined]
        datum = reg.datum(source, reg.encode(source, inner), inner)
        assert datum is not None
        value = coded.model_copy(update={"encounter": inner})
        for fast in parts:
            fast.verify = False  # type: ignore[union-attr]
        spliced = splicer.encode(value, {id(inner): datum})
        assert spliced is not None and spliced[0] == reg.encode(topic, value)
        failing = parts[-1]
        assert failing is not None
        written, failing.write_record = failing.write_record, _fails
        before = _count("encode", failing.name)
        spliced = splicer.encode(value, {id(inner): datum})
        assert spliced is not None and spliced[0] == reg.encode(topic, value)
        assert _count("encode", failing.name) - before == 1
        failing.write_record = written
