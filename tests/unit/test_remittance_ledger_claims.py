"""The ledger keeps the claims it wrote in memory and ``claim`` returns them instead of
reading the row back: what it returns must be what reading the row gives (the way before,
the judge), field by field and of the same types, on every claim of the simulator's corpus
(both mixes, as built and as decoded from their Avro bytes, as the stage reads them) and of
the 835 fixtures' claims; and what a failed input, a rolled-back batch or an applied change
record changed must not be returned from memory."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sim_corpus
from test_remittance_split import CLAIMS

from pipeline.models import SubmittedClaim
from pipeline.serde import registry
from services.remittance.ledger import Ledger

REG = registry()


def corpus() -> list[SubmittedClaim]:
    claims = list(CLAIMS)
    for mix in sim_corpus.MIXES:
        built = sim_corpus.submitted(mix)
        claims += built
        claims += [
            REG.decode("claims.submitted.v1", REG.encode("claims.submitted.v1", c)) for c in built
        ]
    return claims


def same(kept: Any, read: Any) -> None:
    assert kept == read
    assert kept.model_dump_json() == read.model_dump_json()
    for name in type(read).model_fields:
        a, b = getattr(kept, name), getattr(read, name)
        assert a == b, name
        assert type(a) is type(b), name
        assert str(a) == str(b), name
        if isinstance(a, list):
            for x, y in zip(a, b, strict=True):
                same(x, y)


def test_a_claim_kept_is_the_claim_read_back() -> None:
    claims = corpus()
    assert len(claims) > 200
    ledger = Ledger(":memory:", changelog=True)
    for claim in claims:
        with ledger.atomic():
            ledger.add_claim(claim)
        kept, read = ledger.claim(claim.claim_id), ledger.stored_claim(claim.claim_id)
        assert kept is not None and read is not None
        assert kept is not read
        same(kept, read)
        assert kept.x12 == ""


def test_the_comparison_sees_a_difference() -> None:
    claim = CLAIMS[0]
    other = claim.model_copy(update={"payer_name": claim.payer_name + "X"})
    with pytest.raises(AssertionError):
        same(claim, other)


def test_a_claim_not_kept_is_read_from_its_row() -> None:
    ledger = Ledger(":memory:")
    ledger.add_claim(CLAIMS[0])
    ledger._claims.clear()
    read = ledger.claim(CLAIMS[0].claim_id)
    assert read is not None and read.claim_id == CLAIMS[0].claim_id
    assert ledger.claim("NOPE") is None


def test_a_failed_input_leaves_no_claim_in_memory() -> None:
    ledger = Ledger(":memory:")
    first = CLAIMS[0]
    with ledger.atomic():
        ledger.add_claim(first)
    ledger.commit()
    changed = first.model_copy(update={"payer_name": "CHANGED"})
    with pytest.raises(RuntimeError), ledger.atomic():
        ledger.add_claim(changed)
        ledger.add_claim(CLAIMS[1])
        raise RuntimeError("the input fails")
    assert ledger.claim(first.claim_id) == ledger.stored_claim(first.claim_id)
    assert ledger.claim(first.claim_id).payer_name == first.payer_name  # type: ignore[union-attr]
    assert ledger.claim(CLAIMS[1].claim_id) is None


def test_a_rolled_back_batch_leaves_no_claim_in_memory() -> None:
    ledger = Ledger(":memory:")
    with ledger.atomic():
        ledger.add_claim(CLAIMS[0])
    ledger.rollback()
    assert ledger.claim(CLAIMS[0].claim_id) is None


def test_an_applied_change_replaces_the_claim_kept() -> None:
    source = Ledger(":memory:", changelog=True)
    target = Ledger(":memory:", changelog=True)
    first = CLAIMS[0]
    target.add_claim(first)
    source.add_claim(first.model_copy(update={"payer_name": "CHANGED"}))
    for key, value in source.take_changes():
        target.apply(key, value)
    assert target.claim(first.claim_id).payer_name == "CHANGED"  # type: ignore[union-attr]
    target.apply(f'["claims", "{first.claim_id}"]', None)
    assert target.claim(first.claim_id) is None


def test_the_claims_kept_are_bounded() -> None:
    ledger = Ledger(":memory:")
    ledger._KEEP_CLAIMS = 2  # type: ignore[misc]
    for n in range(4):
        ledger.add_claim(CLAIMS[0].model_copy(update={"claim_id": f"C{n}"}))
    assert list(ledger._claims) == ["C2", "C3"]
    assert ledger.claim("C0") is not None  # read from its row


# --- the ledger's savepoint: the shared one, with what a failed input leaves forgotten ------
#
# ``Ledger.atomic`` is ``ChangelogStore.atomic`` (``pipeline.state.Savepoint``) and its
# ``input_undone`` forgets the claims kept and the claims known to have payments waiting. The
# judge is the ledger's savepoint as it was first written: the changelog store's nested
# generators, the claims forgotten around them (``generator_logged_atomic`` is the shared
# savepoint's own judge).


@contextmanager
def generator_ledger_atomic(ledger: Ledger) -> Iterator[None]:
    from test_state_savepoint import generator_logged_atomic

    try:
        with generator_logged_atomic(ledger):
            yield
    except BaseException:
        ledger._claims.clear()
        ledger._waiting_ids = None
        raise


def scenario(ledger: Ledger, atomic: Any) -> list[Any]:
    """Inputs that succeed and fail, in and out of a batch transaction, nested, taking
    waiting payments, and one whose savepoint is gone at its release; after each, what the
    ledger keeps in memory."""
    kept: list[Any] = []

    def memory() -> None:
        waiting = ledger._waiting_ids
        kept.append((list(ledger._claims), None if waiting is None else sorted(waiting)))

    ledger.take_waiting("nothing")  # the claims with payments waiting now known
    with atomic(ledger):  # the batch's transaction opened by the first input
        ledger.add_claim(CLAIMS[0])
        ledger.add_waiting(waiting_record("PCNW1"), first_seen=1.0)
    memory()
    with atomic(ledger):
        ledger.add_claim(CLAIMS[1])
    memory()
    with pytest.raises(ValueError), atomic(ledger):
        ledger.add_claim(CLAIMS[2])
        ledger.add_claim(CLAIMS[0].model_copy(update={"payer_name": "CHANGED"}))
        assert ledger.take_waiting("PCNW1") != []
        raise ValueError("the input fails")
    memory()
    assert [w.record.claim_id for w in ledger.take_waiting("PCNW1")] == ["PCNW1"]
    memory()
    with atomic(ledger):
        ledger.add_claim(CLAIMS[3])
        with pytest.raises(KeyError), atomic(ledger):
            ledger.add_claim(CLAIMS[4])
            raise KeyError("an inner part fails")
        memory()
    ledger.commit()
    with pytest.raises(sqlite3.OperationalError), atomic(ledger):  # gone at its release
        ledger.add_claim(CLAIMS[4])
        ledger.add_waiting(waiting_record("PCNW2"), first_seen=2.0)
        ledger.db.execute("RELEASE one_input")
    memory()
    ledger.commit()
    with pytest.raises(RuntimeError), atomic(ledger):  # a failure opening the batch
        ledger.add_claim(CLAIMS[4])
        raise RuntimeError
    memory()
    return kept


def traced(atomic: Any, ledger: Ledger | None = None) -> tuple[list[Any], ...]:
    ledger = ledger or Ledger(":memory:", changelog=True)
    statements: list[str] = []
    ledger.db.set_trace_callback(statements.append)
    kept = scenario(ledger, atomic)
    ledger.db.set_trace_callback(None)
    rows = ledger.db.execute("SELECT * FROM claims ORDER BY rowid").fetchall()
    waiting = ledger.db.execute("SELECT claim_id, event_id FROM waiting ORDER BY rowid")
    return statements, rows, waiting.fetchall(), ledger.take_changes(), kept


def test_the_ledgers_savepoint_is_the_generators() -> None:
    assert len(CLAIMS) >= 5
    ours = traced(Ledger.atomic)
    theirs = traced(generator_ledger_atomic)
    assert ours == theirs
    statements, rows, waiting, _, kept = ours
    assert any(s == "ROLLBACK TO one_input" for s in statements)
    assert [r[0] for r in rows] == [c.claim_id for c in CLAIMS[:2]] + [
        c.claim_id for c in CLAIMS[3:5]
    ]
    assert waiting == [("PCNW2", "E-PCNW2")]  # the release failed after the write
    assert ([], None) in kept and any(k[1] == [] for k in kept)


class KeepsWaitingIds(Ledger):
    """Forgets the claims kept but not the claims known to have payments waiting."""

    def input_undone(self, mark: int) -> None:
        del self._changes[mark:]
        self._claims.clear()


def test_the_savepoint_comparison_sees_a_difference() -> None:
    from pipeline.state import ChangelogStore

    def releasing_twice(ledger: Ledger) -> Any:
        ledger.db.execute("SAVEPOINT extra")
        ledger.db.execute("RELEASE extra")
        return ChangelogStore.atomic(ledger)

    assert traced(Ledger.atomic) != traced(releasing_twice)
    keeps = KeepsWaitingIds(":memory:", changelog=True)
    with pytest.raises(AssertionError):  # the payment taken by the failed input is lost
        traced(Ledger.atomic, keeps)


# --- the claims with payments waiting, known without asking the table ------------------------


def test_take_waiting_takes_what_the_table_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Payments before their claims (waiting, reported unmatched, then posted) over the 835
    fixtures, in the live layout: each ``take_waiting`` returns what asking the table gives
    (the way before, the judge), and ``has_waiting`` (a claim nothing waits for is added
    without ``take_waiting``) says none only when the table holds none."""
    from test_remittance_split import partitioned

    take = Ledger.take_waiting
    taken: list[int] = []
    has = Ledger.has_waiting

    def none_waiting(self: Ledger, claim_id: str) -> bool:
        answer = has(self, claim_id)
        if not answer:
            assert self._waiting("claim_id = ?", (claim_id,)) == []
            taken.append(0)
        return answer

    def judged(self: Ledger, claim_id: str) -> list[Any]:
        expected = self._waiting("claim_id = ?", (claim_id,))
        got = take(self, claim_id)
        assert got == expected
        assert self._waiting("claim_id = ?", (claim_id,)) == []
        taken.append(len(got))
        return got

    monkeypatch.setattr(Ledger, "take_waiting", judged)
    monkeypatch.setattr(Ledger, "has_waiting", none_waiting)
    for seed in (1, 2):
        partitioned(tmp_path, claims_first=False, seed=seed)
        partitioned(tmp_path / "first", claims_first=True, seed=seed)
    assert sum(taken) > 10 and taken.count(0) > 10


