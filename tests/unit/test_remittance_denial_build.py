"""A work-queue item made from the values it holds is the item validation builds.

``denials.denial_for`` makes the ``Denial`` (its reasons, remarks and lines) from its values
without validating each model, as ``posting.post`` makes the posting. The judge is the
validated build it replaced, kept below: on every claim payment of the posting corpus
(the 835 fixtures, the public sample 835 and the payer simulator's 835s, posted against
their claims, without one, as the second part of a split and with a DRG price), with the
shortfall the matcher gives, none, and one of a fraction of a cent, the two items must be
both absent or equal, print the same (value types too), dump the same JSON and encode to
the same Avro bytes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

import pytest
from test_remittance_posting_build import cases

from pipeline.models import (
    Denial,
    DenialReason,
    DeniedLine,
    RemarkCode,
    RemittancePosting,
    event_id,
)
from pipeline.serde import registry
from services.remittance import denials
from services.remittance.denials import CodeTables, denial_for
from services.remittance.era import ZERO, ClaimPayment
from services.remittance.posting import post, shortfall

QUEUED_AT = datetime(2026, 3, 25, 9, 31, tzinfo=UTC)
REG = registry()


# --- the validated build (the path before), the judge -------------------------------------------


def judge_reasons(payment: ClaimPayment, tables: CodeTables) -> list[DenialReason]:
    out = []
    for line, adj in payment.all_adjustments():
        if adj.amount <= 0 or not tables.is_denial(adj.reason):
            continue
        info = tables.carc_info(adj.reason)
        out.append(
            DenialReason(
                group=adj.group,
                carc=adj.reason,
                amount=adj.amount,
                line=line,
                category=info.category if info else "other",
                description=info.description if info else None,
            )
        )
    return out


def judge_lines(payment: ClaimPayment, tables: CodeTables) -> list[DeniedLine]:
    out = []
    for number, line in enumerate(payment.service_lines, start=1):
        carcs = [a.reason for a in line.adjustments if a.amount > 0 and tables.is_denial(a.reason)]
        if not carcs and not line.recoded:
            continue
        out.append(
            DeniedLine(
                line=number,
                procedure=line.procedure,
                original_procedure=line.original_procedure,
                modifiers=list(line.modifiers),
                charge=line.charge,
                paid=line.paid,
                carcs=list(dict.fromkeys(carcs)),
            )
        )
    return out


def judge_denial_for(
    posting: RemittancePosting,
    payment: ClaimPayment,
    tables: CodeTables,
    *,
    underpayment_tolerance: Decimal = Decimal("1.00"),
    queued_at: datetime,
    shortfall: Decimal | None = None,
) -> Denial | None:
    if posting.status in {"reversed", "unmatched"}:
        return None
    reasons = judge_reasons(payment, tables)
    remark_infos = [(code, tables.rarc_info(code)) for code in posting.remark_codes]
    known_rarcs = [info for _, info in remark_infos if info is not None]
    if shortfall is None:
        shortfall = denials._shortfall(posting, payment)
    kind: Literal["denied", "partially_denied", "underpaid"]
    if posting.status == "denied":
        kind = "denied"
    elif reasons:
        kind = "partially_denied"
    elif shortfall is not None and shortfall > underpayment_tolerance:
        kind = "underpaid"
    else:
        return None
    at_stake: Decimal
    if reasons:
        reasons = [
            r.model_copy(update={"category": denials._refined(r, known_rarcs)}) for r in reasons
        ]
        top = max(reasons, key=lambda r: r.amount)
        category: Any = top.category
        at_stake = sum((r.amount for r in reasons), ZERO)
    elif kind == "underpaid":
        category, at_stake = "underpayment", shortfall or ZERO
    else:
        category, at_stake = denials._category_from_remarks(known_rarcs), posting.total_charge
    if posting.claim_status_code == "23" and category == "other":
        category = "coordination_of_benefits"
    action, text = denials._next_action(category, reasons, tables, known_rarcs)
    frequency = {"correct_and_replace": "7", "correct_and_resubmit": "1"}.get(action)
    if frequency == "7" and not posting.payer_claim_control_number:
        text += " The 835 has no payer claim control number for REF*F8: ask the payer for it."
    return Denial(
        event_id=event_id(posting.event_id, "remittance.denials", "v1"),
        claim_id=posting.claim_id,
        encounter_id=posting.encounter_id,
        payer_id=posting.payer_id,
        payer_claim_control_number=posting.payer_claim_control_number,
        claim_status_code=posting.claim_status_code,
        kind=kind,
        category=category,
        action=action,
        next_action=text,
        resubmit_frequency=frequency,
        reasons=reasons,
        remarks=[
            RemarkCode(code=code, description=info.description if info else None)
            for code, info in remark_infos
        ],
        lines=judge_lines(payment, tables),
        total_charge=posting.total_charge,
        paid=posting.paid,
        patient_responsibility=posting.patient_responsibility,
        at_stake=at_stake,
        expected=posting.expected,
        variance=posting.variance,
        payment_trace=posting.payment_trace,
        file_id=posting.file_id,
        posting_event_id=posting.event_id,
        queued_at=queued_at,
    )


# --- the comparison ------------------------------------------------------------------------------


def _same(made: Denial | None, judged: Denial | None, where: Any) -> bool:
    if judged is None:
        assert made is None, where
        return False
    assert made is not None, where
    assert made == judged, where
    assert repr(made) == repr(judged), where  # value types too (a Decimal's exponent)
    assert made.model_dump_json() == judged.model_dump_json(), where
    topic = "remittance.denials.v1"
    assert REG.encode(topic, made) == REG.encode(topic, judged), where
    assert made.model_fields_set == judged.model_fields_set, where
    return True


def test_the_item_made_is_the_item_validated() -> None:
    tables = CodeTables()
    kinds: dict[str, int] = {}
    for payment, claim, kw in cases():
        posting = post(payment, claim, **kw)
        owed = shortfall(payment, claim, posting.expected, kw.get("prior")).shortfall
        for short in (owed, None, Decimal("5.005")):
            for tolerance in (Decimal("1.00"), Decimal("0")):
                args = (posting, payment, tables)
                options = {
                    "underpayment_tolerance": tolerance,
                    "queued_at": QUEUED_AT,
                    "shortfall": short,
                }
                made = denial_for(*args, **options)  # type: ignore[arg-type]
                judged = judge_denial_for(*args, **options)  # type: ignore[arg-type]
                where = (payment.patient_control_number, claim is not None, short, tolerance)
                if _same(made, judged, where):
                    assert made is not None
                    kinds[made.kind] = kinds.get(made.kind, 0) + 1
    # Every kind is among them, with reasons, remarks and lines.
    assert set(kinds) == {"denied", "partially_denied", "underpaid"}, kinds
    assert min(kinds.values()) > 10, kinds


def test_the_judge_sees_an_amount_not_in_cents() -> None:
    """The comparison fails on an item whose money is not in cents as ``Money`` holds it."""
    payment, claim, kw = next(c for c in cases() if c[0].paid == Decimal("40.005"))
    posting = post(payment, claim, **kw)
    odd = Decimal("5.005")
    made = denial_for(posting, payment, CodeTables(), queued_at=QUEUED_AT, shortfall=odd)
    assert made is not None
    unrounded = made.model_copy(update={"at_stake": odd})
    with pytest.raises(AssertionError):
        _same(unrounded, made, "unrounded")
