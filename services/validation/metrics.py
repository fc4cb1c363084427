"""Validation's domain metrics: scrubber edits by rule (a rule pack is a fixed list, so
the rule id is a bounded label)."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter

EDITS = Counter(
    "claimflow_edits_total", "Scrubber edits hit, by rule", ["service", "rule", "severity"]
)
OUTCOMES = ("clean", "warnings", "rejected")
"""The verdicts, counted in claimflow_outcomes_total from zero."""


_SERIES: dict[tuple[str, str, str], Any] = {}
"""EDITS' labelled series, found once each (bounded: services, a pack's rules, severities)."""


def observe(service: str, topic: str, value: Any) -> None:
    """The edits of one verdict on encounters.validated.v1."""
    if topic == "encounters.validated.v1":
        for edit in value.edits:
            key = (service, edit.rule_id, edit.severity)
            series = _SERIES.get(key)
            if series is None:
                series = _SERIES[key] = EDITS.labels(*key)
            series.inc()
