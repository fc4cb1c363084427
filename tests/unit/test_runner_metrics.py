"""The runner's per-record work. Its metrics, counted with fewer calls (label children
looked up once, records in and out added once per topic and batch, a batch's processing time
observed once for all its records, its records' ages observed at once), read the same
as before: the series ``/metrics`` shows are those of one ``labels(...).inc()`` and one
``observe`` per record (the dashboards and the alert rules under deploy/ read them). The
garbage collector is paused for a batch and back after it."""

from __future__ import annotations

import gc
import math
import subprocess
import sys
import weakref
from collections.abc import Iterable
from pathlib import Path

from confluent_kafka import Message
from factories import encounter
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline import metrics
from pipeline.models import Encounter
from pipeline.serde import registry
from pipeline.settings import Settings
from pipeline.stage import Incoming, Out, Runner, Stage, collector_paused

REG = registry()
TOPIC = "encounters.collected.v1"
BUCKETS = (0.001, 0.01, 0.1, 1, 10)


def samples(reg: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(reg).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_observing_many_at_once_reads_as_observing_each() -> None:
    one_by_one, at_once = CollectorRegistry(), CollectorRegistry()
    a = Histogram("h", "h", ["service"], buckets=BUCKETS, registry=one_by_one).labels("s")
    b = Histogram("h", "h", ["service"], buckets=BUCKETS, registry=at_once).labels("s")
    for amount, count in ((0.0005, 3), (0.01, 7), (0.5, 1), (42.0, 4), (0.2, 0)):
        for _ in range(count):
            a.observe(amount)
        metrics.observe_many(b, amount, count)
    left, right = samples(one_by_one), samples(at_once)
    assert left.keys() == right.keys()
    for key, value in left.items():
        assert abs(value - right[key]) < 1e-9, key


def test_observing_each_at_once_reads_as_observing_one_by_one() -> None:
    one_by_one, at_once = CollectorRegistry(), CollectorRegistry()
    a = Histogram("h", "h", ["service"], buckets=BUCKETS, registry=one_by_one).labels("s")
    b = Histogram("h", "h", ["service"], buckets=BUCKETS, registry=at_once).labels("s")
    # Bounds themselves, between them, below the first, past the last (+Inf), zero, a NaN
    # (in no bucket, as observe leaves it) and an empty batch.
    batches = [
        [0.001, 0.01, 0.1, 1.0, 10.0],
        [0.0, 0.0005, 0.0011, 0.05, 0.5, 5.0, 11.0, 1e9],
        [],
        [0.3] * 40 + [2.5, 0.0099999],
    ]
    for amounts in batches:
        for amount in amounts:
            a.observe(amount)
        metrics.observe_each(b, amounts)
    left, right = samples(one_by_one), samples(at_once)
    assert left.keys() == right.keys()
    for key, value in left.items():  # the sum up to float rounding (added in another order)
        assert math.isclose(value, right[key], rel_tol=1e-12, abs_tol=1e-12), key
    assert right[("h_count", (("service", "s"),))] == sum(len(b) for b in batches)
    nan_a = Histogram("n", "n", buckets=BUCKETS, registry=CollectorRegistry())
    nan_b = Histogram("n", "n", buckets=BUCKETS, registry=CollectorRegistry())
    nan_a.observe(float("nan"))
    metrics.observe_each(nan_b, [float("nan")])
    assert [x.get() for x in nan_a._buckets] == [x.get() for x in nan_b._buckets]


def test_record_ages_observed_in_one_pass_read_as_observing_each_age() -> None:
    """``observe_record_ages`` (the runner's ages of a batch's records, from their
    timestamps) leaves what ``observe_each`` of the ages clamped at zero leaves: its judge."""
    judged, fast = CollectorRegistry(), CollectorRegistry()
    a = Histogram("h", "h", ["service"], buckets=BUCKETS, registry=judged).labels("s")
    b = Histogram("h", "h", ["service"], buckets=BUCKETS, registry=fast).labels("s")
    now = 1_700_000_100.25
    batches: list[list[float]] = [
        # Exactly on bounds, between them, in the future (clock skew: 0), past +Inf, -1 (a
        # record without a timestamp), an empty batch.
        [1_700_000_100_249, 1_700_000_100_240, 1_700_000_100_150, 1_700_000_099_250],
        [1_700_000_200_000, 1_700_000_090_250, 0, -1, 1_700_000_100_250],
        [],
        [1_700_000_100_000 + i for i in range(300)],
    ]
    for stamps in batches:
        metrics.observe_each(a, [max(0.0, now - t / 1e3) for t in stamps])
        metrics.observe_record_ages(b, now, stamps)
    assert samples(judged) == samples(fast)


class Relay(Stage):
    name = "relay-metrics"
    inputs = (TOPIC,)

    def handle(self, msg: Incoming) -> Iterable[Out]:
        assert isinstance(msg.value, Encounter)
        return [Out("dlq.coding.v1", msg.key or "", _letter(msg))]


def _letter(msg: Incoming) -> object:
    from pipeline.stage import dead_letter

    return dead_letter("relay-metrics", msg, ValueError("relay")).value


def test_records_in_are_counted_per_record_and_topic(tmp_path: Path) -> None:
    runner = Runner(Relay(), Settings(topic_prefix="m.", state_dir=tmp_path), "localhost:1")
    raw = REG.encode(TOPIC, encounter())
    counter = metrics.RECORDS_IN.labels("relay-metrics", TOPIC)
    before = counter._value.get()
    batch = [
        Message(topic="m." + TOPIC, partition=0, offset=i, key=b"k", value=raw, timestamp=(1, 0))
        for i in range(5)
    ]
    outs, offsets = runner.process(batch)
    runner.process(batch[:2])
    assert counter._value.get() - before == 7
    assert len(outs) == 5 and offsets == {("m." + TOPIC, 0): 5}
    assert [o.value.source_offset for o in outs] == [0, 1, 2, 3, 4]  # type: ignore[union-attr]


def test_the_collector_is_paused_for_a_batch_and_back_after_it_even_on_failure() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    try:
        with collector_paused():
            raise RuntimeError("a batch that fails")
    except RuntimeError:
        pass
    assert gc.isenabled()
    gc.disable()  # paused by someone else: left as it was
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_cycles_made_in_a_paused_batch_are_collected_afterwards() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self

    with collector_paused():
        ref = weakref.ref(Node())
        assert ref() is not None  # a cycle: reference counting alone does not free it
    gc.collect()
    assert ref() is None


class _Acking:
    """A producer whose every record is acknowledged at once."""

    def produce(self, *_args: object, **kwargs: object) -> None:
        pass

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def flush(self, _timeout: float = 0) -> int:
        return 0


class Keeping(Relay):
    """The relay, noting a weak reference to every decoded input it is handed."""

    name = "relay-keeping"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[weakref.ref[object]] = []

    def handle(self, msg: Incoming) -> Iterable[Out]:
        self.seen.append(weakref.ref(msg.value))
        return super().handle(msg)


def test_a_batch_s_inputs_are_freed_by_reference_counting_once_produced(tmp_path: Path) -> None:
    """Nothing of the runner's keeps a produced batch's decoded inputs (or its outputs) alive
    until the collector is back: the collector would then walk all of them once more, and
    move them to an older generation to walk again, long after the batch."""
    stage = Keeping()
    runner = Runner(stage, Settings(topic_prefix="m.", state_dir=tmp_path), "localhost:1")
    raw = REG.encode(TOPIC, encounter())
    batch = [
        Message(topic="m." + TOPIC, partition=0, offset=i, key=f"k{i}".encode(), value=raw)
        for i in range(5)
    ]
    with collector_paused():
        outs, _offsets = runner.process(batch)
        runner._produce(_Acking(), outs)
        del outs
        assert stage.seen and all(ref() is None for ref in stage.seen)


def test_what_a_batch_leaves_alive_is_frozen_and_the_sweep_frees_the_cycles_it_kept() -> None:
    """In a fresh interpreter (freezing is per process): a batch's survivors (a cache it
    filled) are out of the collector's sight after it, so a collection no longer walks them;
    a reference cycle the batch dropped is not lost, the sweep frees it; what the sweep
    leaves alive is frozen again, and what was freed by reference counting stays freed."""
    script = """
import gc, weakref
from pipeline.stage import collector_paused, sweep

class Node:
    pass

cache = {}
with collector_paused(freeze=True):
    for i in range(20_000):
        cache[i] = [str(i)]  # kept by the stage after the batch
    dropped = Node(); dropped.self = dropped
    cycle = weakref.ref(dropped); del dropped
    freed = Node()
    gone = weakref.ref(freed); del freed
assert gc.isenabled()
assert gone() is None, "reference counting frees as before"
assert gc.get_freeze_count() > 20_000, gc.get_freeze_count()
assert len(gc.get_objects()) < 1_000, len(gc.get_objects())
gc.collect()
assert cycle() is not None, "a frozen cycle waits for the sweep"
assert sweep() >= 1
assert cycle() is None, "the sweep frees it"
assert gc.get_freeze_count() > 20_000 and len(gc.get_objects()) < 1_000
with collector_paused():  # without freeze: as before, nothing frozen
    more = [[i] for i in range(5_000)]
assert len(gc.get_objects()) >= 5_000
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_start_up_is_frozen_once_and_its_garbage_collected_first() -> None:
    """In a fresh interpreter (freezing is per process): collections are rare while start-up
    loads and back to the usual pace after it; what start-up keeps is out of the
    collector's sight afterwards, start-up's garbage cycles are gone, and a second stage
    starting in the same process freezes nothing more."""
    script = """
import gc, weakref
from pipeline.stage import collect_rarely_during_start_up, freeze_start_up

usual = gc.get_threshold()
collect_rarely_during_start_up()
assert gc.get_threshold()[0] > 10 * usual[0], gc.get_threshold()

class Node:
    pass

reference = [{"code": str(i), "parts": [i]} for i in range(50_000)]  # kept: like code sets
garbage = Node(); garbage.self = garbage  # a cycle start-up dropped
dropped = weakref.ref(garbage); del garbage
freeze_start_up()
assert dropped() is None, "start-up's garbage must be collected before freezing"
assert gc.get_threshold() == usual, "after start-up: the usual thresholds"
frozen = gc.get_freeze_count()
assert frozen > 100_000, frozen  # the list, its dicts and their lists
assert len(gc.get_objects()) < frozen // 10  # a full collection no longer walks them
later = [[i] for i in range(1000)]
freeze_start_up()
assert gc.get_freeze_count() == frozen, "a second start in one process freezes nothing more"
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
