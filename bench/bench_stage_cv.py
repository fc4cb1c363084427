"""The coding and validation stages' own CPU per encounter, in one process, as the runner
drives them (``Runner.process``, the outputs encoded or spliced, the stores' changes taken
and committed), without a broker.

The simulator's encounters (``BENCH_CV_MIX``: office, or all with ED visits and stays; the
pipeline benchmark's mix of formats), parsed by intake, go to the coding stage as
encounters.collected.v1 records in batches; what it writes to coding.by-patient.v1 comes
back to it in the next batch (read back as the live runner does: kept, not decoded), and
its encounters.coded.v1 records go to the validation stage (re-keyed by the runner, then
validated from validation.by-patient.v1). Three partitions each. Only the stages' calls
are timed (CPU seconds), with the collector paused per batch as the runner does.

``BENCH_CV_DUMP=<file>`` writes every record both stages wrote (topic, key, headers and
bytes) and every changelog record, with the clock fixed: two trees run on the same corpus
must write the same file.

    python -m bench stage_cv    # BENCH_CV_N (default 1000), BENCH_CV_MIX (office), BENCH_REPEAT
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Message

from pipeline.serde import registry
from pipeline.settings import Settings
from pipeline.stage import Runner, collector_paused

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
REFERENCE = date(2026, 11, 20)
PARTITIONS = 3
BATCH = int(os.environ.get("BENCH_CV_BATCH", "100"))
COLLECTED, CODED = "encounters.collected.v1", "encounters.coded.v1"


def collected(n: int, mix: str, seed: int = 101) -> list[tuple[str, bytes]]:
    """(key, Avro bytes) of the encounters intake makes of ``n`` simulated visits."""
    from services.claims.settings import ClaimsSettings
    from services.intake.domain import parse_raw
    from services.refdata.masterdata import load_master_data
    from sim.ehr import generate

    master = load_master_data(ClaimsSettings())
    reg = registry()
    out = []
    for source_id, ctype, body in generate(
        n,
        seed=seed,
        fmt="mix",
        reference_date=REFERENCE,
        mix=mix,  # type: ignore[arg-type]
    ):
        parsed = parse_raw(
            body,
            ctype,
            source_id=source_id,
            received_at=NOW,
            directory=master.providers,
            chargemaster=master.chargemaster,
        )
        out += [(e.encounter_id, reg.encode(COLLECTED, e)) for e in parsed.encounters]
    return out


@contextmanager
def fixed_clock() -> Iterator[None]:
    """The stages' ``utcnow`` fixed, so that what they write depends on the input only."""
    import services.coding.app as coding_app
    import services.validation.app as validation_app

    saved = coding_app.utcnow, validation_app.utcnow
    coding_app.utcnow = validation_app.utcnow = lambda: NOW  # type: ignore[assignment]
    try:
        yield
    finally:
        coding_app.utcnow, validation_app.utcnow = saved  # type: ignore[assignment]


Written = tuple[str, str, dict[str, bytes], bytes]
"""(topic, key, headers, bytes) of a record a stage wrote."""


class Driven:
    """One stage under a runner without a broker: batches in, outputs encoded."""

    def __init__(self, runner: Runner, dump: Any) -> None:
        self.runner = runner
        self.settings = runner.settings
        self.cpu = 0.0
        self.records = 0
        self.offsets: dict[tuple[str, int], int] = {}
        self.written: Counter[str] = Counter()
        self.dump = dump
        for stores in runner.stage.partitioned_stores():
            for p in range(PARTITIONS):
                stores.open(p)

    def message(self, topic: str, key: str, headers: dict[str, bytes], value: bytes) -> Any:
        part = zlib.crc32(key.encode()) % PARTITIONS
        offset = self.offsets.get((topic, part), 0)
        self.offsets[(topic, part)] = offset + 1
        return Message(
            topic=self.settings.topic(topic),
            partition=part,
            offset=offset,
            key=key.encode(),
            value=value,
            headers=list(headers.items()) or None,
            timestamp=(1, 1_700_000_000_000 + offset),
        )

    def batch(self, batch: list[Any]) -> list[Written]:
        """The runner's work on one batch: process, encode, changelogs, commit (the batch's
        models freed before the collector runs again, as ``Runner.run`` does)."""
        runner = self.runner
        changes: list[tuple[str, int, str, bytes | None]] = []
        started = time.process_time()
        with collector_paused():
            outs, _ = runner.process(batch)
            encoded = [
                (o.topic, o.key, o.headers, o.raw if o.raw is not None else runner._encoded(o))
                for o in outs
            ]
            for stores in runner._stores:
                for part, store in stores.items():
                    changes += [(stores.name, part, k, v) for k, v in store.take_changes()]
            runner._batch_done()
            del outs
        self.cpu += time.process_time() - started
        self.records += len(batch)
        self.written.update(w[0] for w in encoded)
        if self.dump is not None:
            for topic, key, headers, raw in encoded:
                plain = json.dumps({k: v.hex() for k, v in sorted(headers.items())})
                self.dump.write(f"{topic}\t{key}\t{plain}\t{raw.hex()}\n")
            for name, part, k, v in changes:
                self.dump.write(f"changelog\t{name}\t{part}\t{k}\t{v.hex() if v else None}\n")
        return encoded


