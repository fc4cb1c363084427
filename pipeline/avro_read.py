"""A reader generated per contract: Avro bytes straight into the topic's model.

``Registry.decode`` of a record a stage wrote used to take two passes: fastavro read the
datum into nested dicts, interpreting the schema as it went, and the trusted build
(``serde.model_builder``) turned those dicts into models. The reader here is Python source
generated once per (schema, model): one function that reads the fields one after the other
from the bytes, nested records in place (no call per record), and builds the models from
them, with no intermediate dict and no schema lookups. It gives what the two passes give,
value for value and type for type (tests/unit/test_avro_read.py holds that on every record
of the corpora, and ``VERIFY_DECODE_ENV`` makes every decode of the test suite check it),
and it applies only to a record written with the very schema it reads as (no resolution
between versions).

Records that repeat from one datum to the next (``KEPT``: the same billing provider, facility
or diagnosis on many encounters) are kept by their bytes: the reader steps over such a
record's bytes without reading them, and when the same bytes were read before it gives the
model built then (models are frozen), which is neither built again nor freed. Within one
datum no object is given twice (two positions with the same bytes get two objects, as the
usual path gives them, for code that tells them apart by identity); across data, the same
bytes give the same object.

Anything it does not read (a union of several records, a schema that refers to itself) is
left to fastavro: ``reader_for`` gives None. Bytes it cannot read raise; the caller then
decodes them the usual way, which gives the usual error.
"""

from __future__ import annotations

import struct
import types
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Context, Decimal
from typing import Annotated, Any, Union, get_args, get_origin

from fastavro.read import LOGICAL_READERS
from pydantic import BaseModel

from pipeline import models
from pipeline.codegen import SourceGen, Unsupported

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAYS_SHIFT = date(1970, 1, 1).toordinal()
_unpack_float = struct.Struct("<f").unpack_from
_unpack_double = struct.Struct("<d").unpack_from

_SET_DICT = BaseModel.__dict__["__dict__"].__set__
_SET_FIELDS_SET = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_SET_EXTRA = BaseModel.__dict__["__pydantic_extra__"].__set__
_SET_PRIVATE = BaseModel.__dict__["__pydantic_private__"].__set__


class Unreadable(ValueError):
    """The bytes are not a datum of the schema (the caller decodes them the usual way)."""


def read_long(b: bytes, p: int) -> tuple[int, int]:
    """A zig-zag varint (Avro int and long) at ``p``, kept to 64 bits as fastavro keeps it.
    Longer than 10 bytes: not read here (fastavro's result then depends on its C shifts).
    Unrolled (no loop, no shift count): dates take 3 bytes, timestamps 6."""
    c = b[p]
    if c < 0x80:
        return (c >> 1) ^ -(c & 1), p + 1
    n = c & 0x7F
    c = b[p + 1]
    if c < 0x80:
        n |= c << 7
        return (n >> 1) ^ -(n & 1), p + 2
    n |= (c & 0x7F) << 7
    c = b[p + 2]
    if c < 0x80:
        n |= c << 14
        return (n >> 1) ^ -(n & 1), p + 3
    n |= (c & 0x7F) << 14
    c = b[p + 3]
    if c < 0x80:
        n |= c << 21
        return (n >> 1) ^ -(n & 1), p + 4
    n |= (c & 0x7F) << 21
    c = b[p + 4]
    if c < 0x80:
        n |= c << 28
        return (n >> 1) ^ -(n & 1), p + 5
    n |= (c & 0x7F) << 28
    c = b[p + 5]
    if c < 0x80:
        n |= c << 35
        return (n >> 1) ^ -(n & 1), p + 6
    n |= (c & 0x7F) << 35
    c = b[p + 6]
    if c < 0x80:
        n |= c << 42
        return (n >> 1) ^ -(n & 1), p + 7
    n |= (c & 0x7F) << 42
    c = b[p + 7]
    if c < 0x80:
        n |= c << 49
        return (n >> 1) ^ -(n & 1), p + 8
    n |= (c & 0x7F) << 49
    c = b[p + 8]
    if c < 0x80:
        n |= c << 56
        return (n >> 1) ^ -(n & 1), p + 9
    n |= (c & 0x7F) << 56
    c = b[p + 9]
    if c < 0x80:
        n = (n | c << 63) & 0xFFFF_FFFF_FFFF_FFFF
        return (n >> 1) ^ -(n & 1), p + 10
    raise Unreadable("varint longer than 10 bytes")


