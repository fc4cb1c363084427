"""`bench broker_depth`, small: every phase's records go through the consumer process and
each phase reports the broker's and the consumer's CPU per record, with the ratios."""

from __future__ import annotations

import pytest

from bench import bench_broker_depth

pytestmark = pytest.mark.broker


def test_broker_depth_reports_each_phase_against_the_fresh_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BENCH_DEPTH_N", "400")
    monkeypatch.setenv("BENCH_DEPTH_BATCHES", "600")
    result = bench_broker_depth.main()
    assert result["records_per_phase"] == 400 and result["batches_added"] == 600
    for phase in ("fresh", "elsewhere", "deep"):
        figures = result[phase]
        assert set(figures) == {"broker_us", "process_us", "work_us"}
        # The consumer did every record's work in its own process, more than the work alone.
        assert 0 < figures["work_us"] <= figures["process_us"], figures
    for name in ("elsewhere", "deep"):
        ratios = result[f"{name}_vs_fresh"]
        assert ratios["work_us"] == round(result[name]["work_us"] / result["fresh"]["work_us"], 3)
