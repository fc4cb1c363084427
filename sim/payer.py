"""A payer simulator: acknowledges 837P/837I interchanges (999, 277CA) and answers with 835s.

Front end, per interchange: a 999 from pyx12's own validation of the 837 (a set that fails
is rejected with its IK3/IK4 errors, and its claims go no further), then a 277CA that
accepts each claim into adjudication (A2:20, with the payer's claim number) or rejects a
configurable share with real claim status codes (e.g. A7:164:IL, an invalid member id);
rejected claims get no 835.

Decisions are deterministic (seeded from the payer and claim id, never the clock) and follow
how payers price professional claims: the allowed amount is the claim's expected
reimbursement when the biller knows it, else a payer-specific share of charges; the
difference to charges is a CO-45 contractual write-off; the patient owes deductible (PR-1),
coinsurance (PR-2) and copay (PR-3) by plan type; Medicare applies 2% sequestration (CO-253);
a few claims are denied and a few lines are denied or bundled. A void (frequency 8) is
answered with a reversal (CLP02 22) of the same decision.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Literal, TypeVar

from pipeline.errors import InputError
from pipeline.models import SubmittedClaim
from services.remittance.era import ZERO, CasAdjustment
from services.x12 import writer as edi
from services.x12.guides import VERSION_277CA, VERSION_835, VERSION_999
from services.x12.reader import Segment, read_segments
from services.x12.validate import validate_with_ack

CENT = Decimal("0.01")
W = TypeVar("W", "Denial", "FrontEndRejection")


def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


# --- reading the claim back from its 837P -------------------------------------------------


@dataclass(frozen=True)
class ClaimLine:
    """One 837P service line (LX/SV1/DTP*472/REF*6R)."""

    line_number: int
    qualifier: str
    code: str
    modifiers: tuple[str, ...]
    charge: Decimal
    units: Decimal
    service_date: date | None
    service_end: date | None
    line_control_number: str | None = None
    revenue_code: str | None = None  # SV201 on an 837I
    # The patient's share the payer before this one left on the line (its 2430 CAS*PR),
    # by CARC: what a secondary or tertiary payer adjudicates.
    prior_responsibility: tuple[tuple[str, Decimal], ...] = ()


@dataclass(frozen=True)
class Claim837:
    """What the payer needs from one CLM of an 837P or 837I."""

    claim_id: str
    charge: Decimal
    place_of_service: str
    frequency: str
    filing_indicator: str
    member_id: str | None
    patient_last_name: str | None
    patient_first_name: str | None
    lines: tuple[ClaimLine, ...]
    # The subscriber (2010BA) when the patient is a dependent (2000C); None when they are one.
    insured_last_name: str | None = None
    insured_first_name: str | None = None
    institutional: bool = False  # an 837I: CLM05-1 is the facility type, lines are SV2
    drg: str | None = None  # HI*DR on an 837I
    billing_npi: str | None = None  # 2010AA of the claim's own 2000A loop
    billing_name: str | None = None
    sequence: str = "P"  # SBR01 of the 2000B: P primary, S secondary, T tertiary


def _d8(seg: Segment) -> tuple[date | None, date | None]:
    """Dates of a DTP segment: D8 CCYYMMDD or RD8 CCYYMMDD-CCYYMMDD."""
    raw = seg.el(3)
    try:
        if seg.el(2) == "RD8" and "-" in raw:
            start, end = raw.split("-", 1)
            return _ymd(start), _ymd(end)
        return _ymd(raw), None
    except ValueError:
        raise InputError(seg.ref(3), f"not a D8/RD8 date: {raw!r}") from None


@lru_cache(maxsize=4096)  # a claim's lines are mostly of one day
def _ymd(raw: str) -> date:
    return date(int(raw[0:4]), int(raw[4:6]), int(raw[6:8]))


def _decimal(seg: Segment, pos: int, default: str | None = None) -> Decimal:
    raw = seg.el(pos) or (default or "")
    try:
        return Decimal(raw)
    except ArithmeticError:
        raise InputError(seg.ref(pos), f"not a number: {raw!r}") from None


@dataclass
class _RawLine:
    sv1: Segment | None = None
    sv2: Segment | None = None
    start: date | None = None
    end: date | None = None
    control_number: str | None = None
    prior: list[tuple[str, Decimal]] | None = None  # the last 2430's CAS*PR


_SUBSCRIBER_KEYS = ("sbr09", "sbr01", "member_id", "insured_last", "insured_first")


@lru_cache(maxsize=32)
def _segments(x12: str) -> tuple[Segment, ...]:
    """An interchange's segments, read once: all the claims of a batch share one interchange,
    and reading it again per claim (and for its envelope, its 999 and its 277CA) made the
    simulator quadratic in the batch size."""
    return tuple(read_segments(x12))


def read_837_claim(x12: str, claim_id: str) -> Claim837:
    """Find claim ``claim_id`` (CLM01) in an 837P or 837I and read its lines and plan context."""
    found = _claims_of(x12).get(claim_id)
    if found is None:
        raise InputError("CLM01", f"claim {claim_id!r} is not in the 837")
    if found.claim is None:  # read once: the front end and the adjudication both ask
        found.claim = _read_claim(found.clm, dict(found.ctx), found.body)
    return found.claim


@dataclass
class _FoundClaim:
    """A claim of an interchange as found: its CLM, its plan context, the segments of its
    loop, and the claim once read (a claim that cannot be read is never kept: it fails
    again, the same way, each time it is asked for)."""

    clm: Segment
    ctx: dict[str, str | None]
    body: list[Segment]
    claim: Claim837 | None = None


@lru_cache(maxsize=32)
def _claims_of(x12: str) -> dict[str, _FoundClaim]:
    """Every claim of an interchange by CLM01 (the first, if an id comes twice), found in one
    pass. The simulator asks for each claim of a batch twice (front end, adjudication), and
    searching the interchange from its start each time made it quadratic in the batch size.
    Only the context is read here; a claim's own segments are read when it is first asked
    for (``_read_claim``), so a claim that cannot be read fails alone, as before."""
    ctx: dict[str, str | None] = {}
    claims: dict[str, _FoundClaim] = {}
    current: _FoundClaim | None = None
    institutional = ""
    billing: dict[str, str | None] = {}
    for seg in _segments(x12):
        sid = seg.id
        if sid in {"HL", "SE"} or (sid == "CLM" and current is not None):
            current = None
        if sid == "HL":
            # A new billing provider (20) or subscriber (22) starts a fresh context; a patient
            # (23) keeps the subscriber's plan, member id and name, and brings its own name.
            level = seg.el(3)
            keep = {"20": (), "22": (), "23": _SUBSCRIBER_KEYS}.get(level, tuple(ctx))
            ctx = {k: v for k, v in ctx.items() if k in keep}
            if level == "23":
                ctx["dependent"] = "Y"
        elif sid == "SBR" and current is None:
            ctx["sbr09"] = seg.el(9)
            ctx["sbr01"] = seg.el(1) or "P"
        elif sid == "NM1" and current is None and seg.el(1) in {"IL", "QC"}:
            name = (seg.el(3) or None, seg.el(4) or None)
            if seg.el(1) == "IL":
                ctx["member_id"] = seg.el(9) or None
                ctx["insured_last"], ctx["insured_first"] = name
            ctx["last"], ctx["first"] = name
        elif sid == "ST":
            institutional = "Y" if "X223" in seg.el(3) else ""
        elif sid == "NM1" and seg.el(1) == "85":
            billing = {"billing_npi": seg.el(9) or None, "billing_name": seg.el(3) or None}
        elif sid == "CLM":
            current = _FoundClaim(seg, {**ctx, **billing, "institutional": institutional}, [])
            claims.setdefault(seg.el(1), current)
        elif current is not None:
            current.body.append(seg)
    return claims


def _read_claim(clm: Segment, found: dict[str, str | None], body: list[Segment]) -> Claim837:
    """A claim from its CLM, its context and the segments of its loop."""
    lines: list[_RawLine] = []
    for seg in body:
        sid = seg.id
        if sid == "LX":
            lines.append(_RawLine())
        elif sid == "SV1" and lines:
            lines[-1].sv1 = seg
        elif sid == "SV2" and lines:
            lines[-1].sv2 = seg
        elif sid == "HI" and seg.comp(1, 1) in ("DR", "DRG"):
            found["drg"] = seg.comp(1, 2) or None
        elif sid == "DTP" and seg.el(1) == "472" and lines:
            lines[-1].start, lines[-1].end = _d8(seg)
        elif sid == "REF" and seg.el(1) == "6R" and lines:
            lines[-1].control_number = seg.el(2) or None
        elif sid == "SVD" and lines:
            lines[-1].prior = []  # a later payer's 2430 replaces an earlier one's
        elif sid == "CAS" and lines and lines[-1].prior is not None and seg.el(1) == "PR":
            for pos in range(2, 20, 3):
                if seg.el(pos):
                    lines[-1].prior.append((seg.el(pos), _decimal(seg, pos + 1)))
    return _claim837(clm, found, lines)


def _sv2_line(number: int, raw: _RawLine, sv2: Segment) -> ClaimLine:
    """An 837I line: the revenue code, and the HCPCS code when the line has one."""
    revenue = sv2.el(1)
    if not revenue:
        raise InputError("SV201", f"service line {number} has no revenue code")
    code = sv2.comp(2, 2)
    return ClaimLine(
        line_number=number,
        qualifier=(sv2.comp(2, 1) or "HC") if code else "NU",
        code=code or revenue,
        modifiers=tuple(m for m in (sv2.comp(2, k) for k in range(3, 7)) if m) if code else (),
        charge=_cents(_decimal(sv2, 3)),
        units=_decimal(sv2, 5, "1"),
        service_date=raw.start,
        service_end=raw.end,
        line_control_number=raw.control_number,
        revenue_code=revenue if code else None,
        prior_responsibility=tuple(raw.prior or ()),
    )


def _claim837(clm: Segment, ctx: dict[str, str | None], raw_lines: list[_RawLine]) -> Claim837:
    lines: list[ClaimLine] = []
    for number, raw in enumerate(raw_lines, start=1):
        if raw.sv2 is not None:
            lines.append(_sv2_line(number, raw, raw.sv2))
            continue
        sv1 = raw.sv1
        if sv1 is None:
            raise InputError("SV1", f"service line {number} has no SV1 segment")
        if not sv1.comp(1, 2):
            raise InputError("SV101-2", f"service line {number} has no procedure code")
        lines.append(
            ClaimLine(
                line_number=number,
                qualifier=sv1.comp(1, 1) or "HC",
                code=sv1.comp(1, 2),
                modifiers=tuple(m for m in (sv1.comp(1, k) for k in range(3, 7)) if m),
                charge=_cents(_decimal(sv1, 2)),
                units=_decimal(sv1, 4, "1"),
                service_date=raw.start,
                service_end=raw.end,
                line_control_number=raw.control_number,
                prior_responsibility=tuple(raw.prior or ()),
            )
        )
    if not lines:
        raise InputError("SV1", f"claim {clm.el(1)!r} has no service lines")
    dependent = ctx.get("dependent") == "Y"
    charge = _cents(_decimal(clm, 2))
    line_total = sum((line.charge for line in lines), ZERO)
    if line_total != charge:
        raise InputError("CLM02", f"claim charge {charge} != sum of the line charges {line_total}")
    return Claim837(
        claim_id=clm.el(1),
        charge=charge,
        place_of_service=clm.comp(5, 1) or "11",
        frequency=clm.comp(5, 3) or "1",
        filing_indicator=ctx.get("sbr09") or "CI",
        member_id=ctx.get("member_id"),
        patient_last_name=ctx.get("last"),
        patient_first_name=ctx.get("first"),
        lines=tuple(lines),
        insured_last_name=ctx.get("insured_last") if dependent else None,
        insured_first_name=ctx.get("insured_first") if dependent else None,
        institutional=ctx.get("institutional") == "Y",
        drg=ctx.get("drg"),
        billing_npi=ctx.get("billing_npi"),
        billing_name=ctx.get("billing_name"),
        sequence=ctx.get("sbr01") or "P",
    )


# --- adjudication policy ------------------------------------------------------------------


@dataclass(frozen=True)
class PlanRules:
    """How one kind of plan (SBR09 claim filing indicator) shares the allowed amount."""

    allowed_pct: Decimal
    coinsurance: Decimal = Decimal("0")
    copay: Decimal = Decimal("0")
    deductible_rate: float = 0.0
    deductible_max: Decimal = Decimal("0")
    sequestration: Decimal = Decimal("0")


MEDICARE_B = PlanRules(
    allowed_pct=Decimal("0.42"),
    coinsurance=Decimal("0.20"),
    deductible_rate=0.12,
    deductible_max=Decimal("257.00"),
    sequestration=Decimal("0.02"),
)
# Part A pays a stay (DRG) after the benefit-period deductible ($1,736 in 2026), no coinsurance
# for the first 60 days.
MEDICARE_A = PlanRules(
    allowed_pct=Decimal("0.40"),
    deductible_rate=0.6,
    deductible_max=Decimal("1736.00"),
    sequestration=Decimal("0.02"),
)
MEDICAID = PlanRules(allowed_pct=Decimal("0.35"))
COMMERCIAL = PlanRules(
    allowed_pct=Decimal("0.60"),
    coinsurance=Decimal("0.20"),
    copay=Decimal("25.00"),
    deductible_rate=0.18,
    deductible_max=Decimal("500.00"),
)


@dataclass(frozen=True)
class Denial:
    """A claim denial the payer may give: CARC, claim-level RARC (MOA), line-level RARC (LQ)."""

    carc: str
    claim_rarc: str | None = None
    line_rarc: str | None = None
    weight: float = 1.0


# Real CARC/RARC combinations, as payers send them.
DEFAULT_CLAIM_DENIALS: tuple[Denial, ...] = (
    Denial("16", "MA130", None),  # lacks information; unprocessable, resubmit
    Denial("50", None, "N115"),  # not medically necessary (coverage determination)
    Denial("29", None, None),  # time limit for filing expired
)


@dataclass(frozen=True)
class FrontEndRejection:
    """A 277CA claim rejection: STC category, status code, entity (code source 507/508)."""

    category: str
    status: str
    entity: str = ""
    weight: float = 1.0

    def composite(self) -> tuple[str, ...]:
        """STC01 as components."""
        return (self.category, self.status, self.entity)


DEFAULT_FRONT_END_REJECTIONS: tuple[FrontEndRejection, ...] = (
    FrontEndRejection("A7", "164", "IL", 0.4),  # invalid subscriber contract/member number
    FrontEndRejection("A3", "21", "", 0.3),  # missing or invalid information
    FrontEndRejection("A7", "562", "85", 0.2),  # billing provider NPI not on file
    FrontEndRejection("A6", "33", "", 0.1),  # subscriber and subscriber id not found
)


@dataclass(frozen=True)
class AdjudicationPolicy:
    """Pricing, denial and front-end rejection behaviour of the simulated payer."""

    plans: Mapping[str, PlanRules] = field(
        default_factory=lambda: {"MB": MEDICARE_B, "MA": MEDICARE_A, "MC": MEDICAID}
    )
    default_plan: PlanRules = COMMERCIAL
    payer_allowed_pct: Mapping[str, Decimal] = field(default_factory=dict)
    claim_denial_rate: float = 0.05
    line_denial_rate: float = 0.06
    claim_denials: tuple[Denial, ...] = DEFAULT_CLAIM_DENIALS
    front_end_rejection_rate: float = 0.02
    front_end_rejections: tuple[FrontEndRejection, ...] = DEFAULT_FRONT_END_REJECTIONS

    def plan(self, filing_indicator: str) -> PlanRules:
        """The rules for a claim filing indicator (commercial when unknown)."""
        return self.plans.get(filing_indicator, self.default_plan)


DEFAULT_POLICY = AdjudicationPolicy()

_LINE_DENIALS: tuple[tuple[str, str], ...] = (("97", "M15"), ("50", "N115"))


# --- decisions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LineDecision:
    """How the payer adjudicated one service line."""

    line: ClaimLine
    allowed: Decimal
    paid: Decimal
    adjustments: tuple[CasAdjustment, ...]
    remark_codes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClaimDecision:
    """How the payer adjudicated one claim: what the 835 will say about it."""

    claim: Claim837
    status_code: str
    charge: Decimal
    paid: Decimal
    patient_responsibility: Decimal
    payer_claim_control_number: str
    service_start: date
    service_end: date
    lines: tuple[LineDecision, ...]
    remark_codes: tuple[str, ...] = ()

    @property
    def allowed(self) -> Decimal:
        """Sum of line allowed amounts."""
        return sum((line.allowed for line in self.lines), ZERO)


def weighted(choices: Sequence[W], draw: float) -> W:
    """The choice a uniform ``draw`` in [0, 1) falls on, each choice taking its weight's share."""
    total = sum(c.weight for c in choices)
    point = draw * total
    for choice in choices:
        point -= choice.weight
        if point < 0:
            return choice
    return choices[-1]


