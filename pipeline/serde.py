"""Avro single-object encoding (Avro specification, "Single object encoding").

Wire format: ``C3 01``, the 8-byte little-endian CRC-64-AVRO fingerprint of the writer
schema's parsing canonical form, then the Avro binary datum. A reader finds the writer
schema by fingerprint among every version in ``schemas/<topic>/vN.avsc`` and resolves it
to the newest version of the topic it reads, so no registry server is needed.
"""

from __future__ import annotations

import io
import json
import logging
import os
import struct
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, NamedTuple, Union, get_args, get_origin

import fastavro
import yaml
from fastavro.schema import to_parsing_canonical_form
from pydantic import BaseModel

from pipeline import metrics, models
from pipeline.avro_read import difference, model_of, reader_for
from pipeline.avro_write import Write, writer_for
from pipeline.errors import DecodeError

log = logging.getLogger(__name__)

#: Set (to anything but "" or "0") to encode every spliced record the normal way too and
#: raise ``SpliceMismatch`` when the bytes differ (the test suite sets it for every test).
VERIFY_SPLICE_ENV = "CLAIMFLOW_VERIFY_SPLICE"
#: Set (to anything but "" or "0") to decode every record the generated reader reads the
#: usual way too (fastavro, then the trusted build) and raise ``DecodeMismatch`` when the
#: two differ in any value or type (the test suite sets it for every test).
VERIFY_DECODE_ENV = "CLAIMFLOW_VERIFY_DECODE"
#: Set (to anything but "" or "0") to write every record the generated writer writes with
#: fastavro too and raise ``EncodeMismatch`` when the bytes differ, or when only one of the
#: two writes it (the test suite sets it for every test).
VERIFY_ENCODE_ENV = "CLAIMFLOW_VERIFY_ENCODE"


def _verifying(env: str) -> bool:
    """Whether the verification ``env`` names is on."""
    return os.environ.get(env, "") not in ("", "0")


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
    #: The topic whose schema folder this one uses: a repartition topic carries another
    #: topic's records unchanged (re-keyed), so it has no schema of its own.
    schema_of: str | None = None

    #: Written by one of claimflow's stages (``stages`` in topics.yaml), so on the way in
    #: its records are trusted: ``Registry.decode`` builds the model without validating
    #: again what the Avro schema and the writing stage already guaranteed. Every other
    #: producer (EHRs, coders, payers, the console) is an edge, and its records are validated.
    trusted: bool = False


Build = Callable[[Any], Any]


def _converter(annotation: Any) -> Build | None:
    """How to turn a decoded Avro value into the field's Python value without validating
    it: a nested model is built, a list or map of them element by element; None when the
    decoded value is already the field's value (strings, numbers, dates, decimals)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _converter(get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, models.Model):
        return model_builder(annotation)
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        converters = [_converter(a) for a in members]
        if not any(converters):
            return None
        if len(members) != 1:
            raise TypeError(f"no trusted build for a union of several records: {annotation}")
        inner = converters[0]
        assert inner is not None
        return lambda value: None if value is None else inner(value)
    if origin is list:
        each = _converter(get_args(annotation)[0])
        if each is None:
            return None
        return lambda value: [each(v) for v in value]
    if origin is dict:
        member = _converter(get_args(annotation)[1])
        if member is None:
            return None
        return lambda value: {k: member(v) for k, v in value.items()}
    return None


def _nested(annotation: Any) -> tuple[str, type[models.Model]] | None:
    """("one", M) for a field holding a model M (optional or not), ("list", M) for a list of
    them: what the generated build calls M's builder for directly, without a converter."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _nested(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        return _nested(members[0]) if len(members) == 1 else None
    if isinstance(annotation, type) and issubclass(annotation, models.Model):
        return "one", annotation
    if origin is list:
        inner = get_args(annotation)[0]
        if isinstance(inner, type) and issubclass(inner, models.Model):
            return "list", inner
    return None


#: pydantic's slots, set directly (``object.__setattr__`` looks each one up first).
_SET_DICT = BaseModel.__dict__["__dict__"].__set__
_SET_FIELDS_SET = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_SET_EXTRA = BaseModel.__dict__["__pydantic_extra__"].__set__
_SET_PRIVATE = BaseModel.__dict__["__pydantic_private__"].__set__


