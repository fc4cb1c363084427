"""The open-ended simulator feed of `claimflow run` starts at once and never repeats an id."""

from __future__ import annotations

import itertools
import time

import pytest

from pipeline import cli


def test_an_open_ended_run_starts_quickly_and_ids_stay_unique_across_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli, "SIMULATOR_CHUNK", 50)
    started = time.monotonic()
    ids = [s for s, _, _ in itertools.islice(cli._simulated(10**9, 7, "mix", "office"), 180)]
    assert time.monotonic() - started < 30
    assert len(ids) == len(set(ids)) == 180


def test_a_bounded_run_is_the_simulators_own_sequence() -> None:
    from services.intake.simulator import generate

    assert [s for s, _, _ in cli._simulated(30, 5, "json", "office")] == [
        s for s, _, _ in generate(30, seed=5, fmt="json")
    ]
