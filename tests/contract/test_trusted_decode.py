"""Trusted decode: a record a stage wrote is built without validating it again, and the model
it gives equals the validated one, for every contract; records from the edges are validated.

The records are the simulator's encounters carried through the whole offline chain (intake,
coding, validation, claims, the payer simulator, remittance) and every golden record.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest
from pydantic import ValidationError

from pipeline.models import CoderDecision, Model
from pipeline.serde import MAGIC, model_builder, registry

REG = registry()
GOLDEN = Path(__file__).parent / "golden"
NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def test_the_chain_writes_every_record_of_the_main_contracts(
    chain: dict[str, list[Model]],
) -> None:
    for topic in (
        "encounters.collected.v1",
        "encounters.coded.v1",
        "encounters.validated.v1",
        "claims.submitted.v1",
        "remittance.posted.v1",
        "remittance.denials.v1",
    ):
        assert chain.get(topic), topic


def _both_ways(topic: str, value: Model) -> None:
    data = REG.encode(topic, value)
    validated = REG.decode(topic, data, validate=True)
    trusted = REG.decode(topic, data, validate=False)
    assert type(trusted) is type(validated)
    assert trusted == validated
    # Equal down to the types: an int where the validated model has a float would compare
    # equal but print differently.
    assert trusted.model_dump_json() == validated.model_dump_json()
    assert trusted.model_dump() == validated.model_dump()
    assert trusted == value


def test_trusted_and_validated_decode_agree_on_every_record_of_the_chain(
    chain: dict[str, list[Model]],
) -> None:
    for topic, values in chain.items():
        for value in values:
            _both_ways(topic, value)


@pytest.mark.parametrize("topic", sorted(REG.topics))
def test_trusted_and_validated_decode_agree_on_every_golden_record(topic: str) -> None:
    source = REG.topics[topic].schema_of or topic  # a repartition topic: its source's record
    name = "dead-letter" if source.startswith("dlq.") else source
    golden: dict[str, Any] = json.loads((GOLDEN / f"{name}.json").read_text())
    _both_ways(topic, REG.topics[topic].model.model_validate(golden))


def test_a_record_read_with_an_older_schema_builds_the_same_model() -> None:
    # Fields the older writer did not have take the reader's defaults on both paths.
    topic = "encounters.collected.v1"
    old = REG.versions[topic][0]
    golden = REG.topics[topic].model.model_validate(
        json.loads((GOLDEN / f"{topic}.json").read_text())
    )
    datum = REG.decode_dict(topic, REG.encode(topic, golden))
    buf = io.BytesIO()
    buf.write(MAGIC + old.fingerprint)
    fastavro.schemaless_writer(buf, old.parsed, datum)
    data = buf.getvalue()
    assert REG.decode(topic, data, validate=False) == REG.decode(topic, data, validate=True)


def test_only_records_a_stage_wrote_are_trusted() -> None:
    trusted = {t for t, spec in REG.topics.items() if spec.trusted}
    assert {"encounters.collected.v1", "encounters.validated.v1", "remittance.posted.v1"} <= trusted
    for edge in ("intake.raw.v1", "coding.decisions.v1", "coding.audit-results.v1"):
        assert edge not in trusted
    assert {"payer.inbound.v1", "workqueue.actions.v1"}.isdisjoint(trusted)
    stages = {"intake", "coding", "validation", "claims", "remittance"}
    assert {REG.topics[t].producer for t in trusted} == stages


def test_a_record_from_an_edge_is_still_validated() -> None:
    # Avro allows an empty coder id; the model does not, and a coder's decision is an edge.
    decision = CoderDecision.model_construct(
        event_id="e1",
        encounter_id="enc-1",
        coder_id="",
        action="confirm",
        diagnoses=[],
        pcs_procedures=[],
        note=None,
        decided_at=NOW,
    )
    data = REG.encode("coding.decisions.v1", decision)
    with pytest.raises(ValidationError, match="coder_id"):
        REG.decode("coding.decisions.v1", data)


def test_every_model_of_a_topic_has_a_trusted_build() -> None:
    for spec in REG.topics.values():
        assert callable(model_builder(spec.model))


def test_a_datum_without_a_defaulted_field_takes_the_default_on_both_paths() -> None:
    topic = "encounters.collected.v1"
    model = REG.topics[topic].model
    datum = model.model_validate(json.loads((GOLDEN / f"{topic}.json").read_text())).model_dump()
    del datum["notes"], datum["note_text"]
    assert model_builder(model)(datum) == model.model_validate(datum)
