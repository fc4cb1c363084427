"""A store's savepoint (``BatchStore.atomic``; ``ChangelogStore`` and ``AuditStore`` forget a
failed input's change records or accuracy) is one object with ``__enter__``/``__exit__``: the
nested generators it replaced are kept here as the judge. Both must send SQLite the same
statements and leave the same rows, change records and accuracy, for inputs that succeed,
fail, fail inside another, and whose savepoint cannot be released."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from pipeline.state import BatchStore, ChangelogStore
from services.coding.audit import AuditStore

_SCHEMA = "CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT);"


class Logged(ChangelogStore):
    def put(self, k: str, v: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (k, v))
        self.log_change(k, v.encode())


class Plain(BatchStore):
    def put(self, k: str, v: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (k, v))


class Forgetful(Logged):
    """Keeps a failed input's change records: what the comparison must see."""

    def input_undone(self, mark: int) -> None:
        pass


class Audits(AuditStore):
    """The audit store, which forgets its accuracy when an input fails, with a kv table."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.db.executescript(_SCHEMA)
        self.forgot: list[bool] = []

    def put(self, k: str, v: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (k, v))
        self._accuracy["category"] = []


@contextmanager
def generator_audit_atomic(store: AuditStore) -> Iterator[None]:
    """``AuditStore.atomic`` as it was written, around ``BatchStore.atomic``'s generator."""
    try:
        with generator_atomic(store):
            yield
    except BaseException:
        store._accuracy.clear()
        raise


@contextmanager
def generator_atomic(store: BatchStore) -> Iterator[None]:
    """``BatchStore.atomic`` as it was written, a generator."""
    if not store.db.in_transaction:
        store.db.execute("BEGIN")
    store.db.execute("SAVEPOINT one_input")
    try:
        yield
    except BaseException:
        store.db.execute("ROLLBACK TO one_input")
        store.db.execute("RELEASE one_input")
        raise
    store.db.execute("RELEASE one_input")


@contextmanager
def generator_logged_atomic(store: ChangelogStore) -> Iterator[None]:
    """``ChangelogStore.atomic`` as it was written, around the generator above."""
    mark = len(store._changes)
    try:
        with generator_atomic(store):
            yield
    except BaseException:
        del store._changes[mark:]
        raise


Atomic = Callable[[Any], AbstractContextManager[None]]


def scenario(store: Any, atomic: Atomic) -> list[str]:
    """Inputs that succeed and fail, nested, and one whose savepoint is gone at release;
    the exceptions seen, by type and message."""
    seen: list[str] = []

    def attempt(body: Callable[[], None]) -> None:
        try:
            with atomic(store):
                body()
        except Exception as exc:  # noqa: BLE001 - what each input raised is compared
            seen.append(f"{type(exc).__name__}: {exc}")
        if isinstance(store, AuditStore):  # what it still knows of the accuracy
            seen.append(f"accuracy kept: {bool(store._accuracy)}")

    def fails() -> None:
        store.put("b", "2")
        raise ValueError("the input fails")

    def inner_fails() -> None:
        store.put("c", "3")
        attempt(fails)
        store.put("e", "5")

    def released_early() -> None:  # the savepoint is gone: RELEASE fails after the body
        store.put("f", "6")
        store.db.execute("RELEASE one_input")

    def released_then_fails() -> None:  # ROLLBACK TO fails, after the body failed
        store.put("g", "7")
        store.db.execute("RELEASE one_input")
        raise KeyError("after the release")

    attempt(lambda: store.put("a", "1"))
    attempt(fails)
    attempt(inner_fails)
    store.commit()
    attempt(released_early)
    attempt(lambda: store.put("h", "8"))
    store.commit()
    attempt(released_then_fails)
    attempt(lambda: store.put("i", "9"))
    return seen


def traced(atomic: Atomic, store: Any = None) -> tuple[list[str], list[str], list[Any], list[Any]]:
    store = store or Logged(":memory:", _SCHEMA)
    statements: list[str] = []
    store.db.set_trace_callback(statements.append)
    seen = scenario(store, atomic)
    store.db.set_trace_callback(None)
    store.commit()
    rows = store.db.execute("SELECT * FROM kv ORDER BY k").fetchall()
    changes = store.take_changes() if isinstance(store, ChangelogStore) else []
    return statements, seen, rows, changes


def test_changelog_savepoint_is_the_generators() -> None:
    ours = traced(ChangelogStore.atomic)
    theirs = traced(generator_logged_atomic)
    assert ours == theirs
    statements, seen, rows, changes = ours
    assert "ROLLBACK TO one_input" in statements
    assert any(s.startswith("OperationalError") for s in seen)  # a release that failed
    assert any(s.startswith("ValueError") for s in seen)
    assert ("a", "1") in rows and ("b", "2") not in rows


def test_batch_savepoint_is_the_generators() -> None:
    ours = traced(BatchStore.atomic, Plain(":memory:", _SCHEMA))
    theirs = traced(generator_atomic, Plain(":memory:", _SCHEMA))
    assert ours == theirs
    assert "ROLLBACK TO one_input" in ours[0]


def test_audit_savepoint_is_the_generators() -> None:
    ours = traced(AuditStore.atomic, Audits())
    theirs = traced(generator_audit_atomic, Audits())
    assert ours == theirs
    assert "accuracy kept: False" in ours[1] and "accuracy kept: True" in ours[1]


def test_the_comparison_sees_a_difference() -> None:
    forgetful = traced(ChangelogStore.atomic, Forgetful(":memory:", _SCHEMA))
    assert forgetful != traced(generator_logged_atomic)
    assert traced(AuditStore.atomic, Audits()) != traced(generator_atomic, Audits())


def test_a_failure_opening_the_transaction_is_raised() -> None:
    store = Logged(":memory:", _SCHEMA)
    store.db.close()
    for atomic in (ChangelogStore.atomic, generator_logged_atomic):
        with pytest.raises(sqlite3.ProgrammingError), atomic(store):
            store.put("x", "1")


def _sqlite_temp_files() -> list[str]:
    """The files SQLite opened as temporary (``etilqs_*``, unlinked once open) that this
    process holds now."""
    held = []
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if "etilqs_" in target:
                held.append(target)
    return held


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to list open files")
@pytest.mark.parametrize("kind", [Plain, Logged])
def test_a_large_input_keeps_its_undo_pages_in_memory(tmp_path: Path, kind: type) -> None:
    """An input that changes more than 64 KiB of pages: SQLite's undo copies of them (the
    savepoint's statement journal, what the rows held: PHI) stay in memory, not in a
    temporary file outside the state folder. With SQLite's default they went to one in the
    system's temporary folder (the remittance ledger's, in the pipeline benchmark with
    history)."""
    store = kind(tmp_path / "s.sqlite3", _SCHEMA)
    try:
        store.db.executemany(
            "INSERT INTO kv VALUES (?, ?)", [(f"{i:06d}", "x" * 500) for i in range(2000)]
        )
        store.commit()
        before = _sqlite_temp_files()
        with store.atomic():
            store.db.execute("UPDATE kv SET v = 'y' || substr(v, 2)")  # ~1 MB of pages
            during = _sqlite_temp_files()
        store.commit()
        assert during == before
        assert store.db.execute("SELECT count(*) FROM kv WHERE v LIKE 'y%'").fetchone() == (2000,)
    finally:
        store.close()
