"""An input whose only write is one statement, made after all that may fail, runs without a
savepoint around it (``ClaimMatcher.atomic_inputs``): a claim no payment waits for, and a
claim payment (posted, kept waiting, or a PLB adjustment applied); so does a payer's payment
without PLB adjustments, whose second write (its claims' references) only SQLite can fail
(``PayerBook.atomic_inputs``). The judge is the way
before, every input in its savepoint: on the 835 fixtures, the public sample 835 and the
payer simulator's 835s for both EHR mixes, drained in a shuffled order with payments before
and after their claims, the two publish the same records, log the same change records in
the same order and leave the same rows; an input that fails (its denial cannot be built)
leaves nothing either way; a claim payment runs two statements instead of four, and a
payment without PLB adjustments no SAVEPOINT.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_remittance_reread import files, published, run
from test_remittance_split import CLAIMS, INTERNAL, Partitioned

from pipeline.stage import Incoming, Out
from services.remittance import matching
from services.remittance.ledger import Ledger
from services.remittance.matching import ClaimMatcher, PayerBook

TABLES = ("claims", "waiting", "posted", "claim_plb", "payments", "provider_adjustments")


class Clocked(Partitioned):
    """``Partitioned`` with a clock that ticks once a call (``first_seen`` of a waiting
    payment is in its change record), and each input's failure routed as the runner does:
    the input is dropped, the others go on."""

    def __init__(self, folder: Path, seed: int) -> None:
        super().__init__(folder, seed)
        ticks = itertools.count(1_780_000_000)
        self.stage.matching["clock"] = lambda: float(next(ticks))
        self.failed: list[str] = []

    def handle(self, msg: Incoming) -> list[Out] | None:
        try:
            return super().handle(msg)
        except RuntimeError:
            self.failed.append(msg.key or "")
            return None

    def claims_then_files(self, files: list[Any]) -> list[str]:
        """Every claim of CLAIMS sent and handled, then ``files`` queued: the statements the
        claims ledgers run from here (a trace, for ``each_input``)."""
        for claim in CLAIMS:
            self.send("claims.submitted.v1", claim.claim_id, claim)
        self.drain()
        statements: list[str] = []
        for _, store in self.claims.items():
            store.db.set_trace_callback(statements.append)
        for file in files:
            self.send("payer.inbound.v1", f"{file.payer_id}:{file.file_id}", file)
        return statements

    def each_input(self, statements: list[str]) -> Iterator[tuple[str, Any, list[str]]]:
        """Hand the stage every queued input in turn, the internal records it makes queued
        in their turn: each input's topic, value and the statements (of ``statements``, a
        trace) it ran."""
        while ready := sorted(k for k, q in self.queues.items() if q):
            topic, partition = ready[0]
            key, value = self.queues[(topic, partition)].popleft()
            before = len(statements)
            for out in self.stage.handle(Incoming(topic, key, value, b"", {}, partition, 1, 0)):
                if out.topic in INTERNAL and out.value is not None:
                    self.send(out.topic, out.key, out.value)
            yield topic, value, statements[before:]


def rows(ran: Partitioned) -> list[Any]:
    out = []
    for stores in (ran.claims, ran.payers):
        for _, store in stores.items():
            for table in TABLES:
                query = f"SELECT * FROM {table} ORDER BY rowid"
                out.append(store.db.execute(query).fetchall())
            query = "SELECT * FROM claim_refs ORDER BY payer_id, reference"
            out.append(store.db.execute(query).fetchall())
            query = "SELECT * FROM recent_refs ORDER BY rowid"
            out.append(store.db.execute(query).fetchall())
    return out


def both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> tuple[Clocked, Clocked]:
    """The corpus run with each input's one write alone, and with every input in a savepoint."""
    fast, judged = Clocked(tmp_path / "fast", seed), Clocked(tmp_path / "judged", seed)
    run(fast)
    with monkeypatch.context() as patched:
        patched.setattr(ClaimMatcher, "atomic_inputs", True)
        patched.setattr(PayerBook, "atomic_inputs", True)
        run(judged)
    return fast, judged


