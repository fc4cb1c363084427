"""``python -m bench.compare``: two trees' pipeline benchmarks in turn, end to end (here the
checkout's HEAD against itself, small)."""

from __future__ import annotations

import json
import subprocess
import sys

from bench.compare import HERE, STAGES


def test_compare_runs_both_trees_in_turn_and_removes_its_worktree() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.compare", "HEAD", "--pairs", "1"]
        + ["--encounters", "40", "--rate-encounters", "0", "--warm", "10"],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("{")]
    result = json.loads(line)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert result["ref"] == result["head"] == head
    assert result["environment"]["BENCH_N"] == "40"
    assert result["ref_takes_bench_warm"] is True
    (pair,) = result["pairs"]
    for run in (pair["ref"], pair["head"]):
        assert run["lost"] == 0 and run["dlq"] == 0
        assert run["encounters_per_s"] > 0
        assert run["p99_ms_submitted_at_fixed_rate"] is None  # no fixed-rate phase asked
        cost = run["cpu_ms_per_encounter"]
        assert cost["stages"] > 0 and set(STAGES) <= set(cost)
    ratio = result["ratio"]["cpu_ms_per_encounter"]
    assert set(STAGES) | {"stages", "broker"} <= set(ratio)
    # (a process that spent nothing in the ref run, the gateway at 40 encounters, has none)
    assert all(ratio[name] > 0 for name in (*STAGES, "stages", "broker"))
    assert result["ratio"]["p99_ms_submitted_at_fixed_rate"] is None
    # the order of the pair's runs shows on stderr; the worktree is gone
    assert "pair 1/1: ref" in out.stderr
    worktrees = subprocess.run(
        ["git", "worktree", "list"], cwd=HERE, capture_output=True, text=True, check=True
    ).stdout
    assert "claimflow-compare-" not in worktrees
