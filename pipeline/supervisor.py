"""Starts the services as separate processes and restarts any that dies.

Used by ``claimflow run``/``demo`` and by the end-to-end tests. Each service is
``python -m pipeline.cli service NAME`` with its own log file and /metrics port. The run
folder, its logs and the services' state folders are their owner's only (0700 / 0600).

A service that exits is started again by ``check``: ``claimflow run`` calls it from its
loop, and ``watch`` calls it from a thread (the end-to-end tests: a service that stops
after a broker or state failure, exit code 75, comes back as it does for a user). Every
such exit is kept in ``exits``; a service stopped on purpose (``kill``) is left down until
``respawn``.

A service also stops when its supervisor is gone (``stop_when_orphaned``): the services run
in sessions of their own, so a supervisor killed outright (SIGKILL, a test's timeout) used
to leave them running against a broker that was gone, holding their state folders.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import plugins
from pipeline.broker import free_port, port_free
from pipeline.state import private_dir, private_file

log = logging.getLogger(__name__)


RUN_NAME = re.compile(r"\d{8}T\d{6}")

#: Set by ``Supervisor`` in each service's environment: the process id of its supervisor.
SUPERVISOR_PID = "CLAIMFLOW_SUPERVISOR_PID"


def stop_when_orphaned(every_s: float = 1.0) -> threading.Thread | None:
    """In a service a ``Supervisor`` started: a thread that sends this process SIGTERM (its
    usual orderly stop) once its supervisor is no longer its parent. A killed supervisor
    cannot stop its services, and they run in sessions of their own, so nothing else would.
    ``PR_SET_PDEATHSIG`` is not used: it follows the thread that started the child, and the
    supervisor restarts services from its watch thread. None when not started by one."""
    expected = os.environ.get(SUPERVISOR_PID)
    if not expected or not expected.isdigit():
        return None
    parent = int(expected)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        log.warning("the supervisor is gone; stopping", extra={"supervisor_pid": parent})
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="orphan-watch", daemon=True)
    thread.start()
    return thread


def prune_runs(runs: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` run folders under ``runs`` (their logs and state
    hold PHI, and nothing reads an old run); only folders named like a run's start time
    (``20261203T093000``) are touched. Returns what was deleted."""
    if not runs.is_dir():
        return []
    found = sorted(p for p in runs.iterdir() if p.is_dir() and RUN_NAME.fullmatch(p.name))
    old = found[: max(0, len(found) - keep)]
    for folder in old:
        shutil.rmtree(folder, ignore_errors=True)
    return old


@dataclass
class Child:
    name: str
    metrics_port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    #: The service it runs; ``name`` is that, or an instance of it ("validation-2").
    service: str = ""
    #: Stopped on purpose (``Supervisor.kill``): ``check`` leaves it down until ``respawn``.
    held: bool = False


@dataclass
class Supervisor:
    bootstrap: str
    run_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    #: Default: every registered service (``claimflow.services`` entry points).
    services: tuple[str, ...] = field(default_factory=lambda: tuple(plugins.service_names()))
    restart: bool = True
    children: dict[str, Child] = field(default_factory=dict)
    #: (service, exit code) of each exit ``check`` found and restarted, in order.
    exits: list[tuple[str, int]] = field(default_factory=list)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _watching: threading.Event = field(default_factory=threading.Event, repr=False)
    _watcher: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> None:
        private_dir(self.run_dir)  # logs and state folders below hold PHI: owner only
        for name in self.services:
            self.add(name)

    def add(self, name: str, service: str | None = None) -> Child:
        """Start one more process: ``service`` (default: ``name``) as instance ``name``,
        with its own log, metrics port and state folder (another member of the service's
        consumer group)."""
        if name in self.children:
            raise ValueError(f"{name}: already started")
        child = Child(name, free_port(), self.run_dir / f"{name}.log", service=service or name)
        self.children[name] = child
        self._spawn(child)
        return child

    def _spawn(self, child: Child) -> None:
        env = {
            **os.environ,
            **self.env,
            "CLAIMFLOW_BOOTSTRAP_SERVERS": self.bootstrap,
            "CLAIMFLOW_METRICS_PORT": str(child.metrics_port),
            "CLAIMFLOW_STATE_DIR": str(self.run_dir / "state" / child.name),
            SUPERVISOR_PID: str(os.getpid()),
        }
        with private_file(child.log_path).open("ab") as out:
            child.proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "service", child.service or child.name],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                umask=0o077,  # whatever a service writes is its owner's only
            )
        child.started_at = time.monotonic()

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to a service (tests use SIGKILL to prove nothing is lost); it stays
        down, whatever ``check`` sees, until ``respawn``."""
        with self._lock:
            child = self.children[name]
            child.held = True
            proc = child.proc
            if proc and proc.poll() is None:
                proc.send_signal(sig)
                proc.wait(10)

    def respawn(self, name: str) -> None:
        with self._lock:
            self._respawn(self.children[name])

    def _respawn(self, child: Child) -> None:
        child.held = False
        child.restarts += 1
        if not port_free(child.metrics_port):
            # taken while it was down (or what made it exit): the restart gets another
            old, child.metrics_port = child.metrics_port, free_port()
            log.warning(
                "metrics port taken; the restarted service gets another",
                extra={"service": child.name, "port": old, "new_port": child.metrics_port},
            )
        self._spawn(child)

    def check(self) -> list[str]:
        """Restart services that exited (with a short back-off); returns their names."""
        restarted = []
        with self._lock:
            for child in self.children.values():
                if child.held or child.proc is None or child.proc.poll() is None:
                    continue
                if not self.restart:
                    continue
                if time.monotonic() - child.started_at < 1.0:
                    time.sleep(1.0)
                code = child.proc.returncode
                log.warning(
                    "service exited; restarting", extra={"service": child.name, "code": code}
                )
                self.exits.append((child.name, code))
                self._respawn(child)
                restarted.append(child.name)
        return restarted

    def watch(self, interval_s: float = 0.5) -> None:
        """Call ``check`` every ``interval_s`` from a thread until ``stop``."""
        if self._watcher is not None:
            return

        def loop() -> None:
            while not self._watching.wait(interval_s):
                try:
                    self.check()
                except Exception:  # noqa: BLE001 - a failed restart is tried again next time
                    log.exception("supervisor: restarting a service failed")

        self._watcher = threading.Thread(target=loop, name="supervisor-watch", daemon=True)
        self._watcher.start()

    def alive(self) -> dict[str, bool]:
        return {n: c.proc is not None and c.proc.poll() is None for n, c in self.children.items()}

    def stop(self, timeout: float = 10.0) -> None:
        self._watching.set()  # services stopping now are not restarted
        if self._watcher is not None:
            self._watcher.join()
        for child in self.children.values():
            if child.proc and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children.values():
            if child.proc is None:
                continue
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