def read_long_looped(b: bytes, p: int) -> tuple[int, int]:
    """``read_long`` as a loop: the reference its unrolled form is tested against."""
    n = 0
    shift = 0
    while True:
        c = b[p]
        p += 1
        n |= (c & 0x7F) << shift
        if c < 0x80:
            n &= 0xFFFF_FFFF_FFFF_FFFF
            return (n >> 1) ^ -(n & 1), p
        shift += 7
        if shift > 63:
            raise Unreadable("varint longer than 10 bytes")


def read_length(b: bytes, p: int) -> tuple[int, int]:
    """The length of a string or bytes at ``p``: a long that must not be negative."""
    n, p = read_long(b, p)
    if n < 0:
        raise Unreadable("negative length")
    return n, p


def union_index(b: bytes, p: int, count: int) -> tuple[int, int]:
    """A union's branch index written in more than one byte, as the one-byte code of the
    same branch (2 * index; a negative index counts from the end)."""
    i, p = read_long(b, p)
    if i < 0:
        i += count
    if not 0 <= i < count:
        raise Unreadable("union branch out of range")
    return 2 * i, p


#: A one-byte varint's value (a byte below 0x80).
ZIGZAG = tuple((n >> 1) ^ -(n & 1) for n in range(128))
#: A one-byte length's value; -1 for a byte that is not one (longer, or negative).
LENGTH = tuple(n >> 1 if n < 0x80 and not n & 1 else -1 for n in range(256))
#: Where the bytes of a one-byte length end, from the length's position (the length + 1);
#: 0 for a byte that is not one.
ENDS = tuple(n + 1 if n >= 0 else 0 for n in LENGTH)

#: A length from 64 to 8191 by its two bytes (a string that long: notes, descriptions),
#: for the generated source: a slice and a lookup instead of a call to ``read_length``.
LENGTH2 = {bytes([(z & 0x7F) | 0x80, z >> 7]): n for n in range(64, 8192) for z in (n << 1,)}

_DATES: dict[int, date] = {}
#: The dates read so far by their varint's bytes, 3 of them (1900 to 1947, 1992 to 4840),
#: for the generated source: a 3-byte slice looked up instead of a call to ``read_long``
#: (which cost more than the rest of reading a date: 250 ns of a date's 330). Only 3-byte
#: varints: a shorter one would match the shorter slice at the end of the bytes.
DATE_BYTES: dict[bytes, date] = {}
#: The same for 2-byte varints (1947 to 1992: birth dates), looked up by ``read_date``.
DATE_BYTES2: dict[bytes, date] = {}


def _date(days: int) -> date:
    """fastavro's date: the day ``days`` after 1970-01-01 (kept: a few thousand dates)."""
    found = _DATES.get(days)
    if found is None:
        found = date.fromordinal(days + _DAYS_SHIFT)
        if len(_DATES) < 100_000:
            _DATES[days] = found
    return found


def read_date(b: bytes, p: int) -> tuple[date, int]:
    """fastavro's date at ``p`` (a date not found by 3 bytes), kept by its bytes."""
    found = DATE_BYTES2.get(b[p : p + 2])
    if found is not None:
        return found, p + 2
    start = p
    days, p = read_long(b, p)
    found = _date(days)
    kept = {2: DATE_BYTES2, 3: DATE_BYTES}.get(p - start)
    if kept is not None and len(kept) < 100_000:
        kept[b[start:p]] = found
    return found, p


#: The instant of a timestamp-millis by the last 4 bytes of its 6-byte varint (the times
#: from 2004 to 2109), its low 13 bits of milliseconds zero: one per 8.2 seconds. The
#: generated source adds the low bits (the varint's first two bytes) from two tables of
#: timedeltas. Making the datetime cost 870 ns (the 6-byte varint 500, the timedelta of
#: milliseconds 280, the sum 40), 3 of them in a ValidatedEncounter; this way about 200.
TIMESTAMPS: dict[bytes, datetime] = {}
#: Milliseconds 0, 64, ..., 8128 and 0 to 63, as timedeltas (a timedelta made costs 280 ns).
MS_HIGH = tuple(timedelta(milliseconds=64 * i) for i in range(128))
MS_LOW = tuple(timedelta(milliseconds=i) for i in range(64))


