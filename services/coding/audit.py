"""Coding audits: a share of the automatically coded encounters checked by a coder, accuracy
by code category and by source, and categories taken off automatic coding while they fail.

- **Sampling.** A configurable share of the encounters coded without review goes to the
  audit queue (``coding.audits.v1``, status queued) after billing; which ones is decided by a
  hash of the encounter id, so a replay samples the same encounters.
- **Results.** A coder's ``AuditResult`` (agree, or the corrected diagnoses) scores each code:
  kept -> agree, removed -> corrected, and a code the coder added counts against its category
  as "missed". A coder's review decision on a held encounter is an audit too (confirm =
  agree, amend = the amended codes), so a category under review keeps being measured.
- **Accuracy** is the share of agreed codes over the last ``window`` outcomes of a category
  (and of a source). A category with at least ``min_audits`` outcomes in its window and an
  accuracy below ``threshold`` is *failing*: every encounter with a code of it is held for a
  coder instead of being coded automatically, until its recent audits recover.
- **Corrections after billing.** A corrected audit of a billed encounter re-publishes the
  coded encounter with the coder's codes; validation checks it again and claims bills it as
  a replacement (frequency 7) through its corrections path.

Plain code over the SQLite state (``pipeline.state.BatchStore``); no Kafka here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pipeline.errors import InputError
from pipeline.models import (
    AuditedCode,
    AuditResult,
    ClaimSettled,
    CodedEncounter,
    CoderDecision,
    CodingAudit,
    DecidedDiagnosis,
    event_id,
)
from pipeline.settled import SCHEMA as SETTLED_SCHEMA
from pipeline.settled import RetentionPolicy, SettledMarks
from pipeline.state import BatchStore
from services.refdata.codesets import normalize_code

AUDIT_SHARE = 0.05
AUDIT_THRESHOLD = 0.9
AUDIT_MIN = 5
AUDIT_WINDOW = 20
MISSED = "missed"
"""The source of a code an auditor added: counted against its category."""


@dataclass(frozen=True)
class AuditPolicy:
    """How many encounters are audited and when a category stops being coded automatically."""

    share: float = AUDIT_SHARE
    threshold: float = AUDIT_THRESHOLD
    min_audits: int = AUDIT_MIN
    window: int = AUDIT_WINDOW

    def sampled(self, encounter_id: str) -> bool:
        """Whether this encounter is drawn for audit (the same answer on every replay)."""
        if self.share <= 0:
            return False
        digest = hashlib.sha256(encounter_id.encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.share


def category(code: str) -> str:
    """The ICD-10-CM category of a code: its first three characters."""
    return normalize_code(code)[:3]


def queued(coded: CodedEncounter, reason: str, *, billed: bool) -> CodingAudit:
    """The audit-queue record of a coded encounter."""
    return CodingAudit(
        event_id=event_id(coded.event_id, "audit", "queued"),
        encounter_id=coded.encounter_id,
        coded_event_id=coded.event_id,
        status="queued",
        reason=reason,  # type: ignore[arg-type]
        billed=billed,
        setting=coded.encounter.setting,
        codes=[
            AuditedCode(
                code=d.code, category=category(d.code), source=d.source, rationale=d.rationale
            )
            for d in coded.diagnoses
        ],
        queued_at=coded.coded_at,
    )


def score(audit: CodingAudit, corrected: list[str] | None) -> list[AuditedCode]:
    """Each code's outcome: ``corrected`` None means the auditor agreed with every code."""
    if corrected is None:
        return [c.model_copy(update={"outcome": "agree"}) for c in audit.codes]
    keep = set(corrected)
    out = [
        c.model_copy(update={"outcome": "agree" if c.code in keep else "corrected"})
        for c in audit.codes
    ]
    had = {c.code for c in audit.codes}
    out += [
        AuditedCode(code=code, category=category(code), source=MISSED, outcome="corrected")
        for code in corrected
        if code not in had
    ]
    return out


def audited(
    audit: CodingAudit,
    codes: list[AuditedCode],
    corrected: list[str],
    *,
    auditor_id: str,
    result_event_id: str,
    at: datetime,
) -> CodingAudit:
    """The audit record once scored."""
    return audit.model_copy(
        update={
            "event_id": event_id(audit.coded_event_id, "audit", "audited", result_event_id),
            "status": "audited",
            "codes": codes,
            "corrected_codes": corrected,
            "auditor_id": auditor_id,
            "audited_at": at,
        }
    )


def as_decision(result: AuditResult) -> CoderDecision:
    """A corrected audit as the amend decision that re-codes the encounter."""
    return CoderDecision(
        event_id=result.event_id,
        encounter_id=result.encounter_id,
        coder_id=result.auditor_id,
        action="amend",
        diagnoses=[DecidedDiagnosis(code=d.code, poa=d.poa) for d in result.diagnoses],
        note=result.note,
        decided_at=result.audited_at,
    )