@cache
def model_builder(model: type[models.Model]) -> Build:
    """A function that builds ``model`` from a decoded Avro datum without validation.

    For records a claimflow stage wrote: the writer validated the model before encoding
    it, and Avro carried every field's type, so validating again only costs CPU. The
    result equals what ``model.model_validate`` gives for the same datum
    (tests/contract/test_trusted_decode.py holds that for every contract).
    """
    plan = [(name, _converter(info.annotation), info) for name, info in model.model_fields.items()]
    fields_set = frozenset(name for name, _, _ in plan)

    def complete(datum: Any) -> Any:
        # A datum without every field (not one fastavro gives): defaults fill the gaps.
        return {
            name: datum[name] if name in datum else info.get_default(call_default_factory=True)
            for name, _, info in plan
        }

    # One generated function per model: a loop over the fields cost as much as pydantic's
    # own validation, a straight-line dict display a third of it.
    env = {**_slots_env(model, fields_set), "complete": complete}
    items = []
    for i, (name, convert, info) in enumerate(plan):
        nested = _nested(info.annotation)
        if convert is None:
            items.append(f"{name!r}: d[{name!r}]")
        elif nested is not None:  # a model's builder called directly, no converter
            kind, inner = nested
            env[f"b{i}"] = model_builder(inner)
            call = f"b{i}(v)" if kind == "one" else f"list(map(b{i}, v))"
            items.append(f"{name!r}: None if (v := d[{name!r}]) is None else {call}")
        else:
            env[f"c{i}"] = convert
            items.append(f"{name!r}: None if (v := d[{name!r}]) is None else c{i}(v)")
    body = ", ".join(items)
    source = (
        "def build(d):\n"
        "    try:\n"
        f"        values = {{{body}}}\n"
        "    except KeyError:\n"
        "        return build(complete(d))\n"
        f"{_MAKE}"
    )
    exec(compile(source, f"<trusted build of {model.__name__}>", "exec"), env)  # noqa: S102
    build: Build = env["build"]
    return build


#: The end of a generated build: the model made from ``values`` with its slots set.
_MAKE = (
    "    obj = new(M)\n"
    "    set_dict(obj, values)\n"
    "    set_fields_set(obj, set(FS))\n"
    "    set_extra(obj, None)\n"
    "    set_private(obj, None)\n"
    "    return obj\n"
)


def _slots_env(model: type[BaseModel], fields_set: frozenset[str]) -> dict[str, Any]:
    """What a generated build's source refers to."""
    return {
        "M": model,
        "new": object.__new__,
        "set_dict": _SET_DICT,
        "set_fields_set": _SET_FIELDS_SET,
        "set_extra": _SET_EXTRA,
        "set_private": _SET_PRIVATE,
        "FS": fields_set,
    }


def model_maker(model: type[BaseModel]) -> Callable[..., Any]:
    """A function that makes ``model`` from its fields' values (positional or by name, every
    field given), unvalidated, with its slots set as ``model_builder`` sets them: for values
    a stage made itself of the types the fields hold, without the dict ``model_builder``
    reads (services/remittance/posting.py says what that saved)."""
    names = list(model.model_fields)
    env = _slots_env(model, frozenset(names))
    values = ", ".join(f"{name!r}: {name}" for name in names)
    source = f"def make({', '.join(names)}):\n    values = {{{values}}}\n{_MAKE}"
    exec(compile(source, f"<unvalidated make of {model.__name__}>", "exec"), env)  # noqa: S102
    return env["make"]  # type: ignore[no-any-return]


