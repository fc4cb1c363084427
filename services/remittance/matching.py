"""Remittance's domain: an 835 balanced and triaged, its claim payments matched to the
submitted claims and posted, denials queued, and what cannot be posted held as an
exception. Plain code over the ledger (``ledger.py``), no Kafka: the service
(``app.py``) and the offline ``claimflow remit post`` both run it.

Matching: CLP01 (the patient control number) against the claims ledger. A payment whose
claim has not arrived waits in the ledger and is posted when the claim comes; after the
grace period it is reported once as ``unmatched_payment`` (``overdue``) and keeps waiting.
Each call is one input: its ledger writes are one savepoint (all or nothing), committed
by the caller with the batch.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from decimal import Decimal
from typing import NamedTuple

from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field

from pipeline import metrics
from pipeline.errors import InputError
from pipeline.models import (
    ExceptionClaim,
    Model,
    PayerFile,
    RemittanceException,
    SubmittedClaim,
    event_id,
    utcnow,
)
from services.remittance.denials import CodeTables, denial_for
from services.remittance.era import ClaimDefect, ClaimPayment, Remittance, decode_x12, read_835
from services.remittance.ledger import Ledger
from services.remittance.plb import apply_plb
from services.remittance.posting import (
    PLB_REASONS,
    Held,
    Postable,
    Pricing,
    post,
    reconcile,
    sequestration,
    shortfall,
    triage,
)
from services.remittance.settlement import settlement_for

log = logging.getLogger(__name__)

STAGE = "remittance"
VERSION = "v1"


class Output(NamedTuple):
    """A record the matching asks its caller to publish: topic, key and value."""

    topic: str
    key: str
    value: Model


Source = tuple[int, int] | None
"""(partition, offset) of the payer file in its topic, when it came from one."""

ADJUSTMENTS = Counter(
    "claimflow_remittance_adjustments_total",
    "CAS adjustments posted (reversals not counted), by group code",
    ["group"],
)
ADJUSTED_DOLLARS = Counter(
    "claimflow_remittance_adjusted_dollars_total",
    "Dollars adjusted by CAS on posted payments (reversals not counted), by group code",
    ["group"],
)
PROVIDER_ADJUSTMENTS = Counter(
    "claimflow_remittance_provider_adjustments_total",
    "PLB provider-level adjustments applied to posted payments, by PLB reason code",
    ["reason"],
)
UNDERPAID_DOLLARS = Counter(
    "claimflow_remittance_underpaid_dollars_total",
    "Shortfall to the expected reimbursement on claims queued as underpaid",
)
PLB_TARGETS = Counter(
    "claimflow_remittance_plb_applied_total",
    "PLB adjustments by where they were applied: claim, forward_balance, provider",
    ["target"],
)
_GROUPS = frozenset({"CO", "CR", "OA", "PI", "PR"})


class RemittanceOptions(BaseModel):
    """``CLAIMFLOW_REMITTANCE__…``: matching, underpayment and pricing settings."""

    model_config = ConfigDict(frozen=True)

    unmatched_grace_s: float = Field(
        default=300.0,
        ge=0,
        description="How long a payment waits for its claim before it goes to exceptions.",
    )
    sweep_interval_s: float = Field(
        default=5.0, gt=0, description="Least time between two looks for overdue payments."
    )
    underpayment_tolerance: Decimal = Field(
        default=Decimal("1.00"),
        ge=0,
        description="A shortfall to expected above this puts the claim in the denial queue.",
    )
    drg_base_rate: Decimal | None = Field(
        default=None,
        gt=0,
        description="Dollars per DRG relative weight, to price an 835 paid by DRG (CLP11) "
        "whose claim carries no expected amount. Unset: the claims stage's default.",
    )


def _looks_like_x12(text: str) -> bool:
    return text.lstrip("\ufeff \t\r\n").startswith("ISA")


class Matcher:
    """The claims ledger, and 835s matched against it."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        options: RemittanceOptions | None = None,
        codes: CodeTables | None = None,
        pricing: Pricing | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.options = options or RemittanceOptions()
        self.codes = codes or CodeTables()
        self.pricing = pricing or Pricing()
        self.clock = clock
        self._parsed: OrderedDict[str, tuple[list[Postable], list[Held], tuple[str, ...]]] = (
            OrderedDict()
        )

    # --- claims: a late claim releases the payments that wait for it -----------------------

    def claim(self, claim: SubmittedClaim) -> list[Output]:
        """A submitted claim into the ledger; the payments that waited for it, posted."""
        with self.ledger.atomic():
            return self._claim(claim)

    def payer_file(self, file: PayerFile, source: Source = None) -> list[Output]:
        """An inbound payer file: an 835 balanced, triaged and posted (999 and 277CA files
        are counted and ignored here); raises InputError when it is not X12 at all."""
        with self.ledger.atomic():
            return self._payer_file(file, source)

    def _claim(self, claim: SubmittedClaim) -> list[Output]:
        self.ledger.add_claim(claim)
        outs: list[Output] = []
        for waiting in self.ledger.take_waiting(claim.claim_id):
            file = PayerFile.model_validate_json(waiting.file_record)
            outs += self._post(file, self._read(file)[0], only=claim.claim_id)
        return outs

    # --- payer files ----------------------------------------------------------------------

    def _payer_file(self, file: PayerFile, source: Source) -> list[Output]:
        if file.kind != "835":
            metrics.OUTCOMES.labels(STAGE, f"ignored_{file.kind}").inc()
            return []
        try:
            postable, held, warnings = self._read(file)
        except InputError as exc:
            if not _looks_like_x12(decode_x12(file.body)[0]):
                raise  # not X12 at all: poison, to the dead-letter topic
            return [self._file_exception(file, source, "unreadable_file", [str(exc)])]
        outs = [self._held(file, source, item, n, warnings) for n, item in enumerate(held)]
        for payment in postable:
            outs += self._post(file, [payment], source=source)
            self._record_payment(file, payment.remittance)  # after its claims: WO finds them
        return outs

    def _read(self, file: PayerFile) -> tuple[list[Postable], list[Held], tuple[str, ...]]:
        """The file triaged; read once while its waiting payments are released."""
        key = f"{file.payer_id}:{file.file_id}:{hash(file.body)}"
        if key in self._parsed:
            self._parsed.move_to_end(key)
            return self._parsed[key]
        read = read_835(file.body)
        postable, held = triage(read)
        self._parsed[key] = (postable, held, read.warnings)
        while len(self._parsed) > 16:
            self._parsed.popitem(last=False)
        return postable, held, read.warnings

    def _record_payment(self, file: PayerFile, remit: Remittance) -> None:
        summary = reconcile(remit)
        applications = apply_plb(remit, self.ledger.claim_for_reference)
        if self.ledger.add_payment(summary, f"{file.payer_id}:{file.file_id}", applications):
            for applied in applications:
                plb = applied.adjustment
                reason = plb.reason if plb.reason in PLB_REASONS else "other"
                PROVIDER_ADJUSTMENTS.labels(reason).inc()
                PLB_TARGETS.labels(applied.target).inc()

    def _post(
        self,
        file: PayerFile,
        payments: list[Postable],
        *,
        only: str | None = None,
        source: Source = None,
    ) -> list[Output]:
        outs: list[Output] = []
        file_key = f"{file.payer_id}:{file.file_id}"
        for postable in payments:
            remit = postable.remittance
            for occurrence, payment in postable.occurrences():
                claim_id = payment.patient_control_number
                if only is not None and claim_id != only:
                    continue
                if payment.status_code == "25":  # reported when the file came, never posted
                    if only is None:
                        outs.append(self._predetermination(file, remit, payment))
                    continue
                claim = self.ledger.claim(claim_id)
                if claim is None:  # the 835 overtook its claim: post when the claim arrives
                    self.ledger.add_waiting(
                        claim_id,
                        file_key,
                        file.model_dump_json(),
                        first_seen=self.clock(),
                        source_partition=source[0] if source else None,
                        source_offset=source[1] if source else None,
                    )
                    continue
                outs += self._post_one(file, remit, payment, claim, occurrence)
        return outs

    def _post_one(
        self,
        file: PayerFile,
        remit: Remittance,
        payment: ClaimPayment,
        claim: SubmittedClaim,
        occurrence: int,
    ) -> list[Output]:
        now = utcnow()
        prior = self.ledger.prior(claim.claim_id, file.payer_id)
        warnings = (*self._read(file)[2], *remit.warnings)
        posting = post(
            payment,
            claim,
            payer_id=file.payer_id,
            file_id=file.file_id,
            payment_trace=remit.trace_number,
            payment_date=remit.payment_date,
            posted_at=now,
            occurrence=occurrence,
            pricing=self.pricing,
            prior=prior,
            warnings=warnings,
        )
        if not self.ledger.mark_posted(posting, sequestration(payment)):
            return []  # a replayed input: posted before
        metrics.OUTCOMES.labels(STAGE, posting.status).inc()
        if posting.warnings:
            metrics.OUTCOMES.labels(STAGE, "posted_with_warning").inc()
        if posting.status != "reversed":
            for adj in posting.adjustments:
                group = adj.group if adj.group in _GROUPS else "other"
                ADJUSTMENTS.labels(group).inc()
                if adj.amount > 0:
                    ADJUSTED_DOLLARS.labels(group).inc(float(adj.amount))
        outs = [Output("remittance.posted.v1", claim.claim_id, posting)]
        if (settled := settlement_for(posting)) is not None:  # the claims stage's retention
            outs.append(Output("remittance.settled.v1", claim.claim_id, settled))
        denial = denial_for(
            posting,
            payment,
            self.codes,
            underpayment_tolerance=self.options.underpayment_tolerance,
            queued_at=now,
            shortfall=shortfall(payment, claim, posting.expected, prior).shortfall,
        )
        if denial is not None:
            metrics.OUTCOMES.labels(STAGE, f"queued_{denial.kind}").inc()
            if denial.kind == "underpaid":
                UNDERPAID_DOLLARS.inc(float(denial.at_stake))
            outs.append(Output("remittance.denials.v1", claim.claim_id, denial))
        return outs

    # --- exceptions -----------------------------------------------------------------------

    def _file_exception(
        self,
        file: PayerFile,
        source: Source,
        kind: str,
        errors: list[str],
        remits: list[Remittance] | None = None,
    ) -> Output:
        file_key = f"{file.payer_id}:{file.file_id}"
        remits = remits or []
        log.warning(
            "payer file held in exceptions",
            extra={"file_key": file_key, "kind": kind, "errors": len(errors)},
        )
        metrics.OUTCOMES.labels(STAGE, f"exception_{kind}").inc()
        exception = RemittanceException(
            event_id=event_id(file_key, kind, STAGE, VERSION),
            kind=kind,  # type: ignore[arg-type]
            payer_id=file.payer_id,
            file_id=file.file_id,
            payment_trace=remits[0].trace_number if len(remits) == 1 else None,
            payment_amount=sum((r.net_payment for r in remits), Decimal(0)) if remits else None,
            claims=[_exception_claim(p) for r in remits for p in r.claims],
            errors=[e[:1000] for e in errors[:200]],
            source_partition=source[0] if source else None,
            source_offset=source[1] if source else None,
            body=file.body,
            received_at=file.received_at,
            detected_at=utcnow(),
        )
        return Output("remittance.exceptions.v1", file_key, exception)

    def _held(
        self, file: PayerFile, source: Source, held: Held, number: int, warnings: tuple[str, ...]
    ) -> Output:
        """One held part of a file (a transaction set, or a claim) to the exceptions topic."""
        file_key = f"{file.payer_id}:{file.file_id}"
        st = held.transaction_control_number or ""
        one_claim = held.kind in ("unbalanced_claim", "unreadable_claim")
        key = held.claims[0].patient_control_number if one_claim else file_key
        remit = held.remittance
        log.warning(
            "835 part held in exceptions",
            extra={"file_key": file_key, "kind": held.kind, "errors": len(held.errors)},
        )
        metrics.OUTCOMES.labels(STAGE, f"exception_{held.kind}").inc()
        exception = RemittanceException(
            event_id=event_id(key, file_key, held.kind, st, str(number), STAGE, VERSION),
            kind=held.kind,
            payer_id=file.payer_id,
            file_id=file.file_id,
            payment_trace=remit.trace_number if remit else None,
            payment_amount=remit.net_payment if remit else None,
            transaction_control_number=held.transaction_control_number,
            claims=[_exception_claim(c) for c in held.claims],
            errors=[e[:1000] for e in held.errors[:200]],
            source_partition=source[0] if source else None,
            source_offset=source[1] if source else None,
            body=file.body,
            received_at=file.received_at,
            detected_at=utcnow(),
            warnings=[*warnings, *(remit.warnings if remit else ())],
        )
        return Output("remittance.exceptions.v1", key, exception)

    def _predetermination(
        self, file: PayerFile, remit: Remittance, payment: ClaimPayment
    ) -> Output:
        claim_id = payment.patient_control_number
        file_key = f"{file.payer_id}:{file.file_id}"
        metrics.OUTCOMES.labels(STAGE, "exception_other").inc()
        exception = RemittanceException(
            event_id=event_id(claim_id, file_key, "predetermination", STAGE, VERSION),
            kind="other",
            payer_id=file.payer_id,
            file_id=file.file_id,
            payment_trace=remit.trace_number,
            payment_amount=remit.net_payment,
            claims=[_exception_claim(payment)],
            errors=["CLP02 25: predetermination pricing only, no payment to post"],
            received_at=file.received_at,
            detected_at=utcnow(),
        )
        return Output("remittance.exceptions.v1", claim_id, exception)

    def overdue(self) -> list[Output]:
        """Report the payments whose claim has not arrived within the grace period."""
        grace = self.options.unmatched_grace_s
        now = self.clock()
        outs: list[Output] = []
        for waiting in self.ledger.overdue(now - grace):
            file = PayerFile.model_validate_json(waiting.file_record)
            payments = [
                (postable.remittance, p)
                for postable in self._read(file)[0]
                for p in postable.claims
                if p.patient_control_number == waiting.claim_id
            ]
            exception = RemittanceException(
                event_id=event_id(waiting.claim_id, waiting.file_key, "unmatched", STAGE, VERSION),
                kind="unmatched_payment",
                payer_id=file.payer_id,
                file_id=file.file_id,
                payment_trace=payments[0][0].trace_number if payments else None,
                payment_amount=payments[0][0].net_payment if payments else None,
                claims=[_exception_claim(p) for _, p in payments],
                errors=[f"no submitted claim {waiting.claim_id} after {grace:g} s"],
                source_partition=waiting.source_partition,
                source_offset=waiting.source_offset,
                received_at=file.received_at,
                detected_at=utcnow(),
            )
            self.ledger.mark_reported(waiting.claim_id, waiting.file_key, now)
            metrics.OUTCOMES.labels(STAGE, "exception_unmatched_payment").inc()
            outs.append(Output("remittance.exceptions.v1", waiting.claim_id, exception))
        return outs


def _exception_claim(payment: ClaimPayment | ClaimDefect) -> ExceptionClaim:
    """A claim payment as an exception lists it (a claim that could not be read: what of its
    CLP could, 0.00 for amounts that could not)."""
    if isinstance(payment, ClaimDefect):
        return ExceptionClaim(
            claim_id=payment.patient_control_number,
            payer_claim_control_number=payment.payer_claim_control_number,
            claim_status_code=payment.status_code,
            total_charge=payment.charge or Decimal(0),
            paid=payment.paid or Decimal(0),
            patient_responsibility=Decimal(0),
        )
    return ExceptionClaim(
        claim_id=payment.patient_control_number,
        payer_claim_control_number=payment.payer_claim_control_number,
        claim_status_code=payment.status_code,
        total_charge=payment.charge,
        paid=payment.paid,
        patient_responsibility=payment.patient_responsibility,
    )