def read_timestamp(b: bytes, p: int) -> tuple[datetime, int]:
    """fastavro's timestamp-millis at ``p`` (one not found in ``TIMESTAMPS``): the epoch +
    millis * 1000 µs; the instant of its 8.2 seconds kept for the next ones."""
    start = p
    millis, p = read_long(b, p)
    found = _EPOCH + timedelta(0, 0, millis * 1000)
    if p - start == 6 and millis >= 0:
        if len(TIMESTAMPS) >= 10_000:
            TIMESTAMPS.clear()
        TIMESTAMPS[b[start + 2 : p]] = _EPOCH + timedelta(0, 0, (millis & ~0x1FFF) * 1000)
    return found, p


def _time_millis(millis: int) -> time:
    # fastavro's arithmetic, including its float divisions
    h = int(millis / 3_600_000)
    m = int(millis / 60_000) % 60
    s = int(millis / 1000) % 60
    mls = int(millis % 1000) * 1000
    return time(h, m, s, mls)


def _decimal(scale: int, precision: int) -> tuple[dict[bytes, Decimal], Callable[[bytes], Decimal]]:
    """fastavro's decimal of ``scale`` and ``precision`` from its big-endian bytes, and
    those made so far by their bytes (kept: amounts repeat; a Decimal is immutable; the
    generated source looks there before it calls)."""
    context = Context(prec=precision)
    kept: dict[bytes, Decimal] = {}

    def convert(data: bytes) -> Decimal:
        found = kept.get(data)
        if found is None:
            unscaled = int.from_bytes(data, byteorder="big", signed=True)
            found = context.create_decimal(unscaled).scaleb(-scale, context)
            if len(kept) < 100_000:
                kept[data] = found
        return found

    return kept, convert


