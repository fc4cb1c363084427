"""The hospital account: every HL7 v2 message of one visit, billed once the account is final.

A hospital's HIS does not send a claim: it opens a visit (ADT^A01), posts charges as they
happen (any number of DFT^P03, from every department, credits included) and discharges the
patient (ADT^A03). The account gathers the messages of one visit (PV1-19 visit number with
its assigning authority) and is billed once it is final: the patient left (an ADT^A03, or a
PV1-45 discharge date) and the bill hold for late charges has passed
(``CLAIMFLOW_INTAKE__BILL_HOLD_HOURS``, 0 by default: billed on discharge). Billing reads
every message of the account together, as one batch, so the ADT gives the stay and the
DFTs the charges, credits netted (``hl7v2.py``): one encounter, one claim.

Charges that arrive after the final bill go out as a late-charge claim (type of bill
xx5: 0115 inpatient, 0135 outpatient; only the new charges, under the encounter id
``…/late-N``) or, with ``CLAIMFLOW_INTAKE__LATE_CHARGES=replacement``, as a replacement of
the whole account (xx7, same encounter id): Medicare takes no inpatient late-charge bills.

Outpatient office visits (PV1-2 O, R) and messages without a visit number are not held:
they are complete billing messages and are billed as they come.

With several intake instances every message of a visit must meet one account. The live
service re-keys each held message by visit (``visit_key``) into ``intake.by-visit.v1``
and keeps one account store per partition of that topic, which follows its partition
(``pipeline/partitioned.py``): every write is also a change record for the changelog
``intake.accounts.changelog``, from which a partition's accounts are rebuilt on the
instance it moves to. That hop is at-least-once, so an account ignores a message it
already holds (same source id, same text): a re-read never adds a charge twice.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pipeline.errors import InputError
from pipeline.models import ClaimSettled, Encounter
from pipeline.settled import SCHEMA as SETTLED_SCHEMA
from pipeline.settled import RetentionPolicy, SettledMarks
from pipeline.state import ChangelogStore
from services.intake.domain import hl7_body
from services.intake.hl7v2 import MessageHead, parse_hl7v2, peek_messages
from services.refdata.chargemaster import Chargemaster
from services.refdata.providers import ProviderDirectory

LateCharges = Literal["late_charge", "replacement"]
HELD_CLASSES = frozenset({"E", "I"})
"""Patient classes billed from an account: emergency and inpatient (hospital claims)."""

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS account (
    visit TEXT PRIMARY KEY,     -- PV1-19.4 | PV1-19.1
    messages TEXT NOT NULL,     -- JSON list of [source id, ER7 text], in arrival order
    discharged_at REAL,         -- unix time the discharge was received; NULL while in house
    billed INTEGER NOT NULL,    -- how many of the messages the bills so far covered
    bills INTEGER NOT NULL,     -- claims sent: 0 none, 1 the final bill, 2+ late ones
    updated_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS account_due ON account (billed, discharged_at);
-- The encounters an account's bills carried (the final bill, late charges), for retention.
CREATE TABLE IF NOT EXISTS account_bill (
    encounter_id TEXT PRIMARY KEY,
    visit TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS account_bill_visit ON account_bill (visit);
-- Accounts whose messages were pruned once every bill was settled and past its window.
CREATE TABLE IF NOT EXISTS account_pruned (
    visit TEXT PRIMARY KEY,
    settled_at REAL NOT NULL,   -- unix time the last of its bills settled
    pruned_at REAL NOT NULL
);
"""
    + SETTLED_SCHEMA
)

# Change records of the retention tables, beside the accounts' (keyed by visit) in the
# changelog. "~" is HL7's repetition separator: no visit (PV1-19) begins with it.
BILL, SETTLED, PRUNED = "~bill:", "~settled:", "~pruned:"

Parse = Callable[[str, str, datetime], list[Encounter]]
"""(ER7 text of the account's messages, source id, received at) -> encounters."""


@dataclass
class Account:
    visit: str
    messages: list[str]
    discharged_at: float | None = None
    billed: int = 0
    bills: int = 0
    sources: list[str] = field(default_factory=list)
    """The source id of each message: a bill carries the one that completed it."""


def visit_key(visit: str) -> str:
    """The record key that brings every message of a visit to one partition (and account):
    the visit (PV1-19 with its assigning authority) hashed, as a key is not PHI-marked."""
    return hashlib.sha256(visit.encode()).hexdigest()[:32]


