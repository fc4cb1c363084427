"""The summary line `claimflow run`/`demo` prints last: a stop is not reported as a loss."""

from __future__ import annotations

import json

import pytest

from sim.cli import _as_printed

SUMMARY = {"encounters_sent": 120, "submitted": 118, "posted": 110, "dlq": 0, "lost": 3}


def test_a_run_that_ended_by_itself_reports_lost_as_counted() -> None:
    assert _as_printed(SUMMARY, interrupted=False) == SUMMARY


def test_a_stopped_run_reports_what_had_not_settled_as_in_flight_and_lost_as_unknown() -> None:
    line = json.loads(json.dumps(_as_printed(SUMMARY, interrupted=True)))
    assert line["lost"] is None
    assert line["in_flight_when_stopped"] == 3
    assert {k: v for k, v in line.items() if k not in ("lost", "in_flight_when_stopped")} == {
        k: v for k, v in SUMMARY.items() if k != "lost"
    }
    assert SUMMARY["lost"] == 3  # the ledger's own summary is left as it was


def test_an_open_ended_run_on_the_embedded_broker_paces_its_consumers_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline.broker import EMBEDDED_RUN_PACING
    from pipeline.settings import Settings
    from sim.cli import paced

    monkeypatch.delenv("CLAIMFLOW_FETCH_WAIT_MAX_MS", raising=False)
    monkeypatch.setenv("CLAIMFLOW_POLL_TIMEOUT_S", "0.05")  # the user's choice stands
    settings, env = Settings(), {"CLAIMFLOW_PARTITIONS": "1"}
    out = paced(settings, env, EMBEDDED_RUN_PACING)
    assert out.fetch_wait_max_ms == 500 and out.poll_timeout_s == 0.05
    assert env == {"CLAIMFLOW_PARTITIONS": "1", "CLAIMFLOW_FETCH_WAIT_MAX_MS": "500"}
    # What the services read from that environment is what the run itself uses.
    monkeypatch.setenv("CLAIMFLOW_FETCH_WAIT_MAX_MS", env["CLAIMFLOW_FETCH_WAIT_MAX_MS"])
    assert Settings().fetch_wait_max_ms == out.fetch_wait_max_ms
    assert Settings().poll_timeout_s == out.poll_timeout_s
