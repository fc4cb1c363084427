"""MLLP framing under the edge's bounds, on a socket pair: frames however the bytes are
split, oversized frames refused whole or in pieces, the memory budget, the deadline."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from services.intake.edge import Budget, Cut, DeadlineReader, MllpReader, TooLarge

MSH = b"MSH|^~\\&|A|FAC|C|D|20250101||ADT^A03|%s|P|2.5.1\r"


def frame(control: bytes, size: int = 0) -> bytes:
    return b"\x0b" + MSH % control + b"x" * size + b"\x1c\r"


def reader_over(
    chunks: list[bytes], *, limit: int = 1000, budget: int = 10_000, deadline: float = 5.0,
    pause: float = 0.0,
) -> tuple[MllpReader, Budget]:  # fmt: skip
    ours, theirs = socket.socketpair()

    def send() -> None:
        try:
            for chunk in chunks:
                theirs.sendall(chunk)
                if pause:
                    time.sleep(pause)
            theirs.shutdown(socket.SHUT_WR)
        except OSError:  # the reader gave up first (busy, deadline)
            pass

    threading.Thread(target=send, daemon=True).start()
    spent = Budget(budget)
    return MllpReader(DeadlineReader(ours, 5.0, deadline), limit, spent, chunk=4096), spent


def read_all(reader: MllpReader) -> list[object]:
    out: list[object] = []
    while not isinstance(item := reader.next(), Cut):
        out.append(item)
    out.append(item)
    return out


@pytest.mark.parametrize("step", [1, 2, 7, 64, 100_000])
def test_frames_are_found_however_the_bytes_are_split(step: int) -> None:
    stream = b"junk" + frame(b"C1") + b"\r\n" + frame(b"C2", 200) + frame(b"C3")
    reader, budget = reader_over([stream[i : i + step] for i in range(0, len(stream), step)])
    items = read_all(reader)
    assert [i[:4] if isinstance(i, bytes) else i for i in items] == [
        b"MSH|", b"MSH|", b"MSH|", Cut("eof"),
    ]  # fmt: skip
    assert [b"|C1|" in items[0], b"|C2|" in items[1], b"|C3|" in items[2]] == [True] * 3
    assert len(items[1]) == len(MSH % b"C2") + 200
    assert budget.held == 0


@pytest.mark.parametrize("step", [1, 333, 100_000])
def test_a_frame_over_the_limit_is_refused_whole_or_in_pieces(step: int) -> None:
    stream = frame(b"BIG", 2000) + frame(b"OK")  # one read holds it all when unsplit
    reader, budget = reader_over(
        [stream[i : i + step] for i in range(0, len(stream), step)], budget=100_000
    )
    too_large, ok, end = read_all(reader)
    assert isinstance(too_large, TooLarge) and too_large.head.startswith(MSH % b"BIG")
    assert isinstance(ok, bytes) and b"|OK|" in ok
    assert end == Cut("eof") and budget.held == 0


def test_a_frame_the_budget_cannot_hold_cuts_the_connection_as_busy() -> None:
    reader, budget = reader_over([frame(b"B", 900)], limit=2000, budget=500)
    cut = reader.next()
    assert isinstance(cut, Cut) and cut.reason == "busy" and cut.head.startswith(b"MSH|")
    assert budget.held == 0


def test_a_frame_still_arriving_at_the_deadline_is_cut() -> None:
    started = time.monotonic()
    reader, budget = reader_over([b"\x0bMSH|"] + [b"x"] * 100, deadline=0.5, pause=0.02)
    cut = reader.next()
    assert cut == Cut("deadline", b"MSH|" + b"x" * len(cut.head[4:]))  # type: ignore[union-attr]
    assert 0.45 <= time.monotonic() - started < 1.5
    assert budget.held == 0