class AccountPruned(InputError):
    """A message for an account whose messages were pruned after its retention window: no
    late charge or replacement can be built from it any more."""

    def __init__(self, visit: str, settled_at: float) -> None:
        day = datetime.fromtimestamp(settled_at, UTC).date().isoformat()
        super().__init__(
            "PV1-19",
            f"the visit was settled on {day} and its messages pruned after the retention "
            "window (CLAIMFLOW_INTAKE__SETTLED_RETENTION_DAYS); a late charge to it must be "
            "billed by hand",
        )


class AccountStore(ChangelogStore):
    """Hospital accounts by visit; written inside the batch, committed with it. With
    ``changelog`` each write is kept as a change record for the runner to produce."""

    NAME = "accounts"
    """The store's name in its changelog topic and per-partition files."""

    def __init__(
        self, path: Path | str, *, changelog: bool = False, policy: RetentionPolicy | None = None
    ) -> None:
        super().__init__(path, _SCHEMA)
        self.changelog = changelog
        self.settled = SettledMarks(self.db, policy or RetentionPolicy())

    def get(self, visit: str) -> Account | None:
        row = self.db.execute(
            "SELECT messages, discharged_at, billed, bills FROM account WHERE visit = ?", (visit,)
        ).fetchone()
        if row is None:
            return None
        pairs = json.loads(row[0])
        return Account(visit, [t for _, t in pairs], row[1], row[2], row[3], [s for s, _ in pairs])

    def put(self, acc: Account) -> None:
        row = (json.dumps(list(zip(acc.sources, acc.messages, strict=True))),
               acc.discharged_at, acc.billed, acc.bills, time.time())  # fmt: skip
        self._write(acc.visit, row)
        if self.changelog:
            self.log_change(acc.visit, json.dumps(row).encode())

    def _log(self, key: str, value: object) -> None:
        if self.changelog:
            self.log_change(key, None if value is None else json.dumps(value).encode())

    def apply(self, key: str, value: bytes | None) -> None:
        """One change from the changelog: the row as ``put`` wrote it (None: deleted), or a
        row of the retention tables (``~``-prefixed keys)."""
        if key.startswith(BILL):
            self._bill_row(key.removeprefix(BILL), None if value is None else json.loads(value))
            return
        if key.startswith(SETTLED):
            self._mark(key.removeprefix(SETTLED), None if value is None else json.loads(value))
            return
        if key.startswith(PRUNED):
            self._pruned(key.removeprefix(PRUNED), None if value is None else json.loads(value))
            return
        if value is None:
            self.db.execute("DELETE FROM account WHERE visit = ?", (key,))
            return
        messages, discharged_at, billed, bills, updated_at = json.loads(value)
        self._write(key, (messages, discharged_at, billed, bills, updated_at))

    def _write(self, visit: str, row: tuple[str, float | None, int, int, float]) -> None:
        self.db.execute("INSERT OR REPLACE INTO account VALUES (?, ?, ?, ?, ?, ?)", (visit, *row))

    # --- retention (``pipeline/settled.py``): the raw HL7 goes once every bill is settled

    def record_bill(self, visit: str, encounter_id: str) -> None:
        """An encounter billed from the account (retention prunes it once all are settled)."""
        self._bill_row(encounter_id, visit)
        self._log(BILL + encounter_id, visit)

    def _bill_row(self, encounter_id: str, visit: str | None) -> None:
        if visit is None:
            self.db.execute("DELETE FROM account_bill WHERE encounter_id = ?", (encounter_id,))
        else:
            self.db.execute(
                "INSERT OR IGNORE INTO account_bill VALUES (?, ?)", (encounter_id, visit)
            )

    def _mark(self, encounter_id: str, row: list[float] | None) -> None:
        self.db.execute("DELETE FROM settled_encounter WHERE encounter_id = ?", (encounter_id,))
        if row is not None:
            self.db.execute("INSERT INTO settled_encounter VALUES (?, ?, ?)", (encounter_id, *row))

    def _pruned(self, visit: str, row: list[float] | None) -> None:
        self.db.execute("DELETE FROM account_pruned WHERE visit = ?", (visit,))
        if row is not None:
            self.db.execute("INSERT INTO account_pruned VALUES (?, ?, ?)", (visit, *row))

    def pruned_at(self, visit: str) -> float | None:
        """When the account's last bill settled, if its messages were pruned since."""
        row = self.db.execute(
            "SELECT settled_at FROM account_pruned WHERE visit = ?", (visit,)
        ).fetchone()
        return None if row is None else float(row[0])

    def billed(self, encounter_id: str | None) -> bool:
        """Whether an account of this store billed the encounter."""
        return encounter_id is not None and bool(
            self.db.execute(
                "SELECT 1 FROM account_bill WHERE encounter_id = ?", (encounter_id,)
            ).fetchone()
        )

    def settle(self, event: ClaimSettled) -> None:
        """A claim settled (or reopened): marked when it billed an account of this store."""
        encounter_id = event.encounter_id
        if encounter_id is None or not self.billed(encounter_id):
            return
        self.settled.settle(event)
        row = self.db.execute(
            "SELECT settled_at, prune_after FROM settled_encounter WHERE encounter_id = ?",
            (encounter_id,),
        ).fetchone()
        self._log(SETTLED + encounter_id, None if row is None else list(row))

    def prune_settled(self, now: float) -> int:
        """Blank the messages of every account whose bills are all settled and past their
        window and which holds no charge billed since; the visit, its counts and the source
        ids stay (a message for it later is refused with the reason). How many accounts."""
        pruned = 0
        due = dict(self.settled.due(now))
        visits = {r[0] for r in self.db.execute(
            "SELECT DISTINCT b.visit FROM account_bill b JOIN settled_encounter s "
            "ON s.encounter_id = b.encounter_id WHERE s.prune_after <= ?", (now,)
        )}  # fmt: skip
        for visit in sorted(visits):
            acc = self.get(visit)
            if acc is None or len(acc.messages) > acc.billed:
                continue  # charges no bill covers yet: kept until they are billed
            bills = [r[0] for r in self.db.execute(
                "SELECT encounter_id FROM account_bill WHERE visit = ?", (visit,)
            )]  # fmt: skip
            if not all(e in due for e in bills):
                continue  # a bill not settled yet, or within its window
            settled_at = max(due[e] for e in bills)
            acc.messages = [""] * len(acc.messages)
            self.put(acc)
            self._pruned(visit, [settled_at, now])
            self._log(PRUNED + visit, [settled_at, now])
            for e in bills:
                self.settled.forget(e)
                self._log(SETTLED + e, None)
            pruned += 1
        return pruned

    def due(self, before: float) -> list[str]:
        """Visits discharged before ``before`` and not billed yet."""
        rows = self.db.execute(
            "SELECT visit FROM account WHERE billed = 0 AND discharged_at <= ?", (before,)
        )
        return [r[0] for r in rows]

    def open_visits(self) -> list[str]:
        """Visits with charges no bill covers yet (not discharged, or held)."""
        rows = self.db.execute("SELECT visit, messages, billed FROM account")  # pairs
        return [v for v, msgs, billed in rows if len(json.loads(msgs)) > billed]


