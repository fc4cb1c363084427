"""The whole pipeline as separate processes on the session's broker, one per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.kafka import ensure_topics
from pipeline.serde import registry
from pipeline.settings import Settings
from pipeline.supervisor import Supervisor


@pytest.fixture
def pipeline(bootstrap: str, prefix: str, tmp_path: Path) -> Iterator[tuple[Settings, Supervisor]]:
    group = prefix.rstrip(".")
    settings = Settings(topic_prefix=prefix, group_prefix=group)
    ensure_topics(bootstrap, settings, registry())
    sup = Supervisor(
        bootstrap,
        tmp_path,
        env={"CLAIMFLOW_TOPIC_PREFIX": prefix, "CLAIMFLOW_GROUP_PREFIX": group},
    )
    sup.start()
    yield settings, sup
    sup.stop()
    for child in sup.children.values():  # a crash in a service shows in the test report
        log = child.log_path.read_text(errors="replace")
        assert "Traceback" not in log or child.restarts, f"{child.name}:\n{log[-3000:]}"
