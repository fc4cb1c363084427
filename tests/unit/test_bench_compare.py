"""``bench.compare``: one tree's pipeline benchmark against another's, run in turn, read as
the median over the pairs of each figure's ratio."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.compare import HERE, figures, main, ratios, takes_bench_warm


def result(cpu: dict[str, float], eps: float, p99: float, *, stages: bool = True) -> dict[str, Any]:
    """A ``bench pipeline`` result: its phase at maximum rate and one at a fixed rate."""
    total = {**cpu, "broker": 0.4}
    if stages:
        total["stages"] = round(sum(cpu.values()), 2)
    return {
        "max_rate": {
            "cpu_ms_per_encounter": total,
            "encounters_per_s": eps,
            "summary": {"lost": 0, "dlq": 1},
        },
        "fixed_rate_200_per_s": {
            "latency_ms_submitted": {"p99": p99},
            "summary": {"lost": 0, "dlq": 2},
        },
    }


FIVE = {"intake": 1.2, "coding": 1.2, "validation": 1.0, "claims": 1.4, "remittance": 0.9}


def test_a_tree_that_does_not_report_the_stages_sum_gets_it_added() -> None:
    # trees before the ``stages`` figure reported each process alone
    got = figures(result(FIVE, 200.0, 800.0, stages=False))
    assert got["cpu_ms_per_encounter"]["stages"] == 5.7
    assert got["cpu_ms_per_encounter"]["broker"] == 0.4
    assert got["encounters_per_s"] == 200.0
    assert got["p99_ms_submitted_at_fixed_rate"] == 800.0
    assert (got["lost"], got["dlq"]) == (0, 3)


def test_a_run_without_the_fixed_rate_phase_has_no_p99() -> None:
    run = result(FIVE, 200.0, 800.0)
    del run["fixed_rate_200_per_s"]
    got = figures(run)
    assert got["p99_ms_submitted_at_fixed_rate"] is None and got["dlq"] == 1


def test_the_ratio_is_the_median_over_the_pairs() -> None:
    cheaper = {k: v / 3 for k, v in FIVE.items()}
    pairs = [
        # the host slow in the second pair, for both trees alike; the third pair's head
        # run fell in a slow minute alone
        {
            "ref": figures(result(FIVE, 200.0, 800.0)),
            "head": figures(result(cheaper, 600.0, 200.0)),
        },
        {
            "ref": figures(result({k: v * 1.5 for k, v in FIVE.items()}, 150.0, 1600.0)),
            "head": figures(result({k: v * 1.5 for k, v in cheaper.items()}, 450.0, 400.0)),
        },
        {
            "ref": figures(result(FIVE, 200.0, 800.0)),
            "head": figures(result({k: v * 2 for k, v in cheaper.items()}, 300.0, 400.0)),
        },
    ]
    got = ratios(pairs)
    assert got["cpu_ms_per_encounter"]["claims"] == 0.333
    assert got["cpu_ms_per_encounter"]["stages"] == 0.333
    assert got["cpu_ms_per_encounter"]["broker"] == 1.0
    assert got["encounters_per_s"] == 3.0
    assert got["p99_ms_submitted_at_fixed_rate"] == 0.25


def test_a_figure_missing_from_one_run_is_left_out_of_its_pair() -> None:
    ref = figures(result(FIVE, 200.0, 800.0))
    head = figures(result(FIVE, 400.0, 400.0))
    no_fixed = dict(head, p99_ms_submitted_at_fixed_rate=None)
    got = ratios([{"ref": ref, "head": head}, {"ref": ref, "head": no_fixed}])
    assert got["p99_ms_submitted_at_fixed_rate"] == 0.5
    assert got["encounters_per_s"] == 2.0


def test_a_ref_git_does_not_know_is_refused_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no-such-commit-here", "--pairs", "1"]) == 1
    assert "no-such-commit-here: not a commit of this repository" in capsys.readouterr().err


def test_a_tree_older_than_bench_warm_is_told_from_one_that_reads_it(tmp_path: Path) -> None:
    assert takes_bench_warm(HERE)  # this checkout's benchmark reads it
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "bench_pipeline.py").write_text(
        'warm = list(generate(20, seed=303, fmt="mix"))\n'
    )
    assert not takes_bench_warm(tmp_path)
    assert not takes_bench_warm(tmp_path / "no-tree")
