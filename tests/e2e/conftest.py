"""The whole pipeline as separate processes on the session's broker, one per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.kafka import ensure_topics
from pipeline.serde import registry
from pipeline.settings import Settings
from pipeline.supervisor import Supervisor

#: The exit code of a service that stops after a broker or state failure, for its
#: supervisor to start it again (``pipeline.stage.run_stage``).
RESTART_ME = 75


@pytest.fixture
def pipeline(bootstrap: str, prefix: str, tmp_path: Path) -> Iterator[tuple[Settings, Supervisor]]:
    """The services, supervised as ``claimflow run`` does: one that exits is started again
    (a test's own ``kill`` stays down until it calls ``respawn``). A service that exited
    other than to be restarted (code 75) fails the test, with its log."""
    group = prefix.rstrip(".")
    settings = Settings(topic_prefix=prefix, group_prefix=group)
    ensure_topics(bootstrap, settings, registry())
    sup = Supervisor(
        bootstrap,
        tmp_path,
        env={"CLAIMFLOW_TOPIC_PREFIX": prefix, "CLAIMFLOW_GROUP_PREFIX": group},
    )
    sup.start()
    sup.watch()
    yield settings, sup
    sup.stop()
    crashed = {name for name, code in sup.exits if code != RESTART_ME}
    for child in sup.children.values():  # a crash in a service shows in the test report
        log = child.log_path.read_text(errors="replace")
        assert child.name not in crashed, f"{child.name} exited {sup.exits}:\n{log[-3000:]}"
        assert "Traceback" not in log or child.restarts, f"{child.name}:\n{log[-3000:]}"
