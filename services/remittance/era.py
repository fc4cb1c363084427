"""X12 835 (005010X221A1) electronic remittance advice: read, check balancing, validate.

Segments are read by the shared X12 reader (``services.x12.reader``), which takes the
delimiters from the interchange header. ``validate_835`` runs pyx12's ``x12n_document``
against the 835 implementation-guide map and adds the payment balancing rules that map
does not check.

What is read: BPR/TRN (payment, trace), payer and payee (N1, REF), every claim (CLP, with
its DRG in CLP11/CLP12), claim and line adjustments (CAS: group, CARC, amount, quantity),
remark codes (MIA, MOA, LQ*HE), inpatient and outpatient adjudication amounts (MIA, MOA),
service lines (SVC, with the originally billed procedure in SVC06 when the payer changed
it), service and statement dates (DTM), and provider-level adjustments (PLB).

Balancing (the 835 guide's rules, SNIP type 3): per line SVC02 - CAS = SVC03; per claim
CLP03 - claim and line CAS = CLP04; per payment BPR02 = CLP04 - PLB (BPR03 D: a debit,
negative). That the line charges add up to CLP03 is not one of those rules (a payer may
leave lines out), so it is a warning, not an error.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import MISSING, dataclass, field, fields
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import pyx12.errors
import pyx12.params
import pyx12.x12n_document

from pipeline.errors import InputError
from services.x12.guides import VERSION_835
from services.x12.reader import Segment, read_segments, segment_rows

ZERO = Decimal("0.00")
CLAIM_STATUS_CODES = {
    "1": "processed as primary",
    "2": "processed as secondary",
    "3": "processed as tertiary",
    "4": "denied",
    "19": "processed as primary, forwarded to additional payer(s)",
    "20": "processed as secondary, forwarded to additional payer(s)",
    "21": "processed as tertiary, forwarded to additional payer(s)",
    "22": "reversal of previous payment",
    "23": "not our claim, forwarded to additional payer(s)",
    "25": "predetermination pricing only, no payment",
}
"""CLP02 claim status codes of 005010X221A1."""
PAYER_SEQUENCE = {"1": 1, "19": 1, "2": 2, "20": 2, "3": 3, "21": 3}
"""The payer's place in the coordination of benefits, by CLP02."""
FORWARDED = frozenset({"19", "20", "21", "23"})
"""CLP02 codes saying the payer forwarded the claim to the next payer (a crossover)."""
_CAS_TRIPLETS = 6


def _money(seg: Segment, pos: int, *, required: bool = True) -> Decimal:
    return _money_of(seg.el(pos), seg, pos, required)


# An 835 repeats a few hundred amounts and quantities thousands of times, and Decimal's
# parse and quantize are most of reading one: each text read is kept with its value (a
# Decimal never changes). Only values are kept; text that is not an amount is refused
# again each time, with the element it is in.
_AMOUNTS_KEPT = 8192
_AMOUNTS: dict[str, Decimal] = {}
_QUANTITIES: dict[str, Decimal] = {}
_CENT = Decimal("0.01")


def _money_of(raw: str, seg: Segment, pos: int, required: bool = True) -> Decimal:
    """Element ``pos`` of ``seg``, whose text is ``raw``, as an amount in cents."""
    value = _AMOUNTS.get(raw)
    if value is not None:
        return value
    text = raw.strip()
    if not text:
        if required:
            raise InputError(seg.ref(pos), "amount is required")
        return ZERO
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise InputError(seg.ref(pos), f"not a number: {text!r}") from None
    if not value.is_finite():
        raise InputError(seg.ref(pos), f"not a number: {text!r}")
    try:
        value = value.quantize(_CENT)
    except InvalidOperation:  # more digits than a Decimal holds: not an amount of money
        raise InputError(seg.ref(pos), f"amount out of range: {text!r}") from None
    if len(_AMOUNTS) >= _AMOUNTS_KEPT:
        _AMOUNTS.clear()
    _AMOUNTS[raw] = value
    return value


def _quantity(seg: Segment, pos: int) -> Decimal | None:
    return _quantity_of(seg.el(pos), seg, pos)


def _quantity_of(raw: str, seg: Segment, pos: int) -> Decimal | None:
    """Element ``pos`` of ``seg``, whose text is ``raw``, as a number (None when empty)."""
    value = _QUANTITIES.get(raw)
    if value is not None:
        return value
    text = raw.strip()
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise InputError(seg.ref(pos), f"not a number: {text!r}") from None
    if len(_QUANTITIES) >= _AMOUNTS_KEPT:
        _QUANTITIES.clear()
    _QUANTITIES[raw] = value
    return value


def _date(seg: Segment, pos: int, warnings: list[str] | None = None) -> date | None:
    """A CCYYMMDD date; an impossible one changes no amount, so with ``warnings`` it is
    noted there and read as absent (without, it is an error)."""
    return _date_of(seg.el(pos), seg, pos, warnings)


# An 835 repeats a handful of dates thousands of times; strptime is the slow part. Each text
# read is kept with its date (only dates: an impossible one is refused again each time).
_DATES: dict[str, date] = {}


def _date_of(text: str, seg: Segment, pos: int, warnings: list[str] | None = None) -> date | None:
    """``_date`` of element ``pos`` of ``seg``, whose text is ``text``."""
    found = _DATES.get(text)
    if found is not None:
        return found
    raw = text.strip()
    if not raw:
        return None
    try:
        found = datetime.strptime(raw, "%Y%m%d").date()
    except ValueError:
        if warnings is None:
            raise InputError(seg.ref(pos), f"not a CCYYMMDD date: {raw!r}") from None
        warnings.append(f"{seg.ref(pos)} {raw!r} is not a CCYYMMDD date: read as absent")
        return None
    if len(_DATES) >= _AMOUNTS_KEPT:
        _DATES.clear()
    _DATES[text] = found
    return found


# --- the remittance model -----------------------------------------------------------------
#
# A frozen dataclass's own ``__init__`` sets each field with ``object.__setattr__`` (its
# ``__setattr__`` refuses): 31 calls for a ClaimPayment, 16 for each service line, a few
# hundred for one 835, about 4% of remittance's CPU. ``direct_init`` gives the class an
# ``__init__`` of the same parameters and defaults that sets the instance's dict in one
# call; the object is the same (its fields, equality, hash, repr, ``replace`` and the
# frozen ``__setattr__`` unchanged). The dataclass's own ``__init__`` is kept in
# ``DATACLASS_INITS``: tests/unit/test_remittance_era_init.py compares the two.

DATACLASS_INITS: dict[type, Any] = {}
_Class = TypeVar("_Class", bound=type)
_Made = TypeVar("_Made")


