"""A claim event and an interchange record made from their values are the ones validation
made.

``domain.submitted_claim`` and ``domain.interchange_record`` make their models without
validating them: the values are the plan's and the stored interchange's, of the types the
fields hold, the money put in cents as ``Money`` puts it. The judge is the validated build
they replaced: on every claim of the simulator's encounters of both mixes (a physician's
and a facility's part alike), with and without the interchange's text, the two must be
equal, print the same (value types too), dump the same JSON and encode to the same Avro
bytes; an identifier out of the model's bounds is still refused.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from bench.bench_claims_stage import verdicts
from pipeline.models import Interchange, SubmittedClaim
from pipeline.serde import registry
from services.claims.domain import (
    PlannedClaim,
    claim_parts,
    interchange_record,
    plan_claim,
    submitted_claim,
)
from services.claims.settings import ClaimsSettings
from services.refdata.masterdata import load_master_data

REG = registry()


def judge_submitted(planned: PlannedClaim, control_number: int, x12: str | None) -> SubmittedClaim:
    """The validated build ``submitted_claim`` replaced."""
    claim = planned.claim
    return SubmittedClaim(
        event_id=planned.event_id,
        claim_id=claim.claim_id,
        encounter_id=planned.encounter_id,
        frequency=claim.frequency,
        original_reference=claim.original_reference,
        rule_pack_version=planned.rule_pack_version,
        claim_type=planned.claim_type,
        payer_id=planned.payer_id,
        payer_name=planned.payer_name,
        total_charge=planned.total_charge,
        expected_reimbursement=planned.expected,
        expected_basis=planned.expected_basis,
        line_count=planned.line_count,
        service_start=planned.service_start,
        service_end=planned.service_end,
        interchange_control_number=f"{control_number:09d}",
        x12=x12,
        submitted_at=planned.submitted_at,
    )


def same(made: Any, judged: Any, topic: str) -> None:
    assert made == judged
    assert repr(made) == repr(judged)
    assert made.model_dump_json() == judged.model_dump_json()
    assert made.model_fields_set == judged.model_fields_set
    assert REG.encode(topic, made) == REG.encode(topic, judged)


@pytest.fixture(scope="module")
def planned() -> list[PlannedClaim]:
    master = load_master_data(ClaimsSettings())
    out = []
    for mix in ("office", "all"):
        for verdict in verdicts(60, mix):
            for _, part in claim_parts(verdict):
                out.append(plan_claim(part, master=master))
    return out


def test_a_claim_event_is_the_validated_one(planned: list[PlannedClaim]) -> None:
    # No contract nor Medicare tables here: every expected amount is None (the amounts are
    # judged below).
    for p in planned:
        for x12 in (None, "ISA*00~\n"):
            same(
                submitted_claim(p, 100000123, x12),
                judge_submitted(p, 100000123, x12),
                "claims.submitted.v1",
            )


@pytest.mark.parametrize("amount", ["0", "12.5", "12.345", "12.355", "-0.005", "1E+2", "0.1000"])
def test_amounts_are_put_in_cents_as_money_puts_them(
    planned: list[PlannedClaim], amount: str
) -> None:
    p = replace(planned[0], total_charge=Decimal(amount), expected=Decimal(amount))
    same(submitted_claim(p, 7, None), judge_submitted(p, 7, None), "claims.submitted.v1")


def test_a_claim_id_out_of_bounds_is_refused_as_before(planned: list[PlannedClaim]) -> None:
    p = planned[0]
    long = replace(p, claim=replace(p.claim, claim_id="C" * 21))
    with pytest.raises(ValidationError):
        submitted_claim(long, 7, None)


def test_an_interchange_record_is_the_validated_one(planned: list[PlannedClaim]) -> None:
    at = datetime(2026, 3, 25, 9, 30, 15, 123000, tzinfo=UTC)
    for claim_type in ("professional", "institutional"):
        kwargs: dict[str, Any] = {
            "payer_id": "60054",
            "claim_type": claim_type,
            "adapter": "simulator",
            "claim_ids": [p.claim_id for p in planned[:3]],
            "x12": "ISA*00~\nIEA*1*100000123~\n",
            "created_at": at,
        }
        made = interchange_record(100000123, **kwargs)
        judged = Interchange(
            event_id=made.event_id,
            interchange_control_number="100000123",
            **{**kwargs, "claim_ids": list(kwargs["claim_ids"])},
        )
        same(made, judged, "claims.interchanges.v1")
