"""Coding's durable state: encounters held for a coder, decisions, and patients' HCC codes.

Why SQLite, as remittance's ledger (``services/remittance/ledger.py``): a held encounter
may wait days for a coder, longer than anything should sit in memory, and a faust table
would be rebuilt from a changelog whose end Tansu reports low. Every write is
idempotent (keyed by encounter id), so the at-least-once runner can replay a batch after
a crash: the stage commits this store after the batch's output is acknowledged and before
the consumed offsets are committed.

Patients are keyed by a hash of payer id and member id (risk adjustment is per member),
so the store holds no member id in clear.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from pathlib import Path

from pipeline.errors import InputError
from pipeline.models import (
    AuditResult,
    CodedEncounter,
    CoderDecision,
    CodingReview,
    Encounter,
    Model,
    event_id,
    patient_key,
)
from services.coding import audit
from services.coding.audit import AuditStore
from services.coding.domain import Coder
from services.coding.risk_history import RiskHistory, writes_in_one_statement

#: Patient keys by (payer id, member id): coding asks three times per encounter (the
#: by-patient record's key, the risk step's, the coded record's header), and the hash cost
#: 0.66 us a time against 0.33 us to find it here (py-spy: 2.2% of coding's CPU in
#: ``patient_key``). A member's key depends on those two ids only; started afresh when full.
_KEYS: dict[tuple[str, str], str] = {}
_KEYS_KEPT = 65536


def member_key(enc: Encounter) -> str:
    """``patient_key(enc)``, kept by the ids it hashes."""
    cov = enc.coverage
    ids = (cov.payer_id, cov.member_id)
    key = _KEYS.get(ids)
    if key is None:
        if len(_KEYS) >= _KEYS_KEPT:
            _KEYS.clear()
        key = _KEYS[ids] = patient_key(enc)
    return key


_SCHEMA = """
CREATE TABLE IF NOT EXISTS held (      -- encounters waiting for a coder's decision
    encounter_id TEXT PRIMARY KEY,
    review_event_id TEXT NOT NULL,
    record TEXT NOT NULL              -- the CodedEncounter as JSON
);
CREATE TABLE IF NOT EXISTS decisions (  -- the first decision per encounter wins
    encounter_id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    applied INTEGER NOT NULL,          -- 0: arrived before its encounter was held
    record TEXT NOT NULL               -- the CoderDecision as JSON
);
"""


class ReviewStore(RiskHistory):
    """Held encounters, coder decisions and the codes behind each member's HCCs (the
    latter unused when the flow sends coded encounters on by patient)."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(path, _SCHEMA)

    # --- held encounters ----------------------------------------------------------------

    def hold(self, coded: CodedEncounter, review_event_id: str) -> None:
        """Keep an encounter until a coder decides (the latest coding replaces any older)."""
        self.db.execute(
            "INSERT INTO held VALUES (?, ?, ?) ON CONFLICT(encounter_id) DO UPDATE SET "
            "review_event_id = excluded.review_event_id, record = excluded.record",
            (coded.encounter_id, review_event_id, coded.model_dump_json()),
        )

    def held(self, encounter_id: str) -> CodedEncounter | None:
        """The held encounter, if it is waiting."""
        row = self.db.execute(
            "SELECT record FROM held WHERE encounter_id = ?", (encounter_id,)
        ).fetchone()
        return CodedEncounter.model_validate_json(row[0]) if row else None

    def release(self, encounter_id: str) -> None:
        """Stop holding an encounter (its decision was applied)."""
        self.db.execute("DELETE FROM held WHERE encounter_id = ?", (encounter_id,))

    def held_count(self) -> int:
        """How many encounters wait for a coder."""
        return int(self.db.execute("SELECT count(*) FROM held").fetchone()[0])

    # --- decisions ----------------------------------------------------------------------

    def decision(self, encounter_id: str) -> tuple[CoderDecision, bool] | None:
        """The decision recorded for an encounter and whether it was applied."""
        row = self.db.execute(
            "SELECT record, applied FROM decisions WHERE encounter_id = ?", (encounter_id,)
        ).fetchone()
        return (CoderDecision.model_validate_json(row[0]), bool(row[1])) if row else None

    def add_decision(self, decision: CoderDecision, *, applied: bool) -> None:
        """Record a decision (again: the applied flag is updated, nothing else)."""
        self.db.execute(
            "INSERT INTO decisions VALUES (?, ?, ?, ?) ON CONFLICT(encounter_id) DO UPDATE SET "
            "applied = max(applied, excluded.applied)",
            (decision.encounter_id, decision.event_id, int(applied), decision.model_dump_json()),
        )

    def drop_decision(self, encounter_id: str) -> None:
        """Forget a decision that could not be applied, so a new one can be made."""
        self.db.execute("DELETE FROM decisions WHERE encounter_id = ?", (encounter_id,))


Output = tuple[str, str, Model]
"""(topic, key, value): what the flow asks the stage to produce."""
Atomic = Callable[[], AbstractContextManager[object]]
"""A savepoint around one input's writes (``BatchStore.atomic``), or none."""

