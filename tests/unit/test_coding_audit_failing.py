"""``AuditStore.failing`` is worked out once per accuracy kept, not for every encounter coded:
it must stay what the threshold says of ``accuracy("category")`` (the judge, as it was
written) after outcomes are scored, inputs fail, batches roll back and the store moves on."""

from __future__ import annotations

import random

import pytest

from services.coding.audit import Accuracy, AuditPolicy, AuditStore

CATEGORIES = ("E11", "I10", "N18", "J44", "Z79", "F32")


def judged(store: AuditStore) -> dict[str, Accuracy]:
    policy = store.policy
    return {
        a.key: a
        for a in store.accuracy("category")
        if a.audited >= policy.min_audits and a.rate < policy.threshold
    }


def score(store: AuditStore, rng: random.Random, n: int) -> None:
    """Outcomes as ``record`` writes them, with its forgetting of the accuracy."""
    rows = [
        (f"E{rng.randrange(10**6)}", rng.choice(CATEGORIES), "mapped", int(rng.random() < 0.6))
        for _ in range(n)
    ]
    store.db.executemany(
        "INSERT INTO outcomes (encounter_id, category, source, agree) VALUES (?, ?, ?, ?)", rows
    )
    store._accuracy.clear()


@pytest.mark.parametrize("seed", range(5))
def test_failing_is_the_thresholds_answer_through_a_stores_life(seed: int) -> None:
    rng = random.Random(seed)
    store = AuditStore(":memory:", AuditPolicy(threshold=0.6, min_audits=3, window=8))
    failing_seen = set()
    for step in range(300):
        action = rng.random()
        if action < 0.35:
            with store.atomic():
                score(store, rng, rng.randrange(1, 4))
        elif action < 0.5:
            with pytest.raises(RuntimeError), store.atomic():
                score(store, rng, rng.randrange(1, 4))
                assert store.failing() == judged(store)
                raise RuntimeError("the input fails")
        elif action < 0.6:
            store.rollback()
        elif action < 0.7:
            store.commit()
        got = store.failing()
        assert got == judged(store), step
        assert store._failing() == got
        got.clear()  # a caller's copy: what the store keeps is not touched
        assert store.failing() == judged(store)
        failing_seen |= set(judged(store))
    assert failing_seen  # the scenario made some category fail