def model_of(annotation: Any) -> type[models.Model] | None:
    """The model class a field holds (itself, optional, or in a list or map), if any: what
    the trusted build builds that field's records as (``serde.model_builder``)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return model_of(get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, models.Model):
        return annotation
    if origin in (Union, types.UnionType, list, dict):
        found = {m for a in get_args(annotation) if (m := model_of(a)) is not None}
        if len(found) > 1:
            raise TypeError(f"a field of several record models: {annotation}")
        return found.pop() if found else None
    return None


#: Records that repeat across data, kept by their bytes (see the module's docstring): the
#: providers and the facility (a few hundred per hospital, on every encounter), the
#: documented and the coded diagnoses (common codes), the MS-DRG. Measured on the coding
#: benchmark's encounters: 5-18 distinct providers and facilities in 1,000 encounters, 94-205
#: distinct diagnoses in 1,800; the validation edits hit (a rule's message, 2 a
#: ValidatedEncounter) all repeat in 300 offline-chain encounters. A record that does not
#: repeat (a patient: 35% of them in those 300, a service line: 1%) is not kept: stepping
#: over its bytes first would only cost.
KEPT: tuple[type[models.Model], ...] = (
    models.EditHit,
    models.Provider,
    models.Facility,
    models.DocumentedDiagnosis,
    models.CodedDiagnosis,
    models.Drg,
)
#: The most records of one type and place a reader keeps; when full it starts afresh.
KEPT_LIMIT = 4096
#: A kept record is looked up first by its first bytes (up to 8 records for each such
#: start): one the bytes at the position start with (``bytes.startswith``, in C) is the
#: record there, since reading a record reads exactly its bytes whatever follows them.
#: Stepping over a record to find its bytes cost more than reading its strings (a provider:
#: about 1 us).
KEPT_PREFIX = 16
#: Records of this many fields or more get their dict as a copy of a template (see
#: ``_record_body``); smaller ones by a dict display.
TEMPLATE_FIELDS = 12


class _Gen(SourceGen):
    """Python source for reading one schema's values: a function per record type and model."""

    def __init__(self, named: dict[str, Any]) -> None:
        env: dict[str, Any] = {
            "read_long": read_long,
            "read_length": read_length,
            "union_index": union_index,
            "ZIGZAG": ZIGZAG,
            "LENGTH": LENGTH,
            "ENDS": ENDS,
            "Unreadable": Unreadable,
            "unpack_float": _unpack_float,
            "unpack_double": _unpack_double,
            "read_date": read_date,
            "DATE_BYTES": DATE_BYTES,
            "LENGTH2": LENGTH2,
            "TIMESTAMPS": TIMESTAMPS,
            "MS_HIGH": MS_HIGH,
            "MS_LOW": MS_LOW,
            "read_timestamp": read_timestamp,
            "time_millis": _time_millis,
            "new": object.__new__,
            "set_dict": _SET_DICT,
            "set_fields_set": _SET_FIELDS_SET,
            "set_extra": _SET_EXTRA,
            "set_private": _SET_PRIVATE,
            "KEPT_LIMIT": KEPT_LIMIT,
        }
        super().__init__(named, env)
        self.inlining: set[tuple[str, Any]] = set()
        #: Whether the function being generated reads a kept record (it then needs ``used``).
        self.keeps = False

    # --- values ------------------------------------------------------------------------

    def long(self, out: str, ind: str) -> list[str]:
        """Read an int or long into ``out`` (one byte by a table, longer ones by a call)."""
        return [
            f"{ind}{out} = b[p]",
            f"{ind}if {out} < 128:",
            f"{ind}    {out} = ZIGZAG[{out}]",
            f"{ind}    p += 1",
            f"{ind}else:",
            f"{ind}    {out}, p = read_long(b, p)",
        ]

    def sized(self, out: str, ind: str, then: str = "") -> list[str]:
        """Read a length-prefixed byte string into ``out`` (bytes; ``then``: a method call
        on them). A length past the end is caught once, at the end of the datum. A one-byte
        length gives its end (``ENDS``): two additions instead of five (a string's read took
        83 ns instead of 88)."""
        n, end = self.name("n"), self.name("q")
        return [
            f"{ind}{n} = ENDS[b[p]]",
            f"{ind}if {n}:",
            f"{ind}    {end} = p + {n}",
            f"{ind}    {out} = b[p + 1:{end}]{then}",
            f"{ind}    p = {end}",
            f"{ind}else:",
            *self.long_length(n, ind + "    "),
            f"{ind}    {out} = b[p:p + {n}]{then}",
            f"{ind}    p += {n}",
        ]

    def long_length(self, n: str, ind: str) -> list[str]:
        """Read a length of more than one byte into ``n``: two bytes by a table."""
        return [
            f"{ind}{n} = LENGTH2.get(b[p:p + 2])",
            f"{ind}if {n} is None:",
            f"{ind}    {n}, p = read_length(b, p)",
            f"{ind}else:",
            f"{ind}    p += 2",
        ]

    def value(self, schema: Any, out: str, ind: str, model: Any) -> list[str]:
        """Lines that read a value of ``schema`` into ``out``; records as ``model`` when a
        model, else as dicts (what fastavro gives)."""
        if isinstance(schema, str):
            if schema in self.named:
                return self.value(self.named[schema], out, ind, model)
            return self.primitive(schema, out, ind)
        if isinstance(schema, list):
            return self.union(schema, out, ind, model)
        kind = schema["type"]
        if kind == "record":  # read in place: no call, no (value, position) tuple
            return self.inline(schema, model, out, ind)
        if kind == "enum":
            symbols = self.constant("symbols", tuple(schema["symbols"]))
            i = self.name("i")
            # a negative index counts from the end, as fastavro reads it
            return [*self.long(i, ind), f"{ind}{out} = {symbols}[{i}]"]
        if kind == "fixed":
            if f"fixed-{schema.get('logicalType')}" in LOGICAL_READERS:
                raise Unsupported(f"logical type {schema['logicalType']} of a fixed")
            size = int(schema["size"])
            return [
                f"{ind}if p + {size} > len(b):",
                f"{ind}    raise Unreadable('short fixed')",
                f"{ind}{out} = b[p:p + {size}]",
                f"{ind}p += {size}",
            ]
        if kind == "array":
            return self.array(schema, out, ind, model)
        if kind == "map":
            return self.map(schema, out, ind, model)
        logical = schema.get("logicalType")
        if kind == "int" and logical == "date":  # the date kept by its bytes, else read
            return [
                f"{ind}{out} = DATE_BYTES.get(b[p:p + 3])",
                f"{ind}if {out} is None:",
                f"{ind}    {out}, p = read_date(b, p)",
                f"{ind}else:",
                f"{ind}    p += 3",
            ]
        if kind == "long" and logical == "timestamp-millis":
            return self.timestamp(out, ind)
        lines = self.primitive(kind, out, ind)
        if logical is None:
            return lines
        match f"{kind}-{logical}":
            case "int-time-millis":
                lines.append(f"{ind}{out} = time_millis({out})")
            case "bytes-decimal":
                kept, make = _decimal(int(schema.get("scale", 0)), int(schema["precision"]))
                kept_name, convert = self.constant("kept", kept), self.constant("decimal", make)
                d = self.name("d")
                lines += [
                    f"{ind}{d} = {kept_name}.get({out})",
                    f"{ind}{out} = {convert}({out}) if {d} is None else {d}",
                ]
            case other if other in LOGICAL_READERS:  # one fastavro converts, not here
                raise Unsupported(f"logical type {other}")
        return lines

    def timestamp(self, out: str, ind: str) -> list[str]:
        """Read a timestamp-millis (fastavro's: the epoch + millis * 1000 µs) into ``out``: a
        6-byte varint of a positive value (the first byte even) from the instant kept for its
        last 4 bytes (``TIMESTAMPS``) and the milliseconds of its first two; else read."""
        c, low = self.name("c"), self.name("m")
        return [
            f"{ind}{out} = TIMESTAMPS.get(b[p + 2:p + 6])",
            f"{ind}{c} = b[p]",
            f"{ind}if {out} is not None and {c} & 0x81 == 0x80 and b[p + 1] >= 0x80:",
            f"{ind}    {low} = ({c} & 0x7F | (b[p + 1] & 0x7F) << 7) >> 1",
            f"{ind}    {out} = {out} + MS_HIGH[{low} >> 6] + MS_LOW[{low} & 63]",
            f"{ind}    p += 6",
            f"{ind}else:",
            f"{ind}    {out}, p = read_timestamp(b, p)",
        ]

    def primitive(self, kind: str, out: str, ind: str) -> list[str]:
        match kind:
            case "null":
                return [f"{ind}{out} = None"]
            case "boolean":
                return [f"{ind}{out} = b[p] != 0", f"{ind}p += 1"]  # as fastavro reads it
            case "int" | "long":
                return self.long(out, ind)
            case "float":
                return [f"{ind}{out} = unpack_float(b, p)[0]", f"{ind}p += 4"]
            case "double":
                return [f"{ind}{out} = unpack_double(b, p)[0]", f"{ind}p += 8"]
            case "bytes":
                return self.sized(out, ind)
            case "string":
                return self.sized(out, ind, ".decode()")
        raise Unsupported(f"type {kind}")

    def union_code(self, i: str, count: int, ind: str) -> list[str]:
        """Read a union's branch code into ``i``. The branch index is a zig-zag varint:
        2 * index in one byte up to index 63. A negative index counts from the end, as
        fastavro reads it (Python's indexing): -1 is code 1."""
        return [
            f"{ind}{i} = b[p]",
            f"{ind}if {i} < 128:",
            f"{ind}    p += 1",
            f"{ind}else:",
            f"{ind}    {i}, p = union_index(b, p, {count})",
        ]

    def union(self, schema: list[Any], out: str, ind: str, model: Any) -> list[str]:
        i = self.name("u")
        count = len(schema)
        if count == 2 and schema[0] == "null":
            # Null first (every one of the contracts' 431 optional values): its code 0 tested
            # alone, then as below; a null read with one test instead of three.
            return [
                f"{ind}{i} = b[p]",
                f"{ind}if {i} == 0:",
                f"{ind}    p += 1",
                f"{ind}    {out} = None",
                f"{ind}else:",
                f"{ind}    if {i} < 4:",
                f"{ind}        p += 1",
                f"{ind}    else:",
                f"{ind}        {i}, p = union_index(b, p, 2)",
                f"{ind}    if {i} == 3 or {i} == 0:",
                f"{ind}        {out} = None",
                f"{ind}    else:",
                *self.value(schema[1], out, ind + "        ", model),
            ]
        if count == 2:
            # Codes 0 and 3 (index 0 and -2) are the first branch, 1 and 2 the second; any
            # other one-byte code is out of range (``union_index`` raises).
            return [
                f"{ind}{i} = b[p]",
                f"{ind}if {i} < 4:",
                f"{ind}    p += 1",
                f"{ind}else:",
                f"{ind}    {i}, p = union_index(b, p, 2)",
                f"{ind}if {i} == 0 or {i} == 3:",
                *self.value(schema[0], out, ind + "    ", model),
                f"{ind}else:",
                *self.value(schema[1], out, ind + "    ", model),
            ]
        lines = self.union_code(i, count, ind)
        for index, branch in enumerate(schema):
            codes = f"{i} == {2 * index} or {i} == {2 * (count - index) - 1}"
            lines.append(f"{ind}{'if' if index == 0 else 'elif'} {codes}:")
            lines += self.value(branch, out, ind + "    ", model)
        lines += [f"{ind}else:", f"{ind}    raise Unreadable('union branch out of range')"]
        return lines

    def blocks(self, ind: str, item: list[str]) -> list[str]:
        """An array's or map's blocks: a count (negative: followed by the block's size in
        bytes), then that many items, until a count of zero."""
        n, size = self.name("n"), self.name("z")
        return [
            f"{ind}while True:",
            *self.long(n, ind + "    "),
            f"{ind}    if {n} == 0:",
            f"{ind}        break",
            f"{ind}    if {n} < 0:",
            f"{ind}        {n} = -{n}",
            *self.long(size, ind + "        "),
            f"{ind}    for _ in range({n}):",
            *(item or [f"{ind}        pass"]),
        ]

    def array(self, schema: dict[str, Any], out: str, ind: str, model: Any) -> list[str]:
        x = self.name("x")
        item = self.value(schema["items"], x, ind + "            ", model)
        return [
            f"{ind}{out} = []",
            f"{ind}if b[p] == 0:",  # empty (half the lists of an encounter): no loop
            f"{ind}    p += 1",
            f"{ind}else:",
            *self.blocks(ind + "    ", [*item, f"{ind}            {out}.append({x})"]),
        ]

    def map(self, schema: dict[str, Any], out: str, ind: str, model: Any) -> list[str]:
        k, x = self.name("k"), self.name("x")
        key = self.primitive("string", k, ind + "        ")
        item = self.value(schema["values"], x, ind + "        ", model)
        return [
            f"{ind}{out} = {{}}",
            *self.blocks(ind, [*key, *item, f"{ind}        {out}[{k}] = {x}"]),
        ]

    def record(self, schema: dict[str, Any], model: Any) -> str:
        """The name of the function ``(b, p=0)`` that reads a datum, a record of ``schema``
        (as ``model`` when a model: the trusted build's object; else the dict fastavro
        gives), from ``b`` at ``p``. The records in it are read in place, in its body; a
        length past the end of ``b`` is caught here, once, at the end of the datum."""

        def body() -> list[str]:
            self.keeps = False
            lines = self.inline(schema, model, "obj", "    ", top=True)
            # the bytes of the kept records given in this datum (none is given twice)
            used = ["    used = set()"] if self.keeps else []
            return [
                *used,
                *lines,
                "    if p > len(b):",
                "        raise Unreadable('the datum ends before its last value')",
                "    return obj",
            ]

        return self.function(schema, model, "(b, p=0)", body)

    def inline(
        self, schema: dict[str, Any], model: Any, out: str, ind: str, top: bool = False
    ) -> list[str]:
        """Lines that read a record of ``schema`` into ``out`` where they stand (a record
        that contains itself is not generated: there is no end to it); a ``KEPT`` one, not
        the datum itself, is looked up by its bytes first."""
        key = (schema["name"], model)
        if key in self.inlining:
            raise Unsupported(f"the record {schema['name']} contains itself")
        self.inlining.add(key)
        try:
            if top or model not in KEPT:
                return self._record_body(schema, model, out, ind)
            return self._kept(schema, model, out, ind)
        finally:
            self.inlining.discard(key)

    def _kept(self, schema: dict[str, Any], model: Any, out: str, ind: str) -> list[str]:
        """A kept record: found among those read before by the bytes it starts with (any
        found there is the record: see ``KEPT_PREFIX``), else its bytes stepped over and
        looked up; read (and kept, when all its bytes are there) when not found, or when the
        model found was already given in this datum."""
        self.keeps = True
        kept = self.constant("records_kept", {})
        index = self.constant("records_by_prefix", {})
        start, span, found = self.name("s"), self.name("k"), self.name("m")
        known, model_known, listed = self.name("c"), self.name("o"), self.name("l")
        return [
            f"{ind}{found} = None",
            f"{ind}{known} = {index}.get(b[p:p + {KEPT_PREFIX}])",
            f"{ind}if {known} is not None:",
            f"{ind}    for {span}, {model_known} in {known}:",
            f"{ind}        if b.startswith({span}, p):",
            f"{ind}            if {span} not in used:",
            f"{ind}                {found} = {model_known}",
            f"{ind}            break",
            f"{ind}if {found} is not None:",
            f"{ind}    {out} = {found}",
            f"{ind}    p += len({span})",
            f"{ind}else:",
            f"{ind}    {start} = p",
            *self.skip(schema, ind + "    "),
            f"{ind}    {span} = b[{start}:p]",
            f"{ind}    {found} = {kept}.get({span})",
            f"{ind}    if {found} is None or {span} in used:",
            f"{ind}        p = {start}",
            *self._record_body(schema, model, out, ind + "        "),
            f"{ind}        if {found} is None and p <= len(b):",
            f"{ind}            if len({kept}) >= KEPT_LIMIT:",
            f"{ind}                {kept}.clear()",
            f"{ind}                {index}.clear()",
            f"{ind}            {kept}[{span}] = {out}",
            f"{ind}            {listed} = b[{start}:{start} + {KEPT_PREFIX}]",
            f"{ind}            {listed} = {index}.setdefault({listed}, [])",
            f"{ind}            if len({listed}) < 8:",
            f"{ind}                {listed}.append(({span}, {out}))",
            f"{ind}    else:",
            f"{ind}        {out} = {found}",
            f"{ind}used.add({span})",
        ]

    # --- stepping over a value ---------------------------------------------------------

    def skip(self, schema: Any, ind: str) -> list[str]:
        """Lines that move ``p`` past a value of ``schema``, as reading it moves it, without
        making the value (a kept record's bytes are found so; they are read if not kept)."""
        if isinstance(schema, str):
            if schema in self.named:
                return self.skip(self.named[schema], ind)
            return self.skip_primitive(schema, ind)
        if isinstance(schema, list):
            return self.skip_union(schema, ind)
        kind = schema["type"]
        if kind == "record":
            return [line for f in schema["fields"] for line in self.skip(f["type"], ind)]
        if kind == "enum":
            return self.skip_primitive("long", ind)
        if kind == "fixed":
            return [f"{ind}p += {int(schema['size'])}"]
        if kind == "array":
            return self.blocks(ind, self.skip(schema["items"], ind + "        "))
        if kind == "map":
            key = self.skip_primitive("string", ind + "        ")
            return self.blocks(ind, [*key, *self.skip(schema["values"], ind + "        ")])
        return self.skip_primitive(kind, ind)

    def skip_primitive(self, kind: str, ind: str) -> list[str]:
        match kind:
            case "null":
                return []
            case "boolean":
                return [f"{ind}p += 1"]
            case "int" | "long":
                return [
                    f"{ind}if b[p] < 128:",
                    f"{ind}    p += 1",
                    f"{ind}else:",
                    f"{ind}    p = read_long(b, p)[1]",
                ]
            case "float":
                return [f"{ind}p += 4"]
            case "double":
                return [f"{ind}p += 8"]
            case "bytes" | "string":
                n = self.name("n")
                return [
                    f"{ind}{n} = LENGTH[b[p]]",
                    f"{ind}if {n} >= 0:",
                    f"{ind}    p += 1 + {n}",
                    f"{ind}else:",
                    *self.long_length(n, ind + "    "),
                    f"{ind}    p += {n}",
                ]
        raise Unsupported(f"type {kind}")

    def skip_union(self, schema: list[Any], ind: str) -> list[str]:
        i = self.name("u")
        count = len(schema)
        lines = self.union_code(i, count, ind)
        branches: list[str] = []
        for index, branch in enumerate(schema):
            body = self.skip(branch, ind + "    ")
            if body:  # null: nothing to step over
                codes = f"{i} == {2 * index} or {i} == {2 * (count - index) - 1}"
                branches += [f"{ind}{'elif' if branches else 'if'} {codes}:", *body]
        return lines + branches

    def _record_body(self, schema: dict[str, Any], model: Any, out: str, ind: str) -> list[str]:
        body: list[str] = []
        values: dict[str, str] = {}
        for field in schema["fields"]:
            var = self.name("f")
            inner = None
            if model is not None and field["name"] in model.model_fields:
                inner = model_of(model.model_fields[field["name"]].annotation)
            body += self.value(field["type"], var, ind, inner)
            values[field["name"]] = var
        if model is None:
            items = ", ".join(f"{name!r}: {var}" for name, var in values.items())
            body.append(f"{ind}{out} = {{{items}}}")
        else:
            parts = []
            for name, info in model.model_fields.items():
                if name in values:
                    parts.append((repr(name), values[name]))
                else:  # not in the schema: the default, as the trusted build fills it
                    default = self.constant("default", info)
                    parts.append((repr(name), f"{default}.get_default(call_default_factory=True)"))
            cls = self.constant("M", model)
            if model.model_config.get("frozen"):
                # One set for every instance of a frozen model: pydantic never changes a
                # frozen model's set (assignment raises first; ``model_copy`` copies it),
                # and making one per model cost 95 ns: 2 us of reading a ValidatedEncounter
                # (22 models).
                fields_set = self.constant("FS", set(model.model_fields))
            else:
                fields_set = f"set({self.constant('FS', frozenset(model.model_fields))})"
            if len(parts) >= TEMPLATE_FIELDS:
                # A copy of a dict of the model's keys, then each value stored: the dict
                # display cost more (an Encounter's 35 fields: 1.27 us, the copy and stores
                # 0.66; equal at 11 fields). The keys keep their order.
                template = self.constant("T", dict.fromkeys(model.model_fields))
                d = self.name("d")
                body += [f"{ind}{d} = {template}.copy()"]
                body += [f"{ind}{d}[{part}] = {value}" for part, value in parts]
                body += [f"{ind}{out} = new({cls})", f"{ind}set_dict({out}, {d})"]
            else:
                items = ", ".join(f"{part}: {value}" for part, value in parts)
                body += [f"{ind}{out} = new({cls})", f"{ind}set_dict({out}, {{{items}}})"]
            body += [
                f"{ind}set_fields_set({out}, {fields_set})",
                f"{ind}set_extra({out}, None)",
                f"{ind}set_private({out}, None)",
            ]
        return body


