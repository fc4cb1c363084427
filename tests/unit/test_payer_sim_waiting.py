"""The payer simulator reads back a waiting claim as the object it stored, and answers as it
did when it read every waiting claim from its JSON.

A claim event names its interchange (the claim check), so a claim that comes before its
interchange, or before the other claims the interchange lists, waits in the simulator's
store as JSON (``InterchangeStore.wait``). The store now also keeps the claim object under
the exact text it stored and takes it back instead of reading the text, when the row still
holds that text. The judge is the store before (below: every waiting claim read from its
JSON): on both EHR mixes' interchanges as the claims stage batches them, sent in batches
that split interchanges from their claims in both orders, with the store closed and
opened again midway (nothing kept: the text is read) and claims sent twice, the 999, 277CA
and 835 files must be the same, byte for byte.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sim_corpus

from pipeline.models import Model, SubmittedClaim
from pipeline.stage import Incoming
from services.claims.billing import ClaimWriter
from services.claims.domain import (
    interchange_record,
    submitted_claim,
    write_interchange,
)
from sim.payer_app import InterchangeStore, PayerSimOptions, PayerSimStage

AT = datetime(2026, 3, 25, 9, 30, tzinfo=UTC)


class StoreBefore(InterchangeStore):
    """The store before: a waiting claim is read from its JSON every time."""

    def wait(self, claim: SubmittedClaim) -> None:
        with self.atomic():
            self.db.execute(
                "INSERT OR IGNORE INTO waiting (event_id, icn, claim) VALUES (?, ?, ?)",
                (claim.event_id, claim.interchange_control_number, claim.model_dump_json()),
            )

    def _read_waiting(self, event: str, text: str) -> SubmittedClaim:
        return SubmittedClaim.model_validate_json(text)


def records(mix: str) -> list[tuple[str, Model]]:
    """The mix's interchanges as the claims stage publishes them: each interchange record,
    then its claims without the text."""
    writer = ClaimWriter("CLAIMFLOW", "PAYERSIM")
    out: list[tuple[str, Model]] = []
    for number, ((payer, claim_type), planned) in enumerate(
        sim_corpus.planned_groups(mix), start=1
    ):
        for n in range(0, len(planned), 7):
            batch = planned[n : n + 7]
            control = number * 1000 + n + 1
            x12 = write_interchange(
                batch, sender_id=writer.sender_id, receiver_id=writer.receiver_id,
                control_number=control,
            )  # fmt: skip
            ids = [p.claim.claim_id for p in batch]
            out.append(
                ("claims.interchanges.v1", interchange_record(
                    control, payer_id=payer, claim_type=claim_type, adapter="simulator",
                    claim_ids=ids, x12=x12, created_at=AT,
                ))
            )  # fmt: skip
            out += [("claims.submitted.v1", submitted_claim(p, control, None)) for p in batch]
    return out


def answers(store: type[InterchangeStore], folder: Path, sent: list[tuple[str, Model]],
            seed: int) -> list[tuple[str, str, bytes]]:  # fmt: skip
    """Every file the simulator answers ``sent`` with, in batches of random sizes, the store
    closed and opened again halfway."""
    rng = random.Random(seed)
    path = folder / "store.sqlite3"
    stage = PayerSimStage(PayerSimOptions(validate_every=1_000_000), store(path))
    out: list[tuple[str, str, bytes]] = []
    at, restarted = 0, False
    while at < len(sent):
        size = rng.randint(1, 12)
        batch = [
            Incoming(topic, None, value, b"", {"claimflow-adapter": b"simulator"}, 0, at + i, 0)
            for i, (topic, value) in enumerate(sent[at : at + size])
        ]
        at += size
        out += [(o.value.kind, o.value.file_id, o.value.body) for o in stage.handle_batch(batch)]  # type: ignore[union-attr]
        stage.on_batch_done()
        if not restarted and at > len(sent) // 2:
            stage.close()
            stage, restarted = PayerSimStage(stage.options, store(path)), True
    stage.close()
    return out


def shuffled(sent: list[tuple[str, Model]], seed: int) -> list[tuple[str, Model]]:
    """Claims before or after their interchange, some twice."""
    rng = random.Random(seed)
    out = list(sent)
    rng.shuffle(out)
    again = [r for r in sent if r[0] == "claims.submitted.v1" and rng.random() < 0.1]
    return out + again


@pytest.mark.parametrize("mix", sim_corpus.MIXES)
@pytest.mark.parametrize("seed", [1, 2])
def test_the_files_are_the_ones_answered_from_json(tmp_path: Path, mix: str, seed: int) -> None:
    sent = shuffled(records(mix), seed)
    before = answers(StoreBefore, tmp_path / "before", sent, seed)
    after = answers(InterchangeStore, tmp_path / "after", sent, seed)
    kinds = {kind for kind, _, _ in before}
    assert kinds == {"999", "277CA", "835"}
    assert after == before


def test_a_row_that_holds_other_text_is_read_from_its_text() -> None:
    """The kept object stands for its row only while the row holds the text stored."""
    sent = records("office")
    record = sent[0][1]
    claims = [v for topic, v in sent[1:] if topic == "claims.submitted.v1"]
    mine = [c for c in claims if c.interchange_control_number == record.interchange_control_number]  # type: ignore[attr-defined]
    assert len(mine) > 1
    store = InterchangeStore()
    for claim in mine:
        store.wait(claim)  # type: ignore[arg-type]
    changed = mine[0].model_copy(update={"payer_name": "CHANGED IN THE ROW"})
    store.db.execute(
        "UPDATE waiting SET claim = ? WHERE event_id = ?",
        (changed.model_dump_json(), changed.event_id),  # type: ignore[attr-defined]
    )
    store.put(record)  # type: ignore[arg-type]
    taken = {c.event_id: c for c in store.take_complete(record.interchange_control_number)}  # type: ignore[attr-defined]
    assert set(taken) == {c.event_id for c in mine}  # type: ignore[attr-defined]
    assert taken[changed.event_id].payer_name == "CHANGED IN THE ROW"  # type: ignore[attr-defined]
    for claim in mine[1:]:
        assert taken[claim.event_id] == claim.model_copy(update={"x12": record.x12})  # type: ignore[attr-defined]
    assert store.waiting() == 0 and not store._kept
    store.close()
