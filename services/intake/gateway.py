"""intake gateway: FHIR and HL7 v2 over HTTP, HL7 v2 over MLLP, into intake.raw.v1.

A sender hears "accepted" (HTTP 202, MLLP AA) only once the broker has acknowledged the raw
message (idempotent producer, acks=all): from then on it is durably in Kafka and the intake
stage will read it, whatever restarts. A broker failure answers 503 / AE with the reason,
so the sender keeps the message and retries. The gateway checks only that the body is what
it claims to be (a FHIR Bundle, an HL7 v2 message with an MSH); full parsing is the intake
stage's, whose dead letters carry the field and the reason.

HTTP (stdlib ``http.server``, one thread per connection, each blocked on its own delivery
report; the edge's limits from ``edge.py`` around it):

- ``POST /fhir``: a FHIR R4 Bundle (``application/fhir+json`` or ``application/json``);
  202 or 4xx/503 with a FHIR OperationOutcome.
- ``POST /hl7v2``: one ER7 message or batch (``x-application/hl7-v2+er7``,
  ``application/hl7-v2``, ``text/plain``); the answer carries the HL7 ACK (AA 202, AR 400,
  AR 413 too large, AE 503).
- ``GET /healthz``: readiness, 200 while the broker answers and deliveries succeed and the
  state volume takes writes (above ``min_free_bytes``); else 503, and messages get 503 / AE.

Every POST needs ``Authorization: Bearer <token>`` unless authentication is turned off;
bodies above the size limit get 413 unread, and so does a message whose record is larger
than the broker takes (``max_message_bytes``): that refusal is permanent, never 503 / AE.
One Content-Length, decimal, is required (two, or another value: 400).

MLLP (``socketserver``, one thread per connection, any number of messages per connection,
framing 0x0B … 0x1C 0x0D), optionally over TLS with client certificates: original-mode
acknowledgement, AA once stored, AR for bytes that are not an HL7 message, too large, or
from a sending facility not on the allow-list, AE with the reason when the broker fails.

Both listeners count connections (in all and per address) before a thread starts, bound
each message by a deadline from its first byte and each connection by an idle timeout, and
share one memory budget for message bytes in flight (``edge.py``).

Source ids (the record key, and what the intake stage drops repeats by): HL7
``hl7v2:{MSH-4 or MSH-3}:{MSH-10}``; FHIR ``fhir:{Bundle.identifier system|value}``, else
``fhir:{meta.source}/{Bundle.id}``, else ``fhir:Bundle/{id}``, else ``fhir:sha256:{hash}``.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import re
import secrets
import signal
import socket
import socketserver
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from prometheus_client import Counter, Histogram

from pipeline import metrics
from pipeline.kafka import ensure_topics, make_producer
from pipeline.models import RawMessage, utcnow
from pipeline.serde import registry
from pipeline.settings import Settings
from pipeline.stage import freeze_start_up
from pipeline.state import StorageGuard, private_file
from services.intake.app import body_digest
from services.intake.domain import HL7_TYPES
from services.intake.edge import (
    BUSY_HTTP,
    CR,
    EB,
    SB,
    Budget,
    Cut,
    DeadlineReader,
    LimitedServer,
    MllpReader,
    Slots,
    TooLarge,
    large_buffers_from_the_system,
    networks,
    server_tls,
)
from services.intake.hl7v2 import _Enc, _unescape
from services.intake.settings import GatewaySettings

log = logging.getLogger(__name__)

FHIR_CONTENT_TYPE = "application/fhir+json"
HL7_CONTENT_TYPE = "x-application/hl7-v2+er7"
ENDPOINTS_FILE = "gateway.json"

REFUSED = Counter(
    "claimflow_gateway_connections_refused_total",
    "Connections refused or cut by a bound: connections, connections_per_address, address, "
    "tls, idle, deadline, busy, evicted (a slow HTTP connection closed for a new one at a limit)",
    ["protocol", "reason"],
)
REQUESTS = Counter(
    "claimflow_gateway_requests_total",
    "Messages the gateway answered, by protocol and outcome",
    ["protocol", "outcome"],
)
ANSWER_SECONDS = Histogram(
    "claimflow_gateway_answer_seconds",
    "Time from a message's last byte to the answer (broker acknowledgement included)",
    ["protocol"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


@dataclass(frozen=True)
class Refusal:
    """Why a message was not stored: ``permanent`` when resending it cannot help (413 / AR),
    else the sender keeps it and retries (503 / AE)."""

    reason: str
    permanent: bool = False


class Rejected(Exception):
    """The body is not what the endpoint takes: a 4xx / AR with a reason for the sender."""

    def __init__(self, reason: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


# --- cheap checks --------------------------------------------------------------------------


def fhir_source(body: bytes) -> tuple[str, str | None]:
    """(source id, source system) of a FHIR Bundle; Rejected when it is not one."""
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise Rejected(f"body is not JSON (line {exc.lineno} column {exc.colno})") from None
    except (ValueError, RecursionError):
        raise Rejected("body is not JSON") from None
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        kind = data.get("resourceType") if isinstance(data, dict) else None
        shown = kind if isinstance(kind, str) and re.fullmatch(r"[A-Za-z]{1,40}", kind) else None
        raise Rejected(f"expected a FHIR Bundle, got {shown or 'something else'}")
    meta = data.get("meta")
    system = meta.get("source") if isinstance(meta, dict) else None
    system = system.strip() if isinstance(system, str) and system.strip() else None
    ident = data.get("identifier")
    if isinstance(ident, dict):
        sys_, value = ident.get("system"), ident.get("value")
        if isinstance(value, str) and value.strip():
            prefix = sys_.strip() if isinstance(sys_, str) else ""
            return f"fhir:{prefix}|{value.strip()}", system
    bundle_id = data.get("id")
    if isinstance(bundle_id, str) and bundle_id.strip():
        return f"fhir:{system or 'Bundle'}/{bundle_id.strip()}", system
    return f"fhir:sha256:{body_digest(body)}", system


@dataclass(frozen=True)
class Hl7Header:
    """What an ACK needs from the message it answers (values already unescaped)."""

    sending_app: str = ""
    sending_facility: str = ""
    receiving_app: str = ""
    receiving_facility: str = ""
    message_type: str = ""
    event: str = ""
    control_id: str = ""
    version: str = "2.5.1"


def _msh_line(body: bytes) -> str | None:
    """The first segment of an ER7 body when it is an MSH (batch headers skipped)."""
    text = body[:65536].decode("latin-1")
    for line in re.split(r"\r\n|\r|\n", text.lstrip("\ufeff\x0b \t\r\n")):
        if line.startswith(("FHS", "BHS")) or not line.strip():
            continue
        return line if line.startswith("MSH") else None
    return None


def hl7_header(body: bytes) -> Hl7Header | None:
    """The first MSH of an ER7 body, read by position; None when there is none."""
    line = _msh_line(body)
    if line is None or len(line) < 8:
        return None
    sep, chars = line[3], line[4:8]
    if sep.isalnum() or len(set(chars + sep)) != 5 or any(c.isalnum() for c in chars):
        return None
    enc = _Enc(chars[0], chars[1], chars[2], chars[3])
    fields = line.split(sep)
    parts = [f.split(enc.component) for f in fields]

    def value(n: int, comp: int = 0) -> str:
        if len(parts) <= n or len(parts[n]) <= comp:
            return ""
        return _unescape(parts[n][comp].split(enc.subcomponent)[0], enc).strip()

    return Hl7Header(
        sending_app=value(2),
        sending_facility=value(3),
        receiving_app=value(4),
        receiving_facility=value(5),
        message_type=value(8),
        event=value(8, 1),
        control_id=value(9),
        version=value(11) or "2.5.1",
    )


def hl7_source(body: bytes) -> tuple[str, Hl7Header]:
    """(source id, header) of an ER7 message; Rejected when it is not one."""
    header = hl7_header(body)
    if header is None:
        raise Rejected("not an HL7 v2 message: no MSH segment with encoding characters")
    if not header.control_id:
        raise Rejected("MSH-10 message control id missing")
    if not header.message_type:
        raise Rejected("MSH-9 message type missing")
    origin = header.sending_facility or header.sending_app or "unknown"
    return f"hl7v2:{origin}:{header.control_id}", header


def _esc(value: str) -> str:
    """Escape a value for an ER7 field with the standard delimiters."""
    for char, seq in (
        ("\\", "\\E\\"),
        ("|", "\\F\\"),
        ("^", "\\S\\"),
        ("&", "\\T\\"),
        ("~", "\\R\\"),
    ):
        value = value.replace(char, seq)
    return re.sub(r"[\x00-\x1f]", " ", value)  # fmt: skip


# HL7 table 0357 message error condition codes used in ERR-3.
ERR_CODES = {"AR": ("100", "Segment sequence error"), "AE": ("207", "Application internal error")}


def ack(header: Hl7Header | None, code: str, text: str = "") -> bytes:
    """An original-mode ACK (MSA-1 AA/AE/AR) to a message, with an ERR for AE and AR."""
    h = header or Hl7Header()
    now = datetime.now().astimezone().strftime("%Y%m%d%H%M%S%z")
    segments = [
        "|".join([
            "MSH", "^~\\&", _esc(h.receiving_app or "CLAIMFLOW"),
            _esc(h.receiving_facility or "CLAIMFLOW"), _esc(h.sending_app),
            _esc(h.sending_facility), now, "", f"ACK^{_esc(h.event)}^ACK" if h.event else "ACK",
            f"ACK{secrets.token_hex(8)}", "P", _esc(h.version),
        ]),
        "|".join(["MSA", code, _esc(h.control_id), _esc(text[:200])]),
    ]  # fmt: skip
    if code in ERR_CODES:
        number, name = ERR_CODES[code]
        segments.append(f"ERR||MSH|{number}^{name}^HL70357|E||||{_esc(text[:200])}")
    return ("\r".join(segments) + "\r").encode()


# --- producing -----------------------------------------------------------------------------


# Delivery errors after which this producer's id is spent: a message timed out (librdkafka
# then bumps the producer epoch, which Tansu answers by fencing it for good) or the broker
# no longer knows or accepts the producer id. A fresh producer (a new id) recovers.
RENEW_ON = frozenset({
    KafkaError._MSG_TIMED_OUT, KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
    KafkaError.INVALID_PRODUCER_EPOCH, KafkaError.UNKNOWN_PRODUCER_ID,
    KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, KafkaError.INVALID_PRODUCER_ID_MAPPING,
    KafkaError._INCONSISTENT,
})  # fmt: skip
# Errors no retry can fix: the record is larger than the producer or the topic takes.
PERMANENT = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD,
})  # fmt: skip
# Room kept under the record limit: the intake stage's dead letter carries the raw record
# plus its own envelope (source, error, field), and must fit too.
ENVELOPE_BYTES = 64 * 1024
# Readiness: how often the broker is asked for metadata while all is well, and how long
# an answer may take.
PROBE_EVERY_S, PROBE_TIMEOUT_S = 5.0, 2.0


class Publisher:
    """Produces raw messages to intake.raw.v1 and blocks each caller until the broker
    answers for its message (a background thread serves the delivery reports).

    A broker stall longer than the delivery timeout spends the producer's id (see
    ``RENEW_ON``): the thread then replaces the producer with a fresh one, so the gateway
    accepts again once the broker is back, without a restart. ``ready`` is false until the
    broker answers a metadata request, after a failed delivery until a delivery succeeds or
    the broker answers again, and while the broker does not answer the periodic request;
    /healthz reports it, so a load balancer stops sending while nothing can be stored.
    """

    def __init__(self, settings: GatewaySettings, bootstrap: str) -> None:
        self.timeout_s = settings.gateway.delivery_timeout_s
        self.topic = settings.topic("intake.raw.v1")
        self.max_record_bytes = settings.max_message_bytes - ENVELOPE_BYTES
        self.registry = registry()
        self.fatal = threading.Event()
        self.closed = False
        self.renewals = 0
        self._settings, self._bootstrap = settings, bootstrap
        self._ready = threading.Event()
        self._renew = threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.producer = self._new_producer()
        self._poller = threading.Thread(target=self._poll, name="delivery-reports", daemon=True)
        self._poller.start()
        self._watcher = threading.Thread(target=self._watch, name="broker-watch", daemon=True)
        self._watcher.start()

    def _new_producer(self) -> Producer:
        return make_producer(
            self._bootstrap,
            self._settings,
            **{"message.timeout.ms": int(self.timeout_s * 1000), "error_cb": self._on_error},
        )

    @property
    def ready(self) -> bool:
        """Whether a message sent now can be stored (as far as the gateway knows)."""
        return self._ready.is_set() and not self.fatal.is_set() and not self.closed

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            log.error("fatal producer error; the gateway stops", extra={"error": err.str()})
            self.fatal.set()
        elif err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._ready.clear()

    def _poll(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                producer = self.producer
            producer.poll(0.05)
            if self._renew.is_set():
                self._renew.clear()
                self._replace()

    def _watch(self) -> None:
        """Ask the broker for the topic's metadata: every second while not ready (ready once
        it answers), every few seconds while ready (not ready once it does not)."""
        wait = 0.0
        while not self._stop.wait(wait):
            try:
                self.producer.list_topics(self.topic, timeout=PROBE_TIMEOUT_S)
            except KafkaException:
                self._ready.clear()
            else:
                if not self._renew.is_set():
                    self._ready.set()
            wait = PROBE_EVERY_S if self._ready.is_set() else 1.0

    def _replace(self) -> None:
        """Swap in a fresh producer; what the old one still holds is failed back (AE/503)."""
        with self._lock:
            old, self.producer = self.producer, self._new_producer()
            self.renewals += 1
        log.warning("producer replaced after a broker failure", extra={"renewals": self.renewals})
        old.purge()
        old.flush(1)  # serves the purged messages' reports: their senders hear AE / 503
        del old

    def publish(
        self, source_id: str, content_type: str, body: bytes, source_system: str | None
    ) -> Refusal | None:
        """Produce and wait for the acknowledgement: None once stored, else why not."""
        if self.fatal.is_set() or self.closed:
            return Refusal("the gateway is restarting; retry")
        raw = RawMessage(
            source_id=source_id,
            content_type=content_type,
            source_system=source_system,
            body=body,
            received_at=utcnow(),
        )
        value = self.registry.encode("intake.raw.v1", raw)
        if len(value) + len(source_id) > self.max_record_bytes:
            return Refusal(
                f"the message is {len(body)} bytes; the broker takes up to "
                f"{self.max_record_bytes} bytes with the envelope",
                permanent=True,
            )
        done = threading.Event()
        outcome: list[KafkaError | None] = []

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            outcome.append(err)
            if err is None:
                self._ready.set()
            elif err.code() in RENEW_ON:
                self._ready.clear()
                self._renew.set()
            done.set()

        try:
            with self._lock:
                self.producer.produce(
                    self.topic,
                    key=source_id.encode(),
                    value=value,
                    headers=[("content-type", content_type.encode())],
                    on_delivery=delivered,
                )
        except BufferError:
            return Refusal("the gateway's send queue is full; retry later")
        except KafkaException as exc:
            err = exc.args[0]
            reason = f"broker refused the message: {err.str()}"
            return Refusal(reason, permanent=err.code() in PERMANENT)
        if not done.wait(self.timeout_s + 5):
            return Refusal("no acknowledgement from the broker in time")
        err = outcome[0]
        if err is None:
            return None
        reason = f"broker did not store the message: {err.str()}"
        return Refusal(reason, permanent=err.code() in PERMANENT)

    def close(self) -> None:
        """Stop serving delivery reports; what is still queued gets five seconds."""
        self._stop.set()
        self._poller.join(2)
        self._watcher.join(PROBE_TIMEOUT_S + 1)
        self.producer.flush(5)
        self.closed = True
        del self.producer  # librdkafka stops reconnecting once the client is freed


# --- the gateway ---------------------------------------------------------------------------


class Gateway:
    """The HTTP and MLLP listeners around one Publisher."""

    def __init__(self, settings: GatewaySettings, bootstrap: str) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.publisher = Publisher(settings, bootstrap)
        self.generated_token = False
        token = configured_token(settings) if settings.gateway.auth else None
        if settings.gateway.auth and not token:
            # Kept in the state folder: the same token after a restart, so clients keep working.
            token = (read_endpoints(settings.state_dir) or {}).get("token")
            token = token or secrets.token_urlsafe(32)
            self.generated_token = True
        self.token = token
        self.budget = Budget(settings.gateway.buffer_budget_bytes)
        # A full state volume (the run's logs and the stages' stores): senders retry later.
        self.storage = StorageGuard(settings.state_dir, settings.min_free_bytes)
        self._storage_was: str | None = None
        self.facilities = frozenset(settings.gateway.mllp_allowed_facilities)
        self.http: _HttpServer | None = None
        self.mllp: _MllpServer | None = None
        self._threads: list[threading.Thread] = []

    # one message, either protocol

    def storage_problem(self) -> str | None:
        """Why the gateway's volume cannot take writes now (then: 503 / AE, not ready)."""
        why = self.storage.problem()
        if why != self._storage_was:
            self._storage_was = why
            metrics.STORAGE_BLOCKED.labels("intake-gateway").set(0 if why is None else 1)
            if why is None:
                log.info("state volume takes writes again: accepting messages")
            else:
                log.error("state volume cannot take writes: answering 503 / AE", extra={"why": why})
        return why

    def ready(self) -> bool:
        """/healthz: the broker takes deliveries and the volume takes writes."""
        return self.publisher.ready and self.storage_problem() is None

    def accept_hl7(self, body: bytes, protocol: str) -> tuple[HTTPStatus, bytes]:
        """(HTTP status, ACK bytes) for one ER7 message or batch: 202 AA, 400 AR (not an HL7
        message), 413 AR (larger than the broker takes), 503 AE (retry)."""
        started = time.perf_counter()
        try:
            source_id, header = hl7_source(body)
        except Rejected as exc:
            REQUESTS.labels(protocol, "rejected").inc()
            return exc.status, ack(hl7_header(body), "AR", exc.reason)
        refusal = self._full_disk() or self.publisher.publish(
            source_id, HL7_CONTENT_TYPE, body, header.sending_app
        )
        ANSWER_SECONDS.labels(protocol).observe(time.perf_counter() - started)
        if refusal and refusal.permanent:
            REQUESTS.labels(protocol, "too_large").inc()
            log.warning("message refused for good", extra={"reason": refusal.reason})
            return HTTPStatus.REQUEST_ENTITY_TOO_LARGE, ack(header, "AR", refusal.reason)
        if refusal:
            REQUESTS.labels(protocol, "failed").inc()
            log.warning(
                "message not stored; sender told to retry", extra={"reason": refusal.reason}
            )
            return HTTPStatus.SERVICE_UNAVAILABLE, ack(header, "AE", refusal.reason)
        REQUESTS.labels(protocol, "accepted").inc()
        return HTTPStatus.ACCEPTED, ack(header, "AA")

    def accept_fhir(self, body: bytes) -> tuple[HTTPStatus, dict[str, Any]]:
        """(status, OperationOutcome) for one FHIR Bundle."""
        started = time.perf_counter()
        try:
            source_id, system = fhir_source(body)
        except Rejected as exc:
            REQUESTS.labels("http_fhir", "rejected").inc()
            return exc.status, outcome("error", "invalid", exc.reason)
        refusal = self._full_disk() or self.publisher.publish(
            source_id, FHIR_CONTENT_TYPE, body, system
        )
        ANSWER_SECONDS.labels("http_fhir").observe(time.perf_counter() - started)
        if refusal and refusal.permanent:
            REQUESTS.labels("http_fhir", "too_large").inc()
            log.warning("bundle refused for good", extra={"reason": refusal.reason})
            return HTTPStatus.REQUEST_ENTITY_TOO_LARGE, outcome("error", "too-long", refusal.reason)
        if refusal:
            REQUESTS.labels("http_fhir", "failed").inc()
            log.warning("bundle not stored; sender told to retry", extra={"reason": refusal.reason})
            return HTTPStatus.SERVICE_UNAVAILABLE, outcome("error", "transient", refusal.reason)
        REQUESTS.labels("http_fhir", "accepted").inc()
        return HTTPStatus.ACCEPTED, outcome(
            "information", "informational", f"accepted as {source_id}; intake reads it next"
        )

    def _full_disk(self) -> Refusal | None:
        # The reason (a path on this host) is logged once, not told to the sender.
        why = self.storage_problem()
        return Refusal("the gateway's disk is full or failing; retry later") if why else None

    # lifecycle

    def start(self) -> dict[str, str]:
        """Bind both listeners, serve them on threads; returns their addresses."""
        threading.Thread(target=self._ensure_topics, name="ensure-topics", daemon=True).start()
        large_buffers_from_the_system()  # a dropped frame's memory goes back (edge.py)
        s = self.settings
        self.http = _HttpServer((s.gateway.http_host, s.gateway.http_port), _http_handler(self))
        self.http.slots = Slots(
            s.gateway.http_max_connections, s.gateway.http_max_connections_per_address
        )
        self.http.refusal = BUSY_HTTP
        self.http.min_rate = s.gateway.http_evict_below_bytes_s
        self.http.on_refused = lambda reason: REFUSED.labels("http", reason).inc()
        self.mllp = _MllpServer((s.gateway.mllp_host, s.gateway.mllp_port), _MllpHandler)
        self.mllp.gateway = self
        self.mllp.slots = Slots(
            s.gateway.mllp_max_connections, s.gateway.mllp_max_connections_per_address
        )
        self.mllp.allow = networks(s.gateway.mllp_allowed_networks)
        self.mllp.on_refused = lambda reason: REFUSED.labels("mllp", reason).inc()
        if s.gateway.mllp_tls_cert is not None and s.gateway.mllp_tls_key is not None:
            self.mllp.tls = server_tls(
                s.gateway.mllp_tls_cert, s.gateway.mllp_tls_key, s.gateway.mllp_tls_client_ca
            )
        for name, server in (("http", self.http), ("mllp", self.mllp)):
            thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self.endpoints()

    def _ensure_topics(self) -> None:
        try:
            ensure_topics(self.bootstrap, self.settings, registry(), timeout=15)
        except Exception as exc:  # noqa: BLE001 - senders hear AE until the broker is back
            log.warning("could not check topics", extra={"error": str(exc)[:200]})

    def endpoints(self) -> dict[str, str]:
        """Where the listeners are (host:port as bound)."""
        assert self.http is not None and self.mllp is not None
        http_host, http_port = self.http.server_address[:2]
        mllp_host, mllp_port = self.mllp.server_address[:2]
        return {"http": f"http://{http_host!s}:{http_port}", "mllp": f"{mllp_host!s}:{mllp_port}"}

    def write_endpoints(self, state_dir: Path) -> Path:
        """gateway.json in the state folder (0600 in a 0700 folder, wider modes narrowed):
        addresses, and the token when generated."""
        path = private_file(Path(state_dir) / ENDPOINTS_FILE)
        data: dict[str, Any] = self.endpoints()
        data["auth"] = "bearer" if self.token else "off"
        if self.generated_token:
            data["token"] = self.token
        with path.open("w") as out:
            json.dump(data, out)
        return path

    def stop(self) -> None:
        for server in (self.http, self.mllp):
            if server is not None:
                server.shutdown()
                server.server_close()
        self.publisher.close()


