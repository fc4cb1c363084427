"""The console's read model: a materialized view of the topics, built by the console itself.

Every record the console follows is applied here in topic order (``View.apply``); nothing is
read from another service's private state. The view lives in a SQLite file the console
owns and recreates at start-up, then fills again by replaying the topics from the
beginning: it can always be thrown away and rebuilt. Records are read as dictionaries
through the schema registry (the newest version of each topic), and only fields the
queues and KPIs need are copied into tables; each record's bytes are kept once so an
encounter's whole story can be decoded on demand. Repeated events (at-least-once
delivery) are dropped by event id. No Kafka import: tests and tools feed it directly.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.state import private_dir, private_sqlite

FOLLOWED = (
    "encounters.collected.v1",
    "encounters.coded.v1",
    "coding.review.v1",
    "coding.decisions.v1",
    "coding.audits.v1",
    "coding.audit-results.v1",
    "encounters.validated.v1",
    "claims.submitted.v1",
    "claims.interchanges.v1",
    "claims.rejections.v1",
    "payer.inbound.v1",
    "remittance.posted.v1",
    "remittance.denials.v1",
    "remittance.exceptions.v1",
    "workqueue.actions.v1",
    "dlq.intake.v1",
    "dlq.coding.v1",
    "dlq.validation.v1",
    "dlq.claims.v1",
    "dlq.remittance.v1",
)

_SCHEMA = """
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    topic TEXT NOT NULL, key TEXT, event_id TEXT,
    encounter_id TEXT, claim_id TEXT, file_id TEXT,
    ts_ms INTEGER NOT NULL, data BLOB NOT NULL
);
CREATE INDEX events_encounter ON events (encounter_id);
CREATE INDEX events_claim ON events (claim_id);
CREATE INDEX events_file ON events (file_id);
CREATE UNIQUE INDEX events_id ON events (topic, event_id);
CREATE TABLE encounters (
    encounter_id TEXT PRIMARY KEY, source_id TEXT, setting TEXT, payer_id TEXT,
    payer_name TEXT, collected_ms INTEGER, collected_seq INTEGER, coded_ms INTEGER,
    held INTEGER NOT NULL DEFAULT 0, validated_ms INTEGER, first_outcome TEXT,
    outcome TEXT, verdicts INTEGER NOT NULL DEFAULT 0, claim_id TEXT, dead_stage TEXT
);
CREATE TABLE reviews (
    encounter_id TEXT PRIMARY KEY, queued_ms INTEGER, reasons TEXT, seq INTEGER,
    decided_ms INTEGER, decision TEXT, coder TEXT
);
CREATE TABLE audits (
    encounter_id TEXT PRIMARY KEY, queued_ms INTEGER, reason TEXT, billed INTEGER,
    setting TEXT, codes TEXT, status TEXT, seq INTEGER, auditor TEXT, audited_ms INTEGER,
    answered_ms INTEGER, agreed INTEGER NOT NULL DEFAULT 0, scored INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE corrections (
    encounter_id TEXT PRIMARY KEY, source TEXT, claim_id TEXT, since_ms INTEGER,
    edits TEXT, reason TEXT, closed_ms INTEGER, resubmitted_ms INTEGER, resubmitted_by TEXT
);
CREATE TABLE claims (
    claim_id TEXT PRIMARY KEY, encounter_id TEXT, payer_id TEXT, payer_name TEXT,
    claim_type TEXT, frequency TEXT, charge TEXT, expected TEXT, first_submitted_ms INTEGER,
    submitted_ms INTEGER, submissions INTEGER NOT NULL DEFAULT 0, rejected_ms INTEGER,
    rejection TEXT, status TEXT, first_status TEXT, paid TEXT, patient_resp TEXT,
    posted_ms INTEGER, file_id TEXT
);
CREATE TABLE denials (
    claim_id TEXT PRIMARY KEY, encounter_id TEXT, payer_id TEXT, kind TEXT, category TEXT,
    action TEXT, next_action TEXT, at_stake TEXT, charge TEXT, paid TEXT, reasons TEXT,
    remarks TEXT, queued_ms INTEGER, state TEXT NOT NULL DEFAULT 'open', state_ms INTEGER,
    state_by TEXT, written_off TEXT
);
CREATE TABLE exceptions (
    event_id TEXT PRIMARY KEY, kind TEXT, payer_id TEXT, file_id TEXT, amount TEXT,
    claims TEXT, errors TEXT, detected_ms INTEGER, resolved_ms INTEGER, resolved_by TEXT
);
CREATE TABLE actions (
    event_id TEXT PRIMARY KEY, queue TEXT, item_id TEXT, action TEXT, user_id TEXT,
    role TEXT, amount TEXT, acted_ms INTEGER
);
CREATE TABLE interchanges (icn TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE dead (
    seq INTEGER PRIMARY KEY, stage TEXT, key TEXT, error_class TEXT, field TEXT,
    reason TEXT, failed_ms INTEGER
);
"""

# Where an event's encounter and claim ids are, by topic (the record's own fields win).
_CLAIM_TOPICS = {
    "claims.submitted.v1",
    "claims.rejections.v1",
    "remittance.posted.v1",
    "remittance.denials.v1",
}


def _ms(value: Any) -> int | None:
    """A record time (datetime from fastavro, or epoch ms) as epoch milliseconds."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, int | float):
        return int(value)
    return None


def _money(value: Any) -> str | None:
    return None if value is None else str(Decimal(str(value)).quantize(Decimal("0.01")))


def _json(value: Any) -> str:
    def default(v: Any) -> Any:
        if isinstance(v, Decimal):
            return str(v)
        if isinstance(v, datetime | date):
            return v.isoformat()
        if isinstance(v, bytes):
            return f"<{len(v)} bytes>"
        return str(v)

    return json.dumps(value, default=default)


@dataclass(frozen=True)
class StoryEvent:
    """One record of an encounter's story, still as bytes until it is shown."""

    seq: int
    topic: str
    key: str | None
    ts_ms: int
    data: bytes


class View:
    """The tables the console's pages read; ``apply`` takes records in topic order."""

    def __init__(self, path: Path | str = ":memory:") -> None:
        if str(path) != ":memory:":
            path = Path(path)
            private_dir(path.parent)
            for suffix in ("", "-wal", "-shm"):  # a view is rebuilt, never resumed
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        self.db = sqlite3.connect(
            private_sqlite(path), check_same_thread=False, isolation_level=None
        )
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=OFF")  # rebuilt from the topics after a crash
        self.db.executescript(_SCHEMA)
        self.lock = threading.RLock()
        self.records = 0
        self.repeats = 0
        self.errors = 0

    # --- writing --------------------------------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Apply several records in one transaction (readers see all of them or none)."""
        with self.lock:
            self.db.execute("BEGIN")
            try:
                yield
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def apply(self, topic: str, key: str | None, value: dict[str, Any], ts_ms: int, data: bytes):
        """Take one decoded record (``value``) and its bytes (kept for the story page)."""
        with self.lock:
            self.records += 1
            encounter_id = value.get("encounter_id")
            claim_id = value.get("claim_id") if topic in _CLAIM_TOPICS else None
            if claim_id and not encounter_id:
                encounter_id = self._claim_encounter(claim_id)
            file_id = value.get("file_id")
            if topic.startswith("dlq."):
                encounter_id = key
            if topic == "workqueue.actions.v1":
                claim_id = value.get("claim_id")
            cur = self.db.execute(
                "INSERT OR IGNORE INTO events (topic, key, event_id, encounter_id, claim_id,"
                " file_id, ts_ms, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (topic, key, value.get("event_id"), encounter_id, claim_id, file_id, ts_ms, data),
            )
            if cur.rowcount == 0:
                self.repeats += 1
                return
            seq = int(cur.lastrowid or 0)
            handler = getattr(self, "_on_" + topic.replace(".", "_").replace("-", "_"), None)
            if handler is not None:
                handler(value, ts_ms, seq)
            elif topic.startswith("dlq."):
                self._on_dead(key, value, ts_ms, seq)

    def _claim_encounter(self, claim_id: str) -> str | None:
        row = self.db.execute(
            "SELECT encounter_id FROM claims WHERE claim_id = ?", (claim_id,)
        ).fetchone()
        return row[0] if row else None

    def _encounter(self, encounter_id: str) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO encounters (encounter_id) VALUES (?)", (encounter_id,)
        )

    def _on_encounters_collected_v1(self, v: dict[str, Any], ts: int, seq: int) -> None:
        enc = v["encounter_id"]
        self._encounter(enc)
        coverage = v.get("coverage") or {}
        self.db.execute(
            "UPDATE encounters SET source_id = ?, setting = ?, payer_id = ?, payer_name = ?,"
            " collected_ms = COALESCE(collected_ms, ?), collected_seq = ? WHERE encounter_id = ?",
            (
                v.get("source_id"),
                v.get("setting"),
                coverage.get("payer_id"),
                coverage.get("payer_name"),
                ts,
                seq,
                enc,
            ),
        )

    def _on_encounters_coded_v1(self, v: dict[str, Any], ts: int, seq: int) -> None:
        enc = v["encounter_id"]
        self._encounter(enc)
        self.db.execute(
            "UPDATE encounters SET coded_ms = COALESCE(coded_ms, ?) WHERE encounter_id = ?",
            (ts, enc),
        )

    def _on_coding_review_v1(self, v: dict[str, Any], ts: int, seq: int) -> None:
        enc = v["encounter_id"]
        self._encounter(enc)
        self.db.execute("UPDATE encounters SET held = 1 WHERE encounter_id = ?", (enc,))
        self.db.execute(
            "INSERT INTO reviews (encounter_id, queued_ms, reasons, seq) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (encounter_id) DO UPDATE SET queued_ms = excluded.queued_ms,"
            " reasons = excluded.reasons, seq = excluded.seq",
            (enc, ts, _json(v.get("reasons") or []), seq),
        )

    def _on_coding_decisions_v1(self, v: dict[str, Any], ts: int, seq: int) -> None:
        # The first decision wins (coding refuses a different second one).
        self.db.execute(
            "UPDATE reviews SET decided_ms = ?, decision = ?, coder = ?"
            " WHERE encounter_id = ? AND decided_ms IS NULL",
            (ts, v.get("action"), v.get("coder_id"), v["encounter_id"]),
        )

    def _on_coding_audits_v1(self, v: dict[str, Any], ts: int, seq: int) -> None:
        enc, codes = v["encounter_id"], v.get("codes") or []
        if v.get("status") == "queued":
            self.db.execute(
                "INSERT INTO audits (encounter_id, queued_ms, reason, billed, setting, codes,"
                " status, seq) VALUES (?, ?, ?, ?, ?, ?, 'queued', ?) ON CONFLICT (encounter_id)"
                " DO UPDATE SET queued_ms = excluded.queued_ms, reason = excluded.reason,"
                " billed = excluded.billed, codes = excluded.codes, status = 'queued',"
                " seq = excluded.seq, answered_ms = NULL",
                (
                    enc,
                    ts,
                    v.get("reason"),
                    int(bool(v.get("billed"))),
                    v.get("setting"),
                    _json(codes),
                    seq,
                ),
            )
            return
        scored = [c for c in codes if c.get("outcome")]
        self.db.execute(
            "INSERT INTO audits (encounter_id, queued_ms, reason, setting) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (encounter_id) DO NOTHING",
            (enc, ts, v.get("reason"), v.get("setting")),
        )
        self.db.execute(
            "UPDATE audits SET status = 'audited', auditor = ?, audited_ms = ?, codes = ?,"
            " agreed = ?, scored = ? WHERE encounter_id = ?",
            (
                v.get("auditor_id"),
                ts,
                _json(codes),
                sum(c.get("outcome") == "agree" for c in scored),
                len(scored),
                enc,
            ),
        )

    def _on_coding_audit_results_v1(self, v: dict[str, Any], ts: int, seq: int) -> None:
        # Answered; coding scores it and publishes the audited record.
        self.db.execute(
            "UPDATE audits SET answered_ms = ?, auditor = ? WHERE encounter_id = ?"
            " AND status = 'queued'",
            (ts, v.get("auditor_id"), v["encounter_id"]),
        )

    def _on_encounters_validated_v1(self, v: dict[str, Any], ts: int, seq: int) -> None:
        enc = v["encounter_id"]
        self._encounter(enc)
        outcome = v.get("outcome")
        self.db.execute(
            "UPDATE encounters SET validated_ms = COALESCE(validated_ms, ?),"
            " first_outcome = COALESCE(first_outcome, ?), outcome = ?, verdicts = verdicts + 1"
            " WHERE encounter_id = ?",
            (ts, outcome, outcome, enc),
        )
        if outcome == "rejected":
            edits = [
                {
                    "rule_id": e.get("rule_id"),
                    "severity": e.get("severity"),
                    "category": e.get("category"),
                    "line": e.get("line"),
                    "field": e.get("field"),
                    "fix_hint": e.get("fix_hint"),
                }
                for e in v.get("edits") or []
                if e.get("severity") != "info"
            ]
            self._open_correction(enc, "scrubber", None, ts, edits, None)
        else:
            self.db.execute(
                "UPDATE corrections SET closed_ms = ? WHERE encounter_id = ? AND source ="
                " 'scrubber' AND closed_ms IS NULL",
                (ts, enc),
            )

    def _open_correction(
        self,
        enc: str,
        source: str,
        claim_id: str | None,
        ts: int,
        edits: list[dict[str, Any]],
        reason: str | None,
    ) -> None:
        self.db.execute(
            "INSERT INTO corrections (encounter_id, source, claim_id, since_ms, edits, reason)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (encounter_id) DO UPDATE SET"
            " source = excluded.source, claim_id = excluded.claim_id,"
            " since_ms = excluded.since_ms, edits = excluded.edits, reason = excluded.reason,"
            " closed_ms = NULL, resubmitted_ms = NULL, resubmitted_by = NULL",
            (enc, source, claim_id, ts, _json(edits), reason),
        )

    def _on_claims_submitted_v1(self, v: dict[str, Any], ts: int, seq: int) -> None:
        claim, enc = v["claim_id"], v.get("encounter_id")
        if enc:
            self._encounter(enc)
            self.db.execute(
                "UPDATE encounters SET claim_id = ? WHERE encounter_id = ?", (claim, enc)
            )
        self.db.execute(
            "INSERT INTO claims (claim_id, encounter_id, first_submitted_ms) VALUES (?, ?, ?)"
            " ON CONFLICT (claim_id) DO NOTHING",
            (claim, enc, ts),
        )
        self.db.execute(
            "UPDATE claims SET payer_id = ?, payer_name = ?, claim_type = ?, frequency = ?,"
            " charge = ?, expected = ?, submitted_ms = ?, submissions = submissions + 1"
            " WHERE claim_id = ?",
            (
                v.get("payer_id"),
                v.get("payer_name"),
                v.get("claim_type"),
                v.get("frequency"),
                _money(v.get("total_charge")),
                _money(v.get("expected_reimbursement")),
                ts,
                claim,
            ),
        )
        # A claim sent again after the payer's front end refused it closes that correction.
        if enc:
            self.db.execute(
                "UPDATE corrections SET closed_ms = ? WHERE encounter_id = ? AND source ="
                " 'payer' AND closed_ms IS NULL AND since_ms <= ?",
                (ts, enc, ts),
            )
        row = self.db.execute("SELECT state FROM denials WHERE claim_id = ?", (claim,)).fetchone()
        if row and row[0] == "open" and v.get("frequency") in ("7", "1"):
            self.db.execute(
                "UPDATE denials SET state = 'resubmitted', state_ms = ? WHERE claim_id = ?",
                (ts, claim),
            )

    def _on_claims_interchanges_v1(self, v: dict[str, Any], ts: int, seq: int) -> None:
        # Claim events name their interchange by control number: kept once, fetched by it.
        self.db.execute(
            "INSERT OR IGNORE INTO interchanges (icn, seq) VALUES (?, ?)",
            (v["interchange_control_number"], seq),
        )

    def _on_claims_rejections_v1(self, v: dict[str, Any], ts: int, seq: int) -> None:
        claim = v["claim_id"]
        enc = v.get("encounter_id") or self._claim_encounter(claim)
        codes = ", ".join(v.get("codes") or [])
        reason = f"{v.get('source')} {codes}: {v.get('reason')}"
        self.db.execute(
            "UPDATE claims SET rejected_ms = ?, rejection = ? WHERE claim_id = ?",
            (ts, reason, claim),
        )
        if enc:
            self._encounter(enc)
            self._open_correction(enc, "payer", claim, ts, [], reason)

    def _on_remittance_posted_v1(self, v: dict[str, Any], ts: int, seq: int) -> None:
        claim = v["claim_id"]
        self.db.execute(
            "INSERT INTO claims (claim_id, encounter_id) VALUES (?, ?)"
            " ON CONFLICT (claim_id) DO NOTHING",
            (claim, v.get("encounter_id")),
        )
        self.db.execute(
            "UPDATE claims SET status = ?, first_status = COALESCE(first_status, ?), paid = ?,"
            " patient_resp = ?, posted_ms = ?, file_id = ? WHERE claim_id = ?",
            (
                v.get("status"),
                v.get("status"),
                _money(v.get("paid")),
                _money(v.get("patient_responsibility")),
                ts,
                v.get("file_id"),
                claim,
            ),
        )

    def _on_remittance_denials_v1(self, v: dict[str, Any], ts: int, seq: int) -> None:
        reasons = [
            {
                "group": r.get("group"),
                "carc": r.get("carc"),
                "amount": _money(r.get("amount")),
                "category": r.get("category"),
                "description": r.get("description"),
                "line": r.get("line"),
            }
            for r in v.get("reasons") or []
        ]
        remarks = [
            {"code": r.get("code"), "description": r.get("description")}
            for r in v.get("remarks") or []
        ]
        # A newer item for the claim (a later 835) reopens it.
        self.db.execute(
            "INSERT INTO denials (claim_id) VALUES (?) ON CONFLICT (claim_id) DO NOTHING",
            (v["claim_id"],),
        )
        self.db.execute(
            "UPDATE denials SET encounter_id = ?, payer_id = ?, kind = ?, category = ?,"
            " action = ?, next_action = ?, at_stake = ?, charge = ?, paid = ?, reasons = ?,"
            " remarks = ?, queued_ms = ?, state = 'open', state_ms = NULL, state_by = NULL,"
            " written_off = NULL WHERE claim_id = ?",
            (
                v.get("encounter_id") or self._claim_encounter(v["claim_id"]),
                v.get("payer_id"),
                v.get("kind"),
                v.get("category"),
                v.get("action"),
                v.get("next_action"),
                _money(v.get("at_stake")),
                _money(v.get("total_charge")),
                _money(v.get("paid")),
                _json(reasons),
                _json(remarks),
                ts,
                v["claim_id"],
            ),
        )

    def _on_remittance_exceptions_v1(self, v: dict[str, Any], ts: int, seq: int) -> None:
        claims = [
            {
                "claim_id": c.get("claim_id"),
                "status": c.get("claim_status_code"),
                "charge": _money(c.get("total_charge")),
                "paid": _money(c.get("paid")),
            }
            for c in v.get("claims") or []
        ]
        self.db.execute(
            "INSERT OR IGNORE INTO exceptions (event_id, kind, payer_id, file_id, amount,"
            " claims, errors, detected_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                v["event_id"],
                v.get("kind"),
                v.get("payer_id"),
                v.get("file_id"),
                _money(v.get("payment_amount")),
                _json(claims),
                _json(v.get("errors") or []),
                ts,
            ),
        )

    def _on_workqueue_actions_v1(self, v: dict[str, Any], ts: int, seq: int) -> None:
        queue, item, action = v.get("queue"), v.get("item_id"), v.get("action")
        user = v.get("user_id")
        self.db.execute(
            "INSERT OR IGNORE INTO actions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (v["event_id"], queue, item, action, user, v.get("role"), _money(v.get("amount")), ts),
        )
        if queue == "denials" and action in ("appeal", "write_off"):
            state = "appealed" if action == "appeal" else "written_off"
            self.db.execute(
                "UPDATE denials SET state = ?, state_ms = ?, state_by = ?, written_off = ?"
                " WHERE claim_id = ?",
                (state, ts, user, _money(v.get("amount")) if action == "write_off" else None, item),
            )
        elif action == "resubmit" and queue in ("corrections", "denials"):
            enc = v.get("encounter_id") or item
            self.db.execute(
                "UPDATE corrections SET resubmitted_ms = ?, resubmitted_by = ?"
                " WHERE encounter_id = ? AND closed_ms IS NULL",
                (ts, user, enc),
            )
            if queue == "denials":
                self.db.execute(
                    "UPDATE denials SET state = 'resubmitted', state_ms = ?, state_by = ?"
                    " WHERE claim_id = ?",
                    (ts, user, v.get("claim_id") or item),
                )
        elif queue == "exceptions" and action == "resolve":
            self.db.execute(
                "UPDATE exceptions SET resolved_ms = ?, resolved_by = ? WHERE event_id = ?",
                (ts, user, item),
            )

    def _on_dead(self, key: str | None, v: dict[str, Any], ts: int, seq: int) -> None:
        self.db.execute(
            "INSERT INTO dead (seq, stage, key, error_class, field, reason, failed_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                seq,
                v.get("stage"),
                key,
                v.get("error_class"),
                v.get("field"),
                v.get("error_message"),
                ts,
            ),
        )
        if key:
            self.db.execute(
                "UPDATE encounters SET dead_stage = ? WHERE encounter_id = ?",
                (v.get("stage"), key),
            )

    # --- reading --------------------------------------------------------------------------

    def rows(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        with self.lock:
            return self.db.execute(sql, args).fetchall()

    def one(self, sql: str, *args: Any) -> sqlite3.Row | None:
        with self.lock:
            return self.db.execute(sql, args).fetchone()

    def aggregate(self, sql: str, *args: Any) -> sqlite3.Row:
        """The one row an aggregate query (COUNT, SUM, MIN) always returns."""
        row = self.one(sql, *args)
        assert row is not None, "an aggregate query returns a row"
        return row

    def review_queue(self, limit: int = 200) -> list[sqlite3.Row]:
        """Encounters held for a coder and not yet decided, oldest first."""
        return self.rows(
            "SELECT r.*, e.payer_id, e.setting FROM reviews r LEFT JOIN encounters e USING"
            " (encounter_id) WHERE r.decided_ms IS NULL AND e.coded_ms IS NULL"
            " ORDER BY r.queued_ms LIMIT ?",
            limit,
        )

    def audit_queue(self, limit: int = 200) -> list[sqlite3.Row]:
        """Automatically coded encounters sampled for a coder's audit, not yet answered."""
        return self.rows(
            "SELECT * FROM audits WHERE status = 'queued' AND answered_ms IS NULL"
            " ORDER BY queued_ms LIMIT ?",
            limit,
        )

    def correction_queue(self, limit: int = 200) -> list[sqlite3.Row]:
        """Encounters to correct (scrubber) and claims the payer's front end refused."""
        return self.rows(
            "SELECT c.*, e.payer_id, e.setting FROM corrections c LEFT JOIN encounters e"
            " USING (encounter_id) WHERE c.closed_ms IS NULL ORDER BY c.since_ms LIMIT ?",
            limit,
        )

    def denial_queue(self, state: str | None = "open", limit: int = 200) -> list[sqlite3.Row]:
        if state is None:
            return self.rows("SELECT * FROM denials ORDER BY queued_ms LIMIT ?", limit)
        return self.rows(
            "SELECT * FROM denials WHERE state = ? ORDER BY queued_ms LIMIT ?", state, limit
        )

    def exception_queue(self, open_only: bool = True, limit: int = 200) -> list[sqlite3.Row]:
        where = "WHERE resolved_ms IS NULL" if open_only else ""
        return self.rows(f"SELECT * FROM exceptions {where} ORDER BY detected_ms LIMIT ?", limit)

    def story(self, encounter_id: str) -> list[StoryEvent]:
        """Every record about an encounter, its claims and their 835s, in arrival order."""
        claims = [
            r[0]
            for r in self.rows("SELECT claim_id FROM claims WHERE encounter_id = ?", encounter_id)
        ]
        marks = ",".join("?" * len(claims))
        files_sql = (
            f"SELECT DISTINCT file_id FROM events WHERE claim_id IN ({marks})"
            " AND file_id IS NOT NULL"
        )
        files = [r[0] for r in self.rows(files_sql, *claims)] if claims else []
        fmarks = ",".join("?" * len(files))
        sql = "SELECT seq, topic, key, ts_ms, data FROM events WHERE encounter_id = ?"
        args: list[Any] = [encounter_id]
        if claims:
            sql += f" OR claim_id IN ({marks})"
            args += claims
        if files:
            sql += f" OR (topic = 'payer.inbound.v1' AND file_id IN ({fmarks}))"
            args += files
        return [StoryEvent(*r) for r in self.rows(sql + " ORDER BY seq", *args)]

    def interchange(self, icn: str) -> StoryEvent | None:
        """The claims.interchanges.v1 record of interchange ``icn`` (its claims refer to it)."""
        row = self.one(
            "SELECT e.seq, e.topic, e.key, e.ts_ms, e.data FROM interchanges i"
            " JOIN events e ON e.seq = i.seq WHERE i.icn = ?",
            icn,
        )
        return StoryEvent(*row) if row else None

    def claims_of(self, encounter_id: str) -> list[sqlite3.Row]:
        return self.rows("SELECT * FROM claims WHERE encounter_id = ?", encounter_id)

    def encounter(self, encounter_id: str) -> sqlite3.Row | None:
        return self.one("SELECT * FROM encounters WHERE encounter_id = ?", encounter_id)

    def event(self, seq: int) -> StoryEvent | None:
        row = self.one("SELECT seq, topic, key, ts_ms, data FROM events WHERE seq = ?", seq)
        return StoryEvent(*row) if row else None

    def latest_event(self, topic: str, encounter_id: str) -> StoryEvent | None:
        row = self.one(
            "SELECT seq, topic, key, ts_ms, data FROM events WHERE topic = ? AND"
            " encounter_id = ? ORDER BY seq DESC LIMIT 1",
            topic,
            encounter_id,
        )
        return StoryEvent(*row) if row else None

    def find(self, text: str) -> str | None:
        """The encounter an encounter id or a claim id names, or None."""
        row = self.one("SELECT encounter_id FROM encounters WHERE encounter_id = ?", text)
        if row:
            return row[0]
        row = self.one("SELECT encounter_id FROM claims WHERE claim_id = ?", text)
        return row[0] if row and row[0] else None

    def has_event(self, topic: str, event_id: str) -> bool:
        return (
            self.one("SELECT 1 FROM events WHERE topic = ? AND event_id = ?", topic, event_id)
            is not None
        )

    def wait_for(self, topic: str, event_id: str, timeout: float) -> bool:
        """Wait until the view has read back an event the console itself published."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.has_event(topic, event_id):
                return True
            time.sleep(0.05)
        return False
