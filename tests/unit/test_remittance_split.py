"""Remittance split by claim id gives what one instance gives.

The 835 fixtures (tests/fixtures/835/) go through remittance two ways: one ledger in one
process (``Matcher``, what ``claimflow remit post`` runs), and the live service's layout —
each file split by the first step, claim payments routed by claim id to the partition of
their claim (``claims.submitted.v1``'s partitioner: CRC-32 of the key), payments routed by
payer to their payer's partition, one ledger per partition — with the partitions' queues
drained in a shuffled order, as instances would. Postings, denials, settlements and
exceptions must be the same records, and the ledgers must say the same about PLBs, net
paid and forward balances. A partition's ledger must also come back whole from its
changelog alone.
"""

from __future__ import annotations

import random
import zlib
from collections import deque
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from test_remittance_real_payers import CLAIMS, FIXTURES, MEDICARE, MEDIGAP, claim

from pipeline.models import Model, PayerFile, SubmittedClaim, event_id
from pipeline.partitioned import PartitionedStores
from pipeline.stage import Incoming, Out
from services.remittance.app import RemittanceStage, partitioned_ledgers
from services.remittance.ledger import Ledger
from services.remittance.matching import Matcher, RemittanceOptions
from services.remittance.split import CLAIM_PAYMENTS, PAYER_PAYMENTS, split_file

D = Decimal
PARTITIONS = 4  # the fixtures' claims then fall in every partition
INTERNAL = (CLAIM_PAYMENTS, PAYER_PAYMENTS)
#: The order the files come in (the forward balance and the takeback name earlier files).
FILES = [
    ("bpr16_impossible_date.835", MEDICARE),
    ("component_separator_mismatch.835", MEDICARE),
    ("latin1_patient_name.835", MEDICARE),
    ("two_payments_one_off_by_a_cent.835", MEDICARE),
    ("split_claim.835", MEDICARE),
    ("medicare_crossover.835", MEDICARE),
    ("medigap_secondary.835", MEDIGAP),
    ("plb_wo_takeback.835", MEDICARE),
    ("plb_forward_balance_1.835", MEDICARE),
    ("plb_forward_balance_2.835", MEDICARE),
]
_NOW_FIELDS = {"posted_at", "queued_at", "detected_at", "settled_at"}
OPTIONS = RemittanceOptions(unmatched_grace_s=0.0)
CLAIMS = [*CLAIMS, claim("PCN2002", "280.00", "143.00")]


def partition_of(key: str) -> int:
    """librdkafka's default partitioner (consistent_random): CRC-32 of the key."""
    return zlib.crc32(key.encode()) % PARTITIONS


def short_split() -> bytes:
    """split_claim.835 for another claim, its second CLP paying 10.00 less: an underpayment
    (a denial)."""
    text = (FIXTURES / "split_claim.835").read_text()
    short = text.replace("CLP*PCN2001*1*80*16*4*", "CLP*PCN2001*1*80*6*4*").replace(
        "SVC*HC:93000*80*16**1~\nDTM*472*20261114~\nCAS*CO*45*60~",
        "SVC*HC:93000*80*6**1~\nDTM*472*20261114~\nCAS*CO*45*70~",
    )
    short = short.replace("BPR*I*114.40*", "BPR*I*104.40*").replace("EFT26120106", "EFT261201SH")
    return short.replace("PCN2001", "PCN2002").encode()


def payer_files() -> list[PayerFile]:
    bodies = [(name, payer, (FIXTURES / name).read_bytes()) for name, payer in FILES]
    bodies.insert(5, ("short_split.835", MEDICARE, short_split()))
    return [
        PayerFile(
            event_id=event_id(payer, name),
            payer_id=payer,
            file_id=name,
            kind="835",
            body=body,
            received_at=CLAIMS[0].submitted_at,
        )
        for name, payer, body in bodies
    ]


def record(out: Out | Any) -> tuple[str, str, Any]:
    """An output as comparable data: topic, key and value without the clock's fields."""
    value = {k: v for k, v in out.value.model_dump(mode="json").items() if k not in _NOW_FIELDS}
    return out.topic, out.key, value


