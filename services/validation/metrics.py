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


def observe(service: str, topic: str, value: Any) -> None:
    """The edits of one verdict on encounters.validated.v1."""
    if topic == "encounters.validated.v1":
        for edit in value.edits:
            EDITS.labels(service, edit.rule_id, edit.severity).inc()
