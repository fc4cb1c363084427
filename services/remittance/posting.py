"""Posting: turn one 835 claim payment, matched to its submitted claim, into a posting.

Status rules, in order: no matching claim -> unmatched; CLP02 22 -> reversed; CLP02 4, or
nothing paid and nothing owed by the patient -> denied; a line denied (paid 0, no patient
share) or paid below the expected reimbursement -> partially_paid; else paid. Medicare
sequestration (CARC 253) is a statutory cut, not an underpayment: it counts towards the
allowed amount for the status but still shows in the variance, which is money against
expectation: (paid + patient responsibility) - expected.

Expected reimbursement: the claim's own (the claims stage prices professional lines from
the Physician Fee Schedule: RVUs x GPCI x conversion factor); when the claim has none and
the 835 pays by DRG (CLP11), the DRG's relative weight from the CMS table (for the
discharge's fiscal year) x the configured base rate.

Reversals and corrections: a payer corrects a payment with a reversal (CLP02 22, every
amount negated) and a new adjudication. Each is its own posting; a claim's net is the sum
over its postings (``net``). Posting event ids are derived from the claim, the payer's claim
control number, the status code, the payment's trace number and the claim's occurrence in
that payment, so a redelivered file repeats its ids while a correction never collides with
the payment it corrects.

Provider-level adjustments (PLB: interest, recoupments, forward balances) belong to the
payment, not to a claim: ``reconcile`` applies them to the payment's total, which must then
equal what the payer sent (BPR02), and the ledger keeps them per payment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal, Protocol

from pipeline.errors import InputError
from pipeline.models import (
    Adjustment,
    LineAdjustment,
    PostedLine,
    RemittancePosting,
    SubmittedClaim,
    event_id,
)
from pipeline.serde import model_maker
from services.remittance.era import (
    ZERO,
    CasAdjustment,
    ClaimDefect,
    ClaimPayment,
    ProviderAdjustment,
    Read835,
    Remittance,
    ServicePayment,
    direct_init,
)

STAGE = "remittance"
VERSION = "v1"
SEQUESTRATION = "253"
_CENT = Decimal("0.01")

MEDICARE_FILING = ("MA", "MB")  # CLP06 claim filing indicators of Medicare Part A and B
# Expected amounts claimflow prices itself are Medicare's: the physician fee schedule and the
# IPPS MS-DRG rate. They say nothing of another plan's payment (a contract names its own).
MEDICARE_BASES = ("fee_schedule", "ms_drg")
PostingStatus = Literal["paid", "partially_paid", "denied", "reversed", "unmatched"]
ClaimLookup = Mapping[str, SubmittedClaim] | Callable[[str], SubmittedClaim | None]

PLB_REASONS = {
    "50": "late charge",
    "51": "interest penalty charge",
    "72": "authorized return",
    "90": "early payment allowance",
    "AH": "origination fee",
    "AM": "applied to borrower's account",
    "AP": "acceleration of benefits",
    "B2": "rebate",
    "B3": "recovery allowance",
    "BD": "bad debt adjustment",
    "BN": "bonus",
    "C5": "temporary allowance",
    "CR": "capitation interest",
    "CS": "adjustment",
    "CT": "capitation payment",
    "CV": "capital passthru",
    "CW": "certified registered nurse anesthetist passthru",
    "DM": "direct medical education passthru",
    "E3": "withholding",
    "FB": "forwarding balance",
    "FC": "fund allocation",
    "GO": "graduate medical education passthru",
    "HM": "hemophilia clotting factor supplement",
    "IP": "incentive premium payment",
    "IR": "internal revenue service withholding",
    "IS": "interim settlement",
    "J1": "nonreimbursable",
    "L3": "penalty",
    "L6": "interest owed",
    "LE": "levy",
    "LS": "lump sum",
    "OA": "organ acquisition passthru",
    "OB": "offset for affiliated providers",
    "PI": "periodic interim payment",
    "PL": "payment final",
    "RA": "retro-activity adjustment",
    "RE": "return on equity",
    "SL": "student loan repayment",
    "TL": "third party liability",
    "WO": "overpayment recovery",
    "WU": "unspecified recovery",
}
"""PLB03-1 adjustment reason codes of 005010X221A1."""


class DrgWeightSource(Protocol):
    """Where DRG relative weights come from (the CMS table, by discharge fiscal year)."""

    def weight(self, drg: str, discharge: date) -> object | None: ...


@dataclass(frozen=True)
class Pricing:
    """How the expected reimbursement of a payment is found (see the module docstring)."""

    drg_weights: DrgWeightSource | None = None
    drg_base_rate: Decimal | None = None

    def expected(
        self, payment: ClaimPayment, claim: SubmittedClaim | None, payer_id: str | None = None
    ) -> tuple[Decimal | None, str]:
        """Expected reimbursement and its basis ("none" when it cannot be known).

        The claim's expected amount is the billed payer's: a payment from another payer (a
        secondary paying a crossover under the primary's claim number), one that says it
        paid as secondary or tertiary, or a non-Medicare plan (CLP06) against a Medicare
        price (fee schedule, MS-DRG) has no expected amount, so no underpayment is judged.
        """
        if claim is None:
            return None, "none"
        if payer_id is not None and payer_id != claim.payer_id:
            return None, "other_payer"
        if (payment.payer_sequence or 1) > 1:
            return None, "not_primary"
        medicare_plan = payment.filing_indicator in (None, *MEDICARE_FILING)
        medicare_price = claim.expected_basis.startswith(MEDICARE_BASES)
        if claim.expected_reimbursement is not None:
            if medicare_price and not medicare_plan:
                return None, "no_contract"
            return claim.expected_reimbursement, claim.expected_basis
        if claim.expected_basis == "no_contract" or claim.expected_basis.startswith("contract "):
            # The claims stage knew the payer: no contract (and not Medicare), or a contract
            # it could not price. A Medicare DRG price is no measure of such a payment.
            return None, claim.expected_basis
        if (
            payment.drg_code
            and medicare_plan
            and self.drg_weights is not None
            and self.drg_base_rate
        ):
            discharge = payment.statement_end or claim.service_end
            found = self.drg_weights.weight(payment.drg_code, discharge)
            weight = getattr(found, "weight", found)
            if isinstance(weight, int | float | Decimal):
                amount = Decimal(str(weight)) * self.drg_base_rate
                return amount.quantize(_CENT, rounding=ROUND_HALF_UP), "drg"
        return None, "none"


def _line_denied(line: ServicePayment) -> bool:
    """Nothing paid on a charged line and nothing of it left to the patient."""
    if line.paid != 0 or line.charge == 0:
        return False  # most lines: their adjustments are not looked at
    return not any(a.group == "PR" and a.amount != 0 for a in line.adjustments)


def sequestration(payment: ClaimPayment) -> Decimal:
    """Sum of the CARC 253 adjustments on the claim and its lines (added in the order of
    ``all_adjustments``, without making that list: a posting asks three times)."""
    total = ZERO
    for a in payment.adjustments:
        if a.reason == SEQUESTRATION:
            total += a.amount
    for line in payment.service_lines:
        for a in line.adjustments:
            if a.reason == SEQUESTRATION:
                total += a.amount
    return total


@direct_init
@dataclass(frozen=True)
class Prior:
    """Earlier postings of the same claim by the same payer: a claim the payer split over
    several CLPs (in one 835 or several) nets across them."""

    charge: Decimal = ZERO
    paid: Decimal = ZERO
    patient_responsibility: Decimal = ZERO
    sequestration: Decimal = ZERO


@direct_init
@dataclass(frozen=True)
class Shortfall:
    """Expected against what the claim brought in from its payer so far."""

    variance: Decimal | None  # (paid + patient responsibility) - expected, over the payer's CLPs
    shortfall: Decimal | None  # expected - what came in, sequestration not counted as short


def shortfall(
    payment: ClaimPayment,
    claim: SubmittedClaim | None,
    expected: Decimal | None,
    prior: Prior | None = None,
) -> Shortfall:
    """Variance and shortfall netted over the payer's CLPs for the claim.

    Until the payer has adjudicated the whole billed charge (the CLP03s of a split add up
    to less than the claim's charge) there is no variance yet: the rest is still to come.
    """
    if expected is None or claim is None or payment.is_reversal:
        return Shortfall(None, None)
    prior = prior or Prior()
    if prior.charge + payment.charge < claim.total_charge:
        return Shortfall(None, None)  # part of a split: the other part is still to come
    brought_in = prior.paid + prior.patient_responsibility
    brought_in += payment.paid + payment.patient_responsibility
    variance = brought_in - expected
    return Shortfall(variance, -variance - prior.sequestration - sequestration(payment))


def posting_status(
    payment: ClaimPayment,
    claim: SubmittedClaim | None,
    expected: Decimal | None = None,
    prior: Prior | None = None,
) -> PostingStatus:
    """paid, partially_paid, denied, reversed or unmatched (see the module docstring)."""
    return _status(payment, claim, lambda: shortfall(payment, claim, expected, prior))


def _status(
    payment: ClaimPayment, claim: SubmittedClaim | None, owed: Callable[[], Shortfall]
) -> PostingStatus:
    """``posting_status``, with the shortfall asked of ``owed`` when it decides."""
    if claim is None:
        return "unmatched"
    if payment.status_code == "22":
        return "reversed"
    if payment.status_code == "4" or (payment.paid == 0 and payment.patient_responsibility == 0):
        return "denied"
    for line in payment.service_lines:
        if _line_denied(line):
            return "partially_paid"
    short = owed().shortfall
    if short is not None and short > 0:
        return "partially_paid"
    return "paid"


def posting_event_id(
    claim_id: str, payment: ClaimPayment, trace: str | None, file_id: str, occurrence: int = 0
) -> str:
    """The posting's deterministic id (see the module docstring)."""
    parts = [claim_id, payment.payer_claim_control_number or "", payment.status_code]
    parts += [trace or file_id, STAGE, VERSION]
    if occurrence:
        parts.append(str(occurrence))
    return event_id(*parts)


def post(
    claim_payment: ClaimPayment,
    claim: SubmittedClaim | None,
    *,
    payer_id: str,
    file_id: str,
    payment_trace: str | None,
    payment_date: date | None,
    posted_at: datetime,
    occurrence: int = 0,
    pricing: Pricing | None = None,
    prior: Prior | None = None,
    warnings: Sequence[str] = (),
) -> RemittancePosting:
    """Post one CLP loop against the claim it answers (None when no claim matched).

    ``prior``: the payer's earlier postings of the claim, when it split the claim;
    ``warnings``: the file's and the payment's defects that changed no amount.
    """
    if not payer_id:
        raise InputError("payer_id", "a posting needs the payer id")
    expected, _basis = (pricing or Pricing()).expected(claim_payment, claim, payer_id)
    owed = shortfall(claim_payment, claim, expected, prior)  # the status's and the variance's
    status = _status(claim_payment, claim, lambda: owed)
    variance = owed.variance
    claim_id = claim.claim_id if claim is not None else claim_payment.patient_control_number
    crossover = claim_payment.crossover_payer or ("unnamed" if claim_payment.forwarded else None)
    # Each CAS triplet once, in the order of ``all_adjustments`` (claim first, then each
    # line's): its amount in cents for both the posting's adjustments and the line's.
    adjustments: list[Adjustment] = []
    claim_adjustments: list[LineAdjustment] = []
    for a in claim_payment.adjustments:
        adjustment, line_adjustment = _cas_models(a, None)
        adjustments.append(adjustment)
        claim_adjustments.append(line_adjustment)
    lines: list[PostedLine] = []
    for number, line in enumerate(claim_payment.service_lines, start=1):
        line_adjustments: list[LineAdjustment] = []
        for a in line.adjustments:
            adjustment, line_adjustment = _cas_models(a, number)
            adjustments.append(adjustment)
            line_adjustments.append(line_adjustment)
        lines.append(
            _posted_line(
                number,
                line.qualifier,
                line.procedure,
                list(line.modifiers),
                line.revenue_code,
                cents(line.charge),
                cents(line.paid),
                float(line.units) if line.units is not None else None,
                line.original_procedure,
                line.line_control_number,
                line.service_date,
                line_adjustments,
            )
        )
    return _posting(
        event_id=posting_event_id(claim_id, claim_payment, payment_trace, file_id, occurrence),
        claim_id=claim_id,
        encounter_id=claim.encounter_id if claim is not None else None,
        payer_id=payer_id,
        payer_claim_control_number=claim_payment.payer_claim_control_number,
        claim_status_code=claim_payment.status_code,
        status=status,
        total_charge=cents(claim_payment.charge),
        paid=cents(claim_payment.paid),
        patient_responsibility=cents(claim_payment.patient_responsibility),
        expected=None if expected is None else cents(expected),
        variance=None if variance is None else cents(variance),
        adjustments=adjustments,
        remark_codes=claim_payment.all_remark_codes(),
        payment_trace=payment_trace,
        payment_date=payment_date,
        file_id=file_id,
        posted_at=posted_at,
        payer_sequence=claim_payment.payer_sequence,
        crossover_payer=crossover,
        warnings=[*warnings, *claim_payment.warnings],
        lines=lines,
        claim_adjustments=claim_adjustments,
    )


# The posting is made from values of the types its fields hold (the 835 as read, the claim as
# validated when it came in), with the money in cents as ``Money`` gives it: validating them
# again only cost CPU (a posting with its lines and adjustments was a dozen models). Each
# model is made from its values as arguments, its nested models already made, instead of from
# a dict that a trusted build (``model_builder``) copied again, model by model:
# with each amount put in cents once, that took ``post`` from 31 us to 25 a claim payment of
# the simulator's 835s. tests/unit/test_remittance_posting_build.py compares it with the
# validated build on every claim payment of the corpus: equal, the same JSON, the same Avro
# bytes.
_posting = model_maker(RemittancePosting)
_posted_line = model_maker(PostedLine)
_adjustment = model_maker(Adjustment)
_line_adjustment = model_maker(LineAdjustment)


# A CAS triplet as the posting carries it, twice: in its adjustments (``Adjustment``, with
# the line) and in the claim's or the line's (``LineAdjustment``, with the quantity); each
# amount in cents once for both. The models are frozen values, and an 835 repeats the same
# triplets (a fee schedule's contractual adjustment per code and payer: 6,140 triplets of the
# stage bench's 835s are 1,670 distinct): the two made for a triplet are kept, by its
# group, reason and line and the very amount and quantity objects the reader made (it
# keeps one per text, ``era._money_of``), which the entry holds so that no other object can
# take their ids while it is kept. A triplet read from a record's JSON has objects of its
# own: made again, as any triplet not kept.
_CAS_KEPT = 8192
_CAS_MODELS: dict[tuple[Any, ...], tuple[Any, Any, Adjustment, LineAdjustment]] = {}


def _cas_models(a: CasAdjustment, line: int | None) -> tuple[Adjustment, LineAdjustment]:
    """The posting's two models of CAS triplet ``a`` (of ``line``, or of the claim: None)."""
    key = (a.group, a.reason, id(a.amount), id(a.quantity), line)
    kept = _CAS_MODELS.get(key)
    if kept is not None and kept[0] is a.amount and kept[1] is a.quantity:
        return kept[2], kept[3]
    amount = cents(a.amount)
    quantity = float(a.quantity) if a.quantity is not None else None
    adjustment = _adjustment(a.group, a.reason, amount, line)
    line_adjustment = _line_adjustment(a.group, a.reason, amount, quantity)
    if len(_CAS_MODELS) >= _CAS_KEPT:
        _CAS_MODELS.clear()
    _CAS_MODELS[key] = (a.amount, a.quantity, adjustment, line_adjustment)
    return adjustment, line_adjustment


def cents(value: Decimal) -> Decimal:
    """An amount as ``pipeline.models.Money`` holds it."""
    return value.quantize(_CENT, rounding=ROUND_HALF_UP)


def occurrences(remittance: Remittance) -> Iterator[tuple[int, ClaimPayment]]:
    """Each claim payment with its occurrence number among the payment's CLPs of that claim."""
    seen: dict[str, int] = {}  # not a Counter: its missing key is a call to Python code
    for payment in remittance.claims:
        pcn = payment.patient_control_number
        occurrence = seen.get(pcn, 0)
        yield occurrence, payment
        seen[pcn] = occurrence + 1


def payer_of(remittance: Remittance) -> str:
    """The payer id of an 835: N1*PR N104 or REF*2U, else TRN03, else the payer's name."""
    return remittance.payer_id or remittance.originator_id or remittance.payer_name


def post_remittance(
    remittance: Remittance,
    claims: ClaimLookup,
    *,
    file_id: str,
    posted_at: datetime,
    payer_id: str | None = None,
    pricing: Pricing | None = None,
) -> list[RemittancePosting]:
    """Post every claim of one 835 payment, matching CLP01 to the submitted claim id."""
    lookup = claims.get if isinstance(claims, Mapping) else claims
    payer = payer_id or payer_of(remittance)
    return [
        post(
            payment,
            lookup(payment.patient_control_number),
            payer_id=payer,
            file_id=file_id,
            payment_trace=remittance.trace_number,
            payment_date=remittance.payment_date,
            posted_at=posted_at,
            occurrence=occurrence,
            pricing=pricing,
        )
        for occurrence, payment in occurrences(remittance)
    ]


# --- a claim's net over its postings -------------------------------------------------------


@dataclass(frozen=True)
class ClaimNet:
    """What a claim nets to over all its postings (payments, reversals, corrections)."""

    claim_id: str
    postings: int
    paid: Decimal
    patient_responsibility: Decimal
    adjustments: dict[str, Decimal] = field(default_factory=dict)  # by CAS group
    status: PostingStatus | None = None  # of the last posting that is not a reversal


def net(postings: Iterable[RemittancePosting]) -> ClaimNet:
    """Sum one claim's postings, in the order they were posted."""
    items = list(postings)
    if not items:
        raise InputError("postings", "no posting to net")
    claim_ids = {p.claim_id for p in items}
    if len(claim_ids) != 1:
        raise InputError("postings", f"postings of several claims: {sorted(claim_ids)}")
    by_group: dict[str, Decimal] = {}
    for posting in items:
        for adj in posting.adjustments:
            by_group[adj.group] = by_group.get(adj.group, ZERO) + adj.amount
    current = [p.status for p in items if p.status != "reversed"]
    return ClaimNet(
        claim_id=items[0].claim_id,
        postings=len(items),
        paid=sum((p.paid for p in items), ZERO),
        patient_responsibility=sum((p.patient_responsibility for p in items), ZERO),
        adjustments=by_group,
        status=current[-1] if current else "reversed",
    )


# --- the payment as a whole: claims and provider-level adjustments --------------------------


@direct_init
@dataclass(frozen=True)
class PaymentSummary:
    """One 835 payment reconciled: claim payments, PLB adjustments applied, and the cash."""

    payer_id: str
    payment_trace: str
    transaction_control_number: str
    payment_amount: Decimal  # BPR02, signed
    payment_method: str
    payment_date: date | None
    claims: int
    claims_paid: Decimal
    provider_adjustments: tuple[ProviderAdjustment, ...]
    provider_adjustment_total: Decimal
    balance_errors: tuple[str, ...]

    @property
    def cash(self) -> Decimal:
        """Claim payments less the provider-level adjustments: what should arrive."""
        return self.claims_paid - self.provider_adjustment_total

    @property
    def balanced(self) -> bool:
        """True when every balancing rule holds."""
        return not self.balance_errors


def reconcile(remittance: Remittance) -> PaymentSummary:
    """Apply the payment's PLB adjustments to its claim payments and check against BPR02."""
    return PaymentSummary(
        payer_id=payer_of(remittance),
        payment_trace=remittance.trace_number,
        transaction_control_number=remittance.transaction_control_number,
        payment_amount=remittance.net_payment,
        payment_method=remittance.payment_method,
        payment_date=remittance.payment_date,
        claims=len(remittance.claims),
        claims_paid=remittance.claims_paid,
        provider_adjustments=remittance.provider_adjustments,
        provider_adjustment_total=remittance.provider_adjustment_total,
        balance_errors=tuple(remittance.balance_errors()),
    )


def plb_reason(code: str) -> str:
    """What a PLB03-1 reason code means ('unknown' for a code outside the 835 guide)."""
    return PLB_REASONS.get(code, "unknown")


# --- what a file holds that can be posted, and what is held ---------------------------------


@direct_init
@dataclass(frozen=True)
class Held:
    """Part of an 835 that is not posted, and why: a transaction set that cannot be read or
    does not balance, or one claim of a balanced payment that cannot be read or balanced."""

    kind: Literal["unreadable_file", "unbalanced_payment", "unbalanced_claim", "unreadable_claim"]
    transaction_control_number: str | None
    remittance: Remittance | None
    claims: tuple[ClaimPayment | ClaimDefect, ...]
    errors: tuple[str, ...]


@direct_init
@dataclass(frozen=True)
class Postable:
    """A payment that balances and those of its claims that can be posted."""

    remittance: Remittance
    claims: tuple[ClaimPayment, ...]

    def occurrences(self) -> Iterator[tuple[int, ClaimPayment]]:
        """``occurrences`` of the whole payment (stable ids), only for the postable claims."""
        keep = {id(c) for c in self.claims}
        return ((n, c) for n, c in occurrences(self.remittance) if id(c) in keep)


def triage(read: Read835) -> tuple[list[Postable], list[Held]]:
    """Split an 835 into what can be posted and what goes to exceptions.

    Errors are isolated: a transaction set that cannot be read, or whose payment does not
    balance (BPR02 against its claims and PLBs), is held whole and the file's other
    transaction sets are posted; in a payment that balances, a claim that does not (or that
    could not be read) is held alone and the payment's other claims are posted.
    """
    postable: list[Postable] = []
    held: list[Held] = []
    for transaction in read.transactions:
        st = transaction.control_number
        remit = transaction.remittance
        if remit is None:
            error = f"ST {st}: {transaction.error}"
            held.append(Held("unreadable_file", st, None, (), (error,)))
            continue
        payment_errors = remit.payment_balance_errors()
        if payment_errors:
            everything: tuple[ClaimPayment | ClaimDefect, ...] = (*remit.claims, *remit.defects)
            errors = tuple(f"ST {st}: {e}" for e in remit.balance_errors())
            held.append(Held("unbalanced_payment", st, remit, everything, errors))
            continue
        good: list[ClaimPayment] = []
        for claim in remit.claims:
            claim_errors = claim.balance_errors()
            if claim_errors:
                held.append(Held("unbalanced_claim", st, remit, (claim,), tuple(claim_errors)))
            else:
                good.append(claim)
        for defect in remit.defects:
            error = f"CLP01 {defect.patient_control_number}: {defect.error}"
            held.append(Held("unreadable_claim", st, remit, (defect,), (error,)))
        postable.append(Postable(remit, tuple(good)))
    return postable, held
