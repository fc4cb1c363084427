"""Avro single-object encoding (Avro specification, "Single object encoding").

Wire format: ``C3 01``, the 8-byte little-endian CRC-64-AVRO fingerprint of the writer
schema's parsing canonical form, then the Avro binary datum. A reader finds the writer
schema by fingerprint among every version in ``schemas/<topic>/vN.avsc`` and resolves it
to the newest version of the topic it reads, so no registry server is needed.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
import yaml
from fastavro.schema import to_parsing_canonical_form

from pipeline import models
from pipeline.errors import DecodeError

MAGIC = b"\xc3\x01"
HEADER_LEN = 10
SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"

_EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY & -(fp & 1))
        table.append(fp)
    return table


_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """The CRC-64-AVRO fingerprint (Rabin) of ``data``, as the specification defines it."""
    fp = _EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp


@dataclass(frozen=True)
class SchemaVersion:
    topic: str
    version: int
    schema: dict[str, Any]
    parsed: Any
    fingerprint: bytes  # 8 bytes, little-endian, as on the wire


@dataclass(frozen=True)
class TopicSpec:
    name: str
    model: type[models.Model]
    partitions: int
    retention_ms: int
    producer: str


class Registry:
    """Every schema version of every topic, found by topic or by writer fingerprint."""

    def __init__(self, schemas_dir: Path = SCHEMAS_DIR) -> None:
        self.schemas_dir = schemas_dir
        spec = yaml.safe_load((schemas_dir / "topics.yaml").read_text())
        defaults = spec.get("defaults", {})
        self.topics: dict[str, TopicSpec] = {}
        self.versions: dict[str, list[SchemaVersion]] = {}
        self.by_fingerprint: dict[bytes, SchemaVersion] = {}
        for name, conf in spec["topics"].items():
            conf = {**defaults, **conf}
            self.topics[name] = TopicSpec(
                name=name,
                model=models.MODELS[conf["model"]],
                partitions=int(conf["partitions"]),
                retention_ms=int(conf["retention_ms"]),
                producer=conf["producer"],
            )
            self.versions[name] = self._load_versions(name)
            # A version that only adds attributes outside the parsing canonical form (docs,
            # "phi" marks) has its predecessor's fingerprint: the newest of them is kept,
            # and it reads the same bytes.
            for sv in self.versions[name]:
                self.by_fingerprint[sv.fingerprint] = sv

    def _load_versions(self, topic: str) -> list[SchemaVersion]:
        found = []
        for path in (self.schemas_dir / topic).glob("v*.avsc"):
            schema = json.loads(path.read_text())
            parsed = fastavro.parse_schema(schema)
            canonical = to_parsing_canonical_form(schema)
            fp = struct.pack("<Q", crc64_avro(canonical.encode()))
            found.append(SchemaVersion(topic, int(path.stem[1:]), schema, parsed, fp))
        if not found:
            raise FileNotFoundError(f"no schema for topic {topic!r} in {self.schemas_dir}")
        return sorted(found, key=lambda sv: sv.version)

    def latest(self, topic: str) -> SchemaVersion:
        return self.versions[topic][-1]

    def encode(self, topic: str, value: models.Model | dict[str, Any]) -> bytes:
        """Encode a record for ``topic`` with the topic's newest schema."""
        sv = self.latest(topic)
        if not isinstance(value, models.Model):
            value = self.topics[topic].model.model_validate(value)
        datum = value.model_dump()
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(sv.fingerprint)
        fastavro.schemaless_writer(buf, sv.parsed, datum)
        return buf.getvalue()

    def decode_dict(self, topic: str, data: bytes) -> dict[str, Any]:
        """Decode single-object bytes written with any known version, read as the newest."""
        if data is None or len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise DecodeError("value", "not Avro single-object encoding (no C3 01 header)")
        writer = self.by_fingerprint.get(data[2:HEADER_LEN])
        if writer is None:
            raise DecodeError("value", f"unknown writer schema fingerprint {data[2:10].hex()}")
        reader = self.latest(topic)
        try:
            return fastavro.schemaless_reader(  # type: ignore[return-value]
                io.BytesIO(data[HEADER_LEN:]), writer.parsed, reader.parsed
            )
        except Exception as exc:  # fastavro raises many types on corrupt bytes
            raise DecodeError("value", f"corrupt Avro datum: {exc}") from exc

    def decode(self, topic: str, data: bytes) -> models.Model:
        """Decode and validate into the topic's pydantic model."""
        return self.topics[topic].model.model_validate(self.decode_dict(topic, data))


@cache
def registry(schemas_dir: Path = SCHEMAS_DIR) -> Registry:
    return Registry(schemas_dir)
