"""What remittance cannot post, as ``remittance.exceptions.v1`` records: a file or a
transaction set that cannot be read or does not balance (with the file's bytes), one claim
that does not, a predetermination, a payment whose claim never arrived. No Kafka here."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import NamedTuple

from pipeline import metrics
from pipeline.models import (
    ExceptionClaim,
    Model,
    PayerFile,
    RemittanceException,
    event_id,
    utcnow,
)
from services.remittance.era import ClaimDefect, ClaimPayment, Remittance
from services.remittance.posting import Held

log = logging.getLogger(__name__)

STAGE = "remittance"
VERSION = "v1"
EXCEPTIONS = "remittance.exceptions.v1"


class Output(NamedTuple):
    """A record the matching asks its caller to publish: topic, key and value."""

    topic: str
    key: str
    value: Model


Source = tuple[int, int] | None
"""(partition, offset) of the payer file in its topic, when it came from one."""


def looks_like_x12(text: str) -> bool:
    return text.lstrip("\ufeff \t\r\n").startswith("ISA")


def file_exception(
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
        claims=[exception_claim(p) for r in remits for p in r.claims],
        errors=[e[:1000] for e in errors[:200]],
        source_partition=source[0] if source else None,
        source_offset=source[1] if source else None,
        body=file.body,
        received_at=file.received_at,
        detected_at=utcnow(),
    )
    return Output(EXCEPTIONS, file_key, exception)


def held_exception(
    file: PayerFile, source: Source, held: Held, number: int, warnings: tuple[str, ...]
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
        claims=[exception_claim(c) for c in held.claims],
        errors=[e[:1000] for e in held.errors[:200]],
        source_partition=source[0] if source else None,
        source_offset=source[1] if source else None,
        body=file.body,
        received_at=file.received_at,
        detected_at=utcnow(),
        warnings=[*warnings, *(remit.warnings if remit else ())],
    )
    return Output(EXCEPTIONS, key, exception)


def predetermination(file: PayerFile, remit: Remittance, payment: ClaimPayment) -> Output:
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
        claims=[exception_claim(payment)],
        errors=["CLP02 25: predetermination pricing only, no payment to post"],
        received_at=file.received_at,
        detected_at=utcnow(),
    )
    return Output(EXCEPTIONS, claim_id, exception)


def exception_claim(payment: ClaimPayment | ClaimDefect) -> ExceptionClaim:
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
