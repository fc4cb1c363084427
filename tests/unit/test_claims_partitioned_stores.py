"""The claims stage's stores follow their partition: rebuilt from change records alone.

One claims stage bills encounters on two partitions of encounters.validated.v1 (a
Medicare visit with a Medigap plan, a commercial visit, a 277CA rejection, a settlement);
after each batch its stores' change records are taken as the runner takes them for the
changelog. A second stage, on another state folder, is given partition 1 rebuilt from
those records alone, as after a rebalance: its tables equal the first's, row for row, and
it answers as the first would have: a changed verdict is a replacement (7) of the claim
the first stage sent, the Medigap plan is billed once after Medicare's 835, and a
redelivered posting bills nothing. Without the restore the same inputs give a second
original and no Medigap claim, which the test would catch.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from factories import MEDICARE_B, MEDIGAP_F
from test_claims_secondary import AT, answer, clean, with_a_deductible
from test_claims_service import COVERAGE, REG, coded_encounter, stage, submitted, validated

from pipeline.models import (
    ClaimSettled,
    PayerFile,
    RemittancePosting,
    SubmittedClaim,
    event_id,
)
from pipeline.stage import Incoming, Out
from pipeline.state import Change
from services.claims.app import ACKS, ClaimsStage
from services.claims.control import owner
from services.remittance.era import parse_835
from services.remittance.posting import post

Records = dict[tuple[str, int], list[Change]]


def at(value: Any, partition: int, offset: int, topic: str) -> Incoming:
    key = getattr(value, "encounter_id", None) or getattr(value, "file_id", "")
    return Incoming(topic, key, value, REG.encode(topic, value), {}, partition, offset, 0)


def run(claims: ClaimsStage, records: Records, msgs: list[Incoming]) -> list[Out]:
    """One batch as the runner handles it: the output, then the stores' change records
    (for their changelogs), then the commit. Re-keyed postings and settlements are fed
    back on the partition of their encounter (co-partitioned with the verdicts)."""
    outs = list(claims.handle_batch(msgs))
    for store in claims.partitioned_stores():
        for partition, part in store.items():
            records.setdefault((store.name, partition), []).extend(part.take_changes())
    claims.on_batch_done()
    partition_of = {m.value.encounter_id: m.partition for m in msgs if hasattr(m.value, "coded")}
    moved = [o for o in outs if o.raw is not None]
    if moved:
        again = [
            at(o.value, owner(int(o.key), 3) if o.topic == ACKS else partition_of.get(o.key, 1),
               900, o.topic)
            for o in moved
        ]  # fmt: skip
        outs = [o for o in outs if o.raw is None] + run(claims, records, again)
    return outs


def posting_for(claim: SubmittedClaim, trace: str) -> RemittancePosting:
    """The payer simulator's 835 for the claim, posted."""
    payment = parse_835(answer(claim, trace)).claims[0]
    return post(
        payment,
        claim,
        payer_id=claim.payer_id,
        file_id=f"era-{trace}",
        payment_trace=trace,
        payment_date=date(2026, 3, 20),
        posted_at=AT,
    )


def tables(claims: ClaimsStage, partition: int) -> dict[str, Any]:
    """Every row (rowid included) of the partition's stores."""
    out: dict[str, Any] = {}
    for store in claims.partitioned_stores():
        part = store.get(partition)
        for table in part.tables:
            rows = part.db.execute(f"SELECT rowid, * FROM {table} ORDER BY rowid").fetchall()
            out[f"{store.name}.{table}"] = rows
    return out


def restore(claims: ClaimsStage, records: Records, partition: int) -> None:
    """The partition's stores rebuilt from its change records alone, as the runner does."""
    for store in claims.partitioned_stores():
        part = store.open(partition)
        for key, value in records[(store.name, partition)]:
            with part.atomic():
                part.apply(key, value)
        part.take_changes()
        part.commit()


