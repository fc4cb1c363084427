"""What a record costs to encode and decode, by topic, and what a re-key hop costs per record.

The records are real: the offline chain's (``bench/chain.py``; the pipeline benchmark's mix
of formats). For each topic, CPU microseconds per record (fastest of several rounds):
- ``encode``: ``Registry.encode`` (the writer generated per contract,
  ``pipeline/avro_write.py``) beside the paths it replaced: the compiled dump then
  fastavro's writer (``encode_dump_us``, ``encode_ratio``), and before that the model dumped
  by pydantic with fastavro finding each union's branch (``encode_old_us``);
- ``decode``: ``Registry.decode`` (the reader generated per contract, ``pipeline/avro_read.py``)
  beside the path it replaced, fastavro's read then the trusted build (``decode_old_us``,
  ``decode_ratio``); and fastavro's read and the trusted build apart (``read_us``,
  ``build_us``);
- ``rekey``: a re-key hop per record, decoding the record to compute its key (before) beside
  the runner's pass-through, which reads the key header and checks the writer fingerprint;
  and coding reading back its by-patient records, decoded (before) or kept (``reread``);
- ``splice``: a record that embeds an input unchanged (``Stage.embeds``), encoded field by
  field (before) beside the input's bytes spliced in (``serde.Splicer``), the embedded
  record decoded from its bytes as the runner does;
- ``read_resolved_us``: fastavro's read given the newest schema as reader schema too, as
  ``Registry.decode_dict`` did for a record written with it (``read_us``: without).
Environment: BENCH_SERDE_N (encounters, default 200), BENCH_SERDE_ROUNDS (default 7).
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from typing import Any

import fastavro

from bench.chain import offline_chain
from pipeline.models import Model, patient_key
from pipeline.serde import HEADER_LEN, MAGIC, Datum, model_builder, registry

REG = registry()


def encode_by_pydantic(topic: str, value: Model) -> bytes:
    """``Registry.encode`` as it was before the compiled dump: the model dumped by pydantic,
    fastavro finding each union's branch by itself (the reference of the differential test,
    tests/contract/test_serde_paths.py)."""
    sv = REG.latest(topic)
    buf = io.BytesIO()
    buf.write(MAGIC + sv.fingerprint)
    fastavro.schemaless_writer(buf, sv.parsed, value.model_dump())
    return buf.getvalue()


def _cpu_us(run: Callable[[], Any], count: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        run()
        best = min(best, time.process_time() - started)
    return round(best / count * 1e6, 1)


def alternating(
    old: Callable[[], Any], new: Callable[[], Any], count: int, rounds: int
) -> tuple[float, float]:
    """Old and new path, alternating round by round (so both see the same machine load)."""
    found = in_turn((old, new), count, rounds)
    return found[0], found[1]


def in_turn(runs: tuple[Callable[[], Any], ...], count: int, rounds: int) -> list[float]:
    """Each path's CPU microseconds per record, the paths taking turns round by round."""
    best = [float("inf")] * len(runs)
    for _ in range(rounds):
        for i, run in enumerate(runs):
            started = time.process_time()
            run()
            best[i] = min(best[i], time.process_time() - started)
    return [round(b / count * 1e6, 1) for b in best]


def main() -> dict[str, Any]:
    n = int(os.environ.get("BENCH_SERDE_N", "200"))
    rounds = int(os.environ.get("BENCH_SERDE_ROUNDS", "7"))
    chain = offline_chain(n, seed=5)
    topics: dict[str, Any] = {}
    for topic, values in sorted(chain.items()):
        count = len(values)
        raws = [REG.encode(topic, v) for v in values]
        assert raws == [encode_by_pydantic(topic, v) for v in values], topic
        assert raws == [REG._encode_usual(topic, v) for v in values], topic
        sv = REG.latest(topic)
        build = model_builder(REG.topics[topic].model)

        def read(raws: list[bytes] = raws, parsed: Any = sv.parsed) -> list[Any]:
            return [fastavro.schemaless_reader(io.BytesIO(r[HEADER_LEN:]), parsed) for r in raws]

        datums = read()

        def read_resolved(raws: list[bytes] = raws, parsed: Any = sv.parsed) -> list[Any]:
            return [
                fastavro.schemaless_reader(io.BytesIO(r[HEADER_LEN:]), parsed, parsed) for r in raws
            ]

        assert read_resolved() == datums
        resolved_us, read_us = alternating(read_resolved, read, count, rounds)
        old, dump, new = in_turn(
            (
                lambda t=topic, vs=values: [encode_by_pydantic(t, v) for v in vs],
                lambda t=topic, vs=values: [REG._encode_usual(t, v) for v in vs],
                lambda t=topic, vs=values: [REG.encode(t, v) for v in vs],
            ),
            count,
            rounds,
        )
        decode_old, decode_new = alternating(
            lambda t=topic, rs=raws, b=build: [b(REG.decode_dict(t, r)) for r in rs],
            lambda t=topic, rs=raws: [REG.decode(t, r) for r in rs],
            count,
            rounds,
        )
        topics[topic] = {
            "records": count,
            "bytes": sum(map(len, raws)) // count,
            "encode_old_us": old,
            "encode_dump_us": dump,
            "encode_us": new,
            "encode_ratio": round(new / dump, 2),
            "decode_old_us": decode_old,
            "decode_us": decode_new,
            "decode_ratio": round(decode_new / decode_old, 2),
            "read_resolved_us": resolved_us,
            "read_us": read_us,
            "build_us": _cpu_us(lambda ds=datums, b=build: [b(d) for d in ds], count, rounds),
        }
    return {
        "n": n,
        "topics": topics,
        "rekey": _rekey(chain, rounds),
        "splice": _splice(chain, rounds),
    }


