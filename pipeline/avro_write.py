"""A writer generated per contract: a model straight to Avro bytes.

``Registry.encode`` of a model used to take two passes: the compiled dump
(``serde.record_dumper``) made a dict per record, and fastavro's ``schemaless_writer``
walked the schema again over it, finding each union's branch and each logical type's
conversion as it went. The writer here is the reader's twin (``pipeline/avro_read.py``):
Python source generated once per (schema, model), one function per record type that
writes its fields one after the other from the model's ``__dict__`` into a bytearray,
with no intermediate dict and no schema lookups. It writes the bytes fastavro writes for
the same record (tests/unit/test_avro_write.py holds that on every record of the corpora
and on edge values, and ``serde.VERIFY_ENCODE_ENV`` makes every encode of the test suite
check it).

It writes only the values it knows fastavro writes the same way (strings, ints within 64
bits, floats, booleans, bytes, Decimals, dates, times and datetimes); anything else raises,
and the caller then writes the record with fastavro, which gives fastavro's bytes or
fastavro's error. A schema it does not write (a union of several types besides null, a
record that contains itself, a field the model lacks) gives no writer: ``writer_for``
returns None.
"""

from __future__ import annotations

import struct
import time as _time
import types
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from decimal import Decimal
from functools import cache
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from fastavro.write import LOGICAL_WRITERS
from pydantic import BaseModel

from pipeline import models
from pipeline.avro_read import model_of
from pipeline.codegen import SourceGen, Unsupported

#: Write one record (a model instance) at the end of the bytearray.
Write = Callable[[Any, bytearray], None]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAYS_SHIFT = date(1970, 1, 1).toordinal()
_LONG_MIN = -(1 << 63)
_LONG_MAX = (1 << 63) - 1


class Unwritable(TypeError):
    """A value this writer leaves to fastavro (the caller writes the record with it)."""


def _varint(n: int) -> bytes:
    """The varint of a non-negative ``n``, unrolled up to 6 bytes (a timestamp-millis: the
    loop, ``_varint_looped``, took 515 ns of the 1,070 writing one took; this, 400)."""
    if n < 0x4000:
        return bytes((n,)) if n < 0x80 else bytes((n & 0x7F | 0x80, n >> 7))
    if n < 1 << 28:
        if n < 1 << 21:
            return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14))
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80, n >> 21))
    if n < 1 << 42:
        if n < 1 << 35:
            return bytes(
                (
                    n & 0x7F | 0x80,
                    n >> 7 & 0x7F | 0x80,
                    n >> 14 & 0x7F | 0x80,
                    n >> 21 & 0x7F | 0x80,
                    n >> 28,
                )
            )
        return bytes(
            (
                n & 0x7F | 0x80,
                n >> 7 & 0x7F | 0x80,
                n >> 14 & 0x7F | 0x80,
                n >> 21 & 0x7F | 0x80,
                n >> 28 & 0x7F | 0x80,
                n >> 35,
            )
        )
    return _varint_looped(n)


