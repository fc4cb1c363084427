"""Revenue-cycle KPIs from the console's view, named and computed as HFMA's MAP Keys define
them where the pipeline has the data, and saying so where it departs.

- Clean claim rate (MAP Key CL-1): claims that pass every edit with no manual intervention,
  over claims accepted into the scrubber. Here: encounters whose first verdict was clean (or
  warnings only) and that no coder had to touch, over encounters validated.
- Remittance denial rate (AR-5): claims denied, over claims remitted (an 835 answered them).
  Counted per claim on its first remittance, in full (``denied``) or in part; also by payer
  and by reason (CARC), and in dollars at stake.
- First-pass yield: claims paid on their first submission, over claims remitted.
- Days in A/R and aged A/R (AR-1, AR-2): A/R is gross, because the pipeline knows charges and
  what payers said, not the general ledger's contractual allowances. A claim's balance is
  its charge until a payer answers; then what the patient owes plus what was denied and is
  still being worked (appealed or resubmitted; a write-off clears it). Aged from the day it
  was first billed, in HFMA's 30-day buckets. Days in A/R = A/R over the average daily gross
  charges billed in the last 90 days (or since the first claim, when that is shorter, and
  never less than a day).
- Throughput and lag: records per minute per stage, and how long an encounter took from
  collected to billed and from billed to remitted (median and 95th percentile).
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from services.console.view import View

DAY_MS = 86_400_000
BUCKETS = (("0-30", 30), ("31-60", 60), ("61-90", 90), ("91-120", 120), ("120+", None))
ZERO = Decimal("0.00")


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _dec(value: str | None) -> Decimal:
    return Decimal(value) if value else ZERO


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    note: str = ""


def clean_claims(view: View) -> dict[str, Any]:
    row = view.aggregate(
        "SELECT COUNT(*) AS validated,"
        " SUM(first_outcome IN ('clean', 'warnings') AND held = 0) AS clean,"
        " SUM(held) AS touched_by_coder, SUM(first_outcome = 'rejected') AS rejected_first"
        " FROM encounters WHERE verdicts > 0"
    )
    validated = row["validated"] or 0
    clean = row["clean"] or 0
    return {
        "validated": validated,
        "clean": clean,
        "clean_claim_rate": _ratio(clean, validated),
        "held_for_coder": row["touched_by_coder"] or 0,
        "rejected_first": row["rejected_first"] or 0,
    }


def denials(view: View) -> dict[str, Any]:
    remitted = view.rows(
        "SELECT c.claim_id, c.payer_id, c.payer_name, c.first_status, c.submissions,"
        " c.charge, d.kind, d.reasons, d.at_stake, d.state, d.written_off"
        " FROM claims c LEFT JOIN denials d USING (claim_id) WHERE c.first_status IS NOT NULL"
    )
    n = len(remitted)
    denied = [r for r in remitted if r["kind"] in ("denied", "partially_denied")]
    fully = [r for r in denied if r["kind"] == "denied"]
    by_payer: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    names: dict[str, str] = {}
    for r in remitted:
        payer = r["payer_id"] or "?"
        names[payer] = r["payer_name"] or payer
        by_payer[payer][1] += 1
        if r["kind"] in ("denied", "partially_denied"):
            by_payer[payer][0] += 1
    reasons: Counter[str] = Counter()
    described: dict[str, str] = {}
    for r in denied:
        for reason in {(x["group"], x["carc"], x.get("description")) for x in _load(r["reasons"])}:
            code = f"{reason[0]}-{reason[1]}"
            reasons[code] += 1
            if reason[2]:
                described[code] = reason[2]
    first_pass = sum(
        1
        for r in remitted
        if r["first_status"] in ("paid", "partially_paid")
        and r["kind"] is None
        and (r["submissions"] or 0) <= 1
    )
    states = Counter(r["state"] for r in view.rows("SELECT state FROM denials"))
    at_stake = sum((_dec(r["at_stake"]) for r in denied), ZERO)
    written_off = sum(
        (_dec(r["written_off"]) for r in view.rows("SELECT written_off FROM denials")), ZERO
    )
    return {
        "remitted": n,
        "denied": len(denied),
        "denied_in_full": len(fully),
        "denial_rate": _ratio(len(denied), n),
        "first_pass_yield": _ratio(first_pass, n),
        "denied_dollars": at_stake,
        "by_payer": [
            Bar(names[p], _ratio(d, total) or 0.0, f"{d} of {total}")
            for p, (d, total) in sorted(by_payer.items(), key=lambda kv: -kv[1][0])
        ],
        "by_reason": [Bar(code, n, described.get(code, "")) for code, n in reasons.most_common(10)],
        "open": states["open"],
        "appealed": states["appealed"],
        "written_off": states["written_off"],
        "resubmitted": states["resubmitted"],
        "written_off_dollars": written_off,
    }


def _load(text: str | None) -> list[dict[str, Any]]:
    return json.loads(text) if text else []


def receivables(view: View, now_ms: int | None = None) -> dict[str, Any]:
    """Gross A/R by claim, aged from first billing, by bucket and by payer; days in A/R."""
    now_ms = now_ms or int(time.time() * 1000)
    rows = view.rows(
        "SELECT c.claim_id, c.payer_id, c.payer_name, c.charge, c.first_submitted_ms,"
        " c.status, c.patient_resp, c.rejected_ms, c.submitted_ms, d.at_stake, d.state"
        " FROM claims c LEFT JOIN denials d USING (claim_id)"
        " WHERE c.first_submitted_ms IS NOT NULL"
    )
    buckets = {name: ZERO for name, _ in BUCKETS}
    by_payer: dict[str, Decimal] = defaultdict(lambda: ZERO)
    total = ZERO
    for r in rows:
        if r["status"] is None:
            balance = _dec(r["charge"])  # billed, no answer (or refused at the front end)
        else:
            balance = _dec(r["patient_resp"])
            if r["state"] in ("open", "appealed", "resubmitted"):
                balance += _dec(r["at_stake"])
        if balance <= 0:
            continue
        age_days = (now_ms - r["first_submitted_ms"]) / DAY_MS
        for name, limit in BUCKETS:
            if limit is None or age_days <= limit:
                buckets[name] += balance
                break
        by_payer[r["payer_name"] or r["payer_id"] or "?"] += balance
        total += balance
    window = view.aggregate(
        "SELECT MIN(first_submitted_ms) AS first FROM claims WHERE first_submitted_ms >= ?",
        now_ms - 90 * DAY_MS,
    )
    first = window["first"] if window and window["first"] else now_ms
    billed = sum(
        (
            _dec(r["charge"])
            for r in view.rows(
                "SELECT charge FROM claims WHERE first_submitted_ms >= ?", now_ms - 90 * DAY_MS
            )
        ),
        ZERO,
    )
    days = max(1.0, (now_ms - first) / DAY_MS)
    daily = billed / Decimal(str(days))
    over_90 = buckets["91-120"] + buckets["120+"]
    return {
        "ar_total": total,
        "days_in_ar": float(total / daily) if daily else None,
        "aged_over_90": _ratio(float(over_90), float(total)),
        "by_bucket": [Bar(name, float(v)) for name, v in buckets.items()],
        "by_payer": [Bar(p, float(v)) for p, v in sorted(by_payer.items(), key=lambda kv: -kv[1])],
    }


THROUGHPUT_TOPICS = (
    ("collected", "encounters.collected.v1"),
    ("validated", "encounters.validated.v1"),
    ("submitted", "claims.submitted.v1"),
    ("remitted", "remittance.posted.v1"),
)


def throughput(view: View, now_ms: int | None = None, minutes: int = 30) -> dict[str, Any]:
    """Records per minute per stage over the last ``minutes``, and the lags per encounter."""
    now_ms = now_ms or int(time.time() * 1000)
    start = now_ms - minutes * 60_000
    series: dict[str, list[int]] = {}
    for label, topic in THROUGHPUT_TOPICS:
        counts = [0] * minutes
        for (ts,) in view.rows(
            "SELECT ts_ms FROM events WHERE topic = ? AND ts_ms >= ?", topic, start
        ):
            counts[min(minutes - 1, max(0, (ts - start) // 60_000))] += 1
        series[label] = counts
    billed = [
        (r[1] - r[0]) / 1000
        for r in view.rows(
            "SELECT e.collected_ms, c.first_submitted_ms FROM claims c JOIN encounters e"
            " USING (encounter_id) WHERE e.collected_ms IS NOT NULL"
            " ORDER BY c.first_submitted_ms DESC LIMIT 2000"
        )
    ]
    remitted = [
        (r[1] - r[0]) / 1000
        for r in view.rows(
            "SELECT submitted_ms, posted_ms FROM claims WHERE posted_ms IS NOT NULL"
            " ORDER BY posted_ms DESC LIMIT 2000"
        )
    ]
    last = {
        label: counts[-1] + counts[-2] if minutes > 1 else counts[-1]
        for label, counts in series.items()
    }
    return {
        "minutes": minutes,
        "series": series,
        "per_minute": {label: n / 2 for label, n in last.items()},
        "lag_billed_p50": _percentile(billed, 0.5),
        "lag_billed_p95": _percentile(billed, 0.95),
        "lag_remitted_p50": _percentile(remitted, 0.5),
        "lag_remitted_p95": _percentile(remitted, 0.95),
    }


def audits(view: View) -> dict[str, Any]:
    """Coding audit accuracy: codes the auditors kept, over codes they scored."""
    row = view.aggregate(
        "SELECT COUNT(*) AS audited, SUM(agreed) AS agreed, SUM(scored) AS scored"
        " FROM audits WHERE status = 'audited'"
    )
    return {
        "audited": row["audited"] or 0,
        "accuracy": _ratio(row["agreed"] or 0, row["scored"] or 0),
    }


def queues(view: View) -> dict[str, int]:
    return {
        "review": len(view.review_queue(limit=100_000)),
        "audits": len(view.audit_queue(limit=100_000)),
        "corrections": len(view.correction_queue(limit=100_000)),
        "denials": len(view.denial_queue("open", limit=100_000)),
        "exceptions": len(view.exception_queue(limit=100_000)),
    }


def overview(view: View, now_ms: int | None = None) -> dict[str, Any]:
    """Everything the overview page shows, read under one lock so the numbers agree."""
    with view.lock:
        totals = view.aggregate(
            "SELECT COUNT(*) AS encounters, SUM(claim_id IS NOT NULL) AS billed,"
            " SUM(dead_stage IS NOT NULL) AS dead FROM encounters"
        )
        return {
            "encounters": totals["encounters"] or 0,
            "billed": totals["billed"] or 0,
            "dead": totals["dead"] or 0,
            "clean": clean_claims(view),
            "denials": denials(view),
            "ar": receivables(view, now_ms),
            "flow": throughput(view, now_ms),
            "queues": queues(view),
            "audits": audits(view),
        }
