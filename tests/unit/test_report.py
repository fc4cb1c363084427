"""claimflow report: the KPI arithmetic over a ledger, and the files it writes."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace as NS

import pytest

from pipeline.report import (
    KPI_LABELS,
    carc_label,
    csv_rows,
    edit_notices,
    kpis,
    notice_label,
    payer_mix,
    payer_money,
    print_report,
    top_denials,
    top_edits,
    write_report,
)
from pipeline.tracker import Ledger

T0 = 1_790_000_000_000


def build() -> Ledger:
    """Four encounters: three clean (one with a warning), one rejected; three claims, one
    paid, one partially paid, one denied (CO-50)."""
    led = Ledger(keep_times=True)
    for i in range(4):
        led.sent.add(f"s{i}")
        cov = NS(plan_type="MB" if i % 2 else "CI")
        led.add(
            "encounters.collected.v1",
            f"e{i}",
            NS(event_id=f"c{i}", source_id=f"s{i}", encounter_id=f"e{i}", coverage=cov),
            T0,
        )
    verdicts = [("clean", []), ("warnings", ["W1"]), ("clean", []), ("rejected", ["R1", "W1"])]
    notice = NS(
        rule_id="CF-NCCI-000",
        category="config",
        message="NCCI procedure-to-procedure edits are OFF for this claim (no table loaded)",
    )
    for i, (outcome, rules) in enumerate(verdicts):
        led.add("encounters.coded.v1", f"e{i}", NS(event_id=f"k{i}", encounter_id=f"e{i}"), T0)
        edits = [NS(rule_id=r, category="general", message="m") for r in rules] + [notice]
        led.add(
            "encounters.validated.v1",
            f"e{i}",
            NS(event_id=f"v{i}", encounter_id=f"e{i}", outcome=outcome, edits=edits),
            T0 + 1000 * i,
        )
    for i, (payer, status, paid) in enumerate(
        [("P1", "paid", "80"), ("P1", "partially_paid", "30"), ("P2", "denied", "0")]
    ):
        led.add(
            "claims.submitted.v1",
            f"C{i}",
            NS(
                event_id=f"x{i}",
                claim_id=f"C{i}",
                encounter_id=f"e{i}",
                payer_id=payer,
                payer_name={"P1": "Aetna", "P2": "Cigna"}[payer],
                claim_type="professional",
                total_charge=Decimal("100.00"),
                x12="",
            ),
            T0 + 2000,
        )
        led.add(
            "remittance.posted.v1",
            f"C{i}",
            NS(event_id=f"p{i}", claim_id=f"C{i}", status=status, paid=Decimal(paid)),
            T0 + 40_000,
        )
    led.add(
        "remittance.denials.v1",
        "C2",
        NS(
            event_id="d2",
            claim_id="C2",
            category="coding",
            kind="denied",
            reasons=[
                NS(group="CO", carc="50", description="not deemed medically necessary"),
                NS(group="CO", carc="50", description="not deemed medically necessary"),
            ],
        ),
        T0 + 40_000,
    )
    return led


def test_kpis_follow_the_ledger() -> None:
    led = build()
    k = kpis(led)
    assert led.summary()["lost"] == 0
    assert (k["validated"], k["clean"], k["rejected"]) == (4, 3, 1)
    assert k["clean_claim_rate"] == pytest.approx(0.75)
    assert k["claims_submitted"] == 3 and k["posted"] == 3 and k["denied"] == 1
    assert k["denial_rate"] == pytest.approx(1 / 3)
    assert k["first_pass_yield"] == pytest.approx(2 / 3)
    assert k["charges"] == Decimal("300.00") and k["paid"] == Decimal("110")
    assert top_edits(led) == [("W1", 2), ("R1", 1)]  # the "NCCI is off" notice is no edit
    assert edit_notices(led) == [("CF-NCCI-000", 4)]
    assert notice_label(led, "CF-NCCI-000") == "NCCI procedure-to-procedure edits (CF-NCCI-000)"
    assert top_denials(led) == [("CO-50", 1)]  # one claim, however many CAS rows
    assert carc_label(led, "CO-50") == "CO-50 not deemed medically necessary"
    assert payer_mix(led) == [("P1", 2, Decimal("200.00")), ("P2", 1, Decimal("100.00"))]
    money = {m["name"]: m for m in payer_money(led)}
    assert money["Aetna"]["paid"] == Decimal("110") and money["Cigna"]["denied"] == 1
    assert k["paid_to_charges"] == pytest.approx(110 / 300)


def test_the_denial_counts_agree_and_say_what_they_count() -> None:
    """The KPI table, the demo summary and the denial chart count denials two ways."""
    led = build()
    k = kpis(led)
    assert k["denied"] == 1  # denied in full on an 835: the denial rate's numerator
    assert k["denial_queue"] == led.summary()["denials"] == 1  # the work queue
    assert k["denial_queue"] == k["denied"] + k["partially_denied"] + k["underpaid"]
    assert sum(n for _, n in top_denials(led)) >= k["denial_queue"]
    assert "in full" in KPI_LABELS["denied"] and "work queue" in KPI_LABELS["denial_queue"]


def test_empty_ledger_has_no_rates_rather_than_a_division_error() -> None:
    k = kpis(Ledger())
    assert k["clean_claim_rate"] is None and k["denial_rate"] is None


def test_write_report_writes_charts_and_a_csv_with_the_same_numbers(tmp_path: Path) -> None:
    led = build()
    files = write_report(led, tmp_path)
    names = {p.name for p in files}
    assert names == {
        "report.csv",
        "volumes.png",
        "rates.png",
        "top_edits.png",
        "top_denials.png",
        "payer_mix.png",
    }
    for p in files:
        assert p.stat().st_size > 0
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    kpi = {r["metric"]: r["value"] for r in rows if r["section"] == "kpi"}
    assert float(kpi["clean_claim_rate"]) == pytest.approx(0.75)
    assert kpi["claims_submitted"] == "3"
    timeline = [r for r in rows if r["section"] == "timeline" and r["metric"] == "validated"]
    assert sum(int(r["value"]) for r in timeline) == 4
    assert len(rows) == len(csv_rows(led))


def test_print_report_shows_the_kpis() -> None:
    from rich.console import Console

    console = Console(record=True, width=100)
    print_report(build(), console)
    text = console.export_text()
    assert "clean-claim rate" in text and "75.0%" in text
    assert "CO-50 not deemed medically necessary" in text and "Aetna" in text


def test_coding_audit_accuracy_by_category_and_source_from_the_audit_topic() -> None:
    from pipeline.report import audit_accuracy

    led = Ledger()

    def audit(enc: str, status: str, *codes: tuple[str, str, str | None]) -> None:
        items = [NS(category=c, source=s, outcome=o) for c, s, o in codes]
        led.add(
            "coding.audits.v1",
            enc,
            NS(event_id=f"{enc}-{status}", encounter_id=enc, status=status, codes=items),
        )

    audit("e1", "queued", ("E11", "mapped", None), ("N18", "mapped", None))
    audit("e2", "queued", ("I10", "ehr", None))
    audit(
        "e1",
        "audited",
        ("E11", "mapped", "agree"),
        ("N18", "mapped", "corrected"),
        ("N18", "missed", "corrected"),
    )
    assert audit_accuracy(led, "category") == [("N18", 0, 2), ("E11", 1, 1)]
    assert audit_accuracy(led, "source") == [("mapped", 1, 2), ("missed", 0, 1)]
    got = kpis(led)
    assert (got["coding_audits"], got["coding_audits_waiting"]) == (1, 1)  # e2 still queued
    assert got["coding_audit_accuracy"] == pytest.approx(1 / 3)
    assert ("audit_category", "N18", "audited", "2") in csv_rows(led)


def _tick_labels(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[list[str], list[float]]]:
    """The x tick labels and positions (seconds) of each chart write_report saves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure

    seen: dict[str, tuple[list[str], list[float]]] = {}
    savefig = Figure.savefig

    def record(fig: Figure, path: Path, *args: object, **kwargs: object) -> None:
        fig.canvas.draw()
        ax = fig.axes[0]
        stamps = [mdates.num2date(t).timestamp() for t in ax.get_xticks()]
        seen[Path(path).name] = ([t.get_text() for t in ax.get_xticklabels()], stamps)
        savefig(fig, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    return seen


@pytest.mark.parametrize(
    ("step_ms", "n", "width_s"),
    [(1000, 8, 1), (1000, 25, 1), (7_000, 40, 10), (3_600_000, 30, 3600), (86_400_000, 40, 86400)],
)
def test_time_charts_tick_on_bucket_starts_each_named_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step_ms: int, n: int, width_s: int
) -> None:
    """A tick between two bucket starts, labelled to the second, names a bucket it is not
    (a 7 s demo had two ticks both labelled 10:14:19, and the first bucket's point under
    the label of the second before it)."""
    seen = _tick_labels(monkeypatch)
    led = Ledger(keep_times=True)
    for i in range(n):
        led.add(
            "encounters.validated.v1",
            f"e{i}",
            NS(event_id=f"v{i}", encounter_id=f"e{i}", outcome="clean", edits=[]),
            T0 + step_ms * i + 300,
        )
    write_report(led, tmp_path)
    for chart in ("volumes.png", "rates.png"):
        labels, stamps = seen[chart]
        assert labels and len(set(labels)) == len(labels), (chart, labels)
        assert len(labels) <= 12, (chart, labels)
        for s in stamps:
            assert round(s, 3) % width_s == 0, (chart, s)