def _rng(payer_id: str, claim_id: str) -> random.Random:
    digest = hashlib.sha256(f"{payer_id}\x1f{claim_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


@lru_cache(maxsize=8192)  # asked for by the 277CA, then by the 835
def payer_claim_control_number(payer_id: str, claim_id: str) -> str:
    """The payer's internal control number (CLP07) for a claim: stable across reruns."""
    digest = hashlib.sha256(f"icn\x1f{payer_id}\x1f{claim_id}".encode()).digest()
    return f"{int.from_bytes(digest[:8], 'big') % 10**13:013d}"


def _spread(total: Decimal, charges: Sequence[Decimal]) -> list[Decimal]:
    """Split ``total`` over lines in proportion to charges, in cents, never above a charge."""
    whole = sum(charges, ZERO)
    if whole <= 0:
        return [ZERO for _ in charges]
    out: list[Decimal] = []
    cumulative = ZERO
    given = ZERO
    for charge in charges:
        cumulative += charge
        target = _cents(total * cumulative / whole) - given
        share = min(charge, max(ZERO, target))
        out.append(share)
        given += share
    return out


def _is_visit(code: str) -> bool:
    """E/M visit codes carry the copay (one per claim)."""
    return len(code) == 5 and code.startswith("992")


def adjudicate_claim(
    claim: SubmittedClaim, *, policy: AdjudicationPolicy = DEFAULT_POLICY
) -> ClaimDecision:
    """Decide how the payer pays one submitted claim, reading its lines from the 837."""
    if claim.x12 is None:
        raise InputError("x12", f"claim {claim.claim_id}: its interchange was not found")
    parsed = read_837_claim(claim.x12, claim.claim_id)
    if parsed.charge != claim.total_charge:
        raise InputError(
            "total_charge", f"{claim.total_charge} differs from the 837 CLM02 {parsed.charge}"
        )
    rng = _rng(claim.payer_id, claim.claim_id)
    # Draw every random number up front, in a fixed order, so one decision never shifts another.
    deny_claim = rng.random() < policy.claim_denial_rate
    denial = weighted(policy.claim_denials, rng.random())
    has_deductible = rng.random()
    deductible_share = Decimal(str(round(rng.uniform(0.25, 1.0), 4)))
    line_draws = [(rng.random(), rng.randrange(len(_LINE_DENIALS))) for _ in parsed.lines]

    if parsed.sequence in ("S", "T") and claim.frequency != "8":
        return _after_prior_payer(claim, parsed)
    plan = policy.plan(parsed.filing_indicator)
    charges = [line.charge for line in parsed.lines]
    if claim.expected_reimbursement is not None:
        allowed = _spread(min(claim.expected_reimbursement, parsed.charge), charges)
    else:
        pct = policy.payer_allowed_pct.get(claim.payer_id, plan.allowed_pct)
        allowed = [_cents(c * pct) for c in charges]

    remarks: tuple[str, ...] = ()
    if deny_claim:
        carc, claim_rarc, line_rarc = denial.carc, denial.claim_rarc, denial.line_rarc
        lines = tuple(
            LineDecision(
                line,
                ZERO,
                ZERO,
                (CasAdjustment("CO", carc, line.charge),),
                (line_rarc,) if line_rarc else (),
            )
            for line in parsed.lines
        )
        remarks = (claim_rarc,) if claim_rarc else ()
    else:
        deductible = ZERO
        if has_deductible < plan.deductible_rate:
            deductible = _cents(plan.deductible_max * deductible_share)
        lines = _price_lines(
            parsed.lines, allowed, plan, deductible, line_draws, policy.line_denial_rate
        )

    paid = sum((line.paid for line in lines), ZERO)
    responsibility = sum(
        (a.amount for line in lines for a in line.adjustments if a.group == "PR"), ZERO
    )
    starts = [line.service_date for line in parsed.lines if line.service_date]
    ends = [line.service_end or line.service_date for line in parsed.lines if line.service_date]
    decision = ClaimDecision(
        claim=parsed,
        status_code="4" if paid == 0 and responsibility == 0 else "1",
        charge=parsed.charge,
        paid=paid,
        patient_responsibility=responsibility,
        payer_claim_control_number=payer_claim_control_number(claim.payer_id, claim.claim_id),
        service_start=min(starts, default=claim.service_start),
        service_end=max((d for d in ends if d), default=claim.service_end),
        lines=lines,
        remark_codes=remarks,
    )
    if claim.frequency == "8" or parsed.frequency == "8":
        return _reversal(decision)
    return decision


def _after_prior_payer(claim: SubmittedClaim, parsed: Claim837) -> ClaimDecision:
    """A secondary or tertiary payer: it pays what the payer before it left to the patient
    (its 2430 CAS*PR), except the deductible (PR 1), which stays the patient's; the rest of
    each line is the prior payer's adjudication (OA 23). CLP02 2 or 3."""
    lines: list[LineDecision] = []
    for line in parsed.lines:
        left = sum((amount for _, amount in line.prior_responsibility), ZERO)
        deductible = sum((a for reason, a in line.prior_responsibility if reason == "1"), ZERO)
        adjustments = [CasAdjustment("OA", "23", line.charge - left)] if line.charge != left else []
        if deductible:
            adjustments.append(CasAdjustment("PR", "1", deductible))
        lines.append(LineDecision(line, left, left - deductible, tuple(adjustments)))
    starts = [line.service_date for line in parsed.lines if line.service_date]
    ends = [line.service_end or line.service_date for line in parsed.lines if line.service_date]
    return ClaimDecision(
        claim=parsed,
        status_code="2" if parsed.sequence == "S" else "3",
        charge=parsed.charge,
        paid=sum((line.paid for line in lines), ZERO),
        patient_responsibility=sum(
            (a.amount for line in lines for a in line.adjustments if a.group == "PR"), ZERO
        ),
        payer_claim_control_number=payer_claim_control_number(claim.payer_id, claim.claim_id),
        service_start=min(starts, default=claim.service_start),
        service_end=max((d for d in ends if d), default=claim.service_end),
        lines=tuple(lines),
    )


def _price_lines(
    lines: Sequence[ClaimLine],
    allowed: Sequence[Decimal],
    plan: PlanRules,
    deductible: Decimal,
    draws: Sequence[tuple[float, int]],
    line_denial_rate: float,
) -> tuple[LineDecision, ...]:
    """Copay, deductible, coinsurance and sequestration line by line; some later lines denied."""
    out: list[LineDecision] = []
    deductible_left = deductible
    copay_used = False
    for index, (line, line_allowed, (draw, pick)) in enumerate(
        zip(lines, allowed, draws, strict=True)
    ):
        # The first line is the primary service: bundling (CO-97) only hits later lines.
        if index > 0 and draw < line_denial_rate and line.charge > 0:
            carc, rarc = _LINE_DENIALS[pick]
            adjustment = CasAdjustment("CO", carc, line.charge)
            out.append(LineDecision(line, ZERO, ZERO, (adjustment,), (rarc,)))
            continue
        remaining = line_allowed
        copay = ZERO
        if plan.copay and not copay_used and _is_visit(line.code):
            copay = min(plan.copay, remaining)
            copay_used = True
            remaining -= copay
        applied = min(deductible_left, remaining)
        deductible_left -= applied
        remaining -= applied
        coinsurance = ZERO if copay else _cents(remaining * plan.coinsurance)
        remaining -= coinsurance
        sequestration = _cents(remaining * plan.sequestration)
        remaining -= sequestration
        co = [("45", line.charge - line_allowed), ("253", sequestration)]
        pr = [("1", applied), ("2", coinsurance), ("3", copay)]
        adjustments = tuple(
            CasAdjustment(group, reason, amount)
            for group, pairs in (("CO", co), ("PR", pr))
            for reason, amount in pairs
            if amount != 0
        )
        out.append(LineDecision(line, line_allowed, remaining, adjustments))
    return tuple(out)


def _reversal(decision: ClaimDecision) -> ClaimDecision:
    """The same decision with every amount negated (CLP02 22)."""

    def neg(adjs: tuple[CasAdjustment, ...]) -> tuple[CasAdjustment, ...]:
        return tuple(replace(a, amount=-a.amount) for a in adjs)

    return replace(
        decision,
        status_code="22",
        charge=-decision.charge,
        paid=-decision.paid,
        patient_responsibility=-decision.patient_responsibility,
        lines=tuple(
            replace(
                line,
                line=replace(line.line, charge=-line.line.charge),
                allowed=-line.allowed,
                paid=-line.paid,
                adjustments=neg(line.adjustments),
            )
            for line in decision.lines
        ),
    )


# --- writing the 835 ----------------------------------------------------------------------


@dataclass(frozen=True)
class PayerDetails:
    """Payer address, contact, tax id and bank details printed on the 835."""

    address: str = "PO BOX 1000"
    city: str = "ANYTOWN"
    state: str = "MD"
    postal_code: str = "21201"
    contact_name: str = "EDI SUPPORT"
    contact_phone: str = "8005550100"
    tax_id: str = "990000001"
    bank_routing: str = "011000015"
    bank_account: str = "000123456789"
    payee_bank_routing: str = "021000021"
    payee_bank_account: str = "000987654321"


def _cas_segments(adjustments: Sequence[CasAdjustment]) -> list[edi.Segment | edi.Rendered]:
    """CAS by group, six reason/amount triplets a segment (the quantity is left out)."""
    by_group: dict[str, list[str]] = {}
    for adj in adjustments:
        by_group.setdefault(adj.group, []).extend((adj.reason, edi.amount(adj.amount), ""))
    out: list[edi.Segment | edi.Rendered] = []
    for group, values in by_group.items():
        for start in range(0, len(values), 18):
            out.append(edi.line("CAS", group, *values[start : start + 18]))
    return out


# CLP06 takes fewer codes than the 837's SBR09: commercial (CI) and Blue Cross (BL) plans are
# reported as the payer's product, here PPO (12); federal employees as other federal (OF).
_CLP06_CODES = frozenset(
    {"12", "13", "14", "15", "16", "17", "AM", "CH", "DS", "HM", "LM", "MA", "MB", "MC", "OF"}
    | {"TV", "VA", "WC", "ZZ"}
)
_SBR09_TO_CLP06 = {"CI": "12", "BL": "12", "FI": "OF", "11": "ZZ"}


def claim_filing_code(sbr09: str) -> str:
    """The 835 CLP06 code for the 837's SBR09 claim filing indicator."""
    if sbr09 in _CLP06_CODES:
        return sbr09
    return _SBR09_TO_CLP06.get(sbr09, "ZZ")


def _claim_segments(decision: ClaimDecision) -> list[edi.Segment | edi.Rendered]:
    claim = decision.claim
    pr = decision.patient_responsibility
    clp: list[str] = [
        edi.text(claim.claim_id, 38),
        decision.status_code,
        edi.amount(decision.charge),
        edi.amount(decision.paid),
        edi.amount(pr) if pr else "",
        claim_filing_code(claim.filing_indicator),
        decision.payer_claim_control_number,
        claim.place_of_service,
        claim.frequency,
    ]
    if claim.drg:
        clp += ["", claim.drg]  # CLP11: the DRG the stay was paid under
    out = [edi.line("CLP", *clp)]
    last = edi.text(claim.patient_last_name or "", 60) or "UNKNOWN"
    first = edi.text(claim.patient_first_name or "", 35)
    member = edi.text(claim.member_id or "", 80)
    # The member id belongs to the subscriber: on the patient only when they are one.
    insured = claim.insured_last_name is not None and bool(claim.member_id)
    on_patient = member and not insured
    out.append(
        edi.line("NM1", "QC", "1", last, first, "", "", "", *(("MI", member) if on_patient else ()))
    )
    if insured:
        # 2100 NM1*IL is sent when the subscriber on the claim is not the patient (2000C).
        insured_last = edi.text(claim.insured_last_name or "", 60)
        insured_first = edi.text(claim.insured_first_name or "", 35)
        out.append(
            edi.line("NM1", "IL", "1", insured_last, insured_first, "", "", "", "MI", member)
        )
    if decision.remark_codes:
        out.append(edi.line("MOA", "", "", *decision.remark_codes[:5]))
    out.append(edi.line("DTM", "232", edi.d8(decision.service_start)))
    out.append(edi.line("DTM", "233", edi.d8(decision.service_end)))
    for line in decision.lines:
        billed = line.line
        out.append(
            edi.line(
                "SVC",
                edi.comp(billed.qualifier, billed.code, *billed.modifiers),
                edi.amount(billed.charge),
                edi.amount(line.paid),
                billed.revenue_code or "",  # SVC04: the revenue code billed with a HCPCS
                edi.quantity(billed.units),
            )
        )
        start = billed.service_date or decision.service_start
        end = billed.service_end
        if end and end != start:
            out.append(edi.line("DTM", "150", edi.d8(start)))
            out.append(edi.line("DTM", "151", edi.d8(end)))
        else:
            out.append(edi.line("DTM", "472", edi.d8(start)))
        out.extend(_cas_segments(line.adjustments))
        if billed.line_control_number:
            out.append(edi.line("REF", "6R", edi.text(billed.line_control_number, 50)))
        if line.allowed:
            out.append(edi.line("AMT", "B6", edi.amount(line.allowed)))
        out.extend(edi.line("LQ", "HE", code) for code in line.remark_codes)
    return out


def _claim_lines(decision: ClaimDecision) -> list[str] | None:
    """``_claim_segments`` written as text directly, or None when a value read from the 837
    or the policy carries a delimiter (``_claim_segments`` then names the element at fault).

    Every other value is one ``text``, ``amount``, ``d8``, ``quantity`` or
    ``claim_filing_code`` wrote, none of which can carry a delimiter; with none in any value,
    dropping the trailing empty elements is stripping the trailing separators."""
    claim = decision.claim
    remarks = decision.remark_codes[:5]
    outside = [decision.status_code, decision.payer_claim_control_number, *remarks]
    outside += (claim.place_of_service, claim.frequency, claim.drg or "")
    for line in decision.lines:
        billed = line.line
        outside += (billed.qualifier, billed.code, *billed.modifiers, billed.revenue_code or "")
        outside += line.remark_codes
        outside += [a.group + a.reason for a in line.adjustments]
    if not edi.DELIMITERS.isdisjoint("".join(outside)):
        return None
    amount, d8, text = edi.amount, edi.d8, edi.text
    pr = decision.patient_responsibility
    clp = "*".join(
        (
            "CLP",
            text(claim.claim_id, 38),
            decision.status_code,
            amount(decision.charge),
            amount(decision.paid),
            amount(pr) if pr else "",
            claim_filing_code(claim.filing_indicator),
            decision.payer_claim_control_number,
            claim.place_of_service,
            claim.frequency,
        )
    )
    if claim.drg:
        clp += f"**{claim.drg}"
    last = text(claim.patient_last_name or "", 60) or "UNKNOWN"
    first = text(claim.patient_first_name or "", 35)
    member = text(claim.member_id or "", 80)
    insured = claim.insured_last_name is not None and bool(claim.member_id)
    nm1 = f"NM1*QC*1*{last}*{first}****MI*{member}" if member and not insured else ""
    out = [clp.rstrip("*") + "~", (nm1 or f"NM1*QC*1*{last}*{first}").rstrip("*") + "~"]
    if insured:
        insured_last = text(claim.insured_last_name or "", 60)
        insured_first = text(claim.insured_first_name or "", 35)
        out.append(f"NM1*IL*1*{insured_last}*{insured_first}****MI*{member}".rstrip("*") + "~")
    if remarks:
        out.append("*".join(("MOA", "", "", *remarks)).rstrip("*") + "~")
    out.append(f"DTM*232*{d8(decision.service_start)}~")
    out.append(f"DTM*233*{d8(decision.service_end)}~")
    for line in decision.lines:
        billed = line.line
        svc = ":".join((billed.qualifier, billed.code, *billed.modifiers)).rstrip(":")
        out.append(
            f"SVC*{svc}*{amount(billed.charge)}*{amount(line.paid)}*{billed.revenue_code or ''}"
            f"*{edi.quantity(billed.units)}".rstrip("*")
            + "~"
        )
        start = billed.service_date or decision.service_start
        end = billed.service_end
        if end and end != start:
            out.append(f"DTM*150*{d8(start)}~")
            out.append(f"DTM*151*{d8(end)}~")
        else:
            out.append(f"DTM*472*{d8(start)}~")
        if line.adjustments:
            by_group: dict[str, list[str]] = {}
            for adj in line.adjustments:
                by_group.setdefault(adj.group, []).extend((adj.reason, amount(adj.amount), ""))
            for group, values in by_group.items():
                for at in range(0, len(values), 18):
                    cas = "*".join(("CAS", group, *values[at : at + 18]))
                    out.append(cas.rstrip("*") + "~")
        if billed.line_control_number:
            out.append(f"REF*6R*{text(billed.line_control_number, 50)}".rstrip("*") + "~")
        if line.allowed:
            out.append(f"AMT*B6*{amount(line.allowed)}~")
        out += [f"LQ*HE*{code}".rstrip("*") + "~" for code in line.remark_codes]
    return out


def render_835(
    decisions: Sequence[ClaimDecision],
    *,
    payer_id: str,
    payer_name: str,
    payee_npi: str,
    payee_name: str,
    trace_number: str,
    paid_date: date,
    payee_tax_id: str | None = None,
    payment_method: Literal["ACH", "CHK"] = "ACH",
    payer: PayerDetails | None = None,
    control_number: int | None = None,
) -> str:
    """Write the 835 interchange (ISA..IEA, one ST..SE) for adjudicated claims."""
    payer = payer or PayerDetails()
    if control_number is None:
        digest = hashlib.sha256(f"{payer_id}\x1f{trace_number}".encode()).digest()
        control_number = int.from_bytes(digest[:8], "big") % 999_999_999 + 1
    if not 0 < control_number < 10**9:
        raise InputError("control_number", "must be 1..999999999")
    total = sum((d.paid for d in decisions), ZERO)
    ymd = edi.d8(paid_date)
    body: list[edi.Segment | edi.Rendered] = []
    if total > 0 and payment_method == "ACH":
        body.append(
            edi.line(
                "BPR",
                "I",
                edi.amount(total),
                "C",
                "ACH",
                "CCP",
                "01",
                payer.bank_routing,
                "DA",
                payer.bank_account,
                f"1{payer.tax_id}",
                "",
                "01",
                payer.payee_bank_routing,
                "DA",
                payer.payee_bank_account,
                ymd,
            )  # fmt: skip
        )
    else:  # a check, or nothing to pay (H: notification only); BPR05-15 unused
        how = ("C", edi.amount(total), "C", "CHK") if total > 0 else ("H", "0", "C", "NON")
        body.append(edi.line("BPR", *how, *[""] * 11, ymd))
    trace = edi.text(trace_number, 50)
    body += [
        edi.line("TRN", "1", trace, f"1{payer.tax_id}"),
        edi.line("DTM", "405", ymd),
        edi.line("N1", "PR", edi.text(payer_name, 60)),
        edi.line("N3", edi.text(payer.address, 55)),
        edi.line("N4", edi.text(payer.city, 30), payer.state, payer.postal_code),
        edi.line("REF", "2U", edi.text(payer_id, 50)),
        edi.line("PER", "BL", edi.text(payer.contact_name, 60), "TE", payer.contact_phone),
        edi.line("N1", "PE", edi.text(payee_name, 60), "XX", payee_npi),
    ]
    if payee_tax_id:
        body.append(edi.line("REF", "TJ", payee_tax_id))
    if decisions:
        body.append(edi.line("LX", "1"))
    for decision in decisions:
        lines = _claim_lines(decision)
        body.extend(lines if lines is not None else _claim_segments(decision))
    if total < 0:
        # A net debit cannot be paid out: carry it forward as a provider-level balance.
        body.append(
            edi.line(
                "PLB",
                payee_npi,
                f"{paid_date.year}1231",
                edi.comp("FB", trace),
                edi.amount(total),
            )  # fmt: skip
        )
    envelope = edi.Envelope(
        sender_id=edi.text(payer_id, 15),
        receiver_id=edi.text(payee_npi, 15),
        control_number=control_number,
        created=datetime.combine(paid_date, time()),
        functional_id="HP",
        version=VERSION_835,
    )
    return edi.render(edi.interchange(envelope, [edi.transaction_set("835", "0001", None, body)]))


def adjudicate(
    claims: Sequence[SubmittedClaim],
    *,
    payer_id: str,
    payer_name: str,
    payee_npi: str,
    payee_name: str,
    trace_number: str,
    paid_date: date,
    payee_tax_id: str | None = None,
    payment_method: Literal["ACH", "CHK"] = "ACH",
    policy: AdjudicationPolicy = DEFAULT_POLICY,
    payer: PayerDetails | None = None,
    control_number: int | None = None,
) -> str:
    """Adjudicate a batch of claims sent to one payer and return the payer's 835."""
    if not claims:
        raise InputError("claims", "an 835 needs at least one claim")
    for claim in claims:
        if claim.payer_id != payer_id:
            raise InputError(
                "payer_id", f"claim {claim.claim_id} is for payer {claim.payer_id}, not {payer_id}"
            )
    if not (len(payee_npi) == 10 and payee_npi.isdigit()):
        raise InputError("payee_npi", f"an NPI is 10 digits, got {payee_npi!r}")
    decisions = [adjudicate_claim(claim, policy=policy) for claim in claims]
    return render_835(
        decisions,
        payer_id=payer_id,
        payer_name=payer_name,
        payee_npi=payee_npi,
        payee_name=payee_name,
        trace_number=trace_number,
        paid_date=paid_date,
        payee_tax_id=payee_tax_id,
        payment_method=payment_method,
        payer=payer,
        control_number=control_number,
    )


# --- the front end: 999 and 277CA -----------------------------------------------------------

_REJECTED_SET = frozenset({"R", "M", "W", "X"})


@dataclass(frozen=True)
class Envelope837:
    """What an acknowledgment refers to in the 837 it answers."""

    sender_id: str  # ISA06
    receiver_id: str  # ISA08
    control_number: str  # ISA13
    group_control_number: str  # GS06
    implementation: str  # GS08
    sets: tuple[tuple[str, str], ...]  # (ST02, ST03) of each transaction set
    submitter_name: str


@lru_cache(maxsize=32)
def read_envelope(x12: str) -> Envelope837:
    """The envelope of an 837 interchange: ids, control numbers, transaction sets."""
    isa = gs = None
    sets: list[tuple[str, str]] = []
    submitter = ""
    for seg in _segments(x12):
        if seg.id == "ISA":
            isa = seg
        elif seg.id == "GS" and gs is None:
            gs = seg
        elif seg.id == "ST":
            sets.append((seg.el(2), seg.el(3)))
        elif seg.id == "NM1" and seg.el(1) == "41" and not submitter:
            submitter = seg.el(3)
    if isa is None or gs is None or not sets:
        raise InputError("x12", "an 837 interchange needs ISA, GS and ST segments")
    return Envelope837(
        sender_id=isa.el(6).strip(),
        receiver_id=isa.el(8).strip(),
        control_number=isa.el(13),
        group_control_number=gs.el(6),
        implementation=gs.el(8),
        sets=tuple(sets),
        submitter_name=submitter or isa.el(6).strip(),
    )


def _number(*parts: str) -> int:
    """A deterministic control number (1..999999999) for an answer."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") % 999_999_999 + 1


@dataclass(frozen=True)
class Acknowledgment:
    """A 999: whether the payer took the 837's transaction sets, and the file itself."""

    accepted: bool
    text: str
    errors: tuple[str, ...] = ()


def acknowledge_999(
    x12: str, *, payer_id: str, created: datetime, validate: bool = True
) -> Acknowledgment:
    """Validate an 837 with pyx12 and answer with a 999: accepted, or rejected with IK3/IK4.

    The AK1..AK9 body is pyx12's own; the envelope is written here so that the control
    numbers and time are deterministic (a replay answers with the same file). With
    ``validate=False`` the 837 is not checked and every transaction set is accepted (a
    load test samples validation: pyx12 costs more than the whole pipeline per claim).
    """

    envelope = read_envelope(x12)
    errors, pyx12_ack = validate_with_ack(x12) if validate else ([], "")
    body: list[edi.Segment] = []
    if pyx12_ack:
        inside = False
        for s in read_segments(pyx12_ack):
            if s.id == "ST":
                inside = True
            elif s.id == "SE":
                inside = False
            elif inside:
                elements: list[edi.Element] = [
                    edi.Composite(parts) if len(parts) > 1 else parts[0] for parts in s.components
                ]
                body.append(edi.Segment(s.id, tuple(elements)))
    if not validate:
        body = _every_set(envelope, accepted=True)
    elif not body:  # pyx12 could not walk the file: reject every set, saying so
        body = _every_set(envelope, accepted=False)
    rejected = any(s.id == "IK5" and s.elements[0] in _REJECTED_SET for s in body)
    number = _number(payer_id, "999", envelope.control_number)
    text = _answer(envelope, number, created, "FA", "999", VERSION_999, body)
    return Acknowledgment(not rejected, text, tuple(errors))


def _every_set(envelope: Envelope837, *, accepted: bool) -> list[edi.Segment]:
    """A 999 body that accepts every transaction set of the 837, or rejects each (IK5 R 5)."""
    n = str(len(envelope.sets))
    ik5 = edi.seg("IK5", "A") if accepted else edi.seg("IK5", "R", "5")
    body = [edi.seg("AK1", "HC", envelope.group_control_number, envelope.implementation)]
    for st02, st03 in envelope.sets:
        body += [edi.seg("AK2", "837", st02, st03), ik5]
    body.append(edi.seg("AK9", "A", n, n, n) if accepted else edi.seg("AK9", "R", n, n, "0"))
    return body


def _answer(
    envelope: Envelope837,
    number: int,
    created: datetime,
    functional_id: str,
    set_id: str,
    version: str,
    body: list[edi.Segment | edi.Rendered],
) -> str:
    """An answer to the 837 (999, 277CA): one transaction set, back from its receiver."""
    return edi.render(
        edi.interchange(
            edi.Envelope(
                sender_id=envelope.receiver_id,
                receiver_id=envelope.sender_id,
                control_number=number,
                created=created,
                functional_id=functional_id,
                version=version,
            ),
            [edi.transaction_set(set_id, "0001", version, body)],
        )
    )


def front_end_rejection(
    payer_id: str, claim_event_id: str, policy: AdjudicationPolicy = DEFAULT_POLICY
) -> FrontEndRejection | None:
    """Whether the payer's front end rejects a claim event, and with which status."""
    digest = hashlib.sha256(f"277ca\x1f{payer_id}\x1f{claim_event_id}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    reject, pick = rng.random(), rng.random()
    if reject >= policy.front_end_rejection_rate or not policy.front_end_rejections:
        return None
    return weighted(policy.front_end_rejections, pick)


@dataclass(frozen=True)
class FrontEndDecision:
    """The 277CA's answer about one claim."""

    claim: SubmittedClaim
    parsed: Claim837
    rejection: FrontEndRejection | None

    @property
    def accepted(self) -> bool:
        """Accepted into adjudication (A2:20)."""
        return self.rejection is None


def _clean_line(segment_id: str, *elements: str) -> str:
    """``edi.line`` of values known to carry no delimiter (composites already joined)."""
    return "*".join((segment_id, *elements)).rstrip("*") + "~"


def _clean_comp(*parts: str) -> str:
    """``edi.comp`` of parts known to carry no delimiter, joined as ``render`` joins them."""
    return ":".join(parts).rstrip(":")


def render_277ca(
    x12: str,
    decisions: Sequence[FrontEndDecision],
    *,
    payer_id: str,
    payer_name: str,
    created: datetime,
) -> str:
    """A 277CA answering the claims of one 837 interchange, grouped by billing provider."""

    if not decisions:
        raise InputError("claims", "a 277CA answers at least one claim")
    envelope = read_envelope(x12)
    # Every value below is a fixed code, a number, a date or one ``text`` wrote, but these,
    # from the 837, the claims and the policy: when none carries a delimiter, a line is its
    # values joined, less the trailing empty ones; else it is a segment's, which names the
    # element at fault.
    outside = [payer_id, envelope.control_number, envelope.submitter_name, envelope.sender_id]
    for d in decisions:
        outside += (d.parsed.claim_id, d.parsed.billing_npi or "", d.parsed.billing_name or "")
        if d.rejection is not None:
            outside += d.rejection.composite()
    clean = edi.DELIMITERS.isdisjoint("".join(outside))
    write = _clean_line if clean else edi.line
    joined = _clean_comp if clean else edi.comp
    ymd, hm = created.strftime("%Y%m%d"), created.strftime("%H%M")
    ids = "\x1f".join(d.claim.claim_id for d in decisions)
    number = _number(payer_id, "277CA", envelope.control_number, ids)

    def totals(
        items: Sequence[FrontEndDecision], qty: tuple[str, str]
    ) -> list[edi.Segment | edi.Rendered]:
        ok = [d for d in items if d.accepted]
        bad = [d for d in items if not d.accepted]
        out = []
        if ok:
            out.append(write("QTY", qty[0], str(len(ok))))
        if bad:
            out.append(write("QTY", qty[1], str(len(bad))))
        if ok:
            out.append(write("AMT", "YU", edi.amount(sum((d.parsed.charge for d in ok), ZERO))))
        if bad:
            out.append(write("AMT", "YY", edi.amount(sum((d.parsed.charge for d in bad), ZERO))))
        return out

    total = edi.amount(sum((d.parsed.charge for d in decisions), ZERO))
    body: list[edi.Segment | edi.Rendered] = [
        write("BHT", "0085", "08", envelope.control_number, ymd, hm, "TH"),
        write("HL", "1", "", "20", "1"),
        write("NM1", "PR", "2", edi.text(payer_name, 60), "", "", "", "", "PI", payer_id),
        write("TRN", "1", str(number)),
        write("DTP", "050", "D8", ymd),
        write("DTP", "009", "D8", ymd),
        write("HL", "2", "1", "21", "1"),
        write("NM1", "41", "2", envelope.submitter_name, "", "", "", "", "46", envelope.sender_id),
        write("TRN", "2", envelope.control_number),
        write("STC", joined("A1", "19"), ymd, "WQ", total),
        *totals(decisions, ("90", "AA")),
    ]
    providers: dict[tuple[str, str], list[FrontEndDecision]] = {}
    for d in decisions:
        key = (d.parsed.billing_npi or "", d.parsed.billing_name or "UNKNOWN")
        providers.setdefault(key, []).append(d)
    hl = 2
    for (npi, name), items in providers.items():
        hl += 1
        provider_hl = hl
        body += [
            write("HL", str(provider_hl), "2", "19", "1"),
            write("NM1", "85", "2", name, "", "", "", "", "XX" if npi else "", npi),
            write("TRN", "1", f"{number}{provider_hl}"),
            write(
                "STC",
                joined("A1", "19"),
                "",  # STC02 is not used at the billing provider level
                "WQ",
                edi.amount(sum((d.parsed.charge for d in items), ZERO)),
            ),
            *totals(items, ("QA", "QC")),
        ]
        for d in items:
            hl += 1
            claim = d.parsed
            last = edi.text(claim.patient_last_name or "", 60) or "UNKNOWN"
            first = edi.text(claim.patient_first_name or "", 35)
            member = edi.text(claim.member_id or "", 80)
            body += [
                write("HL", str(hl), str(provider_hl), "PT"),
                write("NM1", "QC", "1", last, first, "", "", "", "MI" if member else "", member),
                write("TRN", "2", claim.claim_id),
            ]
            if d.rejection is None:
                body += [
                    write("STC", joined("A2", "20"), ymd, "WQ", edi.amount(claim.charge)),
                    write("REF", "1K", payer_claim_control_number(payer_id, claim.claim_id)),
                ]
            else:
                body.append(
                    write(
                        "STC",
                        joined(*d.rejection.composite()),
                        ymd,
                        "U",
                        edi.amount(claim.charge),
                    )
                )
            start = min((ln.service_date for ln in claim.lines if ln.service_date), default=None)
            ends = [ln.service_end or ln.service_date for ln in claim.lines if ln.service_date]
            end = max((e for e in ends if e), default=None)
            if start and end:
                body.append(write("DTP", "472", "RD8", f"{start:%Y%m%d}-{end:%Y%m%d}"))
    return _answer(envelope, number, created, "HN", "277", VERSION_277CA, body)