def _dumper(schema: Any, named: dict[str, Any], model: type[models.Model] | None) -> Build | None:
    """How to turn a field's value into the datum fastavro writes for ``schema``: a nested
    model as its record's dict, a list or map of them element by element, and the branch of
    a ``["null", T]`` union named (fastavro's tuple notation), so that the writer does not
    validate the value against the branch to find it (a whole nested record, for a record
    branch). None when the value is written as it is (strings, numbers, dates, decimals,
    lists and maps of them)."""
    if isinstance(schema, str):
        if schema not in named:
            return None  # a primitive
        schema = named[schema]
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"]
        if len(branches) != 1 or len(schema) != 2:
            raise TypeError(f"no compiled dump for the union {schema}")
        branch = branches[0]
        if isinstance(branch, str):
            branch = named.get(branch, branch)
        inner = _dumper(branch, named, model)
        kind = branch["type"] if isinstance(branch, dict) else branch
        tag = branch["name"] if kind in ("record", "enum", "fixed") else kind
        if inner is None:
            return lambda value: None if value is None else (tag, value)
        return lambda value: None if value is None else (tag, inner(value))
    kind = schema["type"]
    if kind == "record":
        if model is None:
            raise TypeError(f"no model for the record {schema['name']}")
        return record_dumper(model, schema, named)
    if kind == "array":
        each = _dumper(schema["items"], named, model)
        return None if each is None else lambda value: [each(v) for v in value]
    if kind == "map":
        member = _dumper(schema["values"], named, model)
        return None if member is None else lambda value: {k: member(v) for k, v in value.items()}
    return None


def record_dumper(
    model: type[models.Model], schema: dict[str, Any], named: dict[str, Any]
) -> Build:
    """A function that gives the datum fastavro writes for a ``model`` instance under the
    record ``schema``: what ``model_dump()`` gives, read straight from the instance, with
    nested records' union branches named (``_dumper``). ``Registry.encode`` writes the same
    bytes either way (tests/contract/test_serde_paths.py holds that for every contract)."""
    fields = model.model_fields
    env: dict[str, Any] = {}
    items = []
    for i, field_schema in enumerate(schema["fields"]):
        name = field_schema["name"]
        if name not in fields:
            continue  # written with the schema's default, as from model_dump()
        annotation = fields[name].annotation
        convert = _dumper(field_schema["type"], named, model_of(annotation))
        if convert is None:
            items.append(f"{name!r}: d[{name!r}]")
        else:
            env[f"c{i}"] = convert
            items.append(f"{name!r}: c{i}(d[{name!r}])")
    source = f"def dump(o):\n    d = o.__dict__\n    return {{{', '.join(items)}}}\n"
    exec(compile(source, f"<compiled dump of {model.__name__}>", "exec"), env)  # noqa: S102
    dump: Build = env["dump"]
    return dump


def binary_form(schema: Any, namespace: str | None = None) -> str:
    """What decides how a value of ``schema`` is written, and what its bytes mean: the
    parsing canonical form, and the logical types that form leaves out (timestamp-millis
    and timestamp-micros are both a long in it). Two schemas with the same form write the
    same values to the same bytes. ``namespace``: the enclosing one, for a named type
    taken out of a larger schema."""
    if (
        isinstance(schema, dict)
        and schema.get("type") in ("record", "enum", "fixed")
        and "namespace" not in schema
        and "." not in schema["name"]
        and namespace
    ):
        schema = {**schema, "namespace": namespace}
    logical: list[tuple[Any, ...]] = []

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for branch in node:
                walk(branch)
        elif isinstance(node, dict):
            if "logicalType" in node:
                logical.append((node["logicalType"], node.get("precision"), node.get("scale")))
            walk(node.get("type"))
            walk(node.get("items"))
            walk(node.get("values"))
            for f in node.get("fields", ()):
                logical.append(("field", f["name"]))
                walk(f["type"])

    walk(schema)
    return f"{to_parsing_canonical_form(schema)}|{logical!r}"


class Datum(NamedTuple):
    """A record as it was read: the model built from it, the binary form of the schema it
    was written with (``binary_form``), and its Avro bytes without the single-object header.
    A named tuple, not a frozen dataclass: one is made for every record a splicing stage
    reads, and the dataclass's three ``object.__setattr__`` calls made it cost 0.8 us."""

    value: Any
    form: str
    data: bytes


class SpliceMismatch(AssertionError):
    """A spliced record differs from the same record encoded field by field: the embedded
    record was changed after it was read (``VERIFY_SPLICE_ENV``)."""