class AccountBook:
    """Adds messages to their accounts and says which encounters are ready to bill."""

    def __init__(
        self,
        store: AccountStore,
        parse: Parse,
        *,
        bill_hold_s: float = 0.0,
        late_charges: LateCharges = "late_charge",
    ) -> None:
        self.store = store
        self.parse = parse
        self.bill_hold_s = bill_hold_s
        self.late_charges = late_charges

    def on(self, store: AccountStore) -> AccountBook:
        """The same book over another store (one partition's accounts)."""
        return AccountBook(
            store, self.parse, bill_hold_s=self.bill_hold_s, late_charges=self.late_charges
        )

    @staticmethod
    def held(head: MessageHead) -> bool:
        """Whether a message belongs to a hospital account (else it is billed as it comes)."""
        return head.visit is not None and head.patient_class in HELD_CLASSES

    def receive(
        self, heads: Iterable[MessageHead], received_at: datetime, source_id: str = ""
    ) -> list[Encounter]:
        """Add held messages to their accounts; the encounters of accounts now final (with
        the source id of the message that completed them, so a sender can follow it)."""
        by_visit: dict[str, list[MessageHead]] = {}
        for head in heads:
            if head.visit is not None:
                by_visit.setdefault(head.visit, []).append(head)
        out: list[Encounter] = []
        for visit, heads_of_visit in by_visit.items():
            if (settled_at := self.store.pruned_at(visit)) is not None:
                raise AccountPruned(visit, settled_at)
            acc = self.store.get(visit) or Account(visit, [])
            known = set(zip(acc.sources, acc.messages, strict=True))
            group = [h for h in heads_of_visit if (source_id, h.text) not in known]
            if not group:  # read before (a re-read of the by-visit topic): nothing new
                continue
            acc.messages += [h.text for h in group]
            acc.sources += [source_id] * len(group)
            if acc.discharged_at is None and any(h.discharged for h in group):
                acc.discharged_at = received_at.timestamp()
            if acc.bills == 0:
                if acc.discharged_at is not None and self.bill_hold_s <= 0:
                    out += self._bill(acc, received_at)
                elif any(not _is_admit(m) for m in acc.messages):
                    # Read the account now, so a message that breaks it (an unknown charge
                    # code, a credit for nothing) is refused on arrival, not at billing.
                    self._one(self.parse("\r".join(acc.messages), "check", received_at))
            elif any(h.msg_type[0] == "DFT" for h in group):
                out += self._bill(acc, received_at)
            self.store.put(acc)
        return out

    def due(self, now: datetime, hold_s: float | None = None) -> list[Encounter]:
        """Encounters of accounts whose bill hold (``hold_s``, default the book's) has passed."""
        out: list[Encounter] = []
        hold_s = self.bill_hold_s if hold_s is None else hold_s
        for visit in self.store.due(now.timestamp() - hold_s):
            acc = self.store.get(visit)
            if acc is not None:
                out += self._bill(acc, now)
                self.store.put(acc)
        return out

    def _bill(self, acc: Account, at: datetime) -> list[Encounter]:
        """The final bill, or a late-charge / replacement bill for what came after it."""
        source_id = acc.sources[-1] or f"account:{acc.visit}:{len(acc.messages)}"
        if acc.bills == 0:
            encounters = self.parse("\r".join(acc.messages), source_id, at)
        elif self.late_charges == "replacement":
            encounters = [
                e.model_copy(update={"type_of_bill": _bill_type(e, "7")})
                for e in self.parse("\r".join(acc.messages), source_id, at)
            ]
        else:
            # The stay from the ADTs (without their procedures, billed already), the charges
            # from the DFTs that came after the last bill.
            stay = [_without("PR1", m) for m in acc.messages[: acc.billed] if _is_adt(m)]
            late = [m for m in acc.messages[acc.billed :] if not _is_adt(m)]
            if not late:
                return []
            encounters = [
                e.model_copy(
                    update={
                        "encounter_id": f"{e.encounter_id}/late-{acc.bills}",
                        "type_of_bill": _bill_type(e, "5"),
                    }
                )
                for e in self.parse("\r".join(stay + late), source_id, at)
            ]
        acc.billed = len(acc.messages)
        acc.bills += 1
        encounter = self._one(encounters)
        self.store.record_bill(acc.visit, encounter.encounter_id)
        return [encounter]

    @staticmethod
    def _one(encounters: list[Encounter]) -> Encounter:
        if len(encounters) != 1:
            raise InputError("PV1-19", "the messages of one visit did not make one account")
        return encounters[0]


