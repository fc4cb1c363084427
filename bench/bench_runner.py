"""The stage runner alone: one relay stage (decode, validate, re-encode, produce, commit)
over N collected encounters, against a raw consume->produce copy of the same bytes.

``per_record``: the runner's own CPU per record, without a broker: ``Runner.process`` and
the batch's metrics over consumed records of the same encounters (batches of 500), beside
the same decode and stage call without the runner (``bare_us``); ``overhead_us`` is the
difference (records in, headers, the record handed to the stage, the age and processing
histograms, and the garbage collector walking the batch's objects); ``paused_us``: the
runner's batch with the collector paused, as ``Runner.run`` does (``collector_paused``).
Environment: BENCH_RUNNER_N (default 5000), BENCH_RUNNER_ROUNDS (default 7)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from bench.bench_pipeline import raw_copy_rate
from bench.bench_serde import alternating
from pipeline.broker import EmbeddedBroker
from pipeline.kafka import ensure_topics, make_producer
from pipeline.models import utcnow
from pipeline.serde import registry
from pipeline.settings import Settings
from pipeline.stage import Incoming, Out, Runner, Stage, collector_paused
from services.intake.domain import parse_raw
from sim.ehr import generate


class Relay(Stage):
    """encounters.collected.v1 -> encounters.coded.v1's neighbour: copies the encounter."""

    name = "intake"
    inputs = ("encounters.collected.v1",)

    def handle(self, msg: Incoming) -> Iterable[Out]:
        return [Out("dlq.coding.v1", msg.key or "", _letter(msg))]


def _letter(msg: Incoming) -> Any:
    from pipeline.stage import dead_letter

    return dead_letter("bench", msg, ValueError("relay")).value


def count(bootstrap: str, topic: str, expect: int, timeout: float = 300) -> tuple[float, float]:
    """Seconds from the first to the last of ``expect`` records readable on ``topic``."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": topic + ".count",
            "log_level": 3,
            "fetch.wait.max.ms": 100,
        }
    )
    md = c.list_topics(topic, timeout=5)
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.topics[topic].partitions])
    n, started, first = 0, time.perf_counter(), 0.0
    while n < expect and time.perf_counter() - started < timeout:
        got = sum(1 for m in c.consume(1000, 0.05) if not m.error())
        if got and not n:
            first = time.perf_counter()
        n += got
    c.close()
    return first - started, time.perf_counter() - first


def per_record(payloads: list[tuple[str, bytes]], rounds: int) -> dict[str, float]:
    """CPU microseconds per record: the runner's batch work, and the same without it."""
    topic = "encounters.collected.v1"
    settings = Settings(topic_prefix="rb.", group_prefix="rb")
    runner = Runner(Relay(), settings, "localhost:1")
    stage, reg = runner.stage, runner.registry
    headers = [("claimflow-trace", b"0" * 16)]
    records = [
        Message(
            topic=settings.topic(topic),
            partition=i % 3,
            offset=i,
            key=key.encode(),
            value=value,
            headers=headers,
            timestamp=(1, 1_700_000_000_000 + i),
        )
        for i, (key, value) in enumerate(payloads)
    ]
    batches = [records[i : i + 500] for i in range(0, len(records), 500)]

    def with_runner() -> None:
        for batch in batches:
            started = time.perf_counter()
            runner.process(batch)
            runner._observe_batch(batch, time.perf_counter() - started)

    def bare() -> None:
        for batch in batches:
            for m in batch:
                raw = m.value() or b""
                value = reg.decode(topic, raw)
                msg = Incoming(topic, "", value, raw, {}, m.partition() or 0, m.offset() or 0, 0)
                stage.handle(msg)

    def paused() -> None:
        for batch in batches:
            with collector_paused():
                started = time.perf_counter()
                runner.process(batch)
                runner._observe_batch(batch, time.perf_counter() - started)

    bare_us, runner_us = alternating(bare, with_runner, len(records), rounds)
    collected_us, paused_us = alternating(with_runner, paused, len(records), rounds)
    return {
        "bare_us": bare_us,
        "runner_us": runner_us,
        "overhead_us": round(runner_us - bare_us, 1),
        "runner_again_us": collected_us,
        "paused_us": paused_us,
        "paused_ratio": round(paused_us / collected_us, 3),
    }


def main() -> dict[str, Any]:
    n = int(os.environ.get("BENCH_RUNNER_N", "5000"))
    reg = registry()
    encounters = [
        e
        for s, c, b in generate(n, seed=9, fmt="json")
        for e in parse_raw(b, c, source_id=s, received_at=utcnow()).encounters
    ]
    payloads = [(e.encounter_id, reg.encode("encounters.collected.v1", e)) for e in encounters]
    cpu = per_record(payloads, int(os.environ.get("BENCH_RUNNER_ROUNDS", "7")))
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap
        ceiling = raw_copy_rate(bootstrap, [(k, "avro", v) for k, v in payloads])
        settings = Settings(topic_prefix="rb.", group_prefix="rb")
        ensure_topics(bootstrap, settings, reg)
        producer = make_producer(bootstrap, settings)
        for key, value in payloads:
            producer.produce(
                settings.topic("encounters.collected.v1"), key=key.encode(), value=value
            )
            producer.poll(0)
        producer.flush(30)
        runner = Runner(Relay(), settings, bootstrap)
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        startup, elapsed = count(bootstrap, settings.topic("dlq.coding.v1"), len(payloads))
        runner.stopping.set()
        thread.join(10)
    rate = len(payloads) / elapsed
    return {
        "records": len(payloads),
        "raw_copy_records_per_s": round(ceiling, 1),
        "runner_records_per_s": round(rate, 1),
        "runner_vs_raw_copy": round(rate / ceiling, 4),
        "startup_s": round(startup, 2),
        "per_record": cpu,
        "note": "rate from the first output record to the last (group join excluded)",
    }
