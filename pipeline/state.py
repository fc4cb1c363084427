"""A stage's durable state: SQLite on the service's volume, committed with the batch.

The runner's order is: handle the batch (writes go into one open transaction, each input
in its own savepoint), produce and wait for every acknowledgement, ``commit()`` this
store, then commit the consumed offsets. A crash anywhere before ``commit()`` leaves no
trace of the batch, and the replayed batch finds the state as it was; a crash after it
replays inputs whose writes are idempotent. No Kafka import: the domain uses this too.

Stores hold PHI (names, birth dates, member ids, claims): their folders are made 0700 and
their files 0600 (``private_dir``, ``private_file``), and wider modes left by an older
version are narrowed at start-up.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Any

DIR_MODE, FILE_MODE = 0o700, 0o600
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


class StateError(RuntimeError):
    """The state folder cannot be used (missing rights, read-only): says which and why."""


# --- a full or failing volume -------------------------------------------------------------

#: OS errors that mean the volume cannot take writes, not that the input is wrong.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG})
#: SQLite's primary result codes for the same (full, I/O error, read-only, cannot open).
SQLITE_STORAGE_CODES = frozenset(
    {sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN}
)


def storage_failure(exc: BaseException) -> str | None:
    """Why ``exc`` (or an exception it came from) is the state volume failing, or None when
    it is something else."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sqlite3.Error):
            code = getattr(current, "sqlite_errorcode", 0) & 0xFF
            if code in SQLITE_STORAGE_CODES:
                return f"SQLite: {current}"
        elif isinstance(current, OSError) and current.errno in STORAGE_ERRNOS:
            return current.strerror or str(current)
        current = current.__cause__ or current.__context__
    return None


