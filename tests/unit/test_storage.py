"""What counts as the state volume failing (never a dead letter), and the free-space floor."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest

from pipeline.errors import InputError, StorageUnavailable
from pipeline.stage import Incoming, dead_letter
from pipeline.state import StorageGuard, storage_failure, storage_problem


def sqlite_error(code: int, text: str) -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError(text)
    exc.sqlite_errorcode = code  # type: ignore[attr-defined]
    return exc


@pytest.mark.parametrize(
    "exc",
    [
        sqlite_error(sqlite3.SQLITE_FULL, "database or disk is full"),
        sqlite_error(sqlite3.SQLITE_IOERR_WRITE, "disk I/O error"),  # an extended code
        sqlite_error(sqlite3.SQLITE_READONLY, "attempt to write a readonly database"),
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EROFS, "Read-only file system"),
    ],
)
def test_a_failing_volume_is_recognised_and_never_becomes_a_dead_letter(exc: Exception) -> None:
    assert storage_failure(exc) is not None
    wrapped = RuntimeError("while committing the batch")
    wrapped.__cause__ = exc
    assert storage_failure(wrapped) is not None  # also when another error carries it
    msg = Incoming("t", "k", None, b"raw", {}, 0, 1, 0)
    with pytest.raises(StorageUnavailable):
        dead_letter("intake", msg, exc)


@pytest.mark.parametrize(
    "exc",
    [
        InputError("patient.birth_date", "not a date"),
        sqlite_error(sqlite3.SQLITE_CONSTRAINT, "UNIQUE constraint failed"),
        OSError(errno.ENOENT, "No such file or directory"),
        ValueError("bad"),
    ],
)
def test_other_errors_are_not_the_volume(exc: Exception) -> None:
    assert storage_failure(exc) is None
    msg = Incoming("t", "k", None, b"raw", {}, 0, 1, 0)
    assert dead_letter("intake", msg, exc).value.value == b"raw"


def test_the_floor_and_the_probe(tmp_path: Path) -> None:
    assert storage_problem(tmp_path) is None
    assert storage_problem(tmp_path / "not-yet") is None  # nothing stored there yet
    why = storage_problem(tmp_path, 1 << 62)
    assert why is not None and "CLAIMFLOW_MIN_FREE_BYTES" in why
    assert list(tmp_path.iterdir()) == []  # the probe leaves nothing behind


def test_the_guard_looks_at_most_once_per_interval(tmp_path: Path) -> None:
    now = [0.0]
    guard = StorageGuard(tmp_path, 0, interval_s=5, clock=lambda: now[0])
    assert guard.problem() is None
    guard.min_free_bytes = 1 << 62
    now[0] = 4.9
    assert guard.problem() is None  # as last looked
    now[0] = 5.0
    assert guard.problem() is not None
