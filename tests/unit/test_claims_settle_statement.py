"""A settlement keyed by encounter is recorded in its partition's corrections store by one
statement, without a savepoint around it (``ClaimsStage._retain``). Judged by recording it
inside a savepoint, as before, on the claims stage benchmark's feed of both simulator
mixes (bills, acknowledgments, postings and settlements): the same records; and a
settlement whose statement fails is a dead letter that leaves nothing written, either way."""

from __future__ import annotations

import io
import re
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from sim_corpus import MIXES, validated

import bench.bench_claims_stage as claims_bench
from pipeline.models import DeadLetter
from services.claims.app import ClaimsStage
from services.claims.corrections import SubmittedClaims

# A settlement's times come from the clock of the posting (remittance posts it now).
_TIMES = re.compile(r'"(prune_after|settled_at)": [0-9.]+')


def _fed(mix: str, *, failing: str | None = None) -> list[str]:
    """Every record the stage writes for the mix's encounters, fed as the pipeline feeds
    them (postings and settlements after 20 more encounters were billed); ``failing``: the
    claim id whose settlement fails to be written."""
    dump = io.StringIO()
    with tempfile.TemporaryDirectory() as tmp:
        loop = claims_bench.Settling(Path(tmp), dump)
        corpus = list(validated(mix))[:120]
        if failing is not None:
            settle = SubmittedClaims.settle

            def refused(self: SubmittedClaims, claim_id: str, *args: Any) -> None:
                if claim_id == failing:
                    raise sqlite3.OperationalError("disk I/O error")
                settle(self, claim_id, *args)

            plain = claims_bench._plain

            def letter(value: Any) -> str:  # a dead letter's value is the input's bytes
                if isinstance(value, DeadLetter):
                    return f"{value.source_topic} {value.error_class}: {value.error_message}"
                return plain(value)

            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(SubmittedClaims, "settle", refused)
                patch.setattr(claims_bench, "_plain", letter)
                claims_bench.feed(loop, corpus, 20)
        else:
            claims_bench.feed(loop, corpus, 20)
        loop.stage.close()
    return [_TIMES.sub(r'"\1": T', line) for line in dump.getvalue().splitlines()]


@pytest.mark.parametrize("mix", MIXES)
def test_a_settlement_is_recorded_as_inside_a_savepoint(
    monkeypatch: pytest.MonkeyPatch, mix: str
) -> None:
    records = _fed(mix)
    assert any("\tsettled:" in line for line in records)
    monkeypatch.setattr(ClaimsStage, "settle_in_savepoint", True)
    assert _fed(mix) == records


@pytest.mark.parametrize("mix", MIXES)
def test_a_settlement_that_fails_is_a_dead_letter_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch, mix: str
) -> None:
    first = next(line for line in _fed(mix) if "\tsettled:" in line)
    claim_id = re.search(r'"claim_id": "([^"]+)"', first)
    assert claim_id is not None
    records = _fed(mix, failing=claim_id[1])
    dead = [line for line in records if line.startswith("dlq.claims.v1\t")]
    assert len(dead) == 1 and "disk I/O error" in dead[0]
    assert not any(f'"claim_id": "{claim_id[1]}"' in r for r in records if "\tsettled:" in r)
    assert any("\tsettled:" in line for line in records)  # the others are recorded
    monkeypatch.setattr(ClaimsStage, "settle_in_savepoint", True)
    assert _fed(mix, failing=claim_id[1]) == records
