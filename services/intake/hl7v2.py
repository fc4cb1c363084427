"""HL7 v2 (ER7) -> Encounter records: ADT^A03 discharges and DFT^P03 charges, with hl7apy.

hl7apy parses and checks each message (MSH, encoding characters, version, segment names);
only the segments that feed the Encounter contract are handed to it (MSH, PID, PV1, DG1,
PR1 and the ROLs of its procedure group, IN1, FT1), and of those only the fields intake
reads (``READ``). Every other segment (EVN, NK1, OBX, NTE, AL1, GT1, Z-segments …) is
counted in ``ignored``, and other fields (phone numbers, SSN …) are blanked unread:
minimum necessary PHI, a malformed OBX does not block a claim, and hl7apy, which builds
an object per component, has less to do. Fields are addressed by position, so the same
code reads 2.3 to 2.8.

One message gives one encounter: the visit in its PV1. A batch (FHS/BHS … BTS/FTS, or
several MSH-headed messages in one body) whose messages share a visit number (PV1-19) gives
one encounter for that visit: the ADT^A03 says when and how the stay ended, the DFT^P03s
carry the charges. Rejections name the segment and field in HL7 notation (``PID-7``,
``FT1[2]-11``, ``PID-11.5``); the rules are in ``services/intake/README.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, NamedTuple

import hl7apy
import hl7apy.core
import hl7apy.factories
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import HL7apyException, UnsupportedVersion
from hl7apy.parser import get_message_info, parse_message, parse_segments

from pipeline.errors import InputError
from pipeline.models import (
    Address,
    Coverage,
    DocumentedDiagnosis,
    DocumentedService,
    Encounter,
    Facility,
    Patient,
    Provider,
    Setting,
    Subscriber,
    event_id,
)
from services.intake.fhir import (
    UNKNOWN_MEMBER_ID,
    X12_FILING_CODES,
    _build,
    _Ctx,
    _distinct,
    _is_self_pay,
    _plan_type,
    _self_pay,
    _slug,
    _state,
)
from services.intake.jsonfmt import MAX_UNITS, SELF, X12_RELATIONSHIPS, check_charge
from services.intake.memo import Memo
from services.refdata.chargemaster import ChargeItem, Chargemaster
from services.refdata.providers import EMPTY_DIRECTORY, ProviderDirectory

# The fields intake reads, by segment; every other field is blanked before hl7apy parses
# the message (never read: phone numbers, SSN, race, employer …), and every other segment
# is counted and skipped. Fewer fields is also less of hl7apy's per-element cost.
READ: dict[str, frozenset[int]] = {
    "PID": frozenset({2, 3, 5, 7, 8, 11}),
    "PV1": frozenset({2, 3, 4, 7, 14, 19, 36, 44, 45}),
    "DG1": frozenset({1, 2, 3, 4, 15, 21, 26}),
    "PR1": frozenset({1, 2, 3, 4, 5, 11}),
    "ROL": frozenset({2, 3, 4}),
    "IN1": frozenset({1, 2, 3, 4, 8, 15, 16, 17, 18, 19, 36, 43, 49}),
    "FT1": frozenset({1, 4, 6, 7, 8, 10, 11, 12, 19, 20, 25, 26, 41}),
}
REPEATING = frozenset({"DG1", "PR1", "ROL", "IN1", "FT1"})
# ROL-3 role codes (a ROL after a PR1) that name the surgeon. Table 0443 (provider role),
# which replaced the procedure practitioner of table 0133 (PR1-12) in 2.6 and the surgeon of
# PR1-11 in 2.7, has no surgeon code of its own and is extensible (CWE): feeds send table
# 0133's PR (procedure MD / surgeon) or a local code.
SURGEON_ROLES = frozenset({"PR", "SURG", "SURGEON", "SUR"})
BATCH_ENVELOPE = frozenset({"FHS", "FTS", "BHS", "BTS"})
MESSAGE_TYPES = {("ADT", "A01"), ("ADT", "A03"), ("DFT", "P03")}
DEFAULT_SOURCE_SYSTEM = "hl7v2"

# PV1-2 patient class (HL7 table 0004) -> setting and CMS place of service.
PATIENT_CLASS: dict[str, tuple[Setting, str]] = {
    "O": ("professional", "11"),
    "R": ("professional", "11"),
    "E": ("outpatient", "23"),
    "I": ("inpatient", "21"),
}
# PV1-4 admission type (table 0007) -> UB-04 priority of admission (FL 14).
ADMISSION_TYPE = {"E": "1", "A": "1", "U": "2", "C": "3", "R": "3", "N": "4", "T": "5"}
# Coding systems (table 0396, plus spellings seen in the field).
DX_SYSTEMS: dict[str, Literal["icd10cm", "snomed"]] = {
    "I10": "icd10cm",
    "I10C": "icd10cm",
    "ICD10": "icd10cm",
    "ICD10CM": "icd10cm",
    "ICD-10-CM": "icd10cm",
    "2.16.840.1.113883.6.90": "icd10cm",
    "SCT": "snomed",
    "SNM": "snomed",
    "SNOMED": "snomed",
    "SNOMEDCT": "snomed",
    "2.16.840.1.113883.6.96": "snomed",
}
ICD9 = frozenset({"I9", "I9C", "I9CDX", "ICD9", "ICD9CM", "ICD-9-CM"})
ServiceSystem = Literal["cpt", "hcpcs", "icd10pcs", "snomed"]
PX_SYSTEMS: dict[str, ServiceSystem] = {
    "C4": "cpt",
    "C5": "cpt",
    "CPT": "cpt",
    "CPT4": "cpt",
    "CPT-4": "cpt",
    "2.16.840.1.113883.6.12": "cpt",
    "HCPCS": "hcpcs",
    "HCPC": "hcpcs",
    "HPC": "hcpcs",
    "2.16.840.1.113883.6.285": "hcpcs",
    "I10P": "icd10pcs",
    "ICD10PCS": "icd10pcs",
    "ICD-10-PCS": "icd10pcs",
    "2.16.840.1.113883.6.4": "icd10pcs",
    "SCT": "snomed",
    "SNM": "snomed",
    "SNOMED": "snomed",
    "2.16.840.1.113883.6.96": "snomed",
}
# IN1-17 (table 0063). The field is "the insured's relationship to the patient", so a
# parent or guardian as insured makes the patient their child (X12 19). Feeds also send
# the patient's side (CHD: the patient is the insured's child); a health plan covers
# spouses and children, not parents, so both readings give 19. X12 codes pass through.
RELATIONSHIP_0063 = {
    "SEL": "18",
    "SPO": "01",
    "DOM": "53",
    "EME": "20",
    **dict.fromkeys(("PAR", "MTH", "FTH", "GRD", "CHD", "NCH", "SCH", "FCH", "DEP", "WRD"), "19"),
    "UNK": "21",
}
SEX = {"F": "F", "M": "M"}
# IN1-15 plan type (table 0086 is site-defined): words seen in the field -> X12 SBR09.
PLAN_WORDS = {
    "MEDICARE": "MB",
    "MEDICAID": "MC",
    "HMO": "HM",
    "PPO": "12",
    "POS": "13",
    "EPO": "14",
    "COMMERCIAL": "CI",
    "BCBS": "BL",
    "BLUE CROSS": "BL",
    "SELF": "09",
    "SELF PAY": "09",
    "TRICARE": "CH",
    "CHAMPUS": "CH",
    "VA": "VA",
    "WORKERS COMP": "WC",
}
NPI_OID = "2.16.840.1.113883.4.6"
_CPT_SHAPE = re.compile(r"^[0-9]{4}[0-9FTU]$")
_HCPCS_SHAPE = re.compile(r"^[A-V][0-9]{4}$")
_SEGMENT_ID = re.compile(r"^[A-Z][A-Z0-9]{2}$")


class Hl7Parse(NamedTuple):
    """What one HL7 v2 body yields: its encounters, skipped segment counts, fallback notes."""

    encounters: list[Encounter]
    ignored: dict[str, int]
    notes: list[str]


# --- ER7 access --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Enc:
    """A message's encoding characters (MSH-1, MSH-2)."""

    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"


