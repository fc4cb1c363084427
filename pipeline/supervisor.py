"""Starts the services as separate processes and restarts any that dies.

Used by ``claimflow run``/``demo`` and by the end-to-end tests. Each service is
``python -m pipeline.cli service NAME`` with its own log file and /metrics port. The run
folder, its logs and the services' state folders are their owner's only (0700 / 0600).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import plugins
from pipeline.broker import free_port, port_free
from pipeline.state import private_dir, private_file

log = logging.getLogger(__name__)


RUN_NAME = re.compile(r"\d{8}T\d{6}")


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


@dataclass
class Supervisor:
    bootstrap: str
    run_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    #: Default: every registered service (``claimflow.services`` entry points).
    services: tuple[str, ...] = field(default_factory=lambda: tuple(plugins.service_names()))
    restart: bool = True
    children: dict[str, Child] = field(default_factory=dict)

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
        """Send ``sig`` to a service (tests use SIGKILL to prove nothing is lost)."""
        proc = self.children[name].proc
        if proc and proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(10)

    def respawn(self, name: str) -> None:
        child = self.children[name]
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
        for child in self.children.values():
            if child.proc is None or child.proc.poll() is None:
                continue
            if not self.restart:
                continue
            if time.monotonic() - child.started_at < 1.0:
                time.sleep(1.0)
            log.warning(
                "service exited; restarting",
                extra={"service": child.name, "code": child.proc.returncode},
            )
            self.respawn(child.name)
            restarted.append(child.name)
        return restarted

    def alive(self) -> dict[str, bool]:
        return {n: c.proc is not None and c.proc.poll() is None for n, c in self.children.items()}

    def stop(self, timeout: float = 10.0) -> None:
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
