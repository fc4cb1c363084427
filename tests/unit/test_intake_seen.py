"""Intake's set of messages already read: the in-memory bits never change an answer.

The judge is the table itself: a message was seen when it waits in the batch or a row holds
its source id and digest. The bits are made small here, so that many digests share bits
(lookups that the table must answer), and so that they fill up and are read again.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path
from random import Random

import pytest

from services.intake import seen as seen_module
from services.intake.seen import SeenMessages


def _in_table(db: sqlite3.Connection, source_id: str, digest: str) -> bool:
    query = "SELECT 1 FROM seen WHERE source_id = ? AND digest = ?"
    return db.execute(query, (source_id, digest)).fetchone() is not None


def _digest(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()[:32]


@pytest.mark.parametrize("bits", [1 << 6, 1 << 12, 1 << 23])
def test_seen_agrees_with_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bits: int
) -> None:
    monkeypatch.setattr(seen_module, "_MIN_BITS", bits)
    path = tmp_path / "seen.sqlite"
    store = SeenMessages(path)
    judge = sqlite3.connect(path)
    rnd = Random(7)
    known: list[tuple[str, str]] = []
    answers = {True: 0, False: 0}
    for batch in range(60):
        pending: set[tuple[str, str]] = set()
        for _ in range(40):
            pick = rnd.random()
            if known and pick < 0.3:  # a resend
                source_id, digest = known[rnd.randrange(len(known))]
            elif known and pick < 0.45:  # a corrected message under a known id
                source_id, digest = known[rnd.randrange(len(known))][0], _digest(rnd.random())
            elif known and pick < 0.55:  # a known body under another id
                body = known[rnd.randrange(len(known))][1]
                source_id, digest = f"other-{rnd.randrange(50)}", body
            else:
                source_id, digest = f"src-{rnd.randrange(10**6)}", _digest(rnd.random())
            expected = (source_id, digest) in pending or _in_table(judge, source_id, digest)
            got = store.seen(source_id, digest)
            assert got == expected, (batch, source_id, digest)
            answers[got] += 1
            if not got:
                pending.add((source_id, digest))
                known.append((source_id, digest))
                store.add(source_id, digest, at=float(batch))
        store.commit()
        if batch % 20 == 19:  # old rows pruned: their bits stay, the table answers
            store.prune(float(batch - 10))
    assert answers[True] > 100 and answers[False] > 100
    store.close()

    reopened = SeenMessages(path)  # the bits read from the file
    for source_id, digest in known:
        assert reopened.seen(source_id, digest) == _in_table(judge, source_id, digest)
    reopened.close()
    judge.close()


def test_rows_written_by_another_connection_are_seen_from_the_next_batch(tmp_path: Path) -> None:
    path = tmp_path / "seen.sqlite"
    store = SeenMessages(path)
    assert not store.seen("a", _digest(1))
    store.add("a", _digest(1))
    store.commit()
    other = sqlite3.connect(path)
    other.execute("INSERT INTO seen VALUES (?, ?, ?)", ("b", _digest(2), time.time()))
    other.commit()
    other.close()
    assert store.seen("b", _digest(2)) and store.seen("a", _digest(1))
    assert not store.seen("c", _digest(3))
    store.close()
