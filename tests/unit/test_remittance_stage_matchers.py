"""The partitioned stage keeps one claim matcher per partition, over that partition's store:
made again when the store is another (the partition revoked and assigned again)."""

from __future__ import annotations

from pathlib import Path

from services.remittance.app import RemittanceStage, partitioned_ledgers


def test_one_matcher_per_partition_store(tmp_path: Path) -> None:
    claims, payers = partitioned_ledgers(tmp_path)
    stage = RemittanceStage(claims=claims, payers=payers)
    first, other = claims.open(0), claims.open(1)
    matcher = stage._claims_of(0)
    assert matcher.ledger is first
    assert stage._claims_of(0) is matcher
    assert stage._claims_of(1).ledger is other
    claims.close(0)
    again = claims.open(0)
    assert again is not first
    assert stage._claims_of(0).ledger is again
    claims.close_all()
    payers.close_all()
