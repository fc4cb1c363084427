"""Turn a validated encounter into a submitted professional claim with its 837P.

Everything here is a pure function of the input: the claim id, the interchange control
number and the timestamps come from the record, so a replay writes byte-identical X12 and
the same event id, and downstream consumers can drop the duplicate.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Literal, Protocol

from pipeline.errors import InputError
from pipeline.models import Address, CodedEncounter, SubmittedClaim, ValidatedEncounter, event_id
from services.claims.x12_837 import DEFAULT_SUBMITTER, ClaimInput, Submitter, build_837p

STAGE = "claims"
VERSION = "v1"
_CODED_FIELDS = frozenset(CodedEncounter.model_fields)
# Places of service the Medicare physician fee schedule pays at the facility rate.
FACILITY_POS = frozenset(
    {"02", "19", "21", "22", "23", "24", "26", "31", "34", "41", "42", "51", "52", "53", "56", "61"}
)


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


def claim_id_for(encounter_id: str) -> str:
    """The patient control number: 'CF' + 16 hex digits of the encounter id's SHA-256."""
    return "CF" + hashlib.sha256(encounter_id.encode()).hexdigest()[:16].upper()


def interchange_control_number(claim_id: str) -> int:
    """A 9-digit ISA13 (1..999999999) derived from the claim id, stable across re-runs."""
    digest = hashlib.sha256(f"isa13\x1f{claim_id}".encode()).hexdigest()
    return int(digest, 16) % 999_999_999 + 1


def _pricing_location(coded: CodedEncounter) -> Address | None:
    """Where the service was done: the facility if it has an address, else the billing office."""
    enc = coded.encounter
    if enc.facility is not None and enc.facility.address is not None:
        return enc.facility.address
    return enc.billing_provider.address


def expected_reimbursement(
    coded: CodedEncounter, fee_schedule: FeeSchedule | None
) -> tuple[Decimal | None, str]:
    """Sum of allowed amounts and its basis; no total unless every line is priced."""
    if fee_schedule is None:
        return None, "none"
    where = _pricing_location(coded)
    state = where.state if where else None
    postal = where.postal_code if where else None
    total = Decimal("0")
    for line in coded.lines:
        pos = line.place_of_service or coded.encounter.place_of_service
        allowed = fee_schedule.allowed(
            line.code, list(line.modifiers), line.units, state, postal, facility=pos in FACILITY_POS
        )
        if allowed is None:
            # A partial sum would show up downstream as a false underpayment variance.
            return None, "fee_schedule_incomplete"
        total += allowed
    return total, "fee_schedule"


def build_claim(
    validated: ValidatedEncounter,
    *,
    sender_id: str,
    receiver_id: str,
    fee_schedule: FeeSchedule | None = None,
    submitter: Submitter = DEFAULT_SUBMITTER,
    usage: Literal["P", "T"] = "P",
) -> SubmittedClaim:
    """Build the original (frequency 1) professional claim for a clean or warned encounter."""
    if validated.outcome == "rejected":
        raise InputError("outcome", "a rejected encounter cannot be billed; fix it and re-validate")
    coded = validated.coded
    enc = coded.encounter
    if enc.setting != "professional":
        raise InputError(
            "coded.encounter.setting",
            f"{enc.setting} encounters bill on an 837I, which this stage does not build yet",
        )
    claim_id = claim_id_for(validated.encounter_id)
    icn = interchange_control_number(claim_id)
    try:
        x12 = build_837p(
            [ClaimInput(claim_id=claim_id, coded=coded)],
            sender_id=sender_id,
            receiver_id=receiver_id,
            control_number=icn,
            created=validated.validated_at,
            submitter=submitter,
            usage=usage,
        )
    except InputError as exc:
        # The serializer names fields within the coded encounter; point into this record.
        if exc.field.split(".")[0].split("[")[0] in _CODED_FIELDS:
            raise InputError(f"coded.{exc.field}", exc.reason) from exc
        raise
    expected, basis = expected_reimbursement(coded, fee_schedule)
    return SubmittedClaim(
        event_id=event_id(claim_id, STAGE, VERSION),
        claim_id=claim_id,
        encounter_id=validated.encounter_id,
        frequency="1",
        claim_type="professional",
        payer_id=enc.coverage.payer_id,
        payer_name=enc.coverage.payer_name,
        total_charge=sum((line.charge for line in coded.lines), Decimal("0")),
        expected_reimbursement=expected,
        expected_basis=basis,
        line_count=len(coded.lines),
        service_start=enc.service_start,
        service_end=enc.service_end,
        interchange_control_number=f"{icn:09d}",
        x12=x12,
        submitted_at=validated.validated_at,
    )
