"""``bench pipeline``'s growth figures: the grown phases against the mean of the fresh phase
measured before and after them, so a steady drift of the host's speed cancels out."""

from __future__ import annotations

import pytest

from bench.bench_pipeline import bracketed, growth

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
