"""Intake's domain: raw EHR bytes -> normalised Encounter records (no Kafka here)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Any, Literal

import msgspec

from pipeline.errors import InputError
from pipeline.models import Encounter
from services.intake import fhir
from services.intake.fhir import parse_bundle
from services.intake.hl7v2 import EMPTY_DIRECTORY, ProviderDirectory, parse_hl7v2
from services.intake.jsonfmt import parse_json_completed
from services.refdata.chargemaster import Chargemaster

FHIR_TYPES = {"application/fhir+json", "application/json+fhir"}
JSON_TYPES = {"application/json", "text/json"}
HL7_TYPES = {
    "x-application/hl7-v2+er7",
    "application/hl7-v2",
    "application/hl7-v2+er7",
    "application/x-hl7",
    "x-application/hl7",
}
SNIFF_TYPES = {"", "application/octet-stream", "text/plain"}
_BOM = b"\xef\xbb\xbf"  # UTF-8's byte order mark
# Every media type intake reads (sniffed ones included), made once.
_READ_TYPES = frozenset(FHIR_TYPES | JSON_TYPES | SNIFF_TYPES | HL7_TYPES)


@dataclass(frozen=True)
class ParseResult:
    """Encounters from one raw message, plus what was skipped and which fallbacks fired."""

    encounters: list[Encounter]
    source_format: Literal["fhir", "hl7v2", "json"]
    ignored: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _reject_constant(name: str) -> Any:
    """json.loads hook: NaN and Infinity are not JSON."""
    raise InputError("body", f"{name} is not valid JSON")


def _has_lone_surrogate(value: Any) -> bool:
    """Whether any string in decoded JSON holds an unpaired UTF-16 surrogate."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


# json.loads with these hooks, without making a decoder (and its scanner) per message.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=Decimal)

# msgspec's decoder gives what ``_DECODER`` gives for the JSON both accept (numbers with a
# fraction or an exponent as the Decimal of their text, through ``float_hook``), at about
# two thirds of its cost: 8.7% of intake's instructions per new message of the pipeline mix
# (callgrind). What it refuses (NaN, raw control characters, lone surrogates, anything
# else) goes to ``_DECODER``, whose result or error stands. tests/unit/test_intake_json_decoder.py
# holds the two to each other.
_FAST = msgspec.json.Decoder(float_hook=Decimal)

# Both decoders count each level of nesting against Python's recursion limit, from where
# they are called, and msgspec nests deeper than the standard decoder before the limit
# stops it (called from the same frame: 997 levels of lists against 994). So msgspec is called
# through _FAST_BELOW more frames, where it stops two levels before the standard decoder
# (992 against 994, lists or objects): whatever it decodes, the standard decoder decodes at
# the same depth, and a body nested deeper raises RecursionError there and goes to
# ``_DECODER``, which refuses it where it always did. This replaced counting the body's
# brackets and braces (msgspec only below 500): two scans of every body, ~10 us for a FHIR
# bundle of the pipeline mix, against ~0.3 us for the frames.
_FAST_BELOW = 4


def _fast_decode(text: str, frames: int = _FAST_BELOW) -> Any:
    """``_FAST.decode(text)``, called ``frames`` Python frames below this one."""
    if frames:
        return _fast_decode(text, frames - 1)
    return _FAST.decode(text)


def _loads(text: str) -> Any:
    """``json.loads(text, parse_constant=_reject_constant, parse_float=Decimal)``."""
    if text.startswith("\ufeff"):  # as json.loads refuses a second byte order mark
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    try:
        return _fast_decode(text)
    except (msgspec.DecodeError, RecursionError):
        pass  # the standard decoder's result or error stands
    return _DECODER.decode(text)


def _load_json(text: str) -> dict[str, Any]:
    """Decode a JSON object; errors name the line and column."""
    try:
        data = _loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno} (char {exc.pos})"
        raise InputError("body", f"invalid JSON at {where}: {exc.msg}") from None
    except RecursionError:
        raise InputError("body", "JSON nested too deeply") from None
    except ArithmeticError:
        # A number with a fraction or an exponent is read as the Decimal of its text, and
        # Decimal refuses an exponent past 999999999999999999 (decimal.InvalidOperation,
        # from either decoder): it was routed as an unexplained exception.
        raise InputError(
            "body", "invalid JSON: a number's exponent is beyond what a decimal holds"
        ) from None
    # "\ud800" escapes decode to strings that cannot be written as UTF-8 downstream. A
    # one-character search first: it runs at memchr speed, the two-character one does not
    # (~7 us for a FHIR bundle), and most bodies hold no backslash at all.
    if "\\" in text and "\\u" in text and _has_lone_surrogate(data):
        raise InputError("body", "JSON string holds an unpaired UTF-16 surrogate")
    if not isinstance(data, dict):
        raise InputError("body", f"expected a JSON object, got {type(data).__name__}")
    return data