def _unescape(value: str, enc: _Enc) -> str:
    """Resolve ER7 escape sequences (\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh\\ \\.br\\)."""
    if enc.escape not in value:
        return value
    esc = re.escape(enc.escape)
    pattern = re.compile(f"{esc}(F|S|T|R|E|H|N|X[0-9A-Fa-f]*|\\.br|[^{esc}]*){esc}")

    def one(m: re.Match[str]) -> str:
        code = m.group(1)
        simple = {
            "F": "|",
            "S": enc.component,
            "T": enc.subcomponent,
            "R": enc.repetition,
            "E": enc.escape,
            ".br": "\n",
            "H": "",
            "N": "",
        }
        if code in simple:
            return simple[code]
        if code.startswith("X") and len(code) % 2 == 1:
            try:
                return bytes.fromhex(code[1:]).decode("utf-8", "replace")
            except ValueError:
                return ""
        return ""  # unknown or locally defined sequences carry no billing data

    return pattern.sub(one, value)


class _Seg:
    """One parsed segment: fields by position (1-based), each a list of repetitions (ER7)."""

    def __init__(self, name: str, label: str, fields: dict[int, list[str]], enc: _Enc) -> None:
        self.name, self.label, self.fields, self.enc = name, label, fields, enc

    def path(self, n: int, comp: int | None = None) -> str:
        """The HL7 location of a field (``PID-11`` or ``PID-11.5``)."""
        return f"{self.label}-{n}" + (f".{comp}" if comp else "")

    def reps(self, n: int) -> list[str]:
        """Every repetition of field n (raw ER7), empty ones dropped."""
        return [r for r in self.fields.get(n, []) if r.strip()]

    def comps(self, n: int, rep: str | None = None) -> list[str]:
        """Components of one repetition (the first when rep is None), unescaped, stripped."""
        if rep is None:
            reps = self.reps(n)
            rep = reps[0] if reps else ""
        return [_unescape(c, self.enc).strip() for c in rep.split(self.enc.component)]

    def get(self, n: int, comp: int = 1, sub: int = 1, rep: str | None = None) -> str:
        """One component (or subcomponent) of a field, unescaped; empty when absent."""
        if rep is None:
            reps = self.reps(n)
            rep = reps[0] if reps else ""
        parts = rep.split(self.enc.component)
        if comp > len(parts):
            return ""
        subs = parts[comp - 1].split(self.enc.subcomponent)
        if sub > len(subs):
            return ""
        return _unescape(subs[sub - 1], self.enc).strip()


def _split_segments(text: str) -> list[str]:
    """Segments of an ER7 body, whatever the line endings (CR, LF, CRLF)."""
    return [s for s in re.split(r"\r\n|\r|\n", text) if s.strip()]


@dataclass
class _Message:
    """One HL7 message: its parsed segments, type and header values."""

    index: int
    segs: list[_Seg]
    msg_type: tuple[str, str]
    control_id: str
    version: str
    enc: _Enc

    def all(self, name: str) -> list[_Seg]:
        """Segments of one type, in message order."""
        return [s for s in self.segs if s.name == name]

    def one(self, name: str) -> _Seg | None:
        """The first segment of one type."""
        return next((s for s in self.segs if s.name == name), None)

    @property
    def msh(self) -> _Seg:
        """The header segment."""
        return self.segs[0]


def _group_messages(segments: list[str], ctx: _Ctx) -> list[list[str]]:
    """Segments grouped into messages at each MSH; batch envelopes are dropped."""
    messages: list[list[str]] = []
    for seg in segments:
        name = seg[:3]
        if name in BATCH_ENVELOPE:
            continue
        if name == "MSH":
            messages.append([seg])
        elif messages:
            messages[-1].append(seg)
        else:
            raise InputError("MSH", f"the body starts with {_seg_name(seg)!r}, not an MSH segment")
    if not messages:
        raise InputError("MSH", "no MSH segment: not an HL7 v2 message")
    return messages


@dataclass(frozen=True)
class MessageHead:
    """What the hospital account needs of a message before it is parsed: its ER7 text, type,
    visit, patient class and whether it says the patient left (ADT^A03, or PV1-45 sent)."""

    text: str
    msg_type: tuple[str, str]
    visit: str | None
    patient_class: str
    discharged: bool


def peek_messages(text: str) -> list[MessageHead]:
    """The messages of an ER7 body or batch, read only as far as MSH-9 and PV1 (2, 19, 45)."""
    heads = []
    for lines in _group_messages(_split_segments(text.lstrip("\ufeff")), _Ctx()):
        msh = lines[0]
        sep = msh[3:4] or "|"
        fields = msh.split(sep)
        comp = fields[1][:1] if len(fields) > 1 and fields[1] else "^"
        kind = (fields[8] if len(fields) > 8 else "").split(comp)
        msg_type = (kind[0].upper(), kind[1].upper() if len(kind) > 1 else "")
        pv1 = next((ln.split(sep) for ln in lines if ln[:3] == "PV1"), [])
        number = _component(pv1, 19, 1, comp)
        heads.append(
            MessageHead(
                text="\r".join(lines),
                msg_type=msg_type,
                visit=f"{_component(pv1, 19, 4, comp)}|{number}" if number else None,
                patient_class=_component(pv1, 2, 1, comp).upper(),
                discharged=msg_type == ("ADT", "A03") or bool(_component(pv1, 45, 1, comp)),
            )
        )
    return heads


def _component(fields: list[str], n: int, c: int, comp: str) -> str:
    """Component c of field n of a split segment, unescaped only of surrounding space."""
    parts = fields[n].split(comp) if len(fields) > n else []
    return parts[c - 1].strip() if len(parts) >= c else ""


def _seg_name(seg: str) -> str:
    """A segment id for messages (only letters and digits; never field content)."""
    name = seg[:3]
    return name if _SEGMENT_ID.match(name) else "?"


# hl7apy finds the module of a version's definitions (``load_library``) through
# importlib.import_module for every element and datatype it checks: ~1,650 trips through
# the import machinery a message of bench intake_stage's HL7 part (an account's messages
# are read more than once). An imported module is the same object for good, so it is kept
# by version; a version hl7apy refuses raises as before and is not kept
# (tests/unit/test_hl7v2.py holds that the kept module is hl7apy's). Parsing 60 HL7
# messages of every kind of visit went from 2,146 to 2,048 us a message (-4.6%, interleaved
# pairs); bench intake_stage's HL7 part (40 messages, second run) from 776.5M to 729.4M
# instructions (-6.1%, callgrind).
_LIBRARIES: dict[str, Any] = {}
_hl7apy_load_library = hl7apy.load_library


def _load_library(version: str) -> Any:
    """``hl7apy.load_library``, the module kept by version."""
    lib = _LIBRARIES.get(version)
    if lib is None:
        lib = _LIBRARIES[version] = _hl7apy_load_library(version)
    return lib


