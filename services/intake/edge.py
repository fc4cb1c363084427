"""The gateway's connection limits, deadlines, TLS and MLLP framing (no Kafka import).

What a listener open to a hospital network must bound, whatever a peer sends: how many
connections there are (in all and per address) and who may connect (an allow-list of
networks, TLS client certificates), how long a message may take from its first byte to its
last (a byte-a-millisecond sender is cut at the deadline, not held for ever), how long a
connection may sit idle, how large a message may grow (checked as the bytes arrive), and
how many bytes all connections may hold at once. Framing searches only the bytes that
arrived since the last look, so a slow sender costs CPU in proportion to its bytes.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import io
import ipaddress
import socket
import socketserver
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SB, EB, CR = b"\x0b", b"\x1c", b"\x0d"
BUSY_HTTP = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n"
)


RELEASE_AFTER_BYTES = 1 << 20
"""A connection that held this much hands the freed memory back to the system on closing."""
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def _libc() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _libc()


def large_buffers_from_the_system() -> None:
    """Have glibc map buffers of a mebibyte or more straight from the system, so a frame's
    memory goes back when the frame is dropped. By default glibc raises that threshold after
    the first large free (up to 32 MiB) and keeps later multi-megabyte buffers in its arenas:
    the frames of an attack's closed connections stayed resident. Process-wide: the gateway
    calls it at start-up. Not glibc: nothing to do."""
    if _LIBC is not None and hasattr(_LIBC, "mallopt"):
        _LIBC.mallopt(M_MMAP_THRESHOLD, RELEASE_AFTER_BYTES)


def release_memory() -> None:
    """Return freed heap pages to the system (glibc's ``malloc_trim``)."""
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


class Budget:
    """Bytes that all connections together may hold in buffers (bounded memory)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bool:
        """Reserve ``n`` bytes; False (nothing reserved) when that would pass the limit."""
        with self._lock:
            if self.held + n > self.limit:
                return False
            self.held += n
            return True

    def give(self, n: int) -> None:
        with self._lock:
            self.held -= n


class Slots:
    """Connections open, in all and per peer address, against their limits."""

    def __init__(self, total: int, per_address: int) -> None:
        self.total, self.per_address = total, per_address
        self.open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def take(self, address: str) -> str | None:
        """Count a new connection in; the reason when it is over a limit."""
        with self._lock:
            if sum(self.open.values()) >= self.total:
                return "connections"
            if self.open[address] >= self.per_address:
                return "connections_per_address"
            self.open[address] += 1
            return None

    def give(self, address: str) -> None:
        with self._lock:
            self.open[address] -= 1
            if self.open[address] <= 0:
                del self.open[address]


def networks(values: Sequence[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Parse an allow-list of addresses or CIDR networks (``10.1.0.0/16``, ``192.0.2.7``)."""
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip())


def allowed(address: str, nets: Sequence[Any]) -> bool:
    """Whether ``address`` is in one of ``nets``; an empty list allows every address."""
    if not nets:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in nets)


