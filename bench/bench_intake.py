"""Intake alone, one process: FHIR R4 bundles and HL7 v2 messages from intake.raw.v1 to
encounters.collected.v1, each against a raw consume->produce copy of the same bytes in the
same run, and the parse alone (no broker) to show where the time goes. Also the gateway:
HL7 v2 over MLLP acknowledged (AA) per second, four connections.

The simulator's hospital mix (office visits, ED visits, inpatient stays). Environment:
BENCH_INTAKE_FHIR_N (default 1500), BENCH_INTAKE_HL7_N (default 400: hl7apy is slow),
BENCH_INTAKE_MLLP_N (default 400).
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from bench.bench_pipeline import raw_copy_rate
from pipeline.broker import EmbeddedBroker
from pipeline.kafka import ensure_topics, make_producer
from pipeline.models import utcnow
from pipeline.serde import registry
from pipeline.stage import Incoming, Out, Runner
from services.intake import fhir, fhir_fast, hl7v2
from services.intake.app import IntakeStage
from services.intake.domain import parse_raw
from services.intake.gateway import Gateway
from services.intake.settings import GatewayOptions, GatewaySettings, IntakeSettings
from sim.ehr import generate, provider_directory

Message = tuple[str, str, bytes]


def parse_rate(messages: list[Message]) -> float:
    """Messages/s of parse_raw alone (no broker, no serialisation), from a cold memo: the
    stage has just read the same messages, and intake remembers what fhir.resources and
    hl7apy made of each element (services/intake/memo.py) and the FHIR primitives it has
    validated (services/intake/fhir_fast.py)."""
    fhir._VALIDATED.clear()
    fhir._ADDRESSES.clear()
    fhir._COMPLETED.clear()
    fhir_fast.forget()
    hl7v2._FIELDS.clear()
    directory = provider_directory()
    started = time.perf_counter()
    for source_id, ctype, body in messages:
        parse_raw(body, ctype, source_id=source_id, received_at=utcnow(), directory=directory)
    return len(messages) / (time.perf_counter() - started)


def intake_rate(bootstrap: str, messages: list[Message], tag: str, tmp: Path) -> dict[str, Any]:
    """The intake stage (runner in this process) over ``messages`` already on its topic."""
    directory = tmp / f"{tag}-directory.json"
    directory.write_text(json.dumps(provider_directory().to_json()))
    settings = IntakeSettings(
        topic_prefix=f"bi{tag}.",
        group_prefix=f"bi{tag}",
        state_dir=tmp / tag,
        provider_directory=directory,
    )
    ensure_topics(bootstrap, settings, registry())
    producer = make_producer(bootstrap, settings)
    for source_id, ctype, body in messages:
        producer.produce(
            settings.topic("intake.raw.v1"),
            key=source_id.encode(),
            value=body,
            headers=[("content-type", ctype.encode())],
        )
        producer.poll(0)
    producer.flush(30)
    stage = TimedIntake(settings)
    runner = Runner(stage, settings, bootstrap)
    thread = threading.Thread(target=runner.run, daemon=True)
    started = time.perf_counter()
    thread.start()
    done_at = wait_for(bootstrap, settings.topic("encounters.collected.v1"), len(messages))
    runner.stopping.set()
    thread.join(15)
    first = stage.first or done_at
    return {
        "messages_per_s": round(len(messages) / (done_at - first), 1),
        "startup_s": round(first - started, 2),
    }


class TimedIntake(IntakeStage):
    """The intake stage, noting when it is handed its first message (group joined)."""

    first: float | None = None

    def handle(self, msg: Incoming) -> Iterable[Out]:
        if self.first is None:
            self.first = time.perf_counter()
        return super().handle(msg)


def wait_for(bootstrap: str, topic: str, expect: int, timeout: float = 600) -> float:
    """perf_counter() when ``expect`` records are readable on ``topic``."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"{topic}.count", "log_level": 3,
         "fetch.wait.max.ms": 100}
    )  # fmt: skip
    md = consumer.list_topics(topic, timeout=10)
    parts = md.topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    seen, deadline = 0, time.monotonic() + timeout
    while seen < expect:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{topic}: {seen} of {expect} records after {timeout}s")
        seen += sum(1 for m in consumer.consume(1000, 0.02) if not m.error())
    done = time.perf_counter()
    consumer.close()
    return done