if getattr(hl7apy.load_library, "__name__", "") == "load_library":  # once per process
    for _module in (hl7apy, hl7apy.core, hl7apy.factories):
        _module.load_library = _load_library  # type: ignore[attr-defined]

# What hl7apy made of a field it has parsed before (memo.py): (version, encoding characters,
# segment, field index, field text) -> the ER7 of each repetition it kept. hl7apy builds an
# object per component (~1 ms for a message's fields), and most field values repeat in a
# feed (facility, coding systems, codes, payers, clinicians); a known field is blanked
# before hl7apy parses the message and its result taken from here.
_FIELDS: Memo[tuple[str, ...]] = Memo(32768)

Fields = dict[int, list[str]]


def _parse_message(lines: list[str], index: int, prefix: str, ctx: _Ctx) -> _Message:
    """Parse one message's segments with hl7apy; only the segments intake reads."""
    header = lines[0]
    if len(header) < 8 or header[3] in "\r\n":
        raise InputError(f"{prefix}MSH-2", "encoding characters missing")
    field_sep = header[3]
    keep = [header]
    version = (header.split(field_sep)[11:12] or [""])[0][:5]
    for line in lines[1:]:
        name = line[:3]
        if name in READ:
            wanted = READ[name]
            parts = line.split(field_sep)
            if name == "PR1" and version >= "2.7":
                wanted = wanted - {11}  # PR1-11 surgeon: withdrawn in 2.7 (a ROL segment)
                if len(parts) > 11 and parts[11].strip():
                    ctx.note("PR1-11 surgeon is withdrawn as of HL7 2.7 (send a ROL after "
                             "the PR1): ignored")  # fmt: skip
            keep.append(
                field_sep.join(f if i == 0 or i in wanted else "" for i, f in enumerate(parts))
            )
        else:
            key = name if _SEGMENT_ID.match(name) else "(not a segment)"
            ctx.ignored[key] += 1
    head = header.split(field_sep)
    if len(head) < 12 or not head[11].strip():
        raise InputError(f"{prefix}MSH-12", "version missing")
    if len(head) < 10 or not head[9].strip():
        raise InputError(f"{prefix}MSH-10", "message control id missing")
    try:
        parsed = _parse_memo(keep)
    except Exception:  # noqa: BLE001 - the plain parse below says what is wrong
        parsed = None
    if parsed is None:
        parsed = _parse_hl7apy(keep, prefix)
    chars, segments = parsed
    enc = _Enc(chars["COMPONENT"], chars["REPETITION"], chars["ESCAPE"], chars["SUBCOMPONENT"])
    counts: dict[str, int] = {}
    segs: list[_Seg] = []
    for name, fields in segments:
        counts[name] = counts.get(name, 0) + 1
        repeating = name in REPEATING
        label = f"{prefix}{name}[{counts[name]}]" if repeating else f"{prefix}{name}"
        segs.append(_Seg(name, label, fields, enc))
    msh = segs[0]
    kind = (msh.get(9, 1).upper(), msh.get(9, 2).upper())
    if kind not in MESSAGE_TYPES:
        shown = "^".join(k for k in kind if re.fullmatch(r"[A-Z0-9]{1,3}", k)) or "none"
        raise InputError(
            msh.path(9), f"message type {shown} is not read by intake (ADT^A01, ADT^A03, DFT^P03)"
        )
    return _Message(index, segs, kind, msh.get(10), msh.get(12), enc)


def _parse_hl7apy(
    keep: list[str], prefix: str, positions: list[set[int]] | None = None
) -> tuple[dict[str, str], list[tuple[str, Fields]]]:
    """hl7apy's parse of the kept segments: encoding characters, and per segment its name
    and the ER7 of each field repetition by position (fields the version does not define
    are dropped). ``positions``, when given, says which fields each segment's caller wants
    (the others were blanked); errors are InputErrors naming the message or field."""
    try:
        msg = parse_message(
            "\r".join(keep), find_groups=False, validation_level=VALIDATION_LEVEL.TOLERANT
        )
    except UnsupportedVersion:
        raise InputError(f"{prefix}MSH-12", "HL7 version not supported (2.1 to 2.8.2)") from None
    except HL7apyException as exc:
        raise InputError(
            f"{prefix}MSH", f"not a valid HL7 v2 message: {_hl7_reason(exc)}"
        ) from None
    except (ValueError, TypeError, LookupError, AttributeError) as exc:
        raise InputError(
            f"{prefix}MSH", f"not a valid HL7 v2 message ({type(exc).__name__})"
        ) from None
    return msg.encoding_chars, _segment_fields(msg.children, prefix)


def _segment_fields(
    children: Any, prefix: str, chars: dict[str, str] | None = None
) -> list[tuple[str, Fields]]:
    """Per parsed segment, its name and the ER7 of each field repetition by position (with
    ``chars``, the message's encoding characters, for segments parsed without a message)."""
    counts: dict[str, int] = {}
    segments: list[tuple[str, Fields]] = []
    for seg in children:
        name = str(seg.name)
        counts[name] = counts.get(name, 0) + 1
        repeating = name in REPEATING
        label = f"{prefix}{name}[{counts[name]}]" if repeating else f"{prefix}{name}"
        fields: Fields = {}
        for child in seg.children:
            if child.name is None:
                continue  # beyond what the message's version defines
            position = int(str(child.name).rsplit("_", 1)[1])
            try:
                fields.setdefault(position, []).append(child.to_er7(encoding_chars=chars))
            except (HL7apyException, ValueError, TypeError, AttributeError):
                raise InputError(f"{label}-{position}", "cannot be read as ER7") from None
        segments.append((name, fields))
    return segments


# Messages hl7apy has parsed whole (its Message built) by what it checks of one beyond its
# fields: the message structure, version and encoding characters (the header's MSH-2, 9,
# 12) and the segment ids in order. Building the Message (which starts with a header of its
# own, timestamped, then replaced by the parsed one) was a third of hl7apy's work on a
# message whose fields the memo knows; for a skeleton it accepted before, the segments are
# parsed as hl7apy's parse_message parses them (``parse_segments``, no groups) and their
# fields written with the encoding characters that message had.
_SKELETONS: Memo[bool] = Memo(4096)


# The header fields hl7apy reads the message by (MSH-1 and MSH-2: the encoding characters;
# MSH-9: the message structure; MSH-12: the version): always sent to it as they are.
_MSH_STEERING = frozenset({1, 2, 9, 12})