def test_a_partition_rebuilt_from_its_change_records_answers_as_its_first_owner(
    tmp_path: Path,
) -> None:
    first, _ = stage(tmp_path / "first")
    records: Records = {}
    medicare = clean(with_a_deductible(other_coverages=[MEDIGAP_F]))
    commercial = validated(coded_encounter("ENC-COMMERCIAL", coverage=COVERAGE))
    elsewhere = validated(coded_encounter("ENC-OTHER-PARTITION", coverage=COVERAGE))
    billed = submitted(
        run(
            first,
            records,
            [
                at(medicare, 1, 0, "encounters.validated.v1"),
                at(commercial, 1, 1, "encounters.validated.v1"),
                at(elsewhere, 0, 0, "encounters.validated.v1"),
            ],
        )
    )
    by_encounter = {c.encounter_id: c for c in billed}
    assert set(by_encounter) == {medicare.encounter_id, "ENC-COMMERCIAL", "ENC-OTHER-PARTITION"}
    assert by_encounter[medicare.encounter_id].payer_id == MEDICARE_B.payer_id
    # Interchanges are built per partition: the same payer's claim on partition 0 travels
    # in an interchange of its own.
    assert (
        by_encounter["ENC-COMMERCIAL"].interchange_control_number
        != by_encounter["ENC-OTHER-PARTITION"].interchange_control_number
    )

    # The commercial claim settles (the stores keep when its window ends).
    settled = ClaimSettled(
        posting_event_id=event_id("ENC-COMMERCIAL", "posting"),
        event_id=event_id("ENC-COMMERCIAL", "settled"),
        claim_id=by_encounter["ENC-COMMERCIAL"].claim_id,
        encounter_id="ENC-COMMERCIAL",
        payer_id=COVERAGE.payer_id,
        status="paid",
        settled_at=AT,
    )
    run(first, records, [at(settled, 3, 0, "remittance.settled.v1")])
    medicare_posting = posting_for(by_encounter[medicare.encounter_id], "EFT1")

    # Partition 1 moves: a second stage restores it from the change records alone.
    second, _ = stage(tmp_path / "second")
    restore(second, records, 1)
    assert tables(second, 1) == tables(first, 1)

    # The new owner: Medicare's 835 bills the Medigap plan, once.
    outs = run(second, records, [at(medicare_posting, 2, 0, "remittance.posted.v1")])
    (medigap,) = submitted(outs)
    assert (medigap.payer_id, medigap.claim_id) == (
        MEDIGAP_F.payer_id,
        f"{by_encounter[medicare.encounter_id].claim_id}-2",
    )
    # Numbered after the first owner's numbers of the partition, never under one of them.
    used = [int(c.interchange_control_number) for c in billed]
    assert owner(int(medigap.interchange_control_number), 3) == 1
    assert int(medigap.interchange_control_number) > max(n for n in used if owner(n, 3) == 1)
    assert (
        submitted(run(second, records, [at(medicare_posting, 2, 1, "remittance.posted.v1")])) == []
    )
    # A changed verdict for the commercial visit replaces the first owner's claim.
    coverage = COVERAGE.model_copy(update={"member_id": "W555000111"})
    changed = validated(coded_encounter("ENC-COMMERCIAL", coverage=coverage)).model_copy(
        update={"event_id": event_id("ENC-COMMERCIAL", "replayed")}
    )
    (replacement,) = submitted(run(second, records, [at(changed, 1, 2, "encounters.validated.v1")]))
    assert replacement.claim_id == by_encounter["ENC-COMMERCIAL"].claim_id
    assert replacement.frequency == "7"
    for claims in (first, second):
        claims.close()


def test_a_payer_rejection_is_recorded_in_the_partition_that_holds_the_claim(
    tmp_path: Path,
) -> None:
    from test_claims_service import _277ca

    claims, _ = stage(tmp_path)
    records: Records = {}
    one = validated(coded_encounter("ENC-P0", coverage=COVERAGE))
    two = validated(coded_encounter("ENC-P2", coverage=COVERAGE))
    billed = submitted(
        run(
            claims,
            records,
            [at(one, 0, 0, "encounters.validated.v1"), at(two, 2, 0, "encounters.validated.v1")],
        )
    )
    claim = next(c for c in billed if c.encounter_id == "ENC-P2")
    file = PayerFile(
        event_id=event_id("P", "277CA-1"),
        payer_id=COVERAGE.payer_id,
        file_id="277CA-1",
        kind="277CA",
        body=_277ca(claim.claim_id, "A3:164:IL", int(claim.interchange_control_number)).encode(),
        received_at=AT,
    )
    # Read by an instance that holds only partition 1: forwarded, bytes unchanged, keyed
    # by the interchange's number, which names partition 2.
    other, _ = stage(tmp_path / "other")
    other.numbers(1)
    (forward,) = other.handle_batch([at(file, 1, 0, "payer.inbound.v1")])
    assert (forward.topic, forward.key) == (ACKS, claim.interchange_control_number)
    assert forward.raw == REG.encode("payer.inbound.v1", file)
    other.close()
    outs = run(claims, records, [at(file, 2, 0, ACKS)])
    assert [o.value.claim_id for o in outs if o.topic == "claims.rejections.v1"] == [claim.claim_id]
    assert owner(int(claim.interchange_control_number), 3) == 2  # numbered by its partition
    assert [k for k, _ in records[("submitted", 2)] if k.startswith("rejected:")]
    # Read by the instance that holds partition 2: matched there, without the hop.
    again = list(claims.handle_batch([at(file, 0, 1, "payer.inbound.v1")]))
    assert [(o.topic, o.value.claim_id) for o in again] == [
        ("claims.rejections.v1", claim.claim_id)
    ]
    assert not [k for k, _ in records[("submitted", 0)] if k.startswith("rejected:")]
    prior = claims.submitted_stores.get(2).prior("ENC-P2")
    assert prior is not None and prior.rejected