def outcome(severity: str, code: str, text: str) -> dict[str, Any]:
    """A FHIR OperationOutcome with one issue."""
    issue = {"severity": severity, "code": code, "diagnostics": text}
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def _media(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def _http_handler(gateway: Gateway) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to one gateway."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "claimflow-gateway"
        sys_version = ""
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            """Reads bounded by the idle timeout and the per-request deadline."""
            super().setup()
            s = gateway.settings
            self.reader = DeadlineReader(
                self.connection, s.gateway.idle_timeout_s, s.gateway.message_deadline_s
            )
            self.rfile = io.BufferedReader(self.reader)
            self.server.watch(self.request, self.reader)  # type: ignore[attr-defined]

        def handle_one_request(self) -> None:
            self.reader.begin()  # the deadline runs from the request's first byte
            self.held = 0  # body bytes reserved in the gateway's budget until answered
            try:
                super().handle_one_request()
            finally:
                gateway.budget.give(self.held)

        def parse_request(self) -> bool:
            """A head cut short (the peer closed, or the connection was evicted for a new
            one) is not a request: nothing to answer."""
            parsed = super().parse_request()
            if self.reader.evicted or self.reader.eof:
                self.close_connection = True
                return False
            return parsed

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            """Request lines are not logged: the metrics count outcomes."""

        def _send(self, status: HTTPStatus, body: bytes, ctype: str, **headers: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(body)

        def _fhir(self, status: HTTPStatus, severity: str, code: str, text: str) -> None:
            body = json.dumps(outcome(severity, code, text)).encode()
            self._send(status, body, FHIR_CONTENT_TYPE)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.reader.answering = True
            if self.path.split("?", 1)[0] == "/healthz":
                ok = gateway.ready()
                status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
                why = b"cannot store messages (broker or disk)\n"
                self._send(status, b"ok\n" if ok else why, "text/plain")
                return
            self._fhir(HTTPStatus.NOT_FOUND, "error", "not-found", "POST /fhir or /hl7v2")

        def do_POST(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0].rstrip("/")
            protocol = {"/fhir": "http_fhir", "/hl7v2": "http_hl7v2"}.get(path)
            if protocol is None:
                self._fhir(HTTPStatus.NOT_FOUND, "error", "not-found", "POST /fhir or /hl7v2")
                return
            if not self._authorized():
                REQUESTS.labels(protocol, "unauthorized").inc()
                self.close_connection = True
                self._fhir(HTTPStatus.UNAUTHORIZED, "error", "login",
                           "send Authorization: Bearer <token>")  # fmt: skip
                return
            body = self._body(protocol)
            if body is None:
                return
            media = _media(self.headers.get("Content-Type"))
            if protocol == "http_fhir":
                if media not in (FHIR_CONTENT_TYPE, "application/json", "application/json+fhir"):
                    REQUESTS.labels(protocol, "rejected").inc()
                    self._fhir(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "error", "not-supported",
                               "send a Bundle as application/fhir+json")  # fmt: skip
                    return
                status, result = gateway.accept_fhir(body)
                extra = {"Retry_After": "5"} if status == HTTPStatus.SERVICE_UNAVAILABLE else {}
                self._send(status, json.dumps(result).encode(), FHIR_CONTENT_TYPE, **extra)
                return
            if media not in HL7_TYPES | {"text/plain", ""}:
                REQUESTS.labels(protocol, "rejected").inc()
                self._send(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, ack(hl7_header(body), "AR",
                           "send ER7 as x-application/hl7-v2+er7"), HL7_CONTENT_TYPE)  # fmt: skip
                return
            status, reply = gateway.accept_hl7(body, protocol)
            self._send(status, reply, HL7_CONTENT_TYPE)

        def _authorized(self) -> bool:
            if gateway.token is None:
                return True
            given = self.headers.get("Authorization", "")
            scheme, _, token = given.partition(" ")
            return scheme.lower() == "bearer" and hmac.compare_digest(
                token.strip().encode(), gateway.token.encode()
            )

        def _body(self, protocol: str) -> bytes | None:
            """The request body, or None after answering 400/411/413/503."""
            limit = gateway.settings.gateway.max_body_bytes
            lengths = self.headers.get_all("Content-Length") or []
            if self.headers.get("Transfer-Encoding") or not lengths:
                self._refuse(
                    protocol,
                    "rejected",
                    HTTPStatus.LENGTH_REQUIRED,
                    "invalid",
                    "send the body with a Content-Length",
                )
                return None
            if len(lengths) > 1 or not re.fullmatch(r"[0-9]{1,19}", lengths[0].strip()):
                self._refuse(
                    protocol,
                    "rejected",
                    HTTPStatus.BAD_REQUEST,
                    "invalid",
                    "send one Content-Length with a decimal byte count",
                )
                return None
            length = int(lengths[0])
            if length > limit:
                self._refuse(
                    protocol,
                    "too_large",
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    "too-long",
                    f"the body exceeds {limit} bytes",
                )
                return None
            if not gateway.budget.take(length):
                REFUSED.labels("http", "busy").inc()
                self._refuse(
                    protocol,
                    "failed",
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    "transient",
                    "the gateway is busy; retry",
                )
                return None
            self.held = length
            body = self.rfile.read(length)
            if len(body) < length:  # the peer closed early or the deadline passed
                self.close_connection = True
                return None
            self.reader.answering = True  # the request is in: not evicted while answered
            return body

        def _refuse(
            self, protocol: str, outcome_: str, status: HTTPStatus, code: str, text: str
        ) -> None:
            """Answer without reading the body, and close the connection."""
            REQUESTS.labels(protocol, outcome_).inc()
            self.close_connection = True
            extra = {"Retry_After": "1"} if status == HTTPStatus.SERVICE_UNAVAILABLE else {}
            body = json.dumps(outcome("error", code, text)).encode()
            self._send(status, body, FHIR_CONTENT_TYPE, **extra)

    return Handler


class _HttpServer(LimitedServer, HTTPServer):
    """stdlib's HTTP server with the edge's connection limits."""


class _MllpServer(LimitedServer):
    gateway: Gateway
    tls: ssl.SSLContext | None = None


class _MllpHandler(socketserver.BaseRequestHandler):
    """One MLLP connection (TLS first when configured): frames in, one ACK per frame,
    until the peer closes or a bound (idle, deadline, memory) ends the connection."""

    server: _MllpServer

    def handle(self) -> None:
        gateway = self.server.gateway
        s = gateway.settings
        sock = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one ACK per message
        if self.server.tls is not None:
            sock.settimeout(min(s.gateway.message_deadline_s, 10.0))
            try:
                sock = self.server.tls.wrap_socket(sock, server_side=True)
            except (OSError, ssl.SSLError) as exc:  # no or a bad client certificate, not TLS
                REFUSED.labels("mllp", "tls").inc()
                log.warning("MLLP TLS handshake refused", extra={"error": str(exc)[:200]})
                return
        limit = s.gateway.max_body_bytes
        reader = MllpReader(
            DeadlineReader(sock, s.gateway.idle_timeout_s, s.gateway.message_deadline_s),
            limit,
            gateway.budget,
        )
        try:
            while True:
                frame = reader.next()
                if isinstance(frame, Cut):
                    self._cut(sock, frame)
                    return
                if isinstance(frame, TooLarge):
                    REQUESTS.labels("mllp", "too_large").inc()
                    reply = ack(hl7_header(frame.head), "AR", f"message exceeds {limit} bytes")
                else:
                    reply = self._answer(gateway, frame)
                sock.sendall(SB + reply + EB + CR)
        except OSError:
            return
        finally:
            reader.close()
            if sock is not self.request:
                sock.close()

    def _answer(self, gateway: Gateway, frame: bytes) -> bytes:
        if gateway.facilities:
            header = hl7_header(frame)
            facility = header and (header.sending_facility or header.sending_app)
            if facility not in gateway.facilities:
                REQUESTS.labels("mllp", "unauthorized").inc()
                return ack(header, "AR", "MSH-4 sending facility is not allowed on this listener")
        return gateway.accept_hl7(frame, "mllp")[1]

    def _cut(self, sock: socket.socket, cut: Cut) -> None:
        """Say why the connection ends, when a message was cut short."""
        if cut.reason == "eof" and not cut.head:
            return
        REFUSED.labels("mllp", cut.reason).inc()
        log.warning("MLLP connection closed", extra={"reason": cut.reason})
        if cut.reason == "busy":  # retryable: the gateway is short of memory right now
            sock.sendall(SB + ack(hl7_header(cut.head), "AE", "the gateway is busy; retry")
                         + EB + CR)  # fmt: skip


def configured_token(settings: GatewaySettings) -> str | None:
    """The token from ``gateway.token``, else from ``gateway.token_file`` (a mounted secret);
    a configured file that cannot be read or is empty stops the gateway with the reason."""
    if settings.gateway.token is not None:
        return settings.gateway.token.get_secret_value().strip() or None
    if settings.gateway.token_file is None:
        return None
    try:
        token = settings.gateway.token_file.read_text().strip()
    except OSError as exc:
        raise SystemExit(
            f"CLAIMFLOW_GATEWAY__TOKEN_FILE {settings.gateway.token_file}: {exc.strerror}"
        ) from None
    if not token:
        raise SystemExit(f"CLAIMFLOW_GATEWAY__TOKEN_FILE {settings.gateway.token_file} is empty")
    return token


def read_endpoints(state_dir: Path, timeout: float = 0.0) -> dict[str, str] | None:
    """What a running gateway wrote to its state folder (waits up to ``timeout``)."""
    path = Path(state_dir) / ENDPOINTS_FILE
    deadline = time.monotonic() + timeout
    while True:
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)


def main(settings: Settings | None = None) -> None:
    """Run the gateway until SIGTERM/SIGINT; exit 75 when the producer fails for good."""
    # `claimflow service` reads the environment into the base Settings; this class reads
    # the same environment, plus the gateway's own variables.
    s = settings if isinstance(settings, GatewaySettings) else GatewaySettings()
    bootstrap = s.require_bootstrap()
    port = metrics.serve(s.metrics_host, s.metrics_port)
    gateway = Gateway(s, bootstrap)
    freeze_start_up()  # what start-up loaded lives as long as the process
    addresses = gateway.start()
    written = gateway.write_endpoints(s.state_dir)
    log.info(
        "listening",
        extra={**addresses, "metrics_port": port, "auth": "bearer" if gateway.token else "off",
               "endpoints_file": str(written)},
    )  # fmt: skip
    if gateway.generated_token:
        log.warning(
            "no CLAIMFLOW_GATEWAY__TOKEN or __TOKEN_FILE set: the token was generated (and is "
            "kept across restarts); HTTP clients find it in "
            "the endpoints file",
            extra={"endpoints_file": str(written)},
        )
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    metrics.UP.labels("intake-gateway").set(1)
    while not stopping.is_set() and not gateway.publisher.fatal.is_set():
        stopping.wait(0.5)
    metrics.UP.labels("intake-gateway").set(0)
    gateway.stop()
    if gateway.publisher.fatal.is_set():
        raise SystemExit(75)