def _parse_memo(keep: list[str]) -> tuple[dict[str, str], list[tuple[str, Fields]]] | None:
    """``_parse_hl7apy(keep)`` with the fields hl7apy has already parsed taken from _FIELDS;
    None when the message is not one this can do (the plain parse then decides).

    A segment goes to hl7apy as hl7apy splits it (``parse_segment``: the stripped line,
    its name, then fields from the fifth character, the header's from the fourth), with
    known fields blanked: hl7apy still checks the header, the version and every segment
    id, and parses every field it has not seen in this version with these encoding
    characters. The header's sending and receiving application and facility, and its
    processing id, repeat from message to message like the other segments' fields (a third
    of hl7apy's work on a message was its header); the fields it reads the message by
    (_MSH_STEERING) are always sent.
    """
    chars, structure, version = get_message_info(keep[0])
    field_sep = chars["FIELD"]
    context = (version, tuple(sorted(chars.items())))
    sent: list[str] = []
    known: list[dict[int, tuple[str, ...]]] = []
    wanted: list[dict[int, str]] = []
    for n, line in enumerate(keep):
        text = line.strip() if n else line
        header = n == 0
        if header != (text[:3] == "MSH") or len(text) < 4:
            return None
        start = 3 if header else 4  # where hl7apy starts splitting (MSH-1 is the separator)
        values = text[start:].split(field_sep)
        hits: dict[int, tuple[str, ...]] = {}
        misses: dict[int, str] = {}
        for i, value in enumerate(values):
            if not value.strip() or (header and i + 1 in _MSH_STEERING):
                continue
            found = _FIELDS.get((context, text[:3], i, value))
            if found is None:
                misses[i] = value
            else:
                hits[i] = found
                values[i] = ""
        known.append(hits)
        wanted.append(misses)
        sent.append(text[:start] + field_sep.join(values))
    skeleton = (context, structure, tuple(line[:3] for line in sent))
    if _SKELETONS.get(skeleton):
        text = "\r".join(sent).lstrip()  # as parse_message reads it
        parsed = parse_segments(text, version, chars, VALIDATION_LEVEL.TOLERANT, None, False)
        parsed_chars, segments = chars, _segment_fields(parsed, "", chars)
    else:
        parsed_chars, segments = _parse_hl7apy(sent, "")
    if len(segments) != len(sent) or parsed_chars != chars:
        return None
    _SKELETONS.put(skeleton, True)
    result = []
    for n, (line, (name, fields), hits, misses) in enumerate(
        zip(sent, segments, known, wanted, strict=True)
    ):
        steering = _MSH_STEERING if n == 0 else frozenset()
        if name != line[:3] or set(fields) - {i + 1 for i in misses} - steering:
            return None  # not how hl7apy split it, after all
        for i, value in misses.items():
            _FIELDS.put((context, name, i, value), tuple(fields.get(i + 1, ())))
        for i, reps in hits.items():
            if reps:
                fields[i + 1] = list(reps)
        result.append((name, dict(sorted(fields.items()))))
    return parsed_chars, result


def _hl7_reason(exc: HL7apyException) -> str:
    """hl7apy's reason, without echoing message content."""
    text = str(exc)
    if "Invalid name for Segment" in text:
        return "a segment id is not valid"
    return text.split(":", 1)[0][:120] if len(text) > 120 else text


# --- field readers -----------------------------------------------------------------------


def _date(seg: _Seg, n: int, what: str, *, required: bool, comp: int = 1) -> date | None:
    """A calendar date from a TS/DTM/DT field (the first 8 digits, as written)."""
    raw = seg.get(n, comp)
    if not raw:
        if required:
            raise InputError(seg.path(n), f"{what} missing")
        return None
    digits = raw[:8]
    if not re.fullmatch(r"[0-9]{8}", digits):
        raise InputError(seg.path(n), f"{what} needs a full date (YYYYMMDD)")
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        raise InputError(seg.path(n), f"{what} is not a calendar date") from None


def _time(seg: _Seg, n: int, what: str) -> time | None:
    """The hour and minute of a DTM field that has them (YYYYMMDDHHMM...), as written."""
    digits = seg.get(n, 1)[8:12]
    if len(digits) < 4:
        return None
    if not digits.isdigit() or int(digits[:2]) > 23 or int(digits[2:]) > 59:
        raise InputError(seg.path(n), f"{what} is not an hour and minute (HHMM)")
    return time(int(digits[:2]), int(digits[2:]))


def _number(seg: _Seg, n: int, comp: int = 1, sub: int = 1) -> Decimal | None:
    """A decimal from an NM (sub)component; InputError when it is not a number."""
    raw = seg.get(n, comp, sub)
    if not raw:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise InputError(seg.path(n), "not a number") from None
    if not value.is_finite():
        raise InputError(seg.path(n), "not a finite number")
    return value


def _hd_ids(seg: _Seg, n: int, comp: int | None = None) -> tuple[str, str, str]:
    """(namespace, universal id, universal id type) of an HD field or component."""
    if comp is None:
        return seg.get(n, 1), seg.get(n, 2), seg.get(n, 3).upper()
    return seg.get(n, comp, 1), seg.get(n, comp, 2), seg.get(n, comp, 3).upper()


def _npi_of(value: str, ctx: _Ctx) -> str | None:
    """A 10-digit NPI; shorter numbers are left-padded (as for FHIR) and noted."""
    digits = value.strip()
    if re.fullmatch(r"[0-9]{10}", digits):
        return digits
    if re.fullmatch(r"[0-9]{1,9}", digits):
        ctx.note("an NPI has fewer than 10 digits; left-padded with zeros")
        return digits.zfill(10)
    return None


def _xcn_npi(seg: _Seg, n: int, ctx: _Ctx) -> tuple[str, str | None] | None:
    """(NPI, "Family, Given") of the first XCN repetition identified by an NPI."""
    for rep in seg.reps(n):
        ident = seg.get(n, 1, rep=rep)
        authority = {seg.get(n, 9, 1, rep=rep).upper(), seg.get(n, 9, 2, rep=rep)}
        typed = seg.get(n, 13, rep=rep).upper() == "NPI" or "NPI" in authority
        if not (typed or NPI_OID in authority):
            continue
        npi = _npi_of(ident, ctx)
        if npi is None:
            ctx.note(f"{seg.path(n)} names an NPI that is not a number; ignored")
            continue
        family, given = seg.get(n, 2, 1, rep=rep), seg.get(n, 3, rep=rep)
        name = ", ".join(p for p in (family, given) if p) or None
        return npi, name
    if seg.reps(n):
        ctx.note(f"{seg.path(n)} carries no NPI (XCN-13 type NPI)")
    return None


# --- segments -> contract ----------------------------------------------------------------


def _address(seg: _Seg, n: int, rep: str | None) -> Address:
    """A US postal address from an XAD repetition; InputError names the component."""
    country = seg.get(n, 6, rep=rep).upper() or "US"
    if country not in {"US", "USA", "UNITED STATES"}:
        raise InputError(seg.path(n, 6), "only US addresses are supported")
    line1 = seg.get(n, 1, 1, rep=rep)
    if not line1:
        raise InputError(seg.path(n, 1), "street missing")
    city = seg.get(n, 3, rep=rep)
    if not city:
        raise InputError(seg.path(n, 3), "city missing")
    state = _state(seg.get(n, 4, rep=rep))
    if state is None:
        raise InputError(seg.path(n, 4), "not a US state code or name")
    postal = re.sub(r"[\s-]", "", seg.get(n, 5, rep=rep))
    if not re.fullmatch(r"[0-9]{5}([0-9]{4})?", postal):
        raise InputError(seg.path(n, 5), "not a 5- or 9-digit ZIP code")
    return Address(
        line1=line1, line2=seg.get(n, 2, rep=rep) or None, city=city, state=state,
        postal_code=postal,
    )  # fmt: skip


def _pick(seg: _Seg, n: int, type_comp: int, preferred: tuple[str, ...]) -> str | None:
    """The repetition whose type component is preferred (in order), else the first."""
    reps = seg.reps(n)
    for wanted in preferred:
        for rep in reps:
            if seg.get(n, type_comp, rep=rep).upper() == wanted:
                return rep
    return reps[0] if reps else None


def _name(seg: _Seg, n: int, what: str, required: bool) -> tuple[str, str] | None:
    """(family, given) from an XPN field, preferring the legal name (XPN-7 L)."""
    rep = _pick(seg, n, 7, ("L",))
    family = seg.get(n, 1, 1, rep=rep) if rep else ""
    given = seg.get(n, 2, rep=rep) if rep else ""
    if family and given:
        return family, given
    if required:
        missing = "family name" if not family else "given name"
        raise InputError(seg.path(n, 1 if not family else 2), f"{what} {missing} missing")
    return None


