"""An open-ended simulator feed (`claimflow run` asks for 10**9) starts at once and never
repeats an id; bounded runs are the simulator's own sequence."""

from __future__ import annotations

import itertools
import time

from sim import ehr as simulator
from sim.ehr import generate


def test_an_open_ended_run_starts_quickly_and_ids_stay_unique() -> None:
    started = time.monotonic()
    ids = [s for s, _, _ in itertools.islice(generate(10**9, seed=7, fmt="mix"), 180)]
    assert time.monotonic() - started < 30
    assert len(ids) == len(set(ids)) == 180


def test_a_bounded_run_is_unchanged_by_the_pool_cap() -> None:
    assert simulator.POOL_VISITS >= 10_000  # every bounded run in the suite stays byte-identical
    first = [s for s, _, _ in generate(30, seed=5, fmt="json")]
    assert first == [s for s, _, _ in generate(30, seed=5, fmt="json")]
