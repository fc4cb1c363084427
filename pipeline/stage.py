"""The batched stage runner every service uses, over confluent-kafka.

Consume a batch, decode, call the domain, encode, produce; once every produced record is
acknowledged, let the stage persist its own state, then commit the consumed offsets
(without waiting for the broker's answer: a commit that fails or is lost only means the
batch is read again, and the last offsets are committed synchronously at shutdown).
Delivery is at-least-once; deterministic event ids make results effectively-once.

Poison input (undecodable, contract-invalid, domain-invalid) goes to ``dlq.<service>.v1``
with the original bytes and the reason, and the batch goes on. A broker failure
(delivery or commit error) raises ``TransientError`` and the process exits non-zero so
its supervisor restarts it; nothing is committed past what was acknowledged.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException, Message, TopicPartition
from pydantic import ValidationError

from pipeline import metrics
from pipeline.errors import InputError, TransientError
from pipeline.kafka import ensure_topics, make_consumer, make_producer
from pipeline.models import DeadLetter, Model, event_id, utcnow
from pipeline.serde import Registry, registry
from pipeline.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Incoming:
    """One consumed record, decoded. ``topic`` is the logical name (no prefix)."""

    topic: str
    key: str | None
    value: Any
    raw: bytes
    headers: dict[str, bytes]
    partition: int
    offset: int
    timestamp_ms: int


@dataclass(frozen=True)
class Out:
    """A record to produce. ``topic`` is the logical name (no prefix)."""

    topic: str
    key: str
    value: Model
    headers: dict[str, bytes] = field(default_factory=dict)


class Stage:
    """A service's wiring: which topics it reads and what it does with each record."""

    name: str = "stage"
    inputs: Sequence[str] = ()
    #: Where poison input goes; None only for simulators outside the pipeline proper,
    #: whose rejects are logged (and then show as unaccounted-for in the demo summary).
    dead_letters: bool = True

    def decode(self, reg: Registry, topic: str, raw: bytes, headers: dict[str, bytes]) -> Any:
        return reg.decode(topic, raw)

    def handle(self, msg: Incoming) -> Iterable[Out]:
        raise NotImplementedError

    def handle_batch(self, msgs: list[Incoming]) -> Iterable[Out]:
        """Override to work on a whole batch (e.g. one 835 for many claims)."""
        return []

    batch_mode: bool = False

    def on_batch_done(self) -> None:
        """Called after the batch's output is acknowledged, before offsets are committed."""

    #: Least time between two ``on_idle`` calls, in seconds.
    idle_interval_s: float = 1.0

    def on_idle(self) -> Iterable[Out]:
        """Called when a poll returns nothing, at most every ``idle_interval_s``: time-based
        work (timeouts, sweeps). What it returns is produced; once acknowledged,
        ``on_batch_done`` runs. A topic that never goes quiet never triggers it."""
        return []

    def close(self) -> None:
        """Called once when the runner stops."""

    #: The stage's outcome labels (claimflow_outcomes_total), created at zero at start-up.
    outcomes: Sequence[str] = ()

    def prime_metrics(self) -> None:
        """Create the stage's own domain series at zero when the runner starts."""

    def observe(self, topic: str, value: Any, source: Any) -> None:
        """Domain metrics for one produced record; ``source`` is the record it came from
        (``value`` itself when it carries its encounter, else its input). Called by the
        runner once the record is handed to the producer; an error here is logged, never
        raised: a metric must not stop the pipeline."""


def field_of(exc: Exception) -> str | None:
    if isinstance(exc, InputError):
        return exc.field
    if isinstance(exc, ValidationError) and exc.errors():
        return ".".join(str(p) for p in exc.errors()[0]["loc"]) or None
    return None