def run(corpus: list[tuple[str, bytes]], dump: Any = None) -> dict[str, Any]:
    from services.coding.app import CodingStage, partitioned_risk
    from services.coding.audit import AuditPolicy, AuditStore
    from services.coding.review import BY_PATIENT as CODING_BY_PATIENT
    from services.coding.review import ReviewStore
    from services.validation.app import BY_PATIENT, ValidationStage, partitioned_history

    with tempfile.TemporaryDirectory() as tmp, fixed_clock():
        state = Path(tmp)
        settings = Settings(state_dir=state, topic_prefix="cv.", group_prefix="cv")
        coding_stage = CodingStage(
            CODER,
            ReviewStore(state / "review.sqlite3"),
            AuditStore(state / "audit.sqlite3", AuditPolicy()),
            partitioned_risk(state),
        )
        coding = Driven(Runner(coding_stage, settings, "localhost:1"), dump)
        validation_stage = ValidationStage(
            CODESETS, None, partitioned_history(state / "validation"), PAYERS
        )
        validation = Driven(Runner(validation_stage, settings, "localhost:1"), dump)
        pending: list[Any] = []
        coded = 0
        for i in range(0, len(corpus) + BATCH, BATCH):
            batch = pending + [
                coding.message(COLLECTED, k, {}, v) for k, v in corpus[i : i + BATCH]
            ]
            if not batch:
                break
            outs = coding.batch(batch)
            pending = [coding.message(*w) for w in outs if w[0] == CODING_BY_PATIENT]
            to_validate = [validation.message(*w) for w in outs if w[0] == CODED]
            coded += len(to_validate)
            if to_validate:
                rekeyed = validation.batch(to_validate)
                validation.batch([validation.message(*w) for w in rekeyed if w[0] == BY_PATIENT])
        coding_stage.store.close()  # not the stage: its coder is shared by every run
        coding_stage.audits.close()
        for stage in (coding_stage, validation_stage):
            for stores in stage.partitioned_stores():
                stores.close_all()
    return {
        "encounters": len(corpus),
        "coded": coded,
        "written": dict(sorted((coding.written + validation.written).items())),
        "coding_cpu_ms_per_encounter": round(coding.cpu * 1000 / len(corpus), 4),
        "validation_cpu_ms_per_encounter": round(validation.cpu * 1000 / len(corpus), 4),
    }


CODER: Any = None
CODESETS: Any = None
PAYERS: Any = None


def load() -> None:
    global CODER, CODESETS, PAYERS
    from services.claims.settings import ClaimsSettings
    from services.coding.domain import Coder
    from services.refdata.codesets import CodeSets
    from services.refdata.masterdata import load_master_data

    if CODER is None:
        CODER = Coder.load(None)
        CODER.index  # noqa: B018 - built now, as the service does at start
        CODESETS = CodeSets.load(None)
        PAYERS = load_master_data(ClaimsSettings()).payers


def main(runs: Callable[[], Any] | None = None) -> dict[str, Any]:
    n = int(os.environ.get("BENCH_CV_N", "1000"))
    mix = os.environ.get("BENCH_CV_MIX", "office")
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    load()
    corpus = collected(n, mix)
    gc.collect()
    gc.freeze()
    path = os.environ.get("BENCH_CV_DUMP")
    if path:
        with open(path, "w") as dump:
            run(corpus, dump)
    results = [run(corpus) for _ in range(repeat)]
    if not results:  # BENCH_REPEAT=0: the dump only
        return {"encounters": len(corpus), "mix": mix}
    best = {
        **results[0],
        "coding_cpu_ms_per_encounter": min(r["coding_cpu_ms_per_encounter"] for r in results),
        "validation_cpu_ms_per_encounter": min(
            r["validation_cpu_ms_per_encounter"] for r in results
        ),
        "runs_coding": [r["coding_cpu_ms_per_encounter"] for r in results],
        "runs_validation": [r["validation_cpu_ms_per_encounter"] for r in results],
        "mix": mix,
    }
    return best


if __name__ == "__main__":
    print(json.dumps(main()))
