"""The claims stage's own CPU per encounter in steady state, in one process.

The simulator's encounters (``mix`` office or all) are coded and validated, then billed by
the claims stage with its per-partition stores and their changelogs (the runner's work
after each batch emulated: every store's ``take_changes``, then the commit); the payer
simulator answers every interchange (999, 277CA, 835), the 999s and 277CAs go back to
the claims stage, the 835s through remittance, whose postings bill the next payers
(secondaries, then tertiaries). Only the claims stage's calls are timed (CPU seconds),
per kind of input.

``BENCH_CLAIMS_LAG=<encounters>`` measures instead how the cost grows with the stores'
history, as the pipeline feeds the stage: each batch of verdicts billed and acknowledged at
once, its 835s posted (and their settlements recorded) once that many more encounters were
billed, the next payers' claims acknowledged and posted the same way. The CPU per
encounter and per input of each window of ``BENCH_CLAIMS_WINDOW`` encounters (default
2000) is reported: the first window's beside the last's. With ``BENCH_CLAIMS_HISTORY=<H>``
as well, the encounters after the first H go through a fresh stage, then through a stage
restarted on the stores that billed the first H (the pipeline benchmark's
``cpu_growth_stores``: the stores' history alone, without what a long-running stage keeps
in memory).

``BENCH_CLAIMS_DUMP=<file>`` writes what the stage produced (every output record, every
changelog record, with the clock-dependent fields blanked) as JSON lines: two trees run
on the same corpus must write the same file.

    python -m bench claims_stage      # BENCH_CLAIMS_N (default 600), BENCH_CLAIMS_MIX
    BENCH_CLAIMS_N=20000 BENCH_CLAIMS_MIX=office BENCH_CLAIMS_LAG=300 python -m bench claims_stage
    BENCH_CLAIMS_N=20000 BENCH_CLAIMS_MIX=office BENCH_CLAIMS_LAG=300 \
        BENCH_CLAIMS_HISTORY=18000 python -m bench claims_stage
"""

from __future__ import annotations

import base64
import gc
import json
import os
import re
import tempfile
import time
import zlib
from collections import defaultdict, deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.chain import validated
from pipeline.models import Model, PayerFile
from pipeline.serde import registry
from pipeline.stage import Incoming, Out, collector_paused

PARTITIONS = 3
BATCH = int(os.environ.get("BENCH_CLAIMS_BATCH", "50"))


def verdicts(n: int, mix: str, seed: int = 11) -> list[Model]:
    """The validated encounters of ``n`` simulated visits (the offline chain's steps)."""
    return [verdict for _, _, verdict in validated(n, seed, mix)]


def partition(key: str) -> int:
    return zlib.crc32(key.encode()) % PARTITIONS


_CLOCK = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)?")
_TODAY = datetime.now(UTC)
# An interchange built now (a next payer's claim) is dated now: ISA09/10, GS04/05, BHT04/05.
_X12_NOW = re.compile(rf"\*(20)?{_TODAY:%y%m%d}\*\d{{4}}\*")


def _plain(value: Any) -> Any:
    """A record for the dump: clock-dependent values (ISO times of now) blanked, those of a
    posting the COB ledger keeps as Avro (base64) too."""
    if isinstance(value, dict) and isinstance(value.get("posting"), str):
        posting = registry().decode("remittance.posted.v1", base64.b64decode(value["posting"]))
        value = {**value, "posting": json.loads(posting.model_dump_json())}
    if isinstance(value, Model):
        value = json.loads(value.model_dump_json())
    text = json.dumps(value, sort_keys=True, default=str)
    return _X12_NOW.sub("*D*T*", _CLOCK.sub("T", text))


