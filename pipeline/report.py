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
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.tracker import Ledger

MILESTONES = ("validated", "submitted", "posted")  # marked by the stages' tracker handlers
PAID_STATUSES = ("paid", "partially_paid")
TOP = 10


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


# What each KPI counts, said once: the table, the CSV and the charts use these words.
KPI_LABELS = {
    "encounters_sent": "encounters sent",
    "collected": "encounters collected",
    "coded": "encounters coded",
    "validated": "encounters validated",
    "clean": "clean (no error edit)",
    "rejected": "rejected by the scrubber",
    "clean_claim_rate": "clean-claim rate (clean / validated)",
    "claims_submitted": "claims submitted",
    "payer_rejected": "refused by the payer's front end (999/277CA)",
    "posted": "claims posted (835)",
    "denied": "claims denied in full",
    "denial_rate": "denial rate (denied in full / posted)",
    "denial_queue": "denial work queue (denied, partially denied, underpaid)",
    "partially_denied": "  of which partially denied",
    "underpaid": "  of which underpaid",
    "first_pass_yield": "first-pass yield (paid on first submission / submitted)",
    "charges": "charges submitted",
    "charges_posted": "charges of posted claims",
    "paid": "paid by payers",
    "paid_to_charges": "paid / charges of posted claims",
    "dlq": "dead letters",
    "lost": "unaccounted for",
    "coding_audits": "encounters audited (coding)",
    "coding_audits_waiting": "encounters waiting for a coding audit",
    "coding_audit_accuracy": "coding audit accuracy (codes agreed / audited)",
}
RATES = ("clean_claim_rate", "denial_rate", "first_pass_yield", "paid_to_charges")


