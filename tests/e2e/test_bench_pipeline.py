"""``claimflow bench`` end to end, small: the JSON it prints holds what the issue asks for
(throughput, latency publish->submitted and ->posted, per-stage rates, the raw-copy
ceiling measured in the same run) and the CPU per process, and nothing was lost."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.broker, pytest.mark.e2e]


def test_claimflow_bench_reports_rates_latencies_and_cpu_from_one_run() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "bench", "--encounters", "80"]
        + ["--rate", "40", "--rate-encounters", "40"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("{")]
    result = json.loads(line)
    assert result["raw_copy_records_per_s"] > 0
    for phase, sent in (("max_rate", 80), ("fixed_rate_40_per_s", 40)):
        run = result[phase]
        assert run["complete"] and run["encounters"] == sent
        summary = run["summary"]  # this run's own counts, not the runs before it
        assert summary["lost"] == 0 and summary["dlq"] == 0
        # Every clean encounter bills at least one claim; some bill more (the next payer's
        # claim after the primary's 835), so claims are not bounded by encounters.
        assert summary["collected"] >= sent and summary["submitted"] >= summary["clean"] > 0
        finals = summary["posted"] + summary["payer_rejected"] + summary["exceptions"]
        assert finals == summary["submitted"]
        assert run["latency_ms_submitted"]["p50"] > 0
        assert run["latency_ms_submitted"]["p99"] >= run["latency_ms_submitted"]["p50"]
        assert run["latency_ms_posted"]["p50"] >= run["latency_ms_submitted"]["p50"]
        assert set(run["latency_ms_by_hop"]) == {
            "intake",
            "coding",
            "validation",
            "claims",
            "remittance",
        }
        cpu = run["cpu_ms_per_encounter"]
        assert {"intake", "coding", "validation", "claims", "remittance", "broker"} <= set(cpu)
        assert cpu["total"] > 0 and all(v >= 0 for v in cpu.values())
        five = ("intake", "coding", "validation", "claims", "remittance")
        assert cpu["stages"] == pytest.approx(sum(cpu[s] for s in five), abs=0.011)
        # every stage handled at least one batch, of at least one record
        sizes = run["records_per_batch"]
        assert set(sizes) == {"intake", "coding", "validation", "claims", "remittance"}
        assert all(size is not None and size >= 1 for size in sizes.values())
        # counted quiet to quiet: each raw message read by intake inside its own phase
        per_encounter = run["records_per_encounter"]
        assert set(per_encounter) == set(sizes) and per_encounter["intake"] >= 1
        assert all(v > 0 for v in per_encounter.values())
        shares = run["main_thread_share"]
        assert set(shares) == set(sizes) and all(0 <= v <= 1 for v in shares.values())
        assert set(run["gc_sweep_cpu_ms_per_encounter"]) <= set(sizes)
    assert set(result["stage_vs_raw_copy"]) == {
        "intake",
        "coding",
        "validation",
        "claims",
        "remittance",
    }
    assert 0 < result["end_to_end_vs_raw_copy"] < 1


def test_the_growth_phases_restart_on_the_grown_stores_and_on_empty_ones_in_turn() -> None:
    # Small: 40 measured encounters a phase over a history of 200, one alternating pair.
    from bench.bench_pipeline import measure

    result = measure(n=40, rate_n=0, history=200, warm_n=10, pairs=1)
    phases = [
        result["max_rate"],
        result["max_rate_with_history"],
        result["max_rate_with_history_empty_broker"],
        result["max_rate_fresh_again"],
    ]
    for run in phases:
        assert run["complete"] and run["summary"]["lost"] == 0 and run["summary"]["dlq"] == 0
        assert run["system_cpu_ms_per_encounter"]["stages"] >= 0
    assert result["max_rate_with_history_empty_broker"]["history"] == 200
    five = {"intake", "coding", "validation", "claims", "remittance"}
    turns = result["alternating"]
    assert [t["stores"] for t in turns] == ["grown", "fresh"]
    for turn in turns:
        assert turn["complete"] and turn["lost"] == 0 and turn["dlq"] == 0
        # the services ran on the stores they were given: every stage handled the encounters
        assert set(turn["records_per_encounter"]) == five
        assert all(v > 0 for v in turn["records_per_encounter"].values())
    assert five <= set(result["cpu_growth_stores_alternating"])
    assert all(len(r) == 1 for r in result["cpu_growth_stores_alternating_each"].values())
    assert five <= set(result["cpu_ms_per_encounter_fresh_median"])
    assert five <= set(result["system_cpu_ms_added_alternating"])