class Loop:
    """The claims stage between the payer simulator and remittance, timed."""

    def __init__(self, state: Path, dump: Any) -> None:
        from services.claims.adapters import build_router
        from services.claims.app import ClaimsStage
        from services.claims.settings import ClaimsOptions, ClaimsSettings
        from services.remittance.app import RemittanceStage
        from services.remittance.ledger import Ledger
        from sim.payer_app import PayerSimOptions, PayerSimStage

        settings = ClaimsSettings(state_dir=state, claims=ClaimsOptions(routes={"*": "simulator"}))
        router = build_router(settings.claims.routes, settings.claims.adapters, state)
        self.stage = ClaimsStage(settings, None, router, sleep=lambda _: None)
        self.payer = PayerSimStage(PayerSimOptions(validate_every=1_000_000))
        self.remittance = RemittanceStage(Ledger(":memory:"))
        self.reg = registry()
        self.cpu: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self.offset = 0
        self.dump = dump

    def _incoming(self, topic: str, key: str, value: Model, part: int) -> Incoming:
        self.offset += 1
        raw = self.reg.encode(topic, value)
        return Incoming(topic, key, value, raw, {}, part, self.offset, 0)

    def claims(self, kind: str, msgs: list[Incoming]) -> list[Out]:
        """One batch through the claims stage, then what the runner does after it, with
        the collector paused and what is left frozen, as ``Runner.run`` does (else a full
        collection of the whole process, the payer simulator's and remittance's objects
        too, lands on a random claims call: 0.18 s on one lookup after 10,000 encounters)."""
        started = time.process_time()
        with collector_paused(freeze=True):
            outs = list(self.stage.handle_batch(msgs))
            changes = []
            for stores in self.stage.partitioned_stores():
                for part, store in stores.items():
                    changes += [(stores.name, part, k, v) for k, v in store.take_changes()]
            self.stage.on_batch_done()
        self.cpu[kind] += time.process_time() - started
        self.counts[kind] += len(msgs)
        if self.dump is not None:
            for o in outs:
                value = o.value if o.value is not None else o.raw
                self.dump.write(f"{o.topic}\t{o.key}\t{_plain(value)}\n")
            for name, part, key, value in changes:
                row = json.loads(value) if value is not None else None
                self.dump.write(f"changelog\t{name}\t{part}\t{key}\t{_plain(row)}\n")
        return outs

    def bill(self, batch: list[Model]) -> list[Out]:
        msgs = [
            self._incoming("encounters.validated.v1", v.encounter_id, v, partition(v.encounter_id))
            for v in batch
        ]
        return self.claims("verdicts", msgs)

    def answer(self, outs: list[Out]) -> list[Out]:
        """The payer simulator's files for the claims in ``outs``, then the 999s and 277CAs
        through the claims stage; returns the 835s."""
        sent = [
            Incoming(o.topic, o.key, o.value, b"", o.headers or {}, 0, 0, 0)
            for o in outs
            if o.topic in ("claims.interchanges.v1", "claims.submitted.v1")
        ]
        for o in outs:
            if o.topic == "claims.submitted.v1":
                self.remittance.handle(
                    Incoming("claims.submitted.v1", o.key, o.value, b"", {}, 0, 0, 0)
                )
        files = [o.value for o in self.payer.handle_batch(sent)]
        self.payer.on_batch_done()
        acks = [f for f in files if isinstance(f, PayerFile) and f.kind != "835"]
        msgs = [self._incoming("payer.inbound.v1", f.file_id, f, 0) for f in acks]
        if msgs:
            self.claims("acks", msgs)
        return [
            self._incoming("payer.inbound.v1", f.file_id, f, 0)
            for f in files
            if isinstance(f, PayerFile) and f.kind == "835"
        ]

    def post(self, remits: list[Incoming]) -> list[Out]:
        """The 835s posted by remittance; each posting through the claims stage by encounter."""
        postings = []
        for msg in remits:
            for o in self.remittance.handle(msg):
                if o.topic == "remittance.posted.v1" and o.value.encounter_id:
                    postings.append(o.value)
        msgs = [
            self._incoming(
                "claims.postings-by-encounter.v1", p.encounter_id, p, partition(p.encounter_id)
            )
            for p in postings
        ]
        outs: list[Out] = []
        for i in range(0, len(msgs), BATCH):
            outs += self.claims("postings", msgs[i : i + BATCH])
        return outs


class Settling(Loop):
    """The loop whose postings also carry their claims' settlements to the stage, keyed by
    encounter as the stage re-keys them (``claims.settled-by-encounter.v1``)."""

    def post(self, remits: list[Incoming]) -> list[Out]:
        msgs = []
        for msg in remits:
            for o in self.remittance.handle(msg):
                if o.topic == "remittance.posted.v1" and o.value.encounter_id:
                    topic = "claims.postings-by-encounter.v1"
                elif o.topic == "remittance.settled.v1" and o.value.encounter_id:
                    topic = "claims.settled-by-encounter.v1"
                else:
                    continue
                key = o.value.encounter_id
                msgs.append(self._incoming(topic, key, o.value, partition(key)))
        outs: list[Out] = []
        for i in range(0, len(msgs), BATCH):
            outs += self.claims("postings", msgs[i : i + BATCH])
        return outs


def feed(loop: Loop, corpus: list[Model], lag: int, tick: Any = None) -> None:
    """The corpus billed in batches, each batch's 835s posted once ``lag`` more encounters
    were billed (as the pipeline's postings trail their bills), the next payers' claims the
    same way; then what is still pending. ``tick(end)`` after each batch billed."""
    pending: deque[tuple[int, list[Incoming]]] = deque()
    for i in range(0, len(corpus), BATCH):
        pending.append((i, loop.answer(loop.bill(corpus[i : i + BATCH]))))
        while pending and pending[0][0] <= i - lag:
            _, remits = pending.popleft()
            if more := loop.answer(loop.post(remits)):
                pending.append((i, more))
        if tick is not None:
            tick(i + len(corpus[i : i + BATCH]))
    while pending:
        _, remits = pending.popleft()
        if more := loop.answer(loop.post(remits)):
            pending.append((len(corpus), more))


