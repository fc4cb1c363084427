"""Records a stage wrote are read by a reader generated per contract (``pipeline/avro_read.py``)
instead of fastavro's read followed by the trusted build. It must give the same model, value
for value and type for type.

Differential, the usual path (fastavro, then ``serde.model_builder``) as the judge: every
record of the offline chain, both simulator mixes through intake, coding, validation and the
claims writer, everything remittance publishes for the 835 fixtures, the public sample and
the simulator's 835s, and every golden record. And bytes that are not a datum of the schema
(every truncation, flipped bytes) give what the usual path gives: the same model, or the
same error.
"""

from __future__ import annotations

import io
import json
import random
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import fastavro
import pytest
import sim_corpus
from test_remittance_reread import files
from test_remittance_split import CLAIMS, Partitioned

from bench.chain import offline_chain
from pipeline.avro_read import difference, reader_for
from pipeline.errors import DecodeError
from pipeline.models import Model
from pipeline.serde import (
    HEADER_LEN,
    MAGIC,
    DecodeMismatch,
    GeneratedReader,
    model_builder,
    registry,
)

REG = registry()
GOLDEN = Path(__file__).parent.parent / "contract" / "golden"
TRUSTED = sorted(t for t, spec in REG.topics.items() if spec.trusted)


def usual(topic: str, data: bytes) -> Model:
    """The path the generated reader replaces: fastavro's read, then the trusted build."""
    return model_builder(REG.topics[topic].model)(REG.decode_dict(topic, data))  # type: ignore[no-any-return]


def generated(topic: str, data: bytes) -> Model:
    reader = REG.generated_reader(topic)
    assert reader is not None, topic
    assert data[2:HEADER_LEN] == reader.fingerprint
    return reader.read(data, HEADER_LEN)  # type: ignore[no-any-return]


def corpus(tmp: Path) -> Iterator[tuple[str, Model]]:
    for topic, values in offline_chain(40, seed=11).items():
        for value in values:
            yield topic, value
    for mix in sim_corpus.MIXES:
        for topic, values in (
            ("encounters.collected.v1", sim_corpus.encounters(mix)),
            ("encounters.coded.v1", sim_corpus.coded(mix)),
            ("encounters.validated.v1", sim_corpus.validated(mix)),
            ("claims.submitted.v1", sim_corpus.submitted(mix)),
        ):
            for value in values:
                yield topic, value
    # Remittance with the simulator's claims (postings, denials, settlements), and without
    # them (exceptions), its internal records (claim payments, payer payments) included.
    sim_claims = [c for mix in sim_corpus.MIXES for c in sim_corpus.submitted(mix)]
    for name, claims in (("claims", [*CLAIMS, *sim_claims]), ("fixtures", CLAIMS)):
        remittance = Recording(tmp / name, seed=5)
        for claim in claims:
            remittance.send("claims.submitted.v1", claim.claim_id, claim)
        for file in files():
            remittance.send("payer.inbound.v1", f"{file.payer_id}:{file.file_id}", file)
        remittance.drain()
        remittance.sweep()
        yield from remittance.internal
        for out in remittance.outputs:
            yield out.topic, out.value


class Recording(Partitioned):
    """Remittance in one process, keeping the records it sends itself too."""

    def __init__(self, folder: Path, seed: int) -> None:
        super().__init__(folder, seed)
        self.internal: list[tuple[str, Model]] = []

    def send(self, topic: str, key: str, value: Model) -> None:
        if REG.topics[topic].trusted:
            self.internal.append((topic, value))
        super().send(topic, key, value)


def test_every_topic_a_stage_writes_has_a_generated_reader() -> None:
    for topic in TRUSTED:
        assert isinstance(REG.generated_reader(topic), GeneratedReader), topic


def test_the_generated_reader_reads_every_record_as_the_usual_path(tmp_path: Path) -> None:
    read: Counter[str] = Counter()
    for topic, value in corpus(tmp_path):
        if topic not in TRUSTED:
            continue
        raw = REG.encode(topic, value)
        model = generated(topic, raw)
        assert difference(usual(topic, raw), model) is None, topic
        assert model == value
        assert REG.encode(topic, model) == raw
        assert REG.decode(topic, raw) == model  # the path the runner takes
        read[topic] += 1
    main = (
        "encounters.collected.v1",
        "encounters.coded.v1",
        "encounters.validated.v1",
        "claims.submitted.v1",
        "remittance.claim-payments.v1",
        "remittance.payer-payments.v1",
        "remittance.posted.v1",
        "remittance.denials.v1",
        "remittance.settled.v1",
        "remittance.exceptions.v1",
    )
    for topic in main:
        assert read[topic] >= 10, (topic, read)
    assert read["encounters.validated.v1"] > 300 and read["remittance.posted.v1"] > 300
    assert read["remittance.claim-payments.v1"] > 300 and read["remittance.exceptions.v1"] > 100


