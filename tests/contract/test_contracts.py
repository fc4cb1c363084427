"""Contracts: every topic has a schema and a model in step with it, golden payloads
round-trip through single-object encoding, and every newer schema reads every older."""

from __future__ import annotations

import io
import itertools
import json
import shutil
import struct
from pathlib import Path
from typing import Any, get_args, get_origin

import avro.schema
import fastavro
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from fastavro.schema import to_parsing_canonical_form
from pydantic import BaseModel

from pipeline import models
from pipeline.errors import DecodeError
from pipeline.serde import MAGIC, SCHEMAS_DIR, Registry, crc64_avro, registry

GOLDEN = Path(__file__).parent / "golden"
REG = registry()


def golden(topic: str) -> dict[str, Any]:
    topic = REG.topics[topic].schema_of or topic
    name = "dead-letter" if topic.startswith("dlq.") else topic
    return json.loads((GOLDEN / f"{name}.json").read_text())


def test_every_topic_has_a_schema_folder_and_nothing_else_is_there() -> None:
    folders = {p.name for p in SCHEMAS_DIR.iterdir() if p.is_dir()}
    assert folders == {t for t, spec in REG.topics.items() if spec.schema_of is None}


def test_a_repartition_topic_reads_the_schemas_of_the_topic_it_re_keys() -> None:
    for topic, spec in REG.topics.items():
        if spec.schema_of is not None:
            assert REG.versions[topic] == REG.versions[spec.schema_of]
            assert spec.model is REG.topics[spec.schema_of].model


@pytest.mark.parametrize("topic", sorted(REG.topics))
def test_golden_record_round_trips(topic: str) -> None:
    model = REG.topics[topic].model
    value = model.model_validate(golden(topic))
    data = REG.encode(topic, value)
    assert data[:2] == MAGIC
    assert data[2:10] == REG.latest(topic).fingerprint
    assert REG.decode(topic, data) == value


def test_fingerprint_is_crc64_avro_of_the_canonical_form_little_endian() -> None:
    # Reference value from the Avro specification's test vectors: "int" -> 0x7275d51a3f395c8f.
    assert crc64_avro(b'"int"') == 0x7275D51A3F395C8F
    sv = REG.latest("claims.submitted.v1")
    canonical = to_parsing_canonical_form(sv.schema).encode()
    assert sv.fingerprint == struct.pack("<Q", crc64_avro(canonical))


