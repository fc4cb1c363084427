"""intake: raw EHR messages (intake.raw.v1) -> normalised encounters (encounters.collected.v1).

A hospital account needs every message of its visit, and raw messages are keyed by source
message id (a batch may even hold several visits). So the live service re-keys each held
message by visit into ``intake.by-visit.v1`` and assembles accounts from there, with one
account store per partition of that topic that moves with the partition
(``pipeline/partitioned.py``). A stage built without that (tests, offline runs) keeps one
plain account store and assembles accounts straight from ``intake.raw.v1``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

from pipeline import metrics
from pipeline.errors import InputError
from pipeline.models import ClaimSettled, Encounter, RawMessage
from pipeline.partitioned import PartitionedStores
from pipeline.serde import MAGIC, Registry
from pipeline.settings import Settings
from pipeline.settled import RetentionPolicy, RetentionSweep
from pipeline.stage import Incoming, Out, Stage, run_stage
from services.intake import fhir
from services.intake.account import (
    AccountBook,
    AccountStore,
    hl7_parser,
    split_held,
    visit_key,
)
from services.intake.domain import parse_raw
from services.intake.seen import SeenMessages
from services.intake.settings import IntakeSettings
from services.refdata.masterdata import load_master_data

log = logging.getLogger(__name__)
PRUNE_EVERY_S = 3600.0
RAW = "intake.raw.v1"
BY_VISIT = "intake.by-visit.v1"
SETTLED = "remittance.settled.v1"
HL7_CONTENT_TYPE = "x-application/hl7-v2+er7"
SETTLED_CONTENT_TYPE = "application/vnd.claimflow.settled+json"
"""A settlement sent on to the partition of its visit's account (``intake.by-visit.v1``)."""
_SETTLED_STATUSES = frozenset(get_args(ClaimSettled.model_fields["status"].annotation))
_HL7_ENCOUNTER = re.compile(r"([A-Za-z0-9_.:\-]{1,64})/([^/]+)(?:/late-[0-9]+)?")


def body_digest(body: bytes) -> str:
    """What tells a resend from a corrected message under the same source id."""
    return hashlib.sha256(body).hexdigest()[:32]


