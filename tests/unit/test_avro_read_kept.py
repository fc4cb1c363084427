"""The generated reader keeps the records that repeat across data (``avro_read.KEPT``: the
providers, the facility, the diagnoses, the MS-DRG) by their bytes: the same bytes give the
model built before, never twice within one datum, and every datum reads as the usual path
(fastavro, then the trusted build) reads it. tests/unit/test_avro_read.py judges the values
on the whole corpus; here, what keeping may not change."""

from __future__ import annotations

import io
import json
import random
from typing import Any

import fastavro
import pytest
from test_avro_read import GOLDEN, SHAPES, shapes_value, usual

from pipeline import avro_read
from pipeline.avro_read import KEPT, difference, reader_for
from pipeline.models import CodedEncounter, Facility, Model
from pipeline.serde import HEADER_LEN, registry

REG = registry()
TOPIC = "encounters.coded.v1"


def golden() -> CodedEncounter:
    return CodedEncounter.model_validate(json.loads((GOLDEN / f"{TOPIC}.json").read_text()))


def fresh_reader(monkeypatch: pytest.MonkeyPatch | None = None, limit: int | None = None) -> Any:
    """A reader of the topic's newest schema with nothing kept yet (``limit``: KEPT_LIMIT)."""
    if monkeypatch is not None and limit is not None:
        monkeypatch.setattr(avro_read, "KEPT_LIMIT", limit)
    sv = REG.latest(TOPIC)
    read = reader_for(sv.parsed, sv.parsed["__named_schemas"], CodedEncounter)
    assert read is not None
    return read


def kept_tables(read: Any) -> list[dict[bytes, Model]]:
    return [v for k, v in read.__globals__.items() if k.startswith("records_kept")]


def with_twins() -> CodedEncounter:
    """The golden record with the same provider billing and rendering, and every
    diagnosis twice (the same bytes at two places of one datum)."""
    value = golden()
    enc = value.encounter
    enc = enc.model_copy(
        update={
            "rendering_provider": enc.billing_provider.model_copy(),
            "diagnoses": [*enc.diagnoses, *(d.model_copy() for d in enc.diagnoses)],
        }
    )
    return value.model_copy(
        update={"encounter": enc, "diagnoses": [*value.diagnoses, *value.diagnoses]}
    )


def test_the_same_bytes_in_two_data_give_the_same_object() -> None:
    read = fresh_reader()
    raw = REG.encode(TOPIC, golden())
    first, second = read(raw, HEADER_LEN), read(raw, HEADER_LEN)
    assert difference(usual(TOPIC, raw), first) is None
    assert difference(usual(TOPIC, raw), second) is None
    assert first is not second and first.encounter is not second.encounter
    assert second.encounter.billing_provider is first.encounter.billing_provider
    assert second.encounter.rendering_provider is first.encounter.rendering_provider
    for a, b in zip(first.diagnoses, second.diagnoses, strict=True):
        assert a is b
    for a, b in zip(first.encounter.diagnoses, second.encounter.diagnoses, strict=True):
        assert a is b
    # what is not kept is read again: a patient, a service line
    assert second.encounter.patient is not first.encounter.patient
    assert second.lines[0] is not first.lines[0]
    assert {type(m) for t in kept_tables(read) for m in t.values()} <= set(KEPT)


def test_one_datum_never_holds_one_object_twice() -> None:
    # Code that tells two places apart by identity (the 837I's diagnosis positions) sees
    # two objects, as the usual path gives them, however often the datum is read.
    read = fresh_reader()
    raw = REG.encode(TOPIC, with_twins())
    for _ in range(3):
        value = read(raw, HEADER_LEN)
        assert difference(usual(TOPIC, raw), value) is None
        enc = value.encounter
        assert enc.billing_provider == enc.rendering_provider
        assert enc.billing_provider is not enc.rendering_provider
        for places in (value.diagnoses, enc.diagnoses):
            assert len({id(d) for d in places}) == len(places)
            half = len(places) // 2
            assert places[:half] == places[half:]


