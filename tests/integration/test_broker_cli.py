"""`claimflow broker` runs Tansu in its own session, so a signal to `claimflow broker` would
not reach it: SIGTERM (a supervisor, `kill`, a container stop) and Ctrl-C must both stop it."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import pytest
from procs import descendants, state

pytestmark = pytest.mark.broker


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_claimflow_broker_stops_tansu_on(sig: signal.Signals) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAIMFLOW_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "broker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "claimflow broker printed nothing in 60 s"
        line = proc.stdout.readline().decode()
        assert line.startswith("CLAIMFLOW_BOOTSTRAP_SERVERS=127.0.0.1:"), line
        children = descendants(proc.pid)
        assert children, "no Tansu process under claimflow broker"
        proc.send_signal(sig)  # to claimflow broker alone, as `kill PID` does
        assert proc.wait(30) == 0
        deadline = time.monotonic() + 10
        while (left := {p for p in children if state(p) not in (None, "Z")}) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.2)
        assert not left, f"left running after {sig.name}: {left}"
        assert proc.stderr is not None
        assert b"Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