def _patient(pid: _Seg) -> Patient:
    """Minimum necessary patient data from PID: MRN, name, birth date, sex, home address."""
    mrn_rep = _pick(pid, 3, 5, ("MR", "PI", "PT"))
    patient_id = pid.get(3, 1, rep=mrn_rep) if mrn_rep else ""
    if not patient_id:
        patient_id = pid.get(2, 1)  # the external id of 2.3-era feeds
    if not patient_id:
        raise InputError(pid.path(3), "patient identifier (MRN) missing")
    family, given = _name(pid, 5, "patient", required=True) or ("", "")
    birth = _date(pid, 7, "birth date", required=True)
    addr_rep = _pick(pid, 11, 7, ("H", "M", "P"))
    if addr_rep is None:
        raise InputError(pid.path(11), "patient address missing")
    return _build(
        Patient,
        pid.label,
        patient_id=patient_id,
        last_name=family,
        first_name=given,
        birth_date=birth,
        sex=SEX.get(pid.get(8).upper(), "U"),
        address=_address(pid, 11, addr_rep),
    )


def _relationship(in1: _Seg, patient: Patient, ctx: _Ctx) -> str:
    """IN1-17 as the X12 code of the patient's relationship to the insured."""
    raw = in1.get(17, 1).upper()
    if not raw:
        insured = _name(in1, 16, "insured", required=False)
        if insured is None or insured == (patient.last_name, patient.first_name):
            return SELF
        ctx.note("IN1-17 missing and the insured is someone else: relationship 21 (unknown)")
        return "21"
    if raw in X12_RELATIONSHIPS:
        return raw
    if raw in RELATIONSHIP_0063:
        return RELATIONSHIP_0063[raw]
    ctx.note("IN1-17 relationship code not understood: G8 (other relationship)")
    return "G8"


def _insured(in1: _Seg, ctx: _Ctx) -> Subscriber | None:
    """The policy holder from IN1-16/18/19/43; None (noted) when the name is incomplete."""
    name = _name(in1, 16, "insured", required=False)
    if name is None:
        ctx.note(f"{in1.path(16)}: dependent coverage without the insured's full name: no "
                 "subscriber, validation will refuse the claim")  # fmt: skip
        return None
    address = None
    rep = _pick(in1, 19, 7, ("H", "M"))
    if rep is not None:
        try:
            address = _address(in1, 19, rep)
        except InputError as exc:
            ctx.note(f"subscriber address dropped: {exc.field}: {exc.reason}")
    birth = None
    try:
        birth = _date(in1, 18, "insured's birth date", required=False)
    except InputError as exc:
        ctx.note(f"subscriber birth date dropped: {exc.field}: {exc.reason}")
    return _build(
        Subscriber,
        in1.path(16),
        last_name=name[0],
        first_name=name[1],
        birth_date=birth,
        sex=SEX.get(in1.get(43).upper(), "U"),
        address=address,
    )


def _plan(in1: _Seg, payer_name: str, ctx: _Ctx) -> str:
    """IN1-15 plan type as an X12 claim filing indicator, else from the payer's name."""
    raw = in1.get(15, 1).upper()
    if raw in X12_FILING_CODES:
        return raw
    for word, code in PLAN_WORDS.items():
        if raw == word or (len(word) > 3 and word in raw):
            return code
    if raw:
        ctx.note("IN1-15 plan type not an X12 claim filing indicator: inferred from the payer")
    return _plan_type(None, payer_name, ctx)


def _coverages(msgs: list[_Message], patient: Patient, ctx: _Ctx) -> list[Coverage]:
    """The insurances in coordination-of-benefits order: IN1 by set id (IN1-1) across the
    visit, primary first. A repeated IN1 (same payer and policy, e.g. resent by an A08) is
    kept once; self-pay counts only when it is the only insurance."""
    in1s = [s for m in msgs for s in m.all("IN1")]
    if not in1s:
        return [_self_pay(patient.patient_id, ctx, "no IN1 segment")]

    def order(s: _Seg) -> int:
        raw = s.get(1)
        return int(raw) if raw.isdigit() else 10**6

    return _distinct([_insurance(in1, patient, ctx) for in1 in sorted(in1s, key=order)])


def _insurance(in1: _Seg, patient: Patient, ctx: _Ctx) -> Coverage:
    """One IN1 as a coverage."""
    name = in1.get(4, 1) or in1.get(2, 2)
    if not name:
        raise InputError(in1.path(4), "insurance company name missing")
    if _is_self_pay(name) or in1.get(15, 1).upper() in ("SELF", "SELF PAY", "09"):
        return _self_pay(patient.patient_id, ctx, "IN1 names self-pay")
    payer_id = in1.get(3, 1) or in1.get(2, 1)
    if not payer_id:
        ctx.note("IN1-3 insurance company id missing: payer_id derived from its name")
        payer_id = _slug(name)
    member_id = in1.get(36) or in1.get(49, 1)
    if not member_id:
        ctx.note("IN1-36 policy number missing: member_id UNKNOWN")
        member_id = UNKNOWN_MEMBER_ID
    relationship = _relationship(in1, patient, ctx)
    subscriber = None if relationship == SELF else _insured(in1, ctx)
    return _build(
        Coverage,
        in1.label,
        payer_id=payer_id,
        payer_name=name,
        plan_type=_plan(in1, name, ctx),
        member_id=member_id,
        group_number=in1.get(8) or None,
        relationship=relationship,
        subscriber=subscriber,
    )


def _dx_system(seg: _Seg, n: int, method: str) -> str | None:
    """The code system of a CE/CWE (component 3, else a coding method field); None when
    neither names one. A named system intake does not know is refused."""
    label = seg.get(n, 3).upper() or method.upper()
    if not label:
        return None
    if label in DX_SYSTEMS:
        return DX_SYSTEMS[label]
    if label in ICD9:
        return "icd9"
    raise InputError(seg.path(n, 3), "coding system not understood (I10, SCT …)")


def _diagnoses(msgs: list[_Message], ctx: _Ctx) -> list[DocumentedDiagnosis]:
    """DG1 segments, by priority (DG1-15, 1 is principal) then order; repeats merged."""
    rows: list[tuple[int, int, DocumentedDiagnosis]] = []
    seen: set[tuple[str, str]] = set()
    for m in msgs:
        for dg1 in m.all("DG1"):
            if dg1.get(21).upper() == "D":  # diagnosis action code: delete
                continue
            code = dg1.get(3, 1)
            text = dg1.get(3, 2) or dg1.get(4) or None
            system = _dx_system(dg1, 3, dg1.get(2))
            if system == "icd9":
                ctx.ignored["DG1 (ICD-9)"] += 1
                ctx.note("ICD-9 diagnoses are not billable since October 2015: skipped")
                continue
            if not code:
                if not text:
                    raise InputError(dg1.path(3), "diagnosis code and description missing")
                system = "text"
            elif system is None:
                if re.fullmatch(r"[A-TV-Z][0-9][0-9A-Z](\.?[0-9A-Z]{1,4})?", code):
                    ctx.note("DG1-3 without a coding system: ICD-10-CM assumed from its shape")
                    system = "icd10cm"
                else:
                    raise InputError(dg1.path(3, 3), "coding system missing")
            key = (system, code or (text or ""))
            if key in seen:
                continue
            seen.add(key)
            raw_priority = dg1.get(15)
            priority = int(raw_priority) if raw_priority.isdigit() else 10**6
            poa = dg1.get(26).upper() or None
            rows.append(
                (
                    priority if priority > 0 else 10**6,
                    len(rows),
                    DocumentedDiagnosis(
                        code=code,
                        system=system,  # type: ignore[arg-type]
                        display=text,
                        poa=poa if poa in ("Y", "N", "U", "W", "1") else None,
                    ),
                )
            )
    rows.sort(key=lambda r: (r[0], r[1]))
    return [d.model_copy(update={"primary": i == 0}) for i, (_, _, d) in enumerate(rows)]


