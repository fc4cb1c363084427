"""End to end: the embedded broker and every service as separate processes.

Measures, in one run: the raw consume->produce copy of the same EHR messages through
the broker (the ceiling), then N encounters at maximum rate (throughput, per-stage rates)
and at a fixed rate (latency publish->submitted and publish->posted, p50/p99), then, once
the stages' stores hold HISTORY encounters, N more at maximum rate: the CPU per encounter
of each stage with that history beside the same figure with a fresh history
(``cpu_growth``: 1.0 is flat). That growth is the stores' and the embedded broker's
together (Tansu keeps every record in memory and slows as it fills), so the services
are then restarted on the stores they kept with an empty broker and N more measured:
``cpu_growth_stores`` is the stores' part alone. Last, broker and services restart empty
and the first N are measured again: the two fresh costs bracket the grown phases in time,
so a steady drift of the host's speed cancels out of ``cpu_growth_bracketed`` and
``cpu_growth_stores_bracketed``. A single bracket still swings with the host (a grown
phase can fall in a slow minute and both fresh ones in fast ones), so the services then
restart, in turn, on a copy of the grown stores as they were after the history and on empty
stores, PAIRS times, each phase on an empty broker: ``cpu_growth_stores_alternating`` is the
median of each grown phase over the mean of the fresh phases on either side of it, and
``cpu_ms_per_encounter_fresh_median`` the median of every fresh phase. Each phase's CPU is
counted from a quiet pipeline to a quiet pipeline (``run_batch``), and
``records_per_encounter`` shows that each phase's stages handled the same work.
Environment: BENCH_N (default 2000), BENCH_RATE (default 200), BENCH_RATE_N (default 1000),
BENCH_HISTORY (default 20000; 0 skips the history phase), BENCH_WARM (default 300: the
encounters after each start of the services that are not measured, ``WARM_UP``),
BENCH_PAIRS (default 3; 0 skips the alternating phases).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import Consumer, Producer
from prometheus_client.parser import text_string_to_metric_families

from pipeline.broker import EMBEDDED_PARTITIONS, EmbeddedBroker
from pipeline.kafka import ensure_topics, make_producer
from pipeline.serde import registry
from pipeline.settings import Settings
from pipeline.supervisor import Supervisor
from pipeline.tracker import Ledger, Tracker
from sim.ehr import generate

PAYER_SIM_VALIDATE_EVERY = 10
PROGRESS_EVERY_S = 5.0

STAGE_TOPICS = {
    "intake": "encounters.collected.v1",
    "coding": "encounters.coded.v1",
    "validation": "encounters.validated.v1",
    "claims": "claims.submitted.v1",
    "remittance": "remittance.posted.v1",
}


def raw_copy_rate(bootstrap: str, messages: list[tuple[str, str, bytes]]) -> float:
    """Records/s of a plain consume->produce copy of ``messages`` (no decoding)."""
    src, dst = f"bench.src.{uuid.uuid4().hex[:6]}", f"bench.dst.{uuid.uuid4().hex[:6]}"
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "log_level": 3})
    for source_id, ctype, body in messages:
        producer.produce(
            src, key=source_id.encode(), value=body, headers=[("content-type", ctype.encode())]
        )
        producer.poll(0)
    producer.flush(30)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": src,
            "log_level": 3,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([src])
    copied, started = 0, None
    deadline = time.monotonic() + 120
    while copied < len(messages) and time.monotonic() < deadline:
        batch = consumer.consume(500, 0.01)
        if batch and started is None:
            started = time.perf_counter()
        for m in batch:
            if m.error():
                continue
            producer.produce(dst, key=m.key(), value=m.value(), headers=m.headers())
            copied += 1
        if batch:
            producer.flush(30)
            consumer.commit(asynchronous=False)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return copied / elapsed if elapsed > 0 else 0.0


def publish(
    producer: Producer,
    settings: Settings,
    messages: list[tuple[str, str, bytes]],
    rate: float,
    sent_ms: dict[str, int],
) -> None:
    """Publish like a long-lived EHR feed: ``producer`` is connected before the clock starts."""
    topic = settings.topic("intake.raw.v1")
    started = time.monotonic()
    for i, (source_id, ctype, body) in enumerate(messages):
        if rate > 0:
            ahead = i / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        sent_ms[source_id] = int(time.time() * 1000)
        producer.produce(
            topic, key=source_id.encode(), value=body, headers=[("content-type", ctype.encode())]
        )
        producer.poll(0)
    producer.flush(30)


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (Linux /proc), in seconds."""
    return cpu_seconds_of(Path(f"/proc/{pid}/stat"))


