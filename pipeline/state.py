"""A stage's durable state: SQLite on the service's volume, committed with the batch.

The runner's order is: handle the batch (writes go into one open transaction, each input
in its own savepoint), produce and wait for every acknowledgement, ``commit()`` this
store, then commit the consumed offsets. A crash anywhere before ``commit()`` leaves no
trace of the batch, and the replayed batch finds the state as it was; a crash after it
replays inputs whose writes are idempotent. No Kafka import: the domain uses this too.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class BatchStore:
    """Base of the stateful stages' stores: one connection, one transaction per batch."""

    def __init__(self, path: Path | str, schema: str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # One runner thread uses a store at a time, not always the thread that opened it.
        # A replay may share the live service's state folder: wait for its lock, do not fail.
        self.db = sqlite3.connect(
            str(path), isolation_level="DEFERRED", check_same_thread=False, timeout=30
        )
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(schema)
        self.db.commit()

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """All of one input's writes, or none of them (a savepoint inside the batch)."""
        # Open the batch transaction first: the RELEASE of an outermost savepoint is a
        # COMMIT, which would make this input durable before the batch's output is acked.
        if not self.db.in_transaction:
            self.db.execute("BEGIN")
        self.db.execute("SAVEPOINT one_input")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK TO one_input")
            self.db.execute("RELEASE one_input")
            raise
        self.db.execute("RELEASE one_input")

    def commit(self) -> None:
        """Make the batch's writes durable: only after its output is acknowledged."""
        self.db.commit()

    def rollback(self) -> None:
        self.db.rollback()

    def close(self) -> None:
        """Close the database (uncommitted writes are lost, as after a crash)."""
        self.db.close()
