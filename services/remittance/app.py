"""remittance: 835s (payer.inbound.v1) matched to claims (claims.submitted.v1), posted.

Out: remittance.posted.v1 (every matched claim payment), remittance.denials.v1 (denied,
partially denied and underpaid claims), remittance.settled.v1 (a claim adjudicated or
reopened, for the claims stage's retention), remittance.exceptions.v1 (payments whose claim has
not arrived after the grace period, files that do not balance, X12 that cannot be read).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from prometheus_client import Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field

from pipeline import metrics
from pipeline.errors import InputError
from pipeline.models import (
    ExceptionClaim,
    PayerFile,
    RemittanceException,
    SubmittedClaim,
    event_id,
    utcnow,
)
from pipeline.settings import Settings
from pipeline.stage import Incoming, Out, Stage, run_stage
from services.remittance import metrics as domain_metrics
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
WAITING = Gauge(
    "claimflow_remittance_waiting_payments",
    "Claim payments waiting for their claim (reported to exceptions or not yet)",
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


class RemittanceSettings(Settings):
    """The shared settings plus the remittance options."""

    remittance: RemittanceOptions = RemittanceOptions()


def _looks_like_x12(text: str) -> bool:
    return text.lstrip("\ufeff \t\r\n").startswith("ISA")


class RemittanceStage(Stage):
    name = "remittance"
    inputs = ("claims.submitted.v1", "payer.inbound.v1")

    def prime_metrics(self) -> None:
        domain_metrics.prime()

    def observe(self, topic: str, value: Any, source: Any) -> None:
        domain_metrics.observe(topic, value)

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
        self.idle_interval_s = min(self.options.sweep_interval_s, self.options.unmatched_grace_s)
        self._parsed: OrderedDict[str, tuple[list[Postable], list[Held], tuple[str, ...]]] = (
            OrderedDict()
        )
        WAITING.set(ledger.waiting_count())

    def handle(self, msg: Incoming) -> Iterable[Out]:
        with self.ledger.atomic():
            if msg.topic == "claims.submitted.v1":
                return self._claim(msg.value)
            return self._payer_file(msg)

    # --- claims: a late claim releases the payments that wait for it -----------------------

    def _claim(self, claim: SubmittedClaim) -> list[Out]:
        self.ledger.add_claim(claim)
        outs: list[Out] = []
        for waiting in self.ledger.take_waiting(claim.claim_id):
            file = PayerFile.model_validate_json(waiting.file_record)
            outs += self._post(file, self._read(file)[0], only=claim.claim_id)
        return outs

    # --- payer files ----------------------------------------------------------------------

    def _payer_file(self, msg: Incoming) -> list[Out]:
        file: PayerFile = msg.value
        if file.kind != "835":
            metrics.OUTCOMES.labels(self.name, f"ignored_{file.kind}").inc()
            return []
        try:
            postable, held, warnings = self._read(file)
        except InputError as exc:
            if not _looks_like_x12(decode_x12(file.body)[0]):
                raise  # not X12 at all: poison, to the dead-letter topic
            return [self._file_exception(msg, "unreadable_file", [str(exc)])]
        outs = [self._held(msg, item, n, warnings) for n, item in enumerate(held)]
        for payment in postable:
            outs += self._post(file, [payment], source=(msg.partition, msg.offset))
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
        source: tuple[int, int] | None = None,
    ) -> list[Out]:
        outs: list[Out] = []
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
    ) -> list[Out]:
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
        metrics.OUTCOMES.labels(self.name, posting.status).inc()
        if posting.warnings:
            metrics.OUTCOMES.labels(self.name, "posted_with_warning").inc()
        if posting.status != "reversed":
            for adj in posting.adjustments:
                group = adj.group if adj.group in _GROUPS else "other"
                ADJUSTMENTS.labels(group).inc()
                if adj.amount > 0:
                    ADJUSTED_DOLLARS.labels(group).inc(float(adj.amount))
        outs = [Out("remittance.posted.v1", claim.claim_id, posting)]
        if (settled := settlement_for(posting)) is not None:  # the claims stage's retention
            outs.append(Out("remittance.settled.v1", claim.claim_id, settled))
        denial = denial_for(
            posting,
            payment,
            self.codes,
            underpayment_tolerance=self.options.underpayment_tolerance,
            queued_at=now,
            shortfall=shortfall(payment, claim, posting.expected, prior).shortfall,
        )
        if denial is not None:
            metrics.OUTCOMES.labels(self.name, f"queued_{denial.kind}").inc()
            if denial.kind == "underpaid":
                UNDERPAID_DOLLARS.inc(float(denial.at_stake))
            outs.append(Out("remittance.denials.v1", claim.claim_id, denial))
        return outs

    # --- exceptions -----------------------------------------------------------------------

    def _file_exception(
        self,
        msg: Incoming,
        kind: str,
        errors: list[str],
        remits: list[Remittance] | None = None,
    ) -> Out:
        file: PayerFile = msg.value
        file_key = f"{file.payer_id}:{file.file_id}"
        remits = remits or []
        log.warning(
            "payer file held in exceptions",
            extra={"file_key": file_key, "kind": kind, "errors": len(errors)},
        )
        metrics.OUTCOMES.labels(self.name, f"exception_{kind}").inc()
        exception = RemittanceException(
            event_id=event_id(file_key, kind, STAGE, VERSION),
            kind=kind,  # type: ignore[arg-type]
            payer_id=file.payer_id,
            file_id=file.file_id,
            payment_trace=remits[0].trace_number if len(remits) == 1 else None,
            payment_amount=sum((r.net_payment for r in remits), Decimal(0)) if remits else None,
            claims=[_exception_claim(p) for r in remits for p in r.claims],
            errors=[e[:1000] for e in errors[:200]],
            source_partition=msg.partition,
            source_offset=msg.offset,
            body=file.body,
            received_at=file.received_at,
            detected_at=utcnow(),
        )
        return Out("remittance.exceptions.v1", file_key, exception)

    def _held(self, msg: Incoming, held: Held, number: int, warnings: tuple[str, ...]) -> Out:
        """One held part of a file (a transaction set, or a claim) to the exceptions topic."""
        file: PayerFile = msg.value
        file_key = f"{file.payer_id}:{file.file_id}"
        st = held.transaction_control_number or ""
        one_claim = held.kind in ("unbalanced_claim", "unreadable_claim")
        key = held.claims[0].patient_control_number if one_claim else file_key
        remit = held.remittance
        log.warning(
            "835 part held in exceptions",
            extra={"file_key": file_key, "kind": held.kind, "errors": len(held.errors)},
        )
        metrics.OUTCOMES.labels(self.name, f"exception_{held.kind}").inc()
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
            source_partition=msg.partition,
            source_offset=msg.offset,
            body=file.body,
            received_at=file.received_at,
            detected_at=utcnow(),
            warnings=[*warnings, *(remit.warnings if remit else ())],
        )
        return Out("remittance.exceptions.v1", key, exception)

    def _predetermination(self, file: PayerFile, remit: Remittance, payment: ClaimPayment) -> Out:
        claim_id = payment.patient_control_number
        file_key = f"{file.payer_id}:{file.file_id}"
        metrics.OUTCOMES.labels(self.name, "exception_other").inc()
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
        return Out("remittance.exceptions.v1", claim_id, exception)

    def on_idle(self) -> Iterable[Out]:
        """Report the payments whose claim has not arrived within the grace period."""
        grace = self.options.unmatched_grace_s
        now = self.clock()
        outs: list[Out] = []
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
            metrics.OUTCOMES.labels(self.name, "exception_unmatched_payment").inc()
            outs.append(Out("remittance.exceptions.v1", waiting.claim_id, exception))
        return outs

    def on_batch_done(self) -> None:
        self.ledger.commit()
        WAITING.set(self.ledger.waiting_count())

    def close(self) -> None:
        self.ledger.close()


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


def load_pricing(settings: RemittanceSettings) -> Pricing:
    """DRG weights (drgstable-{year}.csv) for payments whose claim has no expected amount."""
    if settings.refdata_dir is None:
        log.warning(
            "no CLAIMFLOW_REFDATA_DIR: DRG pricing of 835s without an expected amount is off"
        )
        return Pricing()
    try:
        from services.refdata.drg import DEFAULT_DRG_BASE_RATE, DrgWeights
    except ImportError:
        log.warning("the DRG weight loader is not installed: DRG pricing is off")
        return Pricing()

    weights = DrgWeights.load(settings.refdata_dir)
    if weights is None:
        log.warning("no drgstable-{year}.csv in CLAIMFLOW_REFDATA_DIR: DRG pricing is off")
        return Pricing()
    rate = settings.remittance.drg_base_rate or DEFAULT_DRG_BASE_RATE
    return Pricing(drg_weights=weights, drg_base_rate=rate)


def load_codes(settings: Settings) -> CodeTables:
    """The curated CARC/RARC tables, with the official descriptions when present."""
    codes = CodeTables.load(settings.refdata_dir)
    if not codes.sources:
        log.info(
            "CARC/RARC: curated table only (no carc*.csv / rarc*.csv in CLAIMFLOW_REFDATA_DIR)"
        )
    return codes


def main(settings: Settings | None = None) -> None:
    config = RemittanceSettings.from_base(settings)
    ledger = Ledger(config.state_dir / "remittance-ledger.sqlite3")
    stage = RemittanceStage(
        ledger, options=config.remittance, codes=load_codes(config), pricing=load_pricing(config)
    )
    run_stage(stage, config)