@pytest.mark.parametrize("seed", [5, 11])
def test_inputs_without_a_savepoint_do_what_they_did_in_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    fast, judged = both(tmp_path, monkeypatch, seed)
    assert published(fast) == published(judged)
    assert fast.changes == judged.changes
    assert rows(fast) == rows(judged)
    topics = {o.topic for o in fast.outputs}
    assert {"remittance.posted.v1", "remittance.denials.v1", "remittance.exceptions.v1"} <= topics
    logged = [key for changes in fast.changes.values() for key, _ in changes]
    for table in ("claims", "waiting", "posted", "claim_plb"):  # every kind of one write
        assert any(key.startswith(f'["{table}"') for key in logged), table
    assert any(value is None for changes in fast.changes.values() for _, value in changes)


def test_an_input_that_fails_leaves_nothing_either_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim payment whose denial cannot be built fails after its posting is made: without
    the savepoint the posting is not written yet, with it the write is rolled back."""
    refused = {c.claim_id for c in CLAIMS[::3]}
    denial_for = matching.denial_for

    def failing(posting: Any, *args: Any, **kwargs: Any) -> Any:
        if posting.claim_id in refused:
            raise RuntimeError("no denial")
        return denial_for(posting, *args, **kwargs)

    monkeypatch.setattr(matching, "denial_for", failing)
    fast, judged = both(tmp_path, monkeypatch, 7)
    assert fast.failed and sorted(fast.failed) == sorted(judged.failed)
    assert published(fast) == published(judged)
    assert fast.changes == judged.changes
    assert rows(fast) == rows(judged)
    posted = {r[1] for store_rows in rows(fast)[2::7] for r in store_rows}
    assert posted and not posted & refused


def test_a_claim_payment_runs_two_statements_instead_of_four(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its payer's earlier postings of the claim read, the posting written; in a savepoint,
    SAVEPOINT and RELEASE around them (the batch's BEGIN not counted). The postings are read
    here even for a claim this process inserted (test_remittance_prior_known.py)."""
    monkeypatch.setattr(Ledger, "prior", Ledger.prior_read)
    counted: dict[bool, list[int]] = {}
    for atomic in (False, True):
        monkeypatch.setattr(ClaimMatcher, "atomic_inputs", atomic)
        ran = Clocked(tmp_path / str(atomic), 3)
        statements = ran.claims_then_files(files()[:3])
        counts = counted[atomic] = []
        for _, value, executed in ran.each_input(statements):
            if getattr(value, "kind", None) == "payment":
                counts.append(len([s for s in executed if not s.startswith("BEGIN")]))
    assert len(counted[False]) >= 3 and len(counted[False]) == len(counted[True])
    assert counted[False] == [2] * len(counted[False])
    assert counted[True] == [4] * len(counted[True])


def test_a_payment_without_plb_adjustments_runs_no_savepoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A payer's payment: without PLB adjustments its row and references alone; with them,
    in a savepoint as before (and every payment in one with ``atomic_inputs``)."""
    seen: dict[bool, list[tuple[bool, bool]]] = {}
    for atomic in (False, True):
        monkeypatch.setattr(PayerBook, "atomic_inputs", atomic)
        ran = Clocked(tmp_path / str(atomic), 3)
        statements: list[str] = []
        for _, store in ran.payers.items():
            store.db.set_trace_callback(statements.append)
        for file in files():
            ran.send("payer.inbound.v1", f"{file.payer_id}:{file.file_id}", file)
        kinds = seen[atomic] = []
        for topic, value, executed in ran.each_input(statements):
            if topic == "remittance.payer-payments.v1":
                saved = any(s.startswith("SAVEPOINT") for s in executed)
                kinds.append((bool(getattr(value, "provider_adjustments", ())), saved))
    assert (False, False) in seen[False] and (True, True) in seen[False]
    assert all(plb == saved for plb, saved in seen[False])
    assert all(saved for _, saved in seen[True])
