"""The payer's claim control numbers are kept beside the submitted rows (``payer_numbers``)
instead of in them: every read gives what it gave when a number was written into its row,
which an older version did and which is kept here as the judge (its files, and the rows its
changelog restores, keep their numbers so). Judged on the simulator's verdicts of both
mixes: numbered (again, the same, another), replaced, voided, billed again, refused and
restored, pruned; on a store the judge numbered first and this version after; and on a
store rebuilt from this version's changelog."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
from sim_corpus import validated

from pipeline.models import ValidatedEncounter, event_id
from services.claims.corrections import ClaimPruned, SubmittedClaims
from services.claims.domain import PROFESSIONAL_PART, claim_id_for


def in_the_rows(store: SubmittedClaims, numbers: Iterable[tuple[str, str]]) -> None:
    """The judge: each number written into the claim's submitted rows, as an older version
    did."""
    rows = [(number, claim_id, number) for claim_id, number in numbers]
    if rows:
        store.db.executemany(
            "UPDATE submitted SET payer_claim_control_number = ? WHERE claim_id = ? "
            "AND payer_claim_control_number IS NOT ?",
            rows,
        )


class Legacy(SubmittedClaims):
    """A store that numbers as an older version did."""

    def set_payer_claim_control_numbers(self, numbers: Iterable[tuple[str, str]]) -> None:
        in_the_rows(self, numbers)


def keys(verdict: ValidatedEncounter) -> tuple[str, str]:
    return (verdict.encounter_id, f"{verdict.encounter_id}/{PROFESSIONAL_PART}")


def reads(store: SubmittedClaims, verdicts: list[ValidatedEncounter]) -> list[object]:
    """Everything the store answers of ``verdicts``: each part's prior claim (its payer's
    number too), the rows ``look``, ``look_many`` and ``snapshot`` give."""
    out: list[object] = []
    for verdict, many in zip(verdicts, store.look_many(verdicts), strict=True):
        stored = store.look(verdict)
        assert many is not None and sorted(map(repr, many.rows)) == sorted(map(repr, stored.rows))
        out.append(sorted(map(repr, stored.rows)))
        out.append(sorted(map(repr, store.snapshot(verdict.encounter_id))))
        for key in keys(verdict):
            try:
                out.append(store.prior(key))
            except ClaimPruned as exc:
                out.append(("pruned", exc.reason))
    return out


def planned(store: SubmittedClaims, verdict: ValidatedEncounter) -> object:
    try:
        claims = store.claims_for(verdict)
    except ClaimPruned as exc:
        return ("pruned", exc.reason)
    return [(p.event_id, p.claim_id, p.claim.frequency, p.claim.original_reference) for p in claims]


def changed(verdict: ValidatedEncounter, what: str, **update: object) -> ValidatedEncounter:
    return verdict.model_copy(update={"event_id": event_id(verdict.event_id, what), **update})


@pytest.mark.parametrize("mix", ["office", "all"])
def test_the_payer_numbers_beside_the_rows_read_as_the_numbers_in_them(
    tmp_path: Path, mix: str
) -> None:
    corpus = list(validated(mix))
    judge = Legacy(tmp_path / "judge.sqlite3", changelog=True)
    new = SubmittedClaims(tmp_path / "new.sqlite3", changelog=True)
    # Numbered by an older version first (in its rows), by this one after.
    mixed = SubmittedClaims(tmp_path / "mixed.sqlite3", changelog=True)
    stores = (judge, new, mixed)

    def answer(verdict: ValidatedEncounter) -> object:
        answers = [planned(store, verdict) for store in stores]
        assert answers[1] == answers[0] and answers[2] == answers[0], verdict.encounter_id
        return answers[0]

    def number(numbers: list[tuple[str, str]], older_mixed: bool = False) -> None:
        judge.set_payer_claim_control_numbers(numbers)
        new.set_payer_claim_control_numbers(numbers)
        if older_mixed:
            in_the_rows(mixed, numbers)
        else:
            mixed.set_payer_claim_control_numbers(numbers)

    def same() -> None:
        want = reads(judge, corpus)
        assert reads(new, corpus) == want
        assert reads(mixed, corpus) == want

    billed = [answer(v) for v in corpus]
    claims = [c[1] for found in billed if isinstance(found, list) for c in found]
    assert len(claims) > len(corpus) // 2
    number([(c, f"P1{i:011d}") for i, c in enumerate(claims[::2])], older_mixed=True)
    same()
    # The 835 repeating the 277CA's numbers, a corrected one, numbers for claims not here.
    number([(c, f"P1{i:011d}") for i, c in enumerate(claims[::2])])
    number([(c, f"P2{i:011d}") for i, c in enumerate(claims[::4])])
    number([(c, f"P3{i:011d}") for i, c in enumerate(claims[1::2])] + [("CF-NOT-HERE", "P9")])
    same()

    # Replaced (7, referring to the payer's number), voided (8), billed again (1).
    kinds: set[object] = set()
    for n, verdict in enumerate(corpus):
        other = "warnings" if verdict.outcome == "clean" else "clean"
        toggled = changed(verdict, "toggled", outcome=other)
        rejected = changed(verdict, "rejected", outcome="rejected")
        for again in (toggled, rejected, changed(verdict, "back")):
            found = answer(again)
            if isinstance(found, list):
                kinds |= {(c[2], c[3] is not None) for c in found}
        if n % 3 == 0:  # numbered again after the new original
            number([(claim_id_for(k), f"P4{n:011d}") for k in keys(verdict)])
    assert {("7", True), ("8", True), ("1", False)} <= kinds
    same()

    # A claim refused downstream: the encounter's rows restored as they were before.
    for n, verdict in enumerate(corpus[:40]):
        snapshots = [store.snapshot(verdict.encounter_id) for store in stores]
        again = changed(verdict, "refused", outcome="warnings" if n % 2 else "clean")
        answer(again)
        number([(claim_id_for(k), f"P5{n:011d}") for k in keys(verdict)])
        for store, snapshot in zip(stores, snapshots, strict=True):
            store.restore(again, snapshot)
    same()

    # Pruned after settlement: nothing of the row is left, its number neither.
    pruned = [k for v in corpus[::5] for k in keys(v)]
    numbered = (
        f"SELECT count(*) FROM payer_numbers WHERE encounter_id IN ({', '.join('?' * len(pruned))})"
    )
    assert new.db.execute(numbered, pruned).fetchone()[0] > 0
    for verdict in corpus[::5]:
        for store in stores:
            for key in keys(verdict):
                store.prune(key, claim_id_for(key), 1.0, 2.0)
    same()
    assert new.db.execute(numbered, pruned).fetchone() == (0,)
    number([(c, "P6") for c in claims])
    same()

    # Rebuilt from its changelog elsewhere: the same reads.
    rebuilt = SubmittedClaims(tmp_path / "rebuilt.sqlite3", changelog=False)
    for key, value in new.take_changes():
        rebuilt.apply(key, value)
    assert reads(rebuilt, corpus) == reads(judge, corpus)
    assert new.db.execute("SELECT count(*) FROM payer_numbers").fetchone()[0] > len(claims) // 4
    for store in (*stores, rebuilt):
        store.close()