def hl7_parser(directory: ProviderDirectory, chargemaster: Chargemaster | None) -> Parse:
    """The account's reader: ``parse_hl7v2`` with this deployment's master data."""

    def parse(text: str, source_id: str, received_at: datetime) -> list[Encounter]:
        return parse_hl7v2(
            text,
            source_id=source_id,
            received_at=received_at,
            directory=directory,
            chargemaster=chargemaster,
        ).encounters

    return parse


def split_held(
    book: AccountBook, body: bytes, content_type: str | None
) -> tuple[list[MessageHead], bytes | None]:
    """(messages for hospital accounts, the rest of the body to parse as it comes or None).

    A body that is not HL7 v2, or holds no hospital visit, comes back whole."""
    text = hl7_body(body, content_type)
    heads = peek_messages(text) if text is not None else []
    held = [h for h in heads if book.held(h)]
    if not held:
        return [], body
    direct = [h.text for h in heads if not book.held(h)]
    return held, "\r".join(direct).encode() if direct else None


def _bill_type(enc: Encounter, frequency: str) -> str:
    """UB-04 type of bill: hospital inpatient 011x, outpatient 013x, with this frequency."""
    return f"0{'11' if enc.setting == 'inpatient' else '13'}{frequency}"


def _is_adt(text: str) -> bool:
    return peek_messages(text)[0].msg_type[0] == "ADT"


def _is_admit(text: str) -> bool:
    return peek_messages(text)[0].msg_type == ("ADT", "A01")


def _without(segment: str, text: str) -> str:
    return "\r".join(line for line in text.split("\r") if not line.startswith(segment))
