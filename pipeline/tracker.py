"""Follows every topic from the beginning and accounts for each encounter sent.

An encounter sent to intake ends in exactly one of: posted (a remittance for its claim),
rejected (by the scrubber), a dead letter at some stage, held in remittance's exceptions
(its claim's payment did not balance or never matched), or rejected by the payer's front end
(a 999 or 277CA on claims.rejections.v1: no 835 will come). Anything else, once the
pipeline is idle, is lost. A denied claim is posted (status denied) and also in the denial queue.
Tansu's high watermarks read low, so this counts records instead of trusting end offsets.

Threads: a ``Ledger`` belongs to the thread that polls the tracker; a publisher on another
thread reports what it sent through ``mark_sent`` (a queue), never by touching ``sent``.
Settling is incremental, so the live line of a run that lasts hours costs what the records
of the last poll cost, not a pass over everything ever sent.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from queue import Empty, SimpleQueue
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from pipeline.kafka import client_config
from pipeline.serde import Registry, registry
from pipeline.settings import Settings

FOLLOWED = [
    "encounters.collected.v1",
    "encounters.coded.v1",
    "coding.review.v1",
    "coding.audits.v1",
    "encounters.validated.v1",
    "claims.submitted.v1",
    "claims.interchanges.v1",
    "payer.inbound.v1",
    "remittance.posted.v1",
    "dlq.intake.v1",
    "dlq.coding.v1",
    "dlq.validation.v1",
    "dlq.claims.v1",
    "dlq.remittance.v1",
    "remittance.exceptions.v1",
    "remittance.denials.v1",
    "claims.rejections.v1",
]

# Topics whose records name the encounter whose fate they may change.
ENCOUNTER_KEYED = (
    "encounters.coded.v1",
    "coding.review.v1",
    "encounters.validated.v1",
    "claims.submitted.v1",
)


@dataclass
class Ledger:
    """What the topics say happened, keyed by source id / encounter id / claim id."""

    sent: set[str] = field(default_factory=set)
    source_encounters: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    coded: set[str] = field(default_factory=set)
    review: set[str] = field(default_factory=set)
    outcome: dict[str, str] = field(default_factory=dict)
    claim_encounter: dict[str, str] = field(default_factory=dict)
    encounter_claim: dict[str, str] = field(default_factory=dict)  # the facility's, or the one
    encounter_claims: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    expected_claims: dict[str, int] = field(default_factory=dict)  # claims a verdict bills
    posted: dict[str, str] = field(default_factory=dict)  # claim id -> status
    exceptions: dict[str, str] = field(default_factory=dict)  # claim id -> exception kind
    denials: dict[str, str] = field(default_factory=dict)  # claim id -> denial category
    payer_rejections: dict[str, str] = field(default_factory=dict)  # claim id -> 999 | 277CA
    dead: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    dead_keys: set[str] = field(default_factory=set)
    records: Counter[str] = field(default_factory=Counter)
    event_ids: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    payer_files: int = 0
    claim_events: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    posting_events: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    keep_x12: bool = False
    x12: dict[str, str] = field(default_factory=dict)  # claim id -> its interchange
    keep_times: bool = False
    times: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    # What `claimflow report` needs besides the fates (small values, one per record).
    plan_types: dict[str, str] = field(default_factory=dict)  # encounter id -> plan type
    edits: dict[str, list[str]] = field(default_factory=dict)  # encounter id -> rule ids
    payers: dict[str, str] = field(default_factory=dict)  # claim id -> payer id
    claim_types: dict[str, str] = field(default_factory=dict)  # claim id -> claim type
    charges: dict[str, Decimal] = field(default_factory=dict)  # claim id -> total charge
    paid: dict[str, Decimal] = field(default_factory=dict)  # claim id -> paid
    denial_reasons: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # (group, CARC)
    # encounter id -> each audited code's (category, source, agreed); queued: not yet audited
    audits: dict[str, list[tuple[str, str, bool]]] = field(default_factory=dict)
    audits_queued: set[str] = field(default_factory=set)
    denial_kinds: dict[str, str] = field(default_factory=dict)  # claim id -> denied | partially…
    carc_text: dict[str, str] = field(default_factory=dict)  # CARC -> description, as sent
    payer_names: dict[str, str] = field(default_factory=dict)  # payer id -> name on the claim
    rule_categories: dict[str, str] = field(default_factory=dict)  # rule id -> category
    notice_text: dict[str, str] = field(default_factory=dict)  # config rule id -> message
    # Coordination of benefits: an encounter's payers in order, and per claim the last
    # posting's payer, what it left the patient and whether it crossed the claim over.
    coverages: dict[str, list[str]] = field(default_factory=dict)  # encounter id -> payer ids
    last_posting: dict[str, tuple[str, Decimal, bool, str]] = field(default_factory=dict)
    # Incremental settling: which encounter each collected record came from, the sources a
    # record touched since the last count, and the sent sources that are not yet final.
    encounter_source: dict[str, str] = field(default_factory=dict)
    _incoming: SimpleQueue[str] = field(default_factory=SimpleQueue, repr=False)
    _counted: set[str] = field(default_factory=set, repr=False)
    _touched: set[str] = field(default_factory=set, repr=False)
    _open: set[str] = field(default_factory=set, repr=False)

    def mark_sent(self, source_id: str) -> None:
        """Record a source id as sent; safe from any thread (the owner reads it at ``lost``)."""
        self._incoming.put(source_id)

    def take_sent(self) -> None:
        """Move what other threads marked as sent into ``sent`` (the owning thread only)."""
        while True:
            try:
                self.sent.add(self._incoming.get_nowait())
            except Empty:
                return

    def _touch_encounter(self, encounter_id: str) -> None:
        source = self.encounter_source.get(encounter_id)
        if source is not None:
            self._touched.add(source)

    def _touch_claim(self, claim_id: str) -> None:
        encounter = self.claim_encounter.get(claim_id)
        if encounter is not None:
            self._touch_encounter(encounter)

    def add(self, topic: str, key: str | None, value: Any, timestamp_ms: int = 0) -> None:
        self._settle_marks(topic, key, value)
        self._add(topic, key, value, timestamp_ms)

    def _settle_marks(self, topic: str, key: str | None, value: Any) -> None:
        """Mark the source a record may change the fate of (checked again at ``lost``)."""
        if topic == "encounters.collected.v1":
            self.encounter_source[value.encounter_id] = value.source_id
            self._touched.add(value.source_id)
        elif topic in ENCOUNTER_KEYED:
            self._touch_encounter(value.encounter_id)
        elif topic in ("remittance.posted.v1", "claims.rejections.v1"):
            self._touch_claim(value.claim_id)
        elif topic == "remittance.exceptions.v1":
            for claim in value.claims:
                self._touch_claim(claim.claim_id)
        elif topic.startswith("dlq.") and key:
            # A dead letter's key is a source, encounter or claim id, by stage.
            self._touched.add(key)
            self._touch_encounter(key)
            self._touch_claim(key)

    def _add(self, topic: str, key: str | None, value: Any, timestamp_ms: int) -> None:
        self.records[topic] += 1
        if self.keep_times and key is not None:
            self.times[topic].setdefault(key, timestamp_ms)
        eid = getattr(value, "event_id", None)
        if eid:
            self.event_ids[topic][eid] += 1
        if topic == "encounters.collected.v1":
            self.source_encounters[value.source_id].add(value.encounter_id)
            self.plan_types[value.encounter_id] = value.coverage.plan_type
            others = getattr(value, "other_coverages", [])
            if others:
                payers = [value.coverage.payer_id, *(c.payer_id for c in others)]
                self.coverages[value.encounter_id] = payers
        elif topic == "encounters.coded.v1":
            self.coded.add(value.encounter_id)
        elif topic == "coding.review.v1":
            self.review.add(value.encounter_id)
        elif topic == "coding.audits.v1":
            if value.status == "queued":
                self.audits_queued.add(value.encounter_id)
            else:
                self.audits_queued.discard(value.encounter_id)
                self.audits[value.encounter_id] = [
                    (c.category, c.source, c.outcome == "agree") for c in value.codes
                ]
        elif topic == "encounters.validated.v1":
            self.outcome[value.encounter_id] = value.outcome
            self.edits[value.encounter_id] = [e.rule_id for e in value.edits]
            for e in value.edits:
                self.rule_categories.setdefault(e.rule_id, e.category)
                if e.category == "config":  # says which edit is off; no patient data
                    self.notice_text.setdefault(e.rule_id, e.message[:200])
            coded = getattr(value, "coded", None)
            if coded is not None:
                self.expected_claims[value.encounter_id] = _claims_billed(coded)
        elif topic == "claims.submitted.v1":
            self.claim_encounter[value.claim_id] = value.encounter_id
            if (
                value.claim_type == "institutional"
                or value.encounter_id not in self.encounter_claim
            ):
                self.encounter_claim[value.encounter_id] = value.claim_id
            self.encounter_claims[value.encounter_id].add(value.claim_id)
            self.claim_events[value.claim_id].add(value.event_id)
            self.payers[value.claim_id] = value.payer_id
            self.payer_names.setdefault(value.payer_id, value.payer_name)
            self.claim_types[value.claim_id] = value.claim_type
            self.charges[value.claim_id] = value.total_charge
            if self.keep_x12 and value.x12:  # written before the claim check
                self.x12[value.claim_id] = value.x12
        elif topic == "claims.interchanges.v1":
            if self.keep_x12:  # each claim event names its interchange: stored once
                for claim_id in value.claim_ids:
                    self.x12[claim_id] = value.x12
        elif topic == "payer.inbound.v1":
            self.payer_files += 1
        elif topic == "remittance.posted.v1":
            self.posted[value.claim_id] = value.status
            self.paid[value.claim_id] = value.paid
            self.last_posting[value.claim_id] = (
                getattr(value, "payer_id", ""),
                getattr(value, "patient_responsibility", Decimal(0)),
                bool(getattr(value, "crossover_payer", None)),
                value.status,
            )
            self.posting_events[value.claim_id][value.event_id] += 1
        elif topic == "remittance.exceptions.v1":
            for claim in value.claims:
                self.exceptions[claim.claim_id] = value.kind
        elif topic == "remittance.denials.v1":
            self.denials[value.claim_id] = value.category
            self.denial_reasons[value.claim_id] = [(r.group, r.carc) for r in value.reasons]
            self.denial_kinds[value.claim_id] = value.kind
            for r in value.reasons:
                if r.description:
                    self.carc_text.setdefault(r.carc, r.description)
        elif topic == "claims.rejections.v1":
            self.payer_rejections[value.claim_id] = value.source
        elif topic.startswith("dlq."):
            self.dead[value.stage].append(
                {
                    "key": key,
                    "error": value.error_class,
                    "field": value.field,
                    "reason": value.error_message,
                    "source_topic": value.source_topic,
                }
            )
            if key:
                self.dead_keys.add(key)

    def encounter_done(self, encounter_id: str) -> bool:
        if encounter_id in self.dead_keys or self.outcome.get(encounter_id) == "rejected":
            return True
        if encounter_id in self.review and encounter_id not in self.coded:
            return True  # held by coding until a coder decides: final until then
        claims = set(self.encounter_claims.get(encounter_id) or ())
        if encounter_id in self.encounter_claim:
            claims.add(self.encounter_claim[encounter_id])
        # A facility encounter with a physician's services bills two claims (837I + 837P);
        # a claim whose payer left a share to a later coverage waits for that payer's claim.
        return len(claims) >= self.expected_claims.get(encounter_id, 1) and all(
            (
                claim in self.posted
                or claim in self.dead_keys
                or claim in self.exceptions
                or claim in self.payer_rejections  # final: the payer will send no 835 for it
            )
            and not self.next_payer_due(encounter_id, claim)
            for claim in claims
        )

    def next_payer_due(self, encounter_id: str, claim: str) -> bool:
        """The claim's payer left the patient a share, a later coverage is to be billed, and
        its claim (``<claim id>-2``, ``-3``: the claims stage sends it once it reads the
        posting) has not been seen yet."""
        payers = self.coverages.get(encounter_id)
        posting = self.last_posting.get(claim)
        if not payers or posting is None or claim in self.dead_keys:
            return False  # (a next claim that could not be billed is a dead letter)
        _payer, responsibility, crossover, status = posting
        if crossover or status == "reversed" or responsibility <= 0:
            return False
        base, _, suffix = claim.rpartition("-")
        position = int(suffix) if base and suffix in ("2", "3") else 1
        if position >= min(len(payers), 3):
            return False
        return f"{base if position > 1 else claim}-{position + 1}" not in self.claim_encounter

    def source_done(self, source_id: str) -> bool:
        if source_id in self.dead_keys:
            return True
        encounters = self.source_encounters.get(source_id) or set()
        return bool(encounters) and all(self.encounter_done(e) for e in encounters)

    def _settle(self) -> set[str]:
        """The sent sources not yet final, re-checking only new ones and those touched."""
        self.take_sent()
        if len(self._counted) != len(self.sent):
            new = self.sent - self._counted
            self._counted |= new
            self._touched |= new
        for source in self._touched:
            if source not in self._counted:
                continue  # a record of a source this run did not send
            if self.source_done(source):
                self._open.discard(source)
            else:
                self._open.add(source)
        self._touched.clear()
        return self._open

    def lost(self) -> list[str]:
        """Sent sources with no final state yet (in flight while the pipeline runs)."""
        return sorted(self._settle())

    def duplicates(self, topic: str) -> int:
        """Records on ``topic`` whose event id was already seen (at-least-once repeats)."""
        return sum(n - 1 for n in self.event_ids[topic].values())

    def summary(self) -> dict[str, int]:
        in_flight = self._settle()  # first: it takes what other threads marked as sent
        collected = (
            set().union(*self.source_encounters.values()) if self.source_encounters else set()
        )
        outcomes = Counter(self.outcome.values())
        return {
            "encounters_sent": len(self.sent),
            "collected": len(collected),
            "coded": len(self.coded),
            "review": len(self.in_review()),
            "clean": outcomes["clean"] + outcomes["warnings"],
            "rejected": outcomes["rejected"],
            "submitted": len(self.claim_encounter),
            "posted": len(self.posted),
            "dlq": sum(len(v) for v in self.dead.values()),
            "lost": len(in_flight),
            "exceptions": len(self.held()),
            "denials": len(self.denials),
            "resubmitted": len(self.resubmitted()),
            "payer_rejected": len(self.payer_rejected()),
        }

    def resubmitted(self) -> set[str]:
        """Claims that went out again after a correction: a replacement (7), a void (8), or
        a new original after a front-end rejection (each is a claim event of its own)."""
        return {c for c, events in self.claim_events.items() if len(events) > 1}

    def held(self) -> set[str]:
        """Submitted claims whose payment is in remittance's exceptions and not posted."""
        return {c for c in self.exceptions if c in self.claim_encounter and c not in self.posted}

    def payer_rejected(self) -> set[str]:
        """Submitted claims the payer's front end rejected (999/277CA) and that were not paid."""
        return {
            c for c in self.payer_rejections if c in self.claim_encounter and c not in self.posted
        }

    def in_review(self) -> set[str]:
        """Encounters coding holds for a coder's decision (reviewed, not yet coded)."""
        return self.review - self.coded

    def summary_line(self) -> str:
        return json.dumps(self.summary())


