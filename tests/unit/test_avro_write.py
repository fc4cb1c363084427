"""Records are written by a writer generated per contract (``pipeline/avro_write.py``) instead
of the compiled dump followed by fastavro's writer. It must write the same bytes.

Differential, fastavro as the judge: every record of the offline chain, both simulator mixes
through the stages, everything remittance publishes, every golden record, and a record of
every Avro type the contracts use holding edge values (empty lists, None in every nullable,
negative and large ints, unicode, long strings, Decimals of other exponents, timestamps
before 1970, naive and aware). A value fastavro rejects is rejected with fastavro's error; a
value the generated writer leaves to fastavro is written by it, and counted.
"""

from __future__ import annotations

import io
import json
import logging
import math
import random
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import pytest
import sim_corpus
from test_avro_read import corpus

from bench.chain import offline_chain
from pipeline import avro_write
from pipeline.avro_write import SHARED, immutable, writer_for
from pipeline.models import (
    DocumentedDiagnosis,
    DocumentedService,
    Encounter,
    Facility,
    Model,
    Patient,
    Provider,
)
from pipeline.serde import (
    HEADER_LEN,
    MAGIC,
    EncodeMismatch,
    GeneratedWriter,
    record_dumper,
    registry,
)

REG = registry()
GOLDEN = Path(__file__).parent.parent / "contract" / "golden"


def fastavro_bytes(topic: str, value: Model) -> bytes:
    """The record as fastavro writes it from ``model_dump()``, finding each union's branch."""
    sv = REG.latest(topic)
    buf = io.BytesIO()
    buf.write(MAGIC + sv.fingerprint)
    fastavro.schemaless_writer(buf, sv.parsed, value.model_dump())
    return buf.getvalue()


def generated_bytes(topic: str, value: Model) -> bytes:
    """The record as the generated writer alone writes it (no fallback)."""
    writer = REG.writer(topic)
    assert writer is not None, topic
    out = bytearray(writer.header)
    writer.write_record(value, out)
    return bytes(out)


def test_every_topic_has_a_generated_writer() -> None:
    for topic in REG.topics:
        assert isinstance(REG.writer(topic), GeneratedWriter), topic


def test_every_record_of_the_offline_chain_is_written_as_fastavro_writes_it() -> None:
    chain = offline_chain(40, seed=11)
    for topic, values in chain.items():
        for value in values:
            expected = fastavro_bytes(topic, value)
            assert generated_bytes(topic, value) == expected, topic
            assert REG.encode(topic, value) == expected, topic
    assert len(chain) >= 9 and sum(map(len, chain.values())) > 250


def test_every_record_of_the_corpora_is_written_as_fastavro_writes_it(tmp_path: Path) -> None:
    by_topic: dict[str, int] = {}
    for topic, value in corpus(tmp_path):
        assert generated_bytes(topic, value) == fastavro_bytes(topic, value), topic
        by_topic[topic] = by_topic.get(topic, 0) + 1
    assert by_topic["encounters.validated.v1"] > 300 and by_topic["remittance.posted.v1"] > 300
    assert by_topic["remittance.exceptions.v1"] > 100


@pytest.mark.parametrize("topic", sorted(REG.topics))
def test_every_golden_record_is_written_as_fastavro_writes_it(topic: str) -> None:
    source = REG.topics[topic].schema_of or topic
    name = "dead-letter" if source.startswith("dlq.") else source
    golden = json.loads((GOLDEN / f"{name}.json").read_text())
    value = REG.topics[topic].model.model_validate(golden)
    assert generated_bytes(topic, value) == fastavro_bytes(topic, value)


# --- every type the contracts use, with edge values --------------------------------------


class Inner(Model):
    code: str
    amount: Decimal | None = None