@pytest.mark.parametrize("topic", TRUSTED)
def test_every_golden_record_is_read_as_the_usual_path(topic: str) -> None:
    source = REG.topics[topic].schema_of or topic
    name = "dead-letter" if source.startswith("dlq.") else source
    golden = json.loads((GOLDEN / f"{name}.json").read_text())
    raw = REG.encode(topic, REG.topics[topic].model.model_validate(golden))
    assert difference(usual(topic, raw), generated(topic, raw)) is None


def _outcome(read: object, topic: str, data: bytes) -> object:
    try:
        return read(topic, data)  # type: ignore[operator]
    except Exception as exc:  # noqa: BLE001 - the error is the outcome compared
        return exc


def test_every_truncated_record_fails_as_on_the_usual_path() -> None:
    chain = offline_chain(5, seed=3)
    for topic in ("encounters.validated.v1", "remittance.posted.v1", "claims.submitted.v1"):
        raw = REG.encode(topic, chain[topic][0])
        for end in range(HEADER_LEN, len(raw)):
            cut = raw[:end]
            with pytest.raises(DecodeError, match="corrupt Avro datum"):
                usual(topic, cut)
            assert isinstance(_outcome(generated, topic, cut), Exception), (topic, end)
            # ... and the runner's path gives the usual error
            with pytest.raises(DecodeError, match="corrupt Avro datum"):
                REG.decode(topic, cut)


def test_flipped_bytes_read_as_on_the_usual_path() -> None:
    rng = random.Random(7)
    chain = offline_chain(5, seed=3)
    both = failed = 0
    for topic in ("encounters.validated.v1", "encounters.collected.v1", "remittance.posted.v1"):
        for value in chain[topic]:
            raw = REG.encode(topic, value)
            for _ in range(60):
                data = bytearray(raw)
                at = rng.randrange(HEADER_LEN, len(data))
                data[at] = rng.randrange(256)
                flipped = bytes(data)
                before = _outcome(usual, topic, flipped)
                after = _outcome(generated, topic, flipped)
                if isinstance(before, Exception):
                    failed += 1
                    assert isinstance(after, Exception), (topic, at)
                    with pytest.raises(DecodeError):
                        REG.decode(topic, flipped)
                else:
                    both += 1
                    assert not isinstance(after, Exception), (topic, at, after)
                    assert difference(before, after) is None, (topic, at)
    assert both > 100 and failed > 100


def test_a_record_of_an_older_schema_is_read_the_usual_way() -> None:
    topic = "encounters.collected.v1"
    golden = REG.topics[topic].model.model_validate(
        json.loads((GOLDEN / f"{topic}.json").read_text())
    )
    old = REG.versions[topic][0]
    buf = io.BytesIO()
    buf.write(MAGIC + old.fingerprint)
    fastavro.schemaless_writer(buf, old.parsed, REG.decode_dict(topic, REG.encode(topic, golden)))
    data = buf.getvalue()
    reader = REG.generated_reader(topic)
    assert reader is not None and data[2:HEADER_LEN] != reader.fingerprint
    assert difference(usual(topic, data), REG.decode(topic, data)) is None


def test_a_reader_that_gives_another_model_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # The suite runs with the verification on (tests/conftest.py): a generated reader that
    # gets one value wrong, or fails on bytes fastavro reads, raises instead of passing on.
    topic = "remittance.posted.v1"
    value = offline_chain(5, seed=3)[topic][0]
    raw = REG.encode(topic, value)
    reader = REG.generated_reader(topic)
    assert reader is not None and reader.verify

    def wrong_amount(data: bytes, start: int) -> Model:
        right = reader.read(data, start)
        return right.model_copy(update={"paid": Decimal(str(right.paid)) + Decimal("0.01")})  # type: ignore[attr-defined]

    def failing(data: bytes, start: int) -> Model:
        raise IndexError("index out of range")

    for broken, reason in ((wrong_amount, "differs from fastavro's at .paid"), (failing, "failed")):
        monkeypatch.setitem(
            REG._fast, topic, GeneratedReader(reader.fingerprint, broken, verify=True)
        )
        with pytest.raises(DecodeMismatch, match=reason):
            REG.decode(topic, raw)
    # Without the verification, bytes the generated reader cannot read are read the usual way.
    lenient = GeneratedReader(reader.fingerprint, failing, verify=False)
    monkeypatch.setitem(REG._fast, topic, lenient)
    assert difference(REG.decode(topic, raw), usual(topic, raw)) is None


def test_difference_sees_a_value_of_another_type_or_form() -> None:
    assert difference(Decimal("1.5"), Decimal("1.50")) == "."
    assert difference(1, 1.0) == ".: int vs float"
    assert difference([date(2026, 1, 1)], [date(2026, 1, 2)]) == "[0]"
    assert difference({"a": 1, "b": 2}, {"b": 2, "a": 1}) == ".: keys"
    value = offline_chain(5, seed=3)["encounters.coded.v1"][0]
    changed = value.model_copy(
        update={"encounter": value.encounter.model_copy(update={"encounter_id": "x"})}  # type: ignore[attr-defined]
    )
    assert difference(value, changed) == ".encounter.encounter_id"
    assert difference(value, value.model_copy()) is None


