"""Scale-out of the claims stage: instances killed and added mid-run, and the state each
partition needs follows it.

Two claims instances bill Medicare visits with a Medigap plan and commercial visits on
every partition of encounters.validated.v1 (the payer simulator answers, remittance
posts, each Medigap plan is billed after Medicare's 835). Then one claims instance is
SIGKILLed (nothing flushed or committed) and a new one joins, so its partitions move.
After the rebalance:

- a 999 rejecting each commercial interchange (those the killed instance sent among
  them) is matched to the claims that interchange carried, by the partition that numbered
  it (the 999 is routed by its group control number);
- a changed verdict for every Medicare visit is a replacement (7) of the claim sent
  before the kill, and its posting bills no second Medigap claim; a changed verdict for
  every rejected commercial visit is a new original (the payer never took the first);
- new Medicare visits bill their Medigap plan once, from the new owners.

Every claim event goes out once (a batch read again after the kill repeats an event only
under the same interchange number), no interchange number is used for two interchanges,
nothing goes to the dead-letter topic. Without the restore of the claims stores on
assignment the corrections go out as originals and the 999s find no claims, and this
test fails.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import pytest
from e2e.test_scale_out_remittance import WAIT_S, Records, verdicts
from unit.factories import MEDIGAP_F, VALIDATED_AT, coded, encounter

from pipeline.kafka import ensure_topics, make_producer
from pipeline.models import Coverage, PayerFile, ValidatedEncounter, event_id
from pipeline.serde import registry
from pipeline.settings import Settings
from pipeline.supervisor import Supervisor

pytestmark = [pytest.mark.broker, pytest.mark.e2e, pytest.mark.timeout(240)]
REG = registry()
PARTITIONS = 3
COVERAGE = Coverage(
    payer_id="87726",
    payer_name="UnitedHealthcare",
    plan_type="CI",
    member_id="W123456789",
    group_number="GRP0042",
)
TOPICS = (
    "claims.submitted.v1",
    "claims.interchanges.v1",
    "claims.rejections.v1",
    "remittance.posted.v1",
    "dlq.claims.v1",
)


def partition(key: str) -> int:
    """Where the Kafka client's default partitioner puts a key (CRC-32)."""
    return zlib.crc32(key.encode()) % PARTITIONS


def spread(feed: list[ValidatedEncounter], per_partition: int) -> list[ValidatedEncounter]:
    """``per_partition`` verdicts of each partition."""
    out: list[ValidatedEncounter] = []
    for p in range(PARTITIONS):
        out += [v for v in feed if partition(v.encounter_id) == p][:per_partition]
    assert len(out) == per_partition * PARTITIONS
    return out


def commercial(count: int) -> list[ValidatedEncounter]:
    out = []
    for n in range(count):
        record = coded(
            encounter(
                encounter_id=f"ENC-COMMERCIAL-SCALE-{n:04d}",
                event_id=event_id("commercial-scale", str(n)),
                source_id=f"commercial-scale-{n:04d}",
                coverage=COVERAGE,
            )
        )
        out.append(
            ValidatedEncounter(
                event_id=event_id(record.encounter_id, "validation", "scale"),
                encounter_id=record.encounter_id,
                outcome="clean",
                edits=[],
                rule_pack_version="scale",
                coded=record,
                validated_at=VALIDATED_AT,
            )
        )
    return out


def changed(verdict: ValidatedEncounter) -> ValidatedEncounter:
    """The verdict re-decided with other content (the patient moved): a new event."""
    enc = verdict.coded.encounter
    address = enc.patient.address.model_copy(update={"line1": "7 Changed Road"})  # type: ignore[union-attr]
    patient = enc.patient.model_copy(update={"address": address})
    coded_again = verdict.coded.model_copy(
        update={"encounter": enc.model_copy(update={"patient": patient})}
    )
    return verdict.model_copy(
        update={"event_id": event_id(verdict.event_id, "changed"), "coded": coded_again}
    )