def _px_code(seg: _Seg, n: int, rep: str | None, method: str = "") -> tuple[str, ServiceSystem]:
    """(code, system) of a procedure CE/CNE; CPT vs HCPCS by the code's shape."""
    code = seg.get(n, 1, rep=rep)
    if not code:
        raise InputError(seg.path(n), "procedure code missing")
    label = seg.get(n, 3, rep=rep).upper() or method.upper()
    system = PX_SYSTEMS.get(label)
    if system is None:
        if _CPT_SHAPE.match(code):
            system = "cpt"
        elif _HCPCS_SHAPE.match(code):
            system = "hcpcs"
        else:
            raise InputError(seg.path(n, 3), "coding system missing or not understood")
    if system in ("cpt", "hcpcs"):
        # HCPCS level I is CPT: classify by the code's shape, not the label.
        system = "cpt" if _CPT_SHAPE.match(code) else "hcpcs"
    return code, system


def _billing_code(seg: _Seg, n: int) -> bool:
    """Whether a CE names a CPT/HCPCS/ICD-10-PCS/SNOMED code (FT1-7 may instead be the
    hospital's own chargemaster item, which is not a billing code)."""
    code = seg.get(n, 1)
    label = seg.get(n, 3).upper()
    if label:
        return label in PX_SYSTEMS
    return bool(_CPT_SHAPE.match(code) or _HCPCS_SHAPE.match(code))


def _units(seg: _Seg, n: int, credit: bool = False) -> float:
    """FT1-10 quantity: positive and finite, default 1 (a credit's may be sent negative)."""
    value = _number(seg, n)
    if value is None:
        return 1.0
    if credit:
        value = abs(value)
    if not (0 < value <= Decimal(str(MAX_UNITS))):
        raise InputError(seg.path(n), f"must be a positive number up to {MAX_UNITS:g}")
    return float(value)


def _charge_item(ft1: _Seg, ctx: _Ctx, setting: str) -> ChargeItem | None:
    """The chargemaster item of FT1-7 when it is a charge code (no procedure coding system).

    FT1-7 is the transaction code: the hospital's chargemaster number. It is read as a
    CPT/HCPCS code only when its coding system says so (C4, HCPCS …), never because of its
    shape; a charge code the chargemaster does not know is refused, not guessed.
    """
    code = ft1.get(7, 1)
    if not code or ft1.get(7, 3).upper() in PX_SYSTEMS:
        return None
    cdm = ctx.chargemaster
    item = cdm.by_charge_code(code, setting) if cdm is not None else None
    if item is not None:
        return item
    shown = code if re.fullmatch(r"[A-Za-z0-9.\-]{1,20}", code) else "?"
    if cdm is not None:
        raise InputError(
            ft1.path(7), f"charge code {shown} is not in the chargemaster ({cdm.source})"
        )
    if not ft1.reps(25):
        raise InputError(
            ft1.path(7),
            f"charge code {shown} cannot be billed: no chargemaster is configured "
            "(CLAIMFLOW_CHARGEMASTER) and FT1-25 sends no procedure code",
        )
    ctx.note("FT1-7 charge code not in any chargemaster (none configured): FT1-25 billed")
    return None


def _ft1_amount(ft1: _Seg, units: float, item: ChargeItem | None, ctx: _Ctx) -> Decimal:
    """FT1-11 extended amount, else FT1-12 unit price x units, else the chargemaster price."""
    amount = _number(ft1, 11, 1, 1)
    if amount is None:
        unit_price = _number(ft1, 12, 1, 1)
        if unit_price is None and item is not None and item.gross_charge is not None:
            ctx.note("FT1 without an amount: priced from the chargemaster's gross charge")
            unit_price = item.gross_charge
        if unit_price is not None:
            try:
                amount = unit_price * Decimal(str(units))
            except ArithmeticError:
                raise InputError(ft1.path(12), "charge out of range") from None
    if amount is None:
        ctx.note("FT1 without an amount (FT1-11, FT1-12): charge 0.00")
        amount = Decimal(0)
    return amount


# What names a charge for the credits that reverse it: its chargemaster charge code, its
# procedure code, its revenue code and its modifiers.
_ChargeKey = tuple[str | None, str | None, str | None, tuple[str, ...]]


def _charges(
    msgs: list[_Message], ctx: _Ctx, setting: str, professional: frozenset[int] = frozenset()
) -> tuple[list[DocumentedService], list[str]]:
    """FT1 charges (CG or empty) as service lines, credits (CD) netted; also their dx codes.
    The charges of the messages in ``professional`` (by ``id``) are a physician group's:
    professional lines (``claim_type``) of a facility encounter."""
    lines: list[DocumentedService] = []
    keys: list[_ChargeKey] = []
    credits: list[tuple[_Seg, _ChargeKey, float, Decimal, date | None]] = []
    dx_codes: list[str] = []
    for m in msgs:
        claim_type = "professional" if id(m) in professional else None
        for ft1 in m.all("FT1"):
            kind = ft1.get(6, 1).upper()
            if kind not in ("", "CG", "CD"):
                ctx.ignored[f"FT1 ({kind if kind in ('PY', 'AJ') else 'not a charge'})"] += 1
                continue
            item = _charge_item(ft1, ctx, setting)
            code: str | None
            system: ServiceSystem | None
            if ft1.reps(25):
                code, system = _px_code(ft1, 25, None)
            elif item is not None:
                code, system = None, None
                if item.hcpcs is not None:
                    code = item.hcpcs[0]
                    system = "cpt" if _CPT_SHAPE.match(code) else "hcpcs"
            elif ft1.reps(7) and (_billing_code(ft1, 7) or not ft1.get(41, 1)):
                code, system = _px_code(ft1, 7, None)
            elif ft1.get(41, 1):
                code, system = None, None  # a facility charge billed by its revenue code alone
            else:
                raise InputError(ft1.path(25), "procedure code missing (FT1-25, else FT1-7)")
            revenue: str | None = ft1.get(41, 1)
            if revenue and not re.fullmatch(r"[0-9]{3,4}", revenue):
                raise InputError(ft1.path(41), "revenue code must be 3 or 4 digits")
            revenue = revenue.zfill(4) if revenue else (item.revenue_code if item else None)
            if code is None and (setting == "professional" or revenue is None):
                raise InputError(
                    ft1.path(7),
                    "the chargemaster item has no CPT/HCPCS code"
                    + (" (a professional claim needs one)" if revenue else " nor revenue code"),
                )
            units = _units(ft1, 10, credit=kind == "CD")
            amount = _ft1_amount(ft1, units, item, ctx)
            charge = check_charge(abs(amount) if kind == "CD" else amount, ft1.path(11))
            modifiers = [ft1.get(26, 1, rep=r) for r in ft1.reps(26) if ft1.get(26, 1, rep=r)]
            served = _date(ft1, 4, "transaction date", required=False)
            key: _ChargeKey = (item.charge_code if item else None, code, revenue, tuple(modifiers))
            if kind == "CD":
                credits.append((ft1, key, units, charge, served))
                continue
            refs = []
            for rep in ft1.reps(19):
                dx = ft1.get(19, 1, rep=rep)
                if dx and dx not in refs:
                    refs.append(dx)
            for dx in refs:
                if dx not in dx_codes:
                    dx_codes.append(dx)
            keys.append(key)
            lines.append(
                _build(
                    DocumentedService,
                    ft1.label,
                    code=code,
                    system=system,
                    display=ft1.get(25, 2) or ft1.get(8) or (item.description if item else None),
                    modifiers=modifiers,
                    units=units,
                    charge=charge,
                    service_date=served,
                    dx_refs=refs,
                    revenue_code=revenue,
                    claim_type=claim_type,
                )
            )
    for ft1, key, units, amount, served in credits:
        _net_credit(lines, keys, ft1, key, units, amount, served)
        ctx.note("FT1 credit (CD) netted against its charge")
    kept = [line for line in lines if line.units > 0]
    return kept, dx_codes