class _Part:
    """Some fields of a record, written as fastavro writes them in the whole record (Avro
    writes a record as its fields one after the other, nothing between them)."""

    def __init__(
        self,
        record: dict[str, Any],
        fields: list[Any],
        namespace: str | None,
        tag: str,
        model: type[models.Model],
        named: dict[str, Any],
    ) -> None:
        self.empty = not fields
        if self.empty:
            return
        own = dict(named)  # fastavro adds the part's own name: not into the shared table
        partial = {
            "type": "record",
            "name": f"{record['name'].rpartition('.')[2]}__{tag}",
            "fields": fields,
        }
        if namespace:
            partial["namespace"] = namespace
        self.parsed: dict[str, Any] = fastavro.parse_schema(  # type: ignore[assignment]
            partial, named_schemas=own
        )
        self.dump = record_dumper(model, self.parsed, own)
        self.fast = GeneratedWriter.of(
            self.parsed["name"], writer_for(self.parsed, own, model), self.usual
        )

    def write(self, out: bytearray, value: Any) -> None:
        if self.empty:
            return
        fast = self.fast
        if fast is not None:
            start = len(out)
            if not fast.verify:  # the generated function itself: one call, not three
                try:
                    fast.write_record(value, out)
                    return
                except Exception:  # noqa: BLE001 - again by the writer, which counts it
                    del out[start:]
            if fast.write(out, value):
                return
            del out[start:]
        out += self.usual(value)

    def usual(self, value: Any) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, self.parsed, self.dump(value))
        return buf.getvalue()


class Splicer:
    """Encodes a record of ``topic`` whose field at ``path`` (a record in a record ...) is a
    record the stage read and passes on unchanged: the fields before it, the bytes it was
    read from, the fields after it, instead of encoding it again field by field.

    Only when the embedded value *is* the object built from those bytes (identity, not
    equality) and the schema it was written with has this field's binary form; otherwise
    ``encode`` gives None and the record is encoded as usual."""

    def __init__(self, registry: Registry, topic: str, path: tuple[str, ...]) -> None:
        self.registry = registry
        self.topic = topic
        self.path = path
        sv = registry.latest(topic)
        self.header = MAGIC + sv.fingerprint
        named = sv.parsed["__named_schemas"]
        model: type[models.Model] = registry.topics[topic].model
        schema: dict[str, Any] = sv.schema
        namespace = schema.get("namespace")
        self.models: list[type[models.Model]] = []
        self.before: list[_Part] = []
        self.after: list[_Part] = []
        for depth, name in enumerate(path):
            names = [f["name"] for f in schema["fields"]]
            if name not in names:
                raise TypeError(f"{topic}: no field {'.'.join(path[: depth + 1])}")
            i = names.index(name)
            tag = "_".join(path[: depth + 1])
            self.models.append(model)
            self.before.append(
                _Part(schema, schema["fields"][:i], namespace, f"before_{tag}", model, named)
            )
            self.after.append(
                _Part(schema, schema["fields"][i + 1 :], namespace, f"after_{tag}", model, named)
            )
            inner = schema["fields"][i]["type"]
            annotation = model.model_fields[name].annotation
            if not (isinstance(inner, dict) and inner.get("type") == "record") or not (
                isinstance(annotation, type) and issubclass(annotation, models.Model)
            ):
                raise TypeError(f"{topic}: {'.'.join(path[: depth + 1])} is not a record field")
            if "." in inner["name"]:
                namespace = inner["name"].rpartition(".")[0]
            else:
                namespace = inner.get("namespace", namespace)
            schema, model = inner, annotation
        self.form = binary_form(schema, namespace)
        self.model = model
        self.verify = _verifying(VERIFY_SPLICE_ENV)

    def encode(self, value: Any, known: Mapping[int, Datum]) -> tuple[bytes, Datum] | None:
        """``value``'s bytes with the embedded record's read bytes, and that read record;
        None when the embedded value is not a record read unchanged (see the class)."""
        if len(self.path) == 1:  # a field of the record itself (every Stage.embeds today)
            return self._encode_field(value, known)
        chain = []
        node = value
        for model, name in zip(self.models, self.path, strict=True):
            if type(node) is not model:
                return None
            chain.append(node)
            node = node.__dict__[name]
        if (datum := self._read_unchanged(node, known)) is None:
            return None
        out = bytearray(self.header)
        for part, obj in zip(self.before, chain, strict=True):
            part.write(out, obj)
        out += datum.data
        for part, obj in zip(reversed(self.after), reversed(chain), strict=True):
            part.write(out, obj)
        return self._checked(bytes(out), value, datum)

    def _encode_field(self, value: Any, known: Mapping[int, Datum]) -> tuple[bytes, Datum] | None:
        """``encode`` of a path of one field, without the loops over the path: with
        ``_Part.write`` calling the generated function directly, splicing a coded encounter
        took 7.3 us instead of 8.9, a verdict 4.4 instead of 5.9."""
        if type(value) is not self.models[0]:
            return None
        if (datum := self._read_unchanged(value.__dict__[self.path[0]], known)) is None:
            return None
        out = bytearray(self.header)
        self.before[0].write(out, value)
        out += datum.data
        self.after[0].write(out, value)
        return self._checked(bytes(out), value, datum)

    def _read_unchanged(self, node: Any, known: Mapping[int, Datum]) -> Datum | None:
        """The record ``node`` was read from, when it is that record's very model, of this
        splicer's schema form and model; None otherwise."""
        datum = known.get(id(node))
        if datum is None or datum.value is not node or datum.form != self.form:
            return None
        return datum if type(node) is self.model else None

    def _checked(self, data: bytes, value: Any, datum: Datum) -> tuple[bytes, Datum]:
        if self.verify and data != (plain := self.registry.encode(self.topic, value)):
            raise SpliceMismatch(
                f"{self.topic}: the record spliced at {'.'.join(self.path)} differs from the "
                f"record encoded field by field ({len(data)} vs {len(plain)} bytes): the "
                "embedded record was changed after it was read"
            )
        return data, datum