def reason_of(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return f"{loc}: {first['msg']}{more}"
    return str(exc) or type(exc).__name__


def dead_letter(service: str, msg: Incoming, exc: Exception) -> Out:
    """The dead-letter record for ``msg``: original bytes, where it came from, and why."""
    letter = DeadLetter(
        event_id=event_id(service, "dlq", msg.topic, str(msg.partition), str(msg.offset)),
        stage=service,
        source_topic=msg.topic,
        source_partition=msg.partition,
        source_offset=msg.offset,
        key=msg.key,
        value=msg.raw,
        headers=msg.headers,
        error_class=type(exc).__name__,
        error_message=reason_of(exc)[:4000],
        field=field_of(exc),
        failed_at=utcnow(),
    )
    return Out(f"dlq.{service}.v1", msg.key or "", letter)


class Runner:
    """Runs one ``Stage`` against a cluster until stopped."""

    def __init__(self, stage: Stage, settings: Settings, bootstrap: str) -> None:
        self.stage = stage
        self.settings = settings
        self.bootstrap = bootstrap
        self.registry = registry()
        self.stopping = threading.Event()
        self._prefix_len = len(settings.topic_prefix)
        self._delivery_errors: list[str] = []
        self._last_idle = time.monotonic()
        #: Encounter id -> the decoded input it came from, for outputs' end-to-end age.
        self._origin: dict[str, Any] = {}

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())

    def _on_delivery(self, err: Any, _msg: Message) -> None:
        if err is not None:
            self._delivery_errors.append(str(err))

    def _incoming(self, m: Message) -> Incoming:
        key = m.key()
        headers: dict[str, bytes] = {}
        for name, value in m.headers() or []:  # type: ignore[misc]
            headers[name] = value.encode() if isinstance(value, str) else (value or b"")
        return Incoming(
            topic=(m.topic() or "")[self._prefix_len :],
            key=key.decode("utf-8", "replace") if isinstance(key, bytes) else key,
            value=None,
            raw=m.value() or b"",
            headers=headers,
            partition=m.partition() or 0,
            offset=m.offset() or 0,
            timestamp_ms=m.timestamp()[1],
        )

    def _decode(self, msg: Incoming) -> Incoming:
        value = self.stage.decode(self.registry, msg.topic, msg.raw, msg.headers)
        return Incoming(**{**msg.__dict__, "value": value})

    def process(self, batch: list[Message]) -> tuple[list[Out], dict[tuple[str, int], int]]:
        """Decode and handle a batch; returns what to produce and the offsets to commit."""
        service = self.stage.name
        outs: list[Out] = []
        offsets: dict[tuple[str, int], int] = {}
        decoded: list[Incoming] = []
        self._origin = {}
        for m in batch:
            error = m.error()
            if error is not None:
                if error.fatal():
                    raise TransientError(f"consumer: {error}")
                log.warning("consumer error", extra={"error": str(error)})
                continue
            offsets[(m.topic() or "", m.partition() or 0)] = (m.offset() or 0) + 1
            msg = self._incoming(m)
            metrics.RECORDS_IN.labels(service, msg.topic).inc()
            try:
                msg = self._decode(msg)
                if msg.key is not None and msg.value is not None:
                    self._origin[msg.key] = msg.value
                if self.stage.batch_mode:
                    decoded.append(msg)
                else:
                    outs.extend(self.stage.handle(msg))
            except Exception as exc:  # noqa: BLE001 - every failure of one input is routed
                outs.extend(self._route(msg, exc))
        if decoded:
            outs.extend(self.stage.handle_batch(decoded))
        return outs, offsets

    def _reject(self, msg: Incoming, exc: Exception) -> Out:
        if not isinstance(exc, InputError | ValidationError):
            log.exception(
                "unexpected error; input sent to the dead-letter topic",
                extra={"topic": msg.topic, "offset": msg.offset},
            )
        else:
            log.info(
                "input rejected",
                extra={"topic": msg.topic, "offset": msg.offset, "reason": reason_of(exc)[:300]},
            )
        metrics.DEAD_LETTERS.labels(self.stage.name, type(exc).__name__).inc()
        return dead_letter(self.stage.name, msg, exc)

    def _route(self, msg: Incoming, exc: Exception) -> list[Out]:
        out = self._reject(msg, exc)
        return [out] if self.stage.dead_letters else []

    def run(self) -> None:
        s, stage = self.settings, self.stage
        ensure_topics(self.bootstrap, s, self.registry)
        consumer = make_consumer(
            self.bootstrap, f"{s.group_prefix}.{stage.name}", s, on_commit=self._on_commit
        )
        committed: dict[tuple[str, int], int] = {}
        producer = make_producer(self.bootstrap, s)
        consumer.subscribe([s.topic(t) for t in stage.inputs])
        metrics.prime(stage.name, stage.inputs, stage.outcomes)
        stage.prime_metrics()
        metrics.UP.labels(stage.name).set(1)
        log.info("consuming", extra={"inputs": list(stage.inputs)})
        try:
            while not self.stopping.is_set():
                batch = consumer.consume(s.batch_size, s.poll_timeout_s)
                if not batch:
                    producer.poll(0)
                    self._idle(producer)
                    continue
                started = time.perf_counter()
                outs, offsets = self.process(batch)
                self._produce(producer, outs)
                stage.on_batch_done()
                self._commit(consumer, offsets)
                committed.update(offsets)
                now = time.time()
                took = time.perf_counter() - started
                age, processing = (
                    metrics.LATENCY.labels(stage.name),
                    metrics.PROCESSING.labels(stage.name),
                )
                for m in batch:
                    age.observe(max(0.0, now - m.timestamp()[1] / 1e3))
                    processing.observe(took)
                metrics.BATCH_SECONDS.labels(stage.name).observe(took)
                self._lag(consumer, offsets)
            # The last asynchronous commits may still be in flight: commit what this
            # consumer still owns, and wait for the answer.
            owned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
            self._commit(consumer, {k: v for k, v in committed.items() if k in owned}, wait=True)
        finally:
            metrics.UP.labels(stage.name).set(0)
            stage.close()
            consumer.close()
            producer.flush(10)

    def _lag(self, consumer: Any, offsets: dict[tuple[str, int], int]) -> None:
        """Approximate lag per consumed partition, from the watermark the last fetch saw."""
        for (topic, partition), position in offsets.items():
            try:
                _low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), cached=True
                )
            except KafkaException:
                continue
            if high is None or high < 0:
                continue
            metrics.LAG.labels(self.stage.name, topic[self._prefix_len :], str(partition)).set(
                max(0, high - position)
            )

    def _idle(self, producer: Any) -> None:
        now = time.monotonic()
        if now - self._last_idle < self.stage.idle_interval_s:
            return
        self._last_idle = now
        outs = list(self.stage.on_idle())
        if outs:
            self._produce(producer, outs)
            self.stage.on_batch_done()

    def _produce(self, producer: Any, outs: list[Out]) -> None:
        now = time.time()
        for out in outs:
            value = self.registry.encode(out.topic, out.value)
            topic = self.settings.topic(out.topic)
            while True:
                try:
                    producer.produce(
                        topic,
                        key=out.key.encode(),
                        value=value,
                        headers=list(out.headers.items()) or None,
                        on_delivery=self._on_delivery,
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
            metrics.RECORDS_OUT.labels(self.stage.name, out.topic).inc()
            try:
                source = metrics.observe_age(
                    self.stage.name, out.topic, out.value, now, self._origin
                )
                self.stage.observe(out.topic, out.value, source)
            except Exception:  # noqa: BLE001 - a metric must never stop the pipeline
                log.exception("metrics: could not observe an output", extra={"topic": out.topic})
        remaining = producer.flush(60)
        if remaining or self._delivery_errors:
            raise TransientError(
                f"{remaining} records unacknowledged, delivery errors: {self._delivery_errors[:3]}"
            )

    def _commit(
        self, consumer: Any, offsets: dict[tuple[str, int], int], *, wait: bool = False
    ) -> None:
        if not offsets:
            return
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            consumer.commit(offsets=tps, asynchronous=not wait)
        except KafkaException as exc:
            self._on_commit(exc.args[0], tps)

    def _on_commit(self, err: Any, _partitions: Any) -> None:
        if err is not None:
            # A rebalance took the partitions away: the next owner re-reads from the last
            # commit, and deterministic event ids make the repeat harmless.
            log.warning("offset commit failed", extra={"error": str(err)})


def run_stage(stage: Stage, settings: Settings) -> None:
    """Entry point of a service process: serve /metrics, then run until SIGTERM/SIGINT."""
    bootstrap = settings.require_bootstrap()
    port = metrics.serve(settings.metrics_host, settings.metrics_port)
    log.info("metrics", extra={"port": port, "path": "/metrics"})
    runner = Runner(stage, settings, bootstrap)
    runner.install_signal_handlers()
    try:
        runner.run()
    except TransientError:
        log.exception("stopping after a broker failure; the supervisor restarts the service")
        raise SystemExit(75) from None
