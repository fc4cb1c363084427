"""Scale-out: intake -> coding -> validation with one, then two instances per stage.

Each run starts the stages as separate processes on a fresh topic prefix, warms them up
(consumer groups joined, state restored), then publishes N EHR messages at once and
times them until every encounter has a verdict (or is held for a coder). Reported per
run: encounters/s and the CPU each instance used per encounter. On a 2-core machine the
second instance of each stage competes with the first for the same cores, so the figure
says how much the partitioned state costs, not how far the pipeline scales.
Environment: BENCH_N (default 1000), BENCH_PARTITIONS: the topics' default (3).
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from bench.bench_pipeline import cpu_now, cpu_seconds, publish
from pipeline.broker import EmbeddedBroker
from pipeline.kafka import ensure_topics, make_producer
from pipeline.serde import registry
from pipeline.settings import Settings
from pipeline.supervisor import Supervisor
from sim.ehr import generate

Message = tuple[str, str, bytes]
STAGES = ("intake", "coding", "validation")
WARM_UP = 20
TIMEOUT_S = 600.0


class Outcomes:
    """Encounters collected, and those that got a verdict or were held for a coder (a
    group-less reader of the three topics, from the start)."""

    def __init__(self, bootstrap: str, settings: Settings) -> None:
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "bench", "fetch.wait.max.ms": 20}
        )
        assigned = []
        for name in ("encounters.collected.v1", "encounters.validated.v1", "coding.review.v1"):
            topic = settings.topic(name)
            parts = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
            assigned += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts]
        self.consumer.assign(assigned)
        self.collected_topic = settings.topic("encounters.collected.v1")
        self.collected: set[bytes] = set()
        self.done: set[bytes] = set()

    def wait_for(self, count: int, timeout: float) -> bool:
        """Until ``count`` encounters are collected and every one of them is done."""
        deadline = time.monotonic() + timeout
        while len(self.collected) < count or not self.collected <= self.done:
            if time.monotonic() > deadline:
                return False
            for m in self.consumer.consume(500, 0.2):
                if m.error() is None:
                    target = self.collected if m.topic() == self.collected_topic else self.done
                    target.add(m.key())
        return True


def publish_all(bootstrap: str, settings: Settings, messages: list[Message]) -> None:
    publish(make_producer(bootstrap, settings), settings, messages, 0, {})


def run(bootstrap: str, instances: int, n: int, seed: int) -> dict[str, Any]:
    prefix = f"b{uuid.uuid4().hex[:8]}."
    group = prefix.rstrip(".")
    settings = Settings(topic_prefix=prefix, group_prefix=group)
    ensure_topics(bootstrap, settings, registry())
    messages = list(generate(WARM_UP + n, seed=seed, fmt="mix"))  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as folder:
        sup = Supervisor(
            bootstrap,
            Path(folder),
            env={"CLAIMFLOW_TOPIC_PREFIX": prefix, "CLAIMFLOW_GROUP_PREFIX": group},
            services=(),
            restart=False,
        )
        verdicts = Outcomes(bootstrap, settings)
        try:
            for stage in STAGES:
                for i in range(1, instances + 1):
                    sup.add(f"{stage}-{i}", stage)
            publish_all(bootstrap, settings, messages[:WARM_UP])
            if not verdicts.wait_for(WARM_UP, TIMEOUT_S):
                raise RuntimeError("warm-up encounters got no verdict")
            pids = {name: c.proc.pid for name, c in sup.children.items() if c.proc}
            cpu_before = cpu_now(pids, cpu_seconds)
            started = time.perf_counter()
            publish_all(bootstrap, settings, messages[WARM_UP:])
            # each office-visit message is one encounter
            if not verdicts.wait_for(WARM_UP + n, TIMEOUT_S):
                missing = WARM_UP + n - len(verdicts.collected & verdicts.done)
                raise RuntimeError(f"{missing} encounters neither validated nor held")
            elapsed = time.perf_counter() - started
            cpu_after = cpu_now(pids, cpu_seconds)
        finally:
            sup.stop()
            verdicts.consumer.close()
    cpu_ms = {
        name: round((cpu_after[name] - cpu_before[name]) * 1000 / n, 3)
        for name in cpu_before
        if name in cpu_after
    }
    per_stage = {
        stage: round(sum(v for k, v in cpu_ms.items() if k.startswith(stage + "-")), 3)
        for stage in STAGES
    }
    return {
        "encounters_per_s": round(n / elapsed, 1),
        "seconds": round(elapsed, 2),
        "cpu_ms_per_encounter_by_instance": cpu_ms,
        "cpu_ms_per_encounter_by_stage": per_stage,
    }


def main() -> dict[str, Any]:
    n = int(os.environ.get("BENCH_N", "1000"))
    with EmbeddedBroker() as broker:
        one = run(broker.bootstrap, 1, n, seed=7)
        two = run(broker.bootstrap, 2, n, seed=7)
    return {
        "encounters": n,
        "partitions": registry().topics["validation.by-patient.v1"].partitions,
        "cores": os.cpu_count(),
        "one_instance": one,
        "two_instances": two,
        "throughput_ratio_two_to_one": round(two["encounters_per_s"] / one["encounters_per_s"], 2),
    }
