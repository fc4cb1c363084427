"""Shortcuts of the generated reader (``pipeline/avro_read.py``) that tests/unit/test_avro_read.py
judges on whole corpora, held here where a corpus may not reach: a date found by the bytes of
its varint (``DATE_BYTES``), a length of two bytes by a table (``LENGTH2``), at the end of the
bytes and cut short, against fastavro; and the one fields-set shared by every instance of a
frozen model, which nothing pydantic does to one model may change for another."""

from __future__ import annotations

import contextlib
import io
import pickle
from datetime import date, timedelta

import fastavro
import pytest
from pydantic import ValidationError
from test_avro_read import pipeline_reader

from bench.chain import offline_chain
from pipeline.avro_read import difference
from pipeline.serde import registry

REG = registry()

LAST: dict[str, object] = fastavro.parse_schema(  # type: ignore[assignment]
    {
        "type": "record",
        "name": "Last",
        "namespace": "test",
        "fields": [
            {"name": "note", "type": "string"},
            {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        ],
    }
)


def dates() -> list[date]:
    """Dates whose varints take 1 to 4 bytes, at the edges of each length."""
    epoch = date(1970, 1, 1)
    found = []
    for bits in range(1, 22):
        for days in (2**bits - 1, 2**bits, -(2**bits), -(2**bits) - 1):
            with contextlib.suppress(OverflowError):  # beyond year 1 or 9999
                found.append(epoch + timedelta(days=days))
    return found


def written(value: dict[str, object]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, LAST, value)
    return buf.getvalue()


def usual_or_error(data: bytes) -> object:
    try:
        return fastavro.schemaless_reader(io.BytesIO(data), LAST)
    except Exception:  # noqa: BLE001 - fastavro's error, whatever its type
        return "error"


def generated_or_error(read: object, data: bytes) -> object:
    try:
        return read(data, 0)  # type: ignore[operator]
    except Exception:  # noqa: BLE001 - the caller then reads it the usual way
        return "error"


@pytest.mark.parametrize("length", [0, 63, 64, 65, 127, 128, 8191, 8192, 20_000])
def test_a_date_last_and_a_long_string_read_as_fastavro_reads_them(length: int) -> None:
    read = pipeline_reader(LAST)
    for day in dates():
        data = written({"note": "é" * (length // 2) + "x" * (length % 2), "day": day})
        expected = usual_or_error(data)
        # twice: the second time the date (and the length) are found by their bytes
        for _ in range(2):
            assert difference(expected, generated_or_error(read, data)) is None, day
        for cut in range(len(data) - 4, len(data)):  # the last date cut short, or the string
            assert generated_or_error(read, data[:cut]) == usual_or_error(data[:cut]) == "error"


def test_a_frozen_model_s_fields_set_is_shared_and_never_changed() -> None:
    topic = "encounters.coded.v1"
    raws = [REG.encode(topic, v) for v in offline_chain(3, seed=7)[topic]]
    a, b = (REG.decode(topic, r) for r in raws[:2])
    shared = a.__pydantic_fields_set__
    before = set(shared)
    assert b.__pydantic_fields_set__ is shared
    assert shared == set(type(a).model_fields)
    with pytest.raises(ValidationError):
        a.em_level = "99215"  # type: ignore[attr-defined]
    copied = a.model_copy(update={"em_level": "99215"})
    assert copied.__pydantic_fields_set__ is not shared
    deep = a.model_copy(deep=True)
    assert deep.__pydantic_fields_set__ is not shared
    assert pickle.loads(pickle.dumps(a)) == a
    assert shared == before
    assert b.__pydantic_fields_set__ == before


STAMP = fastavro.parse_schema(
    {
        "type": "record",
        "name": "Stamp",
        "namespace": "test",
        "fields": [{"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}],
    }
)


def test_a_timestamp_from_the_instant_kept_reads_as_fastavro_reads_it() -> None:
    read = pipeline_reader(STAMP)  # type: ignore[arg-type]
    millis = []
    for base in (2**34, 1_795_000_000_000 & ~0x1FFF, 2**40 - 8192, 2**41 - 8192):
        millis += [base + low for low in (0, 1, 63, 64, 65, 4095, 4096, 8127, 8128, 8191)]
    millis += [2**34 - 1, 2**41, -1, -(2**40), 0, 5, 10**13]  # other lengths, negative
    for at in millis * 2:  # the second time from the instant kept
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, STAMP, {"at": at})
        data = buf.getvalue()
        expected = fastavro.schemaless_reader(io.BytesIO(data), STAMP)
        assert difference(expected, read(data, 0)) is None, at
        for cut in range(len(data)):
            assert generated_or_error(read, data[:cut]) == "error"
