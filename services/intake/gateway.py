"""intake gateway: FHIR and HL7 v2 over HTTP, HL7 v2 over MLLP, into intake.raw.v1.

A sender hears "accepted" (HTTP 202, MLLP AA) only once the broker has acknowledged the raw
message (idempotent producer, acks=all): from then on it is durably in Kafka and the intake
stage will read it, whatever restarts. A broker failure answers 503 / AE with the reason,
so the sender keeps the message and retries. The gateway checks only that the body is what
it claims to be (a FHIR Bundle, an HL7 v2 message with an MSH); full parsing is the intake
stage's, whose dead letters carry the field and the reason.

HTTP (stdlib ``ThreadingHTTPServer``: one thread per request, each blocked on its own
delivery report; no extra dependency for a handful of endpoints):

- ``POST /fhir``: a FHIR R4 Bundle (``application/fhir+json`` or ``application/json``);
  202 or 4xx/503 with a FHIR OperationOutcome.
- ``POST /hl7v2``: one ER7 message or batch (``x-application/hl7-v2+er7``,
  ``application/hl7-v2``, ``text/plain``); the answer carries the HL7 ACK (AA 202, AR 400,
  AE 503).
- ``GET /healthz``: readiness, 200 while the broker answers and deliveries succeed.

Every POST needs ``Authorization: Bearer <token>`` unless authentication is turned off;
bodies above the size limit get 413 unread, and so does a message whose record is larger
than the broker takes (``max_message_bytes``): that refusal is permanent, never 503 / AE.

MLLP (``socketserver``, one thread per connection, any number of messages per connection,
framing 0x0B … 0x1C 0x0D): original-mode acknowledgement, AA once stored, AR for bytes that
are not an HL7 message or too large, AE with the reason when the broker fails.

Source ids (the record key, and what the intake stage drops repeats by): HL7
``hl7v2:{MSH-4 or MSH-3}:{MSH-10}``; FHIR ``fhir:{Bundle.identifier system|value}``, else
``fhir:{meta.source}/{Bundle.id}``, else ``fhir:Bundle/{id}``, else ``fhir:sha256:{hash}``.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import secrets
import signal
import socket
import socketserver
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from prometheus_client import Counter, Histogram

from pipeline import metrics
from pipeline.kafka import ensure_topics, make_producer
from pipeline.models import RawMessage, utcnow
from pipeline.serde import registry
from pipeline.settings import Settings
from services.intake.app import body_digest
from services.intake.domain import HL7_TYPES
from services.intake.hl7v2 import _Enc, _unescape
from services.intake.settings import GatewaySettings

log = logging.getLogger(__name__)

SB, EB, CR = b"\x0b", b"\x1c", b"\x0d"
FHIR_CONTENT_TYPE = "application/fhir+json"
HL7_CONTENT_TYPE = "x-application/hl7-v2+er7"
ENDPOINTS_FILE = "gateway.json"

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
        self.timeout_s = settings.gateway_delivery_timeout_s
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
        token = settings.gateway_token.get_secret_value() if settings.gateway_token else None
        if settings.gateway_auth and not token:
            token = secrets.token_urlsafe(32)
            self.generated_token = True
        self.token = token if settings.gateway_auth else None
        self.http: ThreadingHTTPServer | None = None
        self.mllp: socketserver.ThreadingTCPServer | None = None
        self._threads: list[threading.Thread] = []

    # one message, either protocol

    def accept_hl7(self, body: bytes, protocol: str) -> tuple[HTTPStatus, bytes]:
        """(HTTP status, ACK bytes) for one ER7 message or batch: 202 AA, 400 AR (not an HL7
        message), 413 AR (larger than the broker takes), 503 AE (retry)."""
        started = time.perf_counter()
        try:
            source_id, header = hl7_source(body)
        except Rejected as exc:
            REQUESTS.labels(protocol, "rejected").inc()
            return exc.status, ack(hl7_header(body), "AR", exc.reason)
        refusal = self.publisher.publish(source_id, HL7_CONTENT_TYPE, body, header.sending_app)
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
        refusal = self.publisher.publish(source_id, FHIR_CONTENT_TYPE, body, system)
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

    # lifecycle

    def start(self) -> dict[str, str]:
        """Bind both listeners, serve them on threads; returns their addresses."""
        threading.Thread(target=self._ensure_topics, name="ensure-topics", daemon=True).start()
        s = self.settings
        self.http = ThreadingHTTPServer(
            (s.gateway_http_host, s.gateway_http_port), _http_handler(self)
        )
        self.http.daemon_threads = True
        self.mllp = _MllpServer((s.gateway_mllp_host, s.gateway_mllp_port), _MllpHandler)
        self.mllp.gateway = self
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
        """gateway.json in the state folder: addresses, and the token when generated."""
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / ENDPOINTS_FILE
        data: dict[str, Any] = self.endpoints()
        data["auth"] = "bearer" if self.token else "off"
        if self.generated_token:
            data["token"] = self.token
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
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
        timeout = 60  # a client that stalls mid-body loses its thread after this

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
            if self.path.split("?", 1)[0] == "/healthz":
                ok = gateway.publisher.ready
                status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
                self._send(status, b"ok\n" if ok else b"cannot deliver to the broker\n",
                           "text/plain")  # fmt: skip
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
            """The request body, or None after answering 411/413."""
            limit = gateway.settings.gateway_max_body_bytes
            length = self.headers.get("Content-Length")
            if self.headers.get("Transfer-Encoding") or length is None or not length.isdigit():
                REQUESTS.labels(protocol, "rejected").inc()
                self.close_connection = True
                self._fhir(HTTPStatus.LENGTH_REQUIRED, "error", "invalid",
                           "send the body with a Content-Length")  # fmt: skip
                return None
            if int(length) > limit:
                REQUESTS.labels(protocol, "too_large").inc()
                self.close_connection = True
                self._fhir(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "error", "too-long",
                           f"the body exceeds {limit} bytes")  # fmt: skip
                return None
            return self.rfile.read(int(length))

    return Handler


class _MllpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    gateway: Gateway


@dataclass(frozen=True)
class _TooLarge:
    """A frame over the size limit, read past; its head, for the ACK's MSH."""

    head: bytes