def _reverses(charge: _ChargeKey, credit: _ChargeKey) -> bool:
    """Whether a credit names this charge: same charge code (else procedure code), same
    modifiers, and the same revenue code when the credit sends one."""
    c_item, c_code, c_rev, c_mods = charge
    item, code, rev, mods = credit
    same = c_item == item if item is not None else (code is not None and c_code == code)
    return same and c_mods == mods and (rev is None or rev == c_rev)


def _net_credit(
    lines: list[DocumentedService],
    keys: list[_ChargeKey],
    ft1: _Seg,
    key: _ChargeKey,
    units: float,
    amount: Decimal,
    served: date | None,
) -> None:
    """Take a credit off the charge it reverses: same item, same date first, latest first.

    A credit of whole units at the charge's unit price reverses those units; another
    amount is a price credit and leaves the quantity; a line credited to zero is dropped.
    """
    same = [i for i, k in enumerate(keys) if _reverses(k, key)]
    same.sort(key=lambda i: (lines[i].service_date == served, i), reverse=True)
    for i in same:
        line = lines[i]
        if line.charge <= 0:
            continue
        take = min(amount, line.charge)
        rest = (line.charge - take).quantize(Decimal("0.01"))
        unit_price = line.charge / Decimal(str(line.units))
        if rest <= 0:
            rest_units = 0.0
        elif abs(take - unit_price * Decimal(str(units))) < Decimal("0.01") and units < line.units:
            rest_units = round(line.units - units, 6)
        else:
            rest_units = line.units
        lines[i] = line.model_copy(update={"units": rest_units, "charge": rest})
        amount -= take
        if amount <= 0:
            return
    raise InputError(ft1.path(6), "credit (CD) for more than the account was charged for this item")


def _procedures(
    msgs: list[_Message], billed: set[str], default_day: date, ctx: _Ctx
) -> list[DocumentedService]:
    """PR1 procedures that no FT1 billed, as unpriced lines (as FHIR Procedures are)."""
    out = []
    seen = set()
    for m in msgs:
        for pr1 in m.all("PR1"):
            code, system = _px_code(pr1, 3, None, pr1.get(2))
            when = _date(pr1, 5, "procedure date", required=False)
            if code in billed or (code, when) in seen:
                continue
            seen.add((code, when))
            ctx.note("service without a charge in the message: charge 0.00")
            out.append(
                _build(
                    DocumentedService,
                    pr1.label,
                    code=code,
                    system=system,
                    display=pr1.get(3, 2) or pr1.get(4) or None,
                    charge=Decimal(0),
                    service_date=when or default_day,
                )
            )
    return out


def _facility_id(msg: _Message) -> tuple[str, str | None]:
    """(facility id, facility NPI): PV1-3.4 (the visit's facility), else MSH-4."""
    pv1 = msg.one("PV1")
    ns = uid = kind = ""
    if pv1 is not None:
        ns, uid, kind = _hd_ids(pv1, 3, 4)
    if not (ns or uid):
        ns, uid, kind = _hd_ids(msg.msh, 4)
    npi = uid if kind == "NPI" and re.fullmatch(r"[0-9]{10}", uid) else None
    return ns or uid or msg.msh.get(3, 1), npi


def _person(
    found: tuple[str, str | None] | None, directory: ProviderDirectory, path: str
) -> Provider | None:
    """A practitioner: the directory's entry for the NPI, else NPI and name as sent."""
    if found is None:
        return None
    npi, name = found
    if npi in directory.providers:
        return directory.providers[npi]
    return _build(Provider, path, npi=npi, name=name or f"NPI {npi}", entity="person")


def _physician_group(
    msgs: list[_Message], head: _Message, directory: ProviderDirectory, setting: str
) -> tuple[frozenset[int], Provider | None]:
    """The DFT^P03s of a facility visit that a physician group sent (MSH-4 names a billing
    profile other than the visit's facility), by ``id``, and that group: a hospital-employed
    physician's professional charges, billed on an 837P by the group."""
    if setting == "professional" or not directory.billing:
        return frozenset(), None
    facility = directory.billing_for(_facility_id(head))
    found: set[int] = set()
    group = None
    for m in msgs:
        if m.msg_type != ("DFT", "P03"):
            continue
        ns, uid, _ = _hd_ids(m.msh, 4)
        sender = directory.billing_for([ns, uid])
        if sender is None or facility is None or sender.npi == facility.npi:
            continue
        found.add(id(m))
        group = group or sender
    return frozenset(found), group


def _surgeon(msgs: list[_Message], directory: ProviderDirectory, ctx: _Ctx) -> Provider | None:
    """The operating physician: the surgeon of the first procedure that names one, in
    PR1-11 (up to 2.6) or in a ROL of the procedure's group (ROL-3 a surgeon role)."""
    for m in msgs:
        procedure: _Seg | None = None
        for seg in m.segs:
            if seg.name == "PR1":
                procedure = seg
                found = _person(_xcn_npi(seg, 11, ctx), directory, seg.path(11))
                if found is not None:
                    return found
            elif seg.name == "ROL" and procedure is not None:
                if seg.get(2).upper() == "DE" or not _surgeon_role(seg):
                    continue  # a role deleted (table 0287), or someone other than the surgeon
                found = _person(_xcn_npi(seg, 4, ctx), directory, seg.path(4))
                if found is not None:
                    return found
            else:
                procedure = None
    return None


def _surgeon_role(rol: _Seg) -> bool:
    """ROL-3 names the surgeon (not an assistant): by code, else by its text."""
    code, text = rol.get(3, 1).upper(), rol.get(3, 2).lower()
    return code in SURGEON_ROLES or ("surgeon" in text and "assist" not in text)


def _visit_key(msg: _Message) -> str | None:
    """The visit a message is about: PV1-19 visit number (with its authority)."""
    pv1 = msg.one("PV1")
    if pv1 is None:
        return None
    number = pv1.get(19, 1)
    return f"{pv1.get(19, 4, 1)}|{number}" if number else None