def _varint_looped(n: int) -> bytes:
    """``_varint`` as a loop: the reference its unrolled form is tested against."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _zigzag(v: int) -> bytes:
    return _varint((v << 1) ^ (v >> 63))


#: The bytes of an int or long from -64 to 63 (one byte), at ``value + 64``.
SMALL = tuple(_zigzag(v) for v in range(-64, 64))
#: The bytes of a length (a long) below 1024.
LENGTHS = tuple(_zigzag(n) for n in range(1024))
#: The same after the code of a ``["null", "string"]`` union's string: one append less for
#: each optional string written (143 ns instead of 162).
PRESENT = tuple(b"\x02" + length for length in LENGTHS)

_LONGS: dict[int, bytes] = {}


def long_bytes(v: int) -> bytes:
    """An int or long as fastavro writes it: zig-zag varint of a 64-bit value. Anything but
    an int (a float, a Decimal) or one beyond 64 bits is left to fastavro, which raises."""
    if type(v) is not int:  # bool is written from the one-byte table
        raise Unwritable(f"not an int: {type(v).__name__}")
    found = _LONGS.get(v)
    if found is None:
        found = _long(v)
        if len(_LONGS) >= 50_000:
            _LONGS.clear()
        _LONGS[v] = found
    return found


def _long(v: int) -> bytes:
    """``long_bytes`` of an int not kept (a timestamp: each one new)."""
    if not _LONG_MIN <= v <= _LONG_MAX:
        raise Unwritable("an int beyond 64 bits")
    return _varint((v << 1) ^ (v >> 63))  # _zigzag's, one call fewer


def length_bytes(n: int) -> bytes:
    return LENGTHS[n] if n < 1024 else long_bytes(n)


_DATES: dict[date, bytes] = {}


def date_bytes(v: Any) -> bytes:
    """fastavro's date: the days since 1970-01-01 (kept: a few thousand dates)."""
    if type(v) is not date:  # a datetime, a string, an int: fastavro's own conversions
        raise Unwritable(f"not a date: {type(v).__name__}")
    found = _DATES.get(v)
    if found is None:
        found = long_bytes(v.toordinal() - _DAYS_SHIFT)
        if len(_DATES) >= 50_000:
            _DATES.clear()
        _DATES[v] = found
    return found


