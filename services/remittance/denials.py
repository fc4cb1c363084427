"""Denials: classify CARC/RARC codes, and build the work-queue item for a denied claim.

The official code lists (X12 Claim Adjustment Reason Codes, Remittance Advice Remark Codes)
are not shipped: their text is X12's. ``CURATED_CARC`` and ``CURATED_RARC`` hold the codes
seen most often on professional and institutional remittances, each with a category, the
next action and a short paraphrase of its meaning. When the official lists are downloaded
as CSV into the reference-data folder (``carc*.csv`` and ``rarc*.csv``, any case, with a
code column and a description column, found by header), their descriptions replace the
paraphrases and codes outside the curated table get a description; the category of a code
that is not curated stays ``other`` with the action ``review``.

A CAS adjustment is either a *payment adjustment* (deductible, coinsurance, copay, the
contractual write-off to the fee schedule, sequestration, the prior payer's share: money
the contract or the plan expects not to be paid) or a *denial reason* (money refused). A
posting becomes a work-queue item when it is denied, when any line or amount was refused
(partially denied), or when the payment falls short of the expected reimbursement by more
than a tolerance (underpaid). The claim's category is that of the reason refusing the most
money; a generic CARC (16, 96, A1, 125…) takes the category of a more specific RARC.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Literal, get_args

from pipeline.models import (
    Denial,
    DenialAction,
    DenialCategory,
    DenialReason,
    DeniedLine,
    RemarkCode,
    RemittancePosting,
    event_id,
)
from pipeline.serde import model_maker
from services.remittance.era import ZERO, CasAdjustment, ClaimPayment
from services.remittance.posting import cents

log = logging.getLogger(__name__)

STAGE = "remittance.denials"
VERSION = "v1"
Kind = Literal["payment", "denial"]


@dataclass(frozen=True)
class CodeInfo:
    """What a CARC or RARC means for the work queue."""

    kind: Kind
    category: DenialCategory
    description: str
    action: DenialAction | None = None  # None: the category's default action


def _pay(description: str) -> CodeInfo:
    return CodeInfo("payment", "other", description)


def _deny(
    category: DenialCategory, description: str, action: DenialAction | None = None
) -> CodeInfo:
    return CodeInfo("denial", category, description, action)


# Paraphrased meanings; load the official lists for X12's wording (module docstring).
CURATED_CARC: dict[str, CodeInfo] = {
    "1": _pay("deductible"),
    "2": _pay("coinsurance"),
    "3": _pay("copayment"),
    "23": _pay("impact of the prior payer's adjudication"),
    "24": _pay("covered under a capitation agreement"),
    "42": _pay("above the usual and customary charge"),
    "44": _pay("prompt-pay discount"),
    "45": _pay("charge above the fee schedule or contracted amount"),
    "59": _pay("reduced under multiple or concurrent procedure rules"),
    "66": _pay("blood deductible"),
    "94": _pay("processed in excess of charges"),
    "104": _pay("managed care withholding"),
    "131": _pay("claim-specific negotiated discount"),
    "144": _pay("incentive adjustment"),
    "237": _pay("legislated or regulatory penalty"),
    "253": _pay("sequestration (federal budget reduction)"),
    "4": _deny("coding", "procedure code inconsistent with the modifier, or modifier missing"),
    "5": _deny("coding", "procedure code or bill type inconsistent with the place of service"),
    "6": _deny("coding", "procedure inconsistent with the patient's age"),
    "7": _deny("coding", "procedure inconsistent with the patient's sex"),
    "8": _deny("provider", "procedure inconsistent with the provider type or specialty"),
    "9": _deny("coding", "diagnosis inconsistent with the patient's age"),
    "10": _deny("coding", "diagnosis inconsistent with the patient's sex"),
    "11": _deny("coding", "diagnosis inconsistent with the procedure"),
    "12": _deny("coding", "diagnosis inconsistent with the provider type"),
    "13": _deny("eligibility", "date of death precedes the date of service"),
    "14": _deny("eligibility", "date of birth follows the date of service"),
    "15": _deny("authorization", "authorization number missing, invalid or not for this service"),
    "16": _deny("missing_information", "claim lacks information or has billing errors (see RARC)"),
    "18": _deny("duplicate", "exact duplicate claim or service"),
    "19": _deny("coordination_of_benefits", "work-related: the workers' compensation carrier pays"),
    "20": _deny("coordination_of_benefits", "injury covered by a liability carrier"),
    "21": _deny("coordination_of_benefits", "injury covered by a no-fault carrier"),
    "22": _deny("coordination_of_benefits", "another payer may cover this (coordination)"),
    "26": _deny("eligibility", "service before coverage started"),
    "27": _deny("eligibility", "service after coverage ended"),
    "29": _deny("timely_filing", "the time limit for filing has passed"),
    "31": _deny("eligibility", "patient not identified as the payer's insured"),
    "32": _deny("eligibility", "patient not an eligible dependent"),
    "33": _deny("eligibility", "insured has no dependent coverage"),
    "34": _deny("eligibility", "insured has no newborn coverage"),
    "35": _deny("non_covered", "lifetime benefit maximum reached"),
    "39": _deny("authorization", "authorization was refused when requested"),
    "40": _deny("medical_necessity", "does not meet the criteria for emergency or urgent care"),
    "49": _deny("non_covered", "routine or preventive service not covered"),
    "50": _deny("medical_necessity", "not deemed medically necessary by the payer"),
    "51": _deny("non_covered", "pre-existing condition not covered"),
    "54": _deny("non_covered", "multiple physicians or assistants not covered"),
    "55": _deny("medical_necessity", "experimental or investigational"),
    "56": _deny("medical_necessity", "not proven effective"),
    "58": _deny("coding", "place of service inappropriate or invalid for the treatment"),
    "96": _deny("non_covered", "non-covered charge (see RARC)"),
    "97": _deny("bundling", "included in the payment for another service"),
    "107": _deny("missing_information", "the related or qualifying claim or service is missing"),
    "109": _deny("coordination_of_benefits", "not covered by this payer: send to the right one"),
    "119": _deny("non_covered", "benefit maximum for the period reached"),
    "125": _deny("missing_information", "submission or billing error (see RARC)"),
    "129": _deny("missing_information", "prior processing information appears incorrect"),
    "140": _deny("eligibility", "patient's member id and name do not match"),
    "146": _deny("coding", "diagnosis invalid for the date of service"),
    "150": _deny("medical_necessity", "information does not support this level of service"),
    "151": _deny("medical_necessity", "information does not support this many services"),
    "167": _deny("medical_necessity", "diagnosis not covered"),
    "170": _deny("provider", "not paid when billed by this type of provider"),
    "181": _deny("coding", "procedure code invalid on the date of service"),
    "182": _deny("coding", "modifier invalid on the date of service"),
    "185": _deny("provider", "rendering provider not eligible for this service"),
    "197": _deny("authorization", "authorization or precertification absent"),
    "198": _deny("authorization", "authorization or precertification exceeded"),
    "200": _deny("eligibility", "service during a lapse in coverage"),
    "204": _deny("non_covered", "not covered by the patient's current benefit plan"),
    "206": _deny("missing_information", "NPI missing"),
    "207": _deny("missing_information", "NPI invalid"),
    "208": _deny("provider", "NPI not matched to the provider's enrollment"),
    "226": _deny("missing_information", "information requested from the provider not received"),
    "227": _deny("missing_information", "information requested from the patient not received"),
    "234": _deny("bundling", "procedure not paid separately"),
    "236": _deny("bundling", "procedure or modifier combination not allowed together (NCCI)"),
    "242": _deny("provider", "service not from a network or primary care provider"),
    "252": _deny("missing_information", "attachment or other documentation required"),
    "A1": _deny("other", "claim or service denied (see RARC)"),
    "B7": _deny("provider", "provider not certified or eligible for this service on this date"),
    "B9": _deny("eligibility", "patient enrolled in hospice"),
    "B11": _deny("coordination_of_benefits", "transferred to the proper payer"),
    "B13": _deny("duplicate", "paid earlier, in a previous payment"),
    "B16": _deny("coding", "new-patient qualifications not met"),
}
"""Common CARCs: payment adjustments, and denial reasons with their category."""

CURATED_RARC: dict[str, CodeInfo] = {
    "M15": _deny("bundling", "separately billed services bundled as parts of one procedure"),
    "M20": _deny("coding", "HCPCS code missing or invalid"),
    "M51": _deny("coding", "procedure code missing, incomplete or invalid"),
    "M76": _deny("coding", "diagnosis missing, incomplete or invalid"),
    "M77": _deny("coding", "place of service missing, invalid or inappropriate"),
    "M80": _deny("bundling", "not covered on the same date as a service already processed"),
    "M86": _deny("duplicate", "same or similar service already paid in the period"),
    "M119": _deny("coding", "NDC missing, invalid or withdrawn"),
    "M127": _deny("missing_information", "medical record missing", "send_documentation"),
    "MA04": _deny("coordination_of_benefits", "secondary payment needs the primary's payment"),
    "MA27": _deny("eligibility", "entitlement number or name missing or invalid"),
    "MA61": _deny("eligibility", "social security or Medicare number missing or invalid"),
    "MA63": _deny("coding", "principal diagnosis missing or invalid"),
    "MA120": _deny("missing_information", "CLIA certificate number missing or invalid"),
    "MA130": _deny(
        "missing_information",
        "unprocessable claim, no appeal rights: send a new claim with the corrected data",
        "correct_and_resubmit",
    ),
    "N14": CodeInfo("payment", "other", "paid by contract, fee schedule or maximum allowable"),
    "N20": _deny("bundling", "not payable with another service on the same date"),
    "N30": _deny("eligibility", "patient ineligible for this service"),
    "N56": _deny("coding", "procedure code not valid for the service or date billed"),
    "N115": _deny("medical_necessity", "decided under a Local Coverage Determination (LCD)"),
    "N130": _deny("non_covered", "see the plan's benefit documents for restrictions"),
    "N179": _deny("missing_information", "information requested from the member"),
    "N290": _deny("missing_information", "rendering provider identifier missing or invalid"),
    "N386": _deny("medical_necessity", "decided under a National Coverage Determination (NCD)"),
    "N425": _deny("non_covered", "statutorily excluded service"),
    "N519": _deny("coding", "invalid combination of modifiers"),
    "N522": _deny("duplicate", "duplicate of a claim processed as a crossover"),
    "N657": _deny("coding", "should be billed with the appropriate code for the service"),
}
"""Common RARCs: the detail that makes a generic CARC specific."""

GENERIC_CARCS = frozenset({"16", "96", "125", "A1"})
"""CARCs that only point at their RARCs: the RARC's category wins."""

