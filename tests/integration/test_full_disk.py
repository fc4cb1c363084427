"""A full state volume, for real: a small tmpfs mounted for the test and filled to the last
byte. A stage pauses before consuming while the volume is below its free-space floor and
goes on by itself when space returns; a write that fails anyway (the floor off) sends
nothing to the dead-letter topic and loses nothing: the stage waits for space, then exits
for its supervisor, and the restarted stage reads the batch again. The intake gateway
answers 503 / AE and reports not ready while its volume is full, and takes messages again
when space returns. Skipped, with the reason, where the machine does not let a test mount
a filesystem."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gateway_client import Reader, address, mllp_exchange, msa, post, start_gateway

from pipeline import metrics
from pipeline.errors import TransientError
from pipeline.kafka import ensure_topics, make_producer
from pipeline.serde import registry
from pipeline.stage import Runner
from services.intake.app import IntakeStage
from services.intake.settings import IntakeSettings
from sim.ehr import generate

pytestmark = pytest.mark.broker
REG = registry()
MIB = 1024 * 1024


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs of its own, unmounted afterwards."""
    mount = tmp_path / "volume"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(volume: Path) -> Path:
    """Write a file until the volume has no byte left; returns it (delete it to free)."""
    filler = volume / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (65536, 4096, 512, 1):  # then the last partial blocks
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                continue
    finally:
        os.close(fd)
    return filler


def until(condition: Callable[[], bool], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def blocked(service: str) -> float:
    return metrics.STORAGE_BLOCKED.labels(service)._value.get()  # type: ignore[attr-defined]


class Running:
    """A Runner on a thread; ``error`` is what ``run`` raised, if anything."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.runner.run()
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            self.error = exc

    def stop(self) -> None:
        self.runner.stopping.set()
        self.thread.join(30)


def send(bootstrap: str, settings: IntakeSettings, n: int, seed: int) -> set[str]:
    producer = make_producer(bootstrap, settings)
    ids = set()
    for source_id, ctype, body in generate(n, seed=seed, fmt="fhir"):
        producer.produce(
            settings.topic("intake.raw.v1"),
            key=source_id.encode(),
            value=body,
            headers=[("content-type", ctype.encode())],
        )
        ids.add(source_id)
    assert producer.flush(10) == 0
    return ids


def sources(records: list) -> set[str]:
    """The source messages the collected encounters came from."""
    return {REG.decode("encounters.collected.v1", m.value()).source_id for m in records}


def intake_settings(prefix: str, volume: Path, min_free: int) -> IntakeSettings:
    return IntakeSettings(
        topic_prefix=prefix,
        group_prefix=prefix.rstrip("."),
        state_dir=volume / "state",
        min_free_bytes=min_free,
    )


def test_a_stage_waits_below_the_floor_and_goes_on_when_space_returns(
    bootstrap: str, prefix: str, volume: Path
) -> None:
    settings = intake_settings(prefix, volume, 1 * MIB)
    ensure_topics(bootstrap, settings, REG)
    collected = Reader(bootstrap, settings.topic("encounters.collected.v1"))
    dead = Reader(bootstrap, settings.topic("dlq.intake.v1"))
    stage = IntakeStage(settings)  # its stores exist before the volume fills
    filler = fill(volume)
    sent = send(bootstrap, settings, 12, seed=7)
    running = Running(Runner(stage, settings, bootstrap))
    try:
        assert until(lambda: blocked("intake") == 1)
        collected.poll(1.0)
        assert collected.records == []  # nothing was consumed while the volume was full
        filler.unlink()
        assert collected.wait(lambda r: sources(r) == sent, 60)
        assert until(lambda: blocked("intake") == 0)
        assert running.thread.is_alive() and running.error is None  # no restart was needed
        dead.poll(1.0)
        assert dead.records == []
    finally:
        running.stop()
        collected.close()
        dead.close()


def test_a_write_that_fails_loses_nothing_and_is_read_again_after_a_restart(
    bootstrap: str, prefix: str, volume: Path
) -> None:
    settings = intake_settings(prefix, volume, 0)  # no floor: the store's commit fails
    ensure_topics(bootstrap, settings, REG)
    collected = Reader(bootstrap, settings.topic("encounters.collected.v1"))
    dead = Reader(bootstrap, settings.topic("dlq.intake.v1"))
    stage = IntakeStage(settings)
    filler = fill(volume)
    sent = send(bootstrap, settings, 12, seed=8)
    running = Running(Runner(stage, settings, bootstrap))
    try:
        assert until(lambda: blocked("intake") == 1)  # the write failed: waiting for space
        assert running.thread.is_alive()  # not a crash loop: one process, waiting
        filler.unlink()
        running.thread.join(60)
        # Space is back: the runner stops for its supervisor (exit 75 in a service).
        assert isinstance(running.error, TransientError), running.error
        assert "state volume" in str(running.error)
    finally:
        running.stop()
    # The restarted stage reads the batch whose state was not committed, and goes on.
    again = Running(Runner(IntakeStage(settings), settings, bootstrap))
    try:
        assert collected.wait(lambda r: sources(r) == sent, 60)
        dead.poll(1.0)
        assert dead.records == []  # a full disk is not the input's fault
        assert again.error is None
    finally:
        again.stop()
        collected.close()
        dead.close()


def test_the_gateway_refuses_with_a_retryable_answer_while_its_volume_is_full(
    bootstrap: str, prefix: str, volume: Path
) -> None:
    gw = start_gateway(
        bootstrap,
        {"auth": False},
        topic_prefix=prefix,
        state_dir=volume / "gateway",
        min_free_bytes=1 * MIB,
    )
    _, _, bundle = next(generate(1, seed=5, fmt="fhir"))
    _, _, message = next(generate(1, seed=5, fmt="hl7v2"))
    framed = b"\x0b" + message + b"\x1c\r"

    def health() -> int:
        url = f"{gw.endpoints()['http']}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    try:
        assert until(lambda: health() == 200)  # ready once the broker answered
        gw.write_endpoints(volume / "gateway")
        filler = fill(volume)
        assert until(lambda: health() == 503)
        status, body = post(gw, "/fhir", bundle, "application/fhir+json", token=None)
        assert status == 503 and b"disk" in body
        with socket.create_connection(address(gw, "mllp"), timeout=30) as sock:
            (reply,) = mllp_exchange(sock, framed, 1)
        assert msa(reply)[1] == "AE"
        filler.unlink()
        assert until(lambda: health() == 200)
        status, _ = post(gw, "/fhir", bundle, "application/fhir+json", token=None)
        assert status == 202
        with socket.create_connection(address(gw, "mllp"), timeout=30) as sock:
            (reply,) = mllp_exchange(sock, framed, 1)
        assert msa(reply)[1] == "AA"
    finally:
        gw.stop()