class IntakeStage(Stage):
    name = "intake"
    inputs: tuple[str, ...] = (RAW, SETTLED)
    #: A message read again that its restored account already holds bills nothing
    #: (``AccountBook.receive``): the bills go out, acknowledged, before the accounts'
    #: changes, or a crash between the two would lose a bill for good.
    outputs_before_state = True

    def __init__(
        self, settings: IntakeSettings, accounts: PartitionedStores[AccountStore] | None = None
    ) -> None:
        self.master = load_master_data(settings)
        log.info("master data: %s", self.master.describe())
        self.directory = self.master.providers
        fhir.prepare()  # at start-up, not on the first bundles
        #: The live service's accounts, one store per partition of the by-visit topic.
        self.partitioned = accounts
        self.accounts: AccountStore | None = None
        options = settings.intake
        if accounts is None:
            self.accounts = AccountStore(
                settings.state_dir / "intake-accounts.sqlite", policy=options.retention_policy()
            )
        if accounts is not None:
            self.inputs = (RAW, SETTLED, BY_VISIT)
        self.book = AccountBook(
            self.accounts or AccountStore(":memory:"),
            hl7_parser(self.directory, self.master.chargemaster),
            bill_hold_s=settings.intake.bill_hold_hours * 3600,
            late_charges=settings.intake.late_charges,
        )
        self.seen = SeenMessages(settings.state_dir / "intake-seen.sqlite")
        # read_<format> counters, looked up once each (``labels`` costs ~1% of a message).
        self._read_counts: dict[str, Any] = {}
        # Messages read in the batch by format, added to those counters once per batch
        # (``on_batch_done``): a counter's increment takes its lock (0.35 us a message
        # against 0.07 us for the dict's).
        self._reads: dict[str, int] = {}
        # The settlement whose body ``_settled`` just made, when validating that body again
        # could only give back its values (``valid_as_sent``): the record it sends to the
        # visit's partition is most often handed back to this stage at once (one partition:
        # the runner's in-process hop), and reading it then cost ~1.7 us a settlement
        # (181.5K -> 168.6K instructions a settlement sent on and read back, callgrind).
        self._sent: tuple[bytes, ClaimSettled] | None = None
        self.window_s = settings.intake.repeat_window_days * 86400
        self._pruned_at = 0.0
        # Retention: an account's raw HL7 is pruned once its bills are settled and past
        # their window (remittance.settled.v1; pipeline/settled.py).
        self.retention = RetentionSweep(
            self._prune_stores, self._checkpoint_stores, every_s=options.retention_sweep_s
        )

    def decode(self, reg: Registry, topic: str, raw: bytes, headers: dict[str, bytes]) -> Any:
        # EHRs may send our RawMessage envelope, or the bare bytes with a content-type header.
        if raw[:2] == MAGIC:
            return reg.decode(topic, raw)
        return None

    def partitioned_stores(self) -> list[PartitionedStores[AccountStore]]:
        return [self.partitioned] if self.partitioned is not None else []

    def _stores(self) -> list[AccountStore]:
        if self.partitioned is not None:
            return [store for _, store in self.partitioned.items()]
        return [self.book.store]

    def handle(self, msg: Incoming) -> Iterable[Out]:
        if msg.topic == SETTLED:
            return self._settled(msg.value)
        if msg.topic == BY_VISIT:
            return self._account(msg)
        raw: RawMessage | None = msg.value
        if raw is None:
            content_type = msg.headers.get("content-type", b"").decode("utf-8", "replace") or None
            source_id = msg.key or f"{msg.topic}:{msg.partition}:{msg.offset}"
            body = msg.raw
            received_at = datetime.fromtimestamp(msg.timestamp_ms / 1000, UTC)
            source_system = None
        else:
            content_type, source_id = raw.content_type, raw.source_id
            body, received_at, source_system = raw.body, raw.received_at, raw.source_system
        digest = body_digest(body)
        if self.seen.seen(source_id, digest):
            metrics.OUTCOMES.labels(self.name, "repeat_dropped").inc()
            log.info("repeated source message dropped", extra={"offset": msg.offset})
            return []
        held, rest = split_held(self.book, body, content_type)
        encounters: list[Encounter] = []
        outs: list[Out] = []
        if held and self.accounts is None:  # to the visit's partition, where its account is
            outs += by_visit(held, source_id, source_system, received_at)
        elif held and self.accounts is not None:
            with self.accounts.atomic():  # a message that breaks its account changes nothing
                encounters += self.book.receive(held, received_at, source_id)
            self._read("hl7v2")
        if rest is not None:
            result = parse_raw(
                rest,
                content_type,
                source_id=source_id,
                received_at=received_at,
                source_system=source_system,
                directory=self.directory,
                chargemaster=self.master.chargemaster,
            )
            if not held:
                self._read(result.source_format)
            encounters += result.encounters
        self.seen.add(source_id, digest)  # only once read: a rejected message may be resent
        return outs + collected(encounters)

    def _read(self, source_format: str) -> None:
        """One message read in ``source_format``, counted with the batch."""
        reads = self._reads
        reads[source_format] = reads.get(source_format, 0) + 1

    def _count_reads(self) -> None:
        """The batch's messages read, added to the read_<format> counters."""
        for source_format, n in self._reads.items():
            self._read_count(source_format).inc(n)
        self._reads.clear()

    def _read_count(self, source_format: str) -> Any:
        """The read_<format> outcome counter, made on first use (as ``labels`` makes it)."""
        counter = self._read_counts.get(source_format)
        if counter is None:
            counter = metrics.OUTCOMES.labels(self.name, f"read_{source_format}")
            self._read_counts[source_format] = counter
        return counter

    def dead_letter_key(self, msg: Incoming) -> str | None:
        """A re-keyed message that breaks its account is named by its source message id, as
        when it is read from intake.raw.v1 (the letter keeps the visit key)."""
        if msg.topic == BY_VISIT and isinstance(msg.value, RawMessage):
            return msg.value.source_id
        return msg.key

    def _settled(self, event: ClaimSettled) -> list[Out]:
        """A claim settled: to its account's store, or on to the partition of its visit."""
        if self.partitioned is None:
            with self.book.store.atomic():
                self.book.store.settle(event)
            self._sweep()
            return []
        found = _HL7_ENCOUNTER.fullmatch(event.encounter_id or "")
        if found is None:  # not the encounter of a hospital account
            return []
        if self.handed_back(BY_VISIT) and valid_as_sent(event):
            # Its record to the visit's partition would be handed straight back as partition
            # 0's and read as this very event (``_account``): settled here, without making
            # the record, encoding it and reading it back: 144.5K -> 66.0K instructions a
            # settlement read, the runner's part included (callgrind).
            return self._settle(self.partitioned.get(0), event)
        visit = f"{found[1]}|{found[2]}"  # PV1-19.4|PV1-19.1, as the account is keyed
        body = event.model_dump_json().encode()
        raw = RawMessage(source_id=event.event_id, content_type=SETTLED_CONTENT_TYPE,
                         body=body, received_at=event.settled_at)  # fmt: skip
        self._sent = (body, event) if valid_as_sent(event) else None
        return [Out(BY_VISIT, visit_key(visit), raw)]

    def _sweep(self) -> None:
        if pruned := self.retention.sweep():
            metrics.OUTCOMES.labels(self.name, "retention_pruned").inc(pruned)

    def _prune_stores(self, now: float) -> int:
        return sum(store.prune_settled(now) for store in self._stores())

    def _checkpoint_stores(self) -> bool:
        """Empty the write-ahead logs of the stores that pruned, once their pruning is
        committed (a partition's store is committed by the runner after the batch)."""
        waiting = [store for store in self._stores() if store.db.in_transaction]
        for store in self._stores():
            if not store.db.in_transaction:
                store.checkpoint()
        return not waiting

    def _account(self, msg: Incoming) -> list[Out]:
        """Held messages of one visit, re-keyed: into the partition's account store."""
        assert self.partitioned is not None
        raw: RawMessage = msg.value
        store = self.partitioned.get(msg.partition)
        if raw.content_type == SETTLED_CONTENT_TYPE:  # its visit's settlement (``_settled``)
            sent, self._sent = self._sent, None
            if sent is not None and sent[0] is raw.body:  # the body just made, handed back
                event = sent[1]
            else:
                event = ClaimSettled.model_validate_json(raw.body)
            return self._settle(store, event)
        heads, _ = split_held(self.book, raw.body, raw.content_type)
        with store.atomic():  # a message that breaks its account changes nothing
            encounters = self.book.on(store).receive(heads, raw.received_at, raw.source_id)
        self._read("hl7v2")
        return collected(encounters)

    def _settle(self, store: AccountStore, event: ClaimSettled) -> list[Out]:
        """A settlement of the visit's partition into its account store."""
        # Most settlements name an encounter no account of this store billed (an office
        # visit's, read from FHIR or JSON: its id has the same form), and ``settle``
        # writes nothing for them: the savepoint is opened only for one that may write
        # (194.5K -> 181.5K instructions a settlement sent on and read back, callgrind).
        if store.billed(event.encounter_id):
            with store.atomic():
                store.settle(event)
        self._sweep()
        return []

    def on_batch_done(self) -> None:
        self._count_reads()
        self.seen.commit()
        if self.accounts is not None:
            self.accounts.commit()
        self.retention.committed()

    def on_idle(self) -> Iterable[Out]:
        now = time.time()
        if now - self._pruned_at > PRUNE_EVERY_S:
            self._pruned_at = now
            self.seen.prune(now - self.window_s)
        self.retention.committed()  # a partition's prune, committed after its batch
        self._sweep()  # a partition's prune: produced and committed by the runner after this
        if self.accounts is not None:
            self.accounts.commit()
            self.retention.committed()
        if self.book.bill_hold_s <= 0:
            return []
        stores = (
            [store for _, store in self.partitioned.items()]
            if self.partitioned is not None
            else [self.book.store]
        )
        due: list[Encounter] = []
        for store in stores:
            try:
                with store.atomic():
                    due += self.book.on(store).due(datetime.now(UTC))
            except InputError as exc:
                # An account that no longer reads (the chargemaster changed) stays unbilled.
                log.error("a held account cannot be billed: %s: %s", exc.field, exc.reason)
        return collected(due)

    def close(self) -> None:
        self.seen.close()
        if self.accounts is not None:
            self.accounts.close()


