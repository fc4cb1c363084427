"""Turn validated encounters into submitted claims, each carried by an X12 837P or 837I.

The setting decides the claim type: a professional encounter bills on an 837P, an
outpatient or inpatient hospital encounter on an 837I. Work is split in three pure steps
so the service can batch claims into one interchange per payer:

- ``plan_claim``: the claim id, type, totals and expected reimbursement of one encounter;
- ``write_interchange``: one 837 interchange for planned claims of one type, under a
  control number the caller allocates (the service from its durable counter);
- ``submitted_claim``: the ``claims.submitted.v1`` event for a claim and its interchange;
  ``interchange_record``: the interchange itself, once, on ``claims.interchanges.v1`` (the
  stage's claim events carry its control number instead of its text).

``build_claim`` chains them for one claim under a control number derived from the claim
id: what the offline command and the tests use. Nothing reads the clock: ids, control
numbers and timestamps come from the record, so a replay writes the same event.

Expected reimbursement: from the payer's contract when the payer registry names one and the
chargemaster publishes its rates (``services/refdata/contracts.py``); else, for Medicare
payers only, professional claims from the Medicare physician fee schedule (the CMS RVU
files, when loaded), inpatient claims as the MS-DRG relative weight (from coding) times a
base rate (``DEFAULT_DRG_BASE_RATE``) adjusted by the hospital's IPPS wage index when its
profile names a CBSA and the wage index table is loaded (``services/refdata/wage_index.py``),
outpatient facility claims none (OPPS rates are not loaded); other payers without a
contract none. ``expected_basis`` says which.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Any, Literal, Protocol

from pipeline.errors import InputError
from pipeline.models import (
    Address,
    CodedEncounter,
    Coverage,
    Encounter,
    Interchange,
    SubmittedClaim,
    ValidatedEncounter,
    event_id,
)
from pipeline.serde import model_maker
from services.claims.x12_837_common import (
    DEFAULT_SUBMITTER,
    ClaimInput,
    Frequency,
    Profile,
    Submitter,
    build_837,
)
from services.claims.x12_837i import INSTITUTIONAL
from services.claims.x12_837p import PROFESSIONAL
from services.refdata import ub04
from services.refdata.contracts import contract_expected
from services.refdata.drg import DEFAULT_DRG_BASE_RATE
from services.refdata.masterdata import MasterData
from services.refdata.payers import PayerEntry
from services.refdata.wage_index import adjusted_rate
from services.x12.writer import Usage

STAGE = "claims"
VERSION = "v1"
ClaimType = Literal["professional", "institutional"]
_CODED_FIELDS = frozenset(CodedEncounter.model_fields)
# Places of service the Medicare physician fee schedule pays at the facility rate.
FACILITY_POS = frozenset(
    {"02", "19", "21", "22", "23", "24", "26", "31", "34", "41", "42", "51", "52", "53", "56", "61"}
)
MEDICARE_FILING = frozenset({"MA", "MB"})
"""Claim filing indicators of Medicare Part A and Part B (SBR09)."""
PROFILES: dict[ClaimType, Profile] = {"professional": PROFESSIONAL, "institutional": INSTITUTIONAL}


class FeeSchedule(Protocol):
    """Prices one service line; ``None`` when the schedule has no rate for it."""

    def allowed(
        self,
        code: str,
        modifiers: list[str],
        units: float,
        state: str | None,
        postal_code: str | None,
        *,
        facility: bool = False,
    ) -> Decimal | None: ...


@lru_cache(maxsize=8192)
def claim_id_for(encounter_id: str) -> str:
    """The patient control number: 'CF' + 16 hex digits of the encounter id's SHA-256. Kept:
    a verdict's claim ids are asked for four times or more (reading the store, planning,
    each posting: 2,793 times for 600 encounters in the claims stage benchmark)."""
    return "CF" + hashlib.sha256(encounter_id.encode()).hexdigest()[:16].upper()


PROFESSIONAL_PART = "professional"


def claim_parts(validated: ValidatedEncounter) -> list[tuple[str, ValidatedEncounter]]:
    """The claims one encounter bills, each with the key its claim id comes from.

    A facility encounter whose lines include a hospital-employed physician's professional
    services (``ServiceLine.claim_type`` professional) bills two claims: the facility's
    837I (its lines, key = the encounter id) and the physician's 837P (the professional
    lines, billed by ``professional_billing_provider`` or else the billing provider, with
    the physician as rendering provider; key = ``{encounter id}/professional``), each as
    ``ub04.claim_part`` makes it (the scrubber judges the same parts). Every other
    encounter bills one claim under the encounter id."""
    kinds = ub04.claim_kinds(validated.coded)
    if len(kinds) < 2:
        return [(validated.encounter_id, validated)]
    return [
        (validated.encounter_id, _part(validated, "institutional")),
        (f"{validated.encounter_id}/{PROFESSIONAL_PART}", _part(validated, "professional")),
    ]


def _part(validated: ValidatedEncounter, kind: ClaimType) -> ValidatedEncounter:
    """The verdict restricted to the lines of one claim type (renumbered from 1)."""
    return validated.model_copy(update={"coded": ub04.claim_part(validated.coded, kind)})


def interchange_control_number(claim_id: str) -> int:
    """A 9-digit ISA13 (1..999999999) derived from the claim id, for offline single claims.

    The claims service does not use it: it allocates from a durable counter instead.
    """
    digest = hashlib.sha256(f"isa13\x1f{claim_id}".encode()).hexdigest()
    return int(digest, 16) % 999_999_999 + 1


def claim_type_for(setting: str) -> ClaimType:
    """Professional encounters bill on an 837P; outpatient and inpatient stays on an 837I."""
    return ub04.claim_type_of(setting)


def claim_event_id(claim_id: str, frequency: Frequency = "1", answers: str | None = None) -> str:
    """The event id of a claim: deterministic, and one per claim actually sent.

    The first original of a claim id keeps the id it always had (claim id, stage, version).
    Every later claim under the same claim id (a replacement 7, a void 8, or an original
    billed again after a void or a front-end rejection) answers one verdict, and its id is
    derived from that verdict's event id (``answers``): a verdict read again gives the same
    id (at-least-once delivery drops the repeat), while successive replacements of one
    claim, which answer different verdicts, get different ids. The prior-claim reference
    (REF*F8) is not part of it: two replacements of one claim refer to the same claim.
    """
    if answers is None:
        if frequency != "1":
            raise ValueError(
                f"a claim of frequency {frequency} is identified by the verdict it answers"
            )
        return event_id(claim_id, STAGE, VERSION)
    return event_id(claim_id, STAGE, VERSION, "correction", frequency, answers)


# --- expected reimbursement ----------------------------------------------------------------


def _pricing_location(coded: CodedEncounter) -> Address | None:
    """Where the service was done: the facility if it has an address, else the billing office."""
    enc = coded.encounter
    if enc.facility is not None and enc.facility.address is not None:
        return enc.facility.address
    return enc.billing_provider.address


def expected_reimbursement(
    coded: CodedEncounter, fee_schedule: FeeSchedule | None
) -> tuple[Decimal | None, str]:
    """Professional: sum of fee-schedule allowed amounts; no total unless every line is priced."""
    if fee_schedule is None:
        return None, "none"
    where = _pricing_location(coded)
    state = where.state if where else None
    postal = where.postal_code if where else None
    total = Decimal("0")
    for line in coded.lines:
        pos = line.place_of_service or coded.encounter.place_of_service
        if line.code is None:
            return None, "fee_schedule_incomplete"
        allowed = fee_schedule.allowed(
            line.code, list(line.modifiers), line.units, state, postal, facility=pos in FACILITY_POS
        )
        if allowed is None:
            # A partial sum would show up downstream as a false underpayment variance.
            return None, "fee_schedule_incomplete"
        total += allowed
    return total, "fee_schedule"


def drg_reimbursement(
    coded: CodedEncounter, base_rate: Decimal, wage_index: tuple[str, Decimal] | None = None
) -> tuple[Decimal | None, str]:
    """Inpatient: MS-DRG relative weight x base rate, when coding gave a DRG and its weight;
    the base rate adjusted by the hospital's IPPS wage index (CBSA, index) when known."""
    drg = coded.drg
    if drg is None:
        return None, "drg_missing"
    if drg.weight is None:
        return None, "drg_weight_unknown"
    weight = Decimal(str(drg.weight))
    area = ""
    if wage_index is not None:
        cbsa, index = wage_index
        base_rate = adjusted_rate(base_rate, index)
        area = f" (wage index {index} CBSA {cbsa})"
    allowed = (weight * base_rate).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return allowed, f"ms_drg {drg.code} weight {weight} x base {base_rate}{area}"