def _encounter(
    msgs: list[_Message],
    ctx: _Ctx,
    directory: ProviderDirectory,
    source_id: str,
    received_at: datetime,
    source_system: str | None,
) -> Encounter:
    """One encounter from the messages about one visit (ADT^A03 first, then DFT^P03s)."""
    msgs = sorted(msgs, key=lambda m: (m.msg_type != ("ADT", "A03"), m.msg_type[0], m.index))
    head = msgs[0]
    if all(m.msg_type == ("ADT", "A01") for m in msgs):
        raise InputError(
            head.msh.path(9), "an ADT^A01 opens a visit: nothing to bill before its charges"
        )
    pid = head.one("PID")
    if pid is None:
        raise InputError(f"{_prefix(head)}PID", "segment missing")
    pv1 = head.one("PV1")
    if pv1 is None:
        raise InputError(f"{_prefix(head)}PV1", "segment missing")
    patient = _patient(pid)
    klass = pv1.get(2, 1).upper()
    if klass not in PATIENT_CLASS:
        shown = klass if re.fullmatch(r"[A-Z]", klass) else "?"
        raise InputError(pv1.path(2), f"patient class {shown} is not billed by intake (O, R, E, I)")
    setting, pos = PATIENT_CLASS[klass]

    professional, group = _physician_group(msgs, head, directory, setting)
    charges, ft1_dx = _charges(msgs, ctx, setting, professional)
    diagnoses = _diagnoses(msgs, ctx)
    documented = {d.code for d in diagnoses}
    for code in ft1_dx:
        if code not in documented:
            ctx.note("FT1-19 names a diagnosis no DG1 carries: added")
            diagnoses.append(
                DocumentedDiagnosis(code=code, system="icd10cm", primary=not diagnoses)
            )
            documented.add(code)

    admitted = _date(pv1, 44, "admit date", required=False)
    discharged = next(
        (d for m in msgs if (v := m.one("PV1")) for d in [_date(v, 45, "discharge date",
                                                               required=False)] if d),
        None,
    )  # fmt: skip
    discharged_at = next(
        (t for m in msgs if (v := m.one("PV1")) and (t := _time(v, 45, "discharge time"))),
        None,
    )
    charge_days = [s.service_date for s in charges if s.service_date]
    start = admitted or (min(charge_days) if charge_days else None)
    if start is None:
        raise InputError(pv1.path(44), "admit/visit date missing (and no FT1-4 date)")
    end = discharged or max([start, *charge_days])
    if end < start:
        raise InputError(pv1.path(45), "discharge date is before the admit date (PV1-44)")
    services = charges + _procedures(msgs, {s.code for s in charges if s.code}, start, ctx)
    services = [s if s.service_date else s.model_copy(update={"service_date": start})
                for s in services]  # fmt: skip

    attending = _person(_xcn_npi(pv1, 7, ctx), directory, pv1.path(7))
    operating = _surgeon(msgs, directory, ctx)
    performer = None
    for m in msgs:
        for ft1 in m.all("FT1"):
            performer = performer or _person(_xcn_npi(ft1, 20, ctx), directory, ft1.path(20))
    rendering = performer or (attending if setting == "professional" else None)

    facility_id, facility_npi = _facility_id(head)
    facility = directory.facilities.get(facility_id)
    if facility is None and facility_id:
        facility = _build(Facility, pv1.path(3), name=facility_id, npi=facility_npi)
    billing = directory.billing_for([facility_id, facility_npi])
    if billing is None and facility_npi:
        billing = directory.providers.get(facility_npi)
        if billing is None:
            ctx.note("billing provider not in the provider directory: the facility's NPI bills, "
                     "without EIN or address")  # fmt: skip
            billing = _build(
                Provider, head.msh.path(4), npi=facility_npi, name=facility_id,
                entity="organization",
            )  # fmt: skip
    if billing is None:
        billing = rendering or attending
        if billing is None:
            raise InputError(
                head.msh.path(4),
                "no billing provider: the facility is not in the provider directory, has no "
                "NPI (HD-2 with HD-3 NPI), and no practitioner NPI was sent",
            )
        ctx.note("no facility NPI: the practitioner is billing")

    admission_type = admission_source = None
    if setting == "inpatient":
        raw_type = pv1.get(4, 1).upper()
        admission_type = ADMISSION_TYPE.get(raw_type) or (
            raw_type if re.fullmatch(r"[1-59]", raw_type) else None
        )
        raw_source = pv1.get(14, 1).upper()
        admission_source = raw_source if re.fullmatch(r"[1-9A-G]", raw_source) else None
    discharge = None
    for m in msgs:
        v = m.one("PV1")
        raw = v.get(36, 1) if v is not None else ""
        if re.fullmatch(r"[0-9]{1,2}", raw):
            discharge = raw.zfill(2)
            break

    system = _system(head, pv1, source_system)
    number = pv1.get(19, 1)
    if not number:
        ctx.note("PV1-19 visit number missing: the message control id names the encounter")
    encounter_id = f"{system}/{number or head.control_id}"
    coverages = _coverages(msgs, patient, ctx)
    return _build(
        Encounter,
        pv1.label,
        event_id=event_id(source_id, encounter_id, "intake", "v1"),
        encounter_id=encounter_id,
        source_id=source_id,
        source_format="hl7v2",
        received_at=received_at,
        setting=setting,
        service_start=start,
        service_end=end,
        place_of_service=pos,
        admission_date=start if setting == "inpatient" else None,
        admission_time=_time(pv1, 44, "admit time") if setting == "inpatient" else None,
        admission_type=admission_type,
        admission_source=admission_source,
        discharge_status=discharge,
        discharge_date=discharged if setting == "inpatient" else None,
        discharge_time=discharged_at if setting == "inpatient" and discharged else None,
        patient=patient,
        coverage=coverages[0],
        other_coverages=coverages[1:],
        billing_provider=billing,
        rendering_provider=rendering,
        attending_provider=attending if setting != "professional" else None,
        operating_provider=operating if setting != "professional" else None,
        professional_billing_provider=group,
        facility=facility,
        diagnoses=diagnoses,
        services=services,
    )


def _system(head: _Message, pv1: _Seg, source_system: str | None) -> str:
    """Who numbers the visit: PV1-19.4 authority, else MSH-3 sending application."""
    for value in (pv1.get(19, 4, 1), head.msh.get(3, 1), head.msh.get(4, 1), source_system):
        if value and re.fullmatch(r"[A-Za-z0-9_.:\-]{1,64}", value):
            return value
    return DEFAULT_SOURCE_SYSTEM


def _prefix(msg: _Message) -> str:
    """Location prefix for a message of a batch (empty for a single message)."""
    return f"message[{msg.index}]." if msg.index else ""


def parse_hl7v2(
    text: str,
    *,
    source_id: str,
    received_at: datetime,
    source_system: str | None = None,
    directory: ProviderDirectory = EMPTY_DIRECTORY,
    chargemaster: Chargemaster | None = None,
) -> Hl7Parse:
    """Every visit in an ER7 message or batch as an Encounter record.

    ``chargemaster`` maps FT1-7 charge codes to revenue code, CPT/HCPCS and price."""
    ctx = _Ctx(directory=directory, chargemaster=chargemaster)
    groups = _group_messages(_split_segments(text.lstrip("\ufeff")), ctx)
    multi = len(groups) > 1
    messages = [
        _parse_message(lines, i + 1 if multi else 0, f"message[{i + 1}]." if multi else "", ctx)
        for i, lines in enumerate(groups)
    ]
    visits: dict[str, list[_Message]] = {}
    for m in messages:
        key = _visit_key(m) or f"message:{m.index}"
        visits.setdefault(key, []).append(m)
    encounters = [
        _encounter(group, ctx, directory, source_id, received_at, source_system)
        for group in visits.values()
    ]
    return Hl7Parse(encounters, dict(ctx.ignored), ctx.notes)