def mllp_rate(bootstrap: str, messages: list[Message], tmp: Path, connections: int = 4) -> float:
    """AA acknowledgements per second through the gateway's MLLP listener."""
    settings = GatewaySettings(
        topic_prefix="bg.", state_dir=tmp / "gateway", gateway=GatewayOptions(auth=False)
    )
    ensure_topics(bootstrap, settings, registry())
    gateway = Gateway(settings, bootstrap)
    host, port = gateway.start()["mllp"].rsplit(":", 1)

    def send(chunk: list[Message]) -> int:
        acked = 0
        with socket.create_connection((host, int(port)), timeout=60) as sock:
            for _, _, body in chunk:
                sock.sendall(b"\x0b" + body + b"\x1c\r")
                reply = b""
                while not reply.endswith(b"\x1c\r"):
                    reply += sock.recv(65536)
                acked += b"MSA|AA|" in reply
        return acked

    send(messages[:1])  # topic metadata and the broker connection, before the clock
    chunks = [messages[k::connections] for k in range(connections)]
    started = time.perf_counter()
    with ThreadPoolExecutor(connections) as pool:
        acked = sum(pool.map(send, chunks))
    elapsed = time.perf_counter() - started
    gateway.stop()
    if acked != len(messages):
        raise RuntimeError(f"MLLP: {acked} of {len(messages)} acknowledged AA")
    return acked / elapsed


def main() -> dict[str, Any]:
    n_fhir = int(os.environ.get("BENCH_INTAKE_FHIR_N", "1500"))
    n_hl7 = int(os.environ.get("BENCH_INTAKE_HL7_N", "400"))
    n_mllp = int(os.environ.get("BENCH_INTAKE_MLLP_N", "400"))
    sets = {
        "fhir": list(generate(n_fhir, seed=41, fmt="fhir", mix="all")),
        "hl7v2": list(generate(n_hl7, seed=42, fmt="hl7v2", mix="all")),
    }
    out: dict[str, Any] = {"mix": "all (office, ED, inpatient)"}
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        for fmt, messages in sets.items():
            ceiling = raw_copy_rate(broker.bootstrap, messages)
            intake = intake_rate(broker.bootstrap, messages, fmt, Path(tmp))
            rate = intake["messages_per_s"]
            out[fmt] = {
                "messages": len(messages),
                "mean_bytes": round(sum(len(b) for _, _, b in messages) / len(messages)),
                "raw_copy_records_per_s": round(ceiling, 1),
                "intake_messages_per_s": rate,
                "intake_vs_raw_copy": round(rate / ceiling, 4) if ceiling else None,
                "parse_only_messages_per_s": round(parse_rate(messages), 1),
                "startup_s": intake["startup_s"],
            }
        mllp = list(generate(n_mllp, seed=43, fmt="hl7v2"))
        ceiling = raw_copy_rate(broker.bootstrap, mllp)
        rate = mllp_rate(broker.bootstrap, mllp, Path(tmp))
        out["gateway_mllp"] = {
            "messages": len(mllp),
            "connections": 4,
            "raw_copy_records_per_s": round(ceiling, 1),
            "acknowledged_per_s": round(rate, 1),
            "acknowledged_vs_raw_copy": round(rate / ceiling, 4) if ceiling else None,
        }
    out["note"] = (
        "intake rates run from the stage's first message (group joined) to the last "
        "encounter readable on its topic; each message is one encounter; an MLLP AA waits "
        "for the broker's acknowledgement; parse_only is parse_raw alone, no broker"
    )
    return out