def timestamp_bytes(v: Any, per_second: int) -> bytes:
    """fastavro's timestamp-millis (``per_second`` 1000) or -micros (1_000_000), its
    arithmetic included: an aware datetime from the epoch in UTC, a naive one as local time
    (``time.mktime``), each truncated to the unit."""
    if type(v) is not datetime:
        raise Unwritable(f"not a datetime: {type(v).__name__}")
    if v.tzinfo is not None:
        delta = v - _EPOCH
        seconds = delta.days * 86400 + delta.seconds
        micros = delta.microseconds
    else:
        seconds = int(_time.mktime(v.timetuple()))
        micros = v.microsecond
    return _long(seconds * per_second + int(micros / (1_000_000 // per_second)))


_STAMPS: dict[datetime, bytes] = {}
_TAILS: dict[int, bytes] = {}
#: The varint byte of 7 bits that more bytes follow.
_CONTINUED = tuple(bytes((n | 0x80,)) for n in range(128))


def timestamp_millis_bytes(v: Any) -> bytes:
    """``timestamp_bytes(v, 1000)``, quicker for an aware datetime (930 ns; this, 650, and 90
    for an instant written before: one instant is written in several records, an 835's
    received_at on each of its postings, a coded encounter's coded_at on its audit). Aware
    datetimes equal as instants have the same bytes (fastavro writes the instant). From 1970
    to 2039 the varint is 6 bytes or fewer: two bytes of the low 14 bits of the zig-zagged
    value, then the varint of the rest, kept (one per 8.2 s)."""
    if type(v) is not datetime or v.tzinfo is None:
        return timestamp_bytes(v, 1000)
    found = _STAMPS.get(v)
    if found is None:
        delta = v - _EPOCH
        millis = (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000
        if 0x2000 <= millis < 1 << 41:
            zigzag = millis << 1
            tail = _TAILS.get(zigzag >> 14)
            if tail is None:
                if len(_TAILS) >= 50_000:
                    _TAILS.clear()
                tail = _TAILS[zigzag >> 14] = _varint(zigzag >> 14)
            found = _CONTINUED[zigzag & 0x7F] + _CONTINUED[zigzag >> 7 & 0x7F] + tail
        else:
            found = timestamp_bytes(v, 1000)
        if len(_STAMPS) >= 10_000:
            _STAMPS.clear()
        _STAMPS[v] = found
    return found


def time_millis_bytes(v: Any) -> bytes:
    """fastavro's time-millis: the time of day in ms (its tzinfo ignored)."""
    if type(v) is not time:
        raise Unwritable(f"not a time: {type(v).__name__}")
    return _long(
        int(v.hour * 3_600_000 + v.minute * 60_000 + v.second * 1000 + int(v.microsecond / 1000))
    )


#: Each ``_decimal`` writer's bytes by the Decimal's text, for the generated source.
_DECIMALS_KEPT: dict[Callable[[Any], bytes], dict[str, bytes]] = {}


@cache  # one per (scale, precision), shared by every field and writer: bounded memory
def _decimal(scale: int, precision: int) -> Callable[[Any], bytes]:
    """fastavro's bytes-decimal of ``scale`` and ``precision``, length first: the unscaled
    value in as many bytes as its magnitude needs plus a sign bit (one more than the
    shortest for some negatives: fastavro's count). A Decimal with more digits than
    ``precision`` or a finer exponent than ``scale`` (or not finite) is left to fastavro,
    which raises. Kept by the Decimal's text, which names its sign, digits and exponent
    (what fastavro's bytes depend on) and costs a tenth of ``as_tuple()``: amounts repeat."""
    kept: dict[str, bytes] = {}

    def write(v: Any) -> bytes:
        if type(v) is not Decimal:
            raise Unwritable(f"not a Decimal: {type(v).__name__}")
        text = str(v)
        found = kept.get(text)
        if found is not None:
            return found
        if "E" in text or not text[-1].isdigit():  # an exponent written out, or not finite
            sign, digits, exp = v.as_tuple()
            count = len(digits)
            if type(exp) is not int:
                raise Unwritable("a Decimal that is not finite")
            unscaled = int("".join(map(str, digits)))
        else:  # [-]digits[.digits]: the exponent is minus the digits after the point
            sign = text[0] == "-"
            whole, _, fraction = text[sign:].partition(".")
            coefficient = (whole + fraction).lstrip("0") or "0"
            count = len(coefficient)
            exp = -len(fraction)
            unscaled = int(coefficient)
        if count > precision or exp + scale < 0:
            raise Unwritable("a Decimal the schema does not hold")
        unscaled *= 10 ** (exp + scale)
        size = (unscaled.bit_length() + 8) // 8
        data = (-unscaled if sign else unscaled).to_bytes(size, "big", signed=True)
        found = length_bytes(size) + data
        if len(kept) >= 50_000:
            kept.clear()
        kept[text] = found
        return found

    _DECIMALS_KEPT[write] = kept
    return write


_BOOLEANS = {True: b"\x01", False: b"\x00"}


#: Per model written at the top of a record, the nested record models whose instances its
#: producer shares between records: intake makes each provider, facility and diagnosis once
#: per content and hands the same object to every encounter it goes into (``_shared`` in
#: services/intake/fhir.py, the kept parts of jsonfmt.py). 2,000 encounters of the pipeline
#: benchmark's mix held 10 billing providers, 36 rendering providers, 15 facilities and 1,797
#: diagnoses of 3,627. Their bytes are kept by the instance (``_Gen.kept``): writing those
#: encounters went from 20.6 to 11.7 us each, and the intake stage's run over 300 messages of
#: that mix (after 300 others) from 458.8M to 444.8M instructions (-3.0%, callgrind).
#: The claims stage encodes both parts of an encounter split into a facility and a
#: professional claim (``claim_parts``: neither is the record it received), and the second
#: part shares the first's patient, coverage, providers, facility and diagnoses: splitting
#: and storing the 103 split encounters of 600 (206 parts) went from 128.9M to 107.3M
#: instructions (-16.8%, callgrind). Remittance's postings share theirs the same way: a CAS
#: triplet's two models (``Adjustment``, ``LineAdjustment``) are made once per triplet the 835
#: reader keeps (``posting._cas_models``), and a fee schedule repeats its triplets (6,140 of
#: the stage bench's 835s are 1,670 distinct). A verdict's edits are the validation engine's
#: (``_EDITS`` in services/validation/engine.py: one model per distinct edit, the stage
#: bench's office verdicts have two each, both shared): the simulator's 300 verdicts, each
#: with two shared edits, were written in 15.9 us each instead of 17.6 (best of 15 rounds),
#: and the validation stage's batches of bench stage_cv (200 office encounters, after a run
#: of the same) took 165.8M instructions instead of 169.7M (-2.3%, callgrind).
SHARED: dict[type[models.Model], frozenset[type[models.Model]]] = {
    models.Encounter: frozenset({models.Provider, models.Facility, models.DocumentedDiagnosis}),
    models.ValidatedEncounter: frozenset(
        {
            models.Patient,
            models.Coverage,
            models.Provider,
            models.Facility,
            models.DocumentedDiagnosis,
            models.CodedDiagnosis,
            models.EditHit,
        }
    ),
    models.RemittancePosting: frozenset((models.Adjustment, models.LineAdjustment)),
}
#: The most instances whose bytes one writer keeps per record type (as many as intake's own
#: memo of them holds): past it, they are all forgotten.
KEPT_MAX = 4096


def immutable(model: Any) -> bool:
    """Whether every instance of ``model`` keeps the values it was made with: a frozen model
    whose fields hold only immutable values (strings, numbers, booleans, dates, times,
    Decimals, None, such models), no list or dict. Only such instances' bytes may be kept."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return False
    if not model.model_config.get("frozen"):
        return False
    return all(_immutable_type(info.annotation) for info in model.model_fields.values())


_IMMUTABLE = (str, int, float, bool, date, datetime, time, Decimal, type(None))


def _immutable_type(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin is Literal:
        return all(isinstance(a, _IMMUTABLE) for a in get_args(annotation))
    if origin in (Union, types.UnionType, Annotated):
        args = get_args(annotation)
        return all(_immutable_type(a) for a in (args[:1] if origin is Annotated else args))
    if origin is not None:
        return False  # list, dict, tuple ...: not one of these
    return annotation in _IMMUTABLE or immutable(annotation)


class _Gen(SourceGen):
    """Python source for writing one schema's values: a function per record type and model.

    The bytes of an instance of a ``kept`` model are kept by its identity, with the instance
    itself (so that its id names it while they are kept), and written again from there: only
    for models whose instances cannot change (``immutable``), at most ``KEPT_MAX`` a type."""

    def __init__(self, named: dict[str, Any], kept: frozenset[Any] = frozenset()) -> None:
        self.kept = frozenset(m for m in kept if immutable(m))
        self.memos: dict[Any, str] = {}  # kept model -> the name of its memo in the source
        env: dict[str, Any] = {
            "SMALL": SMALL,
            "LENGTHS": LENGTHS,
            "PRESENT": PRESENT,
            "BOOLEANS": _BOOLEANS,
            "long_bytes": long_bytes,
            "length_bytes": length_bytes,
            "date_bytes": date_bytes,
            "timestamp_bytes": timestamp_bytes,
            "timestamp_millis_bytes": timestamp_millis_bytes,
            "DATES": _DATES,
            "STAMPS": _STAMPS,
            "Decimal": Decimal,
            "time_millis_bytes": time_millis_bytes,
            "pack_float": struct.Struct("<f").pack,
            "pack_double": struct.Struct("<d").pack,
            "Unwritable": Unwritable,
            "KEPT_MAX": KEPT_MAX,
        }
        super().__init__(named, env)

    def value(self, schema: Any, v: str, ind: str, model: Any) -> list[str]:
        """Lines that write the value in the local ``v`` as ``schema``; records from
        ``model`` instances."""
        if isinstance(schema, str):
            if schema in self.named:
                return self.value(self.named[schema], v, ind, model)
            return self.primitive(schema, v, ind)
        if isinstance(schema, list):
            return self.union(schema, v, ind, model)
        kind = schema["type"]
        if kind == "record":
            if model is None:
                raise Unsupported(f"no model for the record {schema['name']}")
            function = self.record(schema, model)
            if model not in self.kept:
                return [f"{ind}{function}({v}, out)"]
            # Looked up here, not in the function: a Python call less for each instance kept.
            hit = self.name("hit")
            return [
                f"{ind}{hit} = {self.memos[model]}.get(id({v}))",
                f"{ind}if {hit} is not None and {hit}[0] is {v}:",
                f"{ind}    out += {hit}[1]",
                f"{ind}else:",
                f"{ind}    {function}({v}, out)",
            ]
        if kind == "enum":
            codes = self.constant("enum", {s: _zigzag(i) for i, s in enumerate(schema["symbols"])})
            return [f"{ind}out += {codes}[{v}]"]  # KeyError: not a symbol, fastavro's error
        if kind == "fixed":
            if f"fixed-{schema.get('logicalType')}" in LOGICAL_WRITERS:
                raise Unsupported(f"logical type {schema['logicalType']} of a fixed")
            return [
                f"{ind}if type({v}) is not bytes or len({v}) != {int(schema['size'])}:",
                f"{ind}    raise Unwritable('not a fixed of its size')",
                f"{ind}out += {v}",
            ]
        if kind == "array":
            x, n = self.name("x"), self.name("n")
            return [
                f"{ind}{n} = len({v})",  # TypeError for None, as fastavro's
                f"{ind}if {n}:",
                f"{ind}    out += LENGTHS[{n}] if {n} < 1024 else long_bytes({n})",
                f"{ind}    for {x} in {v}:",
                *self.value(schema["items"], x, ind + "        ", model),
                f"{ind}out += b'\\x00'",
            ]
        if kind == "map":
            k, x, n = self.name("k"), self.name("x"), self.name("n")
            return [
                f"{ind}{n} = len({v})",
                f"{ind}if {n}:",
                f"{ind}    out += LENGTHS[{n}] if {n} < 1024 else long_bytes({n})",
                f"{ind}    for {k}, {x} in {v}.items():",
                *self.primitive("string", k, ind + "        "),
                *self.value(schema["values"], x, ind + "        ", model),
                f"{ind}out += b'\\x00'",
            ]
        logical = schema.get("logicalType")
        if logical is None:
            return self.primitive(kind, v, ind)
        match f"{kind}-{logical}":
            # A date, an instant or an amount written before: its bytes looked up here, without
            # the call (which looks them up first itself; a date's write took 62 ns instead of
            # 101, an amount's 144 instead of 176). What is found there is what the function
            # wrote for an equal key: a date, an aware datetime, a Decimal's text.
            case "int-date":
                x = self.name("x")
                return [
                    f"{ind}{x} = DATES.get({v})",
                    f"{ind}out += date_bytes({v}) if {x} is None else {x}",
                ]
            case "long-timestamp-millis":
                x = self.name("x")
                return [
                    f"{ind}{x} = STAMPS.get({v})",
                    f"{ind}out += timestamp_millis_bytes({v}) if {x} is None else {x}",
                ]
            case "long-timestamp-micros":
                return [f"{ind}out += timestamp_bytes({v}, 1_000_000)"]
            case "int-time-millis":
                return [f"{ind}out += time_millis_bytes({v})"]
            case "bytes-decimal":
                write = _decimal(int(schema.get("scale", 0)), int(schema["precision"]))
                convert = self.constant("decimal", write)
                kept = self.constant("decimals", _DECIMALS_KEPT[write])
                x = self.name("x")
                return [
                    f"{ind}{x} = {kept}.get(str({v})) if type({v}) is Decimal else None",
                    f"{ind}out += {convert}({v}) if {x} is None else {x}",
                ]
            case other if other in LOGICAL_WRITERS:  # one fastavro converts, not here
                raise Unsupported(f"logical type {other}")
        return self.primitive(kind, v, ind)

    def primitive(self, kind: str, v: str, ind: str) -> list[str]:
        match kind:
            case "null":
                return [f"{ind}if {v} is not None:", f"{ind}    raise Unwritable('not null')"]
            case "boolean":
                # fastavro writes any value's truth; True, False (and 1, 0) the same here
                return [f"{ind}out += BOOLEANS[{v}]"]
            case "int" | "long":
                # no 32-bit bound for an int: fastavro writes it as a long
                return [f"{ind}out += SMALL[{v} + 64] if -64 <= {v} < 64 else long_bytes({v})"]
            case "float":
                return [f"{ind}out += pack_float({v})"]
            case "double":
                return [f"{ind}out += pack_double({v})"]
            case "bytes":
                return [
                    f"{ind}if type({v}) is not bytes:",
                    f"{ind}    raise Unwritable('not bytes')",
                    *self.length(f"len({v})", ind),
                    f"{ind}out += {v}",
                ]
            case "string":
                e = self.name("e")
                return [
                    f"{ind}{e} = {v}.encode()",  # AttributeError unless a str
                    *self.length(f"len({e})", ind),
                    f"{ind}out += {e}",
                ]
        raise Unsupported(f"type {kind}")

    def length(self, size: str, ind: str) -> list[str]:
        """Write the length ``size`` (an expression): below 1024 from the table, without the
        call to ``length_bytes`` (15 ns of the 85 writing a short string took)."""
        n = self.name("n")
        return [
            f"{ind}{n} = {size}",
            f"{ind}out += LENGTHS[{n}] if {n} < 1024 else long_bytes({n})",
        ]

    def union(self, schema: list[Any], v: str, ind: str, model: Any) -> list[str]:
        """A union of null and one other type; the branch is null for None, the other
        for anything else (as the compiled dump names it for fastavro)."""
        if len(schema) != 2 or "null" not in schema:
            raise Unsupported(f"the union {schema}")
        null = schema.index("null")
        if null == 0 and schema[1] == "string":
            # the branch's code and the string's length in one append (see ``PRESENT``)
            e, n = self.name("e"), self.name("n")
            return [
                f"{ind}if {v} is None:",
                f"{ind}    out += b'\\x00'",
                f"{ind}else:",
                f"{ind}    {e} = {v}.encode()",  # AttributeError unless a str
                f"{ind}    {n} = len({e})",
                f"{ind}    out += PRESENT[{n}] if {n} < 1024 else b'\\x02' + long_bytes({n})",
                f"{ind}    out += {e}",
            ]
        return [
            f"{ind}if {v} is None:",
            f"{ind}    out += {_zigzag(null)!r}",
            f"{ind}else:",
            f"{ind}    out += {_zigzag(1 - null)!r}",
            *self.value(schema[1 - null], v, ind + "    ", model),
        ]

    def record(self, schema: dict[str, Any], model: Any) -> str:
        """The name of the function that writes a ``model`` instance as ``schema``."""
        return self.function(schema, model, "(o, out)", lambda: self._record_body(schema, model))

    def _record_body(self, schema: dict[str, Any], model: Any) -> list[str]:
        fields = model.model_fields
        body = ["    d = o.__dict__"]
        memo = None
        if model in self.kept:
            memo = self.memos[model] = self.constant("kept", {})
            body.append("    start = len(out)")
        for field in schema["fields"]:
            name = field["name"]
            if name not in fields:  # fastavro would write the schema's default
                raise Unsupported(f"{model.__name__} has no field {name}")
            v = self.name("v")
            body.append(f"    {v} = d[{name!r}]")
            body += self.value(field["type"], v, "    ", model_of(fields[name].annotation))
        if memo is not None:  # written whole (what raises is not kept): kept with the instance
            body += [
                f"    if len({memo}) >= KEPT_MAX:",
                f"        {memo}.clear()",
                f"    {memo}[id(o)] = (o, bytes(out[start:]))",
            ]
        return body


def writer_for(
    schema: dict[str, Any],
    named: dict[str, Any],
    model: type[models.Model],
    kept: frozenset[Any] | None = None,
) -> Write | None:
    """A function that writes a ``model`` instance as the record ``schema`` (fastavro-parsed,
    ``named`` its named types) at the end of a bytearray; None when the schema uses what
    this generator does not write. It raises on a value it leaves to fastavro, having
    possibly written part of the record. ``kept``: the nested record models whose bytes it
    keeps by instance (default ``SHARED``'s for ``model``; empty: none)."""
    gen = _Gen(named, SHARED.get(model, frozenset()) if kept is None else kept)
    try:
        top = gen.record(schema, model)
    except TypeError:  # Unsupported among them
        return None
    write: Write = gen.compiled(top, f"<avro writer of {model.__name__}>")
    return write