class Shapes(Model):
    s: str
    ns: str | None
    i: int
    n: int
    ni: int | None
    d: float
    nd: float | None
    f: float
    b: bool
    nb: bool | None
    raw: bytes
    nraw: bytes | None
    kind: str
    nkind: str | None
    fx: bytes
    day: date
    nday: date | None
    at: datetime
    nat: datetime | None
    at_us: datetime
    tod: time
    ntod: time | None
    money: Decimal
    nmoney: Decimal | None
    tags: list[str]
    counts: dict[str, int]
    inner: Inner
    ninner: Inner | None
    inners: list[Inner]
    by_name: dict[str, Inner]
    ntags: list[str] | None


_MONEY = {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}
_KIND = {"type": "enum", "name": "Kind", "symbols": ["A", "B", "C"]}
SCHEMA = fastavro.parse_schema(
    {
        "type": "record",
        "name": "Shapes",
        "namespace": "test.shapes",
        "fields": [
            {"name": "s", "type": "string"},
            {"name": "ns", "type": ["null", "string"], "default": None},
            {"name": "i", "type": "int"},
            {"name": "n", "type": "long"},
            {"name": "ni", "type": ["null", "int"], "default": None},
            {"name": "d", "type": "double"},
            {"name": "nd", "type": ["null", "double"], "default": None},
            {"name": "f", "type": "float"},
            {"name": "b", "type": "boolean"},
            {"name": "nb", "type": ["null", "boolean"], "default": None},
            {"name": "raw", "type": "bytes"},
            {"name": "nraw", "type": ["null", "bytes"], "default": None},
            {"name": "kind", "type": _KIND},
            {"name": "nkind", "type": ["null", "Kind"], "default": None},
            {"name": "fx", "type": {"type": "fixed", "name": "Four", "size": 4}},
            {"name": "day", "type": {"type": "int", "logicalType": "date"}},
            {"name": "nday", "type": ["null", {"type": "int", "logicalType": "date"}]},
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {
                "name": "nat",
                "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}],
            },
            {"name": "at_us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "tod", "type": {"type": "int", "logicalType": "time-millis"}},
            {"name": "ntod", "type": ["null", {"type": "int", "logicalType": "time-millis"}]},
            {"name": "money", "type": _MONEY},
            {"name": "nmoney", "type": ["null", _MONEY], "default": None},
            {"name": "tags", "type": {"type": "array", "items": "string"}},
            {"name": "counts", "type": {"type": "map", "values": "long"}},
            {
                "name": "inner",
                "type": {
                    "type": "record",
                    "name": "Inner",
                    "fields": [
                        {"name": "code", "type": "string"},
                        {"name": "amount", "type": ["null", _MONEY], "default": None},
                    ],
                },
            },
            {"name": "ninner", "type": ["null", "Inner"], "default": None},
            {"name": "inners", "type": {"type": "array", "items": "Inner"}},
            {"name": "by_name", "type": {"type": "map", "values": "Inner"}},
            {"name": "ntags", "type": ["null", {"type": "array", "items": "string"}]},
        ],
    }
)
NAMED = SCHEMA["__named_schemas"]
WRITE = writer_for(SCHEMA, NAMED, Shapes)
DUMP = record_dumper(Shapes, SCHEMA, NAMED)

BASE = Shapes.model_construct(
    s="a",
    ns="b",
    i=1,
    n=-2,
    ni=3,
    d=1.5,
    nd=-2.25,
    f=0.1,
    b=True,
    nb=False,
    raw=b"\x00\x01",
    nraw=b"",
    kind="B",
    nkind="C",
    fx=b"abcd",
    day=date(2026, 3, 1),
    nday=date(1970, 1, 1),
    at=datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=UTC),
    nat=datetime(2026, 3, 1, 12, 30, 5, tzinfo=UTC),
    at_us=datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=UTC),
    tod=time(8, 15, 30, 250000),
    ntod=time(0, 0),
    money=Decimal("125.50"),
    nmoney=Decimal("-3.00"),
    tags=["x", "y"],
    counts={"a": 1, "b": -1},
    inner=Inner.model_construct(code="I1", amount=Decimal("1.00")),
    ninner=Inner.model_construct(code="I2", amount=None),
    inners=[Inner.model_construct(code="I3", amount=Decimal("0.01"))],
    by_name={"k": Inner.model_construct(code="I4", amount=Decimal("-0.01"))},
    ntags=["z"],
)
NULLABLE = [
    name
    for name, info in Shapes.model_fields.items()
    if name.startswith("n") and name not in ("n",)
]

