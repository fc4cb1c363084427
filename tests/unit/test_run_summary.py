"""The summary line `claimflow run`/`demo` prints last: a stop is not reported as a loss."""

from __future__ import annotations

import json

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