# --- planning, writing, the event ------------------------------------------------------------


@dataclass(frozen=True)
class PlannedClaim:
    """One claim ready to be written: what the 837 needs and what its event will say."""

    event_id: str
    claim: ClaimInput
    claim_type: ClaimType
    encounter_id: str
    payer_id: str
    payer_name: str
    total_charge: Decimal
    expected: Decimal | None
    expected_basis: str
    line_count: int
    service_start: date
    service_end: date
    rule_pack_version: str | None
    submitted_at: datetime

    @property
    def claim_id(self) -> str:
        """The patient control number (CLM01)."""
        return self.claim.claim_id


def plan_claim(
    validated: ValidatedEncounter,
    *,
    fee_schedule: FeeSchedule | None = None,
    drg_base_rate: Decimal = DEFAULT_DRG_BASE_RATE,
    frequency: Frequency = "1",
    original_reference: str | None = None,
    claim_id: str | None = None,
    answers: str | None = None,
    master: MasterData | None = None,
) -> PlannedClaim:
    """Plan the claim for a clean or warned encounter (an original unless told otherwise).

    ``master`` (the payer registry and chargemaster) gives the payer's electronic id and
    claim filing indicator for the claim type, and the expected payment under its contract;
    without a contract only Medicare payers get one (Medicare pricing), others none.

    ``answers`` is the event id of the verdict the claim answers (see ``claim_event_id``):
    none for the first original; for a replacement or void it defaults to the verdict the
    claim is built from, which for a void is the earlier, billed verdict, so the corrections
    store always passes the verdict that asked.
    """
    if answers is None and frequency != "1":
        answers = validated.event_id
    if validated.outcome == "rejected":
        raise InputError("outcome", "a rejected encounter cannot be billed; fix it and re-validate")
    coded = validated.coded
    enc = coded.encounter
    claim_type = claim_type_for(enc.setting)
    claim_id = claim_id or claim_id_for(validated.encounter_id)
    master = master or MasterData()
    payer = master.payers.find(enc.coverage.payer_id, enc.coverage.payer_name)
    if payer is not None:
        coded = _as_registered(coded, payer, claim_type)
        enc = coded.encounter
    expected, basis = None, "no_contract"
    if payer is not None and payer.contract is not None and master.chargemaster is not None:
        drg = coded.drg.code if coded.drg is not None else None
        expected, basis = contract_expected(
            master.chargemaster, payer.contract, coded.lines, setting=enc.setting, drg=drg
        )
    elif payer.medicare if payer is not None else enc.coverage.plan_type in MEDICARE_FILING:
        if claim_type == "professional":
            expected, basis = expected_reimbursement(coded, fee_schedule)
        elif enc.setting == "inpatient":
            discharge = enc.discharge_date or enc.service_end
            area = master.wage_index_of(enc.billing_provider.npi, discharge)
            expected, basis = drg_reimbursement(coded, drg_base_rate, area)
        else:
            expected, basis = None, "outpatient_facility_rates_not_loaded"
    return PlannedClaim(
        event_id=claim_event_id(claim_id, frequency, answers),
        claim=ClaimInput(
            claim_id,
            coded,
            frequency,
            original_reference,
            # Coordination of benefits: the payers after this one, so that it can forward the
            # claim (a crossover) and knows it is not the last.
            later_payers=tuple(later_payers(master, enc, claim_type)),
        ),
        claim_type=claim_type,
        encounter_id=validated.encounter_id,
        payer_id=enc.coverage.payer_id,
        payer_name=enc.coverage.payer_name,
        total_charge=sum((line.charge for line in coded.lines), Decimal("0")),
        expected=expected,
        expected_basis=basis,
        line_count=len(coded.lines),
        service_start=enc.service_start,
        service_end=enc.service_end,
        rule_pack_version=validated.rule_pack_version,
        submitted_at=validated.validated_at,
    )


