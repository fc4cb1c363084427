"""Coordination of benefits: what a secondary or tertiary 837 says about the payers before it.

A claim to the second (or third) payer carries, for every payer that adjudicated it first,
the loops of 005010X222A1 / 005010X223A2 that report that adjudication:

- 2320 other subscriber information: SBR (that payer's place, P or S, the patient's
  relationship to its subscriber, group, claim filing indicator), the claim-level CAS
  adjustments, AMT*D the amount that payer paid, OI (assignment and release of
  information);
- 2330A other subscriber (NM1*IL with the member id) and 2330B other payer (NM1*PR with its
  payer id, the adjudication date DTP*573 when no line reports one, and REF*F8 that payer's
  claim control number);
- 2430 line adjudication under each 2400 line: SVD (payer id, paid, procedure, units), the
  line's CAS adjustments, DTP*573 the adjudication date.

The guides' balancing rule is checked before anything is written: for each prior payer,
the claim's charge less its claim and line adjustments equals what it paid, and each line's
charge less its adjustments equals the line's paid amount. A prior adjudication that does
not balance is an ``InputError`` naming the payer and the amounts, never a claim a payer
would reject.

``prior_payer`` builds one prior payer from that payer's posting (remittance.posted.v1),
whose lines carry the line control numbers (REF*6R) this stage wrote, so each adjudicated
line finds the 2400 line it answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Literal

from pipeline.errors import InputError
from pipeline.models import Coverage, LineAdjustment, Patient, RemittancePosting
from services.x12.writer import (
    Element,
    Rendered,
    Segment,
    amount,
    comp,
    d8,
    early,
    ident,
    quantity,
    text,
)

Sequence_ = Literal["P", "S", "T"]
SEQUENCE_CODES: tuple[Sequence_, ...] = ("P", "S", "T")
_CAS_PER_SEGMENT = 6
_ZERO = Decimal("0.00")


@dataclass(frozen=True)
class LineAdjudication:
    """One billed line as a prior payer adjudicated it (a 2430 loop)."""

    line_number: int  # the 2400 line (LX) it answers
    qualifier: str  # SVC01-1 as the payer sent it: HC (HCPCS), NU (revenue code only) …
    procedure: str
    modifiers: tuple[str, ...]
    paid: Decimal
    units: float | None
    revenue_code: str | None
    adjustments: tuple[LineAdjustment, ...]


@dataclass(frozen=True)
class PriorPayer:
    """A payer that adjudicated the claim before the one it is billed to (2320/2330/2430)."""

    coverage: Coverage
    sequence: Sequence_
    paid: Decimal
    adjudicated: date
    payer_claim_control_number: str | None = None
    claim_adjustments: tuple[LineAdjustment, ...] = ()
    lines: tuple[LineAdjudication, ...] = ()


def sequence_code(position: int) -> Sequence_:
    """SBR01 for the payer in ``position`` (1 primary, 2 secondary, 3 tertiary)."""
    if not 1 <= position <= len(SEQUENCE_CODES):
        raise InputError("coverages", f"no claim for payer {position}: at most three are billed")
    return SEQUENCE_CODES[position - 1]


def prior_payer(posting: RemittancePosting, coverage: Coverage, position: int) -> PriorPayer:
    """The prior payer a posting describes; its lines matched to ours by REF*6R (the claim
    the payer answered, ``<claim id>L<line>``), else by their order."""
    claim_id = posting.claim_id
    if posting.payment_date is None:
        raise InputError("payment_date", "the prior payer's adjudication date is unknown")
    lines: list[LineAdjudication] = []
    for posted in posting.lines:
        number = posted.line
        control = posted.line_control_number or ""
        prefix = f"{claim_id}L"
        if control.startswith(prefix) and control[len(prefix) :].isdigit():
            number = int(control[len(prefix) :])
        lines.append(
            LineAdjudication(
                line_number=number,
                qualifier=posted.qualifier,
                procedure=posted.procedure,
                modifiers=tuple(posted.modifiers),
                paid=posted.paid,
                units=posted.units,
                revenue_code=posted.revenue_code,
                adjustments=tuple(posted.adjustments),
            )
        )
    return PriorPayer(
        coverage=coverage,
        sequence=sequence_code(position),
        paid=posting.paid,
        adjudicated=posting.payment_date,
        payer_claim_control_number=posting.payer_claim_control_number,
        claim_adjustments=tuple(posting.claim_adjustments),
        lines=tuple(lines),
    )


def check_balance(
    prior: PriorPayer, total_charge: Decimal, line_charges: dict[int, Decimal]
) -> None:
    """The COB balancing rules of the 837 guides, for one prior payer."""
    payer = prior.coverage.payer_id
    adjusted = sum((a.amount for a in prior.claim_adjustments), _ZERO)
    for line in prior.lines:
        charge = line_charges.get(line.line_number)
        if charge is None:
            raise InputError(
                f"prior_payers[{payer}].lines",
                f"line {line.line_number} adjudicated by {payer} is not on the claim",
            )
        line_adjusted = sum((a.amount for a in line.adjustments), _ZERO)
        if charge - line_adjusted != line.paid:
            raise InputError(
                f"prior_payers[{payer}].lines[{line.line_number}]",
                f"charge {charge} - adjustments {line_adjusted} != paid {line.paid}",
            )
        adjusted += line_adjusted
    if total_charge - adjusted != prior.paid:
        raise InputError(
            f"prior_payers[{payer}]",
            f"claim charge {total_charge} - adjustments {adjusted} != paid {prior.paid} (AMT*D)",
        )


def cas_segments(adjustments: tuple[LineAdjustment, ...]) -> list[Segment | Rendered]:
    """CAS segments, one per group code, at most six reason/amount/quantity triplets each."""
    by_group: dict[str, list[LineAdjustment]] = {}
    for adj in adjustments:
        by_group.setdefault(adj.group, []).append(adj)
    out: list[Segment | Rendered] = []
    for group, items in by_group.items():
        for start in range(0, len(items), _CAS_PER_SEGMENT):
            elements: list[str] = [group]
            for adj in items[start : start + _CAS_PER_SEGMENT]:
                qty = quantity(adj.quantity) if adj.quantity is not None else ""
                elements += [adj.reason, amount(adj.amount), qty]
            out.append(early("CAS", *elements))
    return out


def _relationship(coverage: Coverage) -> str:
    return coverage.relationship.strip().upper() or "18"


def _other_subscriber(
    coverage: Coverage,
    sequence: str,
    patient: Patient,
    adjudication: list[Segment | Rendered],
    *,
    institutional: bool,
) -> list[Segment | Rendered]:
    """2320 SBR, the adjudication (CAS, AMT*D) when there is one, OI; 2330A NM1*IL (the
    other subscriber); 2330B NM1*PR (the other payer)."""
    field = f"other_payers[{coverage.payer_id}]"
    group = ident(coverage.group_number, f"{field}.group_number") if coverage.group_number else ""
    relationship = _relationship(coverage)
    filing = coverage.plan_type.upper()
    out = [early("SBR", sequence, relationship, group, "", "", "", "", "", filing), *adjudication]
    # OI03 benefits assigned, OI04 patient signature on file (837P only), OI06 release.
    out.append(early("OI", "", "", "Y", "" if institutional else "P", "", "Y"))
    member = ident(coverage.member_id, f"{field}.member_id", min_len=2)
    holder = coverage.subscriber if relationship != "18" else None
    last, first = (
        (holder.last_name, holder.first_name)
        if holder
        else (
            patient.last_name,
            patient.first_name,
        )
    )
    out.append(early("NM1", "IL", "1", text(last, 60), text(first, 35), "", "", "", "MI", member))
    payer_id = ident(coverage.payer_id, f"{field}.payer_id", min_len=2)
    name = text(coverage.payer_name, 60)
    out.append(early("NM1", "PR", "2", name, "", "", "", "", "PI", payer_id))
    return out


def later_payer_loops(
    later: tuple[Coverage, ...], patient: Patient, first: int, *, institutional: bool = False
) -> list[Segment | Rendered]:
    """2320/2330A/2330B of the payers after the one billed (positions from ``first``): who
    they are, nothing adjudicated yet."""
    out: list[Segment | Rendered] = []
    for position, coverage in enumerate(later, start=first):
        sequence = sequence_code(min(position, len(SEQUENCE_CODES)))
        out += _other_subscriber(coverage, sequence, patient, [], institutional=institutional)
    return out


def prior_payer_loops(
    priors: tuple[PriorPayer, ...], patient: Patient, *, institutional: bool = False
) -> list[Segment | Rendered]:
    """2320 with its 2330A and 2330B, for each prior payer in order."""
    out: list[Segment | Rendered] = []
    for prior in priors:
        coverage = prior.coverage
        field = f"prior_payers[{coverage.payer_id}]"
        adjudication = [
            *cas_segments(prior.claim_adjustments),
            early("AMT", "D", amount(prior.paid)),
        ]
        out += _other_subscriber(
            coverage, prior.sequence, patient, adjudication, institutional=institutional
        )
        if not prior.lines:
            out.append(early("DTP", "573", "D8", d8(prior.adjudicated)))
        if prior.payer_claim_control_number:
            number = ident(
                prior.payer_claim_control_number, f"{field}.payer_claim_control_number", max_len=50
            )
            out.append(early("REF", "F8", number))
    return out


def line_adjudication_loops(
    priors: tuple[PriorPayer, ...], line_number: int, revenue_code: str | None = None
) -> list[Segment | Rendered]:
    """2430 loops of one 2400 line: each prior payer's SVD, CAS and DTP*573.

    ``revenue_code`` (the billed line's) makes it the 837I form: SVD04 carries it, and SVD03
    only a procedure code the payer adjudicated (not a revenue code sent as NU).
    """
    out: list[Segment | Rendered] = []
    for prior in priors:
        for line in prior.lines:
            if line.line_number != line_number:
                continue
            procedure: Element = comp("HC", line.procedure, *line.modifiers)
            if line.qualifier == "NU":
                procedure = ""
            units = quantity(line.units) if line.units is not None else "1"
            payer_id = prior.coverage.payer_id
            paid = amount(line.paid)
            out.append(early("SVD", payer_id, paid, procedure, revenue_code or "", units))
            out.extend(cas_segments(line.adjustments))
            out.append(early("DTP", "573", "D8", d8(prior.adjudicated)))
    return out
