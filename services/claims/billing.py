"""The claims stage's domain, without Kafka: what the service and the offline commands call.

- ``ClaimWriter``: who the 837s are from and to, and how they are priced (fee schedule,
  DRG base rate, payer registry): plans the claims of a verdict and writes an interchange
  under a control number. ``claimflow claims build`` writes each claim in its own
  interchange (``build``); the service writes them through ``Billing``.
- ``Billing``: verdicts, postings and payers' acknowledgments in, claims out. It batches the
  claims of one payer and claim type into interchanges of at most ``max_per_interchange``
  claims, numbers each from the durable control-number store, delivers it through the
  payer's adapter with retries, bills the next payer after a payer's 835 (coordination of
  benefits) and turns 999/277CA rejections into ``ClaimRejection``s.

``Billing`` works on inputs of any type ``S`` (the service passes its consumed records, a
test plain strings): each result names the input it answers, a ``Billed`` claim or a
``Refused`` input with the error that says why; each interchange delivered comes first,
once, as ``Carried`` (a claim check: the claims name it by control number). What it
counted (outcomes, deliveries per adapter) waits in ``outcomes`` and ``deliveries`` for the
caller to report and clear.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Generic, TypeVar

from pipeline.errors import InputError
from pipeline.models import (
    ClaimRejection,
    Interchange,
    PayerFile,
    RemittancePosting,
    SubmittedClaim,
    ValidatedEncounter,
    utcnow,
)
from pipeline.settings import Settings
from services.claims.acks import Ack, RejectionContext, rejections
from services.claims.adapters import DeliveryMeta, Router
from services.claims.control import ClaimRef, Numbers, StoredInterchange
from services.claims.corrections import Stored, SubmittedClaims
from services.claims.delivery import RetryPolicy, deliver_with_retries
from services.claims.domain import (
    DEFAULT_DRG_BASE_RATE,
    FeeSchedule,
    PlannedClaim,
    build_claims,
    encounter_field,
    envelope_for,
    in_validated_record,
    interchange_record,
    submitted_claim,
    write_interchange,
)
from services.claims.secondary import (
    CobLedger,
    NextClaim,
    bills_none,
    coverages_of,
    last_payer,
    next_claim,
    no_claim,
    part_key,
    position_among,
    position_of,
    primary_claim_id,
)
from services.claims.settings import ClaimsSettings
from services.claims.x12_837_common import ClaimError
from services.refdata.masterdata import MasterData, load_master_data
from services.x12.writer import Usage, ident

log = logging.getLogger(__name__)

S = TypeVar("S")


class DeliveryFailed(Exception):
    """Every delivery attempt of the interchange that carried this claim failed."""


def load_fee_schedule(settings: Settings) -> FeeSchedule | None:
    """The Medicare physician fee schedule from ``CLAIMFLOW_REFDATA_DIR``, or None (said)."""
    if settings.refdata_dir is None:
        log.warning("no CLAIMFLOW_REFDATA_DIR: expected reimbursement is off (null on claims)")
        return None
    from services.refdata.fee_schedule import FeeSchedule

    return FeeSchedule.load(settings.refdata_dir)


@dataclass(frozen=True)
class ClaimWriter:
    """Plans and writes the 837s of one submitter."""

    sender_id: str
    receiver_id: str
    usage: Usage = "P"
    drg_base_rate: Decimal = DEFAULT_DRG_BASE_RATE
    fee_schedule: FeeSchedule | None = None
    master: MasterData = field(default_factory=MasterData)

    @classmethod
    def from_settings(
        cls, settings: ClaimsSettings, fee_schedule: FeeSchedule | None
    ) -> ClaimWriter:
        """The writer the claims settings describe, with the master data they point to."""
        return cls(
            settings.claims.sender_id,
            settings.claims.receiver_id,
            usage=settings.claims.usage,
            drg_base_rate=settings.claims.drg_base_rate,
            fee_schedule=fee_schedule,
            master=load_master_data(settings, wage_index=True),
        )

    def check(self) -> None:
        """Fail at start-up, not on the first claim, when the envelope ids cannot be written."""
        ident(self.sender_id, "CLAIMFLOW_CLAIMS__SENDER_ID", min_len=2, max_len=15)
        ident(self.receiver_id, "CLAIMFLOW_CLAIMS__RECEIVER_ID", min_len=2, max_len=15)

    def envelope(self, payer_id: str) -> tuple[str, str, str | None]:
        """(sender id, receiver id, receiver name) of an interchange to this payer."""
        return envelope_for(self.master, payer_id, self.sender_id, self.receiver_id)

    def writer(self, planned: list[PlannedClaim]) -> Callable[[int], str]:
        """Writes ``planned`` (claims of one payer and type) under the number it is given."""
        sender_id, receiver_id, receiver_name = self.envelope(planned[0].payer_id)

        def write(number: int) -> str:
            return write_interchange(
                planned,
                sender_id=sender_id,
                receiver_id=receiver_id,
                control_number=number,
                usage=self.usage,
                receiver_name=receiver_name,
                pay_to=self.master.providers.pay_to,
            )

        return write

    def build(self, validated: ValidatedEncounter) -> list[SubmittedClaim]:
        """Every original claim of one verdict, each in its own interchange numbered from
        its claim id (``claimflow claims build``)."""
        return build_claims(
            validated,
            sender_id=self.sender_id,
            receiver_id=self.receiver_id,
            fee_schedule=self.fee_schedule,
            drg_base_rate=self.drg_base_rate,
            usage=self.usage,
            master=self.master,
        )


@dataclass(frozen=True)
class Billed(Generic[S]):
    """A claim sent for ``source``, through the adapter ``adapter``."""

    source: S
    claim: SubmittedClaim
    adapter: str


@dataclass(frozen=True)
class Carried:
    """An interchange delivered (again, on a replay), before the claims it carries."""

    interchange: Interchange


@dataclass(frozen=True)
class Refused(Generic[S]):
    """An input that could not be answered (for the dead-letter topic), and why."""

    source: S
    error: Exception


Result = Billed[S] | Refused[S] | Carried
Item = tuple[S, PlannedClaim]


@dataclass
class Numbered(Generic[S]):
    """A call's claims numbered, written and stored, not yet delivered: ``built`` the
    numbers of the new interchanges, to secure before any is delivered (the stage secures
    every partition's at once), ``ready`` what to deliver, ``results`` what was refused so
    far, ``undo`` what a refusal undoes once delivery is over."""

    results: list[Result[S]]
    ready: list[tuple[StoredInterchange, list[Item[S]]]]
    built: set[int]
    undo: Callable[[list[Result[S]]], None]


class Billing(Generic[S]):
    """Claims for verdicts and postings: batched, numbered, written, delivered, once each.

    ``submitted`` (the corrections store) and ``cob`` (each payer's adjudication) are
    written as inputs are answered; the caller commits them once the claims are safe
    downstream (``commit``), as the runner does after a batch.
    """

    #: Whether the last payer's posting is stored in the COB ledger too, as before: no later
    #: payer's claim reads it (the judge of storing only the others, in the tests).
    store_last_postings = False
    #: Whether a posting is answered from the payer ids its claim was billed to when those
    #: tell it bills no one (``_bills_none_kept``): False reads the verdict for every
    #: posting, as before (the judge, in the tests).
    payers_kept = True

    def __init__(
        self,
        writer: ClaimWriter,
        store: Numbers,
        router: Router,
        submitted: SubmittedClaims,
        cob: CobLedger,
        *,
        max_per_interchange: int = 25,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        secure: Callable[[], None] | None = None,
    ) -> None:
        self.writer = writer
        #: Makes what ``store`` allocated durable (and, for a partition's store, in its
        #: changelog) before any interchange it numbered is delivered.
        self.secure = secure
        self.store = store
        self.router = router
        self.submitted = submitted
        self.cob = cob
        self.max_per_interchange = max_per_interchange
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self.outcomes: Counter[str] = Counter()
        self.deliveries: Counter[tuple[str, str]] = Counter()  # (adapter, outcome)
        self._not_sent: set[str] = set()  # claims of the call refused (``bill``)
        self._verdict_of: dict[int, ValidatedEncounter] = {}  # input -> its verdict (``bill``)

    def commit(self) -> None:
        self.submitted.commit()
        self.cob.commit()

    def close(self) -> None:
        self.store.close()
        self.submitted.close()
        self.cob.close()

    # --- billing ------------------------------------------------------------------------------

    def claims_for(
        self,
        validated: ValidatedEncounter,
        stored: Stored | None = None,
        encoded: bytes | None = None,
    ) -> list[PlannedClaim]:
        """The claims one verdict asks for: its original the first time, a replacement (7)
        or void (8) when a billed encounter's verdict changes, else none (``stored``: what
        the corrections store holds of it, read just before; ``encoded``: the Avro record
        it was decoded from, which the store keeps as it is)."""
        writer = self.writer
        planned = self.submitted.claims_for(  # never a second original
            validated,
            fee_schedule=writer.fee_schedule,
            drg_base_rate=writer.drg_base_rate,
            master=writer.master,
            stored=stored,
            encoded=encoded,
        )
        if not planned:
            self.outcomes[
                "not_billed_rejected" if validated.outcome == "rejected" else "unchanged"
            ] += 1
        return planned

    def bill(self, verdicts: Sequence[tuple[S, ValidatedEncounter]]) -> list[Result[S]]:
        """The claims of validated encounters; a verdict whose claim is refused is not
        answered (the corrections store forgets it), so sending it again bills it then."""
        return self.finish(self.number_bills(verdicts))

    def number_bills(
        self,
        verdicts: Sequence[tuple[S, ValidatedEncounter]],
        encoded: Callable[[S], bytes | None] | None = None,
    ) -> Numbered[S]:
        """``bill`` up to delivery: the claims planned, numbered and stored (``finish``
        delivers them). ``encoded``: the Avro record a verdict's source carries (the bytes
        the verdict was decoded from), if any."""
        results: list[Result[S]] = []
        unique: dict[str, Item[S]] = {}
        self._not_sent = set()
        self._verdict_of = {id(source): verdict for source, verdict in verdicts}
        # What the corrections store said before each verdict, to undo it for a refusal.
        before: list[list[tuple[object, ...]]] = []
        looked = self.submitted.look_many([verdict for _, verdict in verdicts])
        for (source, verdict), found in zip(verdicts, looked, strict=True):
            # A verdict of an encounter the batch holds twice is read after the first.
            stored = found if found is not None else self.submitted.look(verdict)
            before.append(stored.rows)
            try:
                raw = encoded(source) if encoded is not None else None
                for planned in self.claims_for(verdict, stored, raw):
                    unique.setdefault(planned.event_id, (source, planned))  # a repeat in the batch
            except Exception as exc:  # noqa: BLE001 - every failure of one input is refused
                results.append(Refused(source, exc))

        def undo(results: list[Result[S]]) -> None:
            refused = {id(r.source) for r in results if isinstance(r, Refused)}
            for (source, verdict), snapshot in reversed(list(zip(verdicts, before, strict=True))):
                if id(source) in refused:
                    # Only the claims that did not go out: an encounter's other claim (the
                    # facility's 837I beside a refused 837P) was sent and stays on record.
                    planned = [p for s, p in unique.values() if s is source]
                    sent = {p.claim_id for p in planned} - self._not_sent
                    self.submitted.restore(verdict, snapshot, keep=sent)

        return self.number(unique, results, undo)

    def send(self, unique: dict[str, Item[S]]) -> list[Result[S]]:
        """Number, write, deliver and publish planned claims (each claim event once)."""
        return self.finish(self.number(unique, [], lambda _: None))

    def finish(self, numbered: Numbered[S]) -> list[Result[S]]:
        """Secure what ``numbered`` allocated (``secure``), then deliver it (``deliver_all``)."""
        if numbered.built and self.secure is not None:
            self.secure()  # numbered and stored durably before anything is sent
        return self.deliver_all(numbered)

    def number(
        self,
        unique: dict[str, Item[S]],
        results: list[Result[S]],
        undo: Callable[[list[Result[S]]], None],
    ) -> Numbered[S]:
        """Planned claims (each claim event once) numbered, written and stored, or found in
        the interchange that already carries them; not delivered yet. ``results``: what the
        call refused before; ``undo``: what a refusal undoes once delivery is over."""
        assigned = self.store.assigned({eid: item[1].claim_id for eid, item in unique.items()})
        replayed: dict[int, list[Item[S]]] = defaultdict(list)
        fresh: dict[tuple[str, str], list[Item[S]]] = defaultdict(list)
        for eid, item in unique.items():
            if eid in assigned:
                replayed[assigned[eid]].append(item)
            else:
                fresh[(item[1].payer_id, item[1].claim_type)].append(item)
        ready: list[tuple[StoredInterchange, list[Item[S]]]] = []
        for icn, items in replayed.items():
            stored = self.store.interchange(icn)
            if stored is not None:
                ready.append((stored, items))
        built: set[int] = set()
        for (payer_id, _claim_type), items in fresh.items():
            adapter = self.router.adapter_for(payer_id)
            if adapter is None:
                reason = (
                    f"no payer route for {payer_id!r}: add it (or '*') to CLAIMFLOW_CLAIMS__ROUTES"
                )
                results += [self._refuse(it, InputError("payer_id", reason)) for it in items]
                continue
            for chunk in chunks(items, self.max_per_interchange):
                refused, numbered = self.interchange(chunk, adapter.name)
                results += refused
                if numbered is not None:
                    ready.append(numbered)
                    built.add(numbered[0].icn)
        return Numbered(results, ready, built, undo)

    def deliver_all(self, numbered: Numbered[S]) -> list[Result[S]]:
        """Deliver what ``numbered`` holds (the caller has secured its numbers), then record
        the outcomes with one commit and undo what was refused; every result of the call."""
        results = numbered.results
        for stored, items in numbered.ready:
            results += self.deliver(stored, items, built=stored.icn in numbered.built)
        if any(stored.status != "delivered" for stored, _ in numbered.ready):
            # The batch's delivery outcomes, committed once: a batch read again after a
            # crash on this instance does not deliver them again (``PartitionNumbers.mark``).
            self.store.commit()
        numbered.undo(results)
        return results

    def interchange(
        self, items: list[Item[S]], adapter: str
    ) -> tuple[list[Result[S]], tuple[StoredInterchange, list[Item[S]]] | None]:
        """Number, write and store one interchange (not yet delivered); a claim that cannot
        be written is set aside (refused)."""
        results: list[Result[S]] = []
        while items:
            planned = [p for _, p in items]
            first = planned[0]
            try:
                stored = self.store.allocate(
                    [ClaimRef(p.event_id, p.claim_id, p.encounter_id) for p in planned],
                    payer_id=first.payer_id,
                    claim_type=first.claim_type,
                    adapter=adapter,
                    build=self.writer.writer(planned),
                )
            except ClaimError as exc:
                prefix = f"claims[{exc.claim_id}]."
                error = in_validated_record(InputError(exc.field.removeprefix(prefix), exc.reason))
                bad = [it for it in items if it[1].claim_id == exc.claim_id]
                results += [self._refuse(it, error) for it in bad]
                items = [it for it in items if it[1].claim_id != exc.claim_id]
                continue
            except InputError as exc:
                results += [self._refuse(it, in_validated_record(exc)) for it in items]
                return results, None
            self.outcomes[f"interchange_{first.claim_type}"] += 1
            return results, (stored, items)
        return results, None

    def deliver(
        self, stored: StoredInterchange, items: list[Item[S]], *, built: bool = False
    ) -> list[Result[S]]:
        """Deliver unless already delivered, then the interchange once and one claim event
        per claim of ``items``, naming it by control number instead of carrying its text
        (``built``: just built from ``items``, which are then every claim it carries, in
        the order stored)."""
        if built:
            claim_ids = [planned.claim_id for _, planned in items]
        else:
            claim_ids = [c.claim_id for c in self.store.claims_of(stored.icn)]
        if stored.status != "delivered":
            refused = self._deliver(stored, claim_ids)
            if refused is not None:
                return [self._refuse(it, refused) for it in items]
        interchange = interchange_record(
            stored.icn,
            payer_id=stored.payer_id,
            claim_type=stored.claim_type,
            adapter=stored.adapter,
            claim_ids=claim_ids,
            x12=stored.text,
            created_at=min(planned.submitted_at for _, planned in items),
        )
        return [
            Carried(interchange),
            *(
                Billed(source, submitted_claim(planned, stored.icn, None), stored.adapter)
                for source, planned in items
            ),
        ]

    def _refuse(self, item: Item[S], exc: Exception) -> Refused[S]:
        """A planned claim that was not written or delivered: its input refused, the reason
        naming the claim (an encounter may bill two), and the claim noted so that only its
        part of the corrections store is undone (``bill``)."""
        source, planned = item
        self._not_sent.add(planned.claim_id)
        which = f"{planned.claim_type} claim {planned.claim_id}"
        if isinstance(exc, InputError):
            field = exc.field
            verdict = self._verdict_of.get(id(source))
            if verdict is not None:  # the line of the encounter, not of the claim part
                field = encounter_field(verdict, planned.claim_type, field)
            exc = InputError(field, f"{exc.reason} ({which})")
        elif isinstance(exc, DeliveryFailed):
            exc = DeliveryFailed(f"{exc} ({which})")
        return Refused(source, exc)

    def _deliver(
        self, stored: StoredInterchange, claim_ids: Sequence[str]
    ) -> DeliveryFailed | None:
        """Hand the stored interchange (carrying ``claim_ids``) to its adapter (with
        retries); why it failed, or None."""
        adapter = self.router.adapters.get(stored.adapter) or self.router.adapter_for(
            stored.payer_id
        )
        sender_id, receiver_id, _ = self.writer.envelope(stored.payer_id)
        meta = DeliveryMeta(
            payer_id=stored.payer_id,
            control_number=stored.icn,
            claim_type=stored.claim_type,
            claim_ids=tuple(claim_ids),
            sender_id=sender_id,
            receiver_id=receiver_id,
        )
        if adapter is None:
            reason = f"no payer route for {stored.payer_id!r} (CLAIMFLOW_CLAIMS__ROUTES)"
            self.store.mark(stored.icn, "dead", reason)
            return DeliveryFailed(reason)
        started = time.perf_counter()
        outcome = deliver_with_retries(
            adapter, stored.text.encode("ascii"), meta, self.retry, sleep=self.sleep
        )
        if outcome.receipt is None:
            self.store.mark(stored.icn, "dead", outcome.reason())
            self.deliveries[(adapter.name, "failed")] += 1
            log.warning(
                "interchange not delivered; its claims go to the dead-letter topic",
                extra={"icn": stored.icn, "adapter": adapter.name, "why": outcome.reason()},
            )
            return DeliveryFailed(outcome.reason())
        self.store.mark(stored.icn, "delivered", outcome.receipt.describe())
        self.deliveries[(adapter.name, "delivered")] += 1
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
        return None

    # --- coordination of benefits: the next payer after a posted 835 ----------------------------

    def bill_next_payers(self, postings: Sequence[tuple[S, RemittancePosting]]) -> list[Result[S]]:
        """Claims to secondary and tertiary payers, from the postings of the payers before;
        a claim that is refused is billed when its posting comes again."""
        return self.finish(self.number_next_payers(postings))

    def number_next_payers(
        self,
        postings: Sequence[tuple[S, RemittancePosting]],
        encoded: Callable[[S], bytes | None] | None = None,
    ) -> Numbered[S]:
        """``bill_next_payers`` up to delivery (``finish`` delivers). ``encoded``: the Avro
        record a posting's source carries (the bytes it was decoded from), if any."""
        results: list[Result[S]] = []
        unique: dict[str, Item[S]] = {}
        billed: dict[int, tuple[str, int]] = {}
        self._verdict_of = {}
        # The payer's claim numbers the postings give, set with one statement for the batch
        # (one each cost 2% of the claims stage's time in its benchmark with history): in
        # the postings' order, before any is read, as each posting set its own before.
        numbers = [
            (posting.claim_id, number)
            for _, posting in postings
            if (number := posting.payer_claim_control_number)
            and posting.encounter_id is not None
            and posting.status != "reversed"
        ]
        try:
            self.submitted.set_payer_claim_control_numbers(numbers)
            numbered = True
        except Exception:  # noqa: BLE001 - each posting sets its own, and is refused alone
            numbered = False
        # What each posting's claim was built from, read for the batch: nothing below
        # writes the corrections store once the numbers are set (else each sets its own).
        # And the payers already billed for them, kept up to date as the loop bills more
        # (only ``mark_billed`` below writes them before the loop ends).
        keys = [
            key
            for _, posting in postings
            if posting.encounter_id is not None
            and (key := part_key(posting.encounter_id, primary_claim_id(posting.claim_id)))
        ]
        built_from = self.submitted.billed_many(keys) if numbered else None
        later = self.cob.billed_many(keys)
        for source, posting in postings:
            try:
                raw = encoded(source) if encoded is not None else None
                found = self.next_claim(
                    posting, raw, numbered=numbered, built_from=built_from, later=later
                )
            except Exception as exc:  # noqa: BLE001 - every failure of one input is refused
                results.append(Refused(source, exc))
                continue
            if found is not None:
                planned, position, key = found
                unique.setdefault(planned.event_id, (source, planned))
                billed[id(source)] = (key, position)
                later.add((key, position))

        def undo(results: list[Result[S]]) -> None:
            for result in results:
                if isinstance(result, Refused) and id(result.source) in billed:
                    self.cob.unmark_billed(*billed.pop(id(result.source)))

        return self.number(unique, results, undo)

    def next_claim(
        self,
        posting: RemittancePosting,
        encoded: bytes | None = None,
        *,
        numbered: bool = False,
        built_from: dict[str, tuple[str, str | None, float]] | None = None,
        later: set[tuple[str, int]] | None = None,
    ) -> tuple[PlannedClaim, int, str] | None:
        """The claim to the payer after the one that posted, with its position and the
        encounter part it bills, or None (and the outcome says why). ``encoded``: the
        record the posting was decoded from, which the COB ledger keeps as it is;
        ``numbered``: the payer's claim number it gives is already set; ``built_from``: what
        ``SubmittedClaims.billed_many`` read of the posting's part, if it was; ``later``: the
        payers billed for it (``CobLedger.billed_many``), if they were read.

        The COB ledger's writes for one posting are all or none of them (a savepoint),
        except for a posting that bills no one whatever was adjudicated before
        (``bills_none``: 688 of 775 in the claims stage benchmark): its one write is the
        last thing it does, and a statement is all or nothing by itself."""
        if posting.encounter_id is None:
            return None
        if not numbered and posting.payer_claim_control_number and posting.status != "reversed":
            # A corrected claim (7) or a void (8) refers to the payer's number for the claim
            # it replaces, which the 835 gives (CLP07).
            self.submitted.set_payer_claim_control_number(
                posting.claim_id, posting.payer_claim_control_number
            )
        # The claim the payer answered is one part of the encounter (its claim, or, for a
        # facility stay with a physician's services, the facility's or the physician's).
        key = part_key(posting.encounter_id, primary_claim_id(posting.claim_id))
        if key is not None and built_from is not None and self.payers_kept:
            # Most postings bill no one, which the payers billed tell without the verdict.
            kept = self.submitted.billed_payers(key, built_from, self.writer.master)
            if kept is not None and self._bills_none_kept(posting, encoded, key, kept[1], later):
                return None
        prior: tuple[str, ValidatedEncounter] | None
        if key is None:
            prior = None
        elif built_from is not None:
            prior = self.submitted.billed_of(key, built_from)
        else:
            found_prior = self.submitted.prior(key)
            prior = None if found_prior is None else (found_prior.claim_id, found_prior.billed)
        if prior is None or key is None:
            self.outcomes["cob_unknown_encounter"] += 1
            return None
        claim_id, verdict = prior
        master = self.writer.master
        coverages = coverages_of(verdict, master)
        position = position_of(posting.payer_id, coverages)
        if position is None:
            self.outcomes["cob_unknown_payer"] += 1
            return None
        encounter_id = key  # the CobLedger keeps each part's payers apart
        cob = self.cob
        again = self._billed_after(encounter_id, position, later)
        if bills_none(posting, position, coverages):
            # The ledger is read before its one write (they touch different tables).
            self._record_billing_none(encounter_id, position, posting, encoded, coverages)
            if again:
                return None  # a redelivered or corrected posting: the next payer is billed
            found = next_claim(posting, verdict, claim_id, [], master, coverages)
            if found.planned is None:  # always (tests/unit/test_claims_next_payer_reads.py)
                self._not_billed(found, encounter_id)
                return None
        with cob.atomic():
            cob.record(encounter_id, position, posting, encoded)
            if again:
                return None  # a redelivered or corrected posting: the next payer is billed
            earlier = cob.earlier(encounter_id, position)
            found = next_claim(posting, verdict, claim_id, earlier, master, coverages)
            if found.planned is None:
                self._not_billed(found, encounter_id)
                return None
            self.outcomes[f"cob_billed_{position + 1}"] += 1
            cob.mark_billed(encounter_id, position + 1, found.planned.claim_id)
        return found.planned, position + 1, encounter_id

    def _bills_none_kept(
        self,
        posting: RemittancePosting,
        encoded: bytes | None,
        encounter_id: str,
        payers: tuple[str, ...],
        later: set[tuple[str, int]] | None,
    ) -> bool:
        """Whether the posting was answered from the payer ids its claim was billed to
        (``SubmittedClaims.billed_payers``): as ``next_claim`` answers it from the verdict
        when the payer is none of them or the posting bills no one (``no_claim``), the
        verdict not read. False: ``next_claim`` reads the verdict (a next payer may be owed
        a claim), nothing done here."""
        position = position_among(posting.payer_id, payers)
        if position is None:
            self.outcomes["cob_unknown_payer"] += 1
            return True
        found = no_claim(posting, position, payers)
        if found is None:
            return False
        again = self._billed_after(encounter_id, position, later)
        self._record_billing_none(encounter_id, position, posting, encoded, payers)
        if not again:
            self._not_billed(found, encounter_id)
        return True

    def _billed_after(
        self, encounter_id: str, position: int, later: set[tuple[str, int]] | None
    ) -> bool:
        """Whether the payer after ``position`` was billed for the part already (a posting
        redelivered or corrected): from ``later`` (``CobLedger.billed_many``) if read."""
        if later is not None:
            return (encounter_id, position + 1) in later
        return self.cob.billed(encounter_id, position + 1) is not None

    def _record_billing_none(
        self,
        encounter_id: str,
        position: int,
        posting: RemittancePosting,
        encoded: bytes | None,
        coverages: Sequence[object],
    ) -> None:
        """The COB ledger's one write for a posting that bills no one. Not kept parsed:
        nothing reads it back soon, and a kept posting is freed when PARSED_MAX later ones
        push it out, long after it was used (a long-running stage's keep then cost 8.8 us a
        call against 1.7 in one not yet full). The last payer's posting is not stored at
        all: only a later payer's claim reads a posting back (``CobLedger.earlier``), and
        none comes after it (a verdict billed again with more coverages is posted again,
        and stored then)."""
        if self.store_last_postings or not last_payer(position, coverages):
            self.cob.record(encounter_id, position, posting, encoded, read_soon=False)

    def _not_billed(self, found: NextClaim, encounter_id: str = "") -> None:
        """A posting whose next payer is not billed: counted, and why said. One whose next
        payer is owed a claim that cannot be built (an earlier payer's adjudication is not
        in the ledger) is counted apart and warned: it is money nobody bills."""
        if found.missing:
            self.outcomes["cob_earlier_missing"] += 1
            log.warning(
                "the next payer is owed a claim, but an earlier payer's adjudication is "
                "missing: not billed",
                extra={"encounter_id": encounter_id, "why": found.reason},
            )
            return
        self.outcomes["cob_not_billed"] += 1
        log.debug("no claim to the next payer", extra={"why": found.reason})

    # --- acknowledgments ------------------------------------------------------------------------

    def acknowledgment(self, file: PayerFile) -> list[ClaimRejection]:
        """The claims a 999 or 277CA rejects (an 835 is remittance's: none)."""
        return acknowledge(file, self.store, [self.submitted], self.outcomes)