def _as_registered(
    coded: CodedEncounter, payer: PayerEntry, claim_type: ClaimType
) -> CodedEncounter:
    """The encounter with the payer as the registry bills it for this claim type: its
    electronic id (Medicare Part A's on institutional claims) and claim filing indicator."""
    coverage = registered_coverage(coded.encounter.coverage, payer, claim_type)
    encounter = coded.encounter.model_copy(update={"coverage": coverage})
    return coded.model_copy(update={"encounter": encounter})


def registered_coverage(
    coverage: Coverage, payer: PayerEntry, claim_type: ClaimType, field: str = "encounter.coverage"
) -> Coverage:
    """A coverage as the registry bills it for this claim type: the payer's electronic id
    (Medicare Part A's on institutional claims) and claim filing indicator."""
    filing = payer.filing_indicator(claim_type)
    if filing is None:
        raise InputError(
            f"{field}.payer_id",
            f"payer {payer.payer_id} takes no {claim_type} claims (payer registry)",
        )
    return coverage.model_copy(
        update={"payer_id": payer.billed_id(claim_type), "plan_type": filing}
    )


def later_payers(
    master: MasterData | None, enc: Encounter, claim_type: ClaimType
) -> list[Coverage]:
    """The encounter's coverages after the primary, as the registry bills them (one that
    takes no claims of this type is left out: it will not be billed)."""
    out: list[Coverage] = []
    for coverage in enc.other_coverages[:2]:
        try:
            out += billed_coverages(master, [coverage], claim_type)
        except InputError:
            continue
    return out


