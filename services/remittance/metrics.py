"""Remittance's domain metrics: payments by status, adjustments and denial reasons by CARC
group (CO, PR, OA, PI, CR: bounded; the CARC itself can grow without bound, so it is not
a label) and denial category."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter

from pipeline.metrics import dollars

REMITTANCES = Counter("claimflow_remittances_total", "Claim payments posted, by status", ["status"])
PAID = Counter("claimflow_paid_dollars_total", "Dollars paid by payers, by status", ["status"])
ADJUSTMENTS = Counter(
    "claimflow_adjustment_dollars_total", "Adjustment dollars posted, by CARC group", ["group"]
)
DENIALS = Counter(
    "claimflow_denials_total", "Claims queued as denied / partially denied / underpaid", ["kind"]
)
DENIAL_REASONS = Counter(
    "claimflow_denial_reasons_total",
    "Denial reasons (refusing CAS adjustments), by CARC group and category",
    ["group", "category"],
)
CARC_GROUPS = ("CO", "PR", "OA", "PI", "CR")
STATUSES = ("paid", "partially_paid", "denied", "reversed", "unmatched")
DENIAL_KINDS = ("denied", "partially_denied", "underpaid")


def carc_group(group: str) -> str:
    """A CAS group code as a bounded label: one of CO PR OA PI CR, else 'other'."""
    group = (group or "").strip().upper()
    return group if group in CARC_GROUPS else "other"


def prime() -> None:
    """Every status, CARC group and denial kind at zero."""
    for status in STATUSES:
        REMITTANCES.labels(status)
        PAID.labels(status)
    for group in CARC_GROUPS:
        ADJUSTMENTS.labels(group)
    for kind in DENIAL_KINDS:
        DENIALS.labels(kind)


def observe(topic: str, value: Any) -> None:
    """One posting on remittance.posted.v1 or one work item on remittance.denials.v1."""
    if topic == "remittance.posted.v1":
        REMITTANCES.labels(value.status).inc()
        PAID.labels(value.status).inc(dollars(value.paid))
        for adj in value.adjustments:
            ADJUSTMENTS.labels(carc_group(adj.group)).inc(max(0.0, dollars(adj.amount)))
    elif topic == "remittance.denials.v1":
        DENIALS.labels(value.kind).inc()
        for reason in value.reasons:
            DENIAL_REASONS.labels(carc_group(reason.group), reason.category).inc()