class Partitioned:
    """The live service's layout in one process: a queue per topic partition, drained in
    a shuffled order; internal records go back to the queue of their key's partition."""

    def __init__(self, folder: Path, seed: int) -> None:
        self.claims, self.payers = partitioned_ledgers(folder)
        for partition in range(PARTITIONS):
            self.claims.open(partition)
            self.payers.open(partition)
        self.stage = RemittanceStage(claims=self.claims, payers=self.payers, options=OPTIONS)
        self.queues: dict[tuple[str, int], deque[tuple[str, Model]]] = {}
        self.offsets: dict[tuple[str, int], int] = {}
        self.rng = random.Random(seed)
        self.outputs: list[Out] = []
        self.changes: dict[tuple[str, int], list[tuple[str, bytes | None]]] = {}

    def send(self, topic: str, key: str, value: Model) -> None:
        partition = 0 if topic == "payer.inbound.v1" else partition_of(key)
        self.queues.setdefault((topic, partition), deque()).append((key, value))

    def drain(self) -> None:
        while ready := sorted(k for k, q in self.queues.items() if q):
            topic, partition = self.rng.choice(ready)
            key, value = self.queues[(topic, partition)].popleft()
            offset = self.offsets[(topic, partition)] = self.offsets.get((topic, partition), 0) + 1
            msg = Incoming(topic, key, value, b"", {}, partition, offset, 0)
            outs = self.handle(msg)
            if outs is None:  # failed, routed by the subclass: the others go on
                continue
            for out in outs:
                if out.topic in INTERNAL and out.value is not None:
                    self.send(out.topic, out.key, out.value)
                else:
                    self.outputs.append(out)
            self.commit()

    def handle(self, msg: Incoming) -> list[Out] | None:
        """The stage's outputs for one input (None: a subclass routed its failure)."""
        return list(self.stage.handle(msg))

    def sweep(self) -> None:
        self.outputs += self.stage.on_idle()
        self.commit()

    def commit(self) -> None:
        """What the runner does after a batch: the changes to their changelogs, then commit."""
        for stores in (self.claims, self.payers):
            for partition, store in stores.items():
                self.changes.setdefault((stores.name, partition), []).extend(store.take_changes())
            stores.commit()


def one_ledger(tmp_path: Path, claims_first: bool) -> tuple[list[Out], Ledger]:
    ledger = Ledger(tmp_path / "one.sqlite3")
    matcher = Matcher(ledger, options=OPTIONS)
    outs: list[Out] = []
    if claims_first:
        for claim in CLAIMS:
            outs += matcher.claim(claim)
    for offset, file in enumerate(payer_files()):
        outs += matcher.payer_file(file, (0, offset + 1))
    if not claims_first:
        outs += matcher.overdue()
        for claim in CLAIMS:
            outs += matcher.claim(claim)
    ledger.commit()
    return outs, ledger  # type: ignore[return-value]


def partitioned(tmp_path: Path, claims_first: bool, seed: int) -> Partitioned:
    run = Partitioned(tmp_path / f"parts-{seed}", seed)
    if claims_first:
        for claim in CLAIMS:
            run.send("claims.submitted.v1", claim.claim_id, claim)
    for file in payer_files():
        run.send("payer.inbound.v1", f"{file.payer_id}:{file.file_id}", file)
    run.drain()
    if not claims_first:
        run.sweep()
        for claim in CLAIMS:
            run.send("claims.submitted.v1", claim.claim_id, claim)
        run.drain()
    return run


def plb_view(ledgers: list[Ledger], claims: list[SubmittedClaim]) -> dict[str, Any]:
    """What the ledgers say about PLBs, whichever store holds each part."""
    applied = sorted(
        (tuple(sorted(a.items())) for led in ledgers for a in led.plb_applications()), key=str
    )
    net = {c.claim_id: sum((led.net_paid(c.claim_id) for led in ledgers), D(0)) for c in claims}
    balances = {
        payer: sum((led.forward_balance(payer) for led in ledgers), D(0))
        for payer in (MEDICARE, MEDIGAP)
    }
    return {"applied": applied, "net": net, "forward_balances": balances}


