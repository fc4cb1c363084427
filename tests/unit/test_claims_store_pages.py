"""The claims stores' page size: a new file takes the small pages, an existing one keeps its own.

SQLite fixes a file's page size when the file is first written (a file in WAL mode cannot
change it), so the claims stores' smaller pages need no migration: a file an older version
created with 4 KB pages opens and bills as before, a new file (a new partition, or one
rebuilt from its changelog) gets the small pages, and a partition rebuilt from the change
records a 4 KB file wrote holds the same rows, rowids included.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from factories import MEDIGAP_F
from test_claims_partitioned_stores import Records, at, posting_for, restore, run, tables
from test_claims_secondary import clean, with_a_deductible
from test_claims_service import COVERAGE, coded_encounter, stage, submitted, validated

from pipeline.state import WAL_CHECKPOINT_BYTES, BatchStore
from services.claims.app import VALIDATED, ClaimsStage
from services.claims.parsed import STORE_PAGE_SIZE

OLD_PAGE_SIZE = 4096
"""SQLite's default page size: what the stores' files had before."""


def page_sizes(claims: ClaimsStage, partition: int) -> dict[str, int]:
    return {
        stores.name: stores.get(partition).db.execute("PRAGMA page_size").fetchone()[0]
        for stores in claims.partitioned_stores()
    }


def checkpoints(claims: ClaimsStage, partition: int) -> dict[str, int]:
    """Each store's ``wal_autocheckpoint``: pages of write-ahead log before a checkpoint."""
    return {
        stores.name: stores.get(partition).db.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        for stores in claims.partitioned_stores()
    }


def old_files(claims: ClaimsStage, partition: int) -> None:
    """Files of ``partition`` as an older version left them: created with 4 KB pages, in WAL
    mode, before the stage opens them."""
    for stores in claims.partitioned_stores():
        db = sqlite3.connect(stores.path(partition))
        db.execute(f"PRAGMA page_size={OLD_PAGE_SIZE}")
        db.execute("PRAGMA journal_mode=WAL")
        db.close()


def test_the_claims_stores_take_pages_smaller_than_sqlites_default() -> None:
    assert STORE_PAGE_SIZE is not None and STORE_PAGE_SIZE < OLD_PAGE_SIZE


def test_a_new_store_file_takes_the_small_pages(tmp_path: Path) -> None:
    claims, _ = stage(tmp_path)
    for stores in claims.partitioned_stores():
        stores.open(0)
    assert set(page_sizes(claims, 0).values()) == {STORE_PAGE_SIZE}
    # Checkpointed after as many bytes of write-ahead log as with 4 KB pages.
    assert set(checkpoints(claims, 0).values()) == {WAL_CHECKPOINT_BYTES // STORE_PAGE_SIZE}
    claims.close()


def test_a_4k_file_keeps_its_pages_and_restores_into_a_new_file_row_for_row(
    tmp_path: Path,
) -> None:
    first, _ = stage(tmp_path / "first")
    old_files(first, 1)
    records: Records = {}
    medicare = clean(with_a_deductible(other_coverages=[MEDIGAP_F]))
    commercial = validated(coded_encounter("ENC-COMMERCIAL", coverage=COVERAGE))
    verdicts = [at(v, 1, i, VALIDATED) for i, v in enumerate((medicare, commercial))]
    billed = submitted(run(first, records, verdicts))
    assert len(billed) == 2
    assert set(page_sizes(first, 1).values()) == {OLD_PAGE_SIZE}

    # Reopened (a restart): still 4 KB pages, the rows as they were, and it bills on.
    before = tables(first, 1)
    first.close()
    first, _ = stage(tmp_path / "first")
    for stores in first.partitioned_stores():
        stores.open(1)
    assert set(page_sizes(first, 1).values()) == {OLD_PAGE_SIZE}
    assert set(checkpoints(first, 1).values()) == {WAL_CHECKPOINT_BYTES // OLD_PAGE_SIZE}
    assert tables(first, 1) == before

    # The 4 KB file's change records rebuild the partition in new files, row for row.
    second, _ = stage(tmp_path / "second")
    restore(second, records, 1)
    assert set(page_sizes(second, 1).values()) == {STORE_PAGE_SIZE}
    assert tables(second, 1) == tables(first, 1)

    # Both answer Medicare's 835 alike: the Medigap plan billed once, same rows after.
    posting = posting_for(next(c for c in billed if c.encounter_id == medicare.encounter_id), "E1")
    answers = []
    for claims in (first, second):
        (medigap,) = submitted(run(claims, {}, [at(posting, 2, 0, "remittance.posted.v1")]))
        answers.append((medigap.payer_id, medigap.claim_id, medigap.interchange_control_number))
    assert answers[0] == answers[1]
    assert answers[0][0] == MEDIGAP_F.payer_id
    created = {"control.interchanges"}  # stamped with the time each stage built it
    assert {t: r for t, r in tables(first, 1).items() if t not in created} == {
        t: r for t, r in tables(second, 1).items() if t not in created
    }
    for claims in (first, second):
        claims.close()


@pytest.mark.parametrize("size", [0, 1000, 256, 131072])
def test_a_page_size_sqlite_cannot_take_is_refused(tmp_path: Path, size: int) -> None:
    with pytest.raises(ValueError, match="page_size"):
        BatchStore(tmp_path / "s.sqlite3", "", page_size=size)


def test_a_store_without_a_page_size_keeps_sqlites_default(tmp_path: Path) -> None:
    store = BatchStore(tmp_path / "s.sqlite3", "CREATE TABLE t (x);")
    assert store.db.execute("PRAGMA page_size").fetchone()[0] == OLD_PAGE_SIZE
    store.close()