def main_thread_seconds(pid: int) -> float:
    """User + system CPU of a process's main thread (the Python one; librdkafka's and the
    metrics server's are the others), in seconds."""
    return cpu_seconds_of(Path(f"/proc/{pid}/task/{pid}/stat"))


def user_and_system_seconds(pid: int) -> tuple[float, float]:
    """A process's user CPU and its system CPU (the kernel's work for it: its reads and
    writes of the stores' files, the sockets), in seconds, from one reading of /proc."""
    return user_and_system_of(Path(f"/proc/{pid}/stat"))


def cpu_seconds_of(stat: Path) -> float:
    """User + system CPU of a /proc ``stat`` file, in seconds."""
    return sum(user_and_system_of(stat))


def user_and_system_of(stat: Path) -> tuple[float, float]:
    """User and system CPU of a /proc ``stat`` file, in seconds."""
    fields = stat.read_text().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


T = TypeVar("T")


def cpu_now(pids: dict[str, int], read: Callable[[int], T]) -> dict[str, T]:
    """``read`` (``cpu_seconds``, a process's main thread's, its user and system CPU) of
    each process still there."""
    now = {}
    for name, pid in pids.items():
        try:
            now[name] = read(pid)
        except (OSError, IndexError, ValueError):
            continue
    return now


#: What ``stage_counts`` reads from each stage's /metrics (the sum over its series).
COUNTED = {
    "records": "claimflow_processing_seconds_count",
    "batches": "claimflow_batch_seconds_count",
    "sweep_s": "claimflow_gc_sweep_seconds_sum",
}
_COUNTED_BY_SAMPLE = {sample: what for what, sample in COUNTED.items()}


def stage_counts(sup: Supervisor | None) -> dict[str, dict[str, float]]:
    """Each stage's records and batches handled so far and its full collections' CPU
    seconds (``COUNTED``), from its /metrics. A stage's CPU per record depends on how many
    records share a batch's fixed costs (commits, flushes), which depends on how fast its
    input arrives; and a full collection (``pipeline.stage.sweep``, every two minutes)
    that falls in a phase is charged to that phase's encounters."""
    counts: dict[str, dict[str, float]] = {}
    for name, child in sup.children.items() if sup is not None else ():
        if name not in STAGE_TOPICS:
            continue
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{child.metrics_port}/metrics", timeout=5
            ) as answer:
                text = answer.read().decode()
        except OSError:
            continue
        found = dict.fromkeys(COUNTED, 0.0)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (what := _COUNTED_BY_SAMPLE.get(sample.name)) is not None:
                    found[what] += sample.value
        counts[name] = found
    return counts


