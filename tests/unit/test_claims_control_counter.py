"""``PartitionNumbers.allocate`` reads the counter once per transaction and writes its row
once per changelog window and once more before the changes are taken or committed. Judged
against the allocation it replaced (read, write and a savepoint per interchange), kept here:
the same numbers, the same change records in the same order, the same rows, through
windows, commits, a failed build and a rolled-back batch."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.claims import control
from services.claims.control import (
    LAST_NUMBER,
    ClaimRef,
    ControlNumbersExhausted,
    PartitionNumbers,
    StoredInterchange,
)


class PerAllocation(PartitionNumbers):
    """The allocation as it was: the counter read and written by each one, in a savepoint."""

    def allocate(
        self,
        claims: Any,
        *,
        payer_id: str,
        claim_type: str,
        adapter: str,
        build: Callable[[int], str],
    ) -> StoredInterchange:
        with self.atomic():
            row = self.db.execute(
                "SELECT last FROM counter WHERE block = ?", (self.partition,)
            ).fetchone()
            number = max(self.floor, (row[0] + 1) if row else self.floor)
            while not self.owns(number):
                number += 1
            if number > LAST_NUMBER:
                raise ControlNumbersExhausted("used up")
            text = build(number)
            self._store(self.partition, number, claims, (payer_id, claim_type, adapter, text))
        return StoredInterchange(number, payer_id, claim_type, adapter, text, "built", "")

    def _write_counter(self) -> None:
        """Nothing waits: every allocation wrote the counter."""


def _fail(number: int) -> str:
    raise ValueError(f"cannot write under {number}")


def script(store: PartitionNumbers) -> list[Any]:
    """Allocations, marks, change windows, commits, a failed build and a rollback; what
    each step answered."""
    seen: list[Any] = []
    n = 0

    def allocate(claims: int = 1, build: Callable[[int], str] | None = None) -> None:
        nonlocal n
        refs = []
        for _ in range(claims):
            n += 1
            refs.append(ClaimRef(f"evt-{n}", f"CLM-{n}", f"ENC-{n}"))
        try:
            stored = store.allocate(
                refs,
                payer_id="P1",
                claim_type="837P",
                adapter="file",
                build=build or (lambda number: f"ISA*{number:09d}~IEA~"),
            )
        except ValueError as exc:
            seen.append(("refused", str(exc)))
        else:
            seen.append(("allocated", stored.icn))

    allocate()
    allocate(3)
    allocate(build=_fail)
    allocate(2)
    seen.append(store.has_changes())
    seen.append(store.take_changes())
    allocate()
    store.commit()
    allocate()
    store.mark(seen[1][1], "delivered", "ok")
    seen.append(store.last_number())
    seen.append(store.take_changes())
    store.commit()
    allocate()
    seen.append(store.take_changes())
    store.rollback()  # the batch failed: its notes are back, its allocation undone
    seen.append(store.last_number())
    allocate()
    allocate(build=_fail)
    allocate()
    seen.append(store.take_changes())
    store.commit()
    seen.append(store.take_changes())
    seen.append(store.db.execute("SELECT * FROM counter").fetchall())
    seen.append(store.db.execute("SELECT * FROM interchanges ORDER BY rowid").fetchall())
    seen.append(store.db.execute("SELECT rowid, * FROM claims ORDER BY rowid").fetchall())
    return seen


@pytest.mark.parametrize("fresh", [True, False], ids=["fresh", "with-history"])
def test_the_counter_written_per_window_answers_as_per_allocation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh: bool
) -> None:
    monkeypatch.setattr(control, "utcnow", lambda: datetime(2026, 12, 5, tzinfo=UTC))
    answers = []
    for kind in (PerAllocation, PartitionNumbers):
        store = kind(tmp_path / f"{kind.__name__}.sqlite3", partition=1, partitions=3)
        if not fresh:
            store.db.execute("INSERT INTO counter VALUES (1, 100000500)")
            store.commit()
            store.take_changes()
        answers.append(script(store))
        store.close()
    assert answers[1] == answers[0]
    refused = [a for a in answers[0] if isinstance(a, tuple) and a[0] == "refused"]
    after = answers[0][answers[0].index(refused[0]) + 1]
    assert after == ("allocated", int(refused[0][1].rpartition(" ")[2]))  # not used up
