"""claims: validated encounters -> 837 interchanges per payer, delivered -> each interchange
once on claims.interchanges.v1, its claims on claims.submitted.v1;
999/277CA on payer.inbound.v1 -> claims.rejections.v1; remittance.posted.v1 -> the claim to
the next payer.

Postings come keyed by claim id, while what the next payer's claim is built from (the
encounter's submitted claims and its coordination-of-benefits ledger) is kept by the
instance that billed the encounter, i.e. the one reading the encounter's partition of
encounters.validated.v1. So each posting is first re-keyed by its encounter id into
``claims.postings-by-encounter.v1`` (its bytes unchanged; co-partitioned with
encounters.validated.v1) and the next payer is billed from there; settlements, which
start the retention window of what that instance stored, go the same way through
``claims.settled-by-encounter.v1`` (a posting and its settlement each take one hop, so
the posting is still handled first).

This module wires topics to the domain (``billing.py``: batching into interchanges,
numbering, delivery with retries, the next payer, acknowledgments) and reports what it
counted. One consumed batch of clean encounters becomes, per payer and claim type,
interchanges of at most ``max_claims_per_interchange`` claims (the time bound of a batch is
the runner's consume timeout: an interchange waits for at most one poll, 10 ms by default).
See README.md.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from prometheus_client import Counter as MetricCounter

from pipeline import metrics
from pipeline.changelog import changelog_topic
from pipeline.errors import InputError, TransientError
from pipeline.models import PayerFile, utcnow
from pipeline.partitioned import PartitionedStores
from pipeline.serde import registry
from pipeline.settings import Settings
from pipeline.stage import (
    ENCOUNTER_HEADER,
    Incoming,
    Out,
    PassThrough,
    Stage,
    dead_letter,
    reason_of,
    run_stage,
)
from services.claims import metrics as domain_metrics
from services.claims.acks import Ack, RejectionContext, read_ack, rejections
from services.claims.adapters import Router, build_router
from services.claims.billing import (
    Billed,
    Billing,
    Carried,
    ClaimWriter,
    DeliveryFailed,
    Numbered,
    Result,
    acknowledge,
    load_fee_schedule,
)
from services.claims.control import (
    BLOCK_SIZE,
    PartitionNumbers,
    legacy_ceiling,
    number_key,
    owner,
)
from services.claims.corrections import SubmittedClaims
from services.claims.domain import FeeSchedule
from services.claims.retention import Retention
from services.claims.secondary import CobLedger
from services.claims.settings import ClaimsSettings

log = logging.getLogger(__name__)

__all__ = ["ADAPTER_HEADER", "ClaimsStage", "DeliveryFailed", "build_stage", "main"]

ADAPTER_HEADER = "claimflow-adapter"
DELIVERIES = MetricCounter(
    "claimflow_claims_deliveries_total",
    "Interchanges handed to a payer adapter, by adapter and outcome",
    ["adapter", "outcome"],
)


VALIDATED = "encounters.validated.v1"
POSTED = "remittance.posted.v1"
BY_ENCOUNTER = "claims.postings-by-encounter.v1"
SETTLED = "remittance.settled.v1"
SETTLED_BY_ENCOUNTER = "claims.settled-by-encounter.v1"
INBOUND = "payer.inbound.v1"
ACKS = "claims.acks-by-interchange.v1"
#: Topics keyed by encounter id and co-partitioned: a record's partition names its stores.
BY_ENCOUNTER_TOPICS = (VALIDATED, BY_ENCOUNTER, SETTLED_BY_ENCOUNTER, ACKS)
SUBMITTED_STORE = "submitted"
COB_STORE = "cob"
CONTROL_STORE = "control"
#: The store of a single instance before numbers followed partitions (``control.py``).
LEGACY_NUMBERS = "claims-control-numbers.sqlite3"


def encounter_partitions(settings: Settings | None = None) -> int:
    """The partition count of encounters.validated.v1 (``CLAIMFLOW_PARTITIONS``, else
    schemas/topics.yaml), which every topic the stage keeps state by must share: a record
    meets its encounter's stores in the partition of the same number."""
    topics = registry().topics
    if settings is not None and settings.partitions:
        return settings.partitions  # every topic is created with it
    count = topics[VALIDATED].partitions
    for topic in (BY_ENCOUNTER, SETTLED_BY_ENCOUNTER, ACKS):
        if topics[topic].partitions != count:
            raise ValueError(
                f"{topic} must have as many partitions as {VALIDATED} (schemas/topics.yaml)"
            )
    return count