def counted_since(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    """Each stage's ``COUNTED`` figures between two ``stage_counts``."""
    return {
        name: {what: value - before.get(name, {}).get(what, 0.0) for what, value in now.items()}
        for name, now in after.items()
    }


def records_per_batch(counted: dict[str, dict[str, float]]) -> dict[str, float | None]:
    """Records per batch of each stage (``counted_since``)."""
    return {
        name: round(c["records"] / c["batches"], 1) if c["batches"] > 0 else None
        for name, c in counted.items()
    }


def sweep_ms(counted: dict[str, dict[str, float]], encounters: int) -> dict[str, float]:
    """CPU milliseconds per encounter of the full collections each stage ran
    (``counted_since``; stages that ran none are left out)."""
    return {
        name: round(c["sweep_s"] * 1000 / encounters, 3)
        for name, c in counted.items()
        if c["sweep_s"] > 0
    }


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def journeys(ledger: Ledger, sent_ms: dict[str, int]) -> Iterator[tuple[int, str, str | None]]:
    """(publish time, encounter id, claim id or None) for every encounter of the messages sent."""
    for source_id, sent in sent_ms.items():
        for encounter in ledger.source_encounters.get(source_id, ()):
            yield sent, encounter, ledger.encounter_claim.get(encounter)


def hop_latencies(ledger: Ledger, sent_ms: dict[str, int]) -> dict[str, dict[str, float | None]]:
    """p50/p99 of each hop in milliseconds: from the record a stage read to the one it wrote
    (by broker timestamps), so a slow hop shows by name."""
    hops: dict[str, list[float]] = {stage: [] for stage in STAGE_TOPICS}
    for sent, encounter, claim in journeys(ledger, sent_ms):
        previous: float | None = sent
        for stage, topic in STAGE_TOPICS.items():
            stamps = ledger.times[topic]
            at = stamps.get(encounter) or (stamps.get(claim) if claim else None)
            if at is None or previous is None:
                previous = None
                continue
            hops[stage].append(float(at - previous))
            previous = at
    return {
        stage: {"p50": pct(values, 0.5), "p99": pct(values, 0.99)} for stage, values in hops.items()
    }


def latencies(ledger: Ledger, sent_ms: dict[str, int], topic: str) -> list[float]:
    """publish -> first record on ``topic`` (keyed by claim id), in milliseconds."""
    stamps = ledger.times[topic]
    return [
        float(at - sent)
        for sent, _, claim in journeys(ledger, sent_ms)
        if claim and (at := stamps.get(claim))
    ]


QUIET_S = 1.0
"""How long the stages' counts of records handled must stay the same for the pipeline to
be quiet (``wait_quiet``): longer than a batch takes, and than a record takes from one stage
to the next."""
QUIET_POLL_S = 0.2
QUIET_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Quiet:
    """What ``wait_quiet`` read at one poll: each process's CPU seconds, each stage's main
    thread's, and each stage's counts (``stage_counts``)."""

    cpu: dict[str, float]
    main: dict[str, float]
    counts: dict[str, dict[str, float]]
    system: dict[str, float] = field(default_factory=dict)  # each process's system CPU

    @classmethod
    def now(cls, sup: Supervisor | None, pids: dict[str, int], stages: dict[str, int]) -> Quiet:
        times = cpu_now(pids, user_and_system_seconds)  # each /proc file read once a poll
        return cls(
            {name: user + system for name, (user, system) in times.items()},
            cpu_now(stages, main_thread_seconds),
            stage_counts(sup),
            {name: system for name, (_, system) in times.items()},
        )

    def handled(self) -> dict[str, float]:
        return {name: c["records"] for name, c in self.counts.items()}


def quiet_reading(
    read: Callable[[], Quiet],
    *,
    quiet_s: float = QUIET_S,
    poll_s: float = QUIET_POLL_S,
    timeout: float = QUIET_TIMEOUT_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Quiet | None:
    """Poll ``read`` until the stages' records handled stay the same for ``quiet_s``, and
    return the reading of the first poll that saw them so: what was spent up to the last
    record handled, with at most ``poll_s`` of idling after it. None after ``timeout``."""
    first = read()
    since = clock()
    deadline = since + timeout
    while clock() < deadline:
        sleep(poll_s)
        now = read()
        if now.handled() != first.handled():
            first, since = now, clock()
        elif clock() - since >= quiet_s:
            return first
    return None


def wait_quiet(
    tracker: Tracker, sup: Supervisor | None, pids: dict[str, int], stages: dict[str, int]
) -> Quiet:
    """The readings of a quiet pipeline: every record published so far handled by every
    stage that reads it (``quiet_reading``; the tracker goes on reading meanwhile)."""

    def read() -> Quiet:
        tracker.poll()
        return Quiet.now(sup, pids, stages)

    if sup is None:
        return read()
    found = quiet_reading(read)
    if found is None:
        say(f"the stages were not quiet within {QUIET_TIMEOUT_S:g}s: CPU counted up to now")
        return read()
    return found


def ms_per_encounter(
    before: dict[str, float], after: dict[str, float], encounters: int, restarted: list[str]
) -> dict[str, float]:
    """Milliseconds each process spent per encounter between two readings of its seconds
    (none for a process missing from either, or restarted between them)."""
    return {
        name: round((after[name] - before[name]) * 1000 / encounters, 2)
        for name in before
        if name in after and name not in restarted
    }


def run_batch(
    tracker: Tracker,
    producer: Producer,
    sup_settings: Settings,
    messages: list[tuple[str, str, bytes]],
    rate: float,
    timeout: float = 600,
    pids: dict[str, int] | None = None,
    sup: Supervisor | None = None,
) -> dict[str, Any]:
    """Publish ``messages`` at ``rate`` (0: as fast as they go) and wait until each is
    settled; CPU per encounter of each process in ``pids``. A process restarted meanwhile
    has no CPU figure for the batch (its new pid goes into ``pids`` for the next).

    The CPU is counted from a quiet pipeline to a quiet pipeline (``wait_quiet``): an
    encounter is settled at its first posting, and what follows it (the settlements the
    claims stage and intake read, a next payer's claim and its posting) may come after, so
    a phase counted from the publish to the last settled encounter could be charged the
    tail of the phase before, or miss its own. Measured with the stages' own counts, that
    window already held the same records per encounter in every phase (claims 3.34-3.39,
    one run): the quiet start and end make it hold by construction, not by timing."""
    pids = pids if pids is not None else {}
    restarted: list[str] = []
    sent_ms: dict[str, int] = {}
    ledger = tracker.ledger
    batch = {s for s, _, _ in messages}
    ledger.sent.update(batch)
    stages = {k: v for k, v in pids.items() if k in STAGE_TOPICS}
    wait_quiet(tracker, sup, pids, stages)
    before = Quiet.now(sup, pids, stages)  # after the quiet second, not at its start
    started = time.time()
    harness_before = time.process_time()
    publish(producer, sup_settings, messages, rate, sent_ms)
    done = wait_settled(tracker, batch, started, timeout, sup, restarted)
    after = wait_quiet(tracker, sup, pids, stages) if done else Quiet.now(sup, pids, stages)
    counted = counted_since(before.counts, after.counts)
    harness_ms = (time.process_time() - harness_before) * 1000 / len(messages)
    cpu_ms = ms_per_encounter(before.cpu, after.cpu, len(messages), restarted)
    # The share of each stage's CPU its Python thread spent; the rest is librdkafka's
    # threads (fetching, producing, compressing) and the metrics server's. The thread's and
    # the process's counters are read a moment apart, in clock ticks (10 ms): over a short
    # run the thread's can count one tick more than the process's, hence the cap.
    main_share = {
        name: round(min(1.0, (after.main[name] - before.main[name]) / spent), 3)
        for name in before.main
        if name in after.main
        and name not in restarted
        and (spent := after.cpu.get(name, 0.0) - before.cpu.get(name, 0.0)) > 0
    }
    # The kernel's part: what grows when a store's pages are read back from its files and
    # more of them written each commit (the stores' growth with history, bench/README.md).
    system_ms = ms_per_encounter(before.system, after.system, len(messages), restarted)
    for name in restarted:
        proc = sup.children[name].proc if sup else None
        if name in pids and proc is not None:
            pids[name] = proc.pid
    first = min(sent_ms.values())
    stage_rates = {}
    for stage, topic in STAGE_TOPICS.items():
        stamps = [t for t in ledger.times[topic].values() if t >= first]
        if len(stamps) > 1:
            span = (max(stamps) - first) / 1000
            stage_rates[stage] = round(len(stamps) / span, 1) if span > 0 else None
    posted_at = [t for t in ledger.times["remittance.posted.v1"].values() if t >= first]
    span = ((max(posted_at) - first) / 1000) if posted_at else time.time() - started
    submitted = latencies(ledger, sent_ms, "claims.submitted.v1")
    posted = latencies(ledger, sent_ms, "remittance.posted.v1")
    return {
        "encounters": len(messages),
        "complete": done,
        "restarted": restarted,
        "summary": {**ledger.summary(), "lost": len(open_of(ledger, batch))},
        "encounters_per_s": round(len(messages) / span, 1) if span > 0 else None,
        "stage_records_per_s": stage_rates,
        "latency_ms_submitted": {
            "p50": pct(submitted, 0.5),
            "p99": pct(submitted, 0.99),
            "mean": round(statistics.fmean(submitted), 1) if submitted else None,
        },
        "latency_ms_posted": {"p50": pct(posted, 0.5), "p99": pct(posted, 0.99)},
        "latency_ms_by_hop": hop_latencies(ledger, sent_ms),
        # Where the CPU went: milliseconds per encounter for each process (the broker too;
        # the benchmark's own publisher and tracker are not counted).
        # ``stages``: claimflow's own five together (the rest is the broker, the payer
        # simulator and the gateway).
        "cpu_ms_per_encounter": {
            **cpu_ms,
            "stages": round(sum(v for k, v in cpu_ms.items() if k in STAGE_TOPICS), 2),
            "total": round(sum(cpu_ms.values()), 2),
        },
        "system_cpu_ms_per_encounter": {
            **system_ms,
            "stages": round(sum(v for k, v in system_ms.items() if k in STAGE_TOPICS), 2),
        },
        # Records (of every input topic) per batch each stage handled: fewer per batch
        # spreads a batch's commits and flushes over fewer records.
        "records_per_batch": records_per_batch(counted),
        # Records (of every input topic) each stage handled per encounter: the work the
        # CPU figures are divided by, the same in every phase when each is counted whole.
        "records_per_encounter": {
            name: round(c["records"] / len(messages), 3) for name, c in counted.items()
        },
        # Full collections (every two minutes) that fell in this run: part of its CPU.
        "gc_sweep_cpu_ms_per_encounter": sweep_ms(counted, len(messages)),
        "main_thread_share": main_share,
        # The benchmark's publisher and tracker share the same two cores.
        "harness_cpu_ms_per_encounter": round(harness_ms, 2),
    }


def say(line: str) -> None:
    print(f"bench pipeline: {line}", file=sys.stderr, flush=True)


def open_of(ledger: Ledger, batch: set[str]) -> list[str]:
    """The sources of ``batch`` not settled yet."""
    return [s for s in ledger.lost() if s in batch]


def wait_settled(
    tracker: Tracker,
    batch: set[str],
    started: float,
    timeout: float,
    sup: Supervisor | None = None,
    restarted: list[str] | None = None,
) -> bool:
    """Poll until every encounter of ``batch`` is settled, saying how far it got every few
    seconds (a benchmark runs for minutes: silence would look like a hang). With ``sup``, a
    service that exited is restarted as ``claimflow run`` does (nothing else would, and the
    wait would last until its timeout), and its name goes into ``restarted``."""
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    n = len(batch)
    while time.monotonic() < deadline:
        tracker.poll()
        if sup is not None:
            for name in sup.check():
                say(f"{name} exited and was restarted (see its log)")
                if restarted is not None:
                    restarted.append(name)
        open_n = len(open_of(tracker.ledger, batch))
        if not open_n:
            return True
        if time.monotonic() - last >= PROGRESS_EVERY_S:
            last = time.monotonic()
            s = tracker.ledger.summary()
            say(
                f"{time.time() - started:5.1f}s {n - open_n}/{n} settled "
                f"(submitted {s['submitted']}, posted {s['posted']})"
            )
    return False


def since(summary: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """A run's own counts: the tracker's counts since the start, less those of the earlier
    runs (``lost`` is the run's already)."""
    return {k: v if k == "lost" else v - before.get(k, 0) for k, v in summary.items()}


WARM_UP = 300
"""Encounters sent, not measured, after each start of the services: what a process does
once (its caches and memos filling, tables loaded at their first use, the interpreter
specializing the hot code) is not a cost per encounter of a pipeline that runs. With 20,
the fresh phase read 7-8% more CPU per encounter than after 300 in each of five stages
(two pairs of runs, ``BENCH_WARM``), while the grown phase, which follows the history,
was always warm: growth read low. More than 300 lowered it no further."""


def main() -> dict[str, Any]:
    return measure(
        n=int(os.environ.get("BENCH_N", "2000")),
        rate=float(os.environ.get("BENCH_RATE", "200")),
        rate_n=int(os.environ.get("BENCH_RATE_N", "1000")),
        history=int(os.environ.get("BENCH_HISTORY", "20000")),
        warm_n=int(os.environ.get("BENCH_WARM", str(WARM_UP))),
        pairs=int(os.environ.get("BENCH_PAIRS", str(PAIRS))),
    )


def growth(fresh: dict[str, float], grown: dict[str, float]) -> dict[str, float | None]:
    """Each process's CPU per encounter with a long history over the same with a fresh one."""
    return {
        name: round(grown[name] / cost, 3) if cost > 0 and name in grown else None
        for name, cost in fresh.items()
    }


def measure(
    n: int = 2000,
    rate: float = 200,
    rate_n: int = 1000,
    history: int = 0,
    warm_n: int = WARM_UP,
    pairs: int = 0,
) -> dict[str, Any]:
    """``n`` encounters at maximum rate, then ``rate_n`` at ``rate`` per second (either
    phase is skipped when its count is 0), with the raw copy of the same messages first;
    then, when ``history`` exceeds what was sent, more encounters until the stages have
    seen ``history`` in all, the last ``n`` of them at maximum rate and measured, and
    ``pairs`` phases on the grown stores and on empty ones in turn (``alternate``). Each
    (re)start of the services is followed by ``warm_n`` encounters not measured."""
    messages = list(generate(n, seed=101, fmt="mix"))
    paced = list(generate(rate_n, seed=202, fmt="mix"))
    warm = list(generate(warm_n, seed=303, fmt="mix"))
    fill_n = max(0, history - len(warm) - len(messages) - len(paced) - n) if n else 0
    broker = EmbeddedBroker().start()
    with tempfile.TemporaryDirectory() as tmp:
        bootstrap = broker.bootstrap
        say("the raw-copy baseline through the broker")
        ceiling = raw_copy_rate(bootstrap, messages or paced)
        # as `claimflow run` creates them on the embedded broker
        settings = Settings(
            topic_prefix="bench.", group_prefix="bench", partitions=EMBEDDED_PARTITIONS
        )
        ensure_topics(bootstrap, settings, registry())
        sup = Supervisor(
            bootstrap,
            Path(tmp),
            env={
                "CLAIMFLOW_TOPIC_PREFIX": "bench.",
                "CLAIMFLOW_GROUP_PREFIX": "bench",
                "CLAIMFLOW_PARTITIONS": str(EMBEDDED_PARTITIONS),
                "CLAIMFLOW_LOG_LEVEL": "WARNING",
                # The payer simulator is not claimflow: its pyx12 check of every 837 cost
                # more CPU than all the stages together, on the same two cores.
                "CLAIMFLOW_PAYER_SIM__VALIDATE_EVERY": str(PAYER_SIM_VALIDATE_EVERY),
            },
        )
        sup.start()
        result: dict[str, Any] = {
            "raw_copy_records_per_s": round(ceiling, 1),
            "payer_sim_checks_one_interchange_in": PAYER_SIM_VALIDATE_EVERY,
            "partitions_per_topic": EMBEDDED_PARTITIONS,
        }
        producer = make_producer(bootstrap, settings)
        # One tracker for the whole run: it reads each record once. (A tracker per phase
        # read every earlier phase's records again, from the offset 0 of every topic: with
        # 20,000 encounters of history that cost the harness ten times the CPU of a fresh
        # phase and the broker the serving of it, on the same two cores as the services.)
        tracker = Tracker(bootstrap, settings, keep_times=True)
        try:
            # groups joined, caches warm, the feed's producer connected
            say(f"warm-up: {len(warm)} encounters (consumer groups join, caches fill)")
            before = run_batch(tracker, producer, settings, warm, rate=0, timeout=120, sup=sup)[
                "summary"
            ]
            pids = process_ids(sup, broker)
            if messages:
                say(f"{len(messages)} encounters at maximum rate")
                at_max = run_batch(
                    tracker, producer, settings, messages, rate=0, pids=pids, sup=sup
                )
                at_max["summary"], before = since(at_max["summary"], before), at_max["summary"]
                eps = at_max["encounters_per_s"] or 0.0
                result["max_rate"] = at_max
                result["end_to_end_vs_raw_copy"] = round(eps / ceiling, 4) if ceiling else None
                result["stage_vs_raw_copy"] = {
                    stage: round(r / ceiling, 4) if r and ceiling else None
                    for stage, r in at_max["stage_records_per_s"].items()
                }
            if paced:
                say(f"{len(paced)} encounters at {rate:g}/s")
                at_rate = run_batch(
                    tracker, producer, settings, paced, rate=rate, pids=pids, sup=sup
                )
                at_rate["summary"] = since(at_rate["summary"], before)
                result[f"fixed_rate_{rate:g}_per_s"] = at_rate
            if fill_n:
                fill = list(generate(fill_n, seed=404, fmt="mix"))
                say(f"{fill_n} encounters of history at maximum rate")
                filled = run_batch(tracker, producer, settings, fill, rate=0, timeout=1800, sup=sup)
                grown_msgs = list(generate(n, seed=505, fmt="mix"))
                say(f"{n} encounters at maximum rate with a history of {history - n}")
                grown = run_batch(
                    tracker, producer, settings, grown_msgs, rate=0, pids=pids, sup=sup
                )
                grown["summary"] = since(grown["summary"], filled["summary"])
                grown["history"] = history - n
                grown["fill_complete"] = filled["complete"]
                result["max_rate_with_history"] = grown
                fresh_cpu = result["max_rate"]["cpu_ms_per_encounter"]
                # the stores' history and the broker's together
                result["cpu_growth"] = growth(fresh_cpu, grown["cpu_ms_per_encounter"])
                # The embedded broker keeps every record in memory and slows as it fills:
                # the same stores' history again, on an empty broker, shows the stores' part.
                say(
                    "broker restarted empty; the services restart on the stores they kept: "
                    f"{n} encounters at maximum rate, stores of {history}"
                )
                grown_state = Path(tmp) / "state.grown"  # as the history left it
                # new encounters: intake drops a message it has already seen
                rewarm = list(generate(len(warm), seed=707, fmt="mix"))
                stores_msgs = list(generate(n, seed=606, fmt="mix"))
                (broker, tracker, producer), pids, stores = restarted_phase(
                    (broker, tracker, producer),
                    sup,
                    settings,
                    (rewarm, stores_msgs),
                    keep_copy=grown_state if pairs else None,
                )
                stores["history"] = history
                result["max_rate_with_history_empty_broker"] = stores
                # the stores' history alone (1.0 is flat)
                result["cpu_growth_stores"] = growth(fresh_cpu, stores["cpu_ms_per_encounter"])
                # The host's speed drifts over the minutes between the fresh phase and these
                # (a third, on a shared machine): the fresh phase once more, as the first,
                # on an empty broker and empty stores, brackets them in time.
                say(
                    "broker restarted empty; the services restart on empty stores: "
                    f"{n} encounters at maximum rate, fresh again"
                )
                (broker, tracker, producer), pids, again = restarted_phase(
                    (broker, tracker, producer), sup, settings, (warm, messages), forget=True
                )
                result["max_rate_fresh_again"] = again
                result.update(bracketed(result))
                if pairs:
                    (broker, tracker, producer), pids, phases = alternate(
                        Alternation(
                            sup,
                            settings,
                            grown_state,
                            grown=(rewarm, stores_msgs),
                            fresh=(warm, messages),
                            pairs=pairs,
                        ),
                        (broker, tracker, producer),
                    )
                    result["alternating"] = phases
                    result.update(alternating(result))
        finally:
            with contextlib.suppress(RuntimeError):  # closed already when a restart failed
                tracker.close()
            sup.stop()
            with contextlib.suppress(RuntimeError):  # closed already when a restart failed
                producer.flush(10)
            del producer  # gone before the broker stops: no reconnect attempts in the output
            broker.stop()
    return result


def process_ids(sup: Supervisor, broker: EmbeddedBroker) -> dict[str, int]:
    pids = {name: c.proc.pid for name, c in sup.children.items() if c.proc}
    if broker.proc:
        pids["broker"] = broker.proc.pid
    return pids


def restart_empty(
    broker: EmbeddedBroker,
    sup: Supervisor,
    settings: Settings,
    forget: bool = False,
    keep_copy: Path | None = None,
    start_from: Path | None = None,
) -> tuple[EmbeddedBroker, Tracker, Producer, dict[str, int]]:
    """Stop the services and the broker, start an empty broker, then the same services on
    the state folders they kept (their SQLite stores hold the whole history; an empty
    changelog has nothing to restore), or on none (``forget``: the folders are moved
    aside, so each starts as on a new machine), or on a copy of ``start_from`` (the
    folders they kept are deleted). ``keep_copy``: the folders as the stopped services
    left them are copied there first. Returns the new broker, a tracker and a producer on
    it, and the processes' ids."""
    sup.stop()
    broker.stop()
    state = sup.run_dir / "state"
    if keep_copy is not None:
        shutil.copytree(state, keep_copy)
    if start_from is not None:
        shutil.rmtree(state, ignore_errors=True)
        shutil.copytree(start_from, state)
        # written to disk now, not by the first checkpoint's fsync in a measured phase
        os.sync()
    elif forget:
        state.rename(state.with_name(f"state.{uuid.uuid4().hex[:8]}"))
    fresh = EmbeddedBroker().start()
    ensure_topics(fresh.bootstrap, settings, registry())
    sup.bootstrap = fresh.bootstrap
    for name in sup.children:
        sup.respawn(name)
    tracker = Tracker(fresh.bootstrap, settings, keep_times=True)
    return fresh, tracker, make_producer(fresh.bootstrap, settings), process_ids(sup, fresh)


PAIRS = 3
"""Phases on the grown stores and on empty ones in turn, after the bracketed ones."""


@dataclass(frozen=True)
class Alternation:
    """What ``alternate`` runs: the grown stores' copy, and for each kind of phase its
    warm-up and measured messages (the grown phases' are new to the copy's intake)."""

    sup: Supervisor
    settings: Settings
    grown_state: Path
    grown: tuple[list[tuple[str, str, bytes]], list[tuple[str, str, bytes]]]
    fresh: tuple[list[tuple[str, str, bytes]], list[tuple[str, str, bytes]]]
    pairs: int


Harness = tuple[EmbeddedBroker, Tracker, Producer]
"""The broker, and the benchmark's tracker and producer on it."""


def restarted_phase(
    harness: Harness,
    sup: Supervisor,
    settings: Settings,
    batches: tuple[list[tuple[str, str, bytes]], list[tuple[str, str, bytes]]],
    *,
    forget: bool = False,
    keep_copy: Path | None = None,
    start_from: Path | None = None,
) -> tuple[Harness, dict[str, int], dict[str, Any]]:
    """The services and the broker restarted (``restart_empty``, its options), then
    ``batches``: a warm-up not measured and the phase measured (``run_batch``, its summary
    its own). The tracker and producer given are closed (the producer before its broker
    stops: no reconnect attempts logged; the caller still holds it, so ``del`` would not
    do); the new broker, tracker, producer and process ids are returned with the phase."""
    broker, tracker, producer = harness
    producer.flush(10)
    producer.close()
    tracker.close()
    broker, tracker, producer, pids = restart_empty(
        broker, sup, settings, forget=forget, keep_copy=keep_copy, start_from=start_from
    )
    warm, messages = batches
    warmed = run_batch(tracker, producer, settings, warm, rate=0, timeout=120, sup=sup)
    phase = run_batch(tracker, producer, settings, messages, rate=0, pids=pids, sup=sup)
    phase["summary"] = since(phase["summary"], warmed["summary"])
    return (broker, tracker, producer), pids, phase


def alternate(
    plan: Alternation, harness: Harness
) -> tuple[Harness, dict[str, int], list[dict[str, Any]]]:
    """``plan.pairs`` times: the services restart on a copy of the grown stores, then on
    empty ones, each time on an empty broker (``restarted_phase``). Returns the broker,
    tracker and producer in use at the end (the caller closes them), and each phase's kind
    and figures in order."""
    phases: list[dict[str, Any]] = []
    empty = plan.grown_state.with_name("state.empty")
    empty.mkdir(mode=0o700, exist_ok=True)
    pids: dict[str, int] = {}
    for i in range(plan.pairs * 2):
        kind, batches = ("grown", plan.grown) if i % 2 == 0 else ("fresh", plan.fresh)
        say(f"alternating {i // 2 + 1}/{plan.pairs}: {len(batches[1])} encounters, {kind} stores")
        harness, pids, phase = restarted_phase(
            harness,
            plan.sup,
            plan.settings,
            batches,
            start_from=plan.grown_state if kind == "grown" else empty,
        )
        phases.append(
            {
                "stores": kind,
                "complete": phase["complete"],
                "restarted": phase["restarted"],
                "lost": phase["summary"]["lost"],
                "dlq": phase["summary"]["dlq"],
                "encounters_per_s": phase["encounters_per_s"],
                "records_per_encounter": phase["records_per_encounter"],
                "cpu_ms_per_encounter": phase["cpu_ms_per_encounter"],
                "system_cpu_ms_per_encounter": phase["system_cpu_ms_per_encounter"],
            }
        )
    return harness, pids, phases


def _against_neighbours(
    phases: list[dict[str, Any]],
    first: dict[str, float],
    key: str,
    read: Callable[[float, float], float | None],
) -> dict[str, list[float]]:
    """``read(grown, mean of the fresh phases on either side)`` of figure ``key`` for each
    grown phase of ``alternate`` that has a fresh phase after it, per process (None: not
    read); ``first`` is the fresh phase before the first grown one."""
    fresh = [first] + [p.get(key, {}) for p in phases if p["stores"] == "fresh"]
    grown = [p.get(key, {}) for p in phases if p["stores"] == "grown"]
    out: dict[str, list[float]] = {}
    for before, cost, after in zip(fresh, grown, fresh[1:], strict=False):
        for name, value in cost.items():
            if name in before and name in after:
                figure = read(value, (before[name] + after[name]) / 2)
                if figure is not None:
                    out.setdefault(name, []).append(figure)
    return out


def alternating(result: dict[str, Any]) -> dict[str, Any]:
    """The grown phases of ``alternate`` against the fresh ones on either side: the fresh
    phase before the first grown one is ``max_rate_fresh_again``. Each grown phase over the
    mean of its two neighbours, then the median of those ratios per process; what a grown
    phase adds of system CPU, the same way; and the median CPU per encounter of every fresh
    phase of the run, the first one included."""
    phases, again = result["alternating"], result["max_rate_fresh_again"]
    cpu, system = "cpu_ms_per_encounter", "system_cpu_ms_per_encounter"
    ratios = _against_neighbours(
        phases, again[cpu], cpu, lambda grown, fresh: grown / fresh if fresh > 0 else None
    )
    added = _against_neighbours(phases, again.get(system, {}), system, lambda g, f: g - f)
    every_fresh = [result["max_rate"][cpu], again[cpu]]
    every_fresh += [p[cpu] for p in phases if p["stores"] == "fresh"]
    names = {name for cost in every_fresh for name in cost}
    return {
        "cpu_growth_stores_alternating": {
            name: round(statistics.median(r), 3) for name, r in sorted(ratios.items())
        },
        "cpu_growth_stores_alternating_each": {
            name: [round(x, 3) for x in r] for name, r in sorted(ratios.items())
        },
        "system_cpu_ms_added_alternating": {
            name: round(statistics.median(a), 3) for name, a in sorted(added.items())
        },
        "cpu_ms_per_encounter_fresh_median": {
            name: round(statistics.median(c[name] for c in every_fresh if name in c), 2)
            for name in sorted(names)
        },
    }


def bracketed(result: dict[str, Any]) -> dict[str, Any]:
    """The growth figures again with the fresh cost measured twice, before and after the
    grown phases (``max_rate``, ``max_rate_fresh_again``): against their mean, a drift of the
    host's speed that is steady over the run cancels out. ``fresh_again_vs_fresh`` is the
    second fresh cost over the first: how far the host moved (1.0: not at all) and so how far
    a single growth figure of this run can be trusted."""
    first = result["max_rate"]["cpu_ms_per_encounter"]
    second = result["max_rate_fresh_again"]["cpu_ms_per_encounter"]
    fresh = {name: (cost + second[name]) / 2 for name, cost in first.items() if name in second}
    return {
        "fresh_again_vs_fresh": growth(first, second),
        "cpu_growth_bracketed": growth(
            fresh, result["max_rate_with_history"]["cpu_ms_per_encounter"]
        ),
        "cpu_growth_stores_bracketed": growth(
            fresh, result["max_rate_with_history_empty_broker"]["cpu_ms_per_encounter"]
        ),
    }