def direct_init(cls: _Class) -> _Class:
    """``cls`` (a frozen dataclass whose defaults are plain values, without
    ``__post_init__``) with an ``__init__`` that sets its fields at once."""
    params: list[str] = []
    env: dict[str, Any] = {"_set": object.__setattr__}
    for f in fields(cls):
        if f.default_factory is not MISSING or not f.init:
            raise TypeError(f"{cls.__name__}.{f.name}: only plain defaults are set directly")
        if f.default is MISSING:
            params.append(f.name)
        else:
            env[f"_d_{f.name}"] = f.default
            params.append(f"{f.name}=_d_{f.name}")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__")
    values = ", ".join(f"{f.name!r}: {f.name}" for f in fields(cls))
    source = f"def __init__(self, {', '.join(params)}):\n    _set(self, '__dict__', {{{values}}})\n"
    exec(source, env)  # noqa: S102 - built above from the class's field names
    init = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    DATACLASS_INITS[cls] = cls.__init__  # type: ignore[misc]
    cls.__init__ = init  # type: ignore[misc]
    return cls


_SET_FIELDS = object.__setattr__
_NEW = object.__new__


def _made(cls: type[_Made], values: dict[str, Any]) -> _Made:
    """An object of ``cls`` (a class of ``direct_init``) whose fields are ``values``: every
    field, in the class's order, as its ``__init__`` would set them, from the dict the
    reader filled (a service line's, a claim's) instead of from arguments unpacked from
    it into a dict made again: ``read_835`` of a simulator's file, 86 us to 81.5."""
    obj = _NEW(cls)
    _SET_FIELDS(obj, "__dict__", values)
    return obj


@direct_init
@dataclass(frozen=True)
class CasAdjustment:
    """One CAS reason/amount/quantity triplet with its group code (CO, PR, OA, PI, CR)."""

    group: str
    reason: str
    amount: Decimal
    quantity: Decimal | None = None


@direct_init
@dataclass(frozen=True)
class ServicePayment:
    """Loop 2110: one adjudicated service line (SVC and what follows it)."""

    qualifier: str
    procedure: str
    modifiers: tuple[str, ...]
    charge: Decimal
    paid: Decimal
    revenue_code: str | None = None
    units: Decimal | None = None
    original_procedure: str | None = None
    original_modifiers: tuple[str, ...] = ()
    original_units: Decimal | None = None
    service_date: date | None = None
    service_end: date | None = None
    line_control_number: str | None = None
    allowed: Decimal | None = None
    adjustments: tuple[CasAdjustment, ...] = ()
    remark_codes: tuple[str, ...] = ()

    @property
    def adjustment_total(self) -> Decimal:
        """Sum of the line's CAS amounts."""
        return sum((a.amount for a in self.adjustments), ZERO)

    @property
    def recoded(self) -> bool:
        """The payer adjudicated another code than the one billed (SVC06 is present)."""
        return self.original_procedure is not None


@direct_init
@dataclass(frozen=True)
class ClaimPayment:
    """Loop 2100: one claim as the payer adjudicated it (CLP and what follows it)."""

    patient_control_number: str
    status_code: str
    charge: Decimal
    paid: Decimal
    patient_responsibility: Decimal
    filing_indicator: str | None = None
    payer_claim_control_number: str | None = None
    facility_code: str | None = None
    frequency: str | None = None
    patient_last_name: str | None = None
    patient_first_name: str | None = None
    patient_member_id: str | None = None
    statement_start: date | None = None
    statement_end: date | None = None
    received_date: date | None = None
    drg_code: str | None = None
    drg_weight: Decimal | None = None
    original_reference: str | None = None
    rendering_provider_id: str | None = None
    covered_days: Decimal | None = None
    drg_amount: Decimal | None = None
    reimbursement_rate: Decimal | None = None
    hcpcs_payable: Decimal | None = None
    interest: Decimal | None = None
    coverage_amount: Decimal | None = None
    adjustments: tuple[CasAdjustment, ...] = ()
    remark_codes: tuple[str, ...] = ()
    service_lines: tuple[ServicePayment, ...] = ()
    crossover_payer: str | None = None  # NM1*TT: the payer the claim was forwarded to
    crossover_payer_id: str | None = None
    warnings: tuple[str, ...] = ()  # defects that change no amount (an impossible date …)

    @property
    def payer_sequence(self) -> int | None:
        """1, 2 or 3: whether this payer paid as primary, secondary or tertiary (CLP02)."""
        return PAYER_SEQUENCE.get(self.status_code)

    @property
    def forwarded(self) -> bool:
        """The payer sent the claim on to the next payer itself (a crossover): do not bill it."""
        return self.status_code in FORWARDED or self.crossover_payer is not None

    @property
    def is_reversal(self) -> bool:
        """CLP02 22: the payer takes back an earlier payment."""
        return self.status_code == "22"

    def all_adjustments(self) -> list[tuple[int | None, CasAdjustment]]:
        """Claim-level then line-level adjustments, with the 1-based line number or None."""
        out: list[tuple[int | None, CasAdjustment]] = [(None, a) for a in self.adjustments]
        for number, line in enumerate(self.service_lines, start=1):
            out += [(number, a) for a in line.adjustments]
        return out

    def all_remark_codes(self) -> list[str]:
        """MOA and LQ*HE remark codes, claim first, without repeats."""
        codes = list(self.remark_codes)
        for line in self.service_lines:
            codes.extend(line.remark_codes)
        return list(dict.fromkeys(codes))

    def balance_errors(self) -> list[str]:
        """The 835 balancing rules this claim breaks (empty when it balances)."""
        errors: list[str] = []
        pcn = self.patient_control_number
        for number, line in enumerate(self.service_lines, start=1):
            if line.charge - line.adjustment_total != line.paid:
                errors.append(
                    f"CLP01 {pcn} line {number}: SVC02 {line.charge} - CAS {line.adjustment_total}"
                    f" != SVC03 {line.paid}"
                )
        total_adj = ZERO  # every CAS amount, in the order of all_adjustments (its list unmade)
        for adjustment in self.adjustments:
            total_adj += adjustment.amount
        for line in self.service_lines:
            for adjustment in line.adjustments:
                total_adj += adjustment.amount
        if self.charge - total_adj != self.paid:
            errors.append(
                f"CLP01 {pcn}: CLP03 {self.charge} - CAS {total_adj} != CLP04 {self.paid}"
            )
        return errors

    def balance_warnings(self) -> list[str]:
        """Inconsistencies that are not balancing errors: line charges that miss CLP03."""
        if not self.service_lines:
            return []
        line_charges = sum((line.charge for line in self.service_lines), ZERO)
        if line_charges == self.charge:
            return []
        pcn = self.patient_control_number
        return [f"CLP01 {pcn}: sum of SVC02 {line_charges} != CLP03 {self.charge}"]


@direct_init
@dataclass(frozen=True)
class ProviderAdjustment:
    """One PLB reason/amount pair: positive takes money back from the payee."""

    provider_id: str
    fiscal_period_end: date | None
    reason: str
    reference: str | None
    amount: Decimal


@direct_init
@dataclass(frozen=True)
class ClaimDefect:
    """A claim (CLP loop) that could not be read: what is known of it and why."""

    patient_control_number: str
    status_code: str
    charge: Decimal | None
    paid: Decimal | None
    payer_claim_control_number: str | None
    error: str
    field: str = "CLP"  # the element the error is in


