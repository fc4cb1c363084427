"""`claimflow run`, as a newcomer starts it (`make run`): open-ended, on its own embedded
broker, under the default load, for minutes; then Ctrl-C. It must still be running and
progressing, exit cleanly, leave no traceback in any log, and leave no process behind
(its services and the Tansu broker included), checked from outside the process tree."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from procs import descendants, rss_kib, running_in, state

pytestmark = [pytest.mark.e2e, pytest.mark.long]

RUN_S = float(os.environ.get("CLAIMFLOW_TEST_RUN_S", "160"))  # the issue asks for >= 150 s
LIVE = re.compile(r"\[\s*([\d.]+)s\] sent (\d+) \|.*\| posted (\d+) .*\| in flight (\d+)")


def brokers(pids: set[int]) -> list[int]:
    """The Tansu processes among ``pids``."""
    found = []
    for pid in pids:
        try:
            if b"tansu" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


@pytest.mark.timeout(RUN_S + 240)
def test_claimflow_run_lasts_minutes_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CLAIMFLOW_") and k != "KAFKA_BOOTSTRAP_SERVERS"
    }
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "run"],
            cwd=tmp_path,
            env=env,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # its own process group, as a terminal gives it
        )
    seen: set[int] = set()
    rss_start = broker_start = 0
    started = time.monotonic()
    try:
        while time.monotonic() - started < RUN_S:
            time.sleep(2)
            assert proc.poll() is None, (
                f"claimflow run exited by itself after {time.monotonic() - started:.0f}s "
                f"with {proc.returncode}:\n{err.read_text(errors='replace')[-3000:]}"
            )
            seen |= descendants(proc.pid)
            if not rss_start and time.monotonic() - started > 40:
                rss_start, broker_start = rss_kib(proc.pid), sum(map(rss_kib, brokers(seen)))
        rss_end, broker_end = rss_kib(proc.pid), sum(map(rss_kib, brokers(seen)))
        # Ctrl-C in a terminal: SIGINT to the foreground process group.
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stderr_text = err.read_text(errors="replace")
    stdout_text = out.read_text(errors="replace")
    assert code in (0, 130), f"exit {code}:\n{stderr_text[-3000:]}"

    # Alive and progressing to the end: the live line kept counting, and the pipeline kept
    # up with the simulator (what is in flight is a few seconds' worth, not a growing pile).
    live = [tuple(map(float, m.groups())) for m in LIVE.finditer(stderr_text)]
    assert live, stderr_text[-2000:]
    print("\n".join(m.group(0) for m in LIVE.finditer(stderr_text)))
    last = live[-1]
    assert last[0] >= RUN_S - 30, f"the live line stopped at {last[0]}s"
    # The second half: the simulator kept sending and the pipeline kept posting (how far
    # it lags depends on how many cores the machine spares it; that it moves does not).
    late = [row for row in live if row[0] >= RUN_S / 2]
    sent_late, posted_late = late[-1][1] - late[0][1], late[-1][2] - late[0][2]
    assert sent_late > 0 and posted_late >= 0.25 * sent_late, late

    summary = json.loads(stdout_text.strip().splitlines()[-1])
    # 20 encounters/s by default; a shared machine may pace it down, not stop it.
    assert summary["encounters_sent"] >= 10 * RUN_S, summary
    assert summary["submitted"] >= 0.75 * summary["encounters_sent"], summary
    assert summary["posted"] > 0, summary
    assert summary["dlq"] == 0 and summary["repeats_dropped"] == 0, summary

    # No traceback anywhere: claimflow's own output, every service log, the broker's log.
    logs = sorted((tmp_path / ".claimflow" / "runs").glob("*/*.log"))
    assert {p.stem for p in logs} >= {"intake", "coding", "claims", "remittance", "broker"}
    for path in [out, err, *logs]:
        text = path.read_text(errors="replace")
        assert "Traceback" not in text, f"{path.name}:\n{text[-3000:]}"
    assert "Connection refused" not in stderr_text

    # Nothing left behind: every process seen below it (the broker included) is gone, and
    # no process on the machine still runs in its folder.
    assert len(seen) >= 8, seen  # the broker and seven services, at least
    deadline = time.monotonic() + 10
    while (left := {p for p in seen if (st := state(p)) and st != "Z"}) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.5)
    assert not left, [Path(f"/proc/{p}/cmdline").read_bytes() for p in left]
    assert running_in(tmp_path) == []
    # A ledger for an open-ended run grows with what it has seen; say how fast.
    print(
        f"RSS at 40 s and at {RUN_S:.0f} s: claimflow run {rss_start} -> {rss_end} KiB, "
        f"Tansu {broker_start} -> {broker_end} KiB; {summary}"
    )
