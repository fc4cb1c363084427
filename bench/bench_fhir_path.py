"""Intake's FHIR parse alone, CPU per bundle: the fast path (services/intake/fhir_fast.py)
against fhir.resources validating every resource, in the same run.

Both run warm (their memos filled by bundles parsed before the clock) on bundles neither
has seen: a feed repeats codes, payers and clinicians, not whole bundles. The two paths
alternate round by round (which goes first alternates too), each round on new bundles;
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


def cpu_ms_per_bundle(messages: list[tuple[str, str, bytes]], fast: bool) -> float:
    """CPU milliseconds of parse_raw per bundle, on the fast path or fhir.resources only."""
    directory = provider_directory()
    with nullcontext() if fast else fhir_fast.fhir_resources_only():
        started = time.process_time()
        for source_id, ctype, body in messages:
            parse_raw(body, ctype, source_id=source_id, received_at=utcnow(), directory=directory)
        return (time.process_time() - started) * 1000 / len(messages)


def validation_ms_per_bundle(messages: list[tuple[str, str, bytes]], fast: bool) -> float:
    """CPU milliseconds per bundle of validating its resources alone (JSON decoded before
    the clock): the part of the parse the fast path replaces."""
    resources = [
        [e["resource"] for e in json.loads(body, parse_float=Decimal)["entry"]
         if e["resource"]["resourceType"] in SUPPORTED]
        for _, _, body in messages
    ]  # fmt: skip
    with nullcontext() if fast else fhir_fast.fhir_resources_only():
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
        cpu_ms_per_bundle(warm, fast=True)
        cpu_ms_per_bundle(warm, fast=False)
        runs: dict[str, list[float]] = {"fast": [], "fhir_resources": []}
        alone: dict[str, list[float]] = {"fast": [], "fhir_resources": []}
        for r in range(rounds):
            for k, path in enumerate(sorted(runs, reverse=r % 2 == 1)):
                messages = list(generate(n, seed=710 + 4 * r + k, fmt="fhir", mix=mix))
                runs[path].append(cpu_ms_per_bundle(messages, fast=path == "fast"))
                messages = list(generate(n, seed=712 + 4 * r + k, fmt="fhir", mix=mix))
                alone[path].append(validation_ms_per_bundle(messages, fast=path == "fast"))
        fast, reference = (min(runs[p]) for p in ("fast", "fhir_resources"))
        v_fast, v_reference = (min(alone[p]) for p in ("fast", "fhir_resources"))
        out[mix] = {
            "cpu_ms_per_bundle_fast": round(fast, 3),
            "cpu_ms_per_bundle_fhir_resources": round(reference, 3),
            "fast_vs_fhir_resources": round(fast / reference, 3),
            "validation_ms_per_bundle_fast": round(v_fast, 3),
            "validation_ms_per_bundle_fhir_resources": round(v_reference, 3),
            "validation_fast_vs_fhir_resources": round(v_fast / v_reference, 3),
            "rounds_ms": {p: [round(v, 3) for v in vs] for p, vs in runs.items()},
            "resources_built_fast": round(built_share(warm), 4),
        }
    out["note"] = (
        "parse_raw alone (JSON decode, validation, the Encounter records), no broker, and "
        "the validation of the resources alone; the fastest round of each (other load on "
        "the machine only adds); fhir_resources is the same code with the fast path off"
    )
    return out