@direct_init
@dataclass(frozen=True)
class Remittance:
    """One 835 transaction set: a payment (or notice) from one payer to one payee."""

    interchange_control_number: str
    transaction_control_number: str
    handling_code: str
    payment_amount: Decimal
    credit_debit: str
    payment_method: str
    payment_date: date | None
    trace_number: str
    originator_id: str | None
    production_date: date | None
    payer_name: str
    payer_id: str | None
    payee_name: str
    payee_id_qualifier: str | None
    payee_id: str | None
    payee_tax_id: str | None = None
    claims: tuple[ClaimPayment, ...] = ()
    provider_adjustments: tuple[ProviderAdjustment, ...] = ()
    defects: tuple[ClaimDefect, ...] = ()  # claims that could not be read
    warnings: tuple[str, ...] = ()  # payment-level defects that change no amount

    @property
    def net_payment(self) -> Decimal:
        """BPR02 signed: negative when BPR03 is D (a debit from the payee's account)."""
        return -self.payment_amount if self.credit_debit == "D" else self.payment_amount

    @property
    def claims_paid(self) -> Decimal:
        """Sum of CLP04 over the payment's claims."""
        return sum((c.paid for c in self.claims), ZERO)

    @property
    def provider_adjustment_total(self) -> Decimal:
        """Sum of the PLB amounts: what the payer withholds (positive) or adds (negative)."""
        return sum((p.amount for p in self.provider_adjustments), ZERO)

    def balance_errors(self) -> list[str]:
        """Claim and line balancing, and BPR02 = sum of CLP04 - sum of PLB amounts."""
        errors = [e for claim in self.claims for e in claim.balance_errors()]
        errors += [f"CLP01 {d.patient_control_number}: {d.error}" for d in self.defects]
        return errors + self.payment_balance_errors()

    def payment_balance_errors(self) -> list[str]:
        """BPR02 = sum of CLP04 (claims read or not) - sum of PLB; [] when the payment adds up.

        A claim that could not be read still counts with its CLP04 when that was readable;
        when it was not, the payment cannot be balanced at all.
        """
        unknown = [d.patient_control_number for d in self.defects if d.paid is None]
        if unknown:
            return [f"CLP04 of {', '.join(unknown)} unreadable: the payment cannot be balanced"]
        paid = self.claims_paid + sum((d.paid or ZERO for d in self.defects), ZERO)
        plb = self.provider_adjustment_total
        if paid - plb != self.net_payment:
            sign = "-" if self.credit_debit == "D" else ""
            return [f"BPR02 {sign}{self.payment_amount} != sum of CLP04 {paid} - sum of PLB {plb}"]
        return []

    def balance_warnings(self) -> list[str]:
        """Inconsistencies that do not break the balancing rules (see the module docstring)."""
        return [w for claim in self.claims for w in claim.balance_warnings()]


# --- parsing -----------------------------------------------------------------------------


@dataclass
class _ClaimBuilder:
    clp: Segment
    names: dict[str, Any] = field(default_factory=dict)
    adjustments: list[CasAdjustment] = field(default_factory=list)
    remarks: list[str] = field(default_factory=list)
    lines: list[ServicePayment] = field(default_factory=list)
    line: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    error: str | None = None  # the first error in the loop: the claim is then a defect
    error_field: str = "CLP"

    def close_line(self) -> None:
        if self.line is not None:
            self.lines.append(_made(ServicePayment, self.line))  # every field, in order
            self.line = None

    def take(self, seg: Segment) -> None:
        """Read one segment of the claim loop; an error makes the claim a defect."""
        if self.error is not None:
            return
        try:
            _claim_segment(self, seg, seg.elements + _PAD)
        except InputError as exc:
            self.error, self.error_field = f"segment {seg.line} {exc}", exc.field

    def close(self) -> ClaimPayment | ClaimDefect:
        """The claim as read, or, when any of its segments could not be, a defect."""
        if self.error is None:
            try:
                return self.build()
            except InputError as exc:
                self.error, self.error_field = f"segment {self.clp.line} {exc}", exc.field
        return ClaimDefect(
            patient_control_number=self.clp.el(1),
            status_code=self.clp.el(2),
            charge=_money_or_none(self.clp, 3),
            paid=_money_or_none(self.clp, 4),
            payer_claim_control_number=self.clp.el(7) or None,
            error=self.error or "unreadable",
            field=self.error_field,
        )

    def build(self) -> ClaimPayment:
        self.close_line()
        clp = self.clp
        e = clp.elements + _PAD  # CLPnn is e[nn - 1], '' when absent (as ``Segment.el``)
        if not e[0]:
            raise InputError("CLP01", "patient control number is required")
        if not e[1]:
            raise InputError("CLP02", "claim status code is required")
        if e[1] not in CLAIM_STATUS_CODES:
            raise InputError("CLP02", f"unknown claim status code {e[1]!r}")
        return _claim_payment(
            e, clp, self.names, self.adjustments, self.lines, self.remarks, self.warnings
        )


def _claim_payment(
    e: Sequence[str],
    clp: Segment,
    names: dict[str, Any],
    adjustments: list[CasAdjustment],
    lines: list[ServicePayment],
    remarks: list[str],
    warnings: list[str],
) -> ClaimPayment:
    """A claim loop's payment: ``e`` its CLP's elements (CLPnn is ``e[nn - 1]``, '' past
    the last), ``clp`` the segment an amount's refusal names, and what the loop's other
    segments set. Both readers make their claims here (``_ClaimBuilder.build``,
    ``_claim_row``)."""
    claim_adjustments = tuple(adjustments)
    claim_lines = tuple(lines)
    responsibility = _money_of(e[4], clp, 5, False)
    if not e[4]:
        every = list(claim_adjustments) + [a for line in claim_lines for a in line.adjustments]
        responsibility = sum((a.amount for a in every if a.group == "PR"), ZERO)
    return _made(
        ClaimPayment,
        {  # every field, in order (what the loop's other segments set, or None)
            "patient_control_number": e[0],
            "status_code": e[1],
            "charge": _money_of(e[2], clp, 3),
            "paid": _money_of(e[3], clp, 4),
            "patient_responsibility": responsibility,
            "filing_indicator": e[5] or None,
            "payer_claim_control_number": e[6] or None,
            "facility_code": e[7] or None,
            "frequency": e[8] or None,
            "patient_last_name": names.get("patient_last_name"),
            "patient_first_name": names.get("patient_first_name"),
            "patient_member_id": names.get("patient_member_id"),
            "statement_start": names.get("statement_start"),
            "statement_end": names.get("statement_end"),
            "received_date": names.get("received_date"),
            "drg_code": e[10] or None,
            "drg_weight": _quantity_of(e[11], clp, 12),
            "original_reference": names.get("original_reference"),
            "rendering_provider_id": names.get("rendering_provider_id"),
            "covered_days": names.get("covered_days"),
            "drg_amount": names.get("drg_amount"),
            "reimbursement_rate": names.get("reimbursement_rate"),
            "hcpcs_payable": names.get("hcpcs_payable"),
            "interest": names.get("interest"),
            "coverage_amount": names.get("coverage_amount"),
            "adjustments": claim_adjustments,
            "remark_codes": tuple(dict.fromkeys(remarks)),
            "service_lines": claim_lines,
            "crossover_payer": names.get("crossover_payer"),
            "crossover_payer_id": names.get("crossover_payer_id"),
            "warnings": tuple(warnings),
        },
    )