def acknowledge(
    file: PayerFile,
    store: Numbers,
    submitted: Sequence[SubmittedClaims],
    outcomes: Counter[str],
    owns: Callable[[int], bool] | None = None,
    ack: Ack | None = None,
) -> list[ClaimRejection]:
    """The claims a 999 or 277CA rejects (an 835 is remittance's: none), matched through the
    interchanges ``store`` numbered (``owns``: the numbers it answers for, when it is one
    partition's; ``ack``: the file, when it is already read); each claim's
    rejection (and a 277CA's payer claim number) is recorded in the corrections store of
    ``submitted`` that holds the claim (the service has one per partition). Counted in
    ``outcomes``."""
    if file.kind not in ("999", "277CA"):
        return []

    def claims_of_group(group: str) -> list[tuple[str, str]]:
        if not group.isdigit():
            return []
        return [(c.claim_id, c.encounter_id) for c in store.claims_of(int(group))]

    ctx = RejectionContext(claims_of_group, store.encounter_of, utcnow())
    if owns is not None:  # a partition's store: the groups another partition numbered are its
        ctx.owns = lambda group: not group.isdigit() or owns(int(group))
    found = rejections(file, ctx, ack)
    if found or ctx.payer_claim_numbers:  # else nothing to write (a 999 accepting all)
        if len(submitted) == 1:
            with submitted[0].atomic():
                _record_answers(submitted[0], store, ctx, found)
        else:
            with ExitStack() as atomic:  # all of this file's writes or none (a refusal)
                for part in submitted:
                    atomic.enter_context(part.atomic())
                for part in submitted:
                    _record_answers(part, store, ctx, found)
    if ctx.unknown_groups:
        # Not ours (another claims instance's block, or a store that was lost): say so.
        log.warning(
            "999 rejects a group this service did not send",
            extra={"groups": ctx.unknown_groups[:5], "file_id": file.file_id},
        )
        outcomes["ack_unknown_group"] += 1
    for rejection in found:
        outcomes[f"payer_rejected_{rejection.source}"] += 1
    return found