# Every kind of value the generator reads, beyond what the contracts' records hold today
# (maps, floats, fixed, blocks of a negative count, the whole range of each logical type),
# against fastavro reading the same bytes (records as dicts: no model).
SHAPES = fastavro.parse_schema(
    {
        "type": "record",
        "name": "Shapes",
        "namespace": "test",
        "fields": [
            {"name": "day", "type": {"type": "int", "logicalType": "date"}},
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "clock", "type": ["null", {"type": "int", "logicalType": "time-millis"}]},
            {
                "name": "amount",
                "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2},
            },
            {"name": "flag", "type": "boolean"},
            {"name": "ratio", "type": "float"},
            {"name": "share", "type": "double"},
            {"name": "count", "type": "long"},
            {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B", "C"]}},
            {"name": "digest", "type": {"type": "fixed", "name": "Digest", "size": 4}},
            {"name": "blob", "type": "bytes"},
            {"name": "tags", "type": {"type": "map", "values": "string"}},
            {
                "name": "parts",
                "type": {
                    "type": "array",
                    "items": {
                        "type": "record",
                        "name": "Part",
                        "fields": [
                            {"name": "code", "type": ["null", "string", "long"]},
                            {"name": "kind", "type": "Kind"},
                        ],
                    },
                },
            },
        ],
    }
)


def shapes_value(rng: random.Random, n: int) -> dict[str, object]:
    """A random value of ``SHAPES`` (the ``n``-th: every fifth has no clock)."""
    return {
        "day": date(1900, 1, 1) + (date(2100, 1, 1) - date(1900, 1, 1)) * rng.random(),
        "at": datetime(1971, 1, 1, tzinfo=UTC) + timedelta(milliseconds=rng.randrange(10**13)),
        "clock": None if n % 5 == 0 else time_of(rng.randrange(86_400_000)),
        "amount": Decimal(rng.randrange(-(10**11), 10**11)).scaleb(-2),
        "flag": rng.random() < 0.5,
        "ratio": rng.random() * 1e6,
        "share": rng.uniform(-1e300, 1e300),
        "count": rng.randrange(-(2**63), 2**63),
        "kind": rng.choice("ABC"),
        "digest": rng.randbytes(4),
        "blob": rng.randbytes(rng.randrange(300)),
        "tags": {f"k{i}é": "v" * rng.randrange(200) for i in range(rng.randrange(4))},
        "parts": [
            {
                "code": rng.choice([None, "J45.909", rng.randrange(-(2**40), 2**40)]),
                "kind": rng.choice("ABC"),
            }  # fmt: skip
            for _ in range(rng.randrange(70))
        ],
    }


def test_every_kind_of_value_reads_as_fastavro_reads_it() -> None:
    read = pipeline_reader(SHAPES)
    rng = random.Random(11)
    for n in range(3000):
        value = shapes_value(rng, n)
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, SHAPES, value)
        data = buf.getvalue()
        expected = fastavro.schemaless_reader(io.BytesIO(data), SHAPES)
        assert difference(expected, read(data, 0)) is None, n
        # the same with the bytes further on in a buffer (the header's place)
        assert difference(expected, read(b"0123456789" + data, 10)) is None, n


def test_arrays_and_maps_in_blocks_of_a_negative_count() -> None:
    # A writer may give a block's count negated, followed by the block's size in bytes.
    schema = fastavro.parse_schema(
        {
            "type": "record",
            "name": "Blocks",
            "fields": [
                {"name": "xs", "type": {"type": "array", "items": "long"}},
                {"name": "m", "type": {"type": "map", "values": "int"}},
            ],
        }
    )
    xs = bytes([3, 4, 4, 6, 2, 8, 0])  # count -2 (size 2): 2, 3; count 1: 4; end
    m = bytes([3, 8, 2, ord("a"), 2, 2, ord("b"), 4, 0])  # count -2 (size 4): a=1, b=2; end
    data = xs + m
    expected = fastavro.schemaless_reader(io.BytesIO(data), schema)
    assert expected == {"xs": [2, 3, 4], "m": {"a": 1, "b": 2}}
    assert difference(expected, pipeline_reader(schema)(data, 0)) is None


def pipeline_reader(schema: dict[str, object]) -> Callable[[bytes, int], object]:
    read = reader_for(schema, schema["__named_schemas"], None)  # type: ignore[arg-type]
    assert read is not None
    return read


def time_of(millis: int) -> time:
    return (datetime(2000, 1, 1) + timedelta(milliseconds=millis)).time()