_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS audits (       -- queued and audited encounters
    encounter_id TEXT PRIMARY KEY,
    record TEXT NOT NULL,                  -- the latest CodingAudit as JSON
    coded TEXT NOT NULL,                   -- the CodedEncounter audited, as JSON
    result_event_id TEXT                   -- the AuditResult applied (null while queued)
);
CREATE TABLE IF NOT EXISTS outcomes (     -- one row per scored code
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    encounter_id TEXT NOT NULL,
    category TEXT NOT NULL,
    source TEXT NOT NULL,
    agree INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outcomes_category ON outcomes (category, seq);
CREATE INDEX IF NOT EXISTS outcomes_source ON outcomes (source, seq);
-- The queue's length without reading every audit's JSON (counted after every batch).
CREATE INDEX IF NOT EXISTS audits_queued ON audits (encounter_id) WHERE result_event_id IS NULL;
-- Audits whose coded encounter was pruned once its claim was settled and past its window:
-- the record keeps the codes and outcomes (accuracy goes on), not the patient.
CREATE TABLE IF NOT EXISTS audits_pruned (
    encounter_id TEXT PRIMARY KEY,
    settled_at REAL NOT NULL,
    pruned_at REAL NOT NULL
);
"""
    + SETTLED_SCHEMA
)


@dataclass(frozen=True)
class Accuracy:
    """Agreed codes over the outcomes counted (the last ``window`` of a category/source)."""

    key: str
    agreed: int
    audited: int

    @property
    def rate(self) -> float:
        return self.agreed / self.audited if self.audited else 1.0


class AuditPruned(InputError):
    """An audit result for an encounter whose audited record was pruned after settlement."""

    def __init__(self, encounter_id: str, settled_at: float) -> None:
        day = datetime.fromtimestamp(settled_at, UTC).date().isoformat()
        super().__init__(
            "encounter_id",
            f"{encounter_id}: its claim was settled on {day} and the coded encounter audited "
            "was pruned after the retention window (CLAIMFLOW_CODING__SETTLED_RETENTION_DAYS)",
        )


class AuditStore(BatchStore):
    """The audit queue, each audited code's outcome, and accuracy over a sliding window."""

    def __init__(
        self,
        path: Path | str,
        policy: AuditPolicy | None = None,
        retention: RetentionPolicy | None = None,
    ) -> None:
        super().__init__(path, _SCHEMA)
        self.policy = policy or AuditPolicy()
        self.settled = SettledMarks(self.db, retention or RetentionPolicy())
        # Accuracy by column, as the outcomes are now: asked for every encounter coded, it
        # changes only when an audit is scored (``record``) or a write is undone.
        self._accuracy: dict[str, list[Accuracy]] = {}
        # ``_failing`` and the accuracy list it was worked out from (kept alive: compared by
        # identity, a list the accuracy cache dropped is never taken for a new one).
        self._failing_kept: tuple[list[Accuracy] | None, dict[str, Accuracy]] = (None, {})

    def input_undone(self, mark: int) -> None:
        """An input that fails leaves no accuracy worked out from its writes either."""
        super().input_undone(mark)
        self._accuracy.clear()

    def rollback(self) -> None:
        self._accuracy.clear()
        super().rollback()

    def queue(self, audit: CodingAudit, coded: CodedEncounter) -> None:
        """Keep a queued audit (a later coding of the encounter replaces an unaudited one)."""
        self.db.execute(
            "INSERT INTO audits VALUES (?, ?, ?, NULL) ON CONFLICT(encounter_id) DO UPDATE SET "
            "record = excluded.record, coded = excluded.coded WHERE result_event_id IS NULL",
            (audit.encounter_id, audit.model_dump_json(), coded.model_dump_json()),
        )

    def get(self, encounter_id: str) -> tuple[CodingAudit, CodedEncounter, str | None] | None:
        """The audit of an encounter, the coded encounter audited, and the result applied."""
        row = self.db.execute(
            "SELECT record, coded, result_event_id FROM audits WHERE encounter_id = ?",
            (encounter_id,),
        ).fetchone()
        if row is None:
            return None
        if not row[1]:
            gone = self.db.execute(
                "SELECT settled_at FROM audits_pruned WHERE encounter_id = ?", (encounter_id,)
            ).fetchone()
            raise AuditPruned(encounter_id, gone[0] if gone else 0.0)
        return (
            CodingAudit.model_validate_json(row[0]),
            CodedEncounter.model_validate_json(row[1]),
            row[2],
        )

    def record(self, audit: CodingAudit, coded: CodedEncounter, result_event_id: str) -> None:
        """Store a scored audit and count its outcomes (once per encounter)."""
        self.db.execute(
            "INSERT INTO audits VALUES (?, ?, ?, ?) ON CONFLICT(encounter_id) DO UPDATE SET "
            "record = excluded.record, coded = excluded.coded, "
            "result_event_id = excluded.result_event_id",
            (audit.encounter_id, audit.model_dump_json(), coded.model_dump_json(), result_event_id),
        )
        self._accuracy.clear()
        self.db.execute("DELETE FROM outcomes WHERE encounter_id = ?", (audit.encounter_id,))
        self.db.executemany(
            "INSERT INTO outcomes (encounter_id, category, source, agree) VALUES (?, ?, ?, ?)",
            [
                (audit.encounter_id, c.category, c.source, int(c.outcome == "agree"))
                for c in audit.codes
            ],
        )

    # --- retention (``pipeline/settled.py``): the audited encounter goes after settlement

    def settle(self, event: ClaimSettled) -> None:
        """A claim settled (or reopened): marked when its encounter has an audit here."""
        if (
            event.encounter_id is not None
            and self.db.execute(
                "SELECT 1 FROM audits WHERE encounter_id = ? AND coded != ''", (event.encounter_id,)
            ).fetchone()
        ):
            self.settled.settle(event)

    def prune_settled(self, now: float) -> int:
        """Drop the coded encounter (demographics, note-derived text) of every audit whose
        claims are settled and past their window, and the rationales of its codes; the
        codes, their outcomes and the ids stay. How many audits."""
        pruned = 0
        for encounter_id, settled_at in self.settled.due(now):
            row = self.db.execute(
                "SELECT record FROM audits WHERE encounter_id = ?", (encounter_id,)
            ).fetchone()
            if row is not None:
                audit = CodingAudit.model_validate_json(row[0])
                codes = [c.model_copy(update={"rationale": None}) for c in audit.codes]
                kept = audit.model_copy(update={"codes": codes})
                self.db.execute(
                    "UPDATE audits SET record = ?, coded = '', result_event_id = "
                    "coalesce(result_event_id, 'pruned') WHERE encounter_id = ?",  # not queued
                    (kept.model_dump_json(), encounter_id),
                )
                self.db.execute(
                    "INSERT OR REPLACE INTO audits_pruned VALUES (?, ?, ?)",
                    (encounter_id, settled_at, now),
                )
                pruned += 1
            self.settled.forget(encounter_id)
        return pruned

    def queued_count(self) -> int:
        """Audits waiting for a coder."""
        row = self.db.execute("SELECT count(*) FROM audits WHERE result_event_id IS NULL")
        return int(row.fetchone()[0])

    def accuracy(self, column: str) -> list[Accuracy]:
        """Accuracy per category (``column='category'``) or per source, over the window."""
        assert column in ("category", "source")
        cached = self._accuracy.get(column)
        if cached is not None:
            return list(cached)
        rows = self.db.execute(
            f"SELECT {column}, sum(agree), count(*) FROM ("  # noqa: S608 - a fixed column
            f"  SELECT {column}, agree, row_number() OVER "
            f"    (PARTITION BY {column} ORDER BY seq DESC) AS n FROM outcomes"
            ") WHERE n <= ? GROUP BY 1 ORDER BY 1",
            (self.policy.window,),
        ).fetchall()
        found = [Accuracy(key, int(agreed), int(n)) for key, agreed, n in rows]
        self._accuracy[column] = found
        return list(found)

    def failing(self) -> dict[str, Accuracy]:
        """Categories whose recent audits fall below the threshold: coded only by a coder."""
        return dict(self._failing())

    def _failing(self) -> dict[str, Accuracy]:
        """``failing``, worked out once per accuracy kept (``accuracy``), not for every
        encounter coded: the same until an audit is scored or a write undone."""
        found = self._accuracy.get("category")
        if found is None:
            self.accuracy("category")
            found = self._accuracy["category"]
        kept_from, kept = self._failing_kept
        if kept_from is not found:
            policy = self.policy
            kept = {
                a.key: a
                for a in found
                if a.audited >= policy.min_audits and a.rate < policy.threshold
            }
            self._failing_kept = (found, kept)
        return kept

    def review_reasons(self, coded: CodedEncounter) -> list[str]:
        """Why an encounter must go to a coder because a category of its codes is failing."""
        failing = self._failing()
        if not failing:  # the usual case: no category to look up
            return []
        reasons = []
        for cat in sorted({category(d.code) for d in coded.diagnoses}):
            a = failing.get(cat)
            if a is not None:
                reasons.append(
                    f"audit: category {cat} is not coded automatically while its audited "
                    f"accuracy is {a.rate:.2f} ({a.agreed}/{a.audited} of the last audited "
                    f"codes) < {self.policy.threshold:.2f}; a coder must confirm"
                )
        return reasons
