"""``bench pipeline``'s growth figures: the grown phases against the mean of the fresh phase
measured before and after them, so a steady drift of the host's speed cancels out."""

from __future__ import annotations

from typing import Any

import pytest

from bench.bench_pipeline import alternating, bracketed, growth

PHASES = (
    "max_rate",
    "max_rate_with_history",
    "max_rate_with_history_empty_broker",
    "max_rate_fresh_again",
)


def run_of(*costs: dict[str, float]) -> dict[str, dict[str, dict[str, float]]]:
    """A run's result: each phase's CPU per encounter, in the order of ``PHASES``."""
    return {name: {"cpu_ms_per_encounter": cpu} for name, cpu in zip(PHASES, costs, strict=True)}


def test_a_host_that_slows_steadily_shows_no_growth_once_bracketed() -> None:
    # The host 10% slower at each of the four phases in turn; the stores cost the same.
    figures = bracketed(
        run_of(
            {"claims": 1.0, "intake": 0.5},
            {"claims": 1.1, "intake": 0.55},
            {"claims": 1.2, "intake": 0.6},
            {"claims": 1.3, "intake": 0.65},
        )
    )
    assert figures["fresh_again_vs_fresh"] == {"claims": 1.3, "intake": 1.3}
    # against the first fresh phase alone, the drift reads as growth
    assert growth({"claims": 1.0}, {"claims": 1.1}) == {"claims": 1.1}
    # against the mean of the two: the middle of the run, where the grown phases are
    assert figures["cpu_growth_bracketed"] == pytest.approx({"claims": 0.957, "intake": 0.957})
    assert figures["cpu_growth_stores_bracketed"] == pytest.approx(
        {"claims": 1.043, "intake": 1.043}
    )


def test_growth_on_a_steady_host_is_the_same_both_ways() -> None:
    figures = bracketed(
        run_of(
            {"claims": 0.5, "remittance": 0.3},
            {"claims": 0.6, "remittance": 0.3},
            {"claims": 0.55, "remittance": 0.33},
            {"claims": 0.5, "remittance": 0.3},
        )
    )
    assert figures["fresh_again_vs_fresh"] == {"claims": 1.0, "remittance": 1.0}
    assert figures["cpu_growth_bracketed"] == {"claims": 1.2, "remittance": 1.0}
    assert figures["cpu_growth_stores_bracketed"] == {"claims": 1.1, "remittance": 1.1}


def test_a_process_missing_from_a_phase_has_no_figure() -> None:
    # a service restarted during a phase has no CPU figure for it (``run_batch``)
    figures = bracketed(
        run_of(
            {"claims": 0.5, "coding": 0.3},
            {"claims": 0.6},
            {"claims": 0.55, "coding": 0.3},
            {"claims": 0.5},
        )
    )
    assert figures["cpu_growth_bracketed"] == {"claims": 1.2}
    assert figures["cpu_growth_stores_bracketed"] == {"claims": 1.1}


def alternated(*costs: dict[str, float]) -> dict[str, Any]:
    """A run with ``alternate``'s phases: grown, fresh, grown, fresh... after the four of
    ``PHASES`` (the first fresh phase and the fresh one again given here first)."""
    first, again, *turns = costs
    result: dict[str, Any] = run_of(first, {}, {}, again)
    result["alternating"] = [
        {"stores": "grown" if i % 2 == 0 else "fresh", "cpu_ms_per_encounter": cost}
        for i, cost in enumerate(turns)
    ]
    return result


def test_each_grown_phase_is_read_against_the_fresh_phases_on_either_side() -> None:
    # The host slows 10% a phase; the grown stores cost 20% more than fresh ones throughout.
    host = [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6]
    store = [1.0, 1.0, 1.2, 1.0, 1.2, 1.0, 1.2]  # first fresh, fresh again, then in turn
    run = alternated(*({"claims": 0.5 * h * s} for h, s in zip(host, store, strict=True)))
    # grown (1.2 * 1.2) between 1.1 and 1.3, grown (1.4 * 1.2) between 1.3 and 1.5: the
    # drift cancels; the last grown phase has no fresh one after it and is not read
    figures = alternating(run)
    assert figures["cpu_growth_stores_alternating_each"] == {"claims": [1.2, 1.2]}
    assert figures["cpu_growth_stores_alternating"] == {"claims": 1.2}
    # the median of every fresh phase: 0.5, 0.55, 0.65, 0.75
    assert figures["cpu_ms_per_encounter_fresh_median"] == {"claims": 0.6}


def test_one_slow_grown_phase_does_not_make_the_median() -> None:
    fresh = {"claims": 0.5, "remittance": 0.3}
    grown = {"claims": 0.55, "remittance": 0.3}
    slow = {"claims": 0.8, "remittance": 0.45}  # a neighbour's minute on the host
    run = alternated(fresh, fresh, grown, fresh, slow, fresh, grown, fresh)
    figures = alternating(run)
    assert figures["cpu_growth_stores_alternating"] == {"claims": 1.1, "remittance": 1.0}
    assert figures["cpu_growth_stores_alternating_each"]["claims"] == [1.1, 1.6, 1.1]


def test_a_process_missing_from_a_neighbour_is_left_out_of_that_ratio() -> None:
    fresh = {"claims": 0.5, "coding": 0.3}
    run = alternated(fresh, fresh, {"claims": 0.6, "coding": 0.3}, {"claims": 0.5}, fresh, fresh)
    figures = alternating(run)
    assert figures["cpu_growth_stores_alternating_each"] == {"claims": [1.2, 1.0]}
    assert figures["cpu_growth_stores_alternating"] == {"claims": 1.1}


def test_the_kernels_part_of_what_a_grown_phase_adds_is_read_the_same_way() -> None:
    run = alternated(*({"claims": 0.5} for _ in range(6)))
    # grown, fresh, grown, fresh
    system = [{"claims": 0.09}, {"claims": 0.06}, {"claims": 0.11}, {"claims": 0.08}]
    run["max_rate_fresh_again"]["system_cpu_ms_per_encounter"] = {"claims": 0.04}
    for phase, sys_ms in zip(run["alternating"], system, strict=True):
        phase["system_cpu_ms_per_encounter"] = sys_ms
    # 0.09 - (0.04 + 0.06) / 2 and 0.11 - (0.06 + 0.08) / 2
    assert alternating(run)["system_cpu_ms_added_alternating"] == {"claims": 0.04}


def test_a_process_that_spent_nothing_fresh_has_no_ratio() -> None:
    # the gateway often spends under a clock tick in a phase: 0.0 ms an encounter
    fresh = {"claims": 0.5, "intake-gateway": 0.0}
    run = alternated(fresh, fresh, {"claims": 0.55, "intake-gateway": 0.01}, fresh)
    figures = alternating(run)
    assert figures["cpu_growth_stores_alternating"] == {"claims": 1.1}
    assert figures["cpu_ms_per_encounter_fresh_median"]["intake-gateway"] == 0.0
