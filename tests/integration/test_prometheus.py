"""A real Prometheus scrapes the running pipeline and evaluates the project's rules; every
recording rule must agree with what the topics say happened (the tracker's ledger).

Needs the ``prometheus`` binary (Debian's package; .ci/run installs it when it can)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.broker import free_port
from pipeline.kafka import ensure_topics, make_producer
from pipeline.serde import registry
from pipeline.settings import Settings
from pipeline.supervisor import Supervisor
from pipeline.tracker import Ledger, Tracker
from sim.cli import publish_encounters

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(
        shutil.which("prometheus") is None,
        reason="no `prometheus` binary on PATH (Debian: apt-get install prometheus)",
    ),
]

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules.yml"
SERVICES = ("intake", "coding", "validation", "claims", "payer-sim", "remittance")
N = 30


def query(base: str, expr: str) -> list[dict[str, Any]]:
    """Instant query through the HTTP API."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def scalar(base: str, expr: str) -> float:
    (row,) = query(base, expr)
    return float(row["value"][1])


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, ValueError, AssertionError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def stack(bootstrap: str, prefix: str, tmp_path: Path) -> Iterator[tuple[Settings, str]]:
    """The pipeline (embedded broker, separate processes) and Prometheus scraping it."""
    group = prefix.rstrip(".")
    settings = Settings(topic_prefix=prefix, group_prefix=group)
    ensure_topics(bootstrap, settings, registry())
    sup = Supervisor(
        bootstrap,
        tmp_path / "run",
        env={
            "CLAIMFLOW_TOPIC_PREFIX": prefix,
            "CLAIMFLOW_GROUP_PREFIX": group,
            "CLAIMFLOW_PAYER_SIM__FRONT_END_REJECTION_RATE": "0",
        },
        services=SERVICES,
    )
    sup.start()
    targets = [f"127.0.0.1:{c.metrics_port}" for c in sup.children.values()]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "claimflow", "static_configs": [{"targets": targets}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    prom = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        # Every service up and scraped with its counters still at zero before any input.
        wait_for(
            lambda: len(query(base, 'up{job="claimflow"} == 1')) == len(targets)
            and len(query(base, "claimflow_up == 1")) == len(targets),
            60,
            "Prometheus to scrape every service",
        )
        time.sleep(2)
        yield settings, base
    finally:
        prom.terminate()
        prom.wait(10)
        log.close()
        sup.stop()


def test_every_recording_rule_agrees_with_the_topics(
    bootstrap: str, stack: tuple[Settings, str], tmp_path: Path
) -> None:
    settings, base = stack
    tracker = Tracker(bootstrap, settings, keep_times=True)
    try:
        _check(bootstrap, settings, base, tracker, tmp_path)
    finally:
        tracker.close()


def _check(bootstrap: str, settings: Settings, base: str, tracker: Tracker, tmp_path: Path) -> None:
    producer = make_producer(bootstrap, settings)  # one poison input: a dead letter
    producer.produce(
        settings.topic("intake.raw.v1"),
        key=b"bad-json",
        value=b'{"encounter_id": "x", "patient": ',
        headers=[("content-type", b"application/json")],
    )
    assert producer.flush(10) == 0
    tracker.ledger.mark_sent("bad-json")
    sent = publish_encounters(
        bootstrap, settings, N, "mix", seed=5, on_sent=tracker.ledger.mark_sent
    )
    assert tracker.wait(lambda led: not led.lost(), timeout=180), tracker.ledger.lost()[:5]
    tracker.wait(lambda _: False, timeout=1)
    ledger: Ledger = tracker.ledger
    summary = ledger.summary()
    assert sent == N and summary["lost"] == 0 and summary["dlq"] == 1

    # Let the last increments be scraped (1s) and the rules evaluated (1s) a few times.
    def settled() -> bool:
        posted = scalar(base, "sum(claimflow_remittances_total)")
        return posted == summary["posted"]

    wait_for(settled, 30, "the last postings to be scraped")
    time.sleep(4)

    statuses = Counter(ledger.posted.values())
    validated = summary["clean"] + summary["rejected"]
    recorded = [
        r["record"]
        for g in yaml.safe_load(RULES.read_text())["groups"]
        for r in g["rules"]
        if "record" in r
    ]
    values: dict[str, list[dict[str, Any]]] = {name: query(base, name) for name in recorded}
    # Audit accuracy exists only once a coder has scored an audit: none does here.
    after_audits = {
        "claimflow:coding_audit_accuracy:by_category",
        "claimflow:coding_audit_accuracy:by_source",
    }
    assert after_audits <= set(recorded)
    empty = [name for name, rows in values.items() if not rows and name not in after_audits]
    assert not empty, f"recording rules without a value: {empty}"

    def one(name: str) -> float:
        (row,) = values[name]
        return float(row["value"][1])

    # Same-service ratios are exact: numerator and denominator share scrape timestamps.
    assert one("claimflow:clean_claim_rate:1h") == pytest.approx(summary["clean"] / validated)
    assert one("claimflow:denial_rate:1h") == pytest.approx(statuses["denied"] / summary["posted"])
    originals = sum(1 for c in ledger.claim_encounter if c)  # every demo claim is an original
    paid = statuses["paid"] + statuses["partially_paid"]
    assert one("claimflow:first_pass_yield:1h") == pytest.approx(paid / originals)

    throughput = {
        r["metric"]["service"]: float(r["value"][1]) for r in values["claimflow:throughput:rate5m"]
    }
    assert set(SERVICES) <= set(throughput) and all(v > 0 for v in throughput.values())
    by_type = {
        r["metric"]["claim_type"]: float(r["value"][1])
        for r in values["claimflow:claims_submitted:rate5m"]
    }
    assert sum(by_type.values()) > 0
    for name in ("claimflow:stage_latency_seconds:p99_5m", "claimflow:event_age_seconds:p99_5m"):
        p99 = {r["metric"]["service"]: float(r["value"][1]) for r in values[name]}
        assert all(0 < v < 120 for v in p99.values() if v == v), (name, p99)  # NaN: idle
    assert {"intake", "validation", "claims", "remittance"} <= {
        s
        for s, v in {
            r["metric"]["service"]: float(r["value"][1])
            for r in values["claimflow:stage_latency_seconds:p99_5m"]
        }.items()
        if v == v
    }
    dead = sum(float(r["value"][1]) for r in values["claimflow:dead_letters:increase1h"])
    assert dead == pytest.approx(summary["dlq"], abs=0.5)
    lag = [float(r["value"][1]) for r in values["claimflow:consumer_lag_records:sum"]]
    assert lag and all(v >= 0 for v in lag)

    # Counts straight from the counters (no extrapolation) match the topics exactly.
    edits = Counter(rule for rules in ledger.edits.values() for rule in rules)
    counted = {
        r["metric"]["rule"]: float(r["value"][1])
        for r in query(base, "sum by (rule) (claimflow_edits_total)")
    }
    assert {k: v for k, v in counted.items() if v} == {k: float(n) for k, n in edits.items()}
    charges = scalar(base, "sum(claimflow_claim_charges_dollars_total)")
    assert charges == pytest.approx(float(sum(ledger.charges.values())), abs=0.01)
    for name in (
        "claimflow:denial_reasons:increase1h",
        "claimflow:charges_dollars:increase1h",
        "claimflow:paid_dollars:increase1h",
        "claimflow:adjustment_dollars:increase1h",
        "claimflow:edits:increase1h",
    ):
        assert all(float(r["value"][1]) >= 0 for r in values[name]), name

    # The report over the same ledger writes its charts and CSV with the same numbers.
    from pipeline.report import kpis, write_report

    out = tmp_path / "report"
    files = write_report(ledger, out)
    assert {p.suffix for p in files} >= {".png", ".csv"}
    k = kpis(ledger)
    assert k["clean_claim_rate"] == pytest.approx(summary["clean"] / validated)
    assert k["claims_submitted"] == summary["submitted"]
