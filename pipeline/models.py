"""Pydantic mirrors of the Avro contracts in ``schemas/``.

They validate at the edges (intake input, CLI output) and give the domain typed objects.
``tests/contract/test_models_match_schemas.py`` keeps every field here in step with the
latest schema version of its topic.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from datetime import UTC, date, datetime, time
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from pipeline import model_reads

model_reads.install()  # field reads without pydantic's __getattr__ (pipeline/model_reads.py)


def _cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


Money = Annotated[Decimal, AfterValidator(_cents)]


def utcnow() -> datetime:
    """Now, in UTC, truncated to the millisecond that Avro timestamp-millis keeps."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def event_id(*parts: str) -> str:
    """A deterministic event id: the same source, stage and version give the same id."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- encounters.collected.v1 (schema v2) -------------------------------------------------


class Address(Model):
    line1: str = Field(min_length=1)
    line2: str | None = None
    city: str = Field(min_length=1)
    state: str = Field(pattern=r"^[A-Z]{2}$")
    postal_code: str = Field(pattern=r"^\d{5}(\d{4})?$")
    country: str = "US"


class Patient(Model):
    patient_id: str = Field(min_length=1)
    last_name: str = Field(min_length=1)
    first_name: str = Field(min_length=1)
    birth_date: date
    sex: Literal["F", "M", "U"] = "U"
    address: Address


class Subscriber(Model):
    """The policy holder when the patient is a dependent."""

    last_name: str = Field(min_length=1)
    first_name: str = Field(min_length=1)
    birth_date: date | None = None
    sex: Literal["F", "M", "U"] = "U"
    address: Address | None = None


class Coverage(Model):
    payer_id: str = Field(min_length=1)
    payer_name: str = Field(min_length=1)
    plan_type: str = Field(min_length=2, max_length=2)
    member_id: str = Field(min_length=1)
    group_number: str | None = None
    relationship: str = "18"
    subscriber: Subscriber | None = None


class Provider(Model):
    npi: str = Field(pattern=r"^\d{10}$")
    name: str = Field(min_length=1)
    entity: Literal["person", "organization"] = "organization"
    tax_id: str | None = Field(default=None, pattern=r"^\d{9}$")
    taxonomy: str | None = None
    address: Address | None = None


class Facility(Model):
    name: str = Field(min_length=1)
    npi: str | None = Field(default=None, pattern=r"^\d{10}$")
    address: Address | None = None


class DocumentedDiagnosis(Model):
    code: str
    system: Literal["icd10cm", "snomed", "text"]
    display: str | None = None
    onset: date | None = None
    poa: str | None = None
    primary: bool = False
    role: Literal["admitting", "reason_for_visit", "external_cause"] | None = None


ClaimType = Literal["professional", "institutional"]


class DocumentedService(Model):
    """A documented service: a coded procedure, or a facility charge by revenue code alone."""

    code: str | None = Field(default=None, min_length=1)
    system: Literal["cpt", "hcpcs", "icd10pcs", "snomed"] | None = None
    display: str | None = None
    modifiers: list[str] = Field(default_factory=list)
    units: float = Field(default=1.0, gt=0)
    charge: Money = Field(ge=0)
    service_date: date | None = None
    dx_refs: list[str] = Field(default_factory=list)
    revenue_code: str | None = None
    claim_type: ClaimType | None = None
    non_covered_charge: Money | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _code_or_revenue_code(self) -> DocumentedService:
        if self.code is None and not self.revenue_code:
            raise ValueError("a service needs a procedure code or a revenue code")
        if (self.code is None) != (self.system is None):
            raise ValueError("a procedure code and its system go together")
        return self


class Occurrence(Model):
    """UB-04 occurrence code and date (FL31-34; HI*BH)."""

    code: str = Field(min_length=1)
    date: dt.date


class OccurrenceSpan(Model):
    """UB-04 occurrence span code and period (FL35-36; HI*BI)."""

    code: str = Field(min_length=1)
    start: date
    end: date


class ValueCode(Model):
    """UB-04 value code and amount (FL39-41; HI*BE)."""

    code: str = Field(min_length=1)
    amount: Money


NoteKind = Literal[
    "item_not_carried", "coverage_not_carried", "code_not_carried", "data_not_carried"
]


class EncounterNote(Model):
    """Something the source sent that claimflow does not carry, or carries changed."""

    kind: NoteKind
    field: str | None = None
    message: str
    charge: Money | None = None


Setting = Literal["professional", "outpatient", "inpatient"]


class Encounter(Model):
    event_id: str
    encounter_id: str = Field(min_length=1)
    source_id: str = Field(min_length=1)
    source_format: Literal["fhir", "hl7v2", "json"]
    received_at: datetime
    setting: Setting = "professional"
    service_start: date
    service_end: date
    place_of_service: str = Field(pattern=r"^\d{2}$")
    type_of_bill: str | None = Field(default=None, pattern=r"^0?\d{3}$")
    prior_claim_reference: str | None = None
    admission_date: date | None = None
    admission_time: time | None = None
    admission_type: str | None = None
    admission_source: str | None = None
    discharge_status: str | None = None
    discharge_date: date | None = None
    discharge_time: time | None = None
    patient: Patient
    coverage: Coverage
    other_coverages: list[Coverage] = Field(
        default_factory=list
    )  # secondary, tertiary … in order after the primary
    billing_provider: Provider
    rendering_provider: Provider | None = None
    attending_provider: Provider | None = None
    operating_provider: Provider | None = None
    professional_billing_provider: Provider | None = None
    facility: Facility | None = None
    occurrence_codes: list[Occurrence] = Field(default_factory=list)
    occurrence_spans: list[OccurrenceSpan] = Field(default_factory=list)
    value_codes: list[ValueCode] = Field(default_factory=list)
    condition_codes: list[str] = Field(default_factory=list)
    diagnoses: list[DocumentedDiagnosis]
    services: list[DocumentedService]
    note_text: str | None = None
    notes: list[EncounterNote] = Field(default_factory=list)


# --- encounters.coded.v1, coding.review.v1 (schema v2) -----------------------------------


def patient_key(enc: Encounter) -> str:
    """The key that brings every claim of one member together: payer and member id,
    hashed (a record's key is not PHI-marked). Coding's HCC history, validation's
    duplicate history and the header coding sets for validation's re-key all use it."""
    raw = f"{enc.coverage.payer_id}\x1f{enc.coverage.member_id}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


class CodedDiagnosis(Model):
    code: str
    sequence: int
    description: str | None = None
    poa: str | None = None
    source: Literal["ehr", "mapped", "completed", "inferred", "coder"]
    confidence: float
    billable: bool
    role: Literal["admitting", "reason_for_visit", "external_cause"] | None = None
    rationale: str | None = None


class CodedProcedure(Model):
    code: str
    date: dt.date | None = None
    source: str
    confidence: float


class ServiceLine(Model):
    """A claim line: CPT/HCPCS, or on an institutional claim a revenue code with or without."""

    line_number: int
    code: str | None = None
    code_system: Literal["CPT", "HCPCS"] | None = None
    modifiers: list[str] = Field(default_factory=list)
    units: float
    charge: Money
    dx_pointers: list[int]
    service_date: date
    place_of_service: str | None = None
    revenue_code: str | None = None
    claim_type: ClaimType | None = None
    non_covered_charge: Money | None = None


class Drg(Model):
    code: str
    description: str | None = None
    mdc: str | None = None
    weight: float | None = None
    grouper_version: str | None = None


class CodedEncounter(Model):
    event_id: str
    encounter_id: str
    encounter: Encounter
    diagnoses: list[CodedDiagnosis]
    pcs_procedures: list[CodedProcedure] = Field(default_factory=list)
    lines: list[ServiceLine]
    em_level: str | None = None
    drg: Drg | None = None
    type_of_bill: str | None = None
    hcc: list[str] = Field(default_factory=list)
    hcc_risk_score: float | None = None
    hcc_model: str | None = None
    code_set_version: str
    confidence: float
    review_reasons: list[str] = Field(default_factory=list)
    coded_at: datetime


class CodingReview(Model):
    event_id: str
    encounter_id: str
    reasons: list[str]
    coded: CodedEncounter
    queued_at: datetime


# --- coding.decisions.v1 -----------------------------------------------------------------


class DecidedDiagnosis(Model):
    code: str = Field(min_length=1)
    poa: str | None = None


class CoderDecision(Model):
    """A certified coder's answer to a coding review: confirm as coded, or amend the codes."""

    event_id: str
    encounter_id: str = Field(min_length=1)
    coder_id: str = Field(min_length=1)
    action: Literal["confirm", "amend"]
    diagnoses: list[DecidedDiagnosis] = Field(default_factory=list)
    pcs_procedures: list[str] = Field(default_factory=list)
    note: str | None = None
    decided_at: datetime


# --- encounters.validated.v1 (schema v2) -------------------------------------------------


class EditHit(Model):
    rule_id: str
    severity: Literal["error", "warning", "info"]
    line: int | None = None
    field: str | None = None
    message: str
    category: str = "general"
    fix_hint: str | None = None


class ValidatedEncounter(Model):
    event_id: str
    encounter_id: str
    outcome: Literal["clean", "warnings", "rejected"]
    edits: list[EditHit]
    rule_pack_version: str
    coded: CodedEncounter
    validated_at: datetime


# --- claims.submitted.v1 -----------------------------------------------------------------


class SubmittedClaim(Model):
    event_id: str
    claim_id: str = Field(min_length=1, max_length=20)
    encounter_id: str
    frequency: Literal["1", "7", "8"] = "1"
    original_reference: str | None = None
    rule_pack_version: str | None = None
    claim_type: ClaimType = "professional"
    payer_id: str
    payer_name: str
    total_charge: Money
    expected_reimbursement: Money | None = None
    expected_basis: str = "none"
    line_count: int
    service_start: date
    service_end: date
    interchange_control_number: str
    # Null on the topic since schema v3: the interchange is on claims.interchanges.v1 under
    # interchange_control_number. The offline chain (``claims build``) still fills it.
    x12: str | None = None
    submitted_at: datetime


# --- claims.interchanges.v1 --------------------------------------------------------------


class Interchange(Model):
    """An 837 interchange as delivered, stored once; its claims' events refer to it."""

    event_id: str
    interchange_control_number: str = Field(min_length=1)
    payer_id: str
    claim_type: ClaimType = "professional"
    adapter: str
    claim_ids: list[str]
    x12: str
    created_at: datetime


# --- payer.inbound.v1 --------------------------------------------------------------------


class PayerFile(Model):
    event_id: str
    payer_id: str
    file_id: str
    kind: Literal["999", "277CA", "835"]
    body: bytes
    received_at: datetime


# --- remittance.posted.v1 ----------------------------------------------------------------


class Adjustment(Model):
    group: str
    reason: str
    amount: Money
    line: int | None = None


class LineAdjustment(Model):
    """One CAS triplet as the payer sent it, with its quantity."""

    group: str
    reason: str
    amount: Money
    quantity: float | None = None


class PostedLine(Model):
    """A service line as the payer adjudicated it (what a secondary claim's 2430 reports)."""

    line: int
    qualifier: str
    procedure: str
    modifiers: list[str] = Field(default_factory=list)
    revenue_code: str | None = None
    charge: Money
    paid: Money
    units: float | None = None
    original_procedure: str | None = None
    line_control_number: str | None = None
    service_date: date | None = None
    adjustments: list[LineAdjustment] = Field(default_factory=list)


class RemittancePosting(Model):
    event_id: str
    claim_id: str
    encounter_id: str | None = None
    payer_id: str
    payer_claim_control_number: str | None = None
    claim_status_code: str
    status: Literal["paid", "partially_paid", "denied", "reversed", "unmatched"]
    total_charge: Money
    paid: Money
    patient_responsibility: Money
    expected: Money | None = None
    variance: Money | None = None
    adjustments: list[Adjustment]
    remark_codes: list[str] = Field(default_factory=list)
    payment_trace: str | None = None
    payment_date: date | None = None
    file_id: str
    posted_at: datetime
    payer_sequence: int | None = None
    crossover_payer: str | None = None
    warnings: list[str] = Field(default_factory=list)
    lines: list[PostedLine] = Field(default_factory=list)
    claim_adjustments: list[LineAdjustment] = Field(default_factory=list)


# --- intake.raw.v1 and dead letters ------------------------------------------------------


class RawMessage(Model):
    source_id: str
    content_type: str
    source_system: str | None = None
    body: bytes
    received_at: datetime


class DeadLetter(Model):
    event_id: str
    stage: str
    source_topic: str
    source_partition: int
    source_offset: int
    key: str | None = None
    value: bytes | None = None
    headers: dict[str, bytes] = Field(default_factory=dict)
    error_class: str
    error_message: str
    field: str | None = None
    failed_at: datetime


MODELS: dict[str, type[Model]] = {
    cls.__name__: cls
    for cls in (
        RawMessage,
        Encounter,
        CodedEncounter,
        CodingReview,
        CoderDecision,
        ValidatedEncounter,
        SubmittedClaim,
        Interchange,
        PayerFile,
        RemittancePosting,
        DeadLetter,
    )
}


# --- remittance.exceptions.v1 ------------------------------------------------------------


class ExceptionClaim(Model):
    """One claim payment (CLP) held in an exception, as the payer reported it."""

    claim_id: str
    payer_claim_control_number: str | None = None
    claim_status_code: str
    total_charge: Money
    paid: Money
    patient_responsibility: Money


class RemittanceException(Model):
    """Remittance that could not be posted: a person has to look at it."""

    event_id: str
    kind: Literal[
        "unmatched_payment",
        "unbalanced_file",
        "unreadable_file",
        "other",
        "unbalanced_payment",
        "unbalanced_claim",
        "unreadable_claim",
    ]
    payer_id: str
    file_id: str
    payment_trace: str | None = None
    transaction_control_number: str | None = None
    payment_amount: Money | None = None
    claims: list[ExceptionClaim] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)
    source_partition: int | None = None
    source_offset: int | None = None
    body: bytes | None = None
    received_at: datetime
    detected_at: datetime
    warnings: list[str] = Field(default_factory=list)


