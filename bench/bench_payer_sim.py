"""The payer simulator's CPU per encounter, and the X12 reader's on the files it writes.

The claims stage's loop (bench_claims_stage) is run once to record what the simulator is
given (claims.interchanges.v1 and claims.submitted.v1 batches, secondaries and tertiaries
included); those batches are then answered again by a fresh simulator, timed (CPU). The
files it writes (999, 277CA, 835) are then read back with ``read_segments``, timed.

``BENCH_PAYER_DUMP=<file>`` writes every file the simulator produced (key, kind, body),
so two trees run on the same corpus must write the same file.

    python -m bench payer_sim      # BENCH_PAYER_N (default 600), BENCH_PAYER_MIX (all)
"""

from __future__ import annotations

import gc
import os
import pickle
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.models import PayerFile
from pipeline.stage import Incoming


def capture(n: int, mix: str) -> list[list[Incoming]]:
    """The simulator's input batches in the claims stage's loop."""
    from bench import bench_claims_stage as cs

    batches: list[list[Incoming]] = []
    with tempfile.TemporaryDirectory() as tmp:
        loop = cs.Loop(Path(tmp), None)
        real = loop.payer.handle_batch

        def record(msgs: list[Incoming]) -> Any:
            batches.append(list(msgs))
            return real(msgs)

        loop.payer.handle_batch = record  # type: ignore[method-assign]
        corpus = cs.verdicts(n, mix)
        remits: list[Incoming] = []
        for i in range(0, len(corpus), cs.BATCH):
            remits += loop.answer(loop.bill(corpus[i : i + cs.BATCH]))
        for _ in range(2):
            remits = loop.answer(loop.post(remits))
        loop.stage.close()
    return batches


def corpus(n: int, mix: str) -> list[list[Incoming]]:
    cache = os.environ.get("BENCH_PAYER_CACHE")
    if cache:
        path = Path(cache) / f"payer-{mix}-{n}.pickle"
        if path.exists():
            return pickle.loads(path.read_bytes())  # noqa: S301 - our own file
        batches = capture(n, mix)
        path.write_bytes(pickle.dumps(batches))
        return batches
    return capture(n, mix)


def answer(batches: list[list[Incoming]]) -> tuple[float, list[PayerFile]]:
    from sim import payer
    from sim.payer_app import PayerSimOptions, PayerSimStage

    for name in ("payer_claim_control_number", "read_envelope", "_claims_of", "_segments"):
        clear = getattr(getattr(payer, name), "cache_clear", None)
        if clear is not None:  # each run answers claims it has never seen
            clear()
    stage = PayerSimStage(PayerSimOptions(validate_every=1_000_000))
    files: list[PayerFile] = []
    cpu = 0.0
    for msgs in batches:
        started = time.process_time()
        outs = list(stage.handle_batch(msgs))
        stage.on_batch_done()
        cpu += time.process_time() - started
        files += [o.value for o in outs]
    stage.close()
    return cpu, files


def read(files: list[PayerFile]) -> dict[str, float]:
    from services.x12.reader import read_segments

    texts = [(f.kind, f.body.decode("ascii")) for f in files]
    cpu: dict[str, float] = {}
    for kind in ("999", "277CA", "835"):
        mine = [t for k, t in texts if k == kind]
        started = time.process_time()
        for text in mine:
            for seg in read_segments(text):
                seg.elements  # noqa: B018
        cpu[kind] = round((time.process_time() - started) * 1e6 / max(1, len(mine)), 2)
    return cpu


def main() -> dict[str, Any]:
    n = int(os.environ.get("BENCH_PAYER_N", "600"))
    mix = os.environ.get("BENCH_PAYER_MIX", "all")
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    batches = corpus(n, mix)
    gc.collect()
    gc.freeze()
    path = os.environ.get("BENCH_PAYER_DUMP")
    runs = []
    reads = []
    for i in range(repeat):
        cpu, files = answer(batches)
        runs.append(round(cpu * 1000 / n, 4))
        reads.append(read(files))
        if i == 0 and path:
            with open(path, "w") as dump:
                for f in files:
                    dump.write(f"{f.payer_id}\t{f.file_id}\t{f.kind}\t{f.event_id}\n")
                    dump.write(f.body.decode("ascii"))
                    dump.write("\n")
    return {
        "encounters": n,
        "mix": mix,
        "files": len(files),
        "cpu_ms_per_encounter": min(runs),
        "runs_cpu_ms_per_encounter": runs,
        "read_us_per_file": {k: min(r[k] for r in reads) for k in reads[0]},
    }


if __name__ == "__main__":
    import json

    print(json.dumps(main()))
