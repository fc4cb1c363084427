"""``python -m bench [NAME…]``: run the benchmarks in bench/bench_*.py, one JSON line each
(a NAME is a benchmark's short name, or part of names).

Each module has ``main() -> dict``: what it measured, and a baseline measured in the same
run (machines are shared and noisy, so figures are reported as ratios to it).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import time
from collections.abc import Callable
from typing import Any

import bench


def timed(name: str, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One benchmark's JSON object: its name, what it measured, and its wall time."""
    started = time.perf_counter()
    result = measure()
    return {"bench": name, **result, "wall_s": round(time.perf_counter() - started, 2)}


def _named(arg: str, name: str, names: list[str]) -> bool:
    """Whether ``arg`` asks for benchmark ``name``: its exact short name when one is that
    (``claims`` is bench_claims, not bench_claims_stage too), else any name containing it
    (``stage`` runs every stage benchmark)."""
    if f"bench_{arg}" in names:
        return name == f"bench_{arg}"
    return arg in name


def main(argv: list[str]) -> int:
    names = sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_")
    )
    wanted = [n for n in names if not argv or any(_named(a, n, names) for a in argv)]
    failed = 0
    for name in wanted:
        started = time.perf_counter()
        short = name.removeprefix("bench_")
        print(f"bench: {short} ...", file=sys.stderr, flush=True)
        try:
            result = timed(short, importlib.import_module(f"bench.{name}").main)
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the rest
            failed += 1
            error = f"{type(exc).__name__}: {exc}"
            result = {
                "bench": short,
                "error": error,
                "wall_s": round(time.perf_counter() - started, 2),
            }
        print(json.dumps(result), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
