"""The validation stage's verdicts share their edits: one ``EditHit`` per distinct edit
(``services/validation/engine.py``'s ``_EDITS``), so the verdict writer keeps an edit's
bytes by instance (``avro_write.SHARED``). The writer that keeps none is the judge: the
simulator's verdicts of both mixes, written twice (the second time every edit is kept)."""

from __future__ import annotations

from typing import Any

from sim_corpus import validated

from pipeline.avro_write import SHARED, immutable, writer_for
from pipeline.models import EditHit, ValidatedEncounter
from pipeline.serde import registry


def written(write: Any, value: ValidatedEncounter) -> bytes:
    out = bytearray()
    write(value, out)
    return bytes(out)


def test_a_verdicts_shared_edits_are_written_the_same_from_their_kept_bytes() -> None:
    assert EditHit in SHARED[ValidatedEncounter] and immutable(EditHit)
    sv = registry().latest("encounters.validated.v1")
    named = sv.parsed["__named_schemas"]
    kept = writer_for(sv.parsed, named, ValidatedEncounter)
    plain = writer_for(sv.parsed, named, ValidatedEncounter, kept=frozenset())
    assert kept is not None and plain is not None
    verdicts = [v for mix in ("office", "all") for v in validated(mix)]
    edits = [e for v in verdicts for e in v.edits]
    assert len(edits) > 2 * len({id(e) for e in edits}) > 0  # shared between verdicts
    for _ in range(2):
        for verdict in verdicts:
            assert written(kept, verdict) == written(plain, verdict), verdict.encounter_id
    memos = [v for k, v in kept.__globals__.items() if k.startswith("kept")]
    assert any(isinstance(o, EditHit) for memo in memos for o, _ in memo.values())