def _record_answers(
    part: SubmittedClaims, store: Numbers, ctx: RejectionContext, found: list[ClaimRejection]
) -> None:
    """What an acknowledgment says of the claims of one corrections store, recorded."""
    # 7s and 8s refer to the payer's claim number once it is known.
    part.set_payer_claim_control_numbers(ctx.payer_claim_numbers.items())
    for rejection in found:
        if part.holds(rejection.claim_id):
            # A refused claim was never in adjudication; its fix goes out as a new
            # original, not as a replacement of it.
            part.record_rejection(rejection, _refused_events(store, rejection))


def _refused_events(store: Numbers, rejection: ClaimRejection) -> list[str]:
    """The claim events a rejection refuses, when it names their interchange (a 999)."""
    icn = rejection.interchange_control_number
    if icn is None or not icn.isdigit():
        return []
    return [c.event_id for c in store.claims_of(int(icn)) if c.claim_id == rejection.claim_id]


def chunks(items: Iterable[Item[S]], at_most: int) -> Iterable[list[Item[S]]]:
    """At most ``at_most`` claims, and a claim id once, per interchange, in order."""
    chunk: list[Item[S]] = []
    ids: set[str] = set()
    for item in items:
        if len(chunk) >= at_most or item[1].claim_id in ids:
            yield chunk
            chunk, ids = [], set()
        chunk.append(item)
        ids.add(item[1].claim_id)
    if chunk:
        yield chunk
