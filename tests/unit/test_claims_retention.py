"""Retention in the claims stage, without a broker: a settled claim's stored verdict and 837
text are kept for the window after remittance settles it, then pruned from the files on
disk; a reversal or a claim sent again starts over; a later correction is refused with the
reason."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from test_claims_837 import COVERAGE, PATIENT, coded_encounter, validated
from test_claims_service import encounters, incoming, stage, submitted

from pipeline.models import ClaimSettled, DeadLetter, SubmittedClaim, ValidatedEncounter, event_id
from services.claims.app import ClaimsStage
from services.claims.retention import DAY_S

SETTLED_AT = datetime(2026, 3, 20, 9, 0, tzinfo=UTC)
T0 = SETTLED_AT.timestamp()


def settled(claim_id: str, status: str = "paid", payer_id: str = COVERAGE.payer_id) -> ClaimSettled:
    return ClaimSettled(
        event_id=event_id(claim_id, status, "test"),
        claim_id=claim_id,
        encounter_id=None,
        payer_id=payer_id,
        status=status,  # type: ignore[arg-type]
        posting_event_id=event_id(claim_id, "posting"),
        settled_at=SETTLED_AT,
    )


def replayed(verdict: ValidatedEncounter) -> ValidatedEncounter:
    """The verdict as a replay with a new rule pack gives it: a new event."""
    return verdict.model_copy(update={"event_id": event_id(verdict.event_id, "replay")})


def on_disk(state: Path) -> bytes:
    """Every byte of the claims stage's stores, write-ahead logs included."""
    return b"".join(p.read_bytes() for p in sorted(state.glob("claims-*/*.sqlite3*")))


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def billed(
    tmp_path: Path, n: int, **options: Any
) -> tuple[ClaimsStage, Clock, list[SubmittedClaim]]:
    """A claims stage on ``tmp_path`` with a clock at T0, after billing ``n`` encounters."""
    claims, _ = stage(tmp_path, retention_sweep_s=1, **options)
    clock = Clock(T0)
    claims.retention.clock = clock
    sent = submitted(list(claims.handle_batch(encounters(n))))
    claims.on_batch_done()
    return claims, clock, sent


def settle(claims: ClaimsStage, *events: ClaimSettled) -> None:
    """remittance.settled.v1 events, one batch, re-keyed by encounter (claims.settled-by-
    encounter.v1, the same bytes) as the stage does, then handled from there."""
    msgs = [incoming(e, 100 + n, "remittance.settled.v1") for n, e in enumerate(events)]
    moved = list(claims.handle_batch(msgs))
    assert [(o.topic, o.key) for o in moved] == [
        ("claims.settled-by-encounter.v1", e.encounter_id) for e in events if e.encounter_id
    ]
    claims.handle_batch([*(incoming(o.value, 200 + n, o.topic) for n, o in enumerate(moved))])
    claims.on_batch_done()


def test_a_settled_claim_is_pruned_after_its_window_and_nothing_of_the_patient_stays(
    tmp_path: Path,
) -> None:
    claims, clock, sent = billed(tmp_path, 2, settled_retention_days=30)
    assert len(sent) == 2 and len({c.interchange_control_number for c in sent}) == 1
    member = COVERAGE.member_id.encode()
    assert member in on_disk(tmp_path)

    # The first claim settles; the window has not ended: everything stays.
    first, second = sent
    settle(claims, settled(first.claim_id))
    clock.now = T0 + 29 * DAY_S
    claims.on_idle()
    assert claims.submitted.prior(first.encounter_id) is not None

    # Past the window: the first verdict goes; the interchange also carries the second
    # claim, which is not settled, so its text stays.
    clock.now = T0 + 31 * DAY_S
    claims.on_idle()
    with pytest.raises(ValueError, match=rf"claim {first.claim_id} was settled on 2026-03-20"):
        claims.submitted.prior(first.encounter_id)
    assert claims.submitted.prior(second.encounter_id) is not None
    stored = claims.numbers(0).interchange(int(first.interchange_control_number))
    assert stored is not None and stored.text != ""

    # The second settles and its window passes: the interchange text is blanked, and no
    # byte of the patient (member id, name) is left in the state files.
    settle(claims, settled(second.claim_id))
    clock.now = T0 + 62 * DAY_S
    claims.on_idle()
    stored = claims.numbers(0).interchange(int(first.interchange_control_number))
    assert stored is not None and stored.text == "" and stored.status == "delivered"
    disk = on_disk(tmp_path)
    assert member not in disk
    assert PATIENT.last_name.upper().encode() not in disk
    assert f'"last_name":"{PATIENT.last_name}"'.encode() not in disk
    # What KPIs and audits need stays: the claim ids, their interchange and encounter.
    assert [c.claim_id for c in claims.numbers(0).claims_of(stored.icn)] == [
        first.claim_id,
        second.claim_id,
    ]
    claims.close()


def test_a_correction_after_the_window_is_refused_with_the_reason(tmp_path: Path) -> None:
    claims, clock, sent = billed(tmp_path, 1, settled_retention_days=0)
    settle(claims, settled(sent[0].claim_id))
    clock.now = T0 + 2
    claims.on_idle()
    # A new verdict for the pruned encounter (a replay with a new rule pack): no blind
    # replacement, a dead letter that says why.
    again = replayed(
        validated(coded_encounter(sent[0].encounter_id, coverage=COVERAGE), "rejected")
    )
    outs = list(claims.handle_batch([incoming(again, 6)]))
    dead = [o.value for o in outs if isinstance(o.value, DeadLetter)]
    assert len(dead) == 1 and not submitted(outs)
    assert dead[0].field == "encounter_id"
    assert "pruned after the retention window" in dead[0].error_message
    claims.close()


def test_a_reversal_or_a_claim_sent_again_keeps_the_claim(tmp_path: Path) -> None:
    claims, clock, sent = billed(tmp_path, 2, settled_retention_days=10)
    reversed_, resent = sent
    settle(
        claims,
        settled(reversed_.claim_id),
        settled(resent.claim_id),
        settled(reversed_.claim_id, "reopened"),
    )
    # The second claim is voided (a new verdict rejects it) after it settled: a claim out.
    changed = replayed(
        validated(coded_encounter(resent.encounter_id, coverage=COVERAGE), "rejected")
    )
    outs = submitted(list(claims.handle_batch([incoming(changed, 13)])))
    claims.on_batch_done()
    assert [c.frequency for c in outs] == ["8"]
    clock.now = T0 + 365 * DAY_S
    claims.on_idle()
    assert claims.submitted.prior(reversed_.encounter_id) is not None
    assert claims.submitted.prior(resent.encounter_id) is not None
    claims.close()


def test_a_payer_has_its_own_window(tmp_path: Path) -> None:
    claims, clock, sent = billed(
        tmp_path,
        1,
        settled_retention_days=10,
        settled_retention_days_by_payer={COVERAGE.payer_id: 400},
    )
    settle(claims, settled(sent[0].claim_id))
    clock.now = T0 + 399 * DAY_S
    claims.on_idle()
    assert claims.submitted.prior(sent[0].encounter_id) is not None
    clock.now = T0 + 401 * DAY_S
    claims.on_idle()
    with pytest.raises(ValueError, match="pruned"):
        claims.submitted.prior(sent[0].encounter_id)
    claims.close()
