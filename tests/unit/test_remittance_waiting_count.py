"""A ledger keeps how many payments wait (``Ledger.waiting_count``, which the stage's gauge
reads after every batch) until a write to ``waiting``, an applied change record, a failed
input or a rollback: the judge is the table's own count, after every input of the corpus
(payments before their claims: kept, reported, then taken), on a ledger restored from those
changelogs, and after an input that fails and a batch rolled back."""

from __future__ import annotations

import json

import pytest
from test_remittance_one_write import Clocked
from test_remittance_reread import files
from test_remittance_split import CLAIMS

from pipeline.models import ClaimPaymentRecord
from services.remittance.ledger import Ledger


def counted(ledger: Ledger) -> int:
    return int(ledger.db.execute("SELECT count(*) FROM waiting").fetchone()[0])


class Checked(Clocked):
    """Every store's kept count against its table's, after every input and sweep."""

    waited = 0  # payments waiting once the files are in, before their claims

    def commit(self) -> None:
        for stores in (self.claims, self.payers):
            for _, store in stores.items():
                assert store.waiting_count() == counted(store)
        super().commit()


@pytest.fixture(scope="module")
def late(tmp_path_factory: pytest.TempPathFactory) -> Checked:
    ran = Checked(tmp_path_factory.mktemp("late"), 13)
    for file in files():
        ran.send("payer.inbound.v1", f"{file.payer_id}:{file.file_id}", file)
    ran.drain()
    ran.waited = sum(store.waiting_count() for _, store in ran.claims.items())
    ran.sweep()  # reported: their rows written again
    for claim in CLAIMS:
        ran.send("claims.submitted.v1", claim.claim_id, claim)
    ran.drain()  # taken: their rows deleted
    return ran


def test_the_count_kept_is_the_tables_after_every_input(late: Checked) -> None:
    left = sum(store.waiting_count() for _, store in late.claims.items())
    assert late.waited > left
    assert left == sum(counted(store) for _, store in late.claims.items())


def test_a_restored_ledger_counts_what_its_changes_left(late: Checked) -> None:
    for (name, _), changes in late.changes.items():
        copy = Ledger(":memory:", changelog=True)
        assert copy.waiting_count() == 0
        for key, value in changes:
            copy.apply(key, value)
            assert copy.waiting_count() == counted(copy), (name, key)


def test_a_failed_input_and_a_rollback_leave_the_count_of_the_table(late: Checked) -> None:
    ledger = Ledger(":memory:")
    records = [
        r
        for changes in late.changes.values()
        for k, r in changes
        if k.startswith('["waiting"') and r is not None
    ]
    assert records

    record = ClaimPaymentRecord.model_validate_json(json.loads(records[0])["record"])
    with pytest.raises(RuntimeError), ledger.atomic():
        ledger.add_waiting(record, first_seen=1.0)
        assert ledger.waiting_count() == 1
        raise RuntimeError("the input fails")
    assert ledger.waiting_count() == counted(ledger) == 0
    ledger.add_waiting(record, first_seen=1.0)
    assert ledger.waiting_count() == 1
    ledger.rollback()
    assert ledger.waiting_count() == counted(ledger) == 0
    ledger.add_waiting(record, first_seen=1.0)
    ledger.commit()
    assert ledger.take_waiting(record.claim_id) and ledger.waiting_count() == counted(ledger) == 0