def server_tls(cert: Path, key: Path, client_ca: Path | None) -> ssl.SSLContext:
    """A server TLS context (1.2 or later); with ``client_ca``, a client certificate signed
    by it is required (mutual TLS) and a connection without one fails the handshake."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    if client_ca is not None:
        context.load_verify_locations(cafile=str(client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@dataclass
class _Open:
    """One connection holding a slot: its peer address, when it was accepted, and (once its
    handler runs) the reader that counts what the peer sent."""

    address: str
    accepted_at: float
    reader: DeadlineReader | None = None

    def waiting(self, now: float) -> tuple[float, float] | None:
        """(bytes per second, seconds) of the current wait for the peer's bytes (a request's
        head and body, or the silence between requests); None while it is being answered."""
        reader = self.reader
        if reader is None:  # its handler has not started: nothing read yet
            return 0.0, now - self.accepted_at
        if reader.answering:
            return None
        age = now - reader.since
        return reader.received / max(age, 1.0), age  # judged over one second at least


class LimitedServer(socketserver.ThreadingTCPServer):
    """A threading TCP server that counts connections against ``Slots`` and an allow-list
    before a thread is started, and closes (or answers ``refusal``) what is over a limit.

    With ``min_rate`` (bytes per second) set, a connection that finds the server at a limit
    (in all, or for its address) takes the slot of the connection that has waited longest
    for a peer sending slower than that (a slowloris that trickles its headers, a keep-alive
    connection gone silent), which is closed; only when none is that slow is it refused. A
    connection being answered is never evicted."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = socket.SOMAXCONN  # a burst of connects waits for accept, not a SYN retry
    slots: Slots
    allow: tuple[Any, ...] = ()
    refusal: bytes = b""
    min_rate: float = 0.0
    on_refused: Callable[[str], None] = staticmethod(lambda reason: None)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._open: dict[Any, _Open] = {}
        self._open_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def watch(self, request: Any, reader: DeadlineReader) -> None:
        """The handler's reader of ``request``, so the connection's pace can be judged."""
        with self._open_lock:
            held = self._open.get(request)
            if held is not None:
                held.reader = reader

    def _evict(self, address: str | None) -> bool:
        """Close the slowest waiting connection (of ``address`` when given) and free its
        slot; False when no connection is below ``min_rate``."""
        if self.min_rate <= 0:
            return False
        now = time.monotonic()
        with self._open_lock:
            slow = [
                (pace[1], request)
                for request, held in self._open.items()
                if (address is None or held.address == address)
                and (pace := held.waiting(now)) is not None
                and pace[0] < self.min_rate
            ]
            if not slow:
                return False
            _, victim = max(slow, key=lambda item: item[0])
            held = self._open.pop(victim)
            self.slots.give(held.address)
            if held.reader is not None:
                held.reader.evicted = True  # its handler answers nothing
        self.on_refused("evicted")
        with contextlib.suppress(OSError):
            victim.shutdown(socket.SHUT_RDWR)  # its handler reads EOF and ends
        return True

    def process_request(self, request: Any, client_address: Any) -> None:
        address = str(client_address[0])
        reason = "address" if not allowed(address, self.allow) else self.slots.take(address)
        for _ in range(2):  # at most one eviction for each limit (in all, per address)
            if reason not in ("connections", "connections_per_address"):
                break
            if not self._evict(address if reason == "connections_per_address" else None):
                break
            reason = self.slots.take(address)
        if reason is None:
            with self._open_lock:
                self._open[request] = _Open(address, time.monotonic())
            super().process_request(request, client_address)
            return
        self.on_refused(reason)
        if self.refusal and reason != "address":
            try:
                request.settimeout(1.0)
                request.sendall(self.refusal)
            except OSError:
                pass
        self.shutdown_request(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._open_lock:
                held = self._open.pop(request, None)  # None: evicted, its slot given already
                if held is not None:
                    self.slots.give(held.address)


class DeadlineReader(io.RawIOBase):
    """A socket's reads, bounded by an idle timeout and by a deadline that starts with the
    first byte of a message (``begin()`` re-arms it for the next message)."""

    def __init__(self, sock: socket.socket, idle_s: float, deadline_s: float) -> None:
        self.sock, self.idle_s, self.deadline_s = sock, idle_s, deadline_s
        self.deadline: float | None = None
        self.evicted = False  # closed by the server for a new connection: answer nothing
        self.eof = False  # the peer closed its side
        self.begin()

    def begin(self) -> None:
        """The next byte starts a new message (and its deadline); the wait for it starts now."""
        self.deadline = None
        self.since = time.monotonic()
        self.received = 0  # bytes of this message so far
        self.answering = False  # set by the handler once the message is in

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        timeout = self.idle_s
        if self.deadline is not None:
            timeout = min(timeout, self.deadline - time.monotonic())
            if timeout <= 0:
                raise TimeoutError("message deadline passed")
        self.sock.settimeout(timeout)
        n = self.sock.recv_into(buffer)
        self.received += n
        self.eof = self.eof or (n == 0 and len(buffer) > 0)
        if n and self.deadline is None:
            self.deadline = time.monotonic() + self.deadline_s
        return n


@dataclass(frozen=True)
class TooLarge:
    """A frame over the size limit, read past and dropped; its head, for the ACK's MSH."""

    head: bytes


@dataclass(frozen=True)
class Cut:
    """The connection ends without a frame: ``eof``, ``idle``, ``deadline`` or ``busy``
    (the memory budget is spent); ``head`` is what a partial frame began with."""

    reason: str
    head: bytes = b""


class MllpReader:
    """Frames (0x0B message 0x1C 0x0D) from one connection, under the edge's bounds.

    Bytes outside a frame are dropped. A frame longer than ``limit`` is read past without
    being kept (``TooLarge``); a frame not complete ``deadline_s`` after its first byte, a
    connection silent for ``idle_s``, or a frame the shared ``budget`` cannot hold ends the
    connection (``Cut``)."""

    def __init__(
        self, reader: DeadlineReader, limit: int, budget: Budget, chunk: int = 65536
    ) -> None:
        self.reader, self.limit, self.budget, self.chunk = reader, limit, budget, chunk
        self.buf = bytearray()
        self.held = 0  # bytes of ``buf`` reserved in the budget
        self.scanned = 1  # where the search for the end of the current frame resumes

    def close(self) -> None:
        """Give the buffer's bytes back to the budget (and a large buffer's memory back to
        the system)."""
        large = self.held >= RELEASE_AFTER_BYTES
        self.buf.clear()
        self._account()
        if large:
            release_memory()

    def _account(self) -> bool:
        delta = len(self.buf) - self.held
        if delta > 0 and not self.budget.take(delta):
            return False
        if delta < 0:
            self.budget.give(-delta)
        self.held = len(self.buf)
        return True

    def _read(self) -> bytes | Cut:
        try:
            data = self.reader.read(self.chunk)
        except TimeoutError:
            late = self.reader.deadline is not None and time.monotonic() >= self.reader.deadline
            return Cut("deadline" if late else "idle", bytes(self.buf[1:4097]))
        except OSError:
            return Cut("eof")
        return data if data else Cut("eof", bytes(self.buf[1:4097]))

    def next(self) -> bytes | TooLarge | Cut:
        """The next frame's message bytes, or why there is none."""
        buf = self.buf
        while True:
            if buf[:1] != SB:
                start = buf.find(SB)
                del buf[: start if start >= 0 else len(buf)]
                self.scanned = 1
                self.reader.begin()  # the deadline starts with a frame's first byte
                if not buf:
                    self._account()
            if buf:
                end = buf.find(EB + CR, self.scanned)
                if end >= 0:
                    frame = (
                        bytes(buf[1:end]) if end - 1 <= self.limit else TooLarge(bytes(buf[1:4097]))
                    )
                    del buf[: end + 2]
                    self.scanned = 1
                    self.reader.begin()
                    self._account()
                    return frame
                self.scanned = max(1, len(buf) - 1)
                if len(buf) - 1 > self.limit:
                    return self._skip()
            data = self._read()
            if isinstance(data, Cut):
                self.close()
                return data
            buf += data
            if not self._account():
                head = bytes(buf[1:4097])
                self.close()
                return Cut("busy", head)

    def _skip(self) -> TooLarge | Cut:
        """Read past the rest of an oversized frame without keeping it."""
        head, tail = bytes(self.buf[1:4097]), bytes(self.buf[-1:])
        self.buf.clear()
        self._account()
        while True:
            data = self._read()
            if isinstance(data, Cut):
                return Cut(data.reason, head)
            data = tail + data
            end = data.find(EB + CR)
            if end >= 0:
                self.buf += data[end + 2 :]
                self.scanned = 1
                self.reader.begin()
                if not self._account():
                    self.close()
                return TooLarge(head)
            tail = data[-1:]