# --- remittance.denials.v1 ---------------------------------------------------------------

DenialCategory = Literal[
    "eligibility",
    "coding",
    "bundling",
    "authorization",
    "duplicate",
    "timely_filing",
    "medical_necessity",
    "coordination_of_benefits",
    "missing_information",
    "non_covered",
    "provider",
    "underpayment",
    "other",
]
DenialAction = Literal[
    "correct_and_replace",
    "correct_and_resubmit",
    "verify_eligibility",
    "obtain_authorization",
    "appeal",
    "send_documentation",
    "bill_other_payer",
    "bill_patient",
    "check_duplicate",
    "write_off",
    "review_payment",
    "review",
]


class DenialReason(Model):
    """One refusing CAS adjustment: group, CARC, amount, line, and what it means."""

    group: str
    carc: str
    amount: Money
    line: int | None = None
    category: DenialCategory
    description: str | None = None


class RemarkCode(Model):
    code: str
    description: str | None = None


class DeniedLine(Model):
    """A service line with refused money, or one the payer adjudicated under another code."""

    line: int
    procedure: str
    original_procedure: str | None = None
    modifiers: list[str] = Field(default_factory=list)
    charge: Money
    paid: Money
    carcs: list[str] = Field(default_factory=list)


class Denial(Model):
    """A denied, partially denied or underpaid claim in the denial work queue."""

    event_id: str
    claim_id: str
    encounter_id: str | None = None
    payer_id: str
    payer_claim_control_number: str | None = None
    claim_status_code: str
    kind: Literal["denied", "partially_denied", "underpaid"]
    category: DenialCategory
    action: DenialAction
    next_action: str
    resubmit_frequency: str | None = None
    reasons: list[DenialReason]
    remarks: list[RemarkCode] = Field(default_factory=list)
    lines: list[DeniedLine] = Field(default_factory=list)
    total_charge: Money
    paid: Money
    patient_responsibility: Money
    at_stake: Money
    expected: Money | None = None
    variance: Money | None = None
    payment_trace: str | None = None
    file_id: str
    posting_event_id: str
    queued_at: datetime


