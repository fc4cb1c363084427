"""The generated writer's varint (``avro_write._varint``) is unrolled up to 6 bytes; the loop
it replaced (``_varint_looped``) is the judge: the same bytes for every length from 1 to 10
bytes, at the edges of each length, and the bytes fastavro writes for the same long. A
timestamp-millis (``timestamp_millis_bytes``) is written as ``timestamp_bytes`` writes it
(tests/unit/test_avro_write.py holds that one to fastavro), in any zone, naive or not."""

from __future__ import annotations

import io
import random
from datetime import UTC, date, datetime, timedelta, timezone

import fastavro
import pytest

from pipeline.avro_write import (
    Unwritable,
    _long,
    _varint,
    _varint_looped,
    timestamp_bytes,
    timestamp_millis_bytes,
)


def values() -> list[int]:
    found = [0, 1, 2**64 - 1]
    for bits in range(1, 64):
        found += [2**bits - 1, 2**bits, 2**bits + 1]
    rng = random.Random(5)
    found += [rng.randrange(2**64) for _ in range(3000)]
    found += [rng.randrange(2 * 10**13) for _ in range(3000)]  # timestamps, zig-zagged
    return found


def test_unrolled_varint_writes_as_the_loop() -> None:
    for n in values():
        assert _varint(n) == _varint_looped(n), n


def test_a_long_is_written_as_fastavro_writes_it() -> None:
    rng = random.Random(7)
    longs = [0, -1, 1, 2**63 - 1, -(2**63)]
    longs += [rng.randrange(-(2**63), 2**63) for _ in range(3000)]
    longs += [rng.randrange(-(10**13), 10**13) for _ in range(3000)]
    for v in longs:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, "long", v)
        assert _long(v) == buf.getvalue(), v


def test_a_timestamp_millis_is_written_as_timestamp_bytes_writes_it() -> None:
    rng = random.Random(9)
    zones = [UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=30))]
    stamps = [datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=m) for m in EDGES]
    stamps += [
        datetime(1900, 1, 1, tzinfo=UTC)
        + timedelta(microseconds=rng.randrange(300 * 365 * 86_400 * 10**6))
        for _ in range(3000)
    ]
    stamps = [s.astimezone(rng.choice(zones)) for s in stamps]
    stamps += [datetime(2026, 11, 20, 9, 30, 1, 123456), datetime(1969, 12, 31, 23, 59)]  # naive
    for stamp in stamps * 2:  # the second time, the bytes kept
        assert timestamp_millis_bytes(stamp) == timestamp_bytes(stamp, 1000), stamp
    for other in (None, "2026-11-20", date(2026, 11, 20)):
        with pytest.raises(Unwritable):
            timestamp_millis_bytes(other)


#: Milliseconds at the edges of the fast path: 2**13 (the zig-zagged value's 14 low bits),
#: 2**41 (7 bytes), and about them.
EDGES = [0, 1, -1, 8191, 8192, 8193, 2**20, 2**35, 2**41 - 1, 2**41, 2**42, -(2**41)]
