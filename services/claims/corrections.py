"""Answers to a changed verdict on an encounter already billed: replacement or void.

When validation re-decides an encounter (a replay with a new rule pack, or a re-coded
encounter), the claims service must never send a second original for it. ``decide`` is
the pure rule, given the claim last submitted for the encounter (if any) and the new
verdict:

- nothing billed yet: an original (frequency 1) for a clean or warned verdict, nothing for
  a rejected one;
- a live claim (1 or 7): a rejected verdict voids it (8); a billable verdict whose outcome
  or coded content differs replaces it (7); the same outcome and content: nothing;
- a voided claim: a billable verdict bills again as an original (1), a rejected one
  nothing.

A replacement or void keeps the claim id (patient control number) and refers to the
original by the payer's claim control number when known, else by the original claim id.
Its event id includes the verdict's event id, so a second replacement of the same claim
is a new event while a re-read verdict gives the same event again.

``SubmittedClaims`` keeps, per encounter, the claim last submitted and the verdict it was
built from, plus every verdict event already answered, in SQLite in the service's state
folder; the runner commits it after the batch's claims are acknowledged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pipeline.errors import InputError
from pipeline.models import SubmittedClaim, ValidatedEncounter, event_id
from pipeline.state import BatchStore
from services.claims.domain import (
    DEFAULT_DRG_BASE_RATE,
    STAGE,
    VERSION,
    FeeSchedule,
    PlannedClaim,
    claim_event_id,
    in_validated_record,
    interchange_control_number,
    plan_claim,
    submitted_claim,
    write_interchange,
)
from services.claims.x12_837 import Frequency

Kind = Literal["none", "original", "replacement", "void"]


@dataclass(frozen=True)
class PriorClaim:
    """The claim last submitted for an encounter, and the verdict it was built from."""

    claim_id: str
    frequency: Frequency
    billed: ValidatedEncounter
    payer_claim_control_number: str | None = None

    @property
    def reference(self) -> str:
        """What a replacement or void refers to: the payer's number, else our claim id."""
        return self.payer_claim_control_number or self.claim_id


@dataclass(frozen=True)
class Correction:
    """What to send for a verdict: the kind, the frequency, what it refers to, and the
    verdict the claim is built from (the previous one, for a void)."""

    kind: Kind
    reason: str
    frequency: Frequency | None = None
    original_reference: str | None = None
    source: ValidatedEncounter | None = None


def decide(prior: PriorClaim | None, verdict: ValidatedEncounter) -> Correction:
    """The answer to a verdict, given the claim last submitted for its encounter."""
    billable = verdict.outcome != "rejected"
    if prior is None or prior.frequency == "8":
        if not billable:
            return Correction("none", "rejected; nothing billed")
        again = " again after the void" if prior is not None else ""
        return Correction("original", f"billable{again}", "1", None, verdict)
    if not billable:
        return Correction(
            "void", "the billed encounter is now rejected", "8", prior.reference, prior.billed
        )
    before = prior.billed
    if before.outcome == verdict.outcome and before.coded == verdict.coded:
        return Correction("none", "same outcome and content as the claim submitted")
    why = (
        f"outcome {before.outcome} -> {verdict.outcome}"
        if before.outcome != verdict.outcome
        else "coded content changed"
    )
    return Correction("replacement", why, "7", prior.reference, verdict)


def correction_event_id(claim_id: str, frequency: Frequency, verdict_event_id: str) -> str:
    """The event id of a claim sent in answer to one verdict (deterministic)."""
    return event_id(claim_id, STAGE, VERSION, "correction", frequency, verdict_event_id)


def correction_control_number(claim_event_id: str) -> int:
    """A 9-digit ISA13 for a correction's interchange, distinct from the original's."""
    digest = hashlib.sha256(f"isa13\x1f{claim_event_id}".encode()).hexdigest()
    return int(digest, 16) % 999_999_999 + 1


def plan(
    correction: Correction,
    verdict: ValidatedEncounter,
    *,
    first_original: bool,
    fee_schedule: FeeSchedule | None = None,
    drg_base_rate: Decimal = DEFAULT_DRG_BASE_RATE,
) -> PlannedClaim | None:
    """The claim to write for a correction (None for "none"). The first original keeps
    the event id every original always had; later claims carry the verdict's event id."""
    if correction.kind == "none" or correction.source is None or correction.frequency is None:
        return None
    planned = plan_claim(
        correction.source,
        fee_schedule=fee_schedule,
        drg_base_rate=drg_base_rate,
        frequency=correction.frequency,
        original_reference=correction.original_reference,
    )
    if first_original:
        return planned
    return replace(
        planned,
        event_id=correction_event_id(planned.claim_id, correction.frequency, verdict.event_id),
        rule_pack_version=verdict.rule_pack_version,
        submitted_at=max(verdict.validated_at, planned.submitted_at),
    )


