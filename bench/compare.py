"""``python -m bench.compare REF``: this checkout's pipeline benchmark against commit REF's,
run in turn on the same host, and each stage's cost as a ratio of REF's.

The host's speed moves by up to half between hours and a third between minutes, so a CPU
figure measured today says little against one measured yesterday. The same two trees run
back to back do: REF is checked out in a temporary worktree, and each pair runs REF's
``python -m bench pipeline`` and this checkout's (the order swapping every pair, so a
drift over the pair favours neither), fresh phases only (``BENCH_HISTORY=0``). Each tree
runs its own harness, simulator and services with this checkout's Python environment: a
REF whose dependencies differ needs them installed.

Printed as one JSON line: each run's figures (CPU milliseconds per encounter of each
process at maximum rate, encounters/s, p99 publish->submitted at the fixed rate, lost and
dead letters), and the median over the pairs of this checkout's over REF's for each
(``ratio``; below 1.0 is cheaper or quicker here). Options: ``--pairs`` (default 3),
``--encounters`` (BENCH_N, default 2000), ``--rate-encounters`` (BENCH_RATE_N, default
1000), ``--warm`` (BENCH_WARM, default 300: a tree older than that variable warms its
services with 20 encounters, so pass ``--warm 20`` to run both trees the same way; the
command says so when REF is such a tree, and ``ref_takes_bench_warm`` records it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.bench_pipeline import STAGE_TOPICS

STAGES = tuple(STAGE_TOPICS)
"""claimflow's five stages, as the pipeline benchmark names them."""

HERE = Path(__file__).resolve().parent.parent
"""This checkout: the tree the benchmark module is imported from."""


def figures(result: dict[str, Any]) -> dict[str, Any]:
    """What one run of ``bench pipeline`` is compared by: its phase at maximum rate (each
    process's CPU per encounter, ``stages`` the five together whether or not the tree
    reports it, the rate), the fixed-rate phase's p99, and what was lost."""
    at_max = result["max_rate"]
    cpu = {k: v for k, v in at_max["cpu_ms_per_encounter"].items() if k != "stages"}
    cpu["stages"] = round(sum(cpu[s] for s in STAGES if s in cpu), 2)
    fixed = next((v for k, v in result.items() if k.startswith("fixed_rate_")), None)
    return {
        "cpu_ms_per_encounter": cpu,
        "encounters_per_s": at_max["encounters_per_s"],
        "p99_ms_submitted_at_fixed_rate": (
            fixed["latency_ms_submitted"]["p99"] if fixed is not None else None
        ),
        "lost": at_max["summary"]["lost"] + (fixed["summary"]["lost"] if fixed else 0),
        "dlq": at_max["summary"]["dlq"] + (fixed["summary"]["dlq"] if fixed else 0),
    }


def ratios(pairs: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The median over ``pairs`` ({"ref": figures, "head": figures}) of head over ref, for
    each process's CPU per encounter, the rate and the p99 (a pair is left out of a figure's
    median where REF's run lacks it or read 0, or this checkout's lacks it)."""

    def median_of(read: Any) -> float | None:
        found = []
        for pair in pairs:
            ref, head = read(pair["ref"]), read(pair["head"])
            if ref and head is not None:
                found.append(head / ref)
        return round(statistics.median(found), 3) if found else None

    names = sorted(set.intersection(*(set(p["ref"]["cpu_ms_per_encounter"]) for p in pairs)))
    return {
        "cpu_ms_per_encounter": {
            name: median_of(lambda f, n=name: f["cpu_ms_per_encounter"].get(n)) for name in names
        },
        "encounters_per_s": median_of(lambda f: f["encounters_per_s"]),
        "p99_ms_submitted_at_fixed_rate": median_of(lambda f: f["p99_ms_submitted_at_fixed_rate"]),
    }


def run_pipeline(tree: Path, env: dict[str, str]) -> dict[str, Any]:
    """``python -m bench pipeline`` in ``tree`` (its code first on the import path): the
    JSON line it printed. Its progress goes to this process's stderr."""
    out = subprocess.run(
        [sys.executable, "-m", "bench", "pipeline"],
        cwd=tree,
        env={**os.environ, **env, "PYTHONPATH": str(tree)},
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"bench pipeline in {tree} printed no result (exit {out.returncode})")
    result: dict[str, Any] = json.loads(lines[-1])
    if "error" in result:
        raise RuntimeError(f"bench pipeline in {tree}: {result['error']}")
    return result


OLD_WARM = 20
"""The encounters a tree older than ``BENCH_WARM`` warms its services with."""


def takes_bench_warm(tree: Path) -> bool:
    """Whether ``tree``'s pipeline benchmark reads ``BENCH_WARM`` (older ones warm with
    ``OLD_WARM`` whatever it says)."""
    bench = tree / "bench" / "bench_pipeline.py"
    return bench.exists() and "BENCH_WARM" in bench.read_text()


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=HERE, check=True, capture_output=True, text=True
    ).stdout.strip()


def compare(ref: str, pairs: int, env: dict[str, str]) -> dict[str, Any]:
    """``pairs`` runs of REF's benchmark and this checkout's, in turn (``ratios``)."""
    try:
        sha = git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except subprocess.CalledProcessError:
        raise RuntimeError(f"{ref}: not a commit of this repository") from None
    head = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    runs: list[dict[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="claimflow-compare-") as tmp:
        worktree = Path(tmp) / "ref"
        git("worktree", "add", "--detach", str(worktree), sha)
        try:
            warms = takes_bench_warm(worktree)
            if not warms and env.get("BENCH_WARM") != str(OLD_WARM):
                say(
                    f"{ref}'s benchmark warms its services with {OLD_WARM} encounters "
                    f"whatever BENCH_WARM says, this checkout's with {env.get('BENCH_WARM')}: "
                    f"pass --warm {OLD_WARM} to run both the same way"
                )
            for i in range(pairs):
                order = [("ref", worktree), ("head", HERE)]
                if i % 2:
                    order.reverse()
                pair = {}
                for name, tree in order:
                    say(f"pair {i + 1}/{pairs}: {name} ({tree.name})")
                    pair[name] = figures(run_pipeline(tree, env))
                runs.append(pair)
        finally:
            git("worktree", "remove", "--force", str(worktree))
    return {
        "bench": "compare",
        "ref": sha,
        "head": head,
        "head_has_uncommitted_changes": dirty,
        "ref_takes_bench_warm": warms,
        "environment": env,
        "pairs": runs,
        "ratio": ratios(runs),
    }


def say(line: str) -> None:
    print(f"bench compare: {line}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare",
        description="This checkout's pipeline benchmark against commit REF's, in turn.",
    )
    parser.add_argument("ref", help="the commit to compare against (any name git knows)")
    parser.add_argument("--pairs", type=int, default=3, help="runs of each tree (default 3)")
    parser.add_argument("--encounters", type=int, default=2000, help="BENCH_N (default 2000)")
    parser.add_argument(
        "--rate-encounters", type=int, default=1000, help="BENCH_RATE_N (default 1000)"
    )
    parser.add_argument("--warm", type=int, default=300, help="BENCH_WARM (default 300)")
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error("--pairs: at least 1")
    env = {
        "BENCH_HISTORY": "0",
        "BENCH_PAIRS": "0",
        "BENCH_N": str(args.encounters),
        "BENCH_RATE_N": str(args.rate_encounters),
        "BENCH_WARM": str(args.warm),
    }
    try:
        result = compare(args.ref, args.pairs, env)
    except (subprocess.CalledProcessError, RuntimeError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        print(f"bench compare: {detail.strip()}", file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
