"""The claims ledger remittance matches 835s against: a local SQLite store.

Why not a faust memory table: a memory table is rebuilt from its changelog topic on
restart, and that recovery trusts high watermarks, which Tansu reports low (pipeline/broker.py);
a ledger that silently misses a few claims would post their payments as unmatched.
SQLite on the service's volume survives a SIGKILL, and every write here is idempotent,
so the at-least-once runner can replay a batch after a crash without double-posting:
the runner commits this store after the batch's output is acknowledged and before the
consumed offsets are committed.

What it holds: the submitted claims (without their X12); payer files whose payments wait
for their claim (stored once per file) and, per waiting claim payment, when it was first
seen and when it was reported to the exceptions topic; every posting made, with its
amounts and payer, so a claim's net over payments, reversals and corrections, and a
split claim's net per payer, can be read back; and every payment (835 transaction)
posted, with its provider-level (PLB) adjustments and where each was applied (a claim,
the forward balance carried between files, or the provider's balance).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from pipeline.models import RemittancePosting, SubmittedClaim
from pipeline.state import BatchStore
from services.remittance.era import ZERO
from services.remittance.plb import PlbApplication
from services.remittance.posting import PaymentSummary, Prior

_SCHEMA = """
CREATE TABLE IF NOT EXISTS claims (
    claim_id TEXT PRIMARY KEY,
    encounter_id TEXT NOT NULL,
    payer_id TEXT NOT NULL,
    record TEXT NOT NULL            -- the SubmittedClaim as JSON, without its X12
);
CREATE TABLE IF NOT EXISTS pending (  -- payments that arrived before their claim (legacy)
    claim_id TEXT NOT NULL,
    file_key TEXT NOT NULL,
    file_record TEXT NOT NULL,       -- the PayerFile as JSON
    PRIMARY KEY (claim_id, file_key)
);
CREATE TABLE IF NOT EXISTS payer_files (  -- files holding a payment that waits for its claim
    file_key TEXT PRIMARY KEY,
    file_record TEXT NOT NULL,       -- the PayerFile as JSON
    source_partition INTEGER,
    source_offset INTEGER
);
CREATE TABLE IF NOT EXISTS unmatched (
    claim_id TEXT NOT NULL,
    file_key TEXT NOT NULL,
    first_seen REAL NOT NULL,        -- unix time the payment was first read
    reported REAL,                   -- unix time it went to the exceptions topic
    PRIMARY KEY (claim_id, file_key)
);
CREATE TABLE IF NOT EXISTS posted (
    event_id TEXT PRIMARY KEY,
    claim_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS payments (
    payer_id TEXT NOT NULL,
    payment_trace TEXT NOT NULL,
    transaction_control_number TEXT NOT NULL,
    file_key TEXT NOT NULL,
    payment_amount TEXT NOT NULL,
    claims INTEGER NOT NULL,
    claims_paid TEXT NOT NULL,
    provider_adjustment_total TEXT NOT NULL,
    PRIMARY KEY (payer_id, payment_trace, transaction_control_number)
);
CREATE TABLE IF NOT EXISTS provider_adjustments (
    payer_id TEXT NOT NULL,
    payment_trace TEXT NOT NULL,
    seq INTEGER NOT NULL,
    provider_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    reference TEXT,
    amount TEXT NOT NULL,
    PRIMARY KEY (payer_id, payment_trace, seq)
);
CREATE INDEX IF NOT EXISTS unmatched_waiting ON unmatched (reported, first_seen);
CREATE INDEX IF NOT EXISTS posted_claim ON posted (claim_id);
"""

# Columns added to ``posted`` after it landed: a ledger from an older version gains them.
_POSTED_COLUMNS = {
    "status": "TEXT",
    "claim_status_code": "TEXT",
    "paid": "TEXT",
    "patient_responsibility": "TEXT",
    "payment_trace": "TEXT",
    "payer_id": "TEXT",
    "payer_sequence": "INTEGER",
    "payer_claim_control_number": "TEXT",
    "charge": "TEXT",
    "sequestration": "TEXT",
}
# Columns added to ``provider_adjustments``: where each PLB adjustment was applied.
_PLB_COLUMNS = {"target": "TEXT", "claim_id": "TEXT"}


@dataclass(frozen=True)
class Waiting:
    """A claim payment waiting for its claim, with the file it came in."""

    claim_id: str
    file_key: str
    file_record: str
    first_seen: float
    source_partition: int | None
    source_offset: int | None


@dataclass(frozen=True)
class PostedAmounts:
    """One posting as the ledger keeps it."""

    event_id: str
    status: str
    claim_status_code: str
    paid: Decimal
    patient_responsibility: Decimal
    payment_trace: str | None


class Ledger(BatchStore):
    """Claims submitted, payments waiting for their claim, and postings already made."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(path, _SCHEMA)
        self._migrate()
        self.db.commit()

    def _migrate(self) -> None:
        for table, columns in (("posted", _POSTED_COLUMNS), ("provider_adjustments", _PLB_COLUMNS)):
            have = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            for name, kind in columns.items():
                if name not in have:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
        self.db.execute(
            "CREATE INDEX IF NOT EXISTS posted_pccn ON posted (payer_claim_control_number)"
        )
        # Waiting payments of the first layout (the file copied per claim) move over.
        for claim_id, file_key, record in self.db.execute(
            "SELECT claim_id, file_key, file_record FROM pending"
        ).fetchall():
            self.add_waiting(claim_id, file_key, record, first_seen=0.0)
        self.db.execute("DELETE FROM pending")

    # --- claims ---------------------------------------------------------------------------

    def add_claim(self, claim: SubmittedClaim) -> None:
        record = claim.model_copy(update={"x12": ""}).model_dump_json()
        self.db.execute(
            "INSERT INTO claims VALUES (?, ?, ?, ?) ON CONFLICT(claim_id) DO UPDATE SET "
            "encounter_id = excluded.encounter_id, payer_id = excluded.payer_id, "
            "record = excluded.record",
            (claim.claim_id, claim.encounter_id, claim.payer_id, record),
        )

    def claim(self, claim_id: str) -> SubmittedClaim | None:
        row = self.db.execute(
            "SELECT record FROM claims WHERE claim_id = ?", (claim_id,)
        ).fetchone()
        return SubmittedClaim.model_validate_json(row[0]) if row else None

    # --- payments waiting for their claim -------------------------------------------------

    def add_waiting(
        self,
        claim_id: str,
        file_key: str,
        file_record: str,
        *,
        first_seen: float,
        source_partition: int | None = None,
        source_offset: int | None = None,
    ) -> None:
        """Keep a payment whose claim has not arrived (the file once, the claim per row)."""
        self.db.execute(
            "INSERT OR IGNORE INTO payer_files VALUES (?, ?, ?, ?)",
            (file_key, file_record, source_partition, source_offset),
        )
        self.db.execute(
            "INSERT OR IGNORE INTO unmatched VALUES (?, ?, ?, NULL)",
            (claim_id, file_key, first_seen),
        )

    def take_waiting(self, claim_id: str) -> list[Waiting]:
        """The payments waiting for this claim, removed from the waiting list."""
        rows = self._waiting("u.claim_id = ?", (claim_id,))
        self.db.execute("DELETE FROM unmatched WHERE claim_id = ?", (claim_id,))
        self._drop_orphan_files([w.file_key for w in rows])
        return rows

    def overdue(self, before: float, limit: int = 1000) -> list[Waiting]:
        """Waiting payments first seen before ``before`` and not yet reported."""
        return self._waiting(
            "u.reported IS NULL AND u.first_seen < ? ORDER BY u.first_seen LIMIT ?",
            (before, limit),
        )

    def mark_reported(self, claim_id: str, file_key: str, at: float) -> None:
        """The payment went to the exceptions topic; it still waits for a late claim."""
        self.db.execute(
            "UPDATE unmatched SET reported = ? WHERE claim_id = ? AND file_key = ?",
            (at, claim_id, file_key),
        )

    def waiting_count(self, *, reported: bool | None = None) -> int:
        """Payments waiting for their claim (only reported / unreported ones when asked)."""
        where = {None: "", True: " WHERE reported IS NOT NULL", False: " WHERE reported IS NULL"}
        return int(
            self.db.execute(f"SELECT count(*) FROM unmatched{where[reported]}").fetchone()[0]
        )

    def _waiting(self, where: str, args: tuple[object, ...]) -> list[Waiting]:
        rows = self.db.execute(
            "SELECT u.claim_id, u.file_key, f.file_record, u.first_seen, f.source_partition, "
            "f.source_offset FROM unmatched u JOIN payer_files f ON f.file_key = u.file_key "
            f"WHERE {where}",
            args,
        ).fetchall()
        return [Waiting(*row) for row in rows]

    def _drop_orphan_files(self, file_keys: list[str]) -> None:
        for key in set(file_keys):
            left = self.db.execute("SELECT 1 FROM unmatched WHERE file_key = ? LIMIT 1", (key,))
            if left.fetchone() is None:
                self.db.execute("DELETE FROM payer_files WHERE file_key = ?", (key,))

    # --- postings and payments ------------------------------------------------------------

    def mark_posted(self, posting: RemittancePosting, sequestration: Decimal = ZERO) -> bool:
        """Record a posting with its amounts; False when it was already made (a replay)."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO posted (event_id, claim_id, status, claim_status_code, paid, "
            "patient_responsibility, payment_trace, payer_id, payer_sequence, "
            "payer_claim_control_number, charge, sequestration) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                posting.event_id,
                posting.claim_id,
                posting.status,
                posting.claim_status_code,
                str(posting.paid),
                str(posting.patient_responsibility),
                posting.payment_trace,
                posting.payer_id,
                posting.payer_sequence,
                posting.payer_claim_control_number,
                str(posting.total_charge),
                str(sequestration),
            ),
        )
        return cur.rowcount == 1

    def prior(self, claim_id: str, payer_id: str) -> Prior:
        """What the payer's postings of the claim add up to so far (a split claim nets)."""
        rows = self.db.execute(
            "SELECT charge, paid, patient_responsibility, sequestration FROM posted "
            "WHERE claim_id = ? AND payer_id = ? AND charge IS NOT NULL",
            (claim_id, payer_id),
        ).fetchall()
        sums = [sum((Decimal(row[i] or 0) for row in rows), ZERO) for i in range(4)]
        return Prior(*sums)

    def claim_for_reference(self, reference: str) -> str | None:
        """The claim a payer's reference names: its claim control number, or a claim id."""
        row = self.db.execute(
            "SELECT claim_id FROM posted WHERE payer_claim_control_number = ? "
            "ORDER BY rowid DESC LIMIT 1",
            (reference,),
        ).fetchone()
        if row:
            return str(row[0])
        row = self.db.execute("SELECT claim_id FROM claims WHERE claim_id = ?", (reference,))
        found = row.fetchone()
        return str(found[0]) if found else None

    def postings(self, claim_id: str) -> list[PostedAmounts]:
        """The claim's postings with amounts, in the order they were made."""
        rows = self.db.execute(
            "SELECT event_id, status, claim_status_code, paid, patient_responsibility, "
            "payment_trace FROM posted WHERE claim_id = ? AND paid IS NOT NULL ORDER BY rowid",
            (claim_id,),
        ).fetchall()
        return [
            PostedAmounts(eid, status, code, Decimal(paid), Decimal(resp), trace)
            for eid, status, code, paid, resp, trace in rows
        ]

    def net_paid(self, claim_id: str) -> Decimal:
        """What the payers have paid on the claim, net of reversals and of the provider-level
        adjustments applied to it (a WO recovery takes back, L6 interest adds)."""
        paid = sum((p.paid for p in self.postings(claim_id)), ZERO)
        return paid - sum((a for _, _, a in self.claim_plb(claim_id)), ZERO)

    def claim_plb(self, claim_id: str) -> list[tuple[str, str | None, Decimal]]:
        """(reason, reference, amount) of the PLB adjustments applied to the claim."""
        rows = self.db.execute(
            "SELECT reason, reference, amount FROM provider_adjustments WHERE claim_id = ? "
            "AND target = 'claim' ORDER BY rowid",
            (claim_id,),
        ).fetchall()
        return [(reason, ref, Decimal(amount)) for reason, ref, amount in rows]

    def forward_balance(self, payer_id: str, provider_id: str | None = None) -> Decimal:
        """What the provider owes the payer in forward balances (FB) not yet collected:
        a negative FB carries a balance into the next file, a positive one collects it."""
        sql = "SELECT amount FROM provider_adjustments WHERE payer_id = ? AND reason = 'FB'"
        args: tuple[str, ...] = (payer_id,)
        if provider_id is not None:
            sql += " AND provider_id = ?"
            args += (provider_id,)
        return -sum((Decimal(row[0]) for row in self.db.execute(sql, args)), ZERO)

    def provider_balance(self, payer_id: str) -> list[tuple[str, str | None, Decimal]]:
        """(reason, reference, amount) of PLB adjustments held against the provider: ones
        whose reference names no claim claimflow knows."""
        rows = self.db.execute(
            "SELECT reason, reference, amount FROM provider_adjustments WHERE payer_id = ? "
            "AND target = 'provider' ORDER BY rowid",
            (payer_id,),
        ).fetchall()
        return [(reason, ref, Decimal(amount)) for reason, ref, amount in rows]

    def plb_applications(self) -> list[dict[str, str | None]]:
        """Every PLB adjustment recorded, with where it was applied (for a person or a report)."""
        rows = self.db.execute(
            "SELECT payer_id, payment_trace, provider_id, reason, reference, amount, target, "
            "claim_id FROM provider_adjustments ORDER BY rowid"
        ).fetchall()
        keys = ("payer_id", "payment_trace", "provider_id", "reason", "reference", "amount")
        return [dict(zip((*keys, "target", "claim_id"), row, strict=True)) for row in rows]

    def add_payment(
        self,
        summary: PaymentSummary,
        file_key: str,
        applications: Sequence[PlbApplication] = (),
    ) -> bool:
        """Record a posted payment and its PLB adjustments (where each was applied); False
        when already recorded."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO payments VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                summary.payer_id,
                summary.payment_trace,
                summary.transaction_control_number,
                file_key,
                str(summary.payment_amount),
                summary.claims,
                str(summary.claims_paid),
                str(summary.provider_adjustment_total),
            ),
        )
        if cur.rowcount != 1:
            return False
        targets = {id(a.adjustment): a for a in applications}
        for seq, plb in enumerate(summary.provider_adjustments):
            applied = targets.get(id(plb))
            self.db.execute(
                "INSERT OR IGNORE INTO provider_adjustments (payer_id, payment_trace, seq, "
                "provider_id, reason, reference, amount, target, claim_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    summary.payer_id,
                    summary.payment_trace,
                    seq,
                    plb.provider_id,
                    plb.reason,
                    plb.reference,
                    str(plb.amount),
                    applied.target if applied else "provider",
                    applied.claim_id if applied else None,
                ),
            )
        return True

    def provider_adjustments(self, payer_id: str, payment_trace: str) -> list[tuple[str, Decimal]]:
        """(reason, amount) of the PLB adjustments recorded for one payment."""
        rows = self.db.execute(
            "SELECT reason, amount FROM provider_adjustments WHERE payer_id = ? AND "
            "payment_trace = ? ORDER BY seq",
            (payer_id, payment_trace),
        ).fetchall()
        return [(reason, Decimal(amount)) for reason, amount in rows]
