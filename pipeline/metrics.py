"""Prometheus metrics shared by every service. Labels are bounded: never an id."""

from __future__ import annotations

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
UP = Gauge("claimflow_up", "1 while the service is consuming", ["service"])


def serve(host: str, port: int) -> int:
    """Serve /metrics with prometheus-client's own HTTP server; returns the bound port."""
    server, _thread = start_http_server(port, addr=host)
    return int(server.server_port)