def rejecting_999(icn: int, n: int) -> PayerFile:
    """The payer's 999 rejecting the 837 of interchange ``icn`` (its group GS06 = ISA13)."""
    body = (
        "ISA*00*          *00*          *ZZ*CH             *ZZ*CLAIMFLOW      *260302*1200*^*00501"
        f"*{900 + n:09d}*0*P*:~GS*FA*CH*CLAIMFLOW*20260302*1200*{900 + n}*X*005010X231A1~"
        f"ST*999*0001*005010X231A1~AK1*HC*{icn}*005010X222A1~AK2*837*0001*005010X222A1~"
        "IK3*NM1*8**8~IK4*9*67*7*W123~IK5*R*5~AK9*R*1*1*0~SE*8*0001~GE*1*"
        f"{900 + n}~IEA*1*{900 + n:09d}~"
    )
    file_id = f"999-scale-{icn}"
    return PayerFile(
        event_id=event_id(COVERAGE.payer_id, file_id),
        payer_id=COVERAGE.payer_id,
        file_id=file_id,
        kind="999",
        body=body.encode(),
        received_at=VALIDATED_AT,
    )


def test_claims_instances_killed_and_added_keep_corrections_cob_and_acks_right(
    bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    group = prefix.rstrip(".")
    settings = Settings(topic_prefix=prefix, group_prefix=group)
    ensure_topics(bootstrap, settings, REG)
    medicare = spread(verdicts(60), 3)
    later = [v for v in verdicts(120)[60:] if partition(v.encounter_id) != 0][:6]
    shops = spread(commercial(40), 2)
    sup = Supervisor(
        bootstrap,
        tmp_path,
        env={
            "CLAIMFLOW_TOPIC_PREFIX": prefix,
            "CLAIMFLOW_GROUP_PREFIX": group,
            "CLAIMFLOW_PAYER_SIM__FRONT_END_REJECTION_RATE": "0",
            "CLAIMFLOW_PAYER_SIM__VALIDATE_EVERY": "100",
            "CLAIMFLOW_REMITTANCE__UNMATCHED_GRACE_S": "3600",
        },
        services=(),
        restart=False,
    )
    records = Records(bootstrap, settings, TOPICS)
    producer = make_producer(bootstrap, settings)

    def send(topic: str, items: list[tuple[str, Any]]) -> None:
        for key, value in items:
            producer.produce(
                settings.topic(topic), key=key.encode(), value=REG.encode(topic, value)
            )
        assert producer.flush(30) == 0

    def verdict_items(batch: list[ValidatedEncounter]) -> list[tuple[str, Any]]:
        return [(v.encounter_id, v) for v in batch]

    def claims_of(encounter_ids: set[str]) -> list[Any]:
        return [
            events[0]
            for events in by_event("claims.submitted.v1").values()
            if events[0].encounter_id in encounter_ids
        ]

    def by_event(topic: str) -> dict[str, list[Any]]:
        return {
            eid: [v for t, _, v in copies]
            for eid, copies in records.seen.items()
            if copies[0][0] == topic
        }

    def medigap_done(batch: list[ValidatedEncounter]) -> bool:
        """Every primary of the batch posted, and each posting that leaves the patient
        something followed by the Medigap claim."""
        ids = {v.encounter_id for v in batch}
        primaries = {c.claim_id for c in claims_of(ids) if not c.claim_id.endswith("-2")}
        posted = records.by_claim("remittance.posted.v1")
        billed = set(records.by_claim("claims.submitted.v1"))
        if len(primaries) < len(batch) or not primaries <= set(posted):
            return False
        return all(
            f"{p.claim_id}-2" in billed
            for c in primaries
            for p in posted[c]
            if p.payer_sequence == 1 and p.patient_responsibility > 0
        )

    try:
        sup.add("payer-sim")
        sup.add("claims-1", "claims")
        sup.add("claims-2", "claims")
        sup.add("remittance-1", "remittance")
        send("encounters.validated.v1", verdict_items(medicare + shops))
        assert records.until(lambda: medigap_done(medicare), WAIT_S), "medicare not settled"
        shop_ids = {v.encounter_id for v in shops}
        assert records.until(lambda: len(claims_of(shop_ids)) == len(shops), WAIT_S)

        sup.kill("claims-1")  # SIGKILL: its partitions move with nothing flushed
        sup.add("claims-3", "claims")

        # The payer's front end rejects every commercial interchange (per partition).
        shop_icns = sorted({int(c.interchange_control_number) for c in claims_of(shop_ids)})
        assert {icn_partition(icn) for icn in shop_icns} == set(range(PARTITIONS))
        files = [rejecting_999(icn, n) for n, icn in enumerate(shop_icns)]
        send("payer.inbound.v1", [(f"{f.payer_id}:{f.file_id}", f) for f in files])
        shop_claims = {c.claim_id for c in claims_of(shop_ids)}
        assert records.until(
            lambda: set(records.by_claim("claims.rejections.v1")) >= shop_claims, WAIT_S
        ), "999 rejections not matched to their claims"

        # Changed verdicts after the rebalance, and new visits.
        corrections = [changed(v) for v in medicare + shops]
        send("encounters.validated.v1", verdict_items(corrections + later))
        wanted = len(medicare + shops) * 2

        def corrected() -> bool:
            ids = {v.encounter_id for v in medicare + shops}
            mine = [c for c in claims_of(ids) if not c.claim_id.endswith("-2")]
            return len(mine) >= wanted and medigap_done(later)

        assert records.until(corrected, WAIT_S), "corrections and new visits not billed"
        # The replacements' postings come back too: still no second Medigap claim.
        replaced = {c.claim_id for c in claims_of({v.encounter_id for v in medicare})}
        assert records.until(
            lambda: all(
                len(records.by_claim("remittance.posted.v1").get(c, [])) >= 2
                for c in replaced
                if not c.endswith("-2")
            ),
            WAIT_S,
        ), "replacements not posted"
    finally:
        sup.stop()
        records.consumer.close()

    submitted = by_event("claims.submitted.v1")
    # A claim event read again after the kill went out only under its interchange number.
    for eid, copies in submitted.items():
        assert len({c.interchange_control_number for c in copies}) == 1, eid
    # No interchange number for two interchanges.
    interchanges: dict[str, set[str]] = {}
    for copies in by_event("claims.interchanges.v1").values():
        for value in copies:
            interchanges.setdefault(value.interchange_control_number, set()).add(value.event_id)
    assert all(len(ids) == 1 for ids in interchanges.values())
    for icn in interchanges:
        assert icn_partition(int(icn)) in range(PARTITIONS)

    by_encounter: dict[str, list[Any]] = {}
    for copies in submitted.values():
        by_encounter.setdefault(copies[0].encounter_id, []).append(copies[0])
    for verdict in medicare:
        claims = by_encounter[verdict.encounter_id]
        primary = sorted(
            (c for c in claims if not c.claim_id.endswith("-2")), key=lambda c: c.frequency
        )
        # The original, then a replacement of it (not a second original).
        assert [c.frequency for c in primary] == ["1", "7"], verdict.encounter_id
        assert primary[0].claim_id == primary[1].claim_id
        assert len([c for c in claims if c.claim_id.endswith("-2")]) <= 1
    for verdict in later:
        claims = by_encounter[verdict.encounter_id]
        assert len([c for c in claims if c.claim_id.endswith("-2")]) <= 1
    medigaps = [c for cs in by_encounter.values() for c in cs if c.claim_id.endswith("-2")]
    assert medigaps and {c.payer_id for c in medigaps} == {MEDIGAP_F.payer_id}
    assert len({c.claim_id for c in medigaps}) == len(medigaps)  # each Medigap plan once
    for verdict in shops:
        claims = by_encounter[verdict.encounter_id]
        # Rejected at the front end: the fix is a new original under the same claim id.
        assert [c.frequency for c in claims] == ["1", "1"], verdict.encounter_id
        assert len({c.claim_id for c in claims}) == 1
    rejections = records.by_claim("claims.rejections.v1")
    for claim in claims_of({v.encounter_id for v in shops}):
        if claim.frequency == "1" and claim.claim_id in rejections:
            found = rejections[claim.claim_id]
            assert {r.encounter_id for r in found} == {claim.encounter_id}
    assert not by_event("dlq.claims.v1")


def icn_partition(icn: int) -> int:
    """The partition that numbered an interchange (and reads its acknowledgments)."""
    return partition(f"{icn:09d}")
