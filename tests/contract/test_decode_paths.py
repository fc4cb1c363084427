"""A record written with its topic's newest schema is read without a reader schema (nothing
to resolve); one written with an older version is resolved to the newest as before. Both
give what the old path gave (fastavro given the newest schema as the reader schema too) on
every record of the offline chain and every golden record, written with every schema
version of its topic that can carry it."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import fastavro
import pytest

from pipeline.models import Model
from pipeline.serde import HEADER_LEN, MAGIC, registry

REG = registry()
GOLDEN = Path(__file__).parent / "golden"


def old_path(topic: str, data: bytes) -> dict[str, Any]:
    writer = REG.by_fingerprint[data[2:HEADER_LEN]]
    reader = REG.latest(topic)
    datum: dict[str, Any] = fastavro.schemaless_reader(
        io.BytesIO(data[HEADER_LEN:]), writer.parsed, reader.parsed
    )
    return datum


def written_with_each_version(topic: str, value: Model) -> list[bytes]:
    """``value`` written with every version of ``topic`` that can carry it."""
    out = []
    for sv in REG.versions[topic]:
        buf = io.BytesIO()
        buf.write(MAGIC + sv.fingerprint)
        try:
            fastavro.schemaless_writer(buf, sv.parsed, value.model_dump())
        except (TypeError, ValueError):
            continue  # a value this older version has no room for
        out.append(buf.getvalue())
    return out


def test_every_chain_record_decodes_as_before_from_every_version(
    chain: dict[str, list[Model]],
) -> None:
    newest = older = 0
    for topic, values in chain.items():
        for value in values:
            for data in written_with_each_version(topic, value):
                assert REG.decode_dict(topic, data) == old_path(topic, data), topic
                if data[2:HEADER_LEN] == REG.latest(topic).fingerprint:
                    newest += 1
                    assert REG.decode(topic, data) == value
                else:
                    older += 1
    assert newest > 200 and older > 50


@pytest.mark.parametrize("topic", sorted(REG.topics))
def test_every_golden_record_decodes_as_before_from_every_version(topic: str) -> None:
    source = REG.topics[topic].schema_of or topic
    name = "dead-letter" if source.startswith("dlq.") else source
    data: dict[str, Any] = json.loads((GOLDEN / f"{name}.json").read_text())
    value = REG.topics[topic].model.model_validate(data)
    written = written_with_each_version(topic, value)
    assert written
    for raw in written:
        assert REG.decode_dict(topic, raw) == old_path(topic, raw)
