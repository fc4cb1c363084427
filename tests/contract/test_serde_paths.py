"""The compiled dump (``serde.record_dumper``) writes the same bytes as ``model_dump()`` did,
for every record of the offline chain and every golden record of every topic.

The reference path is ``Registry.encode`` as it was before the compiled dump
(``bench.bench_serde.encode_by_pydantic``): the model dumped to a dict, fastavro finding
each union's branch by itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.bench_serde import encode_by_pydantic
from pipeline.models import Model
from pipeline.serde import registry

REG = registry()
GOLDEN = Path(__file__).parent / "golden"


def golden(topic: str) -> Model:
    source = REG.topics[topic].schema_of or topic
    name = "dead-letter" if source.startswith("dlq.") else source
    data: dict[str, Any] = json.loads((GOLDEN / f"{name}.json").read_text())
    return REG.topics[topic].model.model_validate(data)


def without_optionals(value: Model) -> Model:
    """``value`` with every optional nested record that is set taken away: the other branch
    of each ``["null", record]`` union."""
    unset = {
        name: None
        for name, info in type(value).model_fields.items()
        if isinstance(getattr(value, name), Model) and not info.is_required()
    }
    return value.model_copy(update=unset)


def test_the_compiled_dump_writes_the_same_bytes_for_every_record_of_the_chain(
    chain: dict[str, list[Model]],
) -> None:
    compared = 0
    for topic, values in chain.items():
        for value in values:
            assert REG.encode(topic, value) == encode_by_pydantic(topic, value), topic
            bare = without_optionals(value)
            assert REG.encode(topic, bare) == encode_by_pydantic(topic, bare), topic
            compared += 1
    assert compared > 200


@pytest.mark.parametrize("topic", sorted(REG.topics))
def test_the_compiled_dump_writes_the_same_bytes_for_every_golden_record(topic: str) -> None:
    value = golden(topic)
    data = REG.encode(topic, value)
    assert data == encode_by_pydantic(topic, value)
    assert REG.decode(topic, data) == value


def test_the_compiled_dump_names_the_branch_of_each_optional_record() -> None:
    # What makes it cheaper: fastavro is told each union's branch (tuple notation) instead
    # of validating the value against it; a value outside a union is given as it is.
    topic = "encounters.coded.v1"
    value = golden(topic)
    datum = REG.dumper(topic)(value)
    enc = datum["encounter"]
    assert value.encounter.rendering_provider is not None
    name, provider = enc["rendering_provider"]
    assert name == "org.claimflow.Provider"
    assert provider["npi"] == value.encounter.rendering_provider.npi
    assert value.encounter.type_of_bill is None and enc["type_of_bill"] is None
    address = value.encounter.patient.address
    assert address.line2 is None and enc["patient"]["address"]["line2"] is None
    assert value.encounter.billing_provider.tax_id is not None
    assert enc["billing_provider"]["tax_id"] == ("string", value.encounter.billing_provider.tax_id)
    assert enc["encounter_id"] == value.encounter.encounter_id  # not in a union: as it is
    assert set(datum) == set(value.model_dump())  # the same fields


def test_a_record_of_another_model_is_dumped_by_pydantic() -> None:
    # encode() takes the topic's own model; anything else (a dict) is validated first.
    topic = "encounters.collected.v1"
    value = golden(topic)
    assert REG.encode(topic, value.model_dump()) == encode_by_pydantic(topic, value)