def _money_or_none(seg: Segment, pos: int) -> Decimal | None:
    try:
        return _money(seg, pos)
    except InputError:
        return None


#: What follows a segment's elements for reading: element n of a segment is ``e[n - 1]``
#: of ``seg.elements + _PAD``, '' when the segment has fewer (as ``Segment.el``), for any
#: element the 835 reads (MIA23 the furthest).
_PAD = ("",) * 24
_PADL = list(_PAD)
_GROUPS = frozenset({"CO", "CR", "OA", "PI", "PR"})
_CAS_REASONS = tuple(2 + 3 * i for i in range(_CAS_TRIPLETS))


def _cas(seg: Segment, e: tuple[str, ...]) -> list[CasAdjustment]:
    group = e[0]
    if group not in _GROUPS:
        raise InputError("CAS01", f"unknown claim adjustment group code {group!r}")
    out: list[CasAdjustment] = []
    present = len(seg.elements)
    for reason_pos in _CAS_REASONS:
        if reason_pos > present:
            break  # the rest is padding: no reason and no amount (most CAS have one triplet)
        reason = e[reason_pos - 1]
        if not reason:
            if e[reason_pos]:
                raise InputError(seg.ref(reason_pos), "adjustment amount without a reason code")
            continue
        amount = _money_of(e[reason_pos], seg, reason_pos + 1)
        quantity = _quantity_of(e[reason_pos + 1], seg, reason_pos + 2)
        out.append(CasAdjustment(group, reason, amount, quantity))
    if not out:
        raise InputError("CAS02", "CAS segment without any reason code")
    return out


def _svc(seg: Segment, e: tuple[str, ...]) -> dict[str, Any]:
    billed = seg.comps(1) + _PAD
    if not billed[1]:
        raise InputError("SVC01", "composite medical procedure identifier is required")
    adjudicated = seg.comps(6) + _PAD
    if not adjudicated[1] and e[5]:
        raise InputError("SVC06", "the original procedure composite has no procedure code")
    return _line_values(billed, adjudicated, e, seg)


def _line_values(
    billed: Sequence[str], adjudicated: Sequence[str], e: Sequence[str], seg: Segment
) -> dict[str, Any]:
    """Every field of a ServicePayment, in order, as an SVC sets them (the line's own
    segments set the rest): ``billed`` and ``adjudicated`` its SVC01 and SVC06 split into
    components, ``e`` its elements (SVCnn is ``e[nn - 1]``, '' past the last), ``seg`` the
    segment an amount's refusal names. Both readers' SVCs (``_svc``, ``_svc_values``)."""
    return {
        "qualifier": billed[0],
        "procedure": billed[1],
        "modifiers": tuple([m for m in billed[2:6] if m]),
        "charge": _money_of(e[1], seg, 2),
        "paid": _money_of(e[2], seg, 3),
        "revenue_code": e[3] or None,
        "units": _quantity_of(e[4], seg, 5),
        "original_procedure": adjudicated[1] or None,
        "original_modifiers": tuple([m for m in adjudicated[2:6] if m]),
        "original_units": _quantity_of(e[6], seg, 7),
        "service_date": None,
        "service_end": None,
        "line_control_number": None,
        "allowed": None,
        "adjustments": (),
        "remark_codes": (),
    }


def _envelope_checks(segments: list[Segment]) -> None:
    isa = segments[0]
    if isa.el(12) != "00501":
        raise InputError("ISA12", f"expected interchange version 00501, got {isa.el(12)!r}")
    gs = next((s for s in segments if s.id == "GS"), None)
    if gs is None:
        raise InputError("GS", "no functional group (GS) in the interchange")
    if gs.el(1) != "HP" or not gs.el(8).startswith("005010X221"):
        raise InputError(
            "GS08",
            f"expected an 835 ({VERSION_835}, GS01 HP), got GS01 {gs.el(1)!r} GS08 {gs.el(8)!r}",
        )
    st = next((s for s in segments if s.id == "ST"), None)
    if st is None:
        raise InputError("ST", "no transaction set (ST) in the interchange")


@direct_init
@dataclass(frozen=True)
class TransactionRead:
    """One ST..SE of an 835 as read: the payment, or why it could not be read."""

    control_number: str  # ST02
    remittance: Remittance | None
    error: str | None = None
    field: str | None = None  # the element the error is in


@direct_init
@dataclass(frozen=True)
class Read835:
    """An 835 interchange read transaction by transaction (see ``read_835``)."""

    interchange_control_number: str
    transactions: tuple[TransactionRead, ...]
    warnings: tuple[str, ...] = ()  # file-level: the decoding, a separator read another way

    @property
    def remittances(self) -> list[Remittance]:
        """The transactions that could be read."""
        return [t.remittance for t in self.transactions if t.remittance is not None]


def decode_x12(body: bytes) -> tuple[str, str | None]:
    """The text of an X12 file and, when it is not plain ASCII, a warning naming the decoding.

    X12's basic and extended character sets are ASCII, but payers send names with accented
    letters: UTF-8 when the bytes are valid UTF-8, else ISO 8859-1 (which reads any byte).
    """
    try:
        return body.decode("ascii"), None
    except UnicodeDecodeError as exc:
        first = exc.start
    byte = body[first]
    try:
        if first < max(body.find(b"ISA"), 0) + 106:  # the fixed-length ISA: one byte a character
            raise UnicodeDecodeError("utf-8", body, first, first + 1, "inside the ISA")
        text, encoding = body.decode("utf-8"), "UTF-8"
    except UnicodeDecodeError:
        text, encoding = body.decode("iso-8859-1"), "ISO 8859-1"
    return text, f"byte {first} (0x{byte:02X}) is not ASCII: the file was decoded as {encoding}"


# SVC01-1 product/service id qualifiers of 005010X221A1 (and PLB03-1 reasons), used to see
# which character a payer really writes between composite components.
_SVC_QUALIFIERS = frozenset({"AD", "ER", "HC", "HP", "IV", "N4", "N6", "NU", "UI", "WK"})


