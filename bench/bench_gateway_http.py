"""The gateway's HTTP side against production WSGI servers, under the same HTTP probes.

The gateway (stdlib ``http.server`` inside ``edge.py``'s bounds, its own process on the
embedded broker, authentication off) and, when installed, waitress and cheroot hosting an
app with the gateway's checks (Content-Length required and bounded before the body is read,
then the body, then 5 ms standing in for the broker's acknowledgement), each configured
with the gateway's bounds (128 connections, 60 s timeouts, a 10 MiB body). Measured, per
server: a good client's HTTP posts (a new connection each, 3 s timeout) alone, beside 200
slowloris connections and beside 1000 idle connections (from other loopback addresses), the
server's CPU share and memory; a 1 GB Content-Length (answer, time); an endless chunked body
(answer, time, bytes the client got into the socket first). The servers are not project
dependencies: ``pip install waitress cheroot`` to compare (one not installed is skipped).
"""

from __future__ import annotations

import http.client
import importlib.util
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from statistics import median
from typing import Any

from bench.bench_gateway_edge import PREFIX, Probe, attacker
from pipeline.broker import EmbeddedBroker, free_port
from pipeline.kafka import ensure_topics
from pipeline.serde import registry
from pipeline.settings import Settings

LIMIT = 10 * 1024 * 1024
HL7 = b"MSH|^~\\&|EHR|FAC|CLAIMFLOW|CF|20250101||ADT^A03|P1|P|2.5.1\rPID|1||MRN1||DOE^JANE\r"
CANDIDATES = ("waitress", "cheroot")


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The gateway's HTTP checks, for a WSGI server."""
    length = environ.get("CONTENT_LENGTH") or ""
    if environ.get("HTTP_TRANSFER_ENCODING") or not length.isdigit():
        start_response("411 Length Required", [("Connection", "close")])
        return [b"send the body with a Content-Length\n"]
    if int(length) > LIMIT:
        start_response("413 Content Too Large", [("Connection", "close")])
        return [b"too large\n"]
    environ["wsgi.input"].read(int(length))
    time.sleep(0.005)  # the broker's acknowledgement
    start_response("202 Accepted", [("Content-Type", "text/plain")])
    return [b"accepted\n"]


def serve(kind: str, port: int) -> None:
    """Run ``kind`` on ``port`` with the gateway's bounds until SIGTERM."""
    if kind == "waitress":
        import waitress

        waitress.serve(app, host="127.0.0.1", port=port, threads=16, connection_limit=128,
                       channel_timeout=60, max_request_body_size=LIMIT)  # fmt: skip
    else:
        from cheroot import wsgi

        server = wsgi.Server(("127.0.0.1", port), app, numthreads=16, max=128, timeout=60)
        server.max_request_body_size = LIMIT
        signal.signal(signal.SIGTERM, lambda *_: server.stop())
        server.start()


class Candidate:
    """A WSGI server in its own process."""

    def __init__(self, kind: str) -> None:
        self.http = free_port()
        cmd = [sys.executable, "-m", "bench.bench_gateway_http", "serve", kind, str(self.http)]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.http), 1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    cpu_s = Probe.cpu_s
    rss_mb = Probe.rss_mb

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def good_client(port: int, n: int = 10) -> dict[str, Any]:
    times, answers = [], {}
    for _ in range(n):
        started = time.monotonic()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
            conn.request("POST", "/hl7v2", body=HL7, headers={"Content-Type": "text/plain"})
            answer = str(conn.getresponse().status)
            conn.close()
        except OSError as exc:
            answer = type(exc).__name__
        answers[answer] = answers.get(answer, 0) + 1
        times.append((time.monotonic() - started) * 1000)
        time.sleep(0.05)
    times.sort()
    return {"p50_ms": round(median(times), 1), "max_ms": round(times[-1], 1), "answers": answers}


def hold(port: int, n: int, head: bytes) -> list[socket.socket]:
    socks = []
    for i in range(n):
        try:
            sock = attacker(port, i)
            if head:
                sock.sendall(head)
            socks.append(sock)
        except OSError:
            pass
    return socks


def under(server: Any, name: str, n: int, head: bytes) -> dict[str, Any]:
    socks = hold(server.http, n, head)
    time.sleep(2.0)
    cpu, wall = server.cpu_s(), time.monotonic()
    result = good_client(server.http)
    share = (server.cpu_s() - cpu) / (time.monotonic() - wall)
    rss = server.rss_mb()
    for sock in socks:
        sock.close()
    time.sleep(0.5)
    return {"attack": name, **result, "cpu_share": round(share, 3), "rss_mb": round(rss, 1)}


def oversized(port: int) -> dict[str, Any]:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), 10) as sock:
        sock.sendall(b"POST /hl7v2 HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n")
        try:
            answer = sock.recv(200)[:12].decode(errors="replace")
        except OSError as exc:
            answer = type(exc).__name__
    return {"answer": answer, "ms": round((time.monotonic() - started) * 1000, 1)}


def endless_chunked(port: int) -> dict[str, Any]:
    started = time.monotonic()
    chunk = b"100000\r\n" + b"x" * 0x100000 + b"\r\n"
    sent, answer = 0, ""
    with socket.create_connection(("127.0.0.1", port), 10) as sock:
        sock.sendall(b"POST /hl7v2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        sock.setblocking(False)
        while time.monotonic() - started < 5 and not answer:
            try:
                answer = sock.recv(200)[:12].decode(errors="replace") or "closed"
                break
            except BlockingIOError:
                pass
            except OSError as exc:
                answer = type(exc).__name__
                break
            try:
                sent += sock.send(chunk)
            except BlockingIOError:
                time.sleep(0.01)
            except OSError as exc:
                answer = type(exc).__name__
    took = round((time.monotonic() - started) * 1000, 1)
    return {"answer": answer or "none in 5 s", "ms": took, "client_sent_mb": round(sent / 1e6, 1)}


def probe(server: Any, name: str) -> dict[str, Any]:
    return {
        "server": name,
        "attacks": [
            under(server, "none", 0, b""),
            under(server, "200 slowloris", 200, b"POST /fhir HTTP/1.1\r\nHost: x\r\n"),
            under(server, "1000 idle connections", 1000, b""),
        ],
        "content_length_1gb": oversized(server.http),
        "endless_chunked": endless_chunked(server.http),
    }


def main() -> dict[str, Any]:
    servers = []
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, Settings(topic_prefix=PREFIX), registry())
        gateway = Probe(broker.bootstrap, Path(tmp))
        try:
            servers.append(probe(gateway, "stdlib http.server + edge.py (the gateway)"))
        finally:
            gateway.stop()
    skipped = [k for k in CANDIDATES if importlib.util.find_spec(k) is None]
    for kind in (k for k in CANDIDATES if k not in skipped):
        candidate = Candidate(kind)
        try:
            servers.append(probe(candidate, kind))
        finally:
            candidate.stop()
    return {"servers": servers, "skipped_not_installed": skipped}


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        import json

        print(json.dumps(main(), indent=1))
