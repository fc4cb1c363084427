"""Follows every topic from the beginning and accounts for each encounter sent.

An encounter sent to intake ends in exactly one of: posted (a remittance for its claim),
rejected (by the scrubber), a dead letter at some stage, held in remittance's exceptions
(its claim's payment did not balance or never matched), or rejected by the payer's front end
(a 999 or 277CA: no 835 will come). Anything else, once the pipeline is idle, is lost. A
denied claim is posted (status denied) and also in the denial queue. Tansu's high
watermarks read low, so this counts records instead of trusting end offsets.

Which topics, and what a record of each changes here, is the stages' to say: each declares
{topic: handler} (``services/<stage>/tracking.py``, entry points ``claimflow.tracking``),
and the tracker follows those topics and the declaring stages' dead-letter topics.

Threads: a ``Ledger`` belongs to the thread that polls the tracker; a publisher on another
thread reports what it sent through ``mark_sent`` (a queue), never by touching ``sent``.
Settling is incremental, so the live line of a run that lasts hours costs what the records
of the last poll cost, not a pass over everything ever sent.
"""

from __future__ import annotations

import functools
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

from pipeline import plugins
from pipeline.kafka import client_config
from pipeline.serde import Registry, registry
from pipeline.settings import Settings
from pipeline.stage import dead_letter_topic

Handler = Callable[["Ledger", str | None, Any], None]
"""What one record of a followed topic changes in the ledger: ``(ledger, key, value)``."""
X12_ONLY = "x12_only"
MILESTONE = "milestone"
"""A handler's milestone (``validated``, ``submitted``, ``posted``): the record time of each
key of its topic is a time of that milestone (``Ledger.milestone_times``), which the report's
timeline charts; the plumbing needs no stage's topic name for it."""
"""A handler with this attribute true only keeps 837 text (``Ledger.keep_x12``): the live
tracker of run/demo does not read its topic."""


@functools.cache
def _declared() -> tuple[tuple[str, ...], dict[str, tuple[Handler, ...]]]:
    """The stages that declare what the tracker follows, and each topic's handlers."""
    stages: list[str] = []
    handlers: dict[str, list[Handler]] = defaultdict(list)
    for name, topics in plugins.tracked().items():
        stages.append(name)
        for topic, handler in topics.items():
            handlers[topic].append(handler)
    if not stages:
        raise RuntimeError(
            "no stage declares what the tracker follows (entry points claimflow.tracking): "
            "install claimflow (make install)"
        )
    return tuple(stages), {topic: tuple(h) for topic, h in handlers.items()}


def followed(*, keep_x12: bool = True) -> list[str]:
    """Every topic the stages declare, and each declaring stage's dead-letter topic; without
    ``keep_x12``, not the topics whose every handler only keeps 837s (``X12_ONLY``)."""
    stages, handlers = _declared()
    topics = [
        topic
        for topic, found in handlers.items()
        if keep_x12 or not all(getattr(h, X12_ONLY, False) for h in found)
    ]
    return [*topics, *(dead_letter_topic(name) for name in stages)]


class Tally(dict[str, str]):
    """A dict that keeps how many of its keys hold each value (``counts``): the live line
    reads them at every refresh, and counting the values there cost a pass over every
    encounter of the run. Item assignment and deletion keep the counts; the other ways to
    change a dict are refused rather than left uncounted."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __setitem__(self, key: str, value: str) -> None:
        old = self.get(key)
        if old is not None:
            self.counts[old] -= 1
        super().__setitem__(key, value)
        self.counts[value] += 1

    def __delitem__(self, key: str) -> None:
        self.counts[self[key]] -= 1
        super().__delitem__(key)

    def _uncounted(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("a Tally changes by item assignment or deletion only")

    update = setdefault = pop = popitem = clear = _uncounted  # type: ignore[assignment]


@dataclass
class Ledger:
    """What the topics say happened, keyed by source id / encounter id / claim id.

    ``summary`` (the live line of ``claimflow run``, twice a second on a terminal) makes no
    pass over the run's encounters or claims: those counts are kept as the records arrive
    (``Tally``, ``claim_event``), and every collected encounter is a key of
    ``encounter_source`` (the intake handler writes it with ``source_encounters``). It still
    reads the few encounters in review, held payments and front-end rejections."""

    sent: set[str] = field(default_factory=set)
    source_encounters: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    coded: set[str] = field(default_factory=set)
    review: set[str] = field(default_factory=set)
    outcome: Tally = field(default_factory=Tally)  # encounter id -> clean | warnings | rejected
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
    _handlers: dict[str, tuple[Handler, ...]] = field(
        default_factory=lambda: _declared()[1], repr=False
    )
    _incoming: SimpleQueue[str] = field(default_factory=SimpleQueue, repr=False)
    _counted: set[str] = field(default_factory=set, repr=False)
    _touched: set[str] = field(default_factory=set, repr=False)
    _open: set[str] = field(default_factory=set, repr=False)
    _resubmitted: set[str] = field(default_factory=set, repr=False)

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

    def claim_event(self, claim_id: str, event_id: str) -> None:
        """A claim event of ``claim_id`` (a second one is a claim sent again)."""
        events = self.claim_events[claim_id]
        events.add(event_id)
        if len(events) == 2:
            self._resubmitted.add(claim_id)

    def touch_source(self, source_id: str) -> None:
        """A record may change the fate of this source: check it again at ``lost``."""
        self._touched.add(source_id)

    def touch_encounter(self, encounter_id: str) -> None:
        """A record may change the fate of this encounter's source."""
        source = self.encounter_source.get(encounter_id)
        if source is not None:
            self._touched.add(source)

    def touch_claim(self, claim_id: str) -> None:
        """A record may change the fate of this claim's encounter."""
        encounter = self.claim_encounter.get(claim_id)
        if encounter is not None:
            self.touch_encounter(encounter)

    def milestone_times(self, milestone: str) -> dict[str, int]:
        """Key -> first record time on the topics whose handlers mark this milestone."""
        found: dict[str, int] = {}
        for topic, handlers in self._handlers.items():
            if any(getattr(h, MILESTONE, None) == milestone for h in handlers):
                for key, stamp in self.times.get(topic, {}).items():
                    found.setdefault(key, stamp)
        return found

    def add(self, topic: str, key: str | None, value: Any, timestamp_ms: int = 0) -> None:
        """One record: its topic's handlers (the stages' declarations), or a dead letter."""
        self.records[topic] += 1
        if self.keep_times and key is not None:
            self.times[topic].setdefault(key, timestamp_ms)
        eid = getattr(value, "event_id", None)
        if eid:
            self.event_ids[topic][eid] += 1
        for handler in self._handlers.get(topic, ()):
            handler(self, key, value)
        if topic.startswith("dlq."):
            self._dead_letter(key, value)

    def _dead_letter(self, key: str | None, value: Any) -> None:
        # A dead letter's key is a source, encounter or claim id, by stage.
        if key:
            self.touch_source(key)
            self.touch_encounter(key)
            self.touch_claim(key)
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
        outcomes = self.outcome.counts
        return {
            "encounters_sent": len(self.sent),
            "collected": len(self.encounter_source),
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
            "resubmitted": len(self._resubmitted),
            "payer_rejected": len(self.payer_rejected()),
        }

    def resubmitted(self) -> set[str]:
        """Claims that went out again after a correction: a replacement (7), a void (8), or
        a new original after a front-end rejection (each is a claim event of its own)."""
        return set(self._resubmitted)

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
        for name in followed(keep_x12=keep_x12):
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
