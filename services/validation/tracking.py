"""What the scrubber's verdicts tell the tracker (``pipeline/tracker.py``): each encounter's
outcome and the edits it hit."""

from __future__ import annotations

from typing import Any


def validated(ledger: Any, key: str | None, value: Any) -> None:
    ledger.touch_encounter(value.encounter_id)
    ledger.outcome[value.encounter_id] = value.outcome
    ledger.edits[value.encounter_id] = [e.rule_id for e in value.edits]
    for e in value.edits:
        ledger.rule_categories.setdefault(e.rule_id, e.category)
        if e.category == "config":  # says which edit is off; no patient data
            ledger.notice_text.setdefault(e.rule_id, e.message[:200])


validated.milestone = "validated"  # type: ignore[attr-defined]  # the report's timeline

TOPICS = {"encounters.validated.v1": validated}
