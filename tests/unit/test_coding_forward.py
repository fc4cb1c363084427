"""Coding's risk step publishes a by-patient record it did not change (no other encounter of
the member's year changed its HCCs) as the bytes it read, not encoded again. The judge is
the encoding itself: the bytes forwarded are what encoding the record for
encounters.coded.v1 gives; records it changed, or read from bytes of an older schema, are
encoded; and a record whose bytes differ from its model is caught under verification."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import fastavro
import pytest
import sim_corpus

from pipeline.models import CodedEncounter
from pipeline.serde import MAGIC, VERIFY_SPLICE_ENV, SpliceMismatch, registry
from pipeline.stage import Incoming, Out
from services.coding.app import CodingStage, partitioned_risk
from services.coding.audit import AuditPolicy, AuditStore
from services.coding.review import BY_PATIENT, CODED, ReviewStore

REG = registry()
NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def stage(tmp: Path) -> CodingStage:
    found = CodingStage(
        sim_corpus.coder(),
        ReviewStore(tmp / "review.sqlite3"),
        AuditStore(tmp / "audit.sqlite3", AuditPolicy(share=0)),
        partitioned_risk(tmp),
    )
    for stores in found.partitioned_stores():
        stores.open(0)
    return found


def close(st: CodingStage) -> None:
    """The stage's stores (not its coder: the corpus's, shared by other tests)."""
    st.store.close()
    st.audits.close()
    for stores in st.partitioned_stores():
        stores.close_all()


def by_patient(st: CodingStage, value: CodedEncounter, raw: bytes) -> list[Out]:
    msg = Incoming(BY_PATIENT, "k", value, raw, {}, 0, 0, 0)
    return [o for o in st.handle(msg) if o.topic == CODED]


def test_an_unchanged_record_goes_on_as_its_bytes(tmp_path: Path) -> None:
    st = stage(tmp_path)
    forwarded = encoded = 0
    encounters = [e for mix in sim_corpus.MIXES for e in sim_corpus.encounters(mix)]
    for enc in encounters:  # members with several visits in a year
        collected = Incoming("encounters.collected.v1", "k", enc, b"", {}, 0, 0, 0)
        for out in st.handle(collected):
            if out.topic != BY_PATIENT:
                continue
            raw = REG.encode(BY_PATIENT, out.value)
            read = REG.decode(BY_PATIENT, raw)  # as the runner reads it back
            (coded,) = by_patient(st, read, raw)  # type: ignore[arg-type]
            assert coded.raw is None or REG.encode(CODED, coded.value) == coded.raw  # type: ignore[arg-type]
            if coded.value is read:
                assert coded.raw == raw
                forwarded += 1
            else:  # HCCs completed with the member's year: a new record, encoded
                assert coded.raw is None
                encoded += 1
    # Both cases met. A member's year seldom adds an HCC the encounter lacks (1 and 4 of
    # the two mixes' records): the rest are the records read, forwarded as their bytes.
    assert forwarded > 100 and encoded > 0, (forwarded, encoded)
    close(st)


def test_bytes_of_an_older_schema_or_another_record_are_not_forwarded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = stage(tmp_path)
    enc = sim_corpus.encounters("office")[0]
    collected = Incoming("encounters.collected.v1", "k", enc, b"", {}, 0, 0, 0)
    (value,) = [o.value for o in st.handle(collected) if o.topic == BY_PATIENT]
    assert isinstance(value, CodedEncounter)
    old = REG.versions[CODED][0]
    assert old.fingerprint != REG.latest(CODED).fingerprint
    buf = io.BytesIO()
    buf.write(MAGIC + old.fingerprint)
    fastavro.schemaless_writer(buf, old.parsed, REG.decode_dict(CODED, REG.encode(CODED, value)))
    (out,) = by_patient(st, value, buf.getvalue())
    assert out.raw is None and out.value is value
    # Bytes of another record under the model read (never so from the runner): caught.
    other = value.model_copy(update={"confidence": 0.5})
    monkeypatch.setenv(VERIFY_SPLICE_ENV, "1")
    with pytest.raises(SpliceMismatch, match="forwarded differs"):
        by_patient(st, value, REG.encode(CODED, other))
    close(st)