BY_PATIENT = "coding.by-patient.v1"
CODED = "encounters.coded.v1"


class ReviewFlow:
    """Encounters in, coded encounters or reviews out; decisions release what was held.

    An encounter with review reasons is published to coding.review.v1 and held, not
    published coded, until a decision arrives on coding.decisions.v1. The decision is
    applied (confirm, or amend re-checked against the code set), the coded encounter is
    published, and the decision is kept: a replayed encounter is released again with the
    same event id, and a second, different decision is refused (a dead letter), because
    the first already went downstream.

    ``by_patient`` (the live service, any number of instances): the HCCs need every
    encounter of the member's year, which another instance may have coded. Coded
    encounters then go to ``coding.by-patient.v1`` keyed by patient, and ``risk`` (on the
    instance that holds that partition's ``RiskHistory``) completes their HCCs and risk
    score before they are published; without it (tests, offline runs) the store's own
    history does.
    """

    def __init__(
        self,
        coder: Coder,
        store: ReviewStore,
        audits: AuditStore | None = None,
        *,
        by_patient: bool = False,
    ) -> None:
        self.coder = coder
        self.store = store
        self.audits = audits
        self.by_patient = by_patient

    def _history(self, enc: Encounter) -> list[str]:
        if self.by_patient:
            return []  # completed by ``risk`` on the member's partition
        return self.store.history(member_key(enc), enc.service_end.year, enc.encounter_id)

    def encounter(
        self, enc: Encounter, *, now: datetime, atomic: Atomic = nullcontext
    ) -> list[Output]:
        """Code one collected encounter: publish it, or hold it for a coder.

        ``atomic`` wraps the part that writes to the stores (the stage passes their
        savepoints). Coding and the failing categories only read, and an encounter sent on
        by patient, with no review reason and not drawn for audit, writes nothing: it opens
        no savepoint (two stores' SAVEPOINT and RELEASE were ~6% of coding's CPU)."""
        coded = self.coder.code(enc, coded_at=now, history=self._history(enc))
        if self.audits is not None and (failing := self.audits.review_reasons(coded)):
            reasons = [*coded.review_reasons, *failing]
            coded = coded.model_copy(update={"review_reasons": reasons})
        if not coded.review_reasons:
            sampled = self.audits is not None and self.audits.policy.sampled(enc.encounter_id)
            if self.by_patient and not sampled:
                return self._publish(coded)  # by patient, publishing writes nothing here
            with atomic():
                out = self._publish(coded)
                if sampled:
                    assert self.audits is not None
                    queued = audit.queued(coded, "sample", billed=True)
                    self.audits.queue(queued, coded)
                    out.append(("coding.audits.v1", coded.encounter_id, queued))
                return out
        with atomic():
            return self._held(enc, coded)

    def _held(self, enc: Encounter, coded: CodedEncounter) -> list[Output]:
        """An encounter with review reasons: released by a decision already made, else
        held for a coder."""
        known = self.store.decision(enc.encounter_id)
        if known is not None:
            try:
                return self._release(coded, known[0])
            except InputError as exc:
                self.store.drop_decision(enc.encounter_id)
                coded = coded.model_copy(
                    update={
                        "review_reasons": [
                            *coded.review_reasons,
                            f"coder decision {known[0].event_id} could not be applied: "
                            f"{exc.field}: {exc.reason}",
                        ]
                    }
                )
        review = CodingReview(
            event_id=event_id(coded.event_id, "review"),
            encounter_id=coded.encounter_id,
            reasons=coded.review_reasons,
            coded=coded,
            queued_at=coded.coded_at,
        )
        self.store.hold(coded, review.event_id)
        return [("coding.review.v1", coded.encounter_id, review)]

    def decision(self, decision: CoderDecision) -> list[Output]:
        """Apply a coder's decision to the encounter it names (or keep it for later)."""
        known = self.store.decision(decision.encounter_id)
        if known is not None:
            earlier, applied = known
            if earlier.event_id == decision.event_id:
                return []  # a repeat of the same decision
            if applied:
                raise InputError(
                    "encounter_id",
                    f"{decision.encounter_id} was already decided ({earlier.action} by "
                    f"{earlier.coder_id} at {earlier.decided_at.isoformat()}) and published; "
                    "a second decision is not applied",
                )
        held = self.store.held(decision.encounter_id)
        if held is None:
            # Not held (yet): the encounter may still be on its way, e.g. on a replay.
            self.store.add_decision(decision, applied=False)
            return []
        return self._release(held, decision)

    def _release(self, coded: CodedEncounter, decision: CoderDecision) -> list[Output]:
        enc = coded.encounter
        done = self.coder.decide(
            coded, decision, decided_at=decision.decided_at, history=self._history(enc)
        )
        self.store.add_decision(decision, applied=True)
        self.store.release(enc.encounter_id)
        out = self._publish(done)
        if self.audits is not None:
            # A review decision audits the automatic codes too: confirm agrees with them.
            corrected = None if decision.action == "confirm" else [d.code for d in done.diagnoses]
            out.append(
                self._score(
                    coded,
                    done,
                    "review",
                    corrected,
                    decision.coder_id,
                    decision.event_id,
                    decision.decided_at,
                    billed=False,
                )
            )
        return out

    def audit_result(self, result: AuditResult) -> list[Output]:
        """Score a coder's audit; a correction of a billed encounter re-codes it (a
        replacement claim follows downstream)."""
        if self.audits is None:
            raise InputError("encounter_id", "coding audits are not enabled")
        known = self.audits.get(result.encounter_id)
        if known is None:
            raise InputError(
                "encounter_id", f"no audit is queued for encounter {result.encounter_id!r}"
            )
        queued, coded, applied = known
        if applied == result.event_id:
            return []  # the same result again
        if applied is not None:
            raise InputError(
                "encounter_id",
                f"{result.encounter_id} was already audited (result {applied}); a second, "
                "different result is not applied",
            )
        if result.outcome == "agree":
            if result.diagnoses:
                raise InputError("diagnoses", "an agreeing audit lists no diagnoses")
            return [
                self._score(
                    coded,
                    coded,
                    queued.reason,
                    None,
                    result.auditor_id,
                    result.event_id,
                    result.audited_at,
                    billed=queued.billed,
                )
            ]
        if not result.diagnoses:
            raise InputError(
                "diagnoses", "a corrected audit lists every diagnosis, principal first"
            )
        done = self.coder.decide(
            coded,
            audit.as_decision(result),
            decided_at=result.audited_at,
            history=self._history(coded.encounter),
        )
        corrected = [d.code for d in done.diagnoses]
        out = [
            self._score(
                coded,
                done,
                queued.reason,
                corrected,
                result.auditor_id,
                result.event_id,
                result.audited_at,
                billed=queued.billed,
            )
        ]
        if queued.billed and corrected != [d.code for d in coded.diagnoses]:
            out += self._publish(done)  # the corrected codes: billed as a replacement
        return out

    def _score(
        self,
        coded: CodedEncounter,
        done: CodedEncounter,
        reason: str,
        corrected: list[str] | None,
        auditor_id: str,
        result_event_id: str,
        at: datetime,
        *,
        billed: bool,
    ) -> Output:
        assert self.audits is not None
        queued = audit.queued(coded, reason, billed=billed)
        final = audit.audited(
            queued,
            audit.score(queued, corrected),
            corrected or [],
            auditor_id=auditor_id,
            result_event_id=result_event_id,
            at=at,
        )
        self.audits.record(final, done, result_event_id)
        return ("coding.audits.v1", coded.encounter_id, final)

    def _publish(self, coded: CodedEncounter) -> list[Output]:
        if self.by_patient:  # the risk step reads no note either
            return [(BY_PATIENT, member_key(coded.encounter), without_note(coded))]
        return self.risk(coded, self.store)

    def risk(
        self, coded: CodedEncounter, history: RiskHistory, atomic: Atomic = nullcontext
    ) -> list[Output]:
        """Complete the HCCs with the member's year in ``history``, record what this
        encounter adds, and publish it.

        ``atomic`` wraps the write when it takes more than one statement. Everything before
        it only reads, and a new encounter's codes are one INSERT, which SQLite undoes by
        itself when it fails: it opens no savepoint (SAVEPOINT and RELEASE on every
        by-patient record, with one INSERT per code, were 2.3% of coding's instructions:
        callgrind over 300 office visits of ``bench stage_cv``, 330.3M to 322.8M)."""
        enc = coded.encounter
        key, year = member_key(enc), enc.service_end.year
        recorded = True  # not known: what the encounter contributed before is replaced
        eligible = self.coder.risk_eligible(coded)
        if self.by_patient:
            earlier, recorded = history.year_of(key, year, enc.encounter_id)
            if earlier:
                # With no other encounter of the member's year, the HCCs the encounter was
                # coded with (on its own codes: ``_history`` is empty by patient) are
                # already the year's.
                coded = self.coder.with_history(coded, earlier, eligible=eligible)
        codes = self.coder.risk_codes(coded, eligible=eligible)
        if writes_in_one_statement(codes, recorded=recorded):
            history.record_risk(key, year, enc.encounter_id, codes, recorded=False)
        else:
            with atomic():
                history.record_risk(key, year, enc.encounter_id, codes, recorded=recorded)
        return [(CODED, coded.encounter_id, without_note(coded))]


def without_note(coded: CodedEncounter) -> CodedEncounter:
    """The coded encounter as encounters.coded.v1 carries it: without the note text. Coding
    is the note's only reader (validation, claims and the verdicts downstream never read it,
    and an 837 carries none), so the clinical note, often the largest field and PHI, is not
    copied into every later record; coding.review.v1 keeps it for the coder, and the stores
    here keep the whole encounter."""
    enc = coded.encounter
    if enc.note_text is None:
        return coded
    return coded.model_copy(update={"encounter": enc.model_copy(update={"note_text": None})})