_BEFORE_1970 = datetime(1969, 12, 31, 23, 59, 59, 999500, tzinfo=UTC)
_EASTERN = timezone(timedelta(hours=-5))
_INTS = [0, -1, 1, 63, -64, 64, -65, 127, 128, 2**31 - 1, -(2**31), 2**31, 2**53 + 1]
_INTS += [2**63 - 1, -(2**63), True, False]
_DECIMALS = ["0", "-0", "0.00", "1.5", "12", "1E+3", "-1.28", "-128", "127.99", "-0.01"]
_DECIMALS += ["9999999999.99", "-9999999999.99", "0E+5", "1.0", "-32768", "32767.9"]

#: (field, value): written by the generated writer, as fastavro writes it.
WRITTEN: list[tuple[str, Any]] = [
    *[(name, None) for name in NULLABLE],
    ("tags", []),
    ("counts", {}),
    ("inners", []),
    ("by_name", {}),
    ("ntags", []),
    ("ntags", "ab"),
    ("tags", ("a", "b")),
    ("tags", [f"t{k}" for k in range(200)]),
    ("counts", {f"k{k}": k * 1000 for k in range(100)}),
    ("inners", [Inner.model_construct(code=str(k), amount=None) for k in range(70)]),
    *[("i", v) for v in _INTS],
    *[("n", v) for v in _INTS],
    *[("ni", v) for v in _INTS],
    ("s", ""),
    ("s", "é"),
    ("s", "患者の名前"),
    ("s", "🩺 x"),
    ("s", "a" * 5000),
    ("ns", "ü" * 600),
    ("tags", ["", "ß", "🩺"]),
    ("counts", {"ключ": 1, "": 0}),
    ("raw", b"\xff" * 3000),
    ("nraw", b"\x00"),
    ("d", 0.0),
    ("d", -0.0),
    ("d", math.inf),
    ("d", -math.inf),
    ("d", math.nan),
    ("d", 1e308),
    ("d", 5e-324),
    ("d", 3),
    ("nd", 7),
    ("f", 1.1),
    ("f", -3.4e38),
    ("f", 0.0),
    ("b", False),
    ("nb", True),
    ("kind", "A"),
    ("kind", "C"),
    ("nkind", "A"),
    ("fx", b"\x00\x00\x00\x00"),
    ("day", date(1, 1, 1)),
    ("day", date(1900, 2, 28)),
    ("day", date(1969, 12, 31)),
    ("day", date(9999, 12, 31)),
    ("nday", date(2000, 2, 29)),
    ("at", _BEFORE_1970),
    ("at", datetime(1900, 1, 1, 0, 0, 0, 1, tzinfo=UTC)),
    ("at", datetime(1969, 7, 20, 20, 17, 40, 999999, tzinfo=_EASTERN)),
    ("at", datetime(2026, 3, 1, 12, 0, 0, 999, tzinfo=_EASTERN)),
    ("at", datetime(1969, 12, 31, 23, 59, 59, 999500)),  # naive: local time, as fastavro
    ("at", datetime(2026, 3, 1, 12, 0, 0, 1999)),
    ("nat", datetime(1950, 6, 1, tzinfo=UTC)),
    ("at_us", _BEFORE_1970),
    ("at_us", datetime(1969, 12, 31, 23, 59, 59, 1)),
    ("at_us", datetime(2026, 3, 1, 12, 0, 0, 999, tzinfo=_EASTERN)),
    ("tod", time(23, 59, 59, 999999)),
    ("tod", time(0, 0, 0, 999)),
    ("tod", time(12, 0, tzinfo=_EASTERN)),
    ("ntod", time(1, 2, 3, 4000)),
    *[("money", Decimal(text)) for text in _DECIMALS],
    *[("nmoney", Decimal(text)) for text in _DECIMALS],
    ("inner", Inner.model_construct(code="", amount=Decimal("-0.50"))),
    ("ninner", Inner.model_construct(code="é", amount=Decimal("99"))),
]

