"""Prometheus metrics shared by every service. Labels are bounded: never an id.

Label values come from fixed sets: service and topic names, validation outcomes, rule ids
(a rule pack is a fixed list), edit severities, claim types, X12 claim filing indicators
(plan type, two characters), remittance statuses, CARC group codes (CO, PR, OA, PI, CR) and
denial categories. Payer ids and CARCs are deliberately not labels: they can grow without
bound. ``observe_output`` derives the domain metrics from what a stage produces, so the
services' ``app.py`` files need no metric calls of their own for them.

Consumer lag is approximate: it is the partition's high watermark as the client last saw
it in a fetch response, minus the consumed position; the embedded Tansu broker's
watermarks read a few percent low, so there it under-reports.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECORDS_IN = Counter("claimflow_records_in_total", "Records consumed", ["service", "topic"])
RECORDS_OUT = Counter("claimflow_records_out_total", "Records produced", ["service", "topic"])
DEAD_LETTERS = Counter(
    "claimflow_dead_letters_total", "Inputs sent to the dead-letter topic", ["service", "error"]
)
OUTCOMES = Counter(
    "claimflow_outcomes_total",
    "Domain outcomes (validation verdicts, remittance statuses)",
    ["service", "outcome"],
)
BATCH_SECONDS = Histogram(
    "claimflow_batch_seconds",
    "Time to process one consumed batch, produce acknowledged and offsets committed",
    ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LATENCY = Histogram(
    "claimflow_record_age_seconds",
    "Age of a record when this stage finished it (now - record timestamp)",
    ["service"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
PROCESSING = Histogram(
    "claimflow_processing_seconds",
    "Per record: time from the batch's consume to its output acknowledged and committed",
    ["service"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENT_AGE = Histogram(
    "claimflow_event_age_seconds",
    "End-to-end age of an output: now - the encounter's received time at intake",
    ["service", "topic"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
LAG = Gauge(
    "claimflow_consumer_lag_records",
    "Approximate lag: cached high watermark - position after the last consumed record",
    ["service", "topic", "partition"],
)
EDITS = Counter(
    "claimflow_edits_total", "Scrubber edits hit, by rule", ["service", "rule", "severity"]
)
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
UP = Gauge("claimflow_up", "1 while the service is consuming", ["service"])

CARC_GROUPS = ("CO", "PR", "OA", "PI", "CR")
OUTCOME_LABELS = {"validation": ("clean", "warnings", "rejected")}
STATUSES = ("paid", "partially_paid", "denied", "reversed", "unmatched")
CLAIM_TYPES = ("professional", "institutional")
_PLAN = re.compile(r"^[A-Z0-9]{2}$")


def serve(host: str, port: int) -> int:
    """Serve /metrics with prometheus-client's own HTTP server; returns the bound port."""
    server, _thread = start_http_server(port, addr=host)
    return int(server.server_port)


def read_counter(
    port: int, name: str, labels: dict[str, str], timeout: float = 0.5
) -> float | None:
    """A counter's value as a running service's /metrics on 127.0.0.1 shows it (None when
    the service does not answer; 0 when the series is not there yet)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as resp:
            text = resp.read().decode("utf-8", "replace")
    except OSError:
        return None
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def prime(service: str, inputs: Iterable[str] = ()) -> None:
    """Create the fixed label sets at zero, so the first scrape sees 0 and rate() and
    increase() count the first events too (a series born at 5 loses those 5)."""
    for topic in inputs:
        RECORDS_IN.labels(service, topic)
    RECORDS_OUT.labels(service, f"dlq.{service}.v1")  # dead letters by service, from zero
    for hist in (LATENCY, PROCESSING, BATCH_SECONDS):
        hist.labels(service)
    for outcome in OUTCOME_LABELS.get(service, ()):
        OUTCOMES.labels(service, outcome)
    if service == "claims":
        for claim_type in CLAIM_TYPES:
            for frequency in ("1", "7", "8"):
                CLAIMS.labels(claim_type, frequency)
    if service == "remittance":
        for status in STATUSES:
            REMITTANCES.labels(status)
            PAID.labels(status)
        for group in CARC_GROUPS:
            ADJUSTMENTS.labels(group)
        for kind in ("denied", "partially_denied", "underpaid"):
            DENIALS.labels(kind)


def carc_group(group: str) -> str:
    """A CAS group code as a bounded label: one of CO PR OA PI CR, else 'other'."""
    group = (group or "").strip().upper()
    return group if group in CARC_GROUPS else "other"


def plan_type(value: str | None) -> str:
    """A claim filing indicator (two characters) as a bounded label, else 'other'."""
    value = (value or "").strip().upper()
    return value if _PLAN.match(value) else "other"


def encounter_of(value: Any) -> Any:
    """The intake encounter inside a collected / coded / validated / review record."""
    for path in (("coverage",), ("encounter",), ("coded", "encounter")):
        node = value
        for attr in path:
            node = getattr(node, attr, None)
        if node is not None:
            return value if path == ("coverage",) else node
    return None


def event_time(value: Any) -> float | None:
    """Epoch seconds the encounter was received at intake, when the record carries it."""
    enc = encounter_of(value)
    received = getattr(enc, "received_at", None)
    return received.timestamp() if isinstance(received, datetime) else None


def _dollars(amount: Decimal | float | None) -> float:
    return float(amount or 0)


def observe_output(
    service: str, topic: str, value: Any, now: float, origin: dict[str, Any] | None = None
) -> None:
    """Domain metrics for one produced record. ``origin`` maps an encounter id to the input
    it came from, for outputs that do not carry the encounter themselves (claims)."""
    source = value
    if encounter_of(value) is None and origin is not None:
        source = origin.get(getattr(value, "encounter_id", None) or "", value)
    started = event_time(source)
    if started is not None:
        EVENT_AGE.labels(service, topic).observe(max(0.0, now - started))
    if topic == "encounters.validated.v1":
        for edit in value.edits:
            EDITS.labels(service, edit.rule_id, edit.severity).inc()
    elif topic == "claims.submitted.v1":
        enc = encounter_of(source)
        plan = plan_type(getattr(getattr(enc, "coverage", None), "plan_type", None))
        CLAIMS.labels(value.claim_type, value.frequency).inc()
        CLAIMS_BY_PLAN.labels(value.claim_type, plan).inc()
        CHARGES.labels(value.claim_type, plan).inc(_dollars(value.total_charge))
    elif topic == "remittance.posted.v1":
        REMITTANCES.labels(value.status).inc()
        PAID.labels(value.status).inc(_dollars(value.paid))
        for adj in value.adjustments:
            ADJUSTMENTS.labels(carc_group(adj.group)).inc(max(0.0, _dollars(adj.amount)))
    elif topic == "remittance.denials.v1":
        DENIALS.labels(value.kind).inc()
        for reason in value.reasons:
            DENIAL_REASONS.labels(carc_group(reason.group), reason.category).inc()