def kpis(ledger: Ledger) -> dict[str, Any]:
    """The headline numbers; rates are None when their denominator is zero.

    Denials are counted two ways, and both are named: ``denied`` is claims an 835 denied in
    full (the denial rate's numerator); ``denial_queue`` is every claim remittance put in the
    denial work queue, which also holds partial denials and underpayments (the demo
    summary's ``denials``, and what the denial-reason chart counts)."""
    s = ledger.summary()
    statuses = Counter(ledger.posted.values())
    kinds = Counter(ledger.denial_kinds.values())
    validated = s["clean"] + s["rejected"]
    originals = len(ledger.claim_encounter)
    paid_first = sum(statuses[st] for st in PAID_STATUSES)
    charges_posted = sum((ledger.charges.get(c, Decimal(0)) for c in ledger.posted), Decimal(0))
    paid = sum(ledger.paid.values(), Decimal(0))
    result: dict[str, Any] = {
        "encounters_sent": s["encounters_sent"],
        "collected": s["collected"],
        "coded": s["coded"],
        "validated": validated,
        "clean": s["clean"],
        "rejected": s["rejected"],
        "clean_claim_rate": _ratio(s["clean"], validated),
        "claims_submitted": s["submitted"],
        "payer_rejected": s["payer_rejected"],
        "posted": s["posted"],
        "denied": statuses["denied"],
        "denial_rate": _ratio(statuses["denied"], s["posted"]),
        "denial_queue": len(ledger.denials),
        "partially_denied": kinds["partially_denied"],
        "underpaid": kinds["underpaid"],
        "first_pass_yield": _ratio(paid_first, originals),
        "charges": sum(ledger.charges.values(), Decimal(0)),
        "charges_posted": charges_posted,
        "paid": paid,
        "paid_to_charges": _ratio(float(paid), float(charges_posted)),
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

    Every scored coding audit counts; the coding service's own metric and its
    failing-category rule use each category's most recent audits only."""
    agreed: Counter[str] = Counter()
    audited: Counter[str] = Counter()
    for codes in ledger.audits.values():
        for category, source, ok in codes:
            key = category if by == "category" else source
            audited[key] += 1
            agreed[key] += ok
    return [(k, agreed[k], audited[k]) for k in sorted(audited, key=lambda k: (-audited[k], k))]


def is_notice(ledger: Ledger, rule: str) -> bool:
    """A configuration notice (an edit that is off, said on every verdict), not an edit."""
    return ledger.rule_categories.get(rule) == "config"


def top_edits(ledger: Ledger, n: int = TOP) -> list[tuple[str, int]]:
    """Rule ids by how many encounters' latest verdict hit them (notices left out)."""
    counts = Counter(rule for rules in ledger.edits.values() for rule in set(rules))
    return [(r, c) for r, c in counts.most_common() if not is_notice(ledger, r)][:n]


def edit_notices(ledger: Ledger) -> list[tuple[str, int]]:
    """The configuration notices (``CF-NCCI-000``: NCCI off …) and how many verdicts say so."""
    counts = Counter(rule for rules in ledger.edits.values() for rule in set(rules))
    return [(r, c) for r, c in counts.most_common() if is_notice(ledger, r)]


def notice_label(ledger: Ledger, rule: str) -> str:
    """``NCCI procedure-to-procedure edits``: what a configuration notice says is off."""
    text = ledger.notice_text.get(rule, "")
    for cut in (" are OFF", " is OFF", " are off", " is off"):
        if cut in text:
            return f"{text.split(cut)[0]} ({rule})"
    return rule


def top_denials(ledger: Ledger, n: int = TOP) -> list[tuple[str, int]]:
    """Denial reasons (CARC group-code) by how many claims in the denial queue carry them."""
    counts = Counter(
        f"{group}-{carc}"
        for reasons in ledger.denial_reasons.values()
        for group, carc in set(reasons)
    )
    return counts.most_common(n)


def carc_label(ledger: Ledger, code: str, width: int = 60) -> str:
    """``CO-50 non-covered: not medically necessary…``: the code with its description."""
    text = ledger.carc_text.get(code.partition("-")[2])
    return f"{code} {_short(text, width)}" if text else code


def payer_mix(ledger: Ledger) -> list[tuple[str, int, Decimal]]:
    """Per payer: claims submitted and their charges, most claims first."""
    counts = Counter(ledger.payers.values())
    charges: dict[str, Decimal] = {}
    for claim, payer in ledger.payers.items():
        charges[payer] = charges.get(payer, Decimal(0)) + ledger.charges.get(claim, Decimal(0))
    return [(p, n, charges[p]) for p, n in counts.most_common()]


def payer_money(ledger: Ledger) -> list[dict[str, Any]]:
    """Per payer, by name: claims, charges submitted, charges posted, paid, claims denied."""
    rows: dict[str, dict[str, Any]] = {}
    for claim, payer in ledger.payers.items():
        row = rows.setdefault(
            payer,
            {
                "payer": payer,
                "name": ledger.payer_names.get(payer, payer),
                "claims": 0,
                "charges": Decimal(0),
                "charges_posted": Decimal(0),
                "paid": Decimal(0),
                "posted": 0,
                "denied": 0,
            },
        )
        charge = ledger.charges.get(claim, Decimal(0))
        row["claims"] += 1
        row["charges"] += charge
        if claim in ledger.posted:
            row["posted"] += 1
            row["charges_posted"] += charge
            row["paid"] += ledger.paid.get(claim, Decimal(0))
            row["denied"] += ledger.posted[claim] == "denied"
    return sorted(rows.values(), key=lambda r: (-r["charges"], r["payer"]))


def _short(text: str | None, width: int) -> str:
    """The first sentence of ``text``, at most ``width`` characters."""
    if not text:
        return ""
    first = text.split(". ")[0].rstrip(".")
    return first if len(first) <= width else first[: width - 1].rstrip() + "…"


def rule_label(rule: str, titles: dict[str, str] | None, width: int = 55) -> str:
    title = (titles or {}).get(rule)
    return f"{rule} {_short(title, width)}" if title else rule


def _bucket_s(stamps: list[int]) -> int:
    """A bucket width giving about 20 points over the run, rounded to a readable size."""
    span = (max(stamps) - min(stamps)) / 1000 if stamps else 0
    for width in (1, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400):
        if span / width <= 30:
            return width
    return 86400


def bucket_name(width_s: int) -> str:
    """``10 s``, ``5 min``, ``1 h``, ``1 day``: a bucket width as a person says it."""
    if width_s % 86400 == 0:
        return f"{width_s // 86400} day"
    if width_s % 3600 == 0:
        return f"{width_s // 3600} h"
    if width_s % 60 == 0:
        return f"{width_s // 60} min"
    return f"{width_s} s"


def timeline_width(ledger: Ledger) -> int:
    """The bucket width (seconds) ``timeline`` uses for this ledger."""
    return _bucket_s(_stamps(ledger))


def _stamps(ledger: Ledger) -> list[int]:
    stamps = [t for m in MILESTONES for t in ledger.milestone_times(m).values()]
    return [t for t in stamps if t > 0]


def timeline(ledger: Ledger) -> list[dict[str, Any]]:
    """Per time bucket (record time): verdicts, clean, claims, postings, denials and rates.

    Needs a ledger built with ``keep_times``; empty otherwise."""
    validated, submitted, posted = (ledger.milestone_times(m) for m in MILESTONES)
    stamps = _stamps(ledger)
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


def bucket_ticks(times: list[datetime], width_s: int, most: int = 12) -> list[datetime]:
    """Where a time chart's ticks go: on bucket starts, every k-th bucket from the first to
    the last so there are at most ``most``. (Matplotlib's own date ticks fall between
    bucket starts, and a label to the second or minute then names the wrong bucket.)"""
    if not times:
        return []
    buckets = int((times[-1] - times[0]).total_seconds()) // width_s + 1
    step = -(-buckets // most)
    return [times[0] + timedelta(seconds=width_s * j) for j in range(0, buckets, step)]


def tick_format(times: list[datetime], width_s: int) -> str:
    """How a tick names its bucket: to the second, minute or day, with the date when the
    chart spans more than one day."""
    if width_s >= 86400:
        return "%Y-%m-%d"
    fmt = "%H:%M" if width_s >= 60 else "%H:%M:%S"
    if times and times[0].date() != times[-1].date():
        fmt = "%m-%d " + fmt
    return fmt


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1%}"
    if isinstance(value, Decimal):
        return f"${value:,.2f}"
    return str(value)


def print_report(
    ledger: Ledger, console: Any = None, rule_titles: dict[str, str] | None = None
) -> None:
    """The KPI table, top edits, top denial reasons and payers, in the terminal."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title="claimflow KPIs")
    table.add_column("KPI")
    table.add_column("value", justify="right")
    for name, value in kpis(ledger).items():
        table.add_row(KPI_LABELS.get(name, name.replace("_", " ")), _fmt(value))
    console.print(table)
    for title, rows in (
        ("top edits (encounters)", [(rule_label(r, rule_titles), n) for r, n in top_edits(ledger)]),
        (
            "denial reasons (claims in the denial work queue)",
            [(carc_label(ledger, c), n) for c, n in top_denials(ledger)],
        ),
        (
            "not checked: reference files not loaded (verdicts saying so)",
            [(notice_label(ledger, r), n) for r, n in edit_notices(ledger)],
        ),
    ):
        if not rows:
            continue
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
    t = Table(title="payers")
    for col in ("payer", "claims", "charges", "posted", "paid", "denied"):
        t.add_column(col, justify="left" if col == "payer" else "right")
    for m in payer_money(ledger):
        t.add_row(
            f"{m['name']} ({m['payer']})",
            str(m["claims"]),
            _fmt(m["charges"]),
            str(m["posted"]),
            _fmt(m["paid"]),
            str(m["denied"]),
        )
    console.print(t)


def csv_rows(
    ledger: Ledger, rule_titles: dict[str, str] | None = None
) -> list[tuple[str, str, str, str]]:
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
    rows += [("edit_notice", rule, "verdicts", str(n)) for rule, n in edit_notices(ledger)]
    rows += [("top_denial_reason", code, "claims", str(n)) for code, n in top_denials(ledger)]
    for m in payer_money(ledger):
        for metric in ("claims", "charges", "charges_posted", "paid", "posted", "denied"):
            rows.append(("payer", m["payer"], metric, str(m[metric])))
    for by in ("category", "source"):
        for key, agreed, audited in audit_accuracy(ledger, by):
            rows += [
                (f"audit_{by}", key, "agreed", str(agreed)),
                (f"audit_{by}", key, "audited", str(audited)),
            ]
    return rows


def write_report(
    ledger: Ledger, out: Path, rule_titles: dict[str, str] | None = None
) -> list[Path]:
    """Write report.csv and the PNG charts to ``out``; returns the paths written.

    ``rule_titles`` (rule id -> what the rule checks) labels the edit chart; the scrubber
    owns the rules, so the caller passes them (plumbing imports no stage)."""
    import matplotlib

    matplotlib.use("Agg")
    # Dollar amounts and code descriptions are text, not TeX: "$477" must not start math.
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, PercentFormatter

    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.csv"]
    with open(written[0], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("section", "key", "metric", "value"))
        writer.writerows(csv_rows(ledger, rule_titles))

    def save(fig: Any, name: str, note: str | None = None) -> None:
        if note:
            fig.text(0.01, 0.01, note, fontsize=8, color="dimgray", va="bottom", wrap=True)
            fig.tight_layout(rect=(0, 0.08 + 0.03 * note.count("\n"), 1, 1))
        else:
            fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    def annotate(ax: Any, bars: Any, labels: list[str]) -> None:
        for bar, label in zip(bars, labels, strict=True):
            ax.text(
                bar.get_width(),
                bar.get_y() + bar.get_height() / 2,
                f" {label}",
                va="center",
                fontsize=8,
            )
        ax.margins(x=0.25)

    k = kpis(ledger)
    points = timeline(ledger)
    width_s = timeline_width(ledger) if points else 0
    times = [datetime.fromisoformat(p["start"]) for p in points]
    day = times[0].strftime("%Y-%m-%d") if times else ""
    if times and times[-1].date() != times[0].date():
        day += f" to {times[-1]:%Y-%m-%d}"
    per = f"per {bucket_name(width_s)}" if points else ""
    time_fmt = mdates.DateFormatter(tick_format(times, width_s), tz=UTC)
    ticks = mdates.date2num(bucket_ticks(times, width_s))
    bar_w = width_s / 86400 / 5  # a fifth of a bucket each, in days (matplotlib's unit)

    # Volumes: how much moved through each step, bucket by bucket.
    fig, ax = plt.subplots(figsize=(9, 4.5))
    series = ("validated", "submitted", "posted", "denied")
    for i, metric in enumerate(series):
        offsets = [mdates.date2num(t) + (i + 0.5) * bar_w for t in times]
        ax.bar(offsets, [p[metric] for p in points], width=bar_w, label=metric, align="edge")
    fig.suptitle(f"Records {per} bucket, {day} (UTC)")
    ax.set(
        xlabel=f"bucket start, UTC ({bucket_name(width_s)} buckets)" if points else "",
        ylabel="records",
    )
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(time_fmt)
    ax.legend(ncols=4, fontsize=8)
    fig.autofmt_xdate()
    save(fig, "volumes.png", "denied = claims an 835 denied in full, by the time it was posted")

    # Rates, in %, per bucket, with the whole run's rate beside them.
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for metric, overall in (
        ("clean_claim_rate", "clean_claim_rate"),
        ("denial_rate", "denial_rate"),
    ):
        values = [p[metric] * 100 if p[metric] is not None else float("nan") for p in points]
        line = ax.plot(mdates.date2num(times), values, marker="o", label=KPI_LABELS[metric])[0]
        if k[overall] is not None:
            ax.axhline(
                k[overall] * 100,
                ls="--",
                lw=1,
                color=line.get_color(),
                label=f"whole run: {k[overall]:.1%}",
            )
    fig.suptitle(f"Clean-claim and denial rates {per} bucket, {day} (UTC)")
    ax.set(
        ylim=(0, 105),
        ylabel="%",
        xlabel=f"bucket start, UTC ({bucket_name(width_s)} buckets)" if points else "",
    )
    ax.yaxis.set_major_formatter(PercentFormatter(100))
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(time_fmt)
    ax.legend(fontsize=8, loc="center right")
    fig.autofmt_xdate()
    save(fig, "rates.png")

    # Top edits, named, with the share of validated encounters; notices go in a note.
    rows = top_edits(ledger)
    validated = k["validated"] or 0
    fig, ax = plt.subplots(figsize=(10, 0.45 * max(len(rows), 3) + 1.8))
    if rows:
        bars = ax.barh(
            [rule_label(r, rule_titles) for r, _ in reversed(rows)], [n for _, n in reversed(rows)]
        )
        annotate(
            ax,
            bars,
            [f"{n} ({n / validated:.1%})" if validated else str(n) for _, n in reversed(rows)],
        )
    else:
        ax.text(0.5, 0.5, "no edit hit any encounter", ha="center", transform=ax.transAxes)
        ax.set_yticks([])
        ax.set_xticks([])
    fig.suptitle(f"Top scrubber edits: encounters hit, of {validated} validated (latest verdict)")
    ax.set(xlabel="encounters")
    notices = edit_notices(ledger)
    note = (
        "Not checked, reference files not loaded (CLAIMFLOW_REFDATA_DIR): "
        + "; ".join(f"{notice_label(ledger, r)} ({n} of {validated} verdicts)" for r, n in notices)
        if notices
        else None
    )
    save(fig, "top_edits.png", note)

    # Denial reasons, with what each CARC means, on the claims of the denial work queue.
    rows = top_denials(ledger)
    queue = k["denial_queue"]
    fig, ax = plt.subplots(figsize=(10, 0.45 * max(len(rows), 3) + 1.8))
    if rows:
        bars = ax.barh(
            [carc_label(ledger, c) for c, _ in reversed(rows)], [n for _, n in reversed(rows)]
        )
        annotate(ax, bars, [f"{n} ({n / queue:.0%})" for _, n in reversed(rows)])
    else:
        ax.text(0.5, 0.5, "no denials", ha="center", transform=ax.transAxes)
        ax.set_yticks([])
        ax.set_xticks([])
    fig.suptitle(f"Denial reasons (CARC) on the {queue} claims in the denial work queue")
    ax.set(
        xlabel="claims (a claim with several reasons counts once under each)",
    )
    save(
        fig,
        "top_denials.png",
        f"work queue: {k['denied']} denied in full, {k['partially_denied']} partially denied, "
        f"{k['underpaid']} underpaid; denial rate {_fmt(k['denial_rate'])} "
        f"= denied in full / {k['posted']} posted",
    )

    # Payers, by name: what their posted claims charged, what they paid, how often they denied.
    money = payer_money(ledger)
    fig, ax = plt.subplots(figsize=(10, 0.55 * max(len(money), 3) + 1.8))
    ys = list(range(len(money)))
    h = 0.38
    charged = ax.barh(
        [y - h / 2 for y in ys],
        [float(m["charges_posted"]) for m in money],
        height=h,
        label="charges of posted claims",
        color="tab:blue",
    )
    paid = ax.barh(
        [y + h / 2 for y in ys],
        [float(m["paid"]) for m in money],
        height=h,
        label="paid",
        color="tab:green",
    )
    annotate(ax, charged, [f"${m['charges_posted']:,.0f}" for m in money])
    annotate(
        ax,
        paid,
        [
            f"${m['paid']:,.0f} ({_fmt(_ratio(float(m['paid']), float(m['charges_posted'])))})"
            for m in money
        ],
    )
    ax.set_yticks(
        ys,
        [
            f"{m['name']}\n{m['claims']} claims, {m['denied']} denied in full "
            f"({_fmt(_ratio(m['denied'], m['posted']))})"
            for m in money
        ],
        fontsize=9,
    )
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"${v:,.0f}"))
    fig.suptitle(
        f"Charges and payments by payer: {_fmt(k['paid'])} paid on "
        f"{_fmt(k['charges_posted'])} of posted charges ({_fmt(k['paid_to_charges'])})"
    )
    ax.legend(fontsize=8, loc="lower right")
    unposted = k["charges"] - k["charges_posted"]
    save(
        fig,
        "payer_mix.png",
        f"{_fmt(unposted)} of charges not yet posted" if unposted else None,
    )
    return written
