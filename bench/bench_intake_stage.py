"""The intake stage's own CPU per encounter, in one process, as the runner drives it.

The simulator's messages as EHRs send them (bare bytes with a content-type header, as the
pipeline benchmark produces them): the pipeline benchmark's mix (JSON and FHIR, office
visits; ``BENCH_INTAKE_STAGE_N``), then FHIR bundles of ED visits and hospital stays
(``BENCH_INTAKE_STAGE_ALL_N``) and HL7 v2 messages of every kind of visit
(``BENCH_INTAKE_STAGE_HL7_N``), through ``Runner.process`` of an intake stage with its
per-partition account stores, in batches (bench stage_cv's harness, no broker). What it
re-keys to intake.by-visit.v1 comes back as the next batch, as the broker would return it.
Each batch: process, outputs encoded, every store's changes taken, the commit. Only that
is timed (CPU seconds), per part.

``BENCH_INTAKE_STAGE_DUMP=<file>`` writes every record the stage wrote (encounters, re-keyed
messages, dead letters: topic, key, headers and bytes) and every changelog record, with
the clock fixed, for the corpus followed by ``BENCH_INTAKE_STAGE_BAD`` (default 3000)
corrupted copies of its messages (an element of a FHIR or JSON body replaced, removed or
mistyped; bytes of any body cut or changed): two trees run on the same corpus must write
the same file.

    python -m bench intake_stage   # BENCH_REPEAT (default 3)
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from random import Random
from typing import Any

from bench.bench_stage_cv import Driven  # the same runner-without-broker harness
from pipeline.stage import Runner

BATCH = int(os.environ.get("BENCH_INTAKE_STAGE_BATCH", "100"))
NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
REFERENCE = date(2026, 11, 20)
CLOCK = 1_780_000_000.0
RAW, BY_VISIT = "intake.raw.v1", "intake.by-visit.v1"
Message = tuple[str, str, bytes]  # (source id, content type, body)


def corpus() -> dict[str, list[Message]]:
    """The parts, by name: what the pipeline benchmark sends, then hospital FHIR and HL7."""
    from sim.ehr import generate

    n = int(os.environ.get("BENCH_INTAKE_STAGE_N", "1000"))
    all_n = int(os.environ.get("BENCH_INTAKE_STAGE_ALL_N", "200"))
    hl7_n = int(os.environ.get("BENCH_INTAKE_STAGE_HL7_N", "200"))
    return {
        "mix": list(generate(n, seed=101, fmt="mix", reference_date=REFERENCE)),
        "fhir_all": list(
            generate(all_n, seed=111, fmt="fhir", reference_date=REFERENCE, mix="all")
        ),
        "hl7_all": list(
            generate(hl7_n, seed=121, fmt="hl7v2", reference_date=REFERENCE, mix="all")
        ),
    }


# --- corrupted copies ------------------------------------------------------------------


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path of every object member and list item below value."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, child in items:
        yield (*path, key)
        if isinstance(child, dict | list):
            yield from _paths(child, (*path, key))


def _replacement(value: Any, rnd: Random) -> Any:
    """A wrong value for one element: a null, the wrong JSON type, an empty or changed
    value, a list for a single value and the reverse, an unknown element."""
    choices: list[Any] = [None, [value], "", 7, {"x": 1}]
    if isinstance(value, str):
        choices += [f" {value}", value[:-1], value + "-x", "2026-02-30", "2026-03", value.upper()]
    elif isinstance(value, bool):
        choices += ["true", 1]
    elif isinstance(value, int | float):
        choices += [str(value), -1, 1e400 if rnd.random() < 0.2 else 0, True]
    elif isinstance(value, dict):
        choices += [{}, {**value, "unknownElement": "x"}, {**value, "_id": {"extension": []}}]
    elif isinstance(value, list):
        choices += [[], value[0] if value else {}, [*value, None]]
    return rnd.choice(choices)


def corrupted(messages: list[Message], n: int, seed: int = 131) -> list[Message]:
    """``n`` corrupted copies of messages: mostly one JSON element changed or removed,
    some bodies cut or a byte changed (any format)."""
    rnd = Random(seed)
    out = []
    for k in range(n):
        source_id, ctype, body = messages[rnd.randrange(len(messages))]
        bad_id = f"{source_id}~bad{k}"
        if "json" in ctype and rnd.random() < 0.85:
            data = json.loads(body)
            paths = list(_paths(data))
            path = paths[rnd.randrange(len(paths))]
            parent = data
            for step in path[:-1]:
                parent = parent[step]
            if isinstance(path[-1], str) and rnd.random() < 0.25:
                del parent[path[-1]]
            else:
                parent[path[-1]] = _replacement(parent[path[-1]], rnd)
            out.append((bad_id, ctype, json.dumps(data).encode()))
        elif rnd.random() < 0.5:
            out.append((bad_id, ctype, body[: rnd.randrange(len(body))]))
        else:
            at = rnd.randrange(len(body))
            out.append((bad_id, ctype, body[:at] + bytes([rnd.randrange(256)]) + body[at + 1 :]))
    return out


# --- the stage under the runner ------------------------------------------------------


@contextmanager
def fixed_clock() -> Iterator[None]:
    """Dead letters' and account rows' times fixed, so two runs write the same bytes."""
    import pipeline.stage as stage
    import services.intake.account as account

    class Clock:
        @staticmethod
        def time() -> float:
            return CLOCK

    saved = stage.utcnow, account.time
    stage.utcnow = lambda: NOW  # type: ignore[assignment]
    account.time = Clock  # type: ignore[assignment]
    try:
        yield
    finally:
        stage.utcnow, account.time = saved  # type: ignore[assignment]


def run(parts: dict[str, list[Message]], dump: Any = None) -> dict[str, Any]:
    from services.intake.app import IntakeStage, partitioned_accounts
    from services.intake.settings import IntakeSettings
    from sim.ehr import provider_directory

    with tempfile.TemporaryDirectory() as tmp, fixed_clock():
        state = Path(tmp)
        directory = state / "directory.json"
        directory.write_text(json.dumps(provider_directory().to_json()))
        settings = IntakeSettings(
            state_dir=state / "state",
            topic_prefix="in.",
            group_prefix="in",
            provider_directory=directory,
        )
        stage = IntakeStage(settings, partitioned_accounts(settings.state_dir))
        driven = Driven(Runner(stage, settings, "localhost:1"), dump)
        cpu: dict[str, float] = {}
        encounters: dict[str, int] = {}
        for name, messages in parts.items():
            before, written = driven.cpu, driven.written["encounters.collected.v1"]
            for i in range(0, len(messages), BATCH):
                batch = [
                    driven.message(RAW, sid, {"content-type": ctype.encode()}, body)
                    for sid, ctype, body in messages[i : i + BATCH]
                ]
                while batch:
                    outs = driven.batch(batch)
                    batch = [driven.message(*w) for w in outs if w[0] == BY_VISIT]
            cpu[name] = driven.cpu - before
            encounters[name] = driven.written["encounters.collected.v1"] - written
        stage.close()
        for stores in stage.partitioned_stores():
            stores.close_all()
    total = sum(encounters.values())
    return {
        "messages": {name: len(messages) for name, messages in parts.items()},
        "encounters": encounters,
        "written": dict(sorted(driven.written.items())),
        "cpu_ms_per_encounter": round(driven.cpu * 1000 / max(total, 1), 4),
        **{
            f"{name}_cpu_ms_per_encounter": round(cpu[name] * 1000 / max(encounters[name], 1), 4)
            for name in parts
        },
    }


def main() -> dict[str, Any]:
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    parts = corpus()
    gc.collect()
    gc.freeze()
    path = os.environ.get("BENCH_INTAKE_STAGE_DUMP")
    if path:
        bad = int(os.environ.get("BENCH_INTAKE_STAGE_BAD", "3000"))
        every = [m for messages in parts.values() for m in messages]
        with open(path, "w") as dump:
            dumped = run({**parts, "corrupted": corrupted(every, bad)}, dump)
        if not repeat:
            return dumped
    started = time.perf_counter()
    runs = [run(parts) for _ in range(repeat)]
    best = min(runs, key=lambda r: r["cpu_ms_per_encounter"])
    best["runs_cpu_ms_per_encounter"] = [r["cpu_ms_per_encounter"] for r in runs]
    best["runs_mix_cpu_ms_per_encounter"] = [r["mix_cpu_ms_per_encounter"] for r in runs]
    best["timed_wall_s"] = round(time.perf_counter() - started, 2)
    return best


if __name__ == "__main__":
    print(json.dumps(main()))
