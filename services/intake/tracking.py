"""What intake's records tell the tracker (``pipeline/tracker.py``): which source each
encounter came from, its plan type and its payers in order."""

from __future__ import annotations

from typing import Any


def collected(ledger: Any, key: str | None, value: Any) -> None:
    ledger.encounter_source[value.encounter_id] = value.source_id
    ledger.touch_source(value.source_id)
    ledger.source_encounters[value.source_id].add(value.encounter_id)
    ledger.plan_types[value.encounter_id] = value.coverage.plan_type
    others = getattr(value, "other_coverages", [])
    if others:
        payers = [value.coverage.payer_id, *(c.payer_id for c in others)]
        ledger.coverages[value.encounter_id] = payers


TOPICS = {"encounters.collected.v1": collected}