#: (field, value): fastavro rejects them, or writes them by rules of its own (a string for
#: a date, a truthy string for a boolean, a short fixed): through the generated writer the
#: outcome is fastavro's (the same bytes, or the same error).
LEFT_TO_FASTAVRO: list[tuple[str, Any]] = [
    ("s", 5),
    ("s", None),
    ("s", b"ab"),
    ("s", "\ud800"),
    ("ns", 5),
    ("i", 2**63),
    ("i", -(2**63) - 1),
    ("n", 2**64),
    ("i", 1.5),
    ("i", 1.0),
    ("n", 100.0),
    ("i", "1"),
    ("i", None),
    ("i", Decimal("1")),
    ("ni", 2**70),
    ("ni", "x"),
    ("d", "x"),
    ("d", None),
    ("d", 2**2000),
    ("nd", "1.5"),
    ("f", 2**200),
    ("b", "x"),
    ("b", None),
    ("b", 2),
    ("nb", "yes"),
    ("raw", "text"),
    ("raw", None),
    ("raw", bytearray(b"ab")),
    ("nraw", 5),
    ("kind", "Z"),
    ("kind", None),
    ("nkind", "a"),
    ("fx", b"abc"),
    ("fx", "abcd"),
    ("day", "2020-01-02"),
    ("day", datetime(2020, 1, 1, 5)),
    ("day", 18000),
    ("day", None),
    ("nday", "x"),
    ("at", date(2020, 1, 1)),
    ("at", 1_700_000_000_000),  # fastavro writes an int as it is
    ("at", "2020-01-01T00:00:00Z"),
    ("at", None),
    ("at", 2**64),
    ("nat", 1.5),
    ("tod", 1000),
    ("tod", "08:00"),
    ("money", Decimal("1.234")),
    ("money", Decimal("1E-3")),
    ("money", Decimal("1234567890123")),
    ("money", Decimal("NaN")),
    ("money", Decimal("Infinity")),
    ("money", 1.5),
    ("money", 15),
    ("money", b"\x01"),
    ("money", None),
    ("nmoney", Decimal("0.001")),
    ("tags", None),
    ("tags", [1]),
    ("tags", 5),
    ("counts", {"a": "x"}),
    ("counts", {1: 1}),
    ("counts", None),
    ("inner", None),
    ("inner", {"code": "x", "amount": None}),
    ("ninner", "x"),
    ("inners", [None]),
    ("by_name", {"k": None}),
]


def _fastavro(value: Shapes) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, SCHEMA, DUMP(value))
    return buf.getvalue()


def _generated(value: Shapes) -> bytes:
    assert WRITE is not None
    out = bytearray()
    WRITE(value, out)
    return bytes(out)


def _outcome(write: Callable[[Shapes], bytes], value: Shapes) -> object:
    try:
        return write(value)
    except Exception as exc:  # noqa: BLE001 - the error is the outcome compared
        return (type(exc), str(exc))


def _through(writer: GeneratedWriter) -> Callable[[Shapes], bytes]:
    """What ``Registry.encode`` does with a generated writer: it, or fastavro after it."""

    def write(value: Shapes) -> bytes:
        out = bytearray()
        return bytes(out) if writer.write(out, value) else writer.usual(value)

    return write


def test_every_edge_value_is_written_as_fastavro_writes_it() -> None:
    assert _generated(BASE) == _fastavro(BASE)
    assert len(NULLABLE) == 12
    everything_null = BASE.model_copy(update=dict.fromkeys(NULLABLE))
    assert _generated(everything_null) == _fastavro(everything_null)
    for field, v in WRITTEN:
        value = BASE.model_copy(update={field: v})
        assert _generated(value) == _fastavro(value), (field, v)


