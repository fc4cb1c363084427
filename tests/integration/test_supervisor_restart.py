"""A service started on a metrics port someone else holds exits at start-up; the
supervisor's ``check`` restarts it on another port, where it answers (the coding service
died this way in a benchmark: the port it was handed had been taken meanwhile)."""

from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path

from pipeline.kafka import ensure_topics
from pipeline.serde import registry
from pipeline.settings import Settings
from pipeline.supervisor import Child, Supervisor


def test_a_service_whose_port_is_taken_comes_back_on_another(
    bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    group = prefix.rstrip(".")
    ensure_topics(bootstrap, Settings(topic_prefix=prefix, group_prefix=group), registry())
    sup = Supervisor(
        bootstrap,
        tmp_path,
        env={"CLAIMFLOW_TOPIC_PREFIX": prefix, "CLAIMFLOW_GROUP_PREFIX": group},
        services=(),
    )
    log = tmp_path / "remittance.log"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        child = Child("remittance", port, log, service="remittance")
        sup.children["remittance"] = child
        sup._spawn(child)
        try:
            assert child.proc is not None
            child.proc.wait(120)
            assert child.proc.returncode != 0
            assert "Address already in use" in log.read_text()
            assert sup.check() == ["remittance"]
            assert child.metrics_port != port
            deadline = time.monotonic() + 120
            while True:
                try:
                    url = f"http://127.0.0.1:{child.metrics_port}/metrics"
                    with urllib.request.urlopen(url, timeout=1) as resp:
                        assert b"claimflow" in resp.read()
                        break
                except OSError:
                    assert child.proc.poll() is None, log.read_text()[-3000:]
                    assert time.monotonic() < deadline, "no /metrics on the new port"
                    time.sleep(0.2)
        finally:
            sup.stop()
