"""Read the payer's front-end answers to an 837: the 999 and the 277CA, and the rejections in them.

- 999 (005010X231A1, implementation acknowledgment): one AK2 per transaction set of the
  837's functional group (AK1 names the group by its GS06 control number). IK5 says
  whether the set was accepted (A, E: accepted with errors) or rejected (R, M, W, X);
  IK3/IK4 say which segment and element were wrong. A rejected set rejects every claim in
  it: the caller maps the group control number back to the claims it carried.
- 277CA (005010X214, claim acknowledgment): one patient loop (HL03 PT) per claim, TRN02 the
  patient control number (CLM01), STC the status. Categories A3, A4, A6, A7 and A8 are
  rejections (returned as unprocessable, not found, missing, invalid, relational); A1, A2
  and A5 are receipt and acceptance.

Segments are read by the shared X12 reader (``services.x12.reader``), which takes the
delimiters from the ISA. The claims stage reads each file once (``read_ack``): a file whose
reading says nothing but its answers is read from the reader's element lists, anything else
from its segments, the judge (``read_ack(..., fast=False)``; tests/unit/test_claims_ack_rows.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pipeline.errors import InputError
from pipeline.models import ClaimRejection, PayerFile, event_id
from services.x12.reader import Segment, read_segments, segment_rows

STAGE = "claims"
VERSION = "v1"

# IK5-01 / AK9-01 acknowledgment codes that mean the transaction set was not accepted.
REJECTED_SET = frozenset({"R", "M", "W", "X"})
# 277CA claim status categories that reject the claim (code source 507).
REJECTING_CATEGORIES = frozenset({"A3", "A4", "A6", "A7", "A8"})
IK3_ERRORS = {
    "1": "unrecognized segment id",
    "2": "unexpected segment",
    "3": "required segment missing",
    "4": "loop occurs over maximum times",
    "5": "segment exceeds maximum use",
    "6": "segment not in defined transaction set",
    "7": "segment not in proper sequence",
    "8": "segment has data element errors",
    "I4": "implementation 'not used' segment present",
    "I6": "implementation dependent segment missing",
    "I7": "implementation loop occurs under minimum times",
    "I8": "implementation segment below minimum use",
    "I9": "implementation dependent 'not used' segment present",
}
IK4_ERRORS = {
    "1": "required data element missing",
    "2": "conditional required data element missing",
    "3": "too many data elements",
    "4": "data element too short",
    "5": "data element too long",
    "6": "invalid character in data element",
    "7": "invalid code value",
    "8": "invalid date",
    "9": "invalid time",
    "10": "exclusion condition violated",
    "12": "too many repetitions",
    "13": "too many components",
    "I6": "code value not used in implementation",
    "I9": "implementation dependent data element missing",
    "I10": "implementation 'not used' data element present",
    "I11": "implementation too few repetitions",
    "I12": "implementation pattern match failure",
    "I13": "implementation dependent 'not used' data element present",
}
IK5_ERRORS = {
    "1": "transaction set not supported",
    "2": "transaction set trailer missing",
    "3": "transaction set control number in header and trailer do not match",
    "4": "number of included segments does not match actual count",
    "5": "one or more segments in error",
    "6": "missing or invalid transaction set identifier",
    "7": "missing or invalid transaction set control number",
    "18": "transaction set not in functional group",
    "19": "invalid transaction set implementation convention reference",
    "I5": "implementation one or more segments in error",
    "I6": "implementation convention not supported",
}
STC_CATEGORIES = {
    "A0": "forwarded to another entity",
    "A1": "received",
    "A2": "accepted into adjudication",
    "A3": "returned as unprocessable",
    "A4": "not found",
    "A5": "split claim",
    "A6": "rejected for missing information",
    "A7": "rejected for invalid information",
    "A8": "rejected for relational field in error",
}
STC_STATUS = {
    "19": "entity acknowledges receipt of claim",
    "20": "accepted for processing",
    "21": "missing or invalid information",
    "33": "subscriber and subscriber id not found",
    "164": "entity's contract/member number",
    "562": "entity's National Provider Identifier (NPI)",
    "145": "entity's specialty/taxonomy code",
    "254": "principal diagnosis code",
    "187": "date(s) of service",
    "35": "claim/encounter not found",
    "54": "duplicate of a previously processed claim",
}
ENTITIES = {"IL": "subscriber", "QC": "patient", "85": "billing provider", "PR": "payer"}


# --- 999 ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentError:
    """An IK3 (segment) error with its IK4 (element) errors."""

    segment_id: str
    position: str
    code: str
    elements: tuple[tuple[str, str, str, str], ...] = ()  # (position, element ref, code, value)

    def codes(self) -> list[str]:
        """Machine-readable: IK3:<segment>:<position>:<code>, IK4:<position>:<ref>:<code>."""
        out = [f"IK3:{self.segment_id}:{self.position}:{self.code}"]
        out += [f"IK4:{pos}:{ref}:{code}" for pos, ref, code, _ in self.elements]
        return out

    def describe(self) -> str:
        """'segment HI at 20: segment has data element errors; element 2:1 (1270) invalid …'."""
        what = IK3_ERRORS.get(self.code, f"error {self.code}")
        out = f"segment {self.segment_id} at {self.position}: {what}"
        for pos, ref, code, value in self.elements:
            problem = IK4_ERRORS.get(code, f"error {code}")
            out += f"; element {pos}" + (f" ({ref})" if ref else "") + f" {problem}"
            out += f" {value!r}" if value else ""
        return out


@dataclass(frozen=True)
class SetAck:
    """One AK2..IK5: how the payer took one transaction set."""

    transaction: str  # ST01 of the acknowledged set, 837
    control_number: str  # its ST02
    status: str  # IK5-01
    status_codes: tuple[str, ...] = ()  # IK5-02..06
    errors: tuple[SegmentError, ...] = ()

    @property
    def rejected(self) -> bool:
        """R, M, W or X: the set and every claim in it were not accepted."""
        return self.status in REJECTED_SET

    def codes(self) -> list[str]:
        """IK5 status and codes, then every IK3/IK4 error."""
        out = [":".join(("IK5", self.status, *self.status_codes))]
        for err in self.errors:
            out += err.codes()
        return out

    def reason(self, group: str) -> str:
        """A sentence a biller can act on."""
        why = [IK5_ERRORS.get(c, f"error {c}") for c in self.status_codes]
        head = f"999: transaction set {self.control_number} of group {group} rejected"
        detail = "; ".join([*why, *(e.describe() for e in self.errors)])
        return f"{head}: {detail}" if detail else head


@dataclass(frozen=True)
class FunctionalAck:
    """A 999 for one functional group."""

    functional_id: str  # AK1-01, HC for claims
    group_control_number: str  # AK1-02: the GS06 of the acknowledged group
    version: str  # AK1-03
    sets: tuple[SetAck, ...]
    group_status: str  # AK9-01


def parse_999(text: str, segments: Iterable[Segment] | None = None) -> list[FunctionalAck]:
    """Every AK1 group of a 999 interchange, with its transaction-set answers (``segments``:
    the text's segments when they are already read)."""
    out: list[FunctionalAck] = []
    ak1: Segment | None = None
    sets: list[SetAck] = []
    ak2: Segment | None = None
    errors: list[SegmentError] = []
    ik3: Segment | None = None
    ik4s: list[tuple[str, str, str, str]] = []

    def close_ik3() -> None:
        nonlocal ik3, ik4s
        if ik3 is not None:
            errors.append(SegmentError(ik3.el(1), ik3.el(2), ik3.el(4), tuple(ik4s)))
        ik3, ik4s = None, []

    for seg in read_segments(text, field="body") if segments is None else segments:
        if seg.id == "AK1":
            ak1, sets = seg, []
        elif seg.id == "AK2":
            ak2, errors = seg, []
        elif seg.id == "IK3":
            close_ik3()
            ik3 = seg
        elif seg.id == "IK4":
            position = ":".join(p for p in seg.comps(1) if p)
            ik4s.append((position, seg.el(2), seg.el(3), seg.el(4)))
        elif seg.id == "IK5":
            close_ik3()
            if ak2 is None:
                raise InputError("IK5", "an IK5 without its AK2")
            codes = tuple(c for c in seg.elements[1:6] if c)
            sets.append(SetAck(ak2.el(1), ak2.el(2), seg.el(1), codes, tuple(errors)))
            ak2 = None
        elif seg.id == "AK9":
            if ak1 is None:
                raise InputError("AK9", "an AK9 without its AK1")
            out.append(FunctionalAck(ak1.el(1), ak1.el(2), ak1.el(3), tuple(sets), seg.el(1)))
            ak1 = None
    if not out:
        raise InputError("AK1", "no functional group acknowledgment (AK1..AK9) in the 999")
    return out


# --- 277CA -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimStatus:
    """One STC composite: category, status code and (optionally) the entity it is about."""

    category: str
    code: str
    entity: str = ""

    @property
    def rejects(self) -> bool:
        """Whether this status rejects the claim."""
        return self.category in REJECTING_CATEGORIES

    def code_text(self) -> str:
        """A3:21 or A3:164:IL, as on the wire."""
        return ":".join(p for p in (self.category, self.code, self.entity) if p)

    def describe(self) -> str:
        """'rejected: returned as unprocessable, entity's contract/member number (subscriber)'."""
        category = STC_CATEGORIES.get(self.category, self.category)
        status = STC_STATUS.get(self.code, f"status {self.code}")
        entity = f" ({ENTITIES.get(self.entity, self.entity)})" if self.entity else ""
        return f"{category}, {status}{entity}"


@dataclass(frozen=True)
class ClaimAck:
    """A 277CA's answer about one claim."""

    claim_id: str  # TRN02 of the patient loop: the 837's CLM01
    statuses: tuple[ClaimStatus, ...]
    action: str  # STC03: WQ accepted, U rejected
    payer_claim_control_number: str | None = None  # REF*1K
    charge: str | None = None

    @property
    def rejected(self) -> bool:
        """Any rejecting category, or the reject action code."""
        return any(s.rejects for s in self.statuses) or self.action == "U"

    def codes(self) -> list[str]:
        """Every status composite as on the wire."""
        return [s.code_text() for s in self.statuses]

    def reason(self) -> str:
        """A sentence a biller can act on."""
        return "277CA: claim rejected: " + "; ".join(s.describe() for s in self.statuses)


def _statuses(seg: Segment) -> list[ClaimStatus]:
    out = []
    for pos in (1, 10, 11):  # STC01, and STC10/STC11 for more statuses
        parts = seg.comps(pos)
        if parts and parts[0]:
            padded = [*parts, "", ""]
            out.append(ClaimStatus(padded[0], padded[1], padded[2]))
    return out


@dataclass
class _OpenClaim:
    """A patient loop being read."""

    claim_id: str = ""
    statuses: list[ClaimStatus] = field(default_factory=list)
    action: str = ""
    icn: str | None = None
    charge: str | None = None

    def ack(self) -> ClaimAck:
        return ClaimAck(self.claim_id, tuple(self.statuses), self.action, self.icn, self.charge)


def parse_277ca(text: str, segments: Iterable[Segment] | None = None) -> list[ClaimAck]:
    """Every claim-level (patient loop) status of a 277CA, in file order (``segments``: the
    text's segments when they are already read)."""
    out: list[ClaimAck] = []
    level = ""
    claim: _OpenClaim | None = None
    seen_st = False
    for seg in read_segments(text, field="body") if segments is None else segments:
        if seg.id == "ST":
            seen_st = True
            if seg.el(1) != "277":
                raise InputError("ST01", f"not a 277 claim acknowledgment: ST01 {seg.el(1)!r}")
        elif seg.id in ("HL", "SE"):
            if claim is not None and claim.claim_id:
                out.append(claim.ack())
            claim = None
            level = seg.el(3) if seg.id == "HL" else ""
            if level == "PT":
                claim = _OpenClaim()
        elif claim is not None and level == "PT":
            if seg.id == "TRN" and seg.el(1) == "2":
                claim.claim_id = seg.el(2)
            elif seg.id == "STC" and not claim.action:  # the claim's status, not a line's
                claim.statuses = _statuses(seg)
                claim.action = seg.el(3)
                claim.charge = seg.el(4) or None
            elif seg.id == "REF" and seg.el(1) == "1K":
                claim.icn = seg.el(2) or None
            elif seg.id == "SVC":
                level = "SVC"  # service line statuses follow; the claim's are read
    if not seen_st:
        raise InputError("ST", "no transaction set in the 277CA")
    return out


def _segments_of(file: PayerFile) -> list[Segment] | None:
    """Every segment of a 999 or 277CA, or None when it cannot be read."""
    try:
        return list(read_segments(file.body.decode("ascii"), field="body"))
    except (UnicodeDecodeError, InputError):
        return None


def answered_interchanges(file: PayerFile, segments: Sequence[Segment] | None = None) -> list[int]:
    """The control numbers of the 837 interchanges a 999 or 277CA answers, in file order:
    a 999's AK1-02 groups (claimflow's GS06 is its ISA13), a 277CA's information receiver
    trace (TRN02 of loop 2200B: the 837's BHT03, which claimflow writes as the ISA13 and a
    4-digit set number; a bare ISA13 is read too). Empty for anything else, or a file that
    cannot be read (its reader says why where it is handled). ``segments``: the file's,
    when they are already read."""
    if file.kind not in ("999", "277CA"):
        return []
    if segments is None:
        segments = _segments_of(file)
        if segments is None:
            return []
    found: list[int] = []
    level = ""
    for seg in segments:
        number = ""
        if file.kind == "999" and seg.id == "AK1":
            number = seg.el(2)
        elif seg.id == "HL":
            level = seg.el(3)
        elif seg.id == "TRN" and level == "21" and seg.el(1) == "2":
            number = seg.el(2)[:9]
        if number.isdigit() and len(number) <= 9 and int(number) not in found:
            found.append(int(number))
    return found


@dataclass(frozen=True)
class Ack:
    """A 999 or 277CA read once (``read_ack``): the interchanges it answers
    (``answered_interchanges``) and what ``parse_999`` or ``parse_277ca`` reads in it: a
    999's groups, a 277CA's claims (the accepted ones by the payer's claim number they were
    given, REF*1K, when they were given one; the rejected ones whole), or why its answers
    cannot be read (``refusal``, raised where they are handled: ``rejections``)."""

    numbers: tuple[int, ...]
    groups: tuple[FunctionalAck, ...] = ()
    numbered: tuple[tuple[str, str], ...] = ()
    rejected: tuple[ClaimAck, ...] = ()
    refusal: InputError | None = None


def _claims_ack(numbers: Sequence[int], claims: Iterable[ClaimAck]) -> Ack:
    numbered: list[tuple[str, str]] = []
    rejected: list[ClaimAck] = []
    for claim in claims:
        if claim.rejected:
            rejected.append(claim)
        elif claim.payer_claim_control_number:
            numbered.append((claim.claim_id, claim.payer_claim_control_number))
    return Ack(tuple(numbers), numbered=tuple(numbered), rejected=tuple(rejected))


def read_ack(file: PayerFile, *, fast: bool = True) -> Ack | None:
    """A 999 or 277CA read once, or None when it cannot be read (its reader says why where
    it is handled: ``rejections``).

    A file whose answers can be read is read from the X12 reader's element lists
    (``_ack_rows``): no ``Segment`` a segment, no object a claim the payer accepted (read,
    routed and matched in 17 us a file instead of 31, the stage bench's 999s and 277CAs).
    Anything else (an envelope the reader hands to pyx12, an answer the segment parsers
    refuse) is read from the file's segments by ``answered_interchanges`` and the parsers,
    which say what is wrong: ``fast=False`` reads every file so, the judge of the other way."""
    if file.kind not in ("999", "277CA"):
        return Ack(())
    try:
        text = file.body.decode("ascii")
    except UnicodeDecodeError:
        return None
    if fast:
        try:
            read, rows = segment_rows(text)
        except InputError:
            return None
        if rows is not None:
            ack = _ack_rows(file.kind, rows, read[104])  # ISA16: the component separator
            if ack is not None:
                return ack
    segments = _segments_of(file)
    if segments is None:
        return None
    numbers = answered_interchanges(file, segments)
    try:
        if file.kind == "999":
            return Ack(tuple(numbers), groups=tuple(parse_999("", segments)))
        return _claims_ack(numbers, parse_277ca("", segments))
    except InputError as exc:
        return Ack(tuple(numbers), refusal=exc)


# --- a file whose answers can be read, from its element lists ---------------------------------
#
# What ``answered_interchanges`` and ``parse_999``/``parse_277ca`` do with a file's segments,
# done in one pass over its element lists (``row[n]`` is element n, the segment id
# ``row[0]``; an element past the last is ''). Where a parser would refuse the file, None:
# ``read_ack`` reads it again from its segments, whose refusal is the one given.


def _number(number: str, found: list[int]) -> None:
    """``answered_interchanges``' test of a control number, and the number kept."""
    if number.isdigit() and len(number) <= 9 and int(number) not in found:
        found.append(int(number))


def _ack_rows(kind: str, rows: list[list[str]], sub: str) -> Ack | None:
    if kind == "999":
        return _999_rows(rows, sub)
    return _277ca_rows(rows, sub)


def _999_rows(rows: list[list[str]], sub: str) -> Ack | None:
    found: list[int] = []
    out: list[FunctionalAck] = []
    ak1: list[str] | None = None
    sets: list[SetAck] = []
    ak2: list[str] | None = None
    errors: list[SegmentError] = []
    ik3: list[str] | None = None
    ik4s: list[tuple[str, str, str, str]] = []
    level = ""
    for row in rows:
        sid = row[0]
        if sid == "AK1":
            row = [*row, "", "", ""]
            _number(row[2], found)
            ak1, sets = row, []
        elif sid == "AK2":
            ak2, errors = [*row, "", ""], []
        elif sid == "IK3" or sid == "IK5":
            if ik3 is not None:
                errors.append(SegmentError(ik3[1], ik3[2], ik3[4], tuple(ik4s)))
            ik3, ik4s = None, []
            if sid == "IK3":
                ik3 = [*row, "", "", "", ""]
                continue
            if ak2 is None:
                return None  # an IK5 without its AK2
            codes = tuple([c for c in row[2:7] if c])
            status = row[1] if len(row) > 1 else ""
            sets.append(SetAck(ak2[1], ak2[2], status, codes, tuple(errors)))
            ak2 = None
        elif sid == "IK4":
            row = [*row, "", "", "", ""]
            position = ":".join([p for p in row[1].split(sub) if p])
            ik4s.append((position, row[2], row[3], row[4]))
        elif sid == "AK9":
            if ak1 is None:
                return None  # an AK9 without its AK1
            row = [*row, "", "", ""]
            out.append(FunctionalAck(ak1[1], ak1[2], ak1[3], tuple(sets), row[1]))
            ak1 = None
        elif sid == "HL":
            level = row[3] if len(row) > 3 else ""
        elif sid == "TRN" and level == "21" and len(row) > 1 and row[1] == "2":
            _number(row[2][:9] if len(row) > 2 else "", found)
    if not out:
        return None  # no functional group acknowledgment
    return Ack(tuple(found), groups=tuple(out))


def _statuses_row(stc: list[str], sub: str) -> tuple[ClaimStatus, ...]:
    """``_statuses`` of an STC's elements."""
    out = []
    for pos in (1, 10, 11):
        if pos < len(stc) and stc[pos]:
            parts = stc[pos].split(sub)
            if parts[0]:
                padded = [*parts, "", ""]
                out.append(ClaimStatus(padded[0], padded[1], padded[2]))
    return tuple(out)


def _277ca_rows(rows: list[list[str]], sub: str) -> Ack | None:
    found: list[int] = []
    numbered: list[tuple[str, str]] = []
    rejected: list[ClaimAck] = []
    level = ""  # parse_277ca's: the HL's level code, '' after an SE, SVC in a claim's lines
    trace_level = ""  # answered_interchanges': the last HL's level code
    seen_st = False
    in_claim = False  # in a patient loop (HL03 PT)
    claim_id = ""
    stc: list[str] | None = None  # the claim's STC: its first, or the first with an action
    icn: str | None = None
    for row in rows:
        sid = row[0]
        if sid == "ST":
            seen_st = True
            if len(row) < 2 or row[1] != "277":
                return None  # not a 277 claim acknowledgment
        elif sid == "HL" or sid == "SE":
            if in_claim and claim_id:
                _close_claim(claim_id, stc, icn, sub, numbered, rejected)
            if sid == "HL":
                level = trace_level = row[3] if len(row) > 3 else ""
            else:
                level = ""
            in_claim = level == "PT"
            claim_id, stc, icn = "", None, None
        elif sid == "TRN":
            if len(row) > 1 and row[1] == "2":
                trace = row[2] if len(row) > 2 else ""
                if trace_level == "21":
                    _number(trace[:9], found)
                if in_claim and level == "PT":
                    claim_id = trace
        elif in_claim and level == "PT":
            if sid == "STC":
                if stc is None or len(stc) < 4 or not stc[3]:
                    stc = row
            elif sid == "REF":
                if len(row) > 1 and row[1] == "1K":
                    icn = (row[2] if len(row) > 2 else "") or None
            elif sid == "SVC":
                level = "SVC"  # service line statuses follow; the claim's are read
    if not seen_st:
        return None  # no transaction set
    return Ack(tuple(found), numbered=tuple(numbered), rejected=tuple(rejected))


def _close_claim(
    claim_id: str,
    stc: list[str] | None,
    icn: str | None,
    sub: str,
    numbered: list[tuple[str, str]],
    rejected: list[ClaimAck],
) -> None:
    """A patient loop read: the claim rejected, or its payer claim number (if any) kept."""
    if stc is None:
        if icn:
            numbered.append((claim_id, icn))
        return
    action = stc[3] if len(stc) > 3 else ""
    if action == "U" or any(
        stc[pos].split(sub, 1)[0] in REJECTING_CATEGORIES for pos in (1, 10, 11) if pos < len(stc)
    ):
        charge = (stc[4] if len(stc) > 4 else "") or None
        rejected.append(ClaimAck(claim_id, _statuses_row(stc, sub), action, icn, charge))
    elif icn:
        numbered.append((claim_id, icn))


# --- rejections --------------------------------------------------------------------------------


@dataclass
class RejectionContext:
    """How to find what a payer file is about: claims by group control number, encounters."""

    claims_of_group: Callable[[str], Sequence[tuple[str, str]]]  # GS06 -> (claim, encounter)
    encounter_of: Callable[[str], str | None]
    rejected_at: datetime
    unknown_groups: list[str] = field(default_factory=list)
    # Claims a 277CA accepted, with the payer's claim control number (REF*1K) it gave them.
    payer_claim_numbers: dict[str, str] = field(default_factory=dict)
    # The groups answered here (a 999 naming groups of several partitions is read by each).
    owns: Callable[[str], bool] = lambda _group: True


def _rejection(
    file: PayerFile,
    claim_id: str,
    encounter_id: str | None,
    source: str,
    codes: list[str],
    reason: str,
    control_number: str | None,
    rejected_at: datetime,
) -> ClaimRejection:
    return ClaimRejection(
        event_id=event_id(claim_id, STAGE, VERSION, "rejection", source, file.file_id),
        claim_id=claim_id,
        encounter_id=encounter_id,
        payer_id=file.payer_id,
        source=source,  # type: ignore[arg-type]
        file_id=file.file_id,
        interchange_control_number=control_number,
        codes=codes,
        reason=reason[:2000],
        rejected_at=rejected_at,
    )


def rejections(
    file: PayerFile, ctx: RejectionContext, ack: Ack | None = None
) -> list[ClaimRejection]:
    """The claims a 999 or 277CA rejects, with the codes and a reason (835s: none).
    ``ack``: the file, when it is already read (``read_ack``)."""
    if file.kind not in ("999", "277CA"):
        return []
    if ack is None:
        try:
            text = file.body.decode("ascii")
        except UnicodeDecodeError as exc:
            raise InputError("body", f"an X12 file is ASCII; byte {exc.start} is not") from exc
        if file.kind == "999":
            ack = Ack((), groups=tuple(parse_999(text)))
        else:
            ack = _claims_ack((), parse_277ca(text))
    elif ack.refusal is not None:
        raise ack.refusal
    out: list[ClaimRejection] = []
    if file.kind == "999":
        for group in ack.groups:
            rejected = [s for s in group.sets if s.rejected]
            if not rejected or not ctx.owns(group.group_control_number):
                continue
            claims = ctx.claims_of_group(group.group_control_number)
            if not claims:
                ctx.unknown_groups.append(group.group_control_number)
                continue
            # One group carries one 837 set per 5000 claims; the store keeps claims by group,
            # so a rejected set rejects the group's claims (claimflow writes one set per group).
            first = rejected[0]
            for claim_id, encounter_id in claims:
                out.append(
                    _rejection(
                        file,
                        claim_id,
                        encounter_id,
                        "999",
                        first.codes(),
                        first.reason(group.group_control_number),
                        f"{int(group.group_control_number):09d}"
                        if group.group_control_number.isdigit()
                        else None,
                        ctx.rejected_at,
                    )
                )
        return out
    ctx.payer_claim_numbers.update(ack.numbered)
    return [
        _rejection(
            file,
            claim.claim_id,
            ctx.encounter_of(claim.claim_id),
            "277CA",
            claim.codes(),
            claim.reason(),
            None,
            ctx.rejected_at,
        )
        for claim in ack.rejected
    ]


# --- the work queue ----------------------------------------------------------------------------


def latest_rejections(records: Iterable[ClaimRejection]) -> list[ClaimRejection]:
    """The last rejection of each claim, oldest first (a claim sent again may be rejected again)."""
    latest: dict[str, ClaimRejection] = {}
    for record in records:
        latest.pop(record.claim_id, None)
        latest[record.claim_id] = record
    return list(latest.values())


def rejection_lines(rejections: Sequence[ClaimRejection]) -> str:
    """For people: one line per claim the payer's front end rejected, with what to fix."""
    if not rejections:
        return "Rejected by the payer's front end (999/277CA): none"
    out = [f"Rejected by the payer's front end (999/277CA): {len(rejections)} claim(s)"]
    for r in rejections:
        encounter = r.encounter_id or "encounter unknown"
        out.append(
            f"  {r.claim_id}  {encounter}  payer {r.payer_id}  {r.source} {' '.join(r.codes)}"
        )
        out.append(f"      {r.reason}")
    return "\n".join(out)