def test_random_decimals_are_written_or_rejected_as_fastavro_does() -> None:
    """Decimals of every form their text takes (plain, with leading zeros, with an exponent
    written out, negative zero): the generated writer reads the digits from the text."""
    rng = random.Random(13)
    written = 0
    for _ in range(3000):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 14)))
        text = f"{rng.choice('-+ ')}{digits}E{rng.randint(-9, 4)}".strip()
        amount = Decimal(text)
        value = BASE.model_copy(update={"money": amount, "nmoney": amount.copy_negate()})
        expected = _outcome(_fastavro, value)
        if isinstance(expected, bytes):
            assert _generated(value) == expected, text
            written += 1
        else:
            with pytest.raises(Exception):  # noqa: B017, PT011 - left to fastavro: any error
                _generated(value)
    assert 300 < written < 2700


def test_a_value_left_to_fastavro_gives_fastavros_bytes_or_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(GeneratedWriter, "fallbacks", {})
    assert WRITE is not None
    writer = GeneratedWriter("Shapes", WRITE, _fastavro)
    writer.verify = False
    rejected = 0
    for field, v in LEFT_TO_FASTAVRO:
        value = BASE.model_copy(update={field: v})
        with pytest.raises(Exception):  # noqa: B017, PT011 - left to fastavro: any error
            _generated(value)
        expected = _outcome(_fastavro, value)
        assert _outcome(_through(writer), value) == expected, (field, v)
        rejected += isinstance(expected, tuple)
    assert GeneratedWriter.fallbacks == {"Shapes": len(LEFT_TO_FASTAVRO)}
    assert rejected > 40  # most are errors; fastavro writes the others by rules of its own


def test_a_fallback_is_counted_and_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(GeneratedWriter, "fallbacks", {})
    assert WRITE is not None
    writer = GeneratedWriter("Shapes", WRITE, _fastavro)
    writer.verify = False
    truthy = BASE.model_copy(update={"b": "yes"})  # fastavro writes a string's truth
    with caplog.at_level(logging.WARNING, logger="pipeline.serde"):
        for _ in range(3):
            assert _through(writer)(truthy) == _fastavro(truthy)
    assert GeneratedWriter.fallbacks == {"Shapes": 3}
    warnings = [r for r in caplog.records if "generated writer" in r.getMessage()]
    assert len(warnings) == 1 and "yes" not in warnings[0].getMessage()


def test_verification_raises_on_any_difference_from_fastavro() -> None:
    assert WRITE is not None

    def wrong(value: Shapes, out: bytearray) -> None:
        WRITE(value, out)
        out[-1] ^= 1

    writer = GeneratedWriter("Shapes", wrong, _fastavro)
    writer.verify = True
    with pytest.raises(EncodeMismatch, match="differ"):
        writer.write(bytearray(), BASE)
    # a value fastavro writes and the generated writer leaves to it
    writer = GeneratedWriter("Shapes", WRITE, _fastavro)
    writer.verify = True
    with pytest.raises(EncodeMismatch, match="failed"):
        writer.write(bytearray(), BASE.model_copy(update={"b": "yes"}))
    # rejected both ways: no mismatch, fastavro's error follows
    assert writer.write(bytearray(), BASE.model_copy(update={"i": "1"})) is False
    assert writer.write(bytearray(), BASE) is True


def test_registry_encode_rejects_what_fastavro_rejects() -> None:
    topic = "encounters.validated.v1"
    value = offline_chain(2, seed=3)[topic][0]
    for update in ({"rule_pack_version": 5}, {"validated_at": "yesterday"}, {"edits": None}):
        bad = value.model_copy(update=update)
        with pytest.raises(Exception) as usual:  # noqa: PT011 - compared below
            REG._encode_usual(topic, bad)  # the compiled dump, then fastavro
        with pytest.raises(type(usual.value)):
            REG.encode(topic, bad)


def test_splicers_write_their_parts_with_generated_writers() -> None:
    for topic, path in (
        ("encounters.coded.v1", ("encounter",)),
        ("encounters.validated.v1", ("coded",)),
    ):
        splicer = REG.splicer(topic, path)
        parts = [p for p in (*splicer.before, *splicer.after) if not p.empty]
        assert parts, topic
        assert all(isinstance(p.fast, GeneratedWriter) for p in parts), topic


