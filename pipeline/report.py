"""`claimflow report`: revenue-cycle KPIs from what the topics say happened.

The numbers come from a ``Ledger`` (pipeline/tracker.py), the same pass over the topics the
demo summary uses, so the report and the summary cannot disagree. Printed as a table
(rich); with ``--out DIR`` also PNG charts (matplotlib, Agg backend) and one CSV in long
form (section, key, metric, value): KPIs, volumes and rates per time bucket, top edits,
top denial reasons (CARC group + code), payer mix.
"""

from __future__ import annotations

import csv
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.tracker import Ledger

VALIDATED = "encounters.validated.v1"
SUBMITTED = "claims.submitted.v1"
POSTED = "remittance.posted.v1"
PAID_STATUSES = ("paid", "partially_paid")
TOP = 10


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def kpis(ledger: Ledger) -> dict[str, Any]:
    """The headline numbers; rates are None when their denominator is zero."""
    s = ledger.summary()
    statuses = Counter(ledger.posted.values())
    validated = s["clean"] + s["rejected"]
    originals = len(ledger.claim_encounter)
    paid_first = sum(statuses[st] for st in PAID_STATUSES)
    result: dict[str, Any] = {
        "encounters_sent": s["encounters_sent"],
        "collected": s["collected"],
        "coded": s["coded"],
        "validated": validated,
        "clean": s["clean"],
        "rejected": s["rejected"],
        "clean_claim_rate": _ratio(s["clean"], validated),
        "claims_submitted": s["submitted"],
        "posted": s["posted"],
        "denied": statuses["denied"],
        "denial_rate": _ratio(statuses["denied"], s["posted"]),
        "first_pass_yield": _ratio(paid_first, originals),
        "charges": sum(ledger.charges.values(), Decimal(0)),
        "paid": sum(ledger.paid.values(), Decimal(0)),
        "dlq": s["dlq"],
        "lost": s["lost"],
        "coding_audits": len(ledger.audits),
        "coding_audits_waiting": len(ledger.audits_queued),
        "coding_audit_accuracy": _ratio(
            sum(a for _, a, _ in audit_accuracy(ledger, "source")),
            sum(n for _, _, n in audit_accuracy(ledger, "source")),
        ),
    }
    if not ledger.sent:  # read from the topics alone: what was sent is not known
        del result["encounters_sent"], result["lost"]
    return result


def audit_accuracy(ledger: Ledger, by: str) -> list[tuple[str, int, int]]:
    """Audited codes per code category (``by='category'``) or source: (key, agreed, audited).

    Every audit on coding.audits.v1 counts; the coding service's own metric and its
    failing-category rule use each category's most recent audits only."""
    agreed: Counter[str] = Counter()
    audited: Counter[str] = Counter()
    for codes in ledger.audits.values():
        for category, source, ok in codes:
            key = category if by == "category" else source
            audited[key] += 1
            agreed[key] += ok
    return [(k, agreed[k], audited[k]) for k in sorted(audited, key=lambda k: (-audited[k], k))]


def top_edits(ledger: Ledger, n: int = TOP) -> list[tuple[str, int]]:
    """Rule ids by how many encounters' latest verdict hit them."""
    return Counter(rule for rules in ledger.edits.values() for rule in set(rules)).most_common(n)


def top_denials(ledger: Ledger, n: int = TOP) -> list[tuple[str, int]]:
    """Denial reasons (CARC group-code) by how many denied claims carry them."""
    counts = Counter(
        f"{group}-{carc}"
        for reasons in ledger.denial_reasons.values()
        for group, carc in set(reasons)
    )
    return counts.most_common(n)


def payer_mix(ledger: Ledger) -> list[tuple[str, int, Decimal]]:
    """Per payer: claims submitted and their charges, most claims first."""
    counts = Counter(ledger.payers.values())
    charges: dict[str, Decimal] = {}
    for claim, payer in ledger.payers.items():
        charges[payer] = charges.get(payer, Decimal(0)) + ledger.charges.get(claim, Decimal(0))
    return [(p, n, charges[p]) for p, n in counts.most_common()]


def _bucket_s(stamps: list[int]) -> int:
    """A bucket width giving about 20 points over the run, rounded to a readable size."""
    span = (max(stamps) - min(stamps)) / 1000 if stamps else 0
    for width in (1, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400):
        if span / width <= 30:
            return width
    return 86400