def _claims_billed(coded: Any) -> int:
    """How many claims a verdict bills: one per claim type among its lines (a line's own
    type, else the setting's: facility settings bill on the 837I)."""
    setting = coded.encounter.setting
    default = "professional" if setting == "professional" else "institutional"
    return max(1, len({line.claim_type or default for line in coded.lines}))


class Tracker:
    """Reads the followed topics from offset 0 (no consumer group) into a ``Ledger``."""

    def __init__(
        self,
        bootstrap: str,
        settings: Settings,
        reg: Registry | None = None,
        keep_x12: bool = False,
        keep_times: bool = False,
    ) -> None:
        self.settings = settings
        self.registry = reg or registry()
        self.ledger = Ledger(keep_x12=keep_x12, keep_times=keep_times)
        self.errors: list[str] = []
        self._prefix_len = len(settings.topic_prefix)
        self.consumer = Consumer(
            {
                **client_config(bootstrap, settings),
                "group.id": f"tracker-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 100,
            }
        )
        meta = self.consumer.list_topics(timeout=10)
        assignment = []
        for name in FOLLOWED:
            if name == "claims.interchanges.v1" and not keep_x12:
                continue  # the 837s: only a test that checks them needs their text
            topic = settings.topic(name)
            if topic in meta.topics:
                for p in meta.topics[topic].partitions:
                    assignment.append(TopicPartition(topic, p, OFFSET_BEGINNING))
        self.consumer.assign(assignment)

    def poll(self, max_records: int = 5000, timeout: float = 0.2) -> int:
        self.ledger.take_sent()
        n = 0
        for m in self.consumer.consume(max_records, timeout):
            if m.error():
                continue
            topic = (m.topic() or "")[self._prefix_len :]
            raw_key = m.key()
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            try:
                value = self.registry.decode(topic, m.value() or b"")
            except Exception as exc:  # noqa: BLE001 - a bad record is reported, not fatal
                self.errors.append(f"{topic}@{m.partition()}:{m.offset()}: {exc}")
                continue
            self.ledger.add(topic, key, value, m.timestamp()[1])
            n += 1
        return n

    def wait(self, done: Callable[[Ledger], bool], timeout: float) -> bool:
        """Poll until ``done(ledger)`` holds or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            if done(self.ledger):
                return True
        return False

    def close(self) -> None:
        self.consumer.close()