ACTIONS: dict[DenialCategory, tuple[DenialAction, str]] = {
    "eligibility": (
        "verify_eligibility",
        "Verify coverage and member details (270/271); correct them and send a replacement "
        "claim, or bill the right payer or the patient.",
    ),
    "coding": (
        "correct_and_replace",
        "Review the codes against the documentation; correct them and send a replacement "
        "claim (frequency 7, REF*F8 = the payer claim control number).",
    ),
    "bundling": (
        "correct_and_replace",
        "Check the NCCI edits; where the documentation supports a distinct service add the "
        "modifier and send a replacement claim, otherwise write the line off.",
    ),
    "authorization": (
        "obtain_authorization",
        "Find or request the (retro) authorization and appeal with it.",
    ),
    "duplicate": (
        "check_duplicate",
        "Confirm the original was paid; if this is a distinct service send a replacement "
        "claim that shows it (modifiers, notes), else close the item.",
    ),
    "timely_filing": (
        "appeal",
        "Appeal with proof of timely filing (the payer's 999/277CA acceptance), else write off.",
    ),
    "medical_necessity": (
        "send_documentation",
        "Appeal with the medical records that support necessity (LCD/NCD criteria, ABN).",
    ),
    "coordination_of_benefits": (
        "bill_other_payer",
        "Bill the primary or responsible payer; send this payer their remittance (COB).",
    ),
    "missing_information": (
        "correct_and_replace",
        "Supply what the remark codes ask for and send a replacement claim.",
    ),
    "non_covered": (
        "bill_patient",
        "Not a covered benefit: bill the patient if a waiver (ABN) is on file, else write off.",
    ),
    "provider": (
        "review",
        "Fix the provider's enrollment or credentialing data (NPI, taxonomy, network), then "
        "resubmit.",
    ),
    "underpayment": (
        "review_payment",
        "Compare the payment with the contract or fee schedule and appeal the amount.",
    ),
    "other": ("review", "Read the CARC/RARC detail and decide: correct, appeal or write off."),
}
"""Default next action per category (a code's own action overrides it)."""