def resolve_component_separator(text: str) -> tuple[str, str | None]:
    """Read composites with the separator the payer actually wrote, when ISA16 is wrong.

    Some payers declare ``:`` in ISA16 and write ``HC>99213``. When no composite of the
    file uses ISA16 and every one that can be seen (SVC01 after its qualifier, PLB03..13
    after the reason code) uses one other character, that character is meant: the ISA16 is
    rewritten for reading and a warning says so. Anything less clear is left as it is.
    """
    text = text.lstrip("\ufeff \t\r\n")
    if not text.startswith("ISA") or len(text) < 106:
        return text, None  # the reader says what is wrong with it
    element, declared, terminator = text[3], text[104], text[105]
    repetition = text[82]
    seen: set[str] = set()
    for raw in _svc_or_plb(text[106:], terminator):
        parts = raw.strip().split(element)
        if parts[0] == "SVC" and len(parts) > 1:
            candidates = [parts[1]]
        elif parts[0] == "PLB":
            candidates = parts[3:15:2]
        else:
            continue
        for value in candidates:
            if declared in value:
                return text, None  # the declared separator is in use: nothing to resolve
            if parts[0] == "SVC" and value[:2] not in _SVC_QUALIFIERS:
                continue
            if len(value) > 2 and not value[2].isalnum() and not value[2].isspace():
                seen.add(value[2])
    if len(seen) != 1:
        return text, None
    actual = seen.pop()
    if actual in (element, terminator, repetition, declared):
        return text, None
    warning = (
        f"ISA16 declares component separator {declared!r} but the composites are written "
        f"with {actual!r}: read with {actual!r}"
    )
    return text[:104] + actual + text[105:], warning


def _svc_or_plb(body: str, terminator: str) -> Iterator[str]:
    """The segments (as split on ``terminator``) whose text holds "SVC" or "PLB": all that
    ``resolve_component_separator`` looks at, the SVCs first. It returns at the first
    composite written with ISA16 (in a file of the simulator's, the first SVC), and what it
    finds otherwise does not depend on the order: found where they are, not by splitting
    the whole file first (3.4 us a file of the simulator's, most of it that split)."""
    if terminator in "SVCPLB":  # could be inside the patterns: every segment, as it was
        yield from (raw for raw in body.split(terminator) if "SVC" in raw or "PLB" in raw)
        return
    for pattern in ("SVC", "PLB"):
        at = body.find(pattern)
        while at != -1:
            start = body.rfind(terminator, 0, at) + 1
            end = body.find(terminator, at)
            if end == -1:
                end = len(body)
            yield body[start:end]
            at = body.find(pattern, end)  # the next segment that holds it


def read_835(data: bytes | str, *, fast: bool = True) -> Read835:
    """Read every 835 transaction set of an interchange, each on its own.

    Only an envelope that cannot be read (not X12, not an 835) raises ``InputError``. A
    transaction set with an error is returned with the error and without its payment, the
    others are read; within a transaction set, a claim with an error becomes a defect of
    its payment (``Remittance.defects``) and the other claims are read.

    An interchange without a defect is read from its element lists (``_read_rows``); one
    with anything to report, from its segments, which name it. ``fast=False`` reads every
    interchange from its segments: the judge of the other way
    (tests/unit/test_remittance_era_rows.py).
    """
    warnings: list[str] = []
    if isinstance(data, bytes):
        text, decoding = decode_x12(data)
        if decoding:
            warnings.append(decoding)
    else:
        text = data
    text, separator = resolve_component_separator(text)
    if separator:
        warnings.append(separator)
    if fast:
        read, rows = segment_rows(text)
        if rows is not None:
            try:
                isa_control, transactions = _read_rows(rows, read[104])
                return Read835(isa_control, transactions, tuple(warnings))
            except InputError:
                pass  # something to report: read again below, where each refusal is named
    segments = list(read_segments(text))
    _envelope_checks(segments)
    isa_control = segments[0].el(13)
    out: list[TransactionRead] = []
    current: list[Segment] | None = None
    for seg in segments:
        if seg.id == "ST":
            if current is not None:  # an ST without its SE
                out.append(_read_transaction(current, isa_control))
            current = [seg]
        elif current is not None:
            current.append(seg)
            if seg.id == "SE":
                out.append(_read_transaction(current, isa_control))
                current = None
    if current is not None:
        out.append(_read_transaction(current, isa_control))
    return Read835(isa_control, tuple(out), tuple(warnings))


# --- an interchange without defects, from its element lists ----------------------------------
#
# Most 835s have nothing to report. For those the reader's element lists are read directly:
# no ``Segment`` a segment, no grouping into lists of segments, no padded tuple a claim
# segment, one loop without a call a segment (``read_835`` of the stage bench's 835s: 79 us
# a file to 56, with the CAS triplets kept below). Element n of a segment is ``row[n]``
# (the id is ``row[0]``), '' past its last element (``_PAD``). Whatever the segment reader
# would note (an error, a defect, a warning but the payment date's) raises InputError here,
# and ``read_835`` reads the interchange again from its segments, which say what and where:
# every refusal, defect and warning is theirs, word for word. ``_ANYWHERE`` stands for the
# segment in the helpers' refusals, which are never shown.

_ANYWHERE = Segment("", (), None, 0)


def _read_rows(rows: list[list[str]], sub: str) -> tuple[str, tuple[TransactionRead, ...]]:
    """``read_835``'s interchange control number and transaction sets, from its element
    lists (``sub``: the component separator); InputError when anything is to be noted."""
    for row in rows:
        row += _PAD
    isa = rows[0]
    if isa[12] != "00501":
        raise InputError("ISA12", "not 00501")
    gs = next((r for r in rows if r[0] == "GS"), None)
    if gs is None or gs[1] != "HP" or not gs[8].startswith("005010X221"):
        raise InputError("GS08", "not an 835")
    isa_control = isa[13]
    out: list[TransactionRead] = []
    start = -1
    for i, row in enumerate(rows):
        sid = row[0]
        if sid == "ST":
            if start >= 0:  # an ST without its SE
                out.append(_transaction_rows(rows[start:i], isa_control, sub))
            start = i
        elif sid == "SE" and start >= 0:
            out.append(_transaction_rows(rows[start : i + 1], isa_control, sub))
            start = -1
    if start >= 0:
        out.append(_transaction_rows(rows[start:], isa_control, sub))
    if not out:
        raise InputError("ST", "no transaction set")
    return isa_control, tuple(out)