def test_waiting_known_after_a_failure_a_rollback_and_a_change_applied() -> None:
    ledger = Ledger(":memory:", changelog=True)
    record = waiting_record("PCNW1")
    assert ledger.take_waiting("PCNW1") == []  # the set is now known (empty)
    with pytest.raises(ValueError), ledger.atomic():
        ledger.add_waiting(record, first_seen=1.0)
        assert ledger.take_waiting("PCNW1") != []
        raise ValueError  # the take rolled back: the payment waits again
    assert [w.record for w in ledger.take_waiting("PCNW1")] == []  # the add rolled back too
    with ledger.atomic():
        ledger.add_waiting(record, first_seen=1.0)
    changes = ledger.take_changes()
    ledger.commit()
    with pytest.raises(ValueError), ledger.atomic():
        ledger.take_waiting("PCNW1")
        raise ValueError
    assert [w.record for w in ledger.take_waiting("PCNW1")] == [record]
    other = Ledger(":memory:", changelog=True)
    assert other.take_waiting("PCNW1") == []
    for key, value in changes:
        other.apply(key, value)
    assert [w.record for w in other.take_waiting("PCNW1")] == [record]
    other.add_waiting(record, first_seen=2.0)
    other.rollback()
    assert other.take_waiting("PCNW1") == []


def waiting_record(claim_id: str) -> Any:
    from datetime import UTC, datetime

    from pipeline.models import ClaimPaymentRecord

    return ClaimPaymentRecord(
        event_id=f"E-{claim_id}",
        claim_id=claim_id,
        payer_id="P",
        file_id="F",
        received_at=datetime(2026, 3, 1, tzinfo=UTC),
        payment_trace="T",
        payment="{}",
    )
