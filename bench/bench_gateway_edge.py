"""The intake gateway under attack and broker faults, probed from outside on loopback.

The gateway runs as its own process (``claimflow service intake-gateway``, default settings)
against the embedded broker. Measured: a good MLLP client's answer latency alone and under
each attack, and a good HTTP client's (an HL7 POST on a new connection each; its answers by
status), under each attack (four byte-a-millisecond senders of a 9 MB frame; 200 slowloris
HTTP connections; four senders announcing a 1 GB body in a loop; 20 connections each holding
an unfinished 10 MB frame), the gateway's CPU share
and resident memory during each, how many attack connections were refused, and, after the
broker is paused (SIGSTOP) for ``STALL_S`` seconds, how long until a new message is accepted
and /healthz is 200 again, and whether every accepted message (AA or 202, all run long) is in
``intake.raw.v1``.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from statistics import median
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from pipeline.broker import EmbeddedBroker, free_port
from pipeline.kafka import ensure_topics
from pipeline.serde import registry
from pipeline.settings import Settings

STALL_S = float(os.environ.get("BENCH_GATEWAY_STALL_S", "60"))
ROOT = Path(__file__).resolve().parents[1]
PREFIX = "edge."
TICKS = os.sysconf("SC_CLK_TCK")


def message(n: int) -> bytes:
    return (
        f"MSH|^~\\&|EHR|FAC|CLAIMFLOW|CF|20250101||ADT^A03|PROBE{n}|P|2.5.1\r"
        f"PID|1||MRN{n}||DOE^JANE||19700101|F\r"
    ).encode()


class Probe:
    def __init__(self, bootstrap: str, folder: Path) -> None:
        self.mllp, self.http = free_port(), free_port()
        env = {
            **os.environ,
            "CLAIMFLOW_BOOTSTRAP_SERVERS": bootstrap,
            "CLAIMFLOW_TOPIC_PREFIX": PREFIX,
            "CLAIMFLOW_STATE_DIR": str(folder / "state"),
            "CLAIMFLOW_GATEWAY__MLLP_PORT": str(self.mllp),
            "CLAIMFLOW_GATEWAY__HTTP_PORT": str(self.http),
            "CLAIMFLOW_GATEWAY__AUTH": "false",
            "CLAIMFLOW_LOG_LEVEL": "WARNING",
        }
        self.log = (folder / "gateway.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "service", "intake-gateway"],
            env=env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.sent = 0
        self.accepted: set[str] = set()  # control ids answered AA / 202: all must be stored
        self._count = threading.Lock()
        deadline = time.monotonic() + 60
        while self.healthz() != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not become ready")
            time.sleep(0.2)

    def healthz(self) -> int:
        try:
            url = f"http://127.0.0.1:{self.http}/healthz"
            with urllib.request.urlopen(url, timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return 0

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def send(self, sock: socket.socket) -> tuple[str, float, str]:
        """(MSA-1, seconds, control id) for the next probe message on ``sock``."""
        with self._count:
            self.sent += 1
            n = self.sent
        control = f"PROBE{n}"
        started = time.monotonic()
        sock.sendall(b"\x0b" + message(n) + b"\x1c\r")
        buf = b""
        while b"\x1c\r" not in buf:
            data = sock.recv(65536)
            if not data:
                return "closed", time.monotonic() - started, control
            buf += data
        code = buf.split(b"MSA|", 1)[1].split(b"|", 1)[0].decode()
        if code == "AA":
            self.accepted.add(control)
        return code, time.monotonic() - started, control

    def post(self) -> tuple[int, float]:
        """(HTTP status, seconds) of the next probe message POSTed on a new connection."""
        with self._count:
            self.sent += 1
            n = self.sent
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.http, timeout=60)
        try:
            conn.request("POST", "/hl7v2", body=message(n),
                         headers={"Content-Type": "x-application/hl7-v2+er7"})  # fmt: skip
            resp = conn.getresponse()
            resp.read()
            status = resp.status
        except OSError:
            status = 0
        finally:
            conn.close()
        if status == 202:
            self.accepted.add(f"PROBE{n}")
        return status, time.monotonic() - started

    def good_client(self, n: int = 40, pause: float = 0.05) -> dict[str, Any]:
        """A good MLLP client (one connection, ``n`` messages) and a good HTTP client (``n``
        POSTs, a connection each): latency of each, and the HTTP answers by status."""
        times, http_times, statuses = [], [], Counter[int]()
        with socket.create_connection(("127.0.0.1", self.mllp), timeout=60) as sock:
            for _ in range(n):
                code, took, _ = self.send(sock)
                if code != "AA":
                    raise RuntimeError(f"good client answered {code}")
                times.append(took * 1000)
                status, took = self.post()
                statuses[status] += 1
                http_times.append(took * 1000)
                time.sleep(pause)
        return {
            **{f"mllp_{k}": v for k, v in spread(times).items()},
            **{f"http_{k}": v for k, v in spread(http_times).items()},
            "http_status": dict(statuses),
        }

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def spread(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {
        "p50_ms": round(median(times), 1),
        "p95_ms": round(times[int(len(times) * 0.95) - 1], 1),
        "max_ms": round(times[-1], 1),
    }


def attacker(port: int, n: int, timeout: float = 5.0) -> socket.socket:
    """A connection from attacker ``n``'s own loopback address (127.0.1.n, 127.0.2.n ...),
    so per-address limits do not also shut out the good client on 127.0.0.1."""
    source = f"127.0.{1 + n // 250}.{1 + n % 250}"
    return socket.create_connection(("127.0.0.1", port), timeout, (source, 0))


def under(probe: Probe, name: str, attack: Any, settle: float = 2.0) -> dict[str, Any]:
    """Start ``attack`` (returns a stop function and a counter dict), let it run, measure."""
    stop, counts = attack(probe)
    time.sleep(settle)
    cpu, wall = probe.cpu_s(), time.monotonic()
    latency = probe.good_client()
    time.sleep(max(0.0, 5.0 - (time.monotonic() - wall)))
    share = (probe.cpu_s() - cpu) / (time.monotonic() - wall)
    rss = probe.rss_mb()
    stop()
    return {"attack": name, **latency, "gateway_cpu_share": round(share, 3),
            "rss_mb": round(rss, 1), **counts}  # fmt: skip


def no_attack(_probe: Probe) -> tuple[Any, dict[str, int]]:
    return (lambda: None), {}


def byte_a_ms(probe: Probe) -> tuple[Any, dict[str, int]]:
    stop = threading.Event()
    counts = {"connections": 4, "cut": 0}

    def one(n: int) -> None:
        with attacker(probe.mllp, n, timeout=120) as sock:
            sock.sendall(b"\x0bMSH|^~\\&|A|FAC|C|D|20250101||ADT^A03|SLOW|P|2.5.1\r")
            try:
                for _ in range(9_000_000):
                    if stop.is_set():
                        return
                    sock.send(b"x")
                    time.sleep(0.001)
            except OSError:
                counts["cut"] += 1

    threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in range(4)]
    for t in threads:
        t.start()
    return stop.set, counts


def slowloris(probe: Probe) -> tuple[Any, dict[str, int]]:
    socks: list[socket.socket] = []
    counts = {"connections": 200, "refused": 0}
    for n in range(200):
        sock = attacker(probe.http, n)
        sock.sendall(b"POST /fhir HTTP/1.1\r\nHost: x\r\n")
        socks.append(sock)
    time.sleep(0.5)
    for sock in socks:
        sock.setblocking(False)
        try:
            if sock.recv(100).startswith(b"HTTP/1.1 503"):
                counts["refused"] += 1
        except BlockingIOError:
            pass
        except OSError:
            counts["refused"] += 1

    def stop() -> None:
        for sock in socks:
            sock.close()

    return stop, counts


def huge_length(probe: Probe) -> tuple[Any, dict[str, Any]]:
    """Four senders announcing a 1 GB body, again and again: each is answered 413 unread."""
    stop = threading.Event()
    counts: dict[str, Any] = {"connections": 4, "answered_413": 0, "other": 0}
    took: list[float] = []

    def one(n: int) -> None:
        while not stop.is_set():
            try:
                with attacker(probe.http, n) as sock:
                    started = time.monotonic()
                    sock.sendall(b"POST /hl7v2 HTTP/1.1\r\nHost: x\r\n"
                                 b"Content-Length: 1000000000\r\n\r\n")  # fmt: skip
                    head = sock.recv(100)
                    took.append((time.monotonic() - started) * 1000)
                    key = "answered_413" if head.startswith(b"HTTP/1.1 413") else "other"
                    counts[key] += 1
            except OSError:
                counts["other"] += 1

    threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in range(4)]
    for t in threads:
        t.start()

    def end() -> None:
        stop.set()
        for t in threads:
            t.join(10)
        if took:
            counts["413_p50_ms"] = round(median(took), 2)

    return end, counts


def unfinished_frames(probe: Probe) -> tuple[Any, dict[str, int]]:
    socks: list[socket.socket] = []
    counts = {"connections": 20, "refused": 0}
    chunk = b"x" * 1_000_000
    for n in range(20):
        sock = attacker(probe.mllp, n)
        try:
            sock.sendall(b"\x0bMSH|^~\\&|A|FAC|C|D|20250101||ADT^A03|BIG|P|2.5.1\r")
            for _ in range(10):
                sock.sendall(chunk)
        except OSError:
            counts["refused"] += 1
        socks.append(sock)

    def stop() -> None:
        for sock in socks:
            sock.close()

    return stop, counts


def stall(probe: Probe, broker: EmbeddedBroker) -> dict[str, Any]:
    """Pause the broker for STALL_S; a client keeps sending one message a second on fresh
    connections; measure when a new message is accepted and /healthz is 200 again."""
    answers: dict[str, str] = {}

    def attempt() -> None:
        try:
            with socket.create_connection(("127.0.0.1", probe.mllp), timeout=90) as sock:
                code, _, control = probe.send(sock)
                answers[control] = code
        except OSError:
            pass

    assert broker.proc is not None
    os.kill(broker.proc.pid, signal.SIGSTOP)
    paused = time.monotonic()
    not_ready_after = None
    while time.monotonic() - paused < STALL_S:
        threading.Thread(target=attempt, daemon=True).start()
        if not_ready_after is None and probe.healthz() == 503:
            not_ready_after = time.monotonic() - paused
        time.sleep(1.0)
    os.kill(broker.proc.pid, signal.SIGCONT)
    resumed = time.monotonic()
    accepted_after = ready_after = None
    while time.monotonic() - resumed < 120 and (accepted_after is None or ready_after is None):
        if ready_after is None and probe.healthz() == 200:
            ready_after = time.monotonic() - resumed
        if accepted_after is None:
            with socket.create_connection(("127.0.0.1", probe.mllp), timeout=60) as sock:
                sent = time.monotonic()
                code, _, control = probe.send(sock)
                answers[control] = code
                if code == "AA":
                    accepted_after = sent - resumed
        time.sleep(0.25)
    time.sleep(35)  # every attempt made during the stall has its answer
    return {
        "stall_s": STALL_S,
        "healthz_503_after_s": None if not_ready_after is None else round(not_ready_after, 1),
        "first_accepted_after_resume_s": None
        if accepted_after is None
        else round(accepted_after, 2),
        "healthz_200_after_resume_s": None if ready_after is None else round(ready_after, 2),
        "answers": {c: sum(1 for v in answers.values() if v == c) for c in set(answers.values())},
        "accepted": sorted(c for c, v in answers.items() if v == "AA"),
    }


def stored_controls(bootstrap: str, expect: set[str]) -> set[str]:
    topic = f"{PREFIX}intake.raw.v1"
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "edge-probe",
                         "enable.auto.commit": False, "log_level": 3})  # fmt: skip
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    reg, seen = registry(), set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not expect <= seen:
        for m in consumer.consume(500, 0.5):
            if not m.error():
                seen.add(reg.decode("intake.raw.v1", m.value()).source_id.rsplit(":", 1)[1])
    consumer.close()
    return seen


def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, Settings(topic_prefix=PREFIX), registry())
        probe = Probe(broker.bootstrap, Path(tmp))
        try:
            attacks = [
                under(probe, "none", no_attack),
                under(probe, "4 senders, a byte a millisecond", byte_a_ms),
                under(probe, "200 slowloris HTTP connections", slowloris),
                under(probe, "1 GB Content-Length, 4 senders in a loop", huge_length),
                under(probe, "20 unfinished 10 MB MLLP frames", unfinished_frames),
            ]
            time.sleep(1.0)
            rss_after = round(probe.rss_mb(), 1)
            outage = stall(probe, broker)
            outage.pop("accepted")
            accepted = set(probe.accepted)  # every AA and 202 of the run, the stall's too
            stored = stored_controls(broker.bootstrap, accepted)
        finally:
            probe.stop()
        return {
            "attacks": attacks,
            "rss_mb_after_attacks": rss_after,
            "outage": outage,
            "accepted": len(accepted),
            "accepted_not_stored": len(accepted - stored),
        }


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
