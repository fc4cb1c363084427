"""claims: validated encounters -> 837 interchanges per payer, delivered -> claims.submitted.v1;
999/277CA on payer.inbound.v1 -> claims.rejections.v1.

One consumed batch of clean encounters becomes, per payer and claim type, interchanges of
at most ``max_claims_per_interchange`` claims (the time bound of a batch is the runner's
consume timeout: an interchange waits for at most one poll, 10 ms by default). Each gets
the next control number from the durable store before it is delivered through the
payer's adapter; then one claims.submitted.v1 event per claim carries it. See README.md.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client import Counter

from pipeline import metrics
from pipeline.errors import InputError
from pipeline.models import (
    ClaimRejection,
    DeadLetter,
    RemittancePosting,
    ValidatedEncounter,
    utcnow,
)
from pipeline.settings import Settings
from pipeline.stage import Incoming, Out, Stage, dead_letter, reason_of, run_stage
from services.claims import metrics as domain_metrics
from services.claims.acks import RejectionContext, rejections
from services.claims.adapters import DeliveryMeta, Router, build_router
from services.claims.control import ClaimRef, ControlNumbers, StoredInterchange
from services.claims.corrections import SubmittedClaims
from services.claims.delivery import deliver_with_retries
from services.claims.domain import (
    FeeSchedule,
    PlannedClaim,
    encounter_field,
    envelope_for,
    in_validated_record,
    interchange_record,
    submitted_claim,
    write_interchange,
)
from services.claims.retention import Retention
from services.claims.secondary import (
    CobLedger,
    coverages_of,
    next_claim,
    part_key,
    position_of,
    primary_claim_id,
)
from services.claims.settings import ClaimsSettings
from services.claims.x12_837_common import ClaimError
from services.refdata.masterdata import load_master_data
from services.x12.writer import ident

log = logging.getLogger(__name__)

ADAPTER_HEADER = "claimflow-adapter"
DELIVERIES = Counter(
    "claimflow_claims_deliveries_total",
    "Interchanges handed to a payer adapter, by adapter and outcome",
    ["adapter", "outcome"],
)


class DeliveryFailed(Exception):
    """Every delivery attempt of the interchange that carried this claim failed."""


Item = tuple[Incoming, PlannedClaim]


class ClaimsStage(Stage):
    name = "claims"
    inputs = (
        "encounters.validated.v1",
        "payer.inbound.v1",
        "remittance.posted.v1",
        "remittance.settled.v1",
    )
    batch_mode = True

    def prime_metrics(self) -> None:
        domain_metrics.prime()

    def observe(self, topic: str, value: Any, source: Any) -> None:
        domain_metrics.observe(topic, value, source)

    def __init__(
        self,
        settings: ClaimsSettings,
        fee_schedule: FeeSchedule | None,
        store: ControlNumbers,
        router: Router,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.options = settings.claims
        self.fee_schedule = fee_schedule
        self.master = load_master_data(settings, wage_index=True)
        log.info("master data: %s", self.master.describe())
        self.store = store
        self.router = router
        self.sleep = sleep
        self._not_sent: set[str] = set()  # claims of the batch gone to the dead-letter topic
        # Corrections hook: the claim last submitted per encounter (services/claims/corrections.py)
        self.submitted = SubmittedClaims.in_state_dir(settings.state_dir)
        # Coordination of benefits: each payer's adjudication, the next payers billed.
        self.cob = CobLedger.in_state_dir(settings.state_dir)
        # Retention: a settled claim's stored payloads are pruned after their window.
        self.retention = Retention(
            self.submitted,
            self.cob,
            store,
            self.options.retention_policy(),
            sweep_every_s=self.options.retention_sweep_s,
        )
        # Fail at start-up, not on the first claim, when the envelope ids cannot be written.
        ident(settings.sender_id, "CLAIMFLOW_SENDER_ID", min_len=2, max_len=15)
        ident(settings.receiver_id, "CLAIMFLOW_RECEIVER_ID", min_len=2, max_len=15)

    def handle_batch(self, msgs: list[Incoming]) -> Iterable[Out]:
        # Acknowledgments first: they answer claims sent in earlier batches, and a verdict in
        # this batch must see a front-end rejection of its encounter's claim.
        outs: list[Out] = []
        for msg in msgs:
            if msg.topic == "payer.inbound.v1":
                try:
                    outs.extend(self._acknowledgment(msg))
                except Exception as exc:  # noqa: BLE001 - one bad payer file must not stop us
                    outs.append(self._dead(msg, exc))
        bills = [m for m in msgs if m.topic == "encounters.validated.v1"]
        if bills:
            outs.extend(self._submit(bills))
        postings = [m for m in msgs if m.topic == "remittance.posted.v1"]
        if postings:
            outs.extend(self._bill_next_payers(postings))
        outs.extend(self._retain([m for m in msgs if m.topic == "remittance.settled.v1"]))
        return outs

    def on_idle(self) -> Iterable[Out]:
        if self.retention.due():
            self._retain([])
            self.on_batch_done()  # between batches: nothing else is in the transaction
        return []

    def _retain(self, settled: Sequence[Incoming]) -> list[Out]:
        """Settlements recorded, then what is past its retention window pruned."""
        outs: list[Out] = []
        for msg in settled:
            try:
                with self.submitted.atomic():
                    self.retention.settle(msg.value)
            except Exception as exc:  # noqa: BLE001 - every failure of one input is routed
                outs.append(self._dead(msg, exc))
        if self.retention.due() and (pruned := self.retention.sweep()):
            metrics.OUTCOMES.labels(self.name, "retention_pruned").inc(pruned)
        return outs

    def on_batch_done(self) -> None:
        self.submitted.commit()  # corrections hook
        self.cob.commit()
        self.retention.committed()

    def close(self) -> None:
        self.store.close()
        self.submitted.close()  # corrections hook
        self.cob.close()

    # --- coordination of benefits: the next payer after a posted 835 ----------------------------

    def _bill_next_payers(self, msgs: Sequence[Incoming]) -> list[Out]:
        """Claims to secondary and tertiary payers, from the postings of the payers before."""
        outs: list[Out] = []
        unique: dict[str, Item] = {}
        billed: dict[int, tuple[str, int]] = {}
        for msg in msgs:
            try:
                with self.cob.atomic():
                    found = self._next_claim(msg.value)
            except Exception as exc:  # noqa: BLE001 - every failure of one input is routed
                outs.append(self._dead(msg, exc))
                continue
            if found is not None:
                planned, position, key = found
                unique.setdefault(planned.event_id, (msg, planned))
                billed[id(msg)] = (key, position)
        outs += self._send(unique)
        dead = {
            (o.value.source_topic, o.value.source_partition, o.value.source_offset)
            for o in outs
            if isinstance(o.value, DeadLetter)
        }
        for msg in msgs:  # a claim that went to the dead-letter topic is billed on a resend
            if (msg.topic, msg.partition, msg.offset) in dead and id(msg) in billed:
                self.cob.unmark_billed(*billed[id(msg)])
        return outs

    def _next_claim(self, posting: RemittancePosting) -> tuple[PlannedClaim, int, str] | None:
        """The claim to the payer after the one that posted, with its position, or None."""
        if posting.encounter_id is None:
            return None
        if posting.payer_claim_control_number and posting.status != "reversed":
            # Corrections hook: a corrected claim (7) or a void (8) refers to the payer's
            # number for the claim it replaces, which the 835 gives (CLP07).
            self.submitted.set_payer_claim_control_number(
                posting.claim_id, posting.payer_claim_control_number
            )
        # The claim the payer answered is one part of the encounter (its claim, or, for a
        # facility stay with a physician's services, the facility's or the physician's).
        key = part_key(posting.encounter_id, primary_claim_id(posting.claim_id))
        prior = self.submitted.prior(key) if key is not None else None
        if prior is None:
            metrics.OUTCOMES.labels(self.name, "cob_unknown_encounter").inc()
            return None
        verdict = prior.billed
        position = position_of(posting.payer_id, coverages_of(verdict, self.master))
        if position is None:
            metrics.OUTCOMES.labels(self.name, "cob_unknown_payer").inc()
            return None
        encounter_id = key  # the CobLedger keeps each part's payers apart
        self.cob.record(encounter_id, position, posting)
        if self.cob.billed(encounter_id, position + 1) is not None:
            return None  # a redelivered or corrected posting: the next payer is billed
        earlier = self.cob.earlier(encounter_id, position)
        found = next_claim(posting, verdict, prior.claim_id, earlier, self.master)
        if found.planned is None:
            metrics.OUTCOMES.labels(self.name, "cob_not_billed").inc()
            log.debug("no claim to the next payer", extra={"why": found.reason})
            return None
        metrics.OUTCOMES.labels(self.name, f"cob_billed_{position + 1}").inc()
        self.cob.mark_billed(encounter_id, position + 1, found.planned.claim_id)
        return found.planned, position + 1, encounter_id

    # --- billing ------------------------------------------------------------------------------

    def claims_for(self, msg: Incoming) -> list[PlannedClaim]:
        """The claims one validated encounter asks for: its original the first time, a
        replacement (7) or void (8) when a billed encounter's verdict changes, else none."""
        validated = msg.value
        # Corrections hook (services/claims/corrections.py): never a second original.
        planned = self.submitted.claims_for(
            validated,
            fee_schedule=self.fee_schedule,
            drg_base_rate=self.options.drg_base_rate,
            master=self.master,
        )
        if not planned:
            label = "not_billed_rejected" if validated.outcome == "rejected" else "unchanged"
            metrics.OUTCOMES.labels(self.name, label).inc()
        return planned

    def _submit(self, msgs: Sequence[Incoming]) -> list[Out]:
        outs: list[Out] = []
        unique: dict[str, Item] = {}
        # What the corrections store said before each verdict, to undo it for a dead letter.
        before: dict[int, list[tuple[object, ...]]] = {}
        self._not_sent = set()
        for msg in msgs:
            before[id(msg)] = self.submitted.snapshot(msg.value.encounter_id)
            try:
                for planned in self.claims_for(msg):
                    unique.setdefault(planned.event_id, (msg, planned))  # a repeat in the batch
            except Exception as exc:  # noqa: BLE001 - every failure of one input is routed
                outs.append(self._dead(msg, exc))
        outs += self._send(unique)
        # A verdict whose claim went to the dead-letter topic was not answered: sending it
        # again (from the dead letter, or a new validation) must bill it then.
        dead_keys = {
            (o.value.source_topic, o.value.source_partition, o.value.source_offset)
            for o in outs
            if isinstance(o.value, DeadLetter)
        }
        for msg in reversed(msgs):
            if (msg.topic, msg.partition, msg.offset) in dead_keys:
                # Only the claims that did not go out: an encounter's other claim (the
                # facility's 837I beside a refused 837P) was sent and stays on record.
                planned = [p for m, p in unique.values() if m is msg]
                sent = {p.claim_id for p in planned} - self._not_sent
                self.submitted.restore(msg.value, before[id(msg)], keep=sent)
        return outs

    def _send(self, unique: dict[str, Item]) -> list[Out]:
        """Number, write, deliver and publish planned claims (each claim event once)."""
        outs: list[Out] = []
        assigned = self.store.assigned(unique)
        replayed: dict[int, list[Item]] = defaultdict(list)
        fresh: dict[tuple[str, str], list[Item]] = defaultdict(list)
        for eid, item in unique.items():
            if eid in assigned:
                replayed[assigned[eid]].append(item)
            else:
                fresh[(item[1].payer_id, item[1].claim_type)].append(item)
        for icn, items in replayed.items():
            stored = self.store.interchange(icn)
            if stored is not None:
                outs += self._deliver(stored, items)
        for (payer_id, _claim_type), items in fresh.items():
            adapter = self.router.adapter_for(payer_id)
            if adapter is None:
                reason = (
                    f"no payer route for {payer_id!r}: add it (or '*') to CLAIMFLOW_CLAIMS__ROUTES"
                )
                outs += [self._dead_claim(it, InputError("payer_id", reason)) for it in items]
                continue
            for chunk in self._chunks(items):
                outs += self._interchange(chunk, adapter.name)
        return outs

    def _chunks(self, items: list[Item]) -> Iterable[list[Item]]:
        """At most ``max_claims_per_interchange`` claims, and a claim id once per interchange."""
        chunk: list[Item] = []
        ids: set[str] = set()
        for item in items:
            if len(chunk) >= self.options.max_claims_per_interchange or item[1].claim_id in ids:
                yield chunk
                chunk, ids = [], set()
            chunk.append(item)
            ids.add(item[1].claim_id)
        if chunk:
            yield chunk

    def _interchange(self, items: list[Item], adapter: str) -> list[Out]:
        """Number, write and store one interchange; a claim that cannot be written is set aside."""
        outs: list[Out] = []
        while items:
            planned = [p for _, p in items]
            first = planned[0]
            try:
                stored = self.store.allocate(
                    [ClaimRef(p.event_id, p.claim_id, p.encounter_id) for p in planned],
                    payer_id=first.payer_id,
                    claim_type=first.claim_type,
                    adapter=adapter,
                    build=self._writer(planned),
                )
            except ClaimError as exc:
                prefix = f"claims[{exc.claim_id}]."
                error = in_validated_record(InputError(exc.field.removeprefix(prefix), exc.reason))
                bad = [it for it in items if it[1].claim_id == exc.claim_id]
                outs += [self._dead_claim(it, error) for it in bad]
                items = [it for it in items if it[1].claim_id != exc.claim_id]
                continue
            except InputError as exc:
                outs += [self._dead_claim(it, in_validated_record(exc)) for it in items]
                return outs
            metrics.OUTCOMES.labels(self.name, f"interchange_{first.claim_type}").inc()
            return outs + self._deliver(stored, items)
        return outs

    def _writer(self, planned: list[PlannedClaim]) -> Callable[[int], str]:
        """Writes ``planned`` under the control number the store hands out."""

        sender_id, receiver_id, receiver_name = self._envelope(planned[0].payer_id)

        def write(number: int) -> str:
            return write_interchange(
                planned,
                sender_id=sender_id,
                receiver_id=receiver_id,
                control_number=number,
                usage=self.options.usage,
                receiver_name=receiver_name,
                pay_to=self.master.providers.pay_to,
            )

        return write

    def _envelope(self, payer_id: str) -> tuple[str, str, str | None]:
        return envelope_for(
            self.master, payer_id, self.settings.sender_id, self.settings.receiver_id
        )

    def _deliver(self, stored: StoredInterchange, items: list[Item]) -> list[Out]:
        """Deliver unless already delivered, then one claim event per claim of this batch."""
        if stored.status != "delivered":
            adapter = self.router.adapters.get(stored.adapter) or self.router.adapter_for(
                stored.payer_id
            )
            meta = DeliveryMeta(
                payer_id=stored.payer_id,
                control_number=stored.icn,
                claim_type=stored.claim_type,
                claim_ids=tuple(c.claim_id for c in self.store.claims_of(stored.icn)),
                sender_id=self._envelope(stored.payer_id)[0],
                receiver_id=self._envelope(stored.payer_id)[1],
            )
            if adapter is None:
                reason = f"no payer route for {stored.payer_id!r} (CLAIMFLOW_CLAIMS__ROUTES)"
                self.store.mark(stored.icn, "dead", reason)
                return [self._dead_claim(it, DeliveryFailed(reason)) for it in items]
            started = time.perf_counter()
            outcome = deliver_with_retries(
                adapter,
                stored.text.encode("ascii"),
                meta,
                self.options.retry_policy(),
                sleep=self.sleep,
            )
            if outcome.receipt is None:
                self.store.mark(stored.icn, "dead", outcome.reason())
                DELIVERIES.labels(adapter.name, "failed").inc()
                log.warning(
                    "interchange not delivered; its claims go to the dead-letter topic",
                    extra={"icn": stored.icn, "adapter": adapter.name, "why": outcome.reason()},
                )
                return [self._dead_claim(it, DeliveryFailed(outcome.reason())) for it in items]
            self.store.mark(stored.icn, "delivered", outcome.receipt.describe())
            DELIVERIES.labels(adapter.name, "delivered").inc()
            log.info(
                "interchange delivered",
                extra={
                    "icn": stored.icn,
                    "adapter": adapter.name,
                    "claims": len(meta.claim_ids),
                    "attempts": outcome.attempts,
                    "seconds": round(time.perf_counter() - started, 3),
                },
            )
        headers = {ADAPTER_HEADER: stored.adapter.encode()}
        # A claim check: the interchange once (again on a replay: the same event id), then
        # each claim's event naming it by control number instead of carrying its text.
        interchange = interchange_record(
            stored.icn,
            payer_id=stored.payer_id,
            claim_type=stored.claim_type,
            adapter=stored.adapter,
            claim_ids=[c.claim_id for c in self.store.claims_of(stored.icn)],
            x12=stored.text,
            created_at=min(planned.submitted_at for _, planned in items),
        )
        return [
            Out("claims.interchanges.v1", interchange.interchange_control_number, interchange),
            *(
                Out(
                    "claims.submitted.v1",
                    planned.claim_id,
                    submitted_claim(planned, stored.icn, None),
                    headers,
                )
                for _, planned in items
            ),
        ]

    # --- acknowledgments ------------------------------------------------------------------------

    def _acknowledgment(self, msg: Incoming) -> list[Out]:
        """999 and 277CA rejections -> claims.rejections.v1 (835s are remittance's)."""
        file = msg.value
        if file.kind not in ("999", "277CA"):
            return []

        def claims_of_group(group: str) -> list[tuple[str, str]]:
            if not group.isdigit():
                return []
            return [(c.claim_id, c.encounter_id) for c in self.store.claims_of(int(group))]

        ctx = RejectionContext(claims_of_group, self.store.encounter_of, utcnow())
        found = rejections(file, ctx)
        with self.submitted.atomic():  # all of this file's writes or none (a dead letter)
            for claim_id, number in ctx.payer_claim_numbers.items():
                # Corrections hook: 7s and 8s refer to the payer's claim number once it is known.
                self.submitted.set_payer_claim_control_number(claim_id, number)
            for rejection in found:
                # Corrections hook: a refused claim was never in adjudication; its fix goes
                # out as a new original, not as a replacement of it.
                self.submitted.record_rejection(rejection, self._refused_events(rejection))
        if ctx.unknown_groups:
            # Not ours (another claims instance's block, or a store that was lost): say so.
            log.warning(
                "999 rejects a group this service did not send",
                extra={"groups": ctx.unknown_groups[:5], "file_id": file.file_id},
            )
            metrics.OUTCOMES.labels(self.name, "ack_unknown_group").inc()
        for rejection in found:
            metrics.OUTCOMES.labels(self.name, f"payer_rejected_{rejection.source}").inc()
        return [Out("claims.rejections.v1", r.claim_id, r) for r in found]

    def _refused_events(self, rejection: ClaimRejection) -> list[str]:
        """The claim events a rejection refuses, when it names their interchange (a 999)."""
        icn = rejection.interchange_control_number
        if icn is None or not icn.isdigit():
            return []
        return [
            c.event_id for c in self.store.claims_of(int(icn)) if c.claim_id == rejection.claim_id
        ]

    def _dead_claim(self, item: Item, exc: Exception) -> Out:
        """A planned claim that was not written or delivered: its input to the dead-letter
        topic, the reason naming the claim (an encounter may bill two), and the claim noted
        so that only its part of the corrections store is undone (``_submit``)."""
        msg, planned = item
        self._not_sent.add(planned.claim_id)
        which = f"{planned.claim_type} claim {planned.claim_id}"
        if isinstance(exc, InputError):
            field = exc.field
            if isinstance(msg.value, ValidatedEncounter):
                field = encounter_field(msg.value, planned.claim_type, field)
            exc = InputError(field, f"{exc.reason} ({which})")
        elif isinstance(exc, DeliveryFailed):
            exc = DeliveryFailed(f"{exc} ({which})")
        return self._dead(msg, exc)

    def _dead(self, msg: Incoming, exc: Exception) -> Out:
        letter = dead_letter(self.name, msg, exc)  # raises for a failing state volume
        metrics.DEAD_LETTERS.labels(self.name, type(exc).__name__).inc()
        log.info(
            "input sent to the dead-letter topic",
            extra={"topic": msg.topic, "offset": msg.offset, "reason": reason_of(exc)[:300]},
        )
        return letter


def load_fee_schedule(settings: Settings) -> FeeSchedule | None:
    if settings.refdata_dir is None:
        log.warning("no CLAIMFLOW_REFDATA_DIR: expected reimbursement is off (null on claims)")
        return None
    from services.refdata.fee_schedule import FeeSchedule

    return FeeSchedule.load(settings.refdata_dir)


def build_stage(settings: ClaimsSettings) -> ClaimsStage:
    """The stage with its fee schedule, control-number store and payer adapters."""
    store = ControlNumbers(
        settings.state_dir / "claims-control-numbers.sqlite3",
        block=settings.claims.control_number_block,
    )
    router = build_router(settings.claims.routes, settings.claims.adapters, settings.state_dir)
    return ClaimsStage(settings, load_fee_schedule(settings), store, router)


def main(settings: Settings | None = None) -> None:
    claims_settings = ClaimsSettings.from_base(settings or Settings())
    run_stage(build_stage(claims_settings), claims_settings)
