"""The supervisor's watch: a service that exits is started again and its exit kept (the
end-to-end tests run the services so, as ``claimflow run`` does); one a test killed on
purpose stays down until the test brings it back."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.supervisor import Child, Supervisor


def _supervisor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, codes: list[int]) -> Supervisor:
    """A supervisor whose services are small processes: each start exits with the next of
    ``codes``; once they are used up, it runs until killed."""
    sup = Supervisor("127.0.0.1:1", tmp_path, services=())

    def spawn(child: Child) -> None:
        code = codes.pop(0) if codes else None
        script = f"raise SystemExit({code})" if code is not None else "import time; time.sleep(60)"
        child.proc = subprocess.Popen([sys.executable, "-c", script])
        child.started_at = time.monotonic()

    monkeypatch.setattr(sup, "_spawn", spawn)
    sup.children["remittance"] = child = Child("remittance", 0, tmp_path / "remittance.log")
    spawn(child)
    return sup


def _until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.05)


def test_an_exited_service_is_started_again_and_its_exit_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sup = _supervisor(tmp_path, monkeypatch, [75, 1])
    sup.watch(interval_s=0.05)
    try:
        _until(lambda: len(sup.exits) == 2 and sup.alive() == {"remittance": True})
        assert sup.exits == [("remittance", 75), ("remittance", 1)]
        assert sup.children["remittance"].restarts == 2
    finally:
        sup.stop()
    assert sup.alive() == {"remittance": False}


def test_a_killed_service_stays_down_until_respawned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sup = _supervisor(tmp_path, monkeypatch, [])
    sup.watch(interval_s=0.05)
    try:
        sup.kill("remittance")
        time.sleep(0.5)  # ten looks of the watch
        assert sup.alive() == {"remittance": False} and sup.exits == []
        sup.respawn("remittance")
        assert sup.alive() == {"remittance": True}
        assert sup.children["remittance"].restarts == 1
    finally:
        sup.stop()


def test_the_watch_goes_on_after_a_restart_that_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sup = _supervisor(tmp_path, monkeypatch, [75])
    spawn = sup._spawn
    failures = [OSError("no more processes")]

    def flaky(child: Child) -> None:
        if failures:
            raise failures.pop()
        spawn(child)

    monkeypatch.setattr(sup, "_spawn", flaky)
    sup.watch(interval_s=0.05)
    try:
        _until(lambda: sup.alive() == {"remittance": True} and not failures)
        assert sup.exits == [("remittance", 75), ("remittance", 75)]  # found again, then restarted
    finally:
        sup.stop()