class EncodeMismatch(AssertionError):
    """The generated writer (``pipeline/avro_write.py``) wrote other bytes than fastavro for
    the same record, or only one of the two wrote it (``VERIFY_ENCODE_ENV``)."""


class GeneratedWriter:
    """A record's generated writer, with what the caller falls back to: fastavro, for a
    value the writer leaves to it. Each fallback is counted (``fallbacks``) and the first
    of each record type logged, so a writer that stopped applying shows."""

    #: Record type -> the records written with fastavro instead, since start-up.
    fallbacks: dict[str, int] = {}

    def __init__(
        self, name: str, write: Write, usual: Callable[[Any], bytes], header: bytes = b""
    ) -> None:
        self.name = name
        #: What a record's bytes start with (a topic's single-object header).
        self.header = header
        self.write_record = write
        #: The record's bytes by fastavro (what verification compares with).
        self.usual = usual
        self.verify = _verifying(VERIFY_ENCODE_ENV)

    @classmethod
    def of(
        cls, name: str, write: Write | None, usual: Callable[[Any], bytes], header: bytes = b""
    ) -> GeneratedWriter | None:
        return None if write is None else cls(name, write, usual, header)

    def write(self, out: bytearray, value: Any) -> bool:
        """Write ``value`` at the end of ``out``; False (``out`` possibly written to) when
        the generated writer left it to fastavro, which the caller then calls."""
        usual = self.usual
        start = len(out)
        try:
            self.write_record(value, out)
        except Exception as exc:  # noqa: BLE001 - fastavro writes it, or names the error
            if self.verify:
                try:
                    usual(value)
                except Exception:  # noqa: BLE001, S110 - rejected both ways: fastavro's error follows
                    pass
                else:
                    raise EncodeMismatch(
                        f"{self.name}: the generated writer failed ({type(exc).__name__}) on a "
                        "record fastavro writes"
                    ) from None
            count = self.fallbacks[self.name] = self.fallbacks.get(self.name, 0) + 1
            metrics.SERDE_FALLBACKS.labels("encode", self.name).inc()
            if count == 1:
                log.warning(
                    "a %s record was written with fastavro, not its generated writer (%s)",
                    self.name,
                    type(exc).__name__,
                )
            return False
        if self.verify:
            try:
                plain = usual(value)
            except Exception as exc:
                raise EncodeMismatch(
                    f"{self.name}: the generated writer wrote a record fastavro rejects "
                    f"({type(exc).__name__})"
                ) from None
            if out[start:] != plain:
                raise EncodeMismatch(
                    f"{self.name}: the generated writer's bytes differ from fastavro's "
                    f"({len(out) - start} vs {len(plain)} bytes)"
                )
        return True