_ACTION_TEXT = {
    "correct_and_resubmit": "The payer could not process the claim (no appeal rights): correct "
    "it and send it again as a new original claim (frequency 1).",
    "send_documentation": ACTIONS["medical_necessity"][1],
}


class CodeTables:
    """CARC and RARC lookups: the curated table, with official descriptions when loaded."""

    def __init__(
        self,
        carc: Mapping[str, CodeInfo] | None = None,
        rarc: Mapping[str, CodeInfo] | None = None,
        sources: tuple[Path, ...] = (),
    ) -> None:
        self.carc = dict(CURATED_CARC if carc is None else carc)
        self.rarc = dict(CURATED_RARC if rarc is None else rarc)
        self.sources = sources

    @classmethod
    def load(cls, refdata_dir: Path | None) -> CodeTables:
        """The curated tables, with descriptions from carc*.csv / rarc*.csv in refdata_dir."""
        tables = cls()
        if refdata_dir is None or not Path(refdata_dir).is_dir():
            return tables
        sources: list[Path] = []
        for path in sorted(Path(refdata_dir).iterdir()):
            name = path.name.lower()
            if not name.endswith(".csv"):
                continue
            if name.startswith("carc"):
                _merge(tables.carc, read_code_list(path))
            elif name.startswith("rarc"):
                _merge(tables.rarc, read_code_list(path))
            else:
                continue
            sources.append(path)
        tables.sources = tuple(sources)
        return tables

    def carc_info(self, code: str) -> CodeInfo | None:
        """What a CARC means, or None when neither list knows it."""
        return self.carc.get(code)

    def rarc_info(self, code: str) -> CodeInfo | None:
        """What a RARC means, or None when neither list knows it."""
        return self.rarc.get(code)

    def is_denial(self, carc: str) -> bool:
        """True unless the CARC is a known payment adjustment (unknown codes are denials)."""
        info = self.carc.get(carc)
        return info is None or info.kind == "denial"


