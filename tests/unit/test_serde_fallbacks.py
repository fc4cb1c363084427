"""A record the generated Avro reader or writer leaves to fastavro is still decoded or
encoded the usual way, and shows: counted in claimflow_serde_fallbacks_total, the first of
each contract logged."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from factories import encounter

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