MODELS.update({cls.__name__: cls for cls in (RemittanceException, Denial)})


# --- claims.rejections.v1 ----------------------------------------------------------------


class ClaimRejection(Model):
    """A claim the payer's front end refused (999 or 277CA): no 835 will come for it."""

    event_id: str
    claim_id: str = Field(min_length=1)
    encounter_id: str | None = None
    payer_id: str
    source: Literal["999", "277CA"]
    file_id: str
    interchange_control_number: str | None = None
    codes: list[str]
    reason: str
    rejected_at: datetime


MODELS.update({ClaimRejection.__name__: ClaimRejection})


# --- remittance.settled.v1 ---------------------------------------------------------------


class ClaimSettled(Model):
    """Remittance's word that a claim is adjudicated (paid, partially paid, denied), written
    off in the console, or open again (a reversal): what the stages' retention counts its
    window from. Ids, status and times only: no patient data."""

    event_id: str
    claim_id: str = Field(min_length=1)
    encounter_id: str | None = None
    payer_id: str
    status: Literal["paid", "partially_paid", "denied", "written_off", "reopened"]
    posting_event_id: str
    settled_at: datetime


MODELS.update({ClaimSettled.__name__: ClaimSettled})


# --- console.writeoffs.v1 ----------------------------------------------------------------


