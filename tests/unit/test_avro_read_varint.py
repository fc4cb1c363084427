"""The generated reader's varint (``avro_read.read_long``) is unrolled; the loop it replaced
(``read_long_looped``) is the judge: the same value and position for every length from 1 to
10 bytes, at the edges of each length and of 64 bits, the same failure past 10 bytes or past
the end of the bytes, and the value fastavro reads."""

from __future__ import annotations

import io
import random

import fastavro
import pytest

from pipeline.avro_read import Unreadable, read_long, read_long_looped


def zigzag_bytes(n: int) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, "long", n)
    return buf.getvalue()


def values() -> list[int]:
    found = [0, -1, 1, 2**63 - 1, -(2**63)]
    for bits in range(1, 64):
        found += [2**bits - 1, 2**bits, -(2**bits), -(2**bits) - 1, 2 ** (bits - 1)]
    rng = random.Random(3)
    found += [rng.randrange(-(2**63), 2**63) for _ in range(5000)]
    found += [rng.randrange(-(10**13), 10**13) for _ in range(2000)]  # timestamps
    return [v for v in found if -(2**63) <= v < 2**63]


def test_unrolled_varint_reads_as_the_loop_and_as_fastavro() -> None:
    for v in values():
        raw = zigzag_bytes(v)
        for pad in (b"", b"\x81\x82"):
            data = pad + raw + b"\xff"
            assert (
                read_long(data, len(pad))
                == read_long_looped(data, len(pad))
                == (
                    v,
                    len(pad) + len(raw),
                )
            ), v
        assert fastavro.schemaless_reader(io.BytesIO(raw), "long") == v


def test_unrolled_varint_fails_as_the_loop() -> None:
    # every byte pattern of the 10th byte (64-bit wrap as fastavro keeps it), then too long
    for last in range(256):
        data = b"\xff" * 9 + bytes([last]) + b"\x00"
        try:
            expected: object = read_long_looped(data, 0)
        except Unreadable:
            expected = Unreadable
        if expected is Unreadable:
            with pytest.raises(Unreadable):
                read_long(data, 0)
        else:
            assert read_long(data, 0) == expected
    for length in range(11):  # cut short (ten bytes: too long first): both raise alike
        data = b"\x80" * length
        error = Unreadable if length == 10 else IndexError
        with pytest.raises(error):
            read_long_looped(data, 0)
        with pytest.raises(error):
            read_long(data, 0)
