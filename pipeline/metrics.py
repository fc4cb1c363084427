"""Prometheus metrics shared by every service. Labels are bounded: never an id.

Label values come from fixed sets: service and topic names, validation outcomes, rule ids
(a rule pack is a fixed list), edit severities, claim types, X12 claim filing indicators
(plan type, two characters), remittance statuses, CARC group codes (CO, PR, OA, PI, CR) and
denial categories. Payer ids and CARCs are deliberately not labels: they can grow without
bound. This module holds what every stage has (records, dead letters, outcomes, latency,
lag); a stage declares its own domain metrics in its package (``services/<stage>/metrics.py``)
and registers them with the runner through ``Stage.prime_metrics`` and ``Stage.observe``,
which the runner calls for every record the stage produces. No stage name appears here.

Consumer lag is approximate: it is the partition's high watermark as the client last saw
it in a fetch response, minus the consumed position; the embedded Tansu broker's
watermarks read a few percent low, so there it under-reports.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from pydantic import BaseModel

RECORDS_IN = Counter("claimflow_records_in_total", "Records consumed", ["service", "topic"])
RECORDS_OUT = Counter("claimflow_records_out_total", "Records produced", ["service", "topic"])
DEAD_LETTERS = Counter(
    "claimflow_dead_letters_total", "Inputs sent to the dead-letter topic", ["service", "error"]
)
SERDE_FALLBACKS = Counter(
    "claimflow_serde_fallbacks_total",
    "Records the generated Avro reader or writer left to fastavro: still correct, at fastavro's "
    "cost (a contract the generated code stopped applying to shows here)",
    ["direction", "contract"],
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
UP = Gauge("claimflow_up", "1 while the service is consuming", ["service"])
RESTORE_SECONDS = Histogram(
    "claimflow_state_restore_seconds",
    "Time to restore one assigned partition's store from its changelog",
    ["service", "store"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
RESTORED = Counter(
    "claimflow_state_restored_records_total",
    "Changelog records applied to stores on partition assignment",
    ["service", "store"],
)
GC_SWEEP_SECONDS = Histogram(
    "claimflow_gc_sweep_seconds",
    "CPU time of one sweep: a full collection of the process's objects, frozen ones included "
    "(the stage handles nothing meanwhile)",
    ["service"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
GC_SWEPT = Counter(
    "claimflow_gc_swept_objects_total",
    "Objects in reference cycles that only a sweep freed (garbage that waited since the last one)",
    ["service"],
)
STORAGE_BLOCKED = Gauge(
    "claimflow_storage_blocked",
    "1 while the service takes no input because its state volume is full or cannot be written",
    ["service"],
)


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


def prime(service: str, inputs: Iterable[str] = (), outcomes: Iterable[str] = ()) -> None:
    """Create the fixed label sets at zero, so the first scrape sees 0 and rate() and
    increase() count the first events too (a series born at 5 loses those 5). A stage
    primes its own domain series in ``Stage.prime_metrics``."""
    for topic in inputs:
        RECORDS_IN.labels(service, topic)
    RECORDS_OUT.labels(service, f"dlq.{service}.v1")  # dead letters by service, from zero
    for hist in (LATENCY, PROCESSING, BATCH_SECONDS):
        hist.labels(service)
    for outcome in outcomes:
        OUTCOMES.labels(service, outcome)


def observe_many(histogram: Any, amount: float, count: int) -> None:
    """``count`` observations of ``amount`` on a histogram's child: the sum and the bucket
    counts ``count`` calls of ``observe`` leave (what prometheus-client's ``observe`` does,
    once; tests/unit/test_runner_metrics.py compares the two)."""
    buckets = getattr(histogram, "_buckets", None)
    bounds = getattr(histogram, "_upper_bounds", None)
    total = getattr(histogram, "_sum", None)
    if buckets is None or bounds is None or total is None:  # not the layout it knows
        for _ in range(count):
            histogram.observe(amount)
        return
    if count <= 0:
        return
    total.inc(amount * count)
    for i, bound in enumerate(bounds):
        if amount <= bound:
            buckets[i].inc(count)
            break


def _add_observed(total: Any, buckets: Any, added: float, counts: list[int]) -> None:
    """A batch's observations into a histogram's child: their sum, then one increment per
    bucket touched (``observe_each``, ``observe_record_ages``)."""
    total.inc(added)
    for i, count in enumerate(counts):
        if count:
            buckets[i].inc(count)


def observe_each(histogram: Any, amounts: Iterable[float]) -> None:
    """One observation of each amount on a histogram's child: the bucket counts and the sum
    that one ``observe`` per amount leaves (the sum up to float rounding), with one
    increment per bucket touched instead of two locked increments per amount."""
    buckets = getattr(histogram, "_buckets", None)
    bounds = getattr(histogram, "_upper_bounds", None)
    total = getattr(histogram, "_sum", None)
    if buckets is None or bounds is None or total is None:  # not the layout it knows
        for amount in amounts:
            histogram.observe(amount)
        return
    counts = [0] * len(bounds)
    added = 0.0
    seen = False
    for amount in amounts:
        seen = True
        added += amount
        if amount == amount:  # a NaN falls in no bucket, as with observe
            # The first bound at or above the amount, as observe's scan finds it (the
            # last bound is +Inf).
            counts[bisect_left(bounds, amount)] += 1
    if seen:
        _add_observed(total, buckets, added, counts)


def observe_record_ages(histogram: Any, now: float, stamps_ms: Iterable[float]) -> None:
    """One observation, for each record timestamp (epoch milliseconds), of the record's age
    at ``now`` (epoch seconds), never below zero: what ``observe_each`` leaves for
    ``[max(0.0, now - t / 1e3) for t in stamps_ms]`` (tests/unit/test_runner_metrics.py
    compares the two), in one pass, without the list and a ``max`` call per record."""
    buckets = getattr(histogram, "_buckets", None)
    bounds = getattr(histogram, "_upper_bounds", None)
    total = getattr(histogram, "_sum", None)
    if buckets is None or bounds is None or total is None:  # not the layout it knows
        observe_each(histogram, [max(0.0, now - t / 1e3) for t in stamps_ms])
        return
    counts = [0] * len(bounds)
    added = 0.0
    seen = False
    for stamp in stamps_ms:
        seen = True
        age = now - stamp / 1e3
        if not age > 0.0:  # as max(0.0, age), which gives 0.0 for a NaN too
            age = 0.0
        added += age
        counts[bisect_left(bounds, age)] += 1
    if seen:
        _add_observed(total, buckets, added, counts)


_EVENT_AGE: dict[tuple[str, str], Any] = {}


#: Where each kind of record carries its intake encounter: itself (a collected encounter,
#: which has a coverage), ``encounter`` (coded, review), ``coded.encounter`` (validated).
_ENCOUNTER_PATHS = (("coverage",), ("encounter",), ("coded", "encounter"))
#: How a class gives an attribute: a pydantic field (from the instance's ``__dict__``),
#: none (``getattr`` would give None, after pydantic raised and caught an AttributeError:
#: about 3 us), or ``getattr`` itself (class attributes, private ones, anything else).
_FIELD, _ABSENT, _GETATTR = 0, 1, 2
_HOW: dict[tuple[type, str], int] = {}


def _how(cls: type, name: str) -> int:
    if cls is type(None):
        return _ABSENT
    if not issubclass(cls, BaseModel) or cls.model_config.get("extra") == "allow":
        return _GETATTR
    if name in cls.model_fields:
        return _FIELD
    if any(name in vars(k) for k in cls.__mro__) or name in cls.__private_attributes__:
        return _GETATTR
    return _ABSENT


def _attr(value: Any, name: str) -> Any:
    """``getattr(value, name, None)``, without pydantic's exception for a name a model does
    not have."""
    key = (type(value), name)
    how = _HOW.get(key)
    if how is None:
        how = _HOW[key] = _how(key[0], name)
    if how == _FIELD:
        return value.__dict__.get(name)
    if how == _ABSENT:
        return None
    return getattr(value, name, None)


#: Class -> the steps ``encounter_of`` takes on its values: for each path of
#: ``_ENCOUNTER_PATHS`` the class may have, (first attribute, how the class gives it, the
#: rest of the path, whether the value itself is the encounter). Found once per class, so a
#: record's first step is taken without a lookup by (class, name) and a call; with the age
#: worked out in ``observe_age`` itself (no ``_received`` call, no ``getattr`` on None),
#: ``observe_age`` went from 1.2 to 0.85 us a record over the offline chain's 3,722 records
#: (tests/unit/test_event_age.py's corpus; the lookups before are its judge).
_PLANS: dict[type, tuple[tuple[str, int, tuple[str, ...], bool], ...]] = {}


def _plan(cls: type) -> tuple[tuple[str, int, tuple[str, ...], bool], ...]:
    return tuple(
        (path[0], how, path[1:], path == ("coverage",))
        for path in _ENCOUNTER_PATHS
        if (how := _how(cls, path[0])) != _ABSENT
    )


def encounter_of(value: Any) -> Any:
    """The intake encounter inside a collected / coded / validated / review record."""
    plan = _PLANS.get(type(value))
    if plan is None:  # the paths whose first step this class may have
        plan = _PLANS[type(value)] = _plan(type(value))
    for first, how, rest, whole in plan:
        node = value.__dict__.get(first) if how == _FIELD else getattr(value, first, None)
        for attr in rest:
            node = _attr(node, attr)
        if node is not None:
            return value if whole else node
    return None


def _received(enc: Any) -> float | None:
    received = getattr(enc, "received_at", None)
    return received.timestamp() if isinstance(received, datetime) else None


def event_time(value: Any) -> float | None:
    """Epoch seconds the encounter was received at intake, when the record carries it."""
    return _received(encounter_of(value))


#: Class -> how it gives ``encounter_id`` (``_how``), for ``observe_age``'s look at the
#: input of a record that does not carry its encounter.
_ID_HOW: dict[type, int] = {}


def observe_age(
    service: str,
    topic: str,
    value: Any,
    now: float,
    origin: dict[str, Any] | None = None,
    ages: dict[Any, list[float]] | None = None,
) -> Any:
    """The end-to-end age of one produced record; returns the record it came from (``value``
    itself when it carries the encounter, else its input by encounter id from ``origin``),
    which the stage's own ``observe`` gets for its domain metrics. With ``ages`` the age is
    noted there under its histogram's child, for ``observe_ages`` to observe with the rest
    of the batch's: 0.19 us a record instead of 0.78 for an ``observe`` (a lock and a scan
    of the buckets a call), on every record every stage produces."""
    source = value
    enc = encounter_of(value)
    if enc is None and origin is not None:
        cls = type(value)
        how = _ID_HOW.get(cls)
        if how is None:
            how = _ID_HOW[cls] = _how(cls, "encounter_id")
        if how == _FIELD:
            encounter_id = value.__dict__.get("encounter_id")
        elif how == _ABSENT:
            encounter_id = None
        else:
            encounter_id = getattr(value, "encounter_id", None)
        source = origin.get(encounter_id or "", value)
        if source is not value:
            enc = encounter_of(source)
    if enc is None:
        return source
    received = getattr(enc, "received_at", None)
    if isinstance(received, datetime):
        child = _EVENT_AGE.get((service, topic))
        if child is None:
            child = _EVENT_AGE[(service, topic)] = EVENT_AGE.labels(service, topic)
        age = now - received.timestamp()
        if not age > 0.0:  # as max(0.0, age)
            age = 0.0
        if ages is None:
            child.observe(age)
        else:
            noted = ages.get(child)
            if noted is None:
                noted = ages[child] = []
            noted.append(age)
    return source


def observe_ages(ages: dict[Any, list[float]]) -> None:
    """Observe the ages ``observe_age`` noted, each child's at once (``observe_each``)."""
    for child, amounts in ages.items():
        observe_each(child, amounts)


def dollars(amount: Decimal | float | None) -> float:
    """A money amount as a metric value."""
    return float(amount or 0)
