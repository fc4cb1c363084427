"""What coding's records tell the tracker (``pipeline/tracker.py``): encounters coded, held
for a coder, and the coding audits."""

from __future__ import annotations

from typing import Any


def coded(ledger: Any, key: str | None, value: Any) -> None:
    ledger.touch_encounter(value.encounter_id)
    ledger.coded.add(value.encounter_id)


def held(ledger: Any, key: str | None, value: Any) -> None:
    ledger.touch_encounter(value.encounter_id)
    ledger.review.add(value.encounter_id)


def audited(ledger: Any, key: str | None, value: Any) -> None:
    if value.status == "queued":
        ledger.audits_queued.add(value.encounter_id)
        return
    ledger.audits_queued.discard(value.encounter_id)
    ledger.audits[value.encounter_id] = [
        (c.category, c.source, c.outcome == "agree") for c in value.codes
    ]


TOPICS = {
    "encounters.coded.v1": coded,
    "coding.review.v1": held,
    "coding.audits.v1": audited,
}