def partition_of(path: Path) -> int:
    """The partition a store file belongs to (``<name>-p<N>.sqlite3``)."""
    return int(path.stem.rpartition("-p")[2])


class ControlChangelog:
    """Writes the control-number changes of the partitions that numbered interchanges to
    their changelog and waits for the broker's acknowledgement, in the middle of a batch:
    before any of those interchanges is delivered. One wait for all of them. Through the
    runner's producer (``Stage.attach``), which produces the rest of the batch's changes
    after it."""

    def __init__(self, settings: ClaimsSettings, producer: Any) -> None:
        self.topic = settings.topic(changelog_topic(ClaimsStage.name, CONTROL_STORE))
        self._producer = producer

    def write(self, stores: Sequence[tuple[PartitionNumbers, int]]) -> None:
        """Each store's changes to its partition of the changelog, acknowledged, and how far
        each store's file now has the changelog (``set_position``)."""
        pending = [(store, partition, store.take_changes()) for store, partition in stores]
        pending = [(store, partition, changes) for store, partition, changes in pending if changes]
        if not pending:
            return
        offsets: dict[int, list[int]] = {partition: [] for _, partition, _ in pending}
        errors: list[str] = []

        def delivered(err: Any, record: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                offsets[record.partition()].append(record.offset())

        for _, partition, changes in pending:
            for key, value in changes:
                while True:
                    try:
                        self._producer.produce(
                            self.topic,
                            key=key.encode(),
                            value=value,
                            partition=partition,
                            on_delivery=delivered,
                        )
                        break
                    except BufferError:
                        self._producer.poll(0.05)
        remaining = self._producer.flush(60)
        short = [p for _, p, changes in pending if len(offsets[p]) != len(changes)]
        if remaining or errors or short:
            raise TransientError(
                f"control numbers of partition(s) {short or [p for _, p, _ in pending]} not "
                f"acknowledged by the changelog: {remaining} waiting, errors {errors[:3]}"
            )
        for store, partition, _ in pending:
            store.set_position(max(offsets[partition]) + 1)


class ClaimsStage(Stage):
    name = "claims"
    inputs = (
        VALIDATED,
        INBOUND,
        ACKS,
        POSTED,
        BY_ENCOUNTER,
        SETTLED,
        SETTLED_BY_ENCOUNTER,
    )
    batch_mode = True
    #: Whether a settlement keyed by encounter is recorded inside a savepoint, as before: it
    #: is one statement (the judge of recording it without one, in the tests).
    settle_in_savepoint = False
    # Remittance names the encounter in a header: the runner forwards those undecoded.
    pass_through = (
        PassThrough(POSTED, BY_ENCOUNTER, ENCOUNTER_HEADER),
        PassThrough(SETTLED, SETTLED_BY_ENCOUNTER, ENCOUNTER_HEADER),
    )

    def prime_metrics(self) -> None:
        domain_metrics.prime()

    def observe(self, topic: str, value: Any, source: Any) -> None:
        domain_metrics.observe(topic, value, source)

    def __init__(
        self,
        settings: ClaimsSettings,
        fee_schedule: FeeSchedule | None,
        router: Router,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        options = settings.claims
        self.writer = ClaimWriter.from_settings(settings, fee_schedule)
        log.info("master data: %s", self.writer.master.describe())
        self.writer.check()
        self._router = router
        self._sleep = sleep
        #: Set when the runner attaches its producer; without one (tests, one-off tools)
        #: the control numbers are committed to the partition's file before delivery.
        self.changelog: ControlChangelog | None = None
        # What the stage keeps per encounter follows the encounter's partition: one
        # corrections store, one COB ledger and one control-number store per partition of
        # encounters.validated.v1 (postings and settlements come re-keyed by encounter,
        # acknowledgments by interchange control number, onto co-partitioned topics),
        # restored from their changelogs by the runner on assignment.
        state = Path(settings.state_dir)
        self.partitions = encounter_partitions(settings)
        floor = (options.control_number_block + 1) * BLOCK_SIZE
        legacy_ceiling(state / LEGACY_NUMBERS, floor)
        self.control_stores = PartitionedStores(
            CONTROL_STORE,
            VALIDATED,
            state / f"claims-{CONTROL_STORE}",
            lambda path: PartitionNumbers(
                path, partition=partition_of(path), partitions=self.partitions, floor=floor
            ),
        )
        self.submitted_stores = PartitionedStores(
            SUBMITTED_STORE,
            VALIDATED,
            state / f"claims-{SUBMITTED_STORE}",
            lambda path: SubmittedClaims(path, changelog=True),
        )
        self.cob_stores = PartitionedStores(
            COB_STORE,
            VALIDATED,
            state / f"claims-{COB_STORE}",
            lambda path: CobLedger(path, changelog=True),
        )
        self._billing: dict[int, Billing[Incoming]] = {}
        # What acknowledgments counted, reported after each batch (``_report``). Not
        # ``outcomes``: that is ``Stage.outcomes``, the labels primed at start-up.
        self.ack_outcomes: Counter[str] = Counter()
        # Retention: a settled claim's stored payloads are pruned after their window.
        self.retention = Retention(
            options.retention_policy(), sweep_every_s=options.retention_sweep_s
        )

    def partitioned_stores(self) -> Sequence[PartitionedStores[Any]]:
        return (self.submitted_stores, self.cob_stores, self.control_stores)

    def attach(self, producer: Any) -> None:
        self.changelog = ControlChangelog(self.settings, producer)

    def numbers(self, partition: int) -> PartitionNumbers:
        """The control numbers and interchanges of one partition."""
        return self.control_stores.open(partition)

    def billing(self, partition: int) -> Billing[Incoming]:
        """The billing of one partition of encounters.validated.v1: its own corrections
        store and COB ledger (opened here when no runner has: one-process use, tests)."""
        submitted = self.submitted_stores.open(partition)
        cob = self.cob_stores.open(partition)
        control = self.numbers(partition)
        billing = self._billing.get(partition)
        if (
            billing is None
            or billing.submitted is not submitted
            or billing.cob is not cob
            or billing.store is not control
        ):
            options = self.settings.claims
            billing = Billing(
                self.writer,
                control,
                self._router,
                submitted,
                cob,
                max_per_interchange=options.max_claims_per_interchange,
                retry=options.retry_policy(),
                sleep=self._sleep,
                secure=lambda: self._secure([(control, partition)]),
            )
            self._billing[partition] = billing
        return billing

    def _secure(self, stores: Sequence[tuple[PartitionNumbers, int]]) -> None:
        """Before an interchange is delivered: the numbers and interchanges just allocated
        (by each partition of ``stores``) go to the partitions' changelog (acknowledged, one
        wait for all) and to their files, so neither this instance after a restart nor the
        next owner of a partition can number anything again under them (``control.py``)."""
        if self.changelog is not None:
            self.changelog.write(stores)
        for control, _ in stores:
            control.commit()

    def _finish(
        self, numbered: list[tuple[int, Billing[Incoming], Numbered[Incoming]]]
    ) -> list[Out]:
        """The calls of several partitions' billings numbered: what they allocated secured
        at once, then each partition's interchanges delivered, in partition order."""
        built = [(self.numbers(p), p) for p, _, n in numbered if n.built]
        if built:
            self._secure(built)
        outs: list[Out] = []
        for _, billing, calls in numbered:
            outs += self._outs(billing.deliver_all(calls))
        return outs

    def _billings(self) -> list[Billing[Incoming]]:
        """The billing of every partition whose stores are open here."""
        return [b for _, b in self._open()]

    def _open(self) -> list[tuple[int, Billing[Incoming]]]:
        """Each partition whose stores are open here, with its billing."""
        return [(p, self.billing(p)) for p, _ in self.submitted_stores.items()]

    @property
    def submitted(self) -> SubmittedClaims:
        """The corrections store, for a caller with one partition (tests, one-off tools)."""
        [(_, store)] = self.submitted_stores.items()
        return store

    @property
    def router(self) -> Router:
        return self._router

    @router.setter
    def router(self, router: Router) -> None:
        self._router = router
        for billing in self._billing.values():
            billing.router = router

    def handle_batch(self, msgs: list[Incoming]) -> Iterable[Out]:
        # Acknowledgments first: they answer claims sent in earlier batches, and a verdict in
        # this batch must see a front-end rejection of its encounter's claim.
        outs: list[Out] = []
        for msg in msgs:
            if msg.topic == INBOUND:
                try:
                    outs += self._route_acknowledgment(msg)
                except Exception as exc:  # noqa: BLE001 - one bad payer file must not stop us
                    outs.append(self._dead(msg, exc))
            elif msg.topic == ACKS:
                try:
                    outs += self._acknowledge(msg.partition, msg.value, read_ack(msg.value))
                except Exception as exc:  # noqa: BLE001 - one bad payer file must not stop us
                    outs.append(self._dead(msg, exc))
        # Verdicts, postings and settlements by encounter: each partition with its stores.
        # The verdicts of every partition are numbered first, then secured with one wait
        # for the changelog, then delivered (and the postings' next payers the same way).
        numbered = []
        for partition, billing in self._by_partition(msgs):
            bills = [
                (m, m.value) for m in msgs if m.topic == VALIDATED and m.partition == partition
            ]
            if bills:
                numbered.append(
                    (partition, billing, billing.number_bills(bills, lambda m: m.raw or None))
                )
        outs += self._finish(numbered)
        # Postings and settlements go to the partition of their encounter, whose instance
        # billed it (without an encounter: no next payer, and settled where it is).
        for topic, by_encounter in ((POSTED, BY_ENCOUNTER), (SETTLED, SETTLED_BY_ENCOUNTER)):
            outs += [
                Out(by_encounter, m.value.encounter_id, m.value, m.headers, raw=m.raw)
                for m in msgs
                if m.topic == topic and m.value.encounter_id
            ]
        numbered = []
        for partition, billing in self._by_partition(msgs):
            postings = [
                (m, m.value) for m in msgs if m.topic == BY_ENCOUNTER and m.partition == partition
            ]
            if postings:
                numbered.append(
                    (
                        partition,
                        billing,
                        billing.number_next_payers(postings, lambda m: m.raw or None),
                    )
                )
        outs += self._finish(numbered)
        settled = [m for m in msgs if m.topic == SETTLED_BY_ENCOUNTER]
        outs += self._retain(
            settled, [m for m in msgs if m.topic == SETTLED and not m.value.encounter_id]
        )
        self._report()
        return outs

    def _route_acknowledgment(self, msg: Incoming) -> list[Out]:
        """A 999 or 277CA, to the partition of each interchange it answers: handled here
        when this instance holds that partition, else forwarded (its bytes unchanged, keyed
        by the control number: ``control.owner``); anything else a payer sends here (835s)
        is remittance's."""
        file = msg.value
        if file.kind not in ("999", "277CA"):
            return []
        # Read once: the partitions held here match it from the same reading.
        ack = read_ack(file)
        numbers = ack.numbers if ack is not None else ()
        if not numbers:
            # Unreadable: the reader's error. Readable, but naming no interchange: say so.
            rejections(file, RejectionContext(lambda _: [], lambda _: None, utcnow()))
            where = "AK1-02" if file.kind == "999" else "TRN02 (loop 2200B)"
            raise InputError(
                where,
                f"the {file.kind} names no interchange control number, so it cannot be "
                "matched to the claims it answers",
            )
        first: dict[int, int] = {}
        for number in numbers:
            first.setdefault(owner(number, self.partitions), number)
        held = {partition for partition, _ in self.control_stores.items()}
        outs: list[Out] = []
        for partition, number in first.items():
            if partition in held:  # this instance reads that partition: no hop needed
                outs += self._acknowledge(partition, file, ack)
            else:
                outs.append(Out(ACKS, number_key(number), file, msg.headers, raw=msg.raw))
        return outs

    def _acknowledge(self, partition: int, file: PayerFile, ack: Ack | None = None) -> list[Out]:
        """A 999 or 277CA matched by the partition that numbered its interchange (``ack``:
        the file as ``read_ack`` read it; None: it cannot be read, ``rejections`` says why)."""
        billing = self.billing(partition)
        numbers = self.numbers(partition)  # billing.store, as a partition's store (``owns``)
        found = acknowledge(
            file, numbers, [billing.submitted], self.ack_outcomes, numbers.owns, ack
        )
        return [Out("claims.rejections.v1", r.claim_id, r) for r in found]

    def _by_partition(self, msgs: Sequence[Incoming]) -> list[tuple[int, Billing[Incoming]]]:
        """The billing of each partition of the encounter-keyed topics in ``msgs``."""
        parts = sorted({m.partition for m in msgs if m.topic in BY_ENCOUNTER_TOPICS})
        return [(p, self.billing(p)) for p in parts]

    def on_idle(self) -> Iterable[Out]:
        if self.retention.due():
            self._retain([], [])
            self.on_batch_done()  # between batches: nothing else is in the transaction
        return []

    def _retain(self, settled: Sequence[Incoming], unkeyed: Sequence[Incoming]) -> list[Out]:
        """Settlements recorded, then what is past its retention window pruned. A settlement
        without an encounter is recorded in every corrections store held here (only the one
        that holds its claim ever reads it back)."""
        outs: list[Out] = []
        for msg in [*settled, *unkeyed]:
            keyed = msg.topic == SETTLED_BY_ENCOUNTER
            if keyed and not self.settle_in_savepoint:
                # One store, one statement (``Retention.settle``): all or nothing by itself,
                # without a savepoint and its two statements around it.
                try:
                    self.retention.settle(self.billing(msg.partition).submitted, msg.value)
                except Exception as exc:  # noqa: BLE001 - every failure of one input is routed
                    outs.append(self._dead(msg, exc))
                continue
            stores = (
                [self.billing(msg.partition).submitted]
                if keyed
                else [b.submitted for b in self._billings()]
            )
            try:
                with ExitStack() as atomic:
                    for store in stores:
                        atomic.enter_context(store.atomic())
                        self.retention.settle(store, msg.value)
            except Exception as exc:  # noqa: BLE001 - every failure of one input is routed
                outs.append(self._dead(msg, exc))
        if self.retention.due():
            parts = [(b.submitted, b.cob, self.numbers(p)) for p, b in self._open()]
            if pruned := self.retention.sweep(parts):
                metrics.OUTCOMES.labels(self.name, "retention_pruned").inc(pruned)
        return outs

    def on_batch_done(self) -> None:
        for stores in self.partitioned_stores():
            stores.commit()  # the runner commits them too; here for callers without one
        self.retention.committed()

    def close(self) -> None:
        for stores in self.partitioned_stores():
            stores.close_all()

    def _outs(self, results: list[Result[Incoming]]) -> list[Out]:
        """Each interchange on claims.interchanges.v1, each claim on claims.submitted.v1 (its
        adapter in a header), a refusal a dead letter."""
        outs: list[Out] = []
        for r in results:
            if isinstance(r, Carried):
                icn = r.interchange.interchange_control_number
                outs.append(Out("claims.interchanges.v1", icn, r.interchange))
            elif isinstance(r, Billed):
                headers = {ADAPTER_HEADER: r.adapter.encode()}
                outs.append(Out("claims.submitted.v1", r.claim.claim_id, r.claim, headers))
            else:
                outs.append(self._dead(r.source, r.error))
        return outs

    def _report(self) -> None:
        """What the domain counted, to Prometheus."""
        for outcomes, deliveries in [
            (self.ack_outcomes, None),
            *((b.outcomes, b.deliveries) for b in self._billing.values()),
        ]:
            for outcome, n in outcomes.items():
                metrics.OUTCOMES.labels(self.name, outcome).inc(n)
            outcomes.clear()
            for (adapter, outcome), n in (deliveries or {}).items():
                DELIVERIES.labels(adapter, outcome).inc(n)
            if deliveries is not None:
                deliveries.clear()

    def _dead(self, msg: Incoming, exc: Exception) -> Out:
        letter = dead_letter(self.name, msg, exc)  # raises for a failing state volume
        metrics.DEAD_LETTERS.labels(self.name, type(exc).__name__).inc()
        log.info(
            "input sent to the dead-letter topic",
            extra={"topic": msg.topic, "offset": msg.offset, "reason": reason_of(exc)[:300]},
        )
        return letter


def build_stage(settings: ClaimsSettings) -> ClaimsStage:
    """The stage with its fee schedule, payer adapters and control-number changelog."""
    router = build_router(settings.claims.routes, settings.claims.adapters, settings.state_dir)
    return ClaimsStage(settings, load_fee_schedule(settings), router)


def main(settings: Settings | None = None) -> None:
    claims_settings = ClaimsSettings.from_base(settings or Settings())
    run_stage(build_stage(claims_settings), claims_settings)