def _merge(table: dict[str, CodeInfo], official: Mapping[str, str]) -> None:
    for code, description in official.items():
        known = table.get(code)
        if known is None:
            table[code] = CodeInfo("denial", "other", description)
        else:
            table[code] = replace(known, description=description)


def read_code_list(path: Path) -> dict[str, str]:
    """Code -> description from an official CARC/RARC CSV (columns found by header)."""
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        rows = list(csv.reader(handle))
    for index, header in enumerate(rows[:10]):
        names = [h.strip().lower() for h in header]
        code_col = next((i for i, n in enumerate(names) if n in {"code", "carc", "rarc"}), None)
        desc_col = next((i for i, n in enumerate(names) if "description" in n), None)
        if code_col is not None and desc_col is not None:
            out: dict[str, str] = {}
            for row in rows[index + 1 :]:
                if len(row) > max(code_col, desc_col) and row[code_col].strip():
                    out[row[code_col].strip().upper()] = " ".join(row[desc_col].split())
            return out
    raise ValueError(f"{path}: no header with a code column and a description column")


# --- building the work-queue item ---------------------------------------------------------


def _reasons(payment: ClaimPayment, tables: CodeTables) -> list[DenialReason]:
    """The CAS adjustments that refuse money, with their category and meaning, in the order
    of ``all_adjustments`` (claim first, then each line's) without making that list: every
    posting asks, and most refuse nothing (a contractual adjustment, the patient's share)."""
    out: list[DenialReason] = []
    for adj in payment.adjustments:
        if adj.amount > 0 and tables.is_denial(adj.reason):
            out.append(_refusal(adj, None, tables))
    for line, service in enumerate(payment.service_lines, start=1):
        for adj in service.adjustments:
            if adj.amount > 0 and tables.is_denial(adj.reason):
                out.append(_refusal(adj, line, tables))
    return out


def _refusal(adj: CasAdjustment, line: int | None, tables: CodeTables) -> DenialReason:
    info = tables.carc_info(adj.reason)
    category = info.category if info else "other"
    description = info.description if info else None
    return _reason(adj.group, adj.reason, cents(adj.amount), line, category, description)


def _refined(reason: DenialReason, rarcs: Iterable[CodeInfo]) -> DenialCategory:
    if reason.carc in GENERIC_CARCS or reason.category == "other":
        specific = [r.category for r in rarcs if r.kind == "denial" and r.category != "other"]
        if specific:
            return specific[0]
    return reason.category