def _transaction_rows(rows: list[list[str]], isa_control: str, sub: str) -> TransactionRead:
    """``_read_transaction`` of a transaction set without defects (InputError otherwise)."""
    st = rows[0]
    if st[1] != "835":
        raise InputError("ST01", "not 835")
    header: dict[str, Any] = {"payee_tax_id": None, "production_date": None, "payer_id": None}
    bpr: list[str] | None = None
    trn: list[str] | None = None
    party: str | None = None
    claims: list[ClaimPayment] = []
    plbs: list[ProviderAdjustment] = []
    clp: list[str] | None = None  # the open claim's CLP, and what its loop has set:
    names: dict[str, Any] = {}
    adjustments: list[CasAdjustment] = []
    remarks: list[str] = []
    lines: list[ServicePayment] = []
    line: dict[str, Any] | None = None
    for row in rows[1:]:
        sid = row[0]
        if clp is not None and sid not in _OUTSIDE_CLAIMS:  # ``_claim_segment``
            if sid == "DTM":
                qualifier = row[1]
                if line is not None:
                    if qualifier == "472" or qualifier == "150":
                        line["service_date"] = _date_of(row[2], _ANYWHERE, 2)
                    elif qualifier == "151":
                        line["service_end"] = _date_of(row[2], _ANYWHERE, 2)
                elif qualifier == "232":
                    names["statement_start"] = _date_of(row[2], _ANYWHERE, 2)
                elif qualifier == "233":
                    names["statement_end"] = _date_of(row[2], _ANYWHERE, 2)
                elif qualifier == "050":
                    names["received_date"] = _date_of(row[2], _ANYWHERE, 2)
            elif sid == "CAS":
                if line is None:
                    adjustments.extend(_cas_row(row))
                else:
                    line["adjustments"] = line["adjustments"] + tuple(_cas_row(row))
            elif sid == "SVC":
                if line is not None:
                    lines.append(_made(ServicePayment, line))
                line = _svc_row(row, sub)
            elif line is not None:
                if sid == "REF":
                    if row[1] == "6R":
                        line["line_control_number"] = row[2] or None
                elif sid == "AMT":
                    if row[1] == "B6":
                        line["allowed"] = _money_of(row[2], _ANYWHERE, 2)
                elif sid == "LQ" and row[1] == "HE" and row[2]:
                    line["remark_codes"] = line["remark_codes"] + (row[2],)
            elif sid == "NM1":
                qualifier = row[1]
                if qualifier == "QC":
                    names["patient_last_name"] = row[3] or None
                    names["patient_first_name"] = row[4] or None
                    names["patient_member_id"] = row[9] or None
                elif qualifier == "82":
                    names["rendering_provider_id"] = row[9] or None
                elif qualifier == "TT":
                    names["crossover_payer"] = row[3] or row[9] or "unnamed"
                    names["crossover_payer_id"] = row[9] or None
            elif sid == "MOA":
                names["reimbursement_rate"] = _quantity_of(row[1], _ANYWHERE, 1)
                names["hcpcs_payable"] = _money_of(row[2], _ANYWHERE, 2, False) if row[2] else None
                remarks.extend(c for c in row[3:8] if c)
            elif sid == "MIA":
                names["covered_days"] = _quantity_of(row[1], _ANYWHERE, 1)
                names["drg_amount"] = _money_of(row[4], _ANYWHERE, 4, False) if row[4] else None
                remarks.extend(c for c in (row[5], row[20], row[21], row[22], row[23]) if c)
            elif sid == "REF":
                if row[1] == "F8":
                    names["original_reference"] = row[2] or None
            elif sid == "AMT" and row[1] in _CLAIM_AMOUNTS:
                names[_CLAIM_AMOUNTS[row[1]]] = _money_of(row[2], _ANYWHERE, 2)
            continue
        if sid == "BPR":
            bpr = row
            continue
        if sid == "CLP" or sid == "LX" or sid == "SE" or sid == "PLB":
            if clp is not None:  # the open claim closed
                if line is not None:
                    lines.append(_made(ServicePayment, line))
                claims.append(_claim_row(clp, names, adjustments, remarks, lines))
                clp, line = None, None
            if sid == "CLP":
                clp, names, adjustments, remarks, lines = row, {}, [], [], []
            elif sid == "PLB":
                plbs.extend(_plb_row(row, sub))
        elif sid == "TRN":
            trn = row
        elif sid == "DTM" and row[1] == "405":
            header["production_date"] = _date_of(row[2], _ANYWHERE, 2)
        elif sid == "N1":
            party = row[1]
            if party == "PR":
                header["payer_name"] = row[2]
                if row[4]:
                    header["payer_id"] = row[4]
            elif party == "PE":
                header["payee_name"] = row[2]
                header["payee_id_qualifier"] = row[3] or None
                header["payee_id"] = row[4] or None
        elif sid == "REF":
            if party == "PR" and row[1] == "2U":
                header["payer_id"] = row[2]
            elif party == "PE" and row[1] == "TJ":
                header["payee_tax_id"] = row[2]
        elif sid == "CAS" or sid == "SVC":
            raise InputError(sid, "outside a claim")
    if clp is not None:
        if line is not None:
            lines.append(_made(ServicePayment, line))
        claims.append(_claim_row(clp, names, adjustments, remarks, lines))
    if bpr is None or trn is None or not trn[2]:
        raise InputError("BPR", "no BPR or TRN")
    if "payer_name" not in header or "payee_name" not in header:
        raise InputError("N1", "no payer or payee")
    header.setdefault("payee_id_qualifier", None)
    header.setdefault("payee_id", None)
    warnings: list[str] = []
    payment_date = _date_of(bpr[16], _ANYWHERE, 16)
    if payment_date is None and bpr[16] and header["production_date"] is not None:
        payment_date = header["production_date"]
        warnings.append("payment date taken from the production date (DTM*405)")
    remittance = Remittance(
        interchange_control_number=isa_control,
        transaction_control_number=st[2],
        handling_code=bpr[1],
        payment_amount=_money_of(bpr[2], _ANYWHERE, 2),
        credit_debit=bpr[3],
        payment_method=bpr[4],
        payment_date=payment_date,
        trace_number=trn[2],
        originator_id=trn[3] or None,
        claims=tuple(claims),
        provider_adjustments=tuple(plbs),
        defects=(),
        warnings=tuple(warnings),
        **header,
    )
    return TransactionRead(st[2], remittance)


def _claim_row(
    clp: list[str],
    names: dict[str, Any],
    adjustments: list[CasAdjustment],
    remarks: list[str],
    lines: list[ServicePayment],
) -> ClaimPayment:
    """``_ClaimBuilder.build`` of a claim loop without defects (InputError otherwise)."""
    if not clp[1] or clp[2] not in CLAIM_STATUS_CODES:
        raise InputError("CLP", "no CLP01, or an unknown CLP02")
    # CLPnn is clp[nn] (clp[0] is the segment's id): from CLP01 on, as the builder reads it.
    return _claim_payment(clp[1:], _ANYWHERE, names, adjustments, lines, remarks, [])


def _cas_row(row: list[str]) -> list[CasAdjustment]:
    """``_cas`` of a CAS without defects (InputError otherwise). Past the last element every
    reason and amount is '' (``_PAD``): skipped, as ``_cas`` stops there."""
    group = row[1]
    if group not in _GROUPS:
        raise InputError("CAS01", "unknown group")
    out: list[CasAdjustment] = []
    for reason_pos in _CAS_REASONS:
        reason = row[reason_pos]
        if not reason:
            if row[reason_pos + 1]:
                raise InputError("CAS", "amount without a reason")
            continue
        key = (group, reason, row[reason_pos + 1], row[reason_pos + 2])
        adjustment = _TRIPLETS.get(key)
        if adjustment is None:
            amount = _money_of(row[reason_pos + 1], _ANYWHERE, reason_pos + 1)
            quantity = _quantity_of(row[reason_pos + 2], _ANYWHERE, reason_pos + 2)
            adjustment = CasAdjustment(group, reason, amount, quantity)
            if len(_TRIPLETS) >= _AMOUNTS_KEPT:
                _TRIPLETS.clear()
            _TRIPLETS[key] = adjustment
        out.append(adjustment)
    if not out:
        raise InputError("CAS02", "no reason")
    return out