def reader_for(
    schema: dict[str, Any], named: dict[str, Any], model: type[models.Model] | None
) -> Callable[[bytes, int], Any] | None:
    """A function from bytes and the position of a datum in them to ``model`` (None: the
    dict fastavro reads), for data written with ``schema`` (fastavro-parsed, ``named`` its
    named types); None when the schema uses what this generator does not read."""
    gen = _Gen(named)
    try:
        top = gen.record(schema, model)
    except TypeError:  # Unsupported among them
        return None
    title = schema["name"] if model is None else model.__name__
    read: Callable[[bytes, int], Any] = gen.compiled(top, f"<avro reader of {title}>")
    return read


def difference(a: Any, b: Any, where: str = "") -> str | None:
    """Where ``a`` and ``b`` differ, in a value or in a type (models field by field, and
    the fields each has set; lists, dicts in order; anything else equal with the same repr:
    Decimal('1.5') and Decimal('1.50') differ); None when they do not."""
    if type(a) is not type(b):
        return f"{where or '.'}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, BaseModel):
        if a.__pydantic_fields_set__ != b.__pydantic_fields_set__:
            return f"{where or '.'}: fields set"
        if list(a.__dict__) != list(b.__dict__):
            return f"{where or '.'}: fields"
        for name, value in a.__dict__.items():
            if (found := difference(value, b.__dict__[name], f"{where}.{name}")) is not None:
                return found
        return None
    if isinstance(a, list | tuple):
        if len(a) != len(b):
            return f"{where or '.'}: {len(a)} vs {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if (found := difference(x, y, f"{where}[{i}]")) is not None:
                return found
        return None
    if isinstance(a, dict):
        if list(a) != list(b):
            return f"{where or '.'}: keys"
        for i, (key, value) in enumerate(a.items()):  # keys may be PHI: named by position
            if (found := difference(value, b[key], f"{where}[key {i}]")) is not None:
                return found
        return None
    if a != b or repr(a) != repr(b):
        return where or "."
    return None