def denial_for(
    posting: RemittancePosting,
    payment: ClaimPayment,
    tables: CodeTables,
    *,
    underpayment_tolerance: Decimal = Decimal("1.00"),
    queued_at: datetime,
    shortfall: Decimal | None = None,
) -> Denial | None:
    """The work-queue item for a posting, or None when nothing was refused or short-paid.

    ``shortfall``: expected minus what the claim brought in from its payer over every CLP
    of a split (``posting.shortfall``); by default this posting's own.
    """
    if posting.status in {"reversed", "unmatched"}:
        return None
    reasons = _reasons(payment, tables)
    remark_infos = [(code, tables.rarc_info(code)) for code in posting.remark_codes]
    known_rarcs = [info for _, info in remark_infos if info is not None]
    if shortfall is None:
        shortfall = _shortfall(posting, payment)
    if posting.status == "denied":
        kind: Literal["denied", "partially_denied", "underpaid"] = "denied"
    elif reasons:
        kind = "partially_denied"
    elif shortfall is not None and shortfall > underpayment_tolerance:
        kind = "underpaid"
    else:
        return None
    if reasons:
        reasons = [
            _reason(r.group, r.carc, r.amount, r.line, _refined(r, known_rarcs), r.description)
            for r in reasons
        ]
        top = max(reasons, key=lambda r: r.amount)  # first of the largest
        category: DenialCategory = top.category
        at_stake = sum((r.amount for r in reasons), ZERO)
    elif kind == "underpaid":
        category, at_stake = "underpayment", shortfall or ZERO
    else:  # denied with no refusing CAS (e.g. all amounts in payment adjustments)
        category, at_stake = _category_from_remarks(known_rarcs), posting.total_charge
    if posting.claim_status_code == "23" and category == "other":
        category = "coordination_of_benefits"  # not this payer's claim, forwarded on
    action, text = _next_action(category, reasons, tables, known_rarcs)
    frequency = {"correct_and_replace": "7", "correct_and_resubmit": "1"}.get(action)
    if frequency == "7" and not posting.payer_claim_control_number:
        text += " The 835 has no payer claim control number for REF*F8: ask the payer for it."
    return _denial(
        event_id=event_id(posting.event_id, STAGE, VERSION),
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
        remarks=[_remark(code, info.description if info else None) for code, info in remark_infos],
        lines=_lines(payment, tables),
        total_charge=cents(posting.total_charge),
        paid=cents(posting.paid),
        patient_responsibility=cents(posting.patient_responsibility),
        at_stake=cents(at_stake),
        expected=None if posting.expected is None else cents(posting.expected),
        variance=None if posting.variance is None else cents(posting.variance),
        payment_trace=posting.payment_trace,
        file_id=posting.file_id,
        posting_event_id=posting.event_id,
        queued_at=queued_at,
    )


# The work-queue item is made from values of the types its fields hold (the posting, the
# 835 as read, the code tables' categories and actions), the money in cents as ``Money``
# gives it, as ``posting.post`` makes the posting: validating its models again (the item,
# each reason, remark and line, and a copy of each reason for its refined category) took a
# denial of the simulator's 835s 39 us, made 22. tests/unit/test_remittance_denial_build.py
# keeps the validated build as the judge: equal, the same JSON, the same Avro bytes.
_denial = model_maker(Denial)
_reason = model_maker(DenialReason)
_remark = model_maker(RemarkCode)
_denied_line = model_maker(DeniedLine)


def _shortfall(posting: RemittancePosting, payment: ClaimPayment) -> Decimal | None:
    """Expected minus what the claim brings in, sequestration not counted as a shortfall.

    None when the posting has no variance: no expected amount, or a split claim whose
    other part has not been adjudicated yet.
    """
    if posting.expected is None or posting.variance is None:
        return None
    sequestration = sum((a.amount for _, a in payment.all_adjustments() if a.reason == "253"), ZERO)
    return -posting.variance - sequestration


def _category_from_remarks(rarcs: list[CodeInfo]) -> DenialCategory:
    specific = [r.category for r in rarcs if r.kind == "denial" and r.category != "other"]
    return specific[0] if specific else "other"


def _next_action(
    category: DenialCategory,
    reasons: list[DenialReason],
    tables: CodeTables,
    rarcs: list[CodeInfo],
) -> tuple[DenialAction, str]:
    # A remark code's own action (MA130: unprocessable, resubmit as new) overrides the rest.
    for info in rarcs:
        if info.action is not None:
            return info.action, _ACTION_TEXT.get(info.action, ACTIONS[info.category][1])
    for reason in reasons:
        carc = tables.carc_info(reason.carc)
        if carc is not None and carc.action is not None and reason.category == category:
            return carc.action, _ACTION_TEXT.get(carc.action, ACTIONS[category][1])
    return ACTIONS[category]


def _lines(payment: ClaimPayment, tables: CodeTables) -> list[DeniedLine]:
    """Lines with a refused amount, or recoded by the payer (SVC06)."""
    out = []
    for number, line in enumerate(payment.service_lines, start=1):
        carcs = [a.reason for a in line.adjustments if a.amount > 0 and tables.is_denial(a.reason)]
        if not carcs and not line.recoded:
            continue
        out.append(
            _denied_line(
                number,
                line.procedure,
                line.original_procedure,
                list(line.modifiers),
                cents(line.charge),
                cents(line.paid),
                list(dict.fromkeys(carcs)),
            )
        )
    return out


def categories() -> tuple[str, ...]:
    """Every denial category, in the schema's order."""
    return get_args(DenialCategory)