# An 835 repeats its CAS triplets (a fee schedule's contractual adjustment per code and
# payer: 6,140 triplets of the stage bench's 835s are 1,670 distinct), and a triplet is a
# frozen value: each one read is kept by its group, reason and the texts of its amount and
# quantity, and the same object serves every claim that has it.
_TRIPLETS: dict[tuple[str, str, str, str], CasAdjustment] = {}


def _svc_row(row: list[str], sub: str) -> dict[str, Any]:
    """``_svc`` of an SVC without defects (InputError otherwise): a new dict, which the
    line's other segments fill in."""
    key = (sub, row[1], row[2], row[3], row[4], row[5], row[6], row[7])
    line = _LINES.get(key)
    if line is None:
        line = _svc_values(row, sub)
        if len(_LINES) >= _AMOUNTS_KEPT:
            _LINES.clear()
        _LINES[key] = line
    return line.copy()


# A fee schedule bills and pays the same procedures at the same prices: the stage bench's
# 3,310 service lines have 1,285 distinct SVC segments. What an SVC sets of its line is kept
# by its elements (and the component separator), and each line starts from a copy.
_LINES: dict[tuple[str, ...], dict[str, Any]] = {}


def _svc_values(row: list[str], sub: str) -> dict[str, Any]:
    """What an SVC without defects sets of its line (InputError for a defect)."""
    billed = row[1].split(sub) + _PADL
    if not billed[1]:
        raise InputError("SVC01", "no procedure")
    adjudicated = row[6].split(sub) + _PADL
    if not adjudicated[1] and row[6]:
        raise InputError("SVC06", "no procedure")
    return _line_values(billed, adjudicated, row[1:], _ANYWHERE)  # SVCnn is row[nn]


def _plb_row(row: list[str], sub: str) -> list[ProviderAdjustment]:
    """``_plb`` of a PLB without defects (InputError otherwise)."""
    provider = row[1]
    if not provider:
        raise InputError("PLB01", "required")
    period = _date_of(row[2], _ANYWHERE, 2)
    out: list[ProviderAdjustment] = []
    for pos in range(3, 15, 2):
        if not row[pos]:
            continue
        parts = row[pos].split(sub)
        out.append(
            ProviderAdjustment(
                provider_id=provider,
                fiscal_period_end=period,
                reason=parts[0],
                reference=(parts[1] if len(parts) > 1 else "") or None,
                amount=_money_of(row[pos + 1], _ANYWHERE, pos + 1),
            )
        )
    return out


def _read_transaction(segments: list[Segment], isa_control: str) -> TransactionRead:
    st = segments[0]
    try:
        if st.el(1) != "835":
            raise InputError("ST01", f"expected transaction set 835, got {st.el(1)!r}")
        return TransactionRead(st.el(2), _parse_transaction(segments, isa_control))
    except InputError as exc:
        return TransactionRead(st.el(2), None, str(exc), exc.field)


def parse_835_transactions(text: str) -> list[Remittance]:
    """Parse every 835 transaction set (ST..SE) in an interchange, in file order.

    Strict: any transaction set or claim that cannot be read raises (``read_835`` reads
    around them).
    """
    read = read_835(text)
    out: list[Remittance] = []
    for transaction in read.transactions:
        if transaction.remittance is None:
            error = f"ST {transaction.control_number}: {transaction.error}"
            raise InputError(transaction.field or "ST", error)
        for defect in transaction.remittance.defects:
            raise InputError(defect.field, f"CLP01 {defect.patient_control_number}: {defect.error}")
        out.append(transaction.remittance)
    if not any(r.claims for r in out):
        raise InputError("CLP", "no claim payment (CLP) in the 835")
    return out


def parse_835(text: str) -> Remittance:
    """Parse an 835 interchange that carries one transaction set (one payment)."""
    remits = parse_835_transactions(text)
    if len(remits) != 1:
        raise InputError(
            "ST", f"the file holds {len(remits)} 835 transactions; use parse_835_transactions"
        )
    return remits[0]


def _parse_transaction(segments: list[Segment], isa_control: str) -> Remittance:
    header: dict[str, Any] = {"payee_tax_id": None, "production_date": None, "payer_id": None}
    warnings: list[str] = []
    bpr = trn = None
    party: str | None = None
    claims: list[ClaimPayment] = []
    defects: list[ClaimDefect] = []
    plbs: list[ProviderAdjustment] = []
    claim: _ClaimBuilder | None = None

    def close_claim() -> None:
        nonlocal claim
        if claim is not None:
            read = claim.close()
            (claims if isinstance(read, ClaimPayment) else defects).append(read)  # type: ignore[arg-type]
            claim = None

    for seg in segments[1:]:
        sid = seg.id
        if claim is not None and sid not in _OUTSIDE_CLAIMS:
            # ``claim.take(seg)``, written out: most of a file's segments are a claim's
            if claim.error is None:
                try:
                    _claim_segment(claim, seg, seg.elements + _PAD)
                except InputError as exc:
                    claim.error, claim.error_field = f"segment {seg.line} {exc}", exc.field
            continue
        if sid == "BPR":
            bpr = seg
        elif sid == "TRN" and claim is None:
            trn = seg
        elif sid == "DTM" and claim is None and seg.el(1) == "405":
            header["production_date"] = _date(seg, 2, warnings)
        elif sid == "N1" and claim is None:
            party = seg.el(1)
            if party == "PR":
                header["payer_name"] = seg.el(2)
                if seg.el(4):
                    header["payer_id"] = seg.el(4)
            elif party == "PE":
                header["payee_name"] = seg.el(2)
                header["payee_id_qualifier"] = seg.el(3) or None
                header["payee_id"] = seg.el(4) or None
        elif sid == "REF" and claim is None:
            if party == "PR" and seg.el(1) == "2U":
                header["payer_id"] = seg.el(2)
            elif party == "PE" and seg.el(1) == "TJ":
                header["payee_tax_id"] = seg.el(2)
        elif sid == "CLP":
            close_claim()
            claim = _ClaimBuilder(seg)
        elif sid == "LX" or sid == "SE":
            close_claim()
        elif sid == "PLB":
            close_claim()
            plbs.extend(_plb(seg, warnings))
        elif claim is None:
            if sid == "CAS" or sid == "SVC":
                raise InputError(sid, f"{sid} segment outside a claim (no CLP before it)")
        else:
            claim.take(seg)
    close_claim()
    if bpr is None:
        raise InputError("BPR", "the 835 has no BPR (financial information) segment")
    if trn is None:
        raise InputError("TRN", "the 835 has no TRN (reassociation trace number) segment")
    if "payer_name" not in header:
        raise InputError("N1", "no payer (N1*PR) in the 835")
    if "payee_name" not in header:
        raise InputError("N1", "no payee (N1*PE) in the 835")
    header.setdefault("payee_id_qualifier", None)
    header.setdefault("payee_id", None)
    payment_date = _date(bpr, 16, warnings)
    if payment_date is None and bpr.el(16) and header["production_date"] is not None:
        payment_date = header["production_date"]
        warnings.append("payment date taken from the production date (DTM*405)")
    return Remittance(
        interchange_control_number=isa_control,
        transaction_control_number=segments[0].el(2),
        handling_code=bpr.el(1),
        payment_amount=_money(bpr, 2),
        credit_debit=bpr.el(3),
        payment_method=bpr.el(4),
        payment_date=payment_date,
        trace_number=_required(trn, 2),
        originator_id=trn.el(3) or None,
        claims=tuple(claims),
        provider_adjustments=tuple(plbs),
        defects=tuple(defects),
        warnings=tuple(warnings),
        **header,
    )