class DecodeMismatch(AssertionError):
    """The generated reader (``pipeline/avro_read.py``) gave another model than fastavro and
    the trusted build give for the same bytes (``VERIFY_DECODE_ENV``)."""


@dataclass(frozen=True)
class GeneratedReader:
    """A topic's generated reader, for records written with its newest schema."""

    fingerprint: bytes
    read: Callable[[bytes, int], Any]
    verify: bool


class Registry:
    """Every schema version of every topic, found by topic or by writer fingerprint."""

    def __init__(self, schemas_dir: Path = SCHEMAS_DIR) -> None:
        self.schemas_dir = schemas_dir
        spec = yaml.safe_load((schemas_dir / "topics.yaml").read_text())
        defaults = spec.get("defaults", {})
        stages = frozenset(spec.get("stages", ()))
        self.topics: dict[str, TopicSpec] = {}
        self.versions: dict[str, list[SchemaVersion]] = {}
        self.by_fingerprint: dict[bytes, SchemaVersion] = {}
        self.fingerprints: dict[str, frozenset[bytes]] = {}
        self._trusted_fingerprints: dict[str, frozenset[bytes]] = {}
        self._dumpers: dict[str, Build] = {}
        #: Topic -> its generated writer (None: the schema is one it does not write).
        self._writers: dict[str, GeneratedWriter | None] = {}
        #: Writer fingerprint -> the binary form of that schema (``binary_form``).
        self.forms: dict[bytes, str] = {}
        self._splicers: dict[tuple[str, tuple[str, ...]], Splicer] = {}
        #: Topic -> its generated reader (None: the schema is one it does not read).
        self._fast: dict[str, GeneratedReader | None] = {}
        self._unread: set[str] = set()  # topics whose generated reader fell back once
        #: ``VERIFY_SPLICE_ENV`` read once, as the splicers and generated writers read theirs
        #: (looking it up in the environment took 1 us of each ``unchanged``).
        self._verify_splice = _verifying(VERIFY_SPLICE_ENV)
        for name, conf in spec["topics"].items():
            conf = {**defaults, **conf}
            self.topics[name] = TopicSpec(
                name=name,
                model=models.MODELS[conf["model"]],
                partitions=int(conf["partitions"]),
                retention_ms=int(conf["retention_ms"]),
                producer=conf["producer"],
                schema_of=conf.get("schema_of"),
                trusted=conf["producer"] in stages,
            )
            self.versions[name] = self._load_versions(conf.get("schema_of") or name)
            # A version that only adds attributes outside the parsing canonical form (docs,
            # "phi" marks) has its predecessor's fingerprint: the newest of them is kept,
            # and it reads the same bytes.
            for sv in self.versions[name]:
                self.by_fingerprint[sv.fingerprint] = sv
                self.forms[sv.fingerprint] = binary_form(sv.schema)
            self.fingerprints[name] = frozenset(sv.fingerprint for sv in self.versions[name])
            #: ``datum``'s fingerprints: a topic's own when a stage writes it, else none.
            self._trusted_fingerprints[name] = (
                self.fingerprints[name] if self.topics[name].trusted else frozenset()
            )

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

    def dumper(self, topic: str) -> Build:
        """The compiled dump of ``topic``'s model for its newest schema (``record_dumper``)."""
        dump = self._dumpers.get(topic)
        if dump is None:
            parsed = self.latest(topic).parsed
            named = parsed["__named_schemas"]
            dump = self._dumpers[topic] = record_dumper(self.topics[topic].model, parsed, named)
        return dump

    def encode(self, topic: str, value: models.Model | dict[str, Any]) -> bytes:
        """Encode a record for ``topic`` with the topic's newest schema: an instance of the
        topic's model by the writer generated for it (``pipeline/avro_write.py``), which
        leaves to fastavro what it does not write; anything else by fastavro."""
        model = self.topics[topic].model
        if type(value) is model:
            fast = self._writers[topic] if topic in self._writers else self.writer(topic)
            if fast is not None:
                out = bytearray(fast.header)
                if not fast.verify:  # the generated function itself, as ``_Part.write`` calls it
                    try:
                        fast.write_record(value, out)
                        return bytes(out)
                    except Exception:  # noqa: BLE001 - again by the writer, which counts it
                        del out[HEADER_LEN:]
                if fast.write(out, value):
                    return bytes(out)
        return self._encode_usual(topic, value)

    def writer(self, topic: str) -> GeneratedWriter | None:
        """``topic``'s generated writer for its model and newest schema; None when that
        schema uses what the generator does not write."""
        if topic not in self._writers:
            sv = self.latest(topic)
            write = writer_for(sv.parsed, sv.parsed["__named_schemas"], self.topics[topic].model)
            self._writers[topic] = GeneratedWriter.of(
                sv.parsed["name"],
                write,
                lambda v: self._encode_usual(topic, v)[HEADER_LEN:],
                MAGIC + sv.fingerprint,
            )
        return self._writers[topic]

    def _encode_usual(self, topic: str, value: models.Model | dict[str, Any]) -> bytes:
        """``encode`` by fastavro: the compiled dump of the model, or ``model_dump()``."""
        sv = self.latest(topic)
        model = self.topics[topic].model
        if not isinstance(value, models.Model):
            value = model.model_validate(value)
        datum = self.dumper(topic)(value) if type(value) is model else value.model_dump()
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(sv.fingerprint)
        fastavro.schemaless_writer(buf, sv.parsed, datum)
        return buf.getvalue()

    def splicer(self, topic: str, path: tuple[str, ...]) -> Splicer:
        """The ``Splicer`` of ``topic`` for the record field at ``path``."""
        found = self._splicers.get((topic, path))
        if found is None:
            found = self._splicers[(topic, path)] = Splicer(self, topic, path)
        return found

    def datum(self, topic: str, data: bytes, value: Any) -> Datum | None:
        """``value`` with the bytes it was decoded from, for a ``Splicer``: only for a topic
        a stage writes (``TopicSpec.trusted``), whose model is built from the datum as it is,
        so that encoding it again gives these bytes (a validated model may be normalised)."""
        fingerprint = data[2:HEADER_LEN]  # one look at the header: this runs for every input
        if fingerprint not in self._trusted_fingerprints[topic] or data[:2] != MAGIC:
            return None
        return Datum(value, self.forms[fingerprint], data[HEADER_LEN:])

    def unchanged(self, topic: str, data: bytes, value: Any) -> bytes | None:
        """``data`` to pass on as ``value``'s record of ``topic`` without encoding it: when
        they were written with the topic's newest schema and ``value`` is the model read
        from them, unchanged (the caller knows that; a trusted record's model is built from
        the datum as it is, as a splice assumes). None otherwise: encode ``value``. With
        ``VERIFY_SPLICE_ENV`` set (the test suite) ``value`` is encoded too and the bytes
        compared (``SpliceMismatch``)."""
        if data[:HEADER_LEN] != MAGIC + self.latest(topic).fingerprint:
            return None
        if self._verify_splice and data != (plain := self.encode(topic, value)):
            raise SpliceMismatch(
                f"{topic}: the record forwarded differs from the record encoded "
                f"({len(data)} vs {len(plain)} bytes): it was changed after it was read"
            )
        return data

    def known_writer(self, topic: str, data: bytes | None) -> bool:
        """Whether ``data`` is single-object encoded with one of ``topic``'s schema versions
        (its header only: the datum itself is not read)."""
        return (
            data is not None
            and data[:2] == MAGIC
            and data[2:HEADER_LEN] in self.fingerprints[topic]
        )

    def decode_dict(self, topic: str, data: bytes) -> dict[str, Any]:
        """Decode single-object bytes written with any known version, read as the newest."""
        if data is None or len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise DecodeError("value", "not Avro single-object encoding (no C3 01 header)")
        writer = self.by_fingerprint.get(data[2:HEADER_LEN])
        if writer is None:
            raise DecodeError("value", f"unknown writer schema fingerprint {data[2:10].hex()}")
        reader = self.latest(topic)
        # Written with the newest schema: nothing to resolve, and fastavro is not asked to
        # compare the two schemas on every read.
        try:
            return fastavro.schemaless_reader(  # type: ignore[return-value]
                io.BytesIO(data[HEADER_LEN:]),
                writer.parsed,
                None if writer.fingerprint == reader.fingerprint else reader.parsed,
            )
        except Exception as exc:  # fastavro raises many types on corrupt bytes
            raise DecodeError("value", f"corrupt Avro datum: {exc}") from exc

    def decode(self, topic: str, data: bytes, *, validate: bool | None = None) -> models.Model:
        """Decode into the topic's pydantic model: validated when the topic comes from an
        edge (EHRs, coders, payers, people), built without validating again when a stage
        wrote it (``TopicSpec.trusted``). ``validate`` forces either path.

        A trusted record written with the topic's newest schema is read by the reader
        generated for it (``pipeline/avro_read.py``): the same model, in about half the
        CPU. Bytes it cannot read are decoded the usual way, which names what is wrong."""
        spec = self.topics[topic]
        if validate if validate is not None else not spec.trusted:
            return spec.model.model_validate(self.decode_dict(topic, data))
        fast = self._fast[topic] if topic in self._fast else self.generated_reader(topic)
        if fast is not None and data is not None and data[2:HEADER_LEN] == fast.fingerprint:
            try:
                value = fast.read(data, HEADER_LEN)
            except Exception as exc:  # noqa: BLE001 - not readable here: read the usual way
                value = None
                self._read_usual_way(topic, exc)
            if fast.verify:
                self._verify_decode(topic, data, value)
            if value is not None:
                return value  # type: ignore[no-any-return]
        return model_builder(spec.model)(self.decode_dict(topic, data))  # type: ignore[no-any-return]

    def _read_usual_way(self, topic: str, exc: Exception) -> None:
        """A record the generated reader could not read: counted, and the first of each
        topic logged, so a reader that stopped applying shows (the record is still decoded,
        by fastavro, or rejected with its usual error)."""
        metrics.SERDE_FALLBACKS.labels("decode", topic).inc()
        if topic not in self._unread:
            self._unread.add(topic)
            log.warning(
                "a %s record was read with fastavro, not its generated reader (%s)",
                topic,
                type(exc).__name__,
            )

    def generated_reader(self, topic: str) -> GeneratedReader | None:
        """``topic``'s generated reader (``pipeline/avro_read.py``) for records written with
        its newest schema; None when that schema uses what the generator does not read. A
        repartition topic shares its source's (the same schema and model)."""
        found = self._fast.get(topic)
        if found is not None or topic in self._fast:
            return found
        sv = self.latest(topic)
        model = self.topics[topic].model
        same = [
            fast
            for other, fast in self._fast.items()
            if fast is not None
            and fast.fingerprint == sv.fingerprint
            and self.topics[other].model is model
        ]
        if same:
            found = same[0]
        elif (read := reader_for(sv.parsed, sv.parsed["__named_schemas"], model)) is not None:
            found = GeneratedReader(sv.fingerprint, read, _verifying(VERIFY_DECODE_ENV))
        self._fast[topic] = found
        return found

    def _verify_decode(self, topic: str, data: bytes, value: models.Model | None) -> None:
        """Raise ``DecodeMismatch`` unless ``value`` (None: the generated reader failed) is
        what fastavro and the trusted build give for ``data``."""
        try:
            usual = model_builder(self.topics[topic].model)(self.decode_dict(topic, data))
        except DecodeError:
            if value is None:
                return  # unreadable both ways: the usual error follows
            raise DecodeMismatch(
                f"{topic}: the generated reader read bytes fastavro rejects"
            ) from None
        if value is None:
            raise DecodeMismatch(f"{topic}: the generated reader failed on bytes fastavro reads")
        where = difference(usual, value)
        if where is not None:
            raise DecodeMismatch(
                f"{topic}: the generated reader's model differs from fastavro's at {where}"
            )


@cache
def registry(schemas_dir: Path = SCHEMAS_DIR) -> Registry:
    return Registry(schemas_dir)
