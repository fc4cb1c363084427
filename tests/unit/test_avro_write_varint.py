"""The generated writer's varint (``avro_write._varint``) is unrolled up to 6 bytes; the loop
it replaced (``_varint_looped``) is the judge: the same bytes for every length from 1 to 10
bytes, at the edges of each length, and the bytes fastavro writes for the same long."""

from __future__ import annotations

import io
import random

import fastavro

from pipeline.avro_write import _long, _varint, _varint_looped


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