def _media_type(content_type: str | None) -> str:
    """The bare media type, lower case, without parameters."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def _looks_like_hl7(body: bytes) -> bool:
    """Whether a body of unknown type is ER7 (an MSH segment or a batch header first)."""
    head = body.lstrip(b"\xef\xbb\xbf \t\r\n\x0b")[:3]
    return head in (b"MSH", b"FHS", b"BHS")


def _hl7_text(body: bytes) -> str:
    """ER7 bytes as text: UTF-8, else ISO 8859-1 (legacy feeds rarely declare MSH-18)."""
    body = body.strip(b"\x0b\x1c")  # MLLP framing left on by some senders
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = body.decode("latin-1")
    if not text.strip():
        raise InputError("body", "empty")
    return text


def hl7_body(body: bytes, content_type: str | None) -> str | None:
    """The ER7 text of a body that is HL7 v2 (by content type, or sniffed), else None."""
    media = _media_type(content_type)
    if media in HL7_TYPES or (media in SNIFF_TYPES and _looks_like_hl7(body)):
        return _hl7_text(body)
    return None


def parse_raw(
    body: bytes,
    content_type: str | None,
    *,
    source_id: str,
    received_at: datetime,
    source_system: str | None = None,
    directory: ProviderDirectory = EMPTY_DIRECTORY,
    chargemaster: Chargemaster | None = None,
) -> ParseResult:
    """Parse one raw EHR message by content type (sniffed when missing) into encounters.

    ``directory`` (provider profiles) completes what a message does not carry: the billing
    provider's EIN, taxonomy and address in every format, and for HL7 v2 the billing
    provider and facility by facility id and practitioners by NPI. ``chargemaster`` maps
    HL7 v2 FT1-7 charge codes to revenue code, CPT/HCPCS and price.
    """
    media = _media_type(content_type)
    if media not in _READ_TYPES:
        shown = media if re.fullmatch(r"[a-z0-9.+\-]{1,40}/[a-z0-9.+\-]{1,60}", media) else "?"
        raise InputError("content_type", f"unsupported content type {shown!r}")
    if media in HL7_TYPES or (media in SNIFF_TYPES and _looks_like_hl7(body)):
        hl7 = parse_hl7v2(
            _hl7_text(body),
            source_id=source_id,
            received_at=received_at,
            source_system=source_system,
            directory=directory,
            chargemaster=chargemaster,
        )
        return ParseResult(hl7.encounters, "hl7v2", hl7.ignored, hl7.notes)
    # ``body.decode("utf-8-sig")``, which is a Python function around the UTF-8 codec (its
    # offsets, too, count from after the mark): bytes.decode("utf-8") is C all the way.
    if body.startswith(_BOM):
        body = body[3:]
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError("body", f"not UTF-8 text (bad byte at offset {exc.start})") from None
    stripped = text.lstrip()
    if not stripped:
        raise InputError("body", "empty")
    data = _load_json(text)
    if media in FHIR_TYPES or "resourceType" in data:
        # FHIR sent as plain application/json is common; resourceType gives it away.
        parsed = parse_bundle(
            data,
            source_id=source_id,
            received_at=received_at,
            source_system=source_system,
            directory=directory,
        )
        notes = list(parsed.notes)
        priced = [_priced(e, chargemaster, notes) for e in parsed.encounters]
        return ParseResult(priced, "fhir", parsed.ignored, notes)
    encounter, completed = parse_json_completed(
        data,
        source_id=source_id,
        received_at=received_at,
        complete=partial(fhir.complete_provider, directory, keys=()),
    )
    notes = []
    if completed:
        notes.append("billing provider completed from its provider profile")
    return ParseResult([_priced(encounter, chargemaster, notes)], "json", notes=notes)


def _priced(enc: Encounter, chargemaster: Chargemaster | None, notes: list[str]) -> Encounter:
    """Unpriced CPT/HCPCS services (0.00: a Procedure no claim item billed) priced at the
    chargemaster's gross charge x units, the revenue code filled from it when missing."""
    if chargemaster is None:
        return enc
    services = []
    priced = False
    for service in enc.services:
        item = None
        if service.charge == 0 and service.system in ("cpt", "hcpcs"):
            item = chargemaster.for_service(service.code, service.revenue_code, enc.setting)
        if item is None or item.gross_charge is None:
            services.append(service)
            continue
        priced = True
        charge = (item.gross_charge * Decimal(str(service.units))).quantize(Decimal("0.01"))
        revenue = service.revenue_code or (item.revenue_code if enc.setting != "professional"
                                           else None)  # fmt: skip
        services.append(service.model_copy(update={"charge": charge, "revenue_code": revenue}))
        if "unpriced service priced from the chargemaster" not in notes:
            notes.append("unpriced service priced from the chargemaster")
    if not priced:  # the same record (a copy would hold the same values and fields set)
        return enc
    return enc.model_copy(update={"services": services})