def storage_problem(
    folder: Path | str, min_free_bytes: int = 0, *, probe: bool = True
) -> str | None:
    """Why the volume of ``folder`` cannot take writes now, or None: fewer than
    ``min_free_bytes`` free, or (``probe``) a small write with fsync fails. A folder that does
    not exist yet holds nothing to protect: None."""
    path = Path(folder)
    if not path.is_dir():
        return None
    try:
        info = os.statvfs(path)
        free = info.f_bavail * info.f_frsize
        if free < min_free_bytes:
            return (
                f"state volume of {path}: {free} bytes free, below the floor of "
                f"{min_free_bytes} (CLAIMFLOW_MIN_FREE_BYTES)"
            )
        if probe:
            test = path / f".write-probe-{os.getpid()}"
            fd = os.open(test, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            try:
                os.write(fd, b"\0" * 4096)
                os.fsync(fd)
            finally:
                os.close(fd)
                test.unlink(missing_ok=True)
    except OSError as exc:
        return f"state volume of {path}: {exc.strerror or exc}"
    return None


class StorageGuard:
    """``storage_problem`` of one folder, looked at most every ``interval_s`` (cheap to ask
    per message or per batch)."""

    def __init__(
        self,
        folder: Path | str,
        min_free_bytes: int,
        *,
        interval_s: float = 1.0,
        probe: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.folder = Path(folder)
        self.min_free_bytes = min_free_bytes
        self.interval_s = interval_s
        self.probe = probe
        self.clock = clock
        self._checked_at: float | None = None
        self._problem: str | None = None

    def problem(self) -> str | None:
        """Why the volume cannot take writes (as last looked), or None."""
        now = self.clock()
        if self._checked_at is None or now - self._checked_at >= self.interval_s:
            self._checked_at = now
            self._problem = storage_problem(self.folder, self.min_free_bytes, probe=self.probe)
        return self._problem


def private_dir(path: Path | str) -> Path:
    """``path`` as a folder only its owner can enter: created 0700 (with any missing
    parents), narrowed to 0700 when it exists with a wider mode."""
    folder = Path(path)
    try:
        missing = [p for p in (folder, *folder.parents) if not p.exists()]
        for part in reversed(missing):
            part.mkdir(mode=DIR_MODE, exist_ok=True)
        if not folder.is_dir():
            raise NotADirectoryError(20, "Not a directory")
        info = folder.stat()
        # A mounted volume's root may belong to root (Kubernetes fsGroup): it cannot be
        # narrowed by this user, and the files below it are 0600 all the same.
        if stat.S_IMODE(info.st_mode) & 0o077 and info.st_uid == os.geteuid():
            folder.chmod(DIR_MODE)
    except OSError as exc:
        raise StateError(f"state folder {folder}: {exc.strerror or exc}") from exc
    return folder


def private_file(path: Path | str) -> Path:
    """``path`` as a file only its owner can read: created empty 0600 when missing,
    narrowed to 0600 when it exists with a wider mode (its folder made private too)."""
    file = Path(path)
    private_dir(file.parent)
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT, FILE_MODE)
        try:
            if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
                os.fchmod(fd, FILE_MODE)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StateError(f"state file {file}: {exc.strerror or exc}") from exc
    return file


IN_CHUNK = 500
"""Keys bound by one query of ``rows_in`` (SQLite caps a statement's parameters)."""


def rows_in(db: sqlite3.Connection, sql: str, keys: Iterable[str]) -> Iterator[tuple[Any, ...]]:
    """The rows of ``sql`` for ``keys``, each key once, in queries of ``IN_CHUNK`` keys:
    ``sql`` holds ``{marks}`` where the IN list's placeholders go."""
    unique = list(dict.fromkeys(keys))
    for start in range(0, len(unique), IN_CHUNK):
        chunk = unique[start : start + IN_CHUNK]
        yield from db.execute(sql.format(marks=",".join("?" * len(chunk))), chunk).fetchall()


def private_sqlite(path: Path | str) -> str:
    """Make a SQLite database's file (and any journal beside it) private before it is
    opened: SQLite creates its WAL and shared-memory files with the database's mode."""
    if str(path) == ":memory:":
        return ":memory:"
    private_file(path)
    for suffix in SQLITE_SIDE_FILES:
        side = Path(f"{path}{suffix}")
        if side.exists():
            private_file(side)
    return str(path)


class Savepoint:
    """``BatchStore.atomic``: a savepoint inside the batch's transaction, released, or rolled
    back and released when the input fails; then the store forgets what the input left in
    memory (``input_undone``). One object with ``__enter__``/``__exit__``, not generators
    under ``contextlib`` (nested ones for a changelogged store): every input of a stateful
    stage opens one or two (tests/unit/test_state_savepoint.py compares the two, statement
    by statement)."""

    __slots__ = ("store", "mark")

    def __init__(self, store: BatchStore) -> None:
        self.store = store
        self.mark = 0

    def __enter__(self) -> None:
        store = self.store
        self.mark = store.input_mark()
        db = store.db
        # Open the batch transaction first: the RELEASE of an outermost savepoint is a
        # COMMIT, which would make this input durable before the batch's output is acked.
        if not db.in_transaction:
            db.execute("BEGIN")
        db.execute("SAVEPOINT one_input")

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        store = self.store
        try:
            if kind is not None:
                store.db.execute("ROLLBACK TO one_input")
            store.db.execute("RELEASE one_input")
        except BaseException:
            store.input_undone(self.mark)
            raise
        if kind is not None:
            store.input_undone(self.mark)


WAL_CHECKPOINT_BYTES = 1000 * 4096
"""What SQLite's write-ahead log holds before it is checkpointed by default (1000 pages of
4 KB): kept for a store created with smaller pages (``BatchStore``'s ``page_size``)."""


STORE_CACHE_KIB = 8 * 1024
"""The page cache of each store's connection (SQLite's default is 2 MiB).

Larger is not free. SQLite 3.40 ends every write transaction by truncating the page cache
to the file's size, and perf puts that in a walk of the cache's hash table (reached from
``sqlite3PagerCommitPhaseTwo``): a commit costs more the more pages the connection holds.
A probe (3 inserts of 3 KB and 3 random reads a commit, 2 KB pages, 40,000 rows) measured
~48 us a commit at 2 MiB, ~55-66 at 8, ~70-78 at 16 and ~95-108 at 32. A store commits
after every batch, so the walk is paid per batch: in ``claimflow run`` (20 encounters/s,
batches of a few records) the claims stage's commits went from 4% to 14% of its CPU over 20
minutes as its caches filled (py-spy; its CPU a minute grew ~20%, intake's ~15%, on a host
that slowed meanwhile). ``bench claims_stage`` in batches of 10 over 20,000 encounters,
last 2,000 against the first: x1.21, x1.26 and x1.45 at 32 MiB; x1.01, x1.03, x1.08 and
x1.09 at 8 MiB; x1.10-1.31 at 2 MiB, whose misses cost more than its commits save (a 256
MiB ``mmap_size`` with 2 or 8 MiB did not help: x1.17 and x1.25).

Smaller is not free either: the stores' lookups are by random keys (encounter, claim and
event ids), so once an index outgrows the cache most lookups read a page back from the file
or its write-ahead log (claims' submitted-claims store with 20,000 encounters read ~13,700
pages in 3 s at 2 MiB and ~4,200 at 32 MiB, strace). At maximum rate, in batches of
hundreds, commits are few and that side weighs more: ``bench pipeline`` read claims'
stores alone x1.13 and x1.18 at 8 MiB against x0.96 and x1.13 at 32 (two runs each, on a
slow hour; the five stages fresh 1.56-1.70 ms an encounter against 1.66-1.81). 8 MiB is
where both held. SQLite takes the memory as pages are read, so a small store uses little."""


class BatchStore:
    """Base of the stateful stages' stores: one connection, one transaction per batch.

    ``page_size``: the page size of a file this creates (SQLite's default when None). A
    file that exists keeps the size it was created with (a file in WAL mode cannot change
    it), and opens as before: no migration. Its write-ahead log is then checkpointed once
    it holds ``WAL_CHECKPOINT_BYTES``, whatever the file's page size (SQLite counts pages)."""

    def __init__(self, path: Path | str, schema: str, *, page_size: int | None = None) -> None:
        if page_size is not None and (not 512 <= page_size <= 65536 or page_size & (page_size - 1)):
            raise ValueError(f"page_size {page_size}: a power of two from 512 to 65536")
        # One runner thread uses a store at a time, not always the thread that opened it.
        # A replay may share the live service's state folder: wait for its lock, do not fail.
        self.db = sqlite3.connect(
            private_sqlite(path), isolation_level="DEFERRED", check_same_thread=False, timeout=30
        )
        try:
            if page_size is not None:  # before anything is written: only a new file takes it
                self.db.execute(f"PRAGMA page_size={page_size}")
            self.db.execute("PRAGMA journal_mode=WAL")
            if page_size is not None:
                size = self.db.execute("PRAGMA page_size").fetchone()[0]
                self.db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_BYTES // size}")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute(f"PRAGMA cache_size=-{STORE_CACHE_KIB}")
            # Deleted rows (pruned PHI) are overwritten with zeros, not left in free pages.
            self.db.execute("PRAGMA secure_delete=ON")
            # A savepoint's undo copies of the pages it changes (its "statement journal") go to
            # a temporary file once they pass 64 KiB: in the system's temporary folder ($TMPDIR,
            # else /var/tmp), outside the private state folder, holding what those pages held
            # (PHI). Kept in memory instead; so are temp tables and sorts (the row changelog's
            # notes are such a table).
            self.db.execute("PRAGMA temp_store=MEMORY")
            self.db.executescript(schema)
            self.db.commit()
        except sqlite3.OperationalError as exc:  # e.g. a read-only folder or file
            self.db.close()
            raise StateError(f"state store {path}: {exc}") from exc

    def atomic(self) -> AbstractContextManager[None]:
        """All of one input's writes, or none of them (a savepoint inside the batch)."""
        return Savepoint(self)

    def input_mark(self) -> int:
        """Where an input starts in what the store keeps in memory (``input_undone``)."""
        return 0

    def input_undone(self, mark: int) -> None:
        """An input failed (its writes are rolled back, or its savepoint could not be
        released): forget what it left in memory since ``mark``. Nothing, here."""

    def commit(self) -> None:
        """Make the batch's writes durable: only after its output is acknowledged."""
        self.db.commit()

    def rollback(self) -> None:
        self.db.rollback()

    def checkpoint(self) -> None:
        """Copy the WAL into the database and empty it (after pruning: deleted rows' old
        pages must not stay readable in the WAL)."""
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        """Close the database (uncommitted writes are lost, as after a crash)."""
        self.db.close()


Change = tuple[str, bytes | None]
"""(key, value) of one write to a changelogged store; value None deletes the key."""

_CHANGELOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS changelog_position (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    next_offset INTEGER NOT NULL     -- the changelog offset this file has applied up to
);
"""


class ChangelogStore(BatchStore):
    """A store whose every write is also a change record (key, value) for its changelog
    topic, so the state of one input partition can be rebuilt elsewhere by ``apply``-ing
    that partition's changelog in order. Writes stay idempotent upserts: the runner may
    replay a batch whose changes already reached the changelog. The runner produces
    ``take_changes()`` with the batch's output, and records how far this file has applied
    the changelog (``set_position``) in the same transaction as the batch's writes."""

    def __init__(self, path: Path | str, schema: str, *, page_size: int | None = None) -> None:
        super().__init__(path, schema + _CHANGELOG_SCHEMA, page_size=page_size)
        self._changes: list[Change] = []

    def log_change(self, key: str, value: bytes | None) -> None:
        """Called by the store's own write methods, after the write."""
        self._changes.append((key, value))

    def apply(self, key: str, value: bytes | None) -> None:
        """Write one change read back from the changelog (a restore): the subclass's job."""
        raise NotImplementedError

    def has_changes(self) -> bool:
        """Whether writes since the last ``take_changes`` wait to be produced."""
        return bool(self._changes)

    def take_changes(self) -> list[Change]:
        changes, self._changes = self._changes, []
        return changes

    def position(self) -> int:
        row = self.db.execute("SELECT next_offset FROM changelog_position").fetchone()
        return int(row[0]) if row else 0

    def set_position(self, next_offset: int) -> None:
        if not self.db.in_transaction:
            self.db.execute("BEGIN")
        self.db.execute(
            "INSERT INTO changelog_position VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET "
            "next_offset = max(next_offset, excluded.next_offset)",
            (next_offset,),
        )

    def input_mark(self) -> int:
        return len(self._changes)

    def input_undone(self, mark: int) -> None:
        """An input that fails leaves no change record either."""
        del self._changes[mark:]

    def rollback(self) -> None:
        self._changes = []
        super().rollback()