@pytest.mark.parametrize(
    "data", [b"", b"{}", MAGIC + b"\x00" * 8 + b"\x02", b"\xc3\x01\x01\x02"], ids=repr
)
def test_undecodable_bytes_raise_a_decode_error_naming_the_value(data: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        REG.decode("encounters.collected.v1", data)
    assert info.value.field == "value"


def test_truncated_datum_is_a_decode_error() -> None:
    data = REG.encode("claims.submitted.v1", golden("claims.submitted.v1"))
    with pytest.raises(DecodeError, match="corrupt"):
        REG.decode("claims.submitted.v1", data[:40])


def _compatible(reader: dict[str, Any], writer: dict[str, Any]) -> bool:
    result = ReaderWriterCompatibilityChecker().get_compatibility(
        avro.schema.parse(json.dumps(reader)), avro.schema.parse(json.dumps(writer))
    )
    return result.compatibility is SchemaCompatibilityType.compatible


@pytest.mark.parametrize("topic", sorted(REG.topics))
def test_every_newer_version_reads_every_older(topic: str) -> None:
    versions = REG.versions[topic]
    for older, newer in itertools.combinations(versions, 2):
        assert _compatible(newer.schema, older.schema), f"{topic} v{newer.version} v{older.version}"
    assert _compatible(versions[-1].schema, versions[-1].schema)


def test_compatibility_check_catches_a_breaking_change() -> None:
    v1 = REG.latest("payer.inbound.v1").schema
    broken = json.loads(json.dumps(v1))
    broken["fields"].append({"name": "batch", "type": "string"})  # no default: breaks old data
    assert not _compatible(broken, v1)
    fine = json.loads(json.dumps(v1))
    fine["fields"].append({"name": "batch", "type": ["null", "string"], "default": None})
    assert _compatible(fine, v1)


def test_a_reader_on_v2_decodes_records_written_with_v1(tmp_path: Path) -> None:
    shutil.copytree(SCHEMAS_DIR, tmp_path / "schemas")
    v1 = json.loads((SCHEMAS_DIR / "payer.inbound.v1" / "v1.avsc").read_text())
    v1["fields"].append({"name": "batch", "type": ["null", "string"], "default": None})
    (tmp_path / "schemas" / "payer.inbound.v1" / "v2.avsc").write_text(json.dumps(v1))
    new = Registry(tmp_path / "schemas")
    old_bytes = REG.encode("payer.inbound.v1", golden("payer.inbound.v1"))
    decoded = new.decode_dict("payer.inbound.v1", old_bytes)
    assert decoded["batch"] is None
    assert decoded["file_id"] == "F0001"


def _schema_fields(schema: Any, named: dict[str, Any]) -> Any:
    """A comparable shape of an Avro type: records to {field: shape}, nullables marked."""
    if isinstance(schema, str):
        return _schema_fields(named[schema], named) if schema in named else schema
    if isinstance(schema, list):
        inner = [s for s in schema if s != "null"]
        return ("optional", _schema_fields(inner[0], named))
    kind = schema["type"]
    if kind == "record":
        named[schema["name"]] = schema
        named[f"org.claimflow.{schema['name']}"] = schema
        return {f["name"]: _schema_fields(f["type"], named) for f in schema["fields"]}
    if kind == "array":
        return ("array", _schema_fields(schema["items"], named))
    if kind == "map":
        return ("map", _schema_fields(schema["values"], named))
    if kind == "enum":
        named[schema["name"]] = schema
        return ("enum", tuple(schema["symbols"]))
    return schema.get("logicalType", kind)


def _model_fields(annotation: Any) -> Any:
    origin = get_origin(annotation)
    args = [a for a in get_args(annotation) if a is not type(None)]
    if origin is None and isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {n: _model_fields(f.annotation) for n, f in annotation.model_fields.items()}
    if type(None) in get_args(annotation):
        return ("optional", _model_fields(args[0]))
    if origin is list:
        return ("array", _model_fields(args[0]))
    if origin is dict:
        return ("map", _model_fields(args[1]))
    return "scalar"


def _shape_only(shape: Any) -> Any:
    if isinstance(shape, dict):
        return {k: _shape_only(v) for k, v in shape.items()}
    if isinstance(shape, tuple) and shape[0] in ("optional", "array", "map"):
        return (shape[0], _shape_only(shape[1]))
    return "scalar"


@pytest.mark.parametrize("topic", sorted(REG.topics))
def test_pydantic_model_mirrors_the_latest_schema(topic: str) -> None:
    schema_shape = _shape_only(_schema_fields(REG.latest(topic).schema, {}))
    model_shape = _model_fields(REG.topics[topic].model)
    assert model_shape == schema_shape


def test_models_registry_covers_topics() -> None:
    assert {spec.model for spec in REG.topics.values()} <= set(models.MODELS.values())


def _without_namespace(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _without_namespace(v) for k, v in schema.items() if k != "namespace"}
    if isinstance(schema, list):
        return [_without_namespace(v) for v in schema]
    return schema


@pytest.mark.parametrize(
    ("topic", "field", "source"),
    [
        ("encounters.coded.v1", "encounter", "encounters.collected.v1"),
        ("coding.review.v1", "coded", "encounters.coded.v1"),
        ("encounters.validated.v1", "coded", "encounters.coded.v1"),
    ],
)
def test_embedded_records_are_the_latest_of_their_own_topic(
    topic: str, field: str, source: str
) -> None:
    """A record carried inside another topic is a copy: it must be the newest version."""
    embedded = next(f for f in REG.latest(topic).schema["fields"] if f["name"] == field)["type"]
    own = dict(REG.latest(source).schema)
    assert _without_namespace(embedded) == _without_namespace(own)


def _institutional_encounter() -> dict[str, Any]:
    value = golden("encounters.collected.v1")
    value.update(
        setting="inpatient",
        place_of_service="21",
        type_of_bill="0111",
        admission_date="2026-03-02",
        admission_time="14:30:00",
        admission_type="1",
        admission_source="7",
        discharge_status="01",
        discharge_date="2026-03-06",
        discharge_time="11:00:00",
        occurrence_codes=[{"code": "11", "date": "2026-03-01"}],
        occurrence_spans=[{"code": "74", "start": "2026-03-03", "end": "2026-03-04"}],
        value_codes=[{"code": "80", "amount": "4.00"}],
        condition_codes=["39"],
        notes=[
            {
                "kind": "item_not_carried",
                "field": "Claim.item[4]",
                "message": "no revenue code and no procedure code",
                "charge": "120.00",
            }
        ],
    )
    value["services"] = [
        {"code": None, "system": None, "revenue_code": "0120", "units": 4, "charge": "6000.00"},
        *value["services"],
    ]
    value["diagnoses"][0]["role"] = None
    value["diagnoses"].append({"code": "R07.9", "system": "icd10cm", "role": "admitting"})
    return value


def test_an_institutional_encounter_round_trips_with_its_facility_data() -> None:
    value = models.Encounter.model_validate(_institutional_encounter())
    decoded = REG.decode("encounters.collected.v1", REG.encode("encounters.collected.v1", value))
    assert decoded == value
    assert decoded.services[0].code is None and decoded.services[0].revenue_code == "0120"
    assert decoded.admission_time is not None and decoded.admission_time.hour == 14


def test_a_service_needs_a_procedure_code_or_a_revenue_code() -> None:
    with pytest.raises(ValueError, match="procedure code or a revenue code"):
        models.DocumentedService.model_validate({"charge": "10.00"})


@pytest.mark.parametrize(
    "topic", ["encounters.collected.v1", "encounters.coded.v1", "encounters.validated.v1"]
)
def test_records_written_with_v1_read_as_the_latest_model(topic: str) -> None:
    v1 = next(sv for sv in REG.versions[topic] if sv.version == 1)
    assert REG.latest(topic).version > 1
    datum = REG.topics[topic].model.model_validate(golden(topic)).model_dump()
    buf = io.BytesIO()
    buf.write(MAGIC + v1.fingerprint)
    fastavro.schemaless_writer(buf, v1.parsed, datum)
    decoded = REG.decode(topic, buf.getvalue())
    assert decoded == REG.topics[topic].model.model_validate(golden(topic))


def test_claim_events_written_before_the_claim_check_keep_their_interchange() -> None:
    """claims.submitted.v1 v3 makes ``x12`` optional (the interchange moved to
    claims.interchanges.v1): a v2 record still reads with its text, a v3 one names it."""
    v2 = next(sv for sv in REG.versions["claims.submitted.v1"] if sv.version == 2)
    assert REG.latest("claims.submitted.v1").version >= 3
    value = models.SubmittedClaim.model_validate(golden("claims.submitted.v1"))
    buf = io.BytesIO()
    buf.write(MAGIC + v2.fingerprint)
    fastavro.schemaless_writer(buf, v2.parsed, value.model_dump())
    old = REG.decode("claims.submitted.v1", buf.getvalue())
    assert old == value and old.x12 and old.x12.startswith("ISA*")
    checked = value.model_copy(update={"x12": None})
    data = REG.encode("claims.submitted.v1", checked)
    assert REG.decode("claims.submitted.v1", data).x12 is None
    assert len(data) < len(REG.encode("claims.submitted.v1", value))
    interchange = models.Interchange.model_validate(golden("claims.interchanges.v1"))
    assert interchange.interchange_control_number == value.interchange_control_number