def test_a_record_cut_short_is_not_kept() -> None:
    # A datum cut inside the last string of a kept record (the billing provider's address's
    # country) reads that string short; it fails, and what it read is not kept.
    read = fresh_reader()
    value = golden()
    raw = REG.encode(TOPIC, value)
    address = value.encounter.billing_provider.address
    assert address is not None and address.country == "US"
    cut_at = raw.index(address.postal_code.encode() + b"\x04US") + len(address.postal_code) + 2
    with pytest.raises(IndexError):
        read(raw[:cut_at], HEADER_LEN)
    assert all(not table for table in kept_tables(read))
    for end in range(HEADER_LEN, len(raw)):
        with pytest.raises(Exception):  # noqa: B017, PT011 - any error, as on the usual path
            read(raw[:end], HEADER_LEN)
    assert difference(usual(TOPIC, raw), read(raw, HEADER_LEN)) is None


def test_a_full_table_starts_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    read = fresh_reader(monkeypatch, limit=3)
    value = golden()
    raws = []
    for i in range(10):  # ten billing providers
        enc = value.encounter
        provider = enc.billing_provider.model_copy(update={"name": f"CLINIC {i}"})
        changed = enc.model_copy(update={"billing_provider": provider})
        raws.append(REG.encode(TOPIC, value.model_copy(update={"encounter": changed})))
    for _ in range(2):
        for raw in raws:
            assert difference(usual(TOPIC, raw), read(raw, HEADER_LEN)) is None
            assert all(len(table) <= 3 for table in kept_tables(read))


def test_stepping_over_a_value_ends_where_reading_it_ends() -> None:
    # Every kind of value (maps, floats, fixed, enums, unions, blocks of a negative count)
    # is stepped over to the byte where fastavro's reading of it ends.
    gen = avro_read._Gen(SHAPES["__named_schemas"])
    source = "\n".join(["def step(b, p):", *gen.skip(SHAPES, "    "), "    return p"])
    exec(compile(source, "<step over Shapes>", "exec"), gen.env)  # noqa: S102
    step = gen.env["step"]
    rng = random.Random(5)
    for n in range(2000):
        value = shapes_value(rng, n)
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, SHAPES, value)
        data = buf.getvalue()
        assert step(data, 0) == len(data), n
        assert step(b"0123456789" + data + b"tail", 10) == 10 + len(data), n
    blocks = bytes([3, 4, 4, 6, 2, 8, 0])  # an array of longs: count -2 (size 2), count 1
    array = fastavro.parse_schema({"type": "array", "items": "long"})
    gen = avro_read._Gen({})
    source = "\n".join(["def step(b, p):", *gen.skip(array, "    "), "    return p"])
    exec(compile(source, "<step over an array>", "exec"), gen.env)  # noqa: S102
    assert gen.env["step"](blocks + b"x", 0) == len(blocks)


def test_a_kept_record_is_found_by_the_bytes_it_starts_with() -> None:
    # Twelve billing providers that start alike (the same NPI and name: one start, more
    # records than it lists), and a facility shorter than the start looked up (what follows
    # it, the notes, differs from datum to datum): each the same object wherever its bytes
    # are, every datum read as the usual path reads it.
    read = fresh_reader()
    value = golden()
    enc = value.encounter
    assert enc.billing_provider.address is not None
    raws = []
    for i in range(12):
        address = enc.billing_provider.address.model_copy(update={"line1": f"{i} MAIN ST"})
        provider = enc.billing_provider.model_copy(update={"address": address})
        changed = enc.model_copy(
            update={
                "billing_provider": provider,
                "facility": Facility(name="X"),
                "note_text": f"note {i}",
            }
        )
        raws.append(REG.encode(TOPIC, value.model_copy(update={"encounter": changed})))
    assert len(Facility(name="X").model_dump()) == 3 and avro_read.KEPT_PREFIX > 4
    first = [read(raw, HEADER_LEN) for raw in raws]
    for _ in range(2):
        for raw, before in zip(raws, first, strict=True):
            again = read(raw, HEADER_LEN)
            assert difference(usual(TOPIC, raw), again) is None
            assert again.encounter.billing_provider is before.encounter.billing_provider
            assert again.encounter.facility is first[0].encounter.facility
    providers = {id(v.encounter.billing_provider) for v in first}
    assert len(providers) == 12
    starts = [v for k, v in read.__globals__.items() if k.startswith("records_by_prefix")]
    assert max(len(listed) for table in starts for listed in table.values()) == 8