def _window(loop: Loop, before: dict[str, Any], encounters: int) -> dict[str, Any]:
    """The stage's CPU since ``before`` (a copy of the loop's counts, updated)."""
    spent = {k: v - before["cpu"].get(k, 0.0) for k, v in loop.cpu.items()}
    seen = {k: v - before["counts"].get(k, 0) for k, v in loop.counts.items()}
    before["cpu"] = dict(loop.cpu)
    before["counts"] = dict(loop.counts)
    return {
        "cpu_ms_per_encounter": round(sum(spent.values()) * 1000 / encounters, 4),
        "ms_per_input": {k: round(spent[k] * 1000 / seen[k], 4) for k in spent if seen.get(k)},
        "inputs": {k: n for k, n in seen.items() if n},
    }


def _growth(first: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
    return {
        "growth": round(last["cpu_ms_per_encounter"] / first["cpu_ms_per_encounter"], 3),
        "growth_per_input": {
            k: round(v / first["ms_per_input"][k], 3)
            for k, v in last["ms_per_input"].items()
            if first["ms_per_input"].get(k)
        },
    }


def grow(corpus: list[Model], lag: int, window: int, dump: Any = None) -> dict[str, Any]:
    """``feed`` in one stage; its CPU per window of ``window`` encounters billed (the
    postings pending at the end are not measured)."""
    windows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        loop = Settling(Path(tmp), dump)
        before: dict[str, Any] = {"cpu": {}, "counts": {}, "start": 0}

        def tick(end: int) -> None:
            if end - before["start"] >= window or end == len(corpus):
                windows.append(
                    {"encounters": [before["start"], end]}
                    | _window(loop, before, end - before["start"])
                )
                before["start"] = end

        feed(loop, corpus, lag, tick)
        loop.stage.close()
    return (
        {"encounters": len(corpus), "lag": lag}
        | _growth(windows[0], windows[-1])
        | {"windows": windows}
    )


def restarted(corpus: list[Model], history: int, lag: int) -> dict[str, Any]:
    """The encounters after the first ``history`` through a fresh stage, then through a
    stage restarted on the stores that billed the first ``history`` (the pipeline
    benchmark's ``cpu_growth_stores``: the stores' history alone, nothing kept in memory)."""
    measured = corpus[history:]
    runs = {}
    with tempfile.TemporaryDirectory() as fresh, tempfile.TemporaryDirectory() as grown:
        filler = Settling(Path(grown), None)
        feed(filler, corpus[:history], lag)
        filler.stage.close()
        for name, state in (("fresh", fresh), ("grown", grown)):
            gc.collect()
            loop = Settling(Path(state), None)
            feed(loop, measured, lag)
            loop.stage.close()
            runs[name] = _window(loop, {"cpu": {}, "counts": {}}, len(measured))
    return {"history": history, "lag": lag} | _growth(runs["fresh"], runs["grown"]) | runs


def run(corpus: list[Model], dump: Any = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        loop = Loop(Path(tmp), dump)
        remits: list[Incoming] = []
        for i in range(0, len(corpus), BATCH):
            remits += loop.answer(loop.bill(corpus[i : i + BATCH]))
        for _ in range(2):  # secondaries, then tertiaries
            remits = loop.answer(loop.post(remits))
        loop.post(remits)
        loop.stage.close()
    total = sum(loop.cpu.values())
    return {
        "encounters": len(corpus),
        "cpu_ms_per_encounter": round(total * 1000 / len(corpus), 4),
        "cpu_ms": {k: round(v * 1000, 1) for k, v in loop.cpu.items()},
        "inputs": dict(loop.counts),
    }


def main() -> dict[str, Any]:
    n = int(os.environ.get("BENCH_CLAIMS_N", "600"))
    mix = os.environ.get("BENCH_CLAIMS_MIX", "all")
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    corpus = verdicts(n, mix)
    # The corpus and the coder's tables are this process's, not the stage's: kept out of
    # the collector's full passes, which would otherwise land on random claims calls.
    gc.collect()
    gc.freeze()
    path = os.environ.get("BENCH_CLAIMS_DUMP")
    lag = os.environ.get("BENCH_CLAIMS_LAG")
    history = os.environ.get("BENCH_CLAIMS_HISTORY")
    if lag is not None and history is not None:
        return restarted(corpus, int(history), int(lag))
    if lag is not None:
        window = int(os.environ.get("BENCH_CLAIMS_WINDOW", "2000"))
        if path:
            with open(path, "w") as dump:
                return grow(corpus, int(lag), window, dump)
        return grow(corpus, int(lag), window)
    if path:
        with open(path, "w") as dump:
            run(corpus, dump)
    runs = [run(corpus) for _ in range(repeat)]
    best = min(runs, key=lambda r: r["cpu_ms_per_encounter"])
    best["runs_cpu_ms_per_encounter"] = [r["cpu_ms_per_encounter"] for r in runs]
    best["mix"] = mix
    return best


if __name__ == "__main__":
    print(json.dumps(main()))