def billed_coverages(
    master: MasterData | None, coverages: Sequence[Coverage], claim_type: ClaimType
) -> list[Coverage]:
    """An encounter's coverages in order, each as the registry bills it (as sent when the
    registry does not know the payer)."""
    out: list[Coverage] = []
    for n, coverage in enumerate(coverages):
        payer = None
        if master is not None:
            payer = master.payers.find(coverage.payer_id, coverage.payer_name)
        field = "encounter.coverage" if n == 0 else f"encounter.other_coverages[{n - 1}]"
        if payer is not None:
            coverage = registered_coverage(coverage, payer, claim_type, field)
        out.append(coverage)
    return out


def write_interchange(
    planned: Sequence[PlannedClaim],
    *,
    sender_id: str,
    receiver_id: str,
    control_number: int,
    created: datetime | None = None,
    submitter: Submitter = DEFAULT_SUBMITTER,
    usage: Usage = "P",
    receiver_name: str | None = None,
    pay_to: Mapping[str, Address] | None = None,
) -> str:
    """One 837 interchange for claims of one type (837P or 837I), under ``control_number``.

    ``created`` defaults to the latest validation time of the claims (never the clock).
    An error in one claim of several raises ``ClaimError`` naming it.
    """
    if not planned:
        raise InputError("claims", "an interchange needs at least one claim")
    types = {p.claim_type for p in planned}
    if len(types) > 1:
        raise InputError("claims", "an interchange carries claims of one type: 837P or 837I")
    profile = PROFILES[planned[0].claim_type]
    return build_837(
        [p.claim for p in planned],
        profile,
        sender_id=sender_id,
        receiver_id=receiver_id,
        control_number=control_number,
        created=created or max(p.submitted_at for p in planned),
        submitter=submitter,
        usage=usage,
        receiver_name=receiver_name,
        pay_to=pay_to,
    )


def envelope_for(
    master: MasterData | None, payer_id: str, sender_id: str, receiver_id: str
) -> tuple[str, str, str | None]:
    """(sender id, receiver id, receiver name) of an interchange to this payer: the payer
    registry's submitter and receiver ids when it has them, else the configured ones."""
    payer = master.payers.find(payer_id) if master is not None else None
    if payer is None:
        return sender_id, receiver_id, None
    return (
        payer.submitter_id or sender_id,
        payer.receiver_id or receiver_id,
        payer.receiver_name,
    )


_CENT = Decimal("0.01")

# A claim event and an interchange record are made from values of the types their fields
# hold (the plan's, the stored interchange's), the money in cents as ``Money`` gives it:
# validating them again cost 4.4 us a claim event and 2.0 us an interchange record, 1.5 and
# 0.9 us made this way (timeit). An identifier out of the bounds the models set is made by
# the validated build, which refuses it as before. tests/unit/test_claims_event_build.py
# compares the two on every claim of the simulator's encounters: equal, the same JSON, the
# same Avro bytes.
_submitted = model_maker(SubmittedClaim)
_interchange = model_maker(Interchange)


def _cents(value: Decimal) -> Decimal:
    """What ``Money`` makes of an amount."""
    return value.quantize(_CENT, rounding=ROUND_HALF_UP)


