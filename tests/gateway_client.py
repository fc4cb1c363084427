"""Clients of the intake gateway and a topic reader, shared by the gateway's tests."""

from __future__ import annotations

import http.client
import socket
import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from pipeline.kafka import ensure_topics
from pipeline.serde import registry
from services.intake.gateway import Gateway
from services.intake.settings import GatewayOptions, GatewaySettings

TOKEN = "test-token-0123456789"


def start_gateway(bootstrap: str, gateway: dict[str, Any] | None = None, **shared: Any) -> Gateway:
    """A gateway on free ports with its options ``gateway`` (``GatewayOptions``) and the
    ``shared`` settings, its topics created."""
    settings = GatewaySettings(gateway=GatewayOptions(**(gateway or {})), **shared)
    ensure_topics(bootstrap, settings, registry())
    gw = Gateway(settings, bootstrap)
    gw.start()
    return gw


def address(gw: Gateway, kind: str) -> tuple[str, int]:
    value = gw.endpoints()[kind].removeprefix("http://")
    host, port = value.rsplit(":", 1)
    return host, int(port)


def post(
    gw: Gateway, path: str, body: bytes, ctype: str, token: str | None = TOKEN
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(*address(gw, "http"), timeout=60)
    headers = {"Content-Type": ctype}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    conn.request("POST", path, body=body, headers=headers)
    resp = conn.getresponse()
    out = resp.status, resp.read()
    conn.close()
    return out


class Reader:
    """Reads a topic from the beginning, keeping everything seen so far."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": f"reader-{topic}", "log_level": 3,
             "enable.auto.commit": False, "fetch.wait.max.ms": 100}
        )  # fmt: skip
        md = self.consumer.list_topics(topic, timeout=10)
        parts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.topics[topic].partitions]
        self.consumer.assign(parts)
        self.records: list[Any] = []

    def poll(self, seconds: float = 0.3) -> None:
        deadline = time.monotonic() + seconds
        while True:  # at least one read, however short ``seconds``
            self.records += [m for m in self.consumer.consume(200, 0.1) if not m.error()]
            if time.monotonic() >= deadline:
                return

    def wait(self, done: Any, timeout: float, every_s: float = 0.3) -> bool:
        """Poll until ``done(records)``; ``every_s`` is how long to read between checks."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll(every_s)
            if done(self.records):
                return True
        return False

    def close(self) -> None:
        self.consumer.close()


def mllp_exchange(sock: socket.socket, payload: bytes, answers: int) -> list[bytes]:
    sock.sendall(payload)
    buf, out = b"", []
    deadline = time.monotonic() + 30
    while len(out) < answers and time.monotonic() < deadline:
        data = sock.recv(65536)
        if not data:  # closed by the gateway
            break
        buf += data
        while b"\x1c\r" in buf:
            frame, buf = buf.split(b"\x1c\r", 1)
            assert frame.startswith(b"\x0b")
            out.append(frame[1:])
    return out


def msa(reply: bytes) -> list[str]:
    line = next(s for s in reply.decode().split("\r") if s.startswith("MSA|"))
    return line.split("|")
