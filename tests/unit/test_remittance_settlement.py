"""When a posting settles its claim for the claims stage's retention: every adjudication
does, a reversal reopens it, and the event carries no patient data."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from pipeline.models import RemittancePosting
from pipeline.serde import registry
from services.remittance.settlement import settlement_for

POSTED_AT = datetime(2026, 3, 20, 9, 15, 42, tzinfo=UTC)


def posting(status: str) -> RemittancePosting:
    return RemittancePosting(
        event_id=f"post-{status}",
        claim_id="CF0001",
        encounter_id="ehr:enc-1",
        payer_id="87726",
        claim_status_code={"reversed": "22", "denied": "4"}.get(status, "1"),
        status=status,  # type: ignore[arg-type]
        total_charge=Decimal("100"),
        paid=Decimal("80") if status != "denied" else Decimal("0"),
        patient_responsibility=Decimal("0"),
        adjustments=[],
        file_id="835.1",
        posted_at=POSTED_AT,
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("paid", "paid"),
        ("partially_paid", "partially_paid"),
        ("denied", "denied"),
        ("reversed", "reopened"),
        ("unmatched", None),
    ],
)
def test_each_posting_status_settles_reopens_or_says_nothing(
    status: str, expected: str | None
) -> None:
    settled = settlement_for(posting(status))
    if expected is None:
        assert settled is None
        return
    assert settled is not None and settled.status == expected
    assert settled.claim_id == "CF0001" and settled.posting_event_id == f"post-{status}"
    assert settled.settled_at == POSTED_AT
    # Deterministic: the same posting read twice gives the same event.
    assert settlement_for(posting(status)) == settled
    assert (
        registry().decode(
            "remittance.settled.v1", registry().encode("remittance.settled.v1", settled)
        )
        == settled
    )


def test_a_write_off_in_the_console_settles_its_claim() -> None:
    from pipeline.errors import InputError
    from services.console import actions
    from services.remittance.settlement import settlement_for_write_off

    act = actions.work_action(
        "denials", "CF0001", "write_off", "bjones", "biller",
        encounter_id="ehr:enc-1", claim_id="CF0001", amount="20.00",
    )  # fmt: skip
    write_off = actions.written_off(act, "87726")
    settled = settlement_for_write_off(write_off)
    assert (settled.claim_id, settled.encounter_id, settled.payer_id, settled.status) == (
        "CF0001", "ehr:enc-1", "87726", "written_off",
    )  # fmt: skip
    assert settled.posting_event_id == write_off.event_id
    assert settled.settled_at == act.acted_at
    reg = registry()
    assert (
        reg.decode("remittance.settled.v1", reg.encode("remittance.settled.v1", settled)) == settled
    )
    appeal = actions.work_action("denials", "CF0001", "appeal", "bjones", "biller",
                                 claim_id="CF0001")  # fmt: skip
    with pytest.raises(InputError, match="only a write-off"):
        actions.written_off(appeal, "87726")


@pytest.mark.parametrize("status", ["paid", "partially_paid", "denied", "reversed"])
@pytest.mark.parametrize("encounter_id", ["ehr:enc-1", None])
def test_a_settlement_is_the_one_validation_builds(status: str, encounter_id: str | None) -> None:
    """``settlement_for`` builds the event without validating it again; the validated build
    it replaced is the judge: equal, the same JSON, the same Avro bytes."""
    from pipeline.models import ClaimSettled, event_id
    from services.remittance.settlement import SETTLES

    made = posting(status).model_copy(update={"encounter_id": encounter_id})
    settled = settlement_for(made)
    judged = ClaimSettled(
        event_id=event_id(made.event_id, "settled", "remittance", "v1"),
        claim_id=made.claim_id,
        encounter_id=made.encounter_id,
        payer_id=made.payer_id,
        status=SETTLES[made.status],
        posting_event_id=made.event_id,
        settled_at=made.posted_at,
    )
    assert settled == judged and repr(settled) == repr(judged)
    assert settled is not None and settled.model_dump_json() == judged.model_dump_json()
    reg = registry()
    topic = "remittance.settled.v1"
    assert reg.encode(topic, settled) == reg.encode(topic, judged)