class ClaimWrittenOff(Model):
    """A claim written off in the console: remittance counts it settled (``written_off``).
    Ids, amount and time only: no patient data."""

    event_id: str
    claim_id: str = Field(min_length=1)
    encounter_id: str | None = None
    payer_id: str
    amount: Money | None = None
    action_event_id: str
    user_id: str = Field(min_length=1)
    written_off_at: datetime


MODELS.update({ClaimWrittenOff.__name__: ClaimWrittenOff})


# --- workqueue.actions.v1 ----------------------------------------------------------------


class WorkAction(Model):
    """What a person did in the console to close or move a work-queue item."""

    event_id: str
    queue: Literal["review", "corrections", "denials", "exceptions", "other"]
    item_id: str = Field(min_length=1)
    encounter_id: str | None = None
    claim_id: str | None = None
    action: Literal["appeal", "write_off", "resubmit", "resolve", "other"]
    user_id: str = Field(min_length=1)
    role: str = Field(min_length=1)
    amount: Money | None = None
    note: str | None = None
    acted_at: datetime


MODELS.update({WorkAction.__name__: WorkAction})


# --- coding.audits.v1 / coding.audit-results.v1 --------------------------------------------


class AuditedCode(Model):
    code: str
    category: str
    source: str
    rationale: str | None = None
    outcome: Literal["agree", "corrected"] | None = None