class _MllpHandler(socketserver.BaseRequestHandler):
    """One MLLP connection: frames in, one ACK per frame, until the peer closes."""

    server: _MllpServer

    def handle(self) -> None:
        gateway = self.server.gateway
        limit = gateway.settings.gateway_max_body_bytes
        self.request.settimeout(gateway.settings.gateway_idle_timeout_s)
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one ACK per message
        buf = bytearray()
        while True:
            frame = self._frame(buf, limit)
            if frame is None:
                return
            if isinstance(frame, _TooLarge):
                REQUESTS.labels("mllp", "too_large").inc()
                reply = ack(hl7_header(frame.head), "AR", f"message exceeds {limit} bytes")
            else:
                _, reply = gateway.accept_hl7(frame, "mllp")
            try:
                self.request.sendall(SB + reply + EB + CR)
            except OSError:
                return

    def _recv(self) -> bytes:
        """The next bytes from the peer; empty at EOF, on error or after the idle timeout."""
        try:
            return bytes(self.request.recv(65536))
        except OSError:  # TimeoutError included
            return b""

    def _frame(self, buf: bytearray, limit: int) -> bytes | _TooLarge | None:
        """The next framed message (bytes between 0x0B and 0x1C 0x0D); None at EOF."""
        while True:
            start = buf.find(SB)
            if start < 0:
                buf.clear()  # bytes outside a frame
            elif start > 0:
                del buf[:start]
            if buf:
                end = buf.find(EB + CR, 1)
                if end >= 0:
                    frame = bytes(buf[1:end])
                    del buf[: end + 2]
                    return frame if len(frame) <= limit else _TooLarge(frame[:4096])
                if len(buf) > limit + 2:
                    return self._skip(buf)
            chunk = self._recv()
            if not chunk:
                return None
            buf += chunk

    def _skip(self, buf: bytearray) -> _TooLarge | None:
        """Read past the rest of an oversized frame without keeping it."""
        head, tail = bytes(buf[1:4097]), bytes(buf[-1:])
        buf.clear()
        while True:
            chunk = self._recv()
            if not chunk:
                return None
            data = tail + chunk
            end = data.find(EB + CR)
            if end >= 0:
                buf += data[end + 2 :]
                return _TooLarge(head)
            tail = data[-1:]


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
    addresses = gateway.start()
    written = gateway.write_endpoints(s.state_dir)
    log.info(
        "listening",
        extra={**addresses, "metrics_port": port, "auth": "bearer" if gateway.token else "off",
               "endpoints_file": str(written)},
    )  # fmt: skip
    if gateway.generated_token:
        log.warning(
            "no CLAIMFLOW_GATEWAY_TOKEN set: a token was generated; HTTP clients find it in "
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