def _splice(chain: dict[str, list[Model]], rounds: int) -> dict[str, Any]:
    """Per record of each embedding output: encoded field by field, or with the embedded
    input's bytes spliced in (byte-identical: asserted)."""
    found: dict[str, Any] = {}
    for topic, path, source in (
        ("encounters.coded.v1", ("encounter",), "encounters.collected.v1"),
        ("encounters.validated.v1", ("coded",), "encounters.coded.v1"),
    ):
        splicer = REG.splicer(topic, path)
        records: list[tuple[Model, dict[int, Datum]]] = []
        for value in chain[topic]:
            embedded = getattr(value, path[0])
            raw = REG.encode(source, embedded)
            read = REG.decode(source, raw)  # the input as the runner decodes it
            datum = REG.datum(source, raw, read)
            assert datum is not None
            records.append((value.model_copy(update={path[0]: read}), {id(read): datum}))

        def plain(t: str = topic, rs: Any = records) -> list[bytes]:
            return [REG.encode(t, v) for v, _ in rs]

        def spliced(sp: Any = splicer, rs: Any = records) -> list[bytes]:
            return [sp.encode(v, known)[0] for v, known in rs]

        assert plain() == spliced(), topic
        old, new = alternating(plain, spliced, len(records), rounds)
        found[f"{topic} {'.'.join(path)}"] = {
            "encode_us": old,
            "spliced_us": new,
            "ratio": round(new / old, 3),
        }
    return found


def _rekey(chain: dict[str, list[Model]], rounds: int) -> dict[str, Any]:
    """Per record of each re-key hop: decode and compute the key, or read the header."""
    hops: dict[str, Any] = {}
    for topic, key_of in (
        ("encounters.coded.v1", lambda v: patient_key(v.encounter)),
        ("remittance.posted.v1", lambda v: v.encounter_id),
        ("remittance.settled.v1", lambda v: v.encounter_id),
    ):
        values = chain[topic]
        records = [(REG.encode(topic, v), {"key": key_of(v).encode()}) for v in values]

        def decoded(t: str = topic, rs: Any = records, k: Any = key_of) -> list[str]:
            return [k(REG.decode(t, raw)) for raw, _ in rs]

        def forwarded(t: str = topic, rs: Any = records) -> list[str]:
            return [h["key"].decode() for raw, h in rs if REG.known_writer(t, raw)]

        assert decoded() == forwarded()
        old, new = alternating(decoded, forwarded, len(records), rounds)
        hops[topic] = {"decode_us": old, "pass_through_us": new, "ratio": round(new / old, 3)}
    # Coding reads back its own records from coding.by-patient.v1 (``Stage.reread``): the
    # model written is looked up by the bytes read instead of decoded.
    topic = "coding.by-patient.v1"
    written = {(topic, REG.encode(topic, v)): v for v in chain["encounters.coded.v1"]}
    raws = [raw for _, raw in written]

    def reread_decoded() -> list[Any]:
        return [REG.decode(topic, raw) for raw in raws]

    def reread_kept() -> list[Any]:
        return [written.get((topic, bytes(raw))) for raw in raws]  # bytes read: a new object

    old, new = alternating(reread_decoded, reread_kept, len(raws), rounds)
    hops["coding.by-patient.v1 read back"] = {
        "decode_us": old,
        "kept_us": new,
        "ratio": round(new / old, 3),
    }
    return hops