class CodingAudit(Model):
    """An encounter in the coding audit queue, or audited (each code's outcome)."""

    event_id: str
    encounter_id: str
    coded_event_id: str
    status: Literal["queued", "audited"]
    reason: Literal["sample", "review"]
    billed: bool
    setting: str
    codes: list[AuditedCode]
    corrected_codes: list[str] = Field(default_factory=list)
    auditor_id: str | None = None
    queued_at: datetime
    audited_at: datetime | None = None


class AuditDiagnosis(Model):
    code: str = Field(min_length=1)
    poa: str | None = None


class AuditResult(Model):
    """A coder's audit of an automatically coded encounter: agree, or corrected codes."""

    event_id: str
    encounter_id: str = Field(min_length=1)
    auditor_id: str = Field(min_length=1)
    outcome: Literal["agree", "corrected"]
    diagnoses: list[AuditDiagnosis] = Field(default_factory=list)
    note: str | None = None
    audited_at: datetime


MODELS.update({cls.__name__: cls for cls in (CodingAudit, AuditResult)})


# --- remittance.claim-payments.v1 / remittance.payer-payments.v1 (internal) --------------


class PlbAdjustment(Model):
    """One PLB reason/amount pair of a payment; ``claim_id`` once it is known to name one."""

    seq: int
    provider_id: str
    fiscal_period_end: date | None = None
    reason: str
    reference: str | None = None
    amount: Money
    claim_id: str | None = None


class ClaimPaymentRecord(Model):
    """One CLP of a balanced 835 payment (kind payment), or a PLB adjustment applied to a
    claim (kind plb), keyed by claim id like the claims it is matched with."""

    event_id: str
    kind: Literal["payment", "plb"] = "payment"
    claim_id: str
    payer_id: str
    file_id: str
    received_at: datetime
    source_partition: int | None = None
    source_offset: int | None = None
    transaction_control_number: str | None = None
    payment_trace: str
    payment_date: date | None = None
    payment_amount: Money | None = None
    sequence: int = 0
    occurrence: int = 0
    warnings: list[str] = Field(default_factory=list)
    payment: str | None = None
    adjustment: PlbAdjustment | None = None


class PaidClaimReference(Model):
    claim_id: str
    payer_claim_control_number: str | None = None


class PayerPaymentRecord(Model):
    """One balanced 835 payment with its PLB adjustments, keyed by its payer."""

    event_id: str
    payer_id: str
    file_payer_id: str
    file_id: str
    payment_trace: str
    transaction_control_number: str
    payment_amount: Money
    claims_paid: Money
    claim_count: int
    claims: list[PaidClaimReference] = Field(default_factory=list)
    provider_adjustments: list[PlbAdjustment] = Field(default_factory=list)
    received_at: datetime


MODELS.update({cls.__name__: cls for cls in (ClaimPaymentRecord, PayerPaymentRecord)})