#: Segments that are never part of a claim loop (a BPR there is still the payment's).
_OUTSIDE_CLAIMS = frozenset({"BPR", "CLP", "LX", "SE", "PLB"})


def _required(seg: Segment, pos: int) -> str:
    value = seg.el(pos)
    if not value:
        raise InputError(seg.ref(pos), "required element is empty")
    return value


def _claim_segment(claim: _ClaimBuilder, seg: Segment, e: tuple[str, ...]) -> None:
    """One segment of a claim loop; ``e``: its elements padded (``_PAD``)."""
    sid = seg.id
    line = claim.line
    if sid == "DTM":
        qualifier = e[0]
        if line is not None:
            if qualifier == "472" or qualifier == "150":
                line["service_date"] = _date_of(e[1], seg, 2, claim.warnings)
            elif qualifier == "151":
                line["service_end"] = _date_of(e[1], seg, 2, claim.warnings)
        elif qualifier == "232":
            claim.names["statement_start"] = _date_of(e[1], seg, 2, claim.warnings)
        elif qualifier == "233":
            claim.names["statement_end"] = _date_of(e[1], seg, 2, claim.warnings)
        elif qualifier == "050":
            claim.names["received_date"] = _date_of(e[1], seg, 2, claim.warnings)
    elif sid == "CAS":
        if line is None:
            claim.adjustments.extend(_cas(seg, e))
        else:
            line["adjustments"] = line["adjustments"] + tuple(_cas(seg, e))
    elif sid == "SVC":
        claim.close_line()
        claim.line = _svc(seg, e)
    elif line is not None:
        if sid == "REF":
            if e[0] == "6R":
                line["line_control_number"] = e[1] or None
        elif sid == "AMT":
            if e[0] == "B6":
                line["allowed"] = _money_of(e[1], seg, 2)
        elif sid == "LQ" and e[0] == "HE" and e[1]:
            line["remark_codes"] = line["remark_codes"] + (e[1],)
    elif sid == "NM1":
        qualifier = e[0]
        if qualifier == "QC":
            claim.names["patient_last_name"] = e[2] or None
            claim.names["patient_first_name"] = e[3] or None
            claim.names["patient_member_id"] = e[8] or None
        elif qualifier == "82":
            claim.names["rendering_provider_id"] = e[8] or None
        elif qualifier == "TT":
            claim.names["crossover_payer"] = e[2] or e[8] or "unnamed"
            claim.names["crossover_payer_id"] = e[8] or None
    elif sid == "MOA":
        claim.names["reimbursement_rate"] = _quantity_of(e[0], seg, 1)
        claim.names["hcpcs_payable"] = _money_of(e[1], seg, 2, False) if e[1] else None
        claim.remarks.extend(c for c in e[2:7] if c)
    elif sid == "MIA":
        claim.names["covered_days"] = _quantity_of(e[0], seg, 1)
        claim.names["drg_amount"] = _money_of(e[3], seg, 4, False) if e[3] else None
        claim.remarks.extend(c for c in (e[4], e[19], e[20], e[21], e[22]) if c)
    elif sid == "REF":
        if e[0] == "F8":
            claim.names["original_reference"] = e[1] or None
    elif sid == "AMT" and e[0] in _CLAIM_AMOUNTS:
        claim.names[_CLAIM_AMOUNTS[e[0]]] = _money_of(e[1], seg, 2)


_CLAIM_AMOUNTS = {"I": "interest", "AU": "coverage_amount"}


def _plb(seg: Segment, warnings: list[str] | None = None) -> list[ProviderAdjustment]:
    provider = _required(seg, 1)
    period = _date(seg, 2, warnings)
    out: list[ProviderAdjustment] = []
    for pos in range(3, 15, 2):
        if not seg.el(pos):
            continue
        out.append(
            ProviderAdjustment(
                provider_id=provider,
                fiscal_period_end=period,
                reason=seg.comp(pos, 1),
                reference=seg.comp(pos, 2) or None,
                amount=_money(seg, pos + 1),
            )
        )
    return out


# --- validation --------------------------------------------------------------------------


def validate_835(text: str, *, balancing: bool = True) -> list[str]:
    """Errors pyx12 finds against the 835 map, plus broken balancing rules; [] means valid."""
    try:
        remits = parse_835_transactions(text)
    except InputError as exc:
        return [str(exc)]
    errors = _pyx12_errors(text.lstrip("\ufeff \t\r\n"))
    if balancing:
        for remit in remits:
            errors.extend(
                f"ST {remit.transaction_control_number}: {e}" for e in remit.balance_errors()
            )
    return errors


def _pyx12_errors(text: str) -> list[str]:
    """Run pyx12's x12n_document (no 997/999 output) and flatten its JSON error report."""
    report = io.StringIO()
    logger = logging.getLogger("pyx12")
    try:
        ok = pyx12.x12n_document.x12n_document(
            pyx12.params.params(), io.StringIO(text), None, None, None, fd_json=report
        )
    except (pyx12.errors.X12Error, pyx12.errors.EngineError) as exc:
        return [f"pyx12: {exc}"]
    messages: list[str] = []
    doc = json.loads(report.getvalue() or '{"interchanges": []}')
    for isa in doc["interchanges"]:
        messages.extend(f"ISA: {e['err_str']} ({e['err_cde']})" for e in isa["errors"])
        for gs in isa["groups"]:
            messages.extend(f"GS: {e['err_str']} ({e['err_cde']})" for e in gs["errors"])
            for st in gs["transactions"]:
                messages.extend(f"ST: {e['err_str']} ({e['err_cde']})" for e in st["errors"])
                for seg in st["segments"]:
                    where = f"line {seg['cur_line']} {seg['seg_id']}"
                    messages.extend(f"{where}: {e['err_str']}" for e in seg["errors"])
                    for ele in seg["elements"]:
                        ref = f"{seg['seg_id']}{int(ele['ele_pos']):02d}"
                        messages.extend(f"{where} {ref}: {e['err_str']}" for e in ele["errors"])
    if not ok and not messages:
        logger.debug("pyx12 rejected the 835 without a detailed error")
        messages.append("pyx12: the document is not valid (no detail reported)")
    return messages