def timeline(ledger: Ledger) -> list[dict[str, Any]]:
    """Per time bucket (record time): verdicts, clean, claims, postings, denials and rates.

    Needs a ledger built with ``keep_times``; empty otherwise."""
    validated = ledger.times.get(VALIDATED, {})
    submitted = ledger.times.get(SUBMITTED, {})
    posted = ledger.times.get(POSTED, {})
    stamps = [*validated.values(), *submitted.values(), *posted.values()]
    stamps = [t for t in stamps if t > 0]
    if not stamps:
        return []
    width = _bucket_s(stamps) * 1000
    rows: dict[int, Counter[str]] = {}

    def bucket(ts: int) -> Counter[str]:
        return rows.setdefault(ts - ts % width, Counter())

    for enc, ts in validated.items():
        row = bucket(ts)
        row["validated"] += 1
        if ledger.outcome.get(enc) in ("clean", "warnings"):
            row["clean"] += 1
    for _claim, ts in submitted.items():
        bucket(ts)["submitted"] += 1
    for claim, ts in posted.items():
        row = bucket(ts)
        row["posted"] += 1
        if ledger.posted.get(claim) == "denied":
            row["denied"] += 1
    out = []
    for start in sorted(rows):
        c = rows[start]
        out.append(
            {
                "start": datetime.fromtimestamp(start / 1000, UTC).isoformat(timespec="seconds"),
                "validated": c["validated"],
                "clean": c["clean"],
                "submitted": c["submitted"],
                "posted": c["posted"],
                "denied": c["denied"],
                "clean_claim_rate": _ratio(c["clean"], c["validated"]),
                "denial_rate": _ratio(c["denied"], c["posted"]),
            }
        )
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1%}"
    if isinstance(value, Decimal):
        return f"${value:,.2f}"
    return str(value)


def print_report(ledger: Ledger, console: Any = None) -> None:
    """The KPI table, top edits, top denial reasons and payer mix, in the terminal."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title="claimflow KPIs")
    table.add_column("KPI")
    table.add_column("value", justify="right")
    for name, value in kpis(ledger).items():
        table.add_row(name.replace("_", " "), _fmt(value))
    console.print(table)
    for title, rows in (
        ("top edits", top_edits(ledger)),
        ("top denial reasons", top_denials(ledger)),
    ):
        t = Table(title=title)
        t.add_column("code")
        t.add_column("count", justify="right")
        for code, n in rows:
            t.add_row(code, str(n))
        console.print(t)
    for by in ("category", "source"):
        t = Table(title=f"coding audit accuracy by {by}")
        for col in (by, "agreed", "audited", "accuracy"):
            t.add_column(col, justify="left" if col == by else "right")
        for key, agreed, audited in audit_accuracy(ledger, by):
            t.add_row(key, str(agreed), str(audited), _fmt(agreed / audited))
        console.print(t)
    t = Table(title="payer mix")
    for col in ("payer", "claims", "charges"):
        t.add_column(col, justify="left" if col == "payer" else "right")
    for payer, n, charges in payer_mix(ledger):
        t.add_row(payer, str(n), _fmt(charges))
    console.print(t)


def csv_rows(ledger: Ledger) -> list[tuple[str, str, str, str]]:
    """Every number of the report as (section, key, metric, value)."""
    rows: list[tuple[str, str, str, str]] = []
    for name, value in kpis(ledger).items():
        rows.append(("kpi", "", name, "" if value is None else str(value)))
    for point in timeline(ledger):
        for metric, value in point.items():
            if metric != "start":
                rows.append(
                    ("timeline", point["start"], metric, "" if value is None else str(value))
                )
    rows += [("top_edit", rule, "encounters", str(n)) for rule, n in top_edits(ledger)]
    rows += [("top_denial_reason", code, "claims", str(n)) for code, n in top_denials(ledger)]
    for payer, n, charges in payer_mix(ledger):
        rows += [("payer", payer, "claims", str(n)), ("payer", payer, "charges", str(charges))]
    for by in ("category", "source"):
        for key, agreed, audited in audit_accuracy(ledger, by):
            rows += [
                (f"audit_{by}", key, "agreed", str(agreed)),
                (f"audit_{by}", key, "audited", str(audited)),
            ]
    return rows


def write_report(ledger: Ledger, out: Path) -> list[Path]:
    """Write report.csv and the PNG charts to ``out``; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.csv"]
    with open(written[0], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("section", "key", "metric", "value"))
        writer.writerows(csv_rows(ledger))

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    points = timeline(ledger)
    times = [p["start"][11:] for p in points]
    fig, ax = plt.subplots(figsize=(8, 4))
    for metric in ("validated", "submitted", "posted", "denied"):
        ax.plot(times, [p[metric] for p in points], marker="o", label=metric)
    ax.set(title="Volumes over time (UTC)", ylabel="records")
    ax.legend()
    ax.tick_params(axis="x", rotation=45)
    save(fig, "volumes.png")

    fig, ax = plt.subplots(figsize=(8, 4))
    for metric in ("clean_claim_rate", "denial_rate"):
        ax.plot(
            times,
            [p[metric] if p[metric] is not None else float("nan") for p in points],
            marker="o",
            label=metric.replace("_", " "),
        )
    ax.set(title="Clean-claim and denial rates over time (UTC)", ylim=(0, 1.05))
    ax.legend()
    ax.tick_params(axis="x", rotation=45)
    save(fig, "rates.png")

    for name, title, rows in (
        ("top_edits.png", "Top edits (encounters)", top_edits(ledger)),
        ("top_denials.png", "Top denial reasons (claims)", top_denials(ledger)),
    ):
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.barh([r[0] for r in reversed(rows)], [r[1] for r in reversed(rows)])
        ax.set(title=title if rows else f"{title}: none")
        save(fig, name)

    mix = payer_mix(ledger)
    fig, ax = plt.subplots(figsize=(6, 6))
    if mix:
        ax.pie([n for _, n, _ in mix], labels=[p for p, _, _ in mix], autopct="%1.0f%%")
    ax.set(title="Payer mix (claims)")
    save(fig, "payer_mix.png")
    return written