def valid_as_sent(event: ClaimSettled) -> bool:
    """Whether ``ClaimSettled.model_validate_json`` of the event's own JSON accepts it, giving
    back values equal to its own. The event may come from a trusted Avro read (no field
    constraint checked): a value the model refuses (an empty claim id, a status it does not
    know, a field of another type) leaves the body to be validated, and refused, as before.
    tests/unit/test_intake_settled.py holds it to the validation."""
    return (
        type(event.event_id) is str
        and type(event.claim_id) is str
        and event.claim_id != ""
        and (event.encounter_id is None or type(event.encounter_id) is str)
        and type(event.payer_id) is str
        and type(event.status) is str
        and event.status in _SETTLED_STATUSES
        and type(event.posting_event_id) is str
        and type(event.settled_at) is datetime
    )


def collected(encounters: list[Encounter]) -> list[Out]:
    return [Out("encounters.collected.v1", e.encounter_id, e) for e in encounters]


def by_visit(
    held: list[Any], source_id: str, source_system: str | None, received_at: datetime
) -> list[Out]:
    """The held messages of a body, one record per visit keyed by that visit (in order)."""
    visits: dict[str, list[str]] = {}
    for head in held:
        visits.setdefault(head.visit, []).append(head.text)
    return [
        Out(
            BY_VISIT,
            visit_key(visit),
            RawMessage(
                source_id=source_id,
                content_type=HL7_CONTENT_TYPE,
                source_system=source_system,
                body="\r".join(texts).encode(),
                received_at=received_at,
            ),
        )
        for visit, texts in visits.items()
    ]


def partitioned_accounts(
    state_dir: Path, policy: RetentionPolicy | None = None
) -> PartitionedStores[AccountStore]:
    """The live service's hospital accounts: one store per partition of the by-visit topic,
    under ``<state_dir>/accounts/``."""
    return PartitionedStores(
        AccountStore.NAME,
        BY_VISIT,
        Path(state_dir) / AccountStore.NAME,
        lambda path: AccountStore(path, changelog=True, policy=policy),
    )


def main(settings: Settings | None = None) -> None:
    # `claimflow service` reads the environment into the base Settings; this class reads
    # the same environment, plus intake's own variables.
    intake = settings if isinstance(settings, IntakeSettings) else IntakeSettings()
    accounts = partitioned_accounts(intake.state_dir, intake.intake.retention_policy())
    run_stage(IntakeStage(intake, accounts), intake)
