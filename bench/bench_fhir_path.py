"""Intake's FHIR parse alone, CPU per bundle: the fast path (services/intake/fhir_fast.py)
against fhir.resources validating every resource, and against the fast path's generic walk
(``fast_walk``: no generated builders, no kept elements), in the same run.

Each runs warm (its memos filled by bundles parsed before the clock) on bundles none has
seen: a feed repeats codes, payers and clinicians, not whole bundles. The paths take turns
round by round (which goes first rotates), each round on new bundles;
the figures are CPU seconds of this process (``time.process_time``), the fastest round of
each path. Environment: BENCH_FHIR_PATH_N (bundles per round, default
150), BENCH_FHIR_PATH_ROUNDS (default 6).
"""

from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from decimal import Decimal
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from pipeline.models import utcnow
from services.intake import fhir, fhir_fast
from services.intake.domain import parse_raw
from services.intake.fhir import SUPPORTED
from sim.ehr import generate, provider_directory

_PATHS = {
    "fast": nullcontext,
    "fast_walk": fhir_fast.walk_only,  # the fast path without generated builders or kept elements
    "fhir_resources": fhir_fast.fhir_resources_only,
}


def cpu_ms_per_bundle(messages: list[tuple[str, str, bytes]], path: str) -> float:
    """CPU milliseconds of parse_raw per bundle, on one of the _PATHS."""
    directory = provider_directory()
    with _PATHS[path]():
        started = time.process_time()
        for source_id, ctype, body in messages:
            parse_raw(body, ctype, source_id=source_id, received_at=utcnow(), directory=directory)
        return (time.process_time() - started) * 1000 / len(messages)


def validation_ms_per_bundle(messages: list[tuple[str, str, bytes]], path: str) -> float:
    """CPU milliseconds per bundle of validating its resources alone (JSON decoded before
    the clock): the part of the parse the fast path replaces."""
    resources = [
        [e["resource"] for e in json.loads(body, parse_float=Decimal)["entry"]
         if e["resource"]["resourceType"] in SUPPORTED]
        for _, _, body in messages
    ]  # fmt: skip
    with _PATHS[path]():
        started = time.process_time()
        for bundle in resources:
            for i, resource in enumerate(bundle):
                fhir._validate(resource["resourceType"], resource, f"Bundle.entry[{i}]")
        return (time.process_time() - started) * 1000 / len(messages)


def built_share(messages: list[tuple[str, str, bytes]]) -> float:
    """The share of the resources intake validates that the fast path builds itself."""
    built = total = 0
    for _, _, body in messages:
        for entry in json.loads(body, parse_float=Decimal)["entry"]:
            resource = entry["resource"]
            if resource["resourceType"] in SUPPORTED:
                total += 1
                cls = get_fhir_model_class(resource["resourceType"])
                built += fhir_fast.construct(cls, resource) is not None
    return built / total


def main() -> dict[str, Any]:
    n = int(os.environ.get("BENCH_FHIR_PATH_N", "150"))
    rounds = int(os.environ.get("BENCH_FHIR_PATH_ROUNDS", "6"))
    out: dict[str, Any] = {"bundles_per_round": n, "rounds": rounds}
    for mix in ("office", "all"):
        warm = list(generate(n, seed=700, fmt="fhir", mix=mix))
        for path in _PATHS:
            cpu_ms_per_bundle(warm, path)
        runs: dict[str, list[float]] = {path: [] for path in _PATHS}
        alone: dict[str, list[float]] = {path: [] for path in _PATHS}
        for r in range(rounds):
            order = list(_PATHS)[r % 3 :] + list(_PATHS)[: r % 3]  # who goes first rotates
            for k, path in enumerate(order):
                messages = list(generate(n, seed=710 + 6 * r + k, fmt="fhir", mix=mix))
                runs[path].append(cpu_ms_per_bundle(messages, path))
                messages = list(generate(n, seed=713 + 6 * r + k, fmt="fhir", mix=mix))
                alone[path].append(validation_ms_per_bundle(messages, path))
        fast, walk, reference = (min(runs[p]) for p in _PATHS)
        v_fast, v_walk, v_reference = (min(alone[p]) for p in _PATHS)
        out[mix] = {
            "cpu_ms_per_bundle_fast": round(fast, 3),
            "cpu_ms_per_bundle_fast_walk": round(walk, 3),
            "cpu_ms_per_bundle_fhir_resources": round(reference, 3),
            "fast_vs_fhir_resources": round(fast / reference, 3),
            "fast_vs_fast_walk": round(fast / walk, 3),
            "validation_ms_per_bundle_fast": round(v_fast, 3),
            "validation_ms_per_bundle_fast_walk": round(v_walk, 3),
            "validation_ms_per_bundle_fhir_resources": round(v_reference, 3),
            "validation_fast_vs_fhir_resources": round(v_fast / v_reference, 3),
            "validation_fast_vs_fast_walk": round(v_fast / v_walk, 3),
            "rounds_ms": {p: [round(v, 3) for v in vs] for p, vs in runs.items()},
            "resources_built_fast": round(built_share(warm), 4),
        }
    out["note"] = (
        "parse_raw alone (JSON decode, validation, the Encounter records), no broker, and "
        "the validation of the resources alone; the fastest round of each (other load on "
        "the machine only adds); fhir_resources is the same code with the fast path off, "
        "fast_walk with the fast path's generic walk (no generated builders, no kept elements)"
    )
    return out