def write(planned: PlannedClaim, *, sender_id: str, receiver_id: str) -> SubmittedClaim:
    """One claim in its own interchange: an original under the control number derived from
    its claim id (as ``build_claim``), a correction under one derived from its event id."""
    first = planned.event_id == claim_event_id(planned.claim_id)
    icn = (
        interchange_control_number(planned.claim_id)
        if first
        else correction_control_number(planned.event_id)
    )
    try:
        x12 = write_interchange(
            [planned], sender_id=sender_id, receiver_id=receiver_id, control_number=icn
        )
    except InputError as exc:
        raise in_validated_record(exc) from exc
    return submitted_claim(planned, icn, x12)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS submitted (
    encounter_id TEXT PRIMARY KEY,
    claim_id TEXT NOT NULL,
    frequency TEXT NOT NULL,
    claim_event_id TEXT NOT NULL,
    payer_claim_control_number TEXT,
    billed TEXT NOT NULL               -- the ValidatedEncounter the claim was built from
);
-- Acknowledgments (277CA, 835) name the claim, not the encounter.
CREATE INDEX IF NOT EXISTS submitted_by_claim_id ON submitted (claim_id);
CREATE TABLE IF NOT EXISTS answered (  -- every verdict event already answered
    verdict_event_id TEXT PRIMARY KEY,
    encounter_id TEXT NOT NULL
);
"""


class SubmittedClaims(BatchStore):
    """Claims submitted per encounter, and the verdicts answered (SQLite, idempotent)."""

    FILENAME = "claims-submitted.sqlite3"

    def __init__(self, path: Path | str) -> None:
        super().__init__(path, _SCHEMA)

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> SubmittedClaims:
        return cls(Path(state_dir) / cls.FILENAME)

    def prior(self, encounter_id: str) -> PriorClaim | None:
        row = self.db.execute(
            "SELECT claim_id, frequency, billed, payer_claim_control_number FROM submitted "
            "WHERE encounter_id = ?",
            (encounter_id,),
        ).fetchone()
        if row is None:
            return None
        billed = ValidatedEncounter.model_validate_json(row[2])
        return PriorClaim(row[0], row[1], billed, row[3])

    def answered(self, verdict_event_id: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM answered WHERE verdict_event_id = ?", (verdict_event_id,)
        ).fetchone()
        return row is not None

    def record(
        self, verdict: ValidatedEncounter, correction: Correction, planned: PlannedClaim | None
    ) -> None:
        """Remember the verdict as answered and, when a claim is sent, the claim."""
        self.db.execute(
            "INSERT OR IGNORE INTO answered VALUES (?, ?)", (verdict.event_id, verdict.encounter_id)
        )
        if planned is None or correction.source is None:
            return
        self.db.execute(
            "INSERT INTO submitted VALUES (?, ?, ?, ?, NULL, ?) ON CONFLICT(encounter_id) DO "
            "UPDATE SET claim_id = excluded.claim_id, frequency = excluded.frequency, "
            "claim_event_id = excluded.claim_event_id, billed = excluded.billed",
            (
                verdict.encounter_id,
                planned.claim_id,
                planned.claim.frequency,
                planned.event_id,
                correction.source.model_dump_json(),
            ),
        )

    def snapshot(self, encounter_id: str) -> tuple[object, ...] | None:
        """The encounter's submitted row as it is now, for ``restore``."""
        row = self.db.execute(
            "SELECT encounter_id, claim_id, frequency, claim_event_id, "
            "payer_claim_control_number, billed FROM submitted WHERE encounter_id = ?",
            (encounter_id,),
        ).fetchone()
        return tuple(row) if row else None

    def restore(self, verdict: ValidatedEncounter, snapshot: tuple[object, ...] | None) -> None:
        """Undo ``claims_for`` for a verdict whose claim never reached the payer (a dead
        letter): the verdict is not answered, so re-sending it bills again, and the encounter's
        last submitted claim is what it was before."""
        self.db.execute("DELETE FROM answered WHERE verdict_event_id = ?", (verdict.event_id,))
        self.db.execute("DELETE FROM submitted WHERE encounter_id = ?", (verdict.encounter_id,))
        if snapshot is not None:
            self.db.execute("INSERT INTO submitted VALUES (?, ?, ?, ?, ?, ?)", snapshot)

    def set_payer_claim_control_number(self, claim_id: str, number: str) -> None:
        """The payer's number for a claim (from a 277CA or 835), for later 7s and 8s."""
        self.db.execute(
            "UPDATE submitted SET payer_claim_control_number = ? WHERE claim_id = ?",
            (number, claim_id),
        )

    def claims_for(
        self,
        verdict: ValidatedEncounter,
        *,
        fee_schedule: FeeSchedule | None = None,
        drg_base_rate: Decimal = DEFAULT_DRG_BASE_RATE,
    ) -> list[PlannedClaim]:
        """The claims a verdict asks for (none, an original, a replacement or a void),
        remembered in the batch's transaction; a verdict already answered asks for none."""
        if self.answered(verdict.event_id):
            return []
        prior = self.prior(verdict.encounter_id)
        correction = decide(prior, verdict)
        first = prior is None and correction.kind == "original"
        planned = plan(
            correction,
            verdict,
            first_original=first,
            fee_schedule=fee_schedule,
            drg_base_rate=drg_base_rate,
        )
        self.record(verdict, correction, planned)
        return [] if planned is None else [planned]
