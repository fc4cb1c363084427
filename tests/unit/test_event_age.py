"""The end-to-end age of each produced record (``metrics.observe_age``) finds the intake
encounter a record carries, or its input's by encounter id, without asking a model for
attributes it does not have (pydantic raises and catches an AttributeError for each: about
3 us, four times for each of remittance's outputs).

Differential, the lookups by ``getattr`` they replaced kept below as the judge: every record
of the offline chain, both simulator mixes, remittance's outputs and every golden record,
with and without its input by encounter id, and values that are not claimflow's models.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from test_avro_read import GOLDEN, corpus

from pipeline import metrics
from pipeline.models import Model
from pipeline.serde import registry

REG = registry()
NOW = datetime(2027, 1, 1, tzinfo=UTC).timestamp()


# --- the lookups before, the judge ----------------------------------------------------------


def judge_encounter_of(value: Any) -> Any:
    for path in (("coverage",), ("encounter",), ("coded", "encounter")):
        node = value
        for attr in path:
            node = getattr(node, attr, None)
        if node is not None:
            return value if path == ("coverage",) else node
    return None


def judge_event_time(value: Any) -> float | None:
    received = getattr(judge_encounter_of(value), "received_at", None)
    return received.timestamp() if isinstance(received, datetime) else None


def judge_observe(value: Any, origin: dict[str, Any] | None) -> tuple[Any, float | None]:
    source = value
    if judge_encounter_of(value) is None and origin is not None:
        source = origin.get(getattr(value, "encounter_id", None) or "", value)
    return source, judge_event_time(source)


# ---------------------------------------------------------------------------------------------


def observed(topic: str, value: Any, origin: dict[str, Any] | None) -> tuple[Any, float | None]:
    """What ``observe_age`` returned, and the age it observed (None: none)."""
    child = metrics.EVENT_AGE.labels("test-event-age", topic)
    count = sum(b.get() for b in child._buckets)
    child._sum.set(0.0)
    source = metrics.observe_age("test-event-age", topic, value, NOW, origin)
    if sum(b.get() for b in child._buckets) == count:
        return source, None
    return source, NOW - child._sum.get()


class Loose(BaseModel):
    """A model that takes any attribute (not one of claimflow's: they forbid extras)."""

    model_config = ConfigDict(extra="allow")


class WithProperty(BaseModel):
    encounter_id: str = "E1"

    @property
    def encounter(self) -> Any:
        return self


class Plain:
    def __init__(self, **attrs: Any) -> None:
        self.__dict__.update(attrs)


def values(tmp: Path) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = list(corpus(tmp))
    for topic, spec in sorted(REG.topics.items()):
        source = spec.schema_of or topic
        name = "dead-letter" if source.startswith("dlq.") else source
        golden = json.loads((GOLDEN / f"{name}.json").read_text())
        out.append((topic, spec.model.model_validate(golden)))
    return out


def test_observe_age_finds_what_the_getattr_lookups_found(tmp_path: Path) -> None:
    found = values(tmp_path)
    # Inputs by encounter id, as the runner keeps them (the last of each id).
    origin: dict[str, Any] = {}
    for topic, value in found:
        if topic in ("encounters.validated.v1", "encounters.collected.v1"):
            origin[value.encounter_id] = value
    aged = sourced = 0
    for topic, value in found:
        assert metrics.encounter_of(value) is judge_encounter_of(value), topic
        assert metrics.event_time(value) == judge_event_time(value), topic
        for known in (origin, {}, None):
            source, started = judge_observe(value, known)
            got, at = observed(topic, value, known)
            assert got is source, topic
            assert (at is None) == (started is None), topic
            if started is not None:
                assert at == min(started, NOW), topic
                aged += 1
                sourced += source is not value
    assert aged > 1000 and sourced > 300


def test_values_other_than_claimflows_models_are_asked_as_before() -> None:
    enc = next(iter(corpus_encounters()))
    others: list[Any] = [
        None,
        {"encounter": enc},
        Plain(encounter=enc),
        Plain(coded=Plain(encounter=enc)),
        Plain(coverage=None, encounter=None),
        Loose(encounter=enc),
        Loose(coded=Loose(encounter=enc), encounter_id="E1"),
        WithProperty(),
        Plain(encounter_id=enc.encounter_id),
    ]
    origin = {enc.encounter_id: enc, "E1": enc}
    for value in others:
        assert metrics.encounter_of(value) is judge_encounter_of(value), value
        assert metrics.event_time(value) == judge_event_time(value), value
        assert observed("t", value, origin)[0] is judge_observe(value, origin)[0], value


def corpus_encounters() -> list[Model]:
    from bench.chain import offline_chain

    return offline_chain(2, seed=3)["encounters.collected.v1"]


def test_ages_noted_for_the_batch_observe_what_one_observe_each_leaves(tmp_path: Path) -> None:
    """The runner notes a batch's ages (``observe_age(..., ages)``) and observes them at once
    (``observe_ages``): the same bucket counts as one ``observe`` per record, and the same
    sum up to float rounding, with the same record returned as the source."""
    found = values(tmp_path)
    origin = {v.encounter_id: v for t, v in found if t == "encounters.validated.v1"}
    each = "test-event-age-each"
    batched = "test-event-age-batched"
    ages: dict[Any, list[float]] = {}
    topics = set()
    for i, (topic, value) in enumerate(found):
        source = judge_observe(value, origin)[0]
        now = (judge_event_time(source) or NOW) + (i % 40) * 0.23  # ages over the buckets
        one = metrics.observe_age(each, topic, value, now, origin)
        assert metrics.observe_age(batched, topic, value, now, origin, ages) is one, topic
        topics.add(topic)
    assert ages  # noted, not observed yet
    metrics.observe_ages(ages)
    for topic in topics:
        a, b = metrics.EVENT_AGE.labels(each, topic), metrics.EVENT_AGE.labels(batched, topic)
        assert [x.get() for x in a._buckets] == [x.get() for x in b._buckets], topic
        assert abs(a._sum.get() - b._sum.get()) <= 1e-6 * max(1.0, a._sum.get()), topic
        if topic == "encounters.validated.v1":  # the ages did spread over the buckets
            assert sum(1 for x in a._buckets if x.get()) > 3
