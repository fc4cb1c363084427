"""A service stops in order when its supervisor is killed outright (``stop_when_orphaned``).

Real processes: a stand-in supervisor starts a child the way ``Supervisor`` does (its pid in
the child's environment, a session of its own), and is then killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.supervisor import SUPERVISOR_PID, stop_when_orphaned

CHILD = textwrap.dedent(
    """
    import signal, sys, time
    from pipeline.supervisor import stop_when_orphaned

    def stop(*_):
        print("stopped in order", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    stop_when_orphaned(every_s=0.05)
    print("ready", flush=True)
    time.sleep(60)
    """
)

PARENT = textwrap.dedent(
    """
    import os, subprocess, sys, time
    out = open(sys.argv[1], "w")
    env = {**os.environ, sys.argv[3]: str(os.getpid())}
    child = subprocess.Popen(
        [sys.executable, "-c", sys.argv[2]], stdout=out, env=env, start_new_session=True
    )
    print(child.pid, flush=True)
    time.sleep(60)
    """
)


def gone(pid: int) -> bool:
    """Exited: no process, or a zombie nobody has reaped yet."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def wait_for(check: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_a_service_stops_in_order_when_its_supervisor_is_killed(tmp_path: Path) -> None:
    log = tmp_path / "child.out"
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(log), CHILD, SUPERVISOR_PID],
        stdout=subprocess.PIPE,
        text=True,
    )
    child_pid = 0
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert wait_for(lambda: "ready" in log.read_text(), 30), log.read_text()
        time.sleep(0.3)
        assert not gone(child_pid), "the child stopped while its supervisor was alive"
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert wait_for(lambda: gone(child_pid), 10), "the orphaned service kept running"
        assert "stopped in order" in log.read_text()
    finally:
        if parent.poll() is None:
            parent.kill()
        if child_pid and not gone(child_pid):
            os.kill(child_pid, signal.SIGKILL)


def test_a_process_no_supervisor_started_watches_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SUPERVISOR_PID, raising=False)
    assert stop_when_orphaned() is None
