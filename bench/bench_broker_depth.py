"""What a partition's history costs on the embedded broker, with no stage in the way.

A plain consumer process (claimflow's client settings: idempotent lz4 producer, manual
commits after each batch) reads one topic, does a fixed piece of Python work per record
(JSON in and out, ~1.5 KB) and produces the result to another. Three phases of N records
each, produced at full speed:

- ``fresh``: every topic empty.
- ``elsewhere``: after K one-record batches went to a topic nobody reads.
- ``deep``: after K one-record batches went to the topic the consumer reads (it reads them).

Each phase reports the broker's CPU and the consumer's CPU per record (``process_us``, all
its threads; ``work_us``, the Python work alone). ``*_vs_fresh`` divides by the fresh phase.
Tansu 0.6.0's memory engine lists every batch of a partition to answer a fetch that finds
data, so ``deep`` costs the broker more while ``elsewhere`` should not: the figures say how
much of a stage's growth with history the broker alone can explain (``bench pipeline``'s
``cpu_growth``). Environment: BENCH_DEPTH_N (default 5000), BENCH_DEPTH_BATCHES (30000).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic

from bench.bench_pipeline import cpu_seconds_of
from pipeline.broker import EmbeddedBroker
from pipeline.kafka import make_consumer, make_producer
from pipeline.settings import Settings

READ, ELSEWHERE, OUT = "depth.read", "depth.elsewhere", "depth.out"
STOP = b"stop"


def work(value: bytes) -> bytes:
    """The consumer's fixed work on one record: parse it, walk it, write it again."""
    record = json.loads(value)
    record["weight"] = sum(len(k) + len(str(v)) for k, v in record["lines"].items())
    return json.dumps(record, sort_keys=True).encode()


def record(rnd: random.Random, i: int) -> bytes:
    lines = {f"line-{j}-{rnd.random():.6f}": round(rnd.random(), 6) for j in range(40)}
    return json.dumps({"id": i, "lines": lines}).encode()


def consume(bootstrap: str) -> None:
    """The consumer process: after each batch, one JSON line of what it has done so far."""
    settings = Settings()
    consumer = make_consumer(bootstrap, "depth", settings)
    producer = make_producer(bootstrap, settings)
    consumer.subscribe([READ])
    done, work_s = 0, 0.0
    while True:
        batch = consumer.consume(500, 0.1)
        if not batch:
            continue
        started = time.thread_time()
        for msg in batch:
            if msg.error():
                continue
            if msg.value() == STOP:
                return
            producer.produce(OUT, work(msg.value() or b""))
            done += 1
        producer.flush()
        consumer.commit(message=batch[-1], asynchronous=False)
        work_s += time.thread_time() - started
        print(json.dumps({"done": done, "work_s": work_s, "cpu_s": time.process_time()}))
        sys.stdout.flush()


class Depth:
    """The broker, the consumer process and a producer for each kind of batch."""

    def __init__(self, broker: EmbeddedBroker) -> None:
        self.broker = broker
        settings = Settings()
        bootstrap = broker.bootstrap
        admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
        for future in admin.create_topics(
            [NewTopic(t, 1, 1) for t in (READ, ELSEWHERE, OUT)]
        ).values():
            future.result()
        self.fast: Any = make_producer(bootstrap, settings)
        # One record a produce request: the batches a slow trickle of encounters leaves.
        self.trickle: Any = make_producer(
            bootstrap, settings, **{"batch.num.messages": 1, "linger.ms": 0}
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_broker_depth", "consume", bootstrap],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        self.rnd = random.Random(7)
        self.sent = 0
        self.last: dict[str, float] = {"done": 0, "work_s": 0.0, "cpu_s": 0.0}

    def send(self, producer: Any, topic: str, n: int) -> None:
        for _ in range(n):
            value = record(self.rnd, self.sent)
            while True:
                try:
                    producer.produce(topic, value)
                    break
                except BufferError:
                    producer.poll(0.01)
            producer.poll(0)
            if topic == READ:
                self.sent += 1
        producer.flush()

    def caught_up(self, timeout: float = 600) -> dict[str, float]:
        """The consumer's line once it has done every record sent to the read topic."""
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while self.last["done"] < self.sent:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"the consumer did {self.last['done']} of {self.sent} records")
            line = self.proc.stdout.readline()
            if line:
                self.last = json.loads(line)
        return self.last

    def broker_cpu(self) -> float:
        assert self.broker.proc is not None
        return cpu_seconds_of(Path(f"/proc/{self.broker.proc.pid}/stat"))

    def phase(self, n: int) -> dict[str, float]:
        self.send(self.fast, READ, 200)  # warm up: the consumer's batches are under way
        before, broker_before = dict(self.caught_up()), self.broker_cpu()
        self.send(self.fast, READ, n)
        after = self.caught_up()
        us = 1e6 / n
        return {
            "broker_us": round((self.broker_cpu() - broker_before) * us, 1),
            "process_us": round((after["cpu_s"] - before["cpu_s"]) * us, 1),
            "work_us": round((after["work_s"] - before["work_s"]) * us, 1),
        }

    def close(self) -> None:
        self.fast.produce(READ, STOP)
        self.fast.flush()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        # Gone before the broker stops, or they log their reconnect attempts.
        self.fast = self.trickle = None


def say(line: str) -> None:
    print(f"bench broker_depth: {line}", file=sys.stderr, flush=True)


def main() -> dict[str, Any]:
    n = int(os.environ.get("BENCH_DEPTH_N", "5000"))
    batches = int(os.environ.get("BENCH_DEPTH_BATCHES", "30000"))
    with EmbeddedBroker() as broker:
        depth = Depth(broker)
        try:
            say(f"fresh, {n} records")
            fresh = depth.phase(n)
            say(f"{batches} one-record batches to a topic nobody reads")
            depth.send(depth.trickle, ELSEWHERE, batches)
            elsewhere = depth.phase(n)
            say(f"{batches} one-record batches to the topic read")
            depth.send(depth.trickle, READ, batches)
            deep = depth.phase(n)
        finally:
            depth.close()
    result: dict[str, Any] = {
        "records_per_phase": n,
        "batches_added": batches,
        "fresh": fresh,
        "elsewhere": elsewhere,
        "deep": deep,
    }
    for name, phase in (("elsewhere", elsewhere), ("deep", deep)):
        result[f"{name}_vs_fresh"] = {
            k: round(phase[k] / fresh[k], 3) if fresh[k] else None for k in fresh
        }
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["consume"]:
        consume(sys.argv[2])
    else:
        print(json.dumps(main()))
