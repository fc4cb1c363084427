"""Claims' domain metrics: claims and charges by claim type, frequency and plan type (the
two-character claim filing indicator, a bounded label; payer ids are not)."""

from __future__ import annotations

import re
from typing import Any

from prometheus_client import Counter

from pipeline.metrics import dollars, encounter_of

CLAIMS = Counter(
    "claimflow_claims_submitted_total",
    "Claims submitted, by type and frequency (1 original, 7 replacement, 8 void)",
    ["claim_type", "frequency"],
)
CLAIMS_BY_PLAN = Counter(
    "claimflow_claims_by_plan_total",
    "Claims submitted, by claim filing indicator (plan type)",
    ["claim_type", "plan_type"],
)
CHARGES = Counter(
    "claimflow_claim_charges_dollars_total",
    "Total charges submitted, by claim type and plan type",
    ["claim_type", "plan_type"],
)
CLAIM_TYPES = ("professional", "institutional")
_PLAN = re.compile(r"^[A-Z0-9]{2}$")


def plan_type(value: str | None) -> str:
    """A claim filing indicator (two characters) as a bounded label, else 'other'."""
    value = (value or "").strip().upper()
    return value if _PLAN.match(value) else "other"


def prime() -> None:
    """Every claim type and frequency at zero."""
    for claim_type in CLAIM_TYPES:
        for frequency in ("1", "7", "8"):
            CLAIMS.labels(claim_type, frequency)


def observe(topic: str, value: Any, source: Any) -> None:
    """One claim on claims.submitted.v1; ``source`` is the validated encounter it billed."""
    if topic != "claims.submitted.v1":
        return
    enc = encounter_of(source)
    plan = plan_type(getattr(getattr(enc, "coverage", None), "plan_type", None))
    CLAIMS.labels(value.claim_type, value.frequency).inc()
    CLAIMS_BY_PLAN.labels(value.claim_type, plan).inc()
    CHARGES.labels(value.claim_type, plan).inc(dollars(value.total_charge))
