"""Remittance's domain metrics: payments by status, adjustments and denial reasons by CARC
group (CO, PR, OA, PI, CR: bounded; the CARC itself can grow without bound, so it is not
a label) and denial category."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import Counter

from pipeline.metrics import OUTCOMES, dollars


def children(metric: Any) -> Callable[..., Any]:
    """``metric.labels`` with each child kept once made: the same child as ``labels`` gives
    (prometheus_client keeps one per label values), without its checks and lock on every
    posting (about 18 ``labels`` calls a claim)."""
    made: dict[tuple[str, ...], Any] = {}

    def child(*values: str) -> Any:
        found = made.get(values)
        if found is None:
            found = made[values] = metric.labels(*values)
        return found

    return child


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
_OUTCOMES = children(OUTCOMES)


def outcome(name: str) -> Any:
    """remittance's child of ``claimflow_outcomes_total`` for the outcome ``name``."""
    return _OUTCOMES("remittance", name)


_REMITTANCES = children(REMITTANCES)
_PAID = children(PAID)
_ADJUSTMENTS = children(ADJUSTMENTS)
_DENIALS = children(DENIALS)
_DENIAL_REASONS = children(DENIAL_REASONS)
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
        _REMITTANCES(value.status).inc()
        _PAID(value.status).inc(dollars(value.paid))
        for adj in value.adjustments:
            _ADJUSTMENTS(carc_group(adj.group)).inc(max(0.0, dollars(adj.amount)))
    elif topic == "remittance.denials.v1":
        _DENIALS(value.kind).inc()
        for reason in value.reasons:
            _DENIAL_REASONS(carc_group(reason.group), reason.category).inc()