@pytest.mark.parametrize("claims_first", [True, False], ids=["claims-first", "payments-first"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_split_by_claim_id_posts_what_one_instance_posts(
    tmp_path: Path, claims_first: bool, seed: int
) -> None:
    reference, ledger = one_ledger(tmp_path, claims_first)
    run = partitioned(tmp_path, claims_first, seed)
    expected = sorted((record(o) for o in reference), key=str)
    got = sorted((record(o) for o in run.outputs), key=str)
    assert got == expected
    topics = {o.topic for o in reference}
    assert {"remittance.posted.v1", "remittance.denials.v1", "remittance.settled.v1"} <= topics
    assert "remittance.exceptions.v1" in topics  # the file a cent off, and (late) unmatched
    stores = [s for _, s in run.claims.items()] + [s for _, s in run.payers.items()]
    view = plb_view(stores, CLAIMS)
    assert view == plb_view([ledger], CLAIMS)
    assert view["net"]["PCN1001"] != sum(p.paid for p in ledger.postings("PCN1001"))  # WO
    assert view["forward_balances"][MEDICARE] == D("0.00")
    # Claims of every partition, payments of both payers' partitions.
    assert {partition_of(c.claim_id) for c in CLAIMS} == set(range(PARTITIONS))


def test_each_partition_comes_back_whole_from_its_changelog(tmp_path: Path) -> None:
    run = partitioned(tmp_path, claims_first=False, seed=7)
    for stores in (run.claims, run.payers):
        for partition, store in stores.items():
            copy = Ledger(tmp_path / f"copy-{stores.name}-{partition}.sqlite3", changelog=True)
            for key, value in run.changes[(stores.name, partition)]:
                with copy.atomic():
                    copy.apply(key, value)
            copy.commit()
            for table in ("claims", "waiting", "posted", "claim_plb", "payments",
                          "provider_adjustments", "claim_refs"):  # fmt: skip
                query = f"SELECT * FROM {table} ORDER BY 1, 2"
                assert copy.db.execute(query).fetchall() == store.db.execute(query).fetchall()
            query = "SELECT * FROM recent_refs ORDER BY rowid"  # claim_refs' newest rows
            assert copy.db.execute(query).fetchall() == store.db.execute(query).fetchall()
            copy.close()


def test_a_claim_payment_names_its_claim_and_carries_the_clp_loop() -> None:
    file = payer_files()[4]  # split_claim.835: one claim over two CLPs
    split = split_file(file, (2, 9))
    assert [(r.claim_id, r.occurrence) for r in split.claim_payments] == [
        ("PCN2001", 0),
        ("PCN2001", 1),
    ]
    first = split.claim_payments[0]
    assert (first.source_partition, first.source_offset, first.payer_id) == (2, 9, MEDICARE)
    assert first.payment is not None and '"service_lines"' in first.payment
    (payment,) = split.payer_payments
    assert (payment.payer_id, payment.claim_count) == (MEDICARE, 2)


def test_the_claim_payments_topic_is_co_partitioned_with_the_claims() -> None:
    from pipeline.serde import registry

    topics = registry().topics
    assert topics[CLAIM_PAYMENTS].partitions == topics["claims.submitted.v1"].partitions


def test_a_record_of_an_unassigned_partition_is_refused(tmp_path: Path) -> None:
    claims = PartitionedStores("ledger", "claims.submitted.v1", tmp_path, Ledger)
    payers = PartitionedStores("payer-ledger", PAYER_PAYMENTS, tmp_path, Ledger)
    stage = RemittanceStage(claims=claims, payers=payers)
    with pytest.raises(LookupError, match="partition 1 of claims.submitted.v1"):
        stage.handle(Incoming("claims.submitted.v1", "C", CLAIMS[0], b"", {}, 1, 0, 0))