def submitted_claim(planned: PlannedClaim, control_number: int, x12: str | None) -> SubmittedClaim:
    """One claim and the interchange that carried it. The stage publishes it with ``x12``
    None: the interchange goes once on claims.interchanges.v1 (``interchange_record``) and
    each claim names it by control number; offline commands keep the text in the claim."""
    claim = planned.claim
    make = _submitted if 1 <= len(claim.claim_id) <= 20 else SubmittedClaim
    expected = planned.expected
    return make(  # type: ignore[no-any-return]
        event_id=planned.event_id,
        claim_id=claim.claim_id,
        encounter_id=planned.encounter_id,
        frequency=claim.frequency,
        original_reference=claim.original_reference,
        rule_pack_version=planned.rule_pack_version,
        claim_type=planned.claim_type,
        payer_id=planned.payer_id,
        payer_name=planned.payer_name,
        total_charge=_cents(planned.total_charge),
        expected_reimbursement=None if expected is None else _cents(expected),
        expected_basis=planned.expected_basis,
        line_count=planned.line_count,
        service_start=planned.service_start,
        service_end=planned.service_end,
        interchange_control_number=f"{control_number:09d}",
        x12=x12,
        submitted_at=planned.submitted_at,
    )


def interchange_record(
    control_number: int,
    *,
    payer_id: str,
    claim_type: str,
    adapter: str,
    claim_ids: Sequence[str],
    x12: str,
    created_at: datetime,
) -> Interchange:
    """The claims.interchanges.v1 record: the interchange stored once, under its number."""
    icn = f"{control_number:09d}"
    return _interchange(  # type: ignore[no-any-return]
        event_id=event_id("claims", "interchange", icn),
        interchange_control_number=icn,
        payer_id=payer_id,
        claim_type=claim_type,
        adapter=adapter,
        claim_ids=list(claim_ids),
        x12=x12,
        created_at=created_at,
    )


def in_validated_record(exc: InputError) -> InputError:
    """The serializer names fields within the coded encounter; point into the validated record."""
    if exc.field.split(".")[0].split("[")[0] in _CODED_FIELDS:
        return InputError(f"coded.{exc.field}", exc.reason)
    return exc


_PART_LINE = re.compile(r"^coded\.lines\[(\d+)\]")


def encounter_field(validated: ValidatedEncounter, claim_type: ClaimType, field: str) -> str:
    """A field of one claim part (``coded.lines[i]…``, lines renumbered within the part) as
    the field of the encounter it came from, so that a refused claim names the line to fix."""
    if len(ub04.claim_kinds(validated.coded)) < 2:
        return field
    setting = validated.coded.encounter.setting
    index = [
        j
        for j, line in enumerate(validated.coded.lines)
        if ub04.line_claim_type(line, setting) == claim_type
    ]
    found = _PART_LINE.match(field)
    if found is None or int(found.group(1)) >= len(index):
        return field
    return f"coded.lines[{index[int(found.group(1))]}]{field[found.end() :]}"


def build_claims(validated: ValidatedEncounter, **options: Any) -> list[SubmittedClaim]:
    """Every claim of one encounter (``claim_parts``), each an original in its own
    interchange: the facility's 837I and, beside it, the physician's 837P (the options are
    ``build_claim``'s)."""
    return [
        build_claim(part, claim_id=claim_id_for(key), **options)
        for key, part in claim_parts(validated)
    ]


def build_claim(
    validated: ValidatedEncounter,
    *,
    sender_id: str,
    receiver_id: str,
    fee_schedule: FeeSchedule | None = None,
    drg_base_rate: Decimal = DEFAULT_DRG_BASE_RATE,
    submitter: Submitter = DEFAULT_SUBMITTER,
    usage: Usage = "P",
    master: MasterData | None = None,
    claim_id: str | None = None,
) -> SubmittedClaim:
    """The original claim of one encounter in its own interchange (offline use and tests);
    ``build_claims`` for an encounter that bills more than one claim."""
    planned = plan_claim(
        validated,
        fee_schedule=fee_schedule,
        drg_base_rate=drg_base_rate,
        master=master,
        claim_id=claim_id,
    )
    icn = interchange_control_number(planned.claim_id)
    sender_id, receiver_id, receiver_name = envelope_for(
        master, planned.payer_id, sender_id, receiver_id
    )
    try:
        x12 = write_interchange(
            [planned],
            sender_id=sender_id,
            receiver_id=receiver_id,
            control_number=icn,
            submitter=submitter,
            usage=usage,
            receiver_name=receiver_name,
            pay_to=master.providers.pay_to if master is not None else None,
        )
    except InputError as exc:
        raise in_validated_record(exc) from exc
    return submitted_claim(planned, icn, x12)
