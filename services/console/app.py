"""Wiring of the console: settings, the feed that fills the view from the topics, the
publisher its buttons use, and the WSGI server (waitress). The pages are ``web.py``; the
view, KPIs and actions are plain modules."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from pipeline import metrics
from pipeline.errors import TransientError
from pipeline.kafka import client_config, ensure_topics, make_producer
from pipeline.models import Model
from pipeline.serde import Registry, registry
from pipeline.settings import Settings
from services.console.access import AccessLog, Users, first_users
from services.console.view import FOLLOWED, View
from services.console.web import create_app

log = logging.getLogger("claimflow.console")
APPLIED = Counter("claimflow_console_records_total", "Records applied to the console's view")
NOT_APPLIED = Counter(
    "claimflow_console_record_errors_total", "Records the view could not apply", ["topic"]
)
ENDPOINTS_FILE = "console.json"
INITIAL_PASSWORDS = "console-initial-passwords.txt"


class ConsoleOptions(BaseModel):
    """``CLAIMFLOW_CONSOLE__…``: where the console listens and how sessions behave."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(default="127.0.0.1", description="address to listen on")
    port: int = Field(default=0, ge=0, le=65535, description="0: pick a free port")
    users_file: Path | None = Field(
        default=None, description="users and password hashes; default <state>/console-users.json"
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="signs session cookies; unset: a random key per start (sessions end "
        "when the console restarts)",
    )
    idle_minutes: float = Field(default=15, gt=0, description="a session ends after this idle")
    max_hours: float = Field(
        default=8, gt=0, description="and at the latest this long after sign-in"
    )
    secure_cookies: bool = Field(
        default=False, description="mark cookies Secure (set it when served over HTTPS)"
    )
    threads: int = Field(default=8, ge=1, le=64, description="waitress worker threads")


class ConsoleSettings(Settings):
    console: ConsoleOptions = ConsoleOptions()


class Feed:
    """Reads every followed topic from the beginning into the view, until stopped.

    No consumer group offsets are committed: the view is rebuilt by replaying at every start.
    """

    def __init__(self, bootstrap: str, settings: Settings, view: View, reg: Registry) -> None:
        self.view, self.registry = view, reg
        self.prefix_len = len(settings.topic_prefix)
        self.consumer = Consumer(
            {
                **client_config(bootstrap, settings),
                "group.id": f"{settings.group_prefix}-console-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": settings.fetch_wait_max_ms,
            }
        )
        meta = self.consumer.list_topics(timeout=10)
        self.consumer.assign(
            [
                TopicPartition(settings.topic(name), p, OFFSET_BEGINNING)
                for name in FOLLOWED
                if settings.topic(name) in meta.topics
                for p in meta.topics[settings.topic(name)].partitions
            ]
        )
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="console-feed", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def poll(self, timeout: float = 0.2) -> int:
        batch = [m for m in self.consumer.consume(500, timeout) if not m.error()]
        if not batch:
            return 0
        with self.view.batch():
            for m in batch:
                topic = (m.topic() or "")[self.prefix_len :]
                raw_key = m.key()
                key = raw_key.decode(errors="replace") if isinstance(raw_key, bytes) else raw_key
                data = m.value() or b""
                try:
                    value = self.registry.decode_dict(topic, data)
                    self.view.apply(topic, key, value, m.timestamp()[1], data)
                    APPLIED.inc()
                except Exception as exc:  # noqa: BLE001 - one bad record never stops the view
                    self.view.errors += 1
                    NOT_APPLIED.labels(topic if topic in FOLLOWED else "other").inc()
                    # Where and what kind of error only: a record's content may be PHI.
                    log.warning(
                        "record not applied to the view",
                        extra={
                            "topic": topic,
                            "partition": m.partition(),
                            "offset": m.offset(),
                            "error": type(exc).__name__,
                        },
                    )
        return len(batch)

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the broker may come back; keep serving pages
                log.exception("console feed: poll failed; retrying")
                time.sleep(1)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.consumer.close()


class Publisher:
    """Sends what the console's buttons produce and waits for the broker's acknowledgment."""

    def __init__(self, bootstrap: str, settings: Settings, reg: Registry) -> None:
        self.settings, self.registry = settings, reg
        self.producer = make_producer(bootstrap, settings)
        self.lock = threading.Lock()

    def __call__(
        self, topic: str, key: str, value: Model | bytes, headers: dict[str, str] | None
    ) -> None:
        data = value if isinstance(value, bytes) else self.registry.encode(topic, value)
        errors: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        with self.lock:
            self.producer.produce(
                self.settings.topic(topic),
                key=key.encode(),
                value=data,
                headers=[(k, v.encode()) for k, v in (headers or {}).items()],
                on_delivery=delivered,
            )
            remaining = self.producer.flush(15)
        if remaining or errors:
            raise TransientError(f"the broker did not acknowledge the record: {errors[:1]}")


def write_endpoints(state_dir: Path, url: str) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / ENDPOINTS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": url}))
    tmp.replace(path)
    return path


def read_endpoints(state_dir: Path, timeout: float = 0.0) -> dict[str, str] | None:
    """Where a console writing to ``state_dir`` listens, waiting up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    path = state_dir / ENDPOINTS_FILE
    while True:
        if path.exists():
            return json.loads(path.read_text())  # type: ignore[no-any-return]
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


def initial_passwords_file(config: ConsoleSettings) -> Path:
    """Where the first start leaves the generated passwords (mode 0600): change them."""
    return config.state_dir / INITIAL_PASSWORDS


def users_of(config: ConsoleSettings) -> Users:
    return Users(config.console.users_file or config.state_dir / "console-users.json")


def main(settings: Settings | None = None) -> None:
    import waitress  # type: ignore[import-untyped]

    config = ConsoleSettings.from_base(settings)
    bootstrap = config.require_bootstrap()
    reg = registry()
    ensure_topics(bootstrap, config, reg)
    users = users_of(config)
    made = first_users(users)
    if made:
        # The passwords go to a file only its owner reads, never to a log; a terminal sees
        # them once.
        path = initial_passwords_file(config)
        path.write_text("".join(f"{name} {password}\n" for name, password in made.items()))
        path.chmod(0o600)
        log.info("first start: one user per role", extra={"passwords_in": str(path)})
        if sys.stderr.isatty():
            for name, password in made.items():
                print(f"console user {name:<8} password {password}", file=sys.stderr)
    metrics_port = metrics.serve(config.metrics_host, config.metrics_port)
    log.info("metrics", extra={"port": metrics_port, "path": "/metrics"})
    view = View(config.state_dir / "console-view.sqlite3")
    feed = Feed(bootstrap, config, view, reg)
    feed.start()
    options = config.console
    app = create_app(
        view,
        reg,
        Publisher(bootstrap, config, reg),
        users,
        AccessLog(config.state_dir / "console-access.sqlite3"),
        secret_key=options.secret_key.get_secret_value() if options.secret_key else None,
        idle_minutes=options.idle_minutes,
        max_hours=options.max_hours,
        secure_cookies=options.secure_cookies,
    )
    server = waitress.create_server(
        app, host=options.host, port=options.port, threads=options.threads, ident="claimflow"
    )
    url = f"http://{options.host}:{server.effective_port}/"  # type: ignore[union-attr]
    write_endpoints(config.state_dir, url)
    log.info("console listening", extra={"url": url})
    print(f"console: {url}", file=sys.stderr, flush=True)

    def stop(*_: object) -> None:
        raise SystemExit(0)  # waitress's run() shuts its workers down on SystemExit

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.run()
    finally:
        server.close()
        feed.stop()
