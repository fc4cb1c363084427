"""The remittance stage's own CPU per encounter, in one process, as the runner drives it.

The inputs are the simulator's: encounters (``mix`` office or all) coded, validated and
billed by the claims stage, answered by the payer simulator (``bench_claims_stage``'s
loop, secondaries and tertiaries included); what reached remittance there (every
``claims.submitted.v1`` record and every 835 on ``payer.inbound.v1``, in order) is then
played, encoded, through ``Runner.process`` of a remittance stage with its per-partition
ledgers and changelogs, in batches; the claim payments and payer payments it writes come
back as the next batch, as the broker would return them. Each batch: process, outputs
encoded, every store's changes taken, the commit. Only that is timed (CPU seconds).

``BENCH_REMIT_DUMP=<file>`` writes every output record and every changelog record (bytes
as hex; the clock fixed): two trees run on the same corpus must write the same file.
``BENCH_REMIT_INPUTS=<file>`` keeps the inputs (pickled) between runs.

    python -m bench remittance_stage   # BENCH_REMIT_N (default 1000), BENCH_REMIT_MIX (all)
"""

from __future__ import annotations

import gc
import json
import os
import pickle
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.bench_stage_cv import Driven  # the same runner-without-broker harness
from pipeline.serde import registry
from pipeline.settings import Settings
from pipeline.stage import Incoming, Runner

BATCH = int(os.environ.get("BENCH_REMIT_BATCH", "50"))
NOW = datetime(2026, 3, 9, 8, 0, tzinfo=UTC)
CLOCK = 1_780_000_000.0
FEEDBACK = ("remittance.claim-payments.v1", "remittance.payer-payments.v1")


def inputs(n: int, mix: str) -> list[tuple[str, str, bytes]]:
    """(topic, key, Avro bytes) of what reached remittance in the claims bench's loop."""
    from bench.bench_claims_stage import BATCH as CLAIMS_BATCH
    from bench.bench_claims_stage import Loop, verdicts

    corpus = verdicts(n, mix)
    reg = registry()
    seen: list[tuple[str, str, bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        loop = Loop(Path(tmp), None)
        handle = loop.remittance.handle

        def recorded(msg: Incoming) -> Any:
            seen.append((msg.topic, msg.key or "", reg.encode(msg.topic, msg.value)))
            return handle(msg)

        loop.remittance.handle = recorded  # type: ignore[method-assign]
        remits: list[Any] = []
        for i in range(0, len(corpus), CLAIMS_BATCH):
            remits += loop.answer(loop.bill(corpus[i : i + CLAIMS_BATCH]))
        for _ in range(2):
            remits = loop.answer(loop.post(remits))
        loop.post(remits)
        loop.stage.close()
    return seen


@contextmanager
def fixed_clock() -> Iterator[None]:
    """The stage's ``utcnow`` fixed, so two runs write the same bytes."""
    import services.remittance.exceptions as exceptions
    import services.remittance.matching as matching

    saved = (matching.utcnow, exceptions.utcnow)
    matching.utcnow = exceptions.utcnow = lambda: NOW  # type: ignore[assignment]
    try:
        yield
    finally:
        matching.utcnow, exceptions.utcnow = saved  # type: ignore[assignment]


def run(seen: list[tuple[str, str, bytes]], encounters: int, dump: Any = None) -> dict[str, Any]:
    from services.remittance.app import RemittanceStage, partitioned_ledgers

    with tempfile.TemporaryDirectory() as tmp, fixed_clock():
        state = Path(tmp)
        settings = Settings(state_dir=state, topic_prefix="rm.", group_prefix="rm")
        claims, payers = partitioned_ledgers(state)
        stage = RemittanceStage(claims=claims, payers=payers, clock=lambda: CLOCK)
        driven = Driven(Runner(stage, settings, "localhost:1"), dump)
        for i in range(0, len(seen), BATCH):
            batch = [driven.message(t, k, {}, v) for t, k, v in seen[i : i + BATCH]]
            while batch:
                outs = driven.batch(batch)
                batch = [driven.message(*w) for w in outs if w[0] in FEEDBACK]
        for stores in stage.partitioned_stores():
            stores.close_all()
    return {
        "encounters": encounters,
        "inputs": len(seen),
        "written": dict(sorted(driven.written.items())),
        "cpu_ms_per_encounter": round(driven.cpu * 1000 / encounters, 4),
    }


def main() -> dict[str, Any]:
    n = int(os.environ.get("BENCH_REMIT_N", "1000"))
    mix = os.environ.get("BENCH_REMIT_MIX", "all")
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    cache = os.environ.get("BENCH_REMIT_INPUTS")
    if cache and Path(cache).exists():
        seen = pickle.loads(Path(cache).read_bytes())  # noqa: S301 - our own file
    else:
        seen = inputs(n, mix)
        if cache:
            Path(cache).write_bytes(pickle.dumps(seen))
    gc.collect()
    gc.freeze()
    path = os.environ.get("BENCH_REMIT_DUMP")
    if path:
        with open(path, "w") as dump:
            run(seen, n, dump)
    runs = [run(seen, n) for _ in range(repeat)]
    best = min(runs, key=lambda r: r["cpu_ms_per_encounter"])
    best["runs_cpu_ms_per_encounter"] = [r["cpu_ms_per_encounter"] for r in runs]
    best["mix"] = mix
    return best


if __name__ == "__main__":
    print(json.dumps(main()))