def test_the_header_is_the_topics() -> None:
    for topic in REG.topics:
        writer = REG.writer(topic)
        assert writer is not None
        assert writer.header == MAGIC + REG.latest(topic).fingerprint
        assert len(writer.header) == HEADER_LEN


# --- the bytes of shared records, kept by instance ---------------------------------------


def _encounter_writers() -> tuple[Callable[..., None], Callable[..., None]]:
    """The Encounter writer that keeps shared records' bytes, and the one that does not
    (the judge)."""
    sv = REG.latest("encounters.collected.v1")
    named = sv.parsed["__named_schemas"]
    kept = writer_for(sv.parsed, named, Encounter)
    plain = writer_for(sv.parsed, named, Encounter, kept=frozenset())
    assert kept is not None and plain is not None
    return kept, plain


def _written(write: Callable[..., None], value: Any) -> bytes:
    out = bytearray()
    write(value, out)
    return bytes(out)


def _memos(write: Callable[..., None]) -> list[dict[int, tuple[Any, bytes]]]:
    return [v for k, v in write.__globals__.items() if k.startswith("kept")]


def test_intakes_encounters_are_written_the_same_with_shared_records_kept() -> None:
    kept, plain = _encounter_writers()
    encounters = [e for mix in sim_corpus.MIXES for e in sim_corpus.encounters(mix)]
    providers = [e.billing_provider for e in encounters]
    assert len({id(p) for p in providers}) < len(providers) / 4  # intake shares them
    for _ in range(2):  # the second time, every shared record's bytes are kept
        for enc in encounters:
            assert _written(kept, enc) == _written(plain, enc), enc.encounter_id
    memos = _memos(kept)
    assert len(memos) == 3 and all(memos)
    named = REG.latest("encounters.collected.v1").parsed["__named_schemas"]
    for memo in memos:  # each kept instance's bytes are its own, written alone
        for instance, data in memo.values():
            name = type(instance).__name__  # the record's name in the schema
            schema = next(s for n, s in named.items() if n.rpartition(".")[2] == name)
            alone = writer_for(schema, named, type(instance), kept=frozenset())
            assert alone is not None and _written(alone, instance) == data


def test_kept_bytes_are_bounded_and_held_with_their_instance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(avro_write, "KEPT_MAX", 3)
    kept, plain = _encounter_writers()
    base = next(iter(sim_corpus.encounters(sim_corpus.MIXES[0])))
    for i in range(40):
        # New objects each time, the previous ones dropped: an id freed could be reused by
        # the next diagnosis or provider, were the kept bytes not holding their instance.
        dx = DocumentedDiagnosis(code=f"E11.{i}", system="icd10cm", primary=True)
        npi = f"{1_000_000_000 + i}"
        provider = base.billing_provider.model_copy(update={"npi": npi})
        enc = base.model_copy(update={"diagnoses": [dx], "billing_provider": provider})
        assert _written(kept, enc) == _written(plain, enc), i
        assert all(len(memo) <= 3 for memo in _memos(kept))
        assert all(instance is not None for memo in _memos(kept) for instance, _ in memo.values())
        del dx, provider, enc


def test_only_records_that_cannot_change_are_kept() -> None:
    assert SHARED[Encounter] == {Provider, Facility, DocumentedDiagnosis}
    assert all(immutable(m) for m in SHARED[Encounter])
    assert immutable(Patient)
    assert not immutable(DocumentedService)  # lists of modifiers and dx refs
    assert not immutable(Encounter)

    class Open(Model):
        model_config = {"frozen": False}
        code: str

    assert not immutable(Open)
    sv = REG.latest("encounters.collected.v1")
    named = sv.parsed["__named_schemas"]
    write = writer_for(sv.parsed, named, Encounter, kept=frozenset({DocumentedService}))
    assert write is not None and _memos(write) == []  # asked for, not kept
