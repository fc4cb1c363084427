"""FHIR R4 Bundle -> Encounter records, with fhir.resources' R4B models.

Only the resource types that feed the Encounter contract are validated and read; every
other type is counted in ``ignored`` and left alone (minimum necessary PHI, and a broken
Observation should not stop a claim). The rules for billing data a bundle lacks are in
``services/intake/README.md``; each fallback that fires adds a line to ``notes``.
"""

from __future__ import annotations

import base64
import binascii
import re
import typing
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from functools import cache, partial
from operator import is_
from types import MappingProxyType
from typing import Any, Literal, NamedTuple, TypeVar
from urllib.parse import parse_qsl, unquote

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from pydantic import BaseModel, ValidationError

from pipeline.errors import InputError
from pipeline.models import (
    Address,
    Coverage,
    DocumentedDiagnosis,
    DocumentedService,
    Encounter,
    EncounterNote,
    Facility,
    NoteKind,
    Occurrence,
    OccurrenceSpan,
    Patient,
    Provider,
    Setting,
    Subscriber,
    ValueCode,
    event_id,
)
from services.intake import fhir_fast, trusted
from services.intake.jsonfmt import (
    MAX_UNITS,
    SELF,
    X12_RELATIONSHIPS,
    check_charge,
    first_error,
)
from services.intake.memo import Memo
from services.refdata.chargemaster import Chargemaster
from services.refdata.providers import EMPTY_DIRECTORY, ProviderDirectory

# --- code systems ------------------------------------------------------------------------

ICD10CM = {"http://hl7.org/fhir/sid/icd-10-cm", "urn:oid:2.16.840.1.113883.6.90"}
SNOMED = {"http://snomed.info/sct", "urn:oid:2.16.840.1.113883.6.96"}
CPT = {"http://www.ama-assn.org/go/cpt", "urn:oid:2.16.840.1.113883.6.12"}
HCPCS = {
    "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
    "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
    "http://terminology.hl7.org/CodeSystem/HCPCS-all-codes",
    "urn:oid:2.16.840.1.113883.6.285",
}
ICD10PCS = {
    "http://www.cms.gov/Medicare/Coding/ICD10",
    "https://www.cms.gov/Medicare/Coding/ICD10",
    "urn:oid:2.16.840.1.113883.6.4",
}
NPI = {"http://hl7.org/fhir/sid/us-npi", "urn:oid:2.16.840.1.113883.4.6"}
EIN = {"urn:oid:2.16.840.1.113883.4.4"}
NUCC = {"http://nucc.org/provider-taxonomy", "urn:oid:2.16.840.1.113883.6.101"}
POS = {
    "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set",
    "urn:oid:2.16.840.1.113883.6.50",
}
# X12 claim filing indicator (SBR09); no official FHIR URI exists, this is the one we write.
CLAIM_FILING = "https://x12.org/codes/claim-filing-indicator-code"
SOPT = {"https://nahdo.org/sopt", "urn:oid:2.16.840.1.113883.3.221.5"}
SUPPORTED = (
    "Patient",
    "Encounter",
    "Condition",
    "Procedure",
    "Coverage",
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "Location",
    "Claim",
    "ChargeItem",
    "DocumentReference",
    "RelatedPerson",
)
# Read only as a dependent's subscriber: an invalid one is skipped with a note instead of
# refusing the bundle (it may be an emergency contact that has nothing to do with billing).
SKIPPABLE = {"RelatedPerson"}
# Each entry's type is looked up in a set (a scan of the tuple compared up to 13 strings)
# and its model class in a dict (get_fhir_model_class per resource): _index of the 500
# office-visit bundles of 1,000 messages of the pipeline benchmark's mix went from 97.4 and
# 98.8 to 96.2 and 96.2 us a bundle (interleaved pairs, CPU time); bench intake_stage's
# mix part (200 messages, second run) from 294.6M to 292.8M instructions (-0.6%, callgrind).
_SUPPORTED = frozenset(SUPPORTED)
_MODEL_CLASS: dict[str, Any] = {}

# Encounter.class (v3 ActCode) -> setting and CMS place of service.
CLASS_SETTING: dict[str, tuple[Setting, str]] = {
    "AMB": ("professional", "11"),
    "EMER": ("outpatient", "23"),
    "IMP": ("inpatient", "21"),
    "ACUTE": ("inpatient", "21"),
    "NONAC": ("inpatient", "21"),
    "OBSENC": ("outpatient", "22"),
    "SS": ("outpatient", "22"),
    "HH": ("professional", "12"),
    "VR": ("professional", "02"),
}
# Encounter.priority (v3 ActPriority) -> UB-04 admission type.
PRIORITY_ADMISSION = {"EM": "1", "UR": "2", "EL": "3", "R": "3", "A": "1", "S": "1"}
# hl7 admit-source -> UB-04 point of origin for admission (FL15).
ADMIT_SOURCE = {
    "emd": "1",  # through the ED, from home: the origin is outside any health care facility
    "gp": "2",
    "mp": "2",
    "outp": "2",
    "hosp-trans": "4",
    "nursing": "5",
    "psych": "6",
    "rehab": "6",
    "born": "5",
    "other": "9",
}
# hl7 discharge-disposition -> UB-04 patient discharge status (FL17).
DISCHARGE = {
    "home": "01",
    "alt-home": "01",
    "other-hcf": "05",
    "hosp": "51",
    "long": "63",
    "aadvice": "07",
    "exp": "20",
    "psy": "65",
    "rehab": "62",
    "snf": "03",
    "oth": "70",
}
# subscriber-relationship (the beneficiary's relationship to the subscriber) -> X12 5010
# individual relationship code. X12 has no code for "the patient is the subscriber's parent"
# nor for "an injured party claiming against the subscriber": both become G8 (other
# relationship). 21 (unknown) would say we do not know the relationship, and we do.
SUBSCRIBER_RELATIONSHIP = "http://terminology.hl7.org/CodeSystem/subscriber-relationship"
RELATIONSHIP = {
    "self": "18",
    "spouse": "01",
    "child": "19",
    "common": "53",
    "parent": "G8",
    "other": "G8",
    "injured": "G8",
}
# RelatedPerson.relationship (v3 RoleCode: who the subscriber is to the patient) -> the
# patient's X12 relationship to the subscriber. Used only when Coverage.relationship is absent.
ROLE_RELATIONSHIP = {
    **dict.fromkeys(
        ("MTH", "FTH", "PRN", "NMTH", "NFTH", "NPRN", "STPMTH", "STPFTH", "STPPRN",
         "ADOPTM", "ADOPTF", "ADOPTP"),
        "19",
    ),
    **dict.fromkeys(("SPS", "HUSB", "WIFE"), "01"),
    "DOMPART": "53",
    "GUARD": "G8",
}  # fmt: skip
UNKNOWN_RELATIONSHIP = "21"
SEX = {"male": "M", "female": "F"}
X12_FILING_CODES = {
    "09", "11", "12", "13", "14", "15", "16", "17", "AM", "BL", "CH", "CI", "DS", "FI",
    "HM", "LM", "MA", "MB", "MC", "OF", "TV", "VA", "WC", "ZZ",
}  # fmt: skip
SOPT_FILING = {"1": "MB", "2": "MC", "3": "OF", "5": "CI", "6": "BL", "7": "HM", "8": "09"}
STATES = {
    "alabama": "AL", "alaska": "AK", "arizona": "AZ", "arkansas": "AR", "california": "CA",
    "colorado": "CO", "connecticut": "CT", "delaware": "DE", "district of columbia": "DC",
    "florida": "FL", "georgia": "GA", "hawaii": "HI", "idaho": "ID", "illinois": "IL",
    "indiana": "IN", "iowa": "IA", "kansas": "KS", "kentucky": "KY", "louisiana": "LA",
    "maine": "ME", "maryland": "MD", "massachusetts": "MA", "michigan": "MI",
    "minnesota": "MN", "mississippi": "MS", "missouri": "MO", "montana": "MT",
    "nebraska": "NE", "nevada": "NV", "new hampshire": "NH", "new jersey": "NJ",
    "new mexico": "NM", "new york": "NY", "north carolina": "NC", "north dakota": "ND",
    "ohio": "OH", "oklahoma": "OK", "oregon": "OR", "pennsylvania": "PA",
    "rhode island": "RI", "south carolina": "SC", "south dakota": "SD", "tennessee": "TN",
    "texas": "TX", "utah": "UT", "vermont": "VT", "virginia": "VA", "washington": "WA",
    "west virginia": "WV", "wisconsin": "WI", "wyoming": "WY", "puerto rico": "PR",
    "guam": "GU", "virgin islands": "VI", "american samoa": "AS",
    "northern mariana islands": "MP",
}  # fmt: skip
STATE_CODES = set(STATES.values()) | {"AA", "AE", "AP"}

# When a bundle carries no coverage at all (see README).
SELF_PAY_ID = "SELFPAY"
SELF_PAY_NAME = "Self-pay"
SELF_PAY_PLAN = "09"
UNKNOWN_MEMBER_ID = "UNKNOWN"
DEFAULT_SOURCE_SYSTEM = "fhir"
# Claim.diagnosis.type (ex-diagnosistype, CARIN BB) -> the diagnosis's UB-04 role.
DIAGNOSIS_ROLE: dict[str, Literal["admitting", "reason_for_visit", "external_cause"]] = {
    "admitting": "admitting",
    "patientreasonforvisit": "reason_for_visit",
    "externalcauseofinjury": "external_cause",
}
SIDE_ROLES = ("admitting", "reason_for_visit")
_SIDE_ROLES = frozenset(SIDE_ROLES)
_DIAGNOSIS_TYPES = frozenset(DIAGNOSIS_ROLE)
# Claim.supportingInfo codes in the NUBC code systems (their URL names the code set).
NUBC = "nubc.org"
# Claim.careTeam.role (claimcareteamrole, CARIN BB) for the operating physician.
OPERATING_ROLES = {"operating"}

_CPT_SHAPE = re.compile(r"^[0-9]{4}[0-9FTU]$")
_LOCAL_REF = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")
# Patterns matched per encounter, compiled once (not looked up in re's cache each call).
_TEN_DIGITS = re.compile(r"[0-9]{10}")
_SHORT_DIGITS = re.compile(r"[0-9]{1,9}")
_NINE_DIGITS = re.compile(r"[0-9]{9}")
_TWO_DIGITS = re.compile(r"[0-9]{2}")
_ZIP = re.compile(r"[0-9]{5}([0-9]{4})?")
_REVENUE = re.compile(r"[0-9]{3,4}")
_ADMIT_SOURCE_CODE = re.compile(r"[1-9A-Ga-g]")
_SPACE_DASH = re.compile(r"[\s-]")
_NOT_LETTER = re.compile(r"[^a-z]")
_PAYER_SYSTEM = re.compile(r"pay[eo]r|naic", re.I)


class FhirParse(NamedTuple):
    """What one bundle yields: its encounters, ignored resource counts, and fallback notes."""

    encounters: list[Encounter]
    ignored: dict[str, int]
    notes: list[str]


@dataclass(eq=False, slots=True)
class _Entry:
    """One validated resource and where it sits in the bundle."""

    path: str
    type: str
    res: Any
    contained: Mapping[str, _Entry]  # by id; _NO_CONTAINED (shared, read-only) when none


# What nearly every entry holds: no contained resources. A dict made per entry, and an
# entry with a __dict__, had cost the stage's run over 200 messages of the pipeline
# benchmark's mix 458.3M instructions against 456.5M without (-0.4%, callgrind).
_NO_CONTAINED: Mapping[str, _Entry] = MappingProxyType({})


@dataclass
class _Ctx:
    """Per-bundle state: indexes for reference resolution, counters and notes."""

    by_url: dict[str, _Entry] = field(default_factory=dict)
    by_type: dict[str, list[_Entry]] = field(default_factory=dict)
    by_ident: dict[tuple[str, str, str], _Entry] = field(default_factory=dict)
    ignored: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    links: dict[int, dict[str, list[_Entry]]] = field(default_factory=dict)
    directory: ProviderDirectory = EMPTY_DIRECTORY
    chargemaster: Chargemaster | None = None
    recording: list[str] | None = None  # every note made, while _kept_provider records

    def note(self, text: str) -> None:
        """Record a fallback once per bundle."""
        if self.recording is not None:
            self.recording.append(text)
        if text not in self.notes:
            self.notes.append(text)

    def of(self, rtype: str) -> list[_Entry]:
        """Every resource of one type, in bundle order."""
        return self.by_type.get(rtype, [])

    def linked(self, enc: _Entry, rtype: str) -> list[_Entry]:
        """Resources of one type that reference the encounter, in bundle order."""
        return self.links.get(id(enc), {}).get(rtype, [])

    def link(self, ref: Any, origin: _Entry) -> None:
        """Remember that origin references the encounter that ref resolves to."""
        target = self.resolve(ref, origin)
        if target is not None and target.type == "Encounter":
            found = self.links.setdefault(id(target), {}).setdefault(origin.type, [])
            if not found or found[-1] is not origin:
                found.append(origin)

    def resolve(self, ref: Any, ctx: _Entry | None = None) -> _Entry | None:
        """The entry a Reference points at (urn:uuid, Type/id, #contained, conditional)."""
        if ref is None:
            return None
        target = ref.reference
        if target:
            if target.startswith("#"):
                return ctx.contained.get(target[1:]) if ctx else None
            if target in self.by_url:
                return self.by_url[target]
            if "?" in target:
                rtype, query = target.split("?", 1)
                for system, value in _query_identifiers(query):
                    hit = self.by_ident.get((rtype.rsplit("/", 1)[-1], system, value))
                    if hit:
                        return hit
                return None
            m = _LOCAL_REF.search(target)
            if m:
                return self.by_url.get(f"{m.group(1)}/{m.group(2)}")
        ident = ref.identifier
        if ident is not None and ident.system and ident.value:
            for rtype in [ref.type] if ref.type else list(self.by_type):
                hit = self.by_ident.get((rtype, ident.system, ident.value))
                if hit:
                    return hit
        return None


T = TypeVar("T", bound=BaseModel)
R = TypeVar("R")


# Small contract models made again and again from the same values (a practice's billing
# and rendering providers, its facility, the usual diagnoses of a visit), kept by those
# values: frozen, one object serves every encounter that holds it. Only when every value
# is a str, None, a bool or a date (exact types: equal values are then the same JSON
# values) or an Address, which counts by its identity (each entry holds its addresses, so
# an identity in a key names a live object).
_SHARED_TYPES = frozenset({Provider, Facility, DocumentedDiagnosis})
_PLAIN = frozenset({str, type(None), bool, date})
_SHARED: dict[tuple[Any, ...], tuple[Any, tuple[Any, ...]]] = {}
_SHARED_MAX = 4096


def _shared(cls: type[T], **values: Any) -> T:
    """``cls(**values)``, the model made before for the same values when there is one
    (a validation failure is pydantic's, as ``cls(**values)`` raises it)."""
    key: list[Any] = [cls]
    held = []
    for name, value in values.items():
        kind = type(value)
        if kind in _PLAIN:
            key += (name, value)
        elif kind is Address:
            key += (name, id(value))
            held.append(value)
        else:
            return cls(**values)
    found = tuple(key)
    hit = _SHARED.get(found)
    if hit is not None:
        return hit[0]  # type: ignore[no-any-return]
    model = cls(**values)
    if len(_SHARED) >= _SHARED_MAX:
        _SHARED.clear()
    _SHARED[found] = (model, tuple(held))
    return model


# Checked rather than validated (see trusted.py): the Encounter record, and a service
# line, whose model validator and Money validator pydantic runs in Python.
_TRUSTED_TYPES = frozenset({Encounter, DocumentedService})


def _build(cls: type[T], path: str, **values: Any) -> T:
    """Build a contract model; a validation failure names the FHIR element it came from.
    An Encounter (a large record of what this module built) or a service line is checked
    rather than validated when every value is already what validation gives back (see
    trusted.py)."""
    model = trusted.build(cls, values) if cls in _TRUSTED_TYPES else None
    if model is not None:
        return model
    try:
        return _shared(cls, **values) if cls in _SHARED_TYPES else cls(**values)
    except ValidationError as exc:
        err = first_error(exc, cls.__name__)
        raise InputError(path, f"{err.field}: {err.reason}") from None


def _query_identifiers(query: str) -> list[tuple[str, str]]:
    """(system, value) pairs from a conditional reference's identifier= parameters."""
    pairs = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "identifier" and "|" in value:
            system, _, ident = value.partition("|")
            pairs.append((unquote(system), unquote(ident)))
    return pairs


def _ref_identifiers(ref: Any) -> list[tuple[str, str]]:
    """Identifiers a reference carries itself, for targets outside the bundle."""
    if ref is None:
        return []
    pairs = []
    if ref.reference and "?" in ref.reference:
        pairs += _query_identifiers(ref.reference.split("?", 1)[1])
    if ref.identifier is not None and ref.identifier.system and ref.identifier.value:
        pairs.append((ref.identifier.system, ref.identifier.value))
    return pairs


def _ref_type(ref: Any) -> str | None:
    """The resource type a reference names, when it names one."""
    if ref is None:
        return None
    if ref.type:
        return str(ref.type)
    target = ref.reference or ""
    m = re.match(r"^(?:.*/)?([A-Z][A-Za-z]+)(?:[/?]|$)", target)
    return m.group(1) if m else None


def _to_date(value: Any, path: str) -> date:
    """A FHIR date or dateTime as a calendar date, in the offset it was written with."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    raise InputError(path, "needs a full date (YYYY-MM-DD), not only a year or month")


def _opt_date(value: Any) -> date | None:
    """A full date when the value has one, else None."""
    if isinstance(value, datetime):
        return value.date()
    return value if isinstance(value, date) else None


def _codings(concept: Any) -> list[Any]:
    """The codings of a CodeableConcept (empty when absent)."""
    return list(concept.coding or []) if concept is not None else []


def _text(value: Any) -> str | None:
    """A stripped string, or None when empty."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _normalise_npi(raw: str, ctx: _Ctx) -> str | None:
    """A 10-digit NPI; shorter numbers (Synthea's serial NPIs) are left-padded with zeros."""
    digits = raw.strip()
    if _TEN_DIGITS.fullmatch(digits):
        return digits
    if _SHORT_DIGITS.fullmatch(digits):
        ctx.note(
            f"NPI {digits!r} has fewer than 10 digits; left-padded with zeros "
            "(validation will flag its check digit)"
        )
        return digits.zfill(10)
    ctx.note("an NPI identifier is not a number; ignored")
    return None


def _npi(identifiers: list[tuple[str, str]], ctx: _Ctx) -> str | None:
    """The NPI among (system, value) identifier pairs."""
    for system, value in identifiers:
        if system in NPI and value:
            npi = _normalise_npi(value, ctx)
            if npi:
                return npi
    return None


def _pairs(res: Any) -> list[tuple[str, str]]:
    """(system, value) for a resource's identifiers."""
    return [(i.system or "", i.value or "") for i in (res.identifier or []) if i.value]


def _tax_id(res: Any) -> str | None:
    """The EIN of an organisation (OID system, or identifier type TAX), 9 digits."""
    for ident in res.identifier or []:
        types = {c.code for c in _codings(ident.type)}
        if (ident.system in EIN or "TAX" in types) and ident.value:
            digits = _SPACE_DASH.sub("", ident.value)
            if _NINE_DIGITS.fullmatch(digits):
                return digits
    return None


def _state(raw: str | None) -> str | None:
    """A USPS state code from a code or a full name."""
    if not raw:
        return None
    value = raw.strip()
    if value.upper() in STATE_CODES:
        return value.upper()
    return STATES.get(value.lower())


# Addresses made of FHIR Address elements the fast path keeps (fhir_fast.py): the same
# element (the same clinic, the same payer) is the same object from bundle to bundle, so
# its Address is made once. Each entry holds the element, whose identity is its key.
_ADDRESSES: dict[int, tuple[Any, Address]] = {}
_ADDRESSES_MAX = 4096


def _address(addr: Any, path: str) -> Address:
    """A US postal address from a FHIR Address; InputError names what is missing."""
    hit = _ADDRESSES.get(id(addr))
    if hit is not None and hit[0] is addr:
        return hit[1]
    made = _make_address(addr, path)
    if fhir_fast.kept(addr):
        if len(_ADDRESSES) >= _ADDRESSES_MAX:
            _ADDRESSES.clear()
        _ADDRESSES[id(addr)] = (addr, made)
    return made


def _make_address(addr: Any, path: str) -> Address:
    country = (addr.country or "US").strip().upper()
    if country not in {"US", "USA", "UNITED STATES", "UNITED STATES OF AMERICA"}:
        raise InputError(f"{path}.country", "only US addresses are supported")
    lines = [line.strip() for line in addr.line or [] if line and line.strip()]
    if not lines:
        raise InputError(f"{path}.line", "missing")
    if not _text(addr.city):
        raise InputError(f"{path}.city", "missing")
    state = _state(addr.state)
    if state is None:
        raise InputError(f"{path}.state", "not a US state code or name")
    postal = _SPACE_DASH.sub("", addr.postalCode or "")
    if not _ZIP.fullmatch(postal):
        raise InputError(f"{path}.postalCode", "not a 5- or 9-digit ZIP code")
    return Address(
        line1=lines[0],
        line2=", ".join(lines[1:]) or None,
        city=addr.city.strip(),
        state=state,
        postal_code=postal,
    )


def _pick_address(res: Any, path: str) -> tuple[Any, str] | None:
    """The current home/work address of a resource, preferring non-old ones."""
    raw = res.address
    # One address (what nearly every resource sends): the ranking below would pick it.
    if type(raw) is list and len(raw) == 1:
        return raw[0], path + ".address[0]"
    addresses = list(raw) if isinstance(raw, list) else [raw] if raw is not None else []
    ranked = sorted(
        range(len(addresses)),
        key=lambda i: (addresses[i].use == "old", addresses[i].use not in (None, "home", "work")),
    )
    if not ranked:
        return None
    i = ranked[0]
    suffix = f".address[{i}]" if isinstance(raw, list) else ".address"
    return addresses[i], path + suffix


def _optional_address(res: Any, path: str, ctx: _Ctx, what: str) -> Address | None:
    """A provider or facility address, dropped with a note when unusable (it is optional)."""
    picked = _pick_address(res, path)
    if picked is None:
        return None
    try:
        return _address(*picked)
    except InputError as exc:
        ctx.note(f"{what} address dropped: {exc.field}: {exc.reason}")
        return None


def _person_name(res: Any, path: str, required: bool) -> tuple[str, str] | None:
    """(family, first given) from a HumanName list, preferring the official name."""
    names = list(res.name or [])
    if not names:
        if required:
            raise InputError(f"{path}.name", "missing")
        return None
    idx = next((i for i, n in enumerate(names) if n.use == "official"), 0)
    name = names[idx]
    family = _text(name.family)
    given = next((g.strip() for g in name.given or [] if g and g.strip()), None)
    if family and given:
        return family, given
    if required:
        missing = "family" if not family else "given"
        raise InputError(f"{path}.name[{idx}].{missing}", "missing")
    if family or given or _text(name.text):
        return (family or _text(name.text) or "", given or "")
    return None


def _taxonomy(concepts: list[Any]) -> str | None:
    """The first NUCC provider taxonomy code among CodeableConcepts."""
    for concept in concepts:
        for coding in _codings(concept):
            if coding.system in NUCC and coding.code:
                return str(coding.code)
    return None


# --- index -------------------------------------------------------------------------------


def prepare() -> None:
    """Import the model of every supported resource type and make its fast-path plan now
    (a service's start-up): else the first bundle holding a type pays for it (~0.25 s of
    CPU for all of them, most of it importing fhir.resources' modules)."""
    for rtype in SUPPORTED:
        fhir_fast.plan(_model_class(rtype))


def _model_class(rtype: str) -> Any:
    """The R4B model class of a supported resource type, looked up once."""
    cls = _MODEL_CLASS.get(rtype)
    if cls is None:
        cls = _MODEL_CLASS[rtype] = get_fhir_model_class(rtype)
    return cls


def _is_fhir_type(rtype: str) -> bool:
    """Whether a name is an R4 resource type."""
    try:
        get_fhir_model_class(rtype)
    except (ValueError, TypeError):
        return False
    return rtype[:1].isupper()


# Validated elements and resources by content (see memo.py): in a feed, most elements
# repeat (codings, amounts, the same payers, practitioners and locations), and the R4B
# models' cost is per element (~10 us each, whatever its size). Nodes whose text is longer
# than _MEMO_MAX_KEY are validated but not kept (they seldom repeat; an attachment can be
# megabytes).
_VALIDATED: Memo[Any] = Memo(8192)
_MEMO_MAX_KEY = 2048


@cache
def _element_fields(cls: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Element name (as written in JSON) -> its R4B model class, for the fields of a model
    that hold one complex element type (not a resource: ``contained`` is left to pydantic)."""
    found: dict[str, type[BaseModel]] = {}
    for name, info in cls.model_fields.items():
        kinds, stack = set(), [info.annotation]
        while stack:
            tp = stack.pop()
            if isinstance(tp, type) and hasattr(tp, "get_model_klass"):  # an element type
                kinds.add(tp.get_model_klass())
            else:
                stack.extend(typing.get_args(tp))
        if len(kinds) == 1:
            (kind,) = kinds
            if not issubclass(kind, Resource):
                found[info.alias or name] = kind
    return found


def _validated(cls: type[BaseModel], data: dict[str, Any]) -> Any:
    """``cls.model_validate(data)``, each complex element validated once per content.

    Elements are validated bottom up: a child already seen (same model, same JSON values:
    ``repr`` tells Decimal, int, bool and str apart) is reused, and pydantic takes a
    validated child as it is. The result equals the top-down validation's. Cached models
    are shared between bundles: read them, never assign to them.
    """
    text = repr(data)
    key = (cls, text)
    model = _VALIDATED.get(key)
    if model is not None:
        return model
    elements = _element_fields(cls)
    values = {}
    for name, value in data.items():
        kind = elements.get(name)
        if kind is not None:
            if isinstance(value, dict):
                value = _validated(kind, value)
            elif isinstance(value, list):
                value = [_validated(kind, v) if isinstance(v, dict) else v for v in value]
        values[name] = value
    model = cls.model_validate(values)
    if len(text) <= _MEMO_MAX_KEY:
        _VALIDATED.put(key, model)
    return model


def _validate(rtype: str, resource: dict[str, Any], path: str) -> Any:
    """Validate one resource with its R4B model; errors name the FHIR element.

    A plainly valid resource is built by ``fhir_fast`` from the models' field metadata;
    whatever it is not sure of is validated by fhir.resources, whose error is the one given.
    """
    cls = _MODEL_CLASS.get(rtype) or _model_class(rtype)
    fast = fhir_fast.construct(cls, resource)
    if fast is not None:
        return fast
    try:
        return _validated(cls, resource)
    except Exception:  # noqa: BLE001 - the plain validation below says what is wrong
        pass
    try:
        return get_fhir_model_class(rtype).model_validate(resource)
    except ValidationError as exc:
        raise first_error(exc, path) from None
    except (ValueError, TypeError, LookupError, AttributeError) as exc:
        raise InputError(path, f"not a valid R4 {rtype}: {type(exc).__name__}") from None


def _index(bundle: dict[str, Any]) -> _Ctx:
    """Validate the supported resources of a bundle and index them for references."""
    ctx = _Ctx()
    by_type, by_url, by_ident = ctx.by_type, ctx.by_url, ctx.by_ident
    entries = bundle.get("entry")
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise InputError("Bundle.entry", "must be a list")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InputError(f"Bundle.entry[{i}]", "must be an object")
        resource = entry.get("resource")
        if resource is None:
            continue  # e.g. a DELETE request in a transaction
        path = f"Bundle.entry[{i}].resource"  # made once: the entry's, and its errors'
        if not isinstance(resource, dict):
            raise InputError(path, "must be an object")
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str) or not rtype:
            raise InputError(f"{path}.resourceType", "missing")
        cls = _MODEL_CLASS.get(rtype)
        if cls is None:
            if rtype not in _SUPPORTED:
                # Counted by name only when it is an R4 type: the keys stay a bounded set.
                ctx.ignored[rtype if _is_fhir_type(rtype) else "(unknown resource type)"] += 1
                continue
            cls = _model_class(rtype)
        try:
            # _validate's fast path here: a Python call less per resource (~10 a bundle).
            res: Any = fhir_fast.construct(cls, resource)
            if res is None:
                res = _validate(rtype, resource, path)
        except InputError as exc:
            if rtype not in SKIPPABLE:
                raise
            ctx.ignored[f"{rtype} (invalid)"] += 1
            ctx.note(f"invalid {rtype} skipped: {exc.field}: {exc.reason}")
            continue
        contained = _NO_CONTAINED
        inners = getattr(res, "contained", None)
        if inners:
            contained = {
                inner.id: _Entry(
                    f"{path}.contained[{j}]",
                    inner.get_resource_type(),
                    inner,
                    _NO_CONTAINED,
                )
                for j, inner in enumerate(inners)
                if inner.id
            }
        item = _Entry(path, rtype, res, contained)
        of_type = by_type.get(rtype)
        if of_type is None:
            by_type[rtype] = [item]
        else:
            of_type.append(item)
        full_url = entry.get("fullUrl")
        if isinstance(full_url, str) and full_url:
            by_url.setdefault(full_url, item)
            # A local reference has a "/" (a urn:uuid: has none: the search is skipped).
            m = _LOCAL_REF.search(full_url) if "/" in full_url else None
            if m and m.group(1) == rtype:
                by_url.setdefault(f"{rtype}/{m.group(2)}", item)
        if res.id:
            by_url.setdefault(f"{rtype}/{res.id}", item)
        for ident in res.identifier or ():  # _pairs(res), without its list
            if ident.value:
                by_ident.setdefault((rtype, ident.system or "", ident.value), item)
    for entry in ctx.of("Condition") + ctx.of("Procedure"):
        ctx.link(entry.res.encounter, entry)
    for entry in ctx.of("Claim"):
        for item in entry.res.item or []:
            for ref in item.encounter or []:
                ctx.link(ref, entry)
    for entry in ctx.of("ChargeItem"):
        ctx.link(entry.res.context, entry)
    encounters = ctx.of("Encounter")
    if len(encounters) == 1:
        # A claim or charge that names no encounter bills the bundle's only one.
        linked = {
            id(e) for kind in ("Claim", "ChargeItem") for e in ctx.linked(encounters[0], kind)
        }
        for kind in ("Claim", "ChargeItem"):
            for entry in ctx.of(kind):
                if id(entry) not in linked:
                    ctx.note(f"{kind} without an encounter reference billed to the only Encounter")
                    ctx.links.setdefault(id(encounters[0]), {}).setdefault(kind, []).append(entry)
    for entry in ctx.of("DocumentReference"):
        context = entry.res.context
        for ref in context.encounter or [] if context is not None else []:
            ctx.link(ref, entry)
    return ctx


# --- providers, facility, coverage -------------------------------------------------------


# Providers and facilities made of the resources a practice sends in every bundle (its
# Organization, Practitioners and Location, kept whole by fhir_fast: the same model object
# for the same content), kept by what they were made of: the resource, the reference that
# named it, its place in the bundle (errors and notes name it), the directory, and the notes
# the making made, made again on a hit. Each entry holds those objects, so an identity in a
# key names a live one, and they are read, never assigned to. What raises is not kept (it
# raises again).
_PROVIDERS: dict[tuple[Any, ...], tuple[tuple[Any, ...], Any, tuple[str, ...]]] = {}
_PROVIDERS_MAX = 1024


def _kept_provider(
    kind: str,
    entry: _Entry | None,
    rtype: str,
    held: tuple[Any, ...],
    ctx: _Ctx,
    make: Callable[[], R],
) -> R:
    """``make()``; for an entry of ``rtype`` kept whole, what it made before from the same
    resource and ``held`` objects at the same place, when it did."""
    if entry is None or entry.type != rtype or not fhir_fast.kept_whole(entry.res):
        return make()
    held = (entry.res, *held)
    key = (kind, entry.path, *map(id, held))
    hit = _PROVIDERS.get(key)
    # As many held objects as ids in the key: the same identities, compared in C.
    if hit is not None and all(map(is_, hit[0], held)):
        for text in hit[2]:
            ctx.note(text)
        return hit[1]  # type: ignore[no-any-return]
    outer, ctx.recording = ctx.recording, []
    try:
        made = make()
    finally:
        notes, ctx.recording = ctx.recording, outer
        if outer is not None:
            outer.extend(notes)
    if len(_PROVIDERS) >= _PROVIDERS_MAX:
        _PROVIDERS.clear()
    _PROVIDERS[key] = (held, made, tuple(notes))
    return made


def _practitioner(entry: _Entry | None, ref: Any, ctx: _Ctx) -> Provider | None:
    """A rendering provider (a person) from a Practitioner/PractitionerRole or a reference."""
    make = partial(_make_practitioner, entry, ref, ctx)
    return _kept_provider("practitioner", entry, "Practitioner", (ref,), ctx, make)


def _make_practitioner(entry: _Entry | None, ref: Any, ctx: _Ctx) -> Provider | None:
    role_taxonomy = None
    identifiers = _ref_identifiers(ref)
    if entry is not None and entry.type == "PractitionerRole":
        role = entry.res
        role_taxonomy = _taxonomy(list(role.specialty or []) + list(role.code or []))
        identifiers = _pairs(role) + _ref_identifiers(role.practitioner) + identifiers
        inner = ctx.resolve(role.practitioner, entry)
        entry, ref = inner, role.practitioner
    if entry is not None and entry.type != "Practitioner":
        return None
    if entry is not None:
        identifiers = _pairs(entry.res) + identifiers
    npi = _npi(identifiers, ctx)
    if npi is None:
        ctx.note("rendering practitioner has no NPI; rendering provider left empty")
        return None
    name = None
    taxonomy = role_taxonomy
    address = None
    if entry is not None:
        parts = _person_name(entry.res, entry.path, required=False)
        if parts:
            name = ", ".join(p for p in parts if p)
        taxonomy = taxonomy or _taxonomy([q.code for q in entry.res.qualification or []])
        address = _optional_address(entry.res, entry.path, ctx, "practitioner")
    else:
        ctx.note("practitioner is outside the bundle; NPI taken from the reference")
    name = name or _text(ref.display if ref is not None else None) or f"NPI {npi}"
    return _build(
        Provider,
        entry.path if entry is not None else "Encounter.participant",
        npi=npi,
        name=name,
        entity="person",
        taxonomy=taxonomy,
        address=address,
    )


def _organization(entry: _Entry | None, ref: Any, ctx: _Ctx) -> Provider | None:
    """A billing provider from an Organization (or a reference carrying its NPI)."""
    if entry is not None and entry.type in ("Practitioner", "PractitionerRole"):
        return _practitioner(entry, ref, ctx)
    make = partial(_make_organization, entry, ref, ctx)
    return _kept_provider("organization", entry, "Organization", (ref,), ctx, make)


def _make_organization(entry: _Entry | None, ref: Any, ctx: _Ctx) -> Provider | None:
    identifiers = _ref_identifiers(ref)
    org = entry.res if entry is not None and entry.type == "Organization" else None
    if org is not None:
        identifiers = _pairs(org) + identifiers
    npi = _npi(identifiers, ctx)
    if npi is None:
        return None
    name = _text(org.name if org is not None else None) or _text(ref.display if ref else None)
    return _shared(
        Provider,
        npi=npi,
        name=name or f"NPI {npi}",
        entity="organization",
        tax_id=_tax_id(org) if org is not None else None,
        taxonomy=_taxonomy(list(org.type or [])) if org is not None else None,
        address=_optional_address(org, entry.path, ctx, "billing provider")
        if org is not None and entry is not None
        else None,
    )


def _profiled(sent: Provider | None, entry: _Entry | None, ref: Any, ctx: _Ctx) -> Provider | None:
    """The billing provider completed from its provider profile (EIN, taxonomy, address).

    The profile is found by the organisation's identifiers (``system|value``, or the value)
    or its NPI; an organisation without an NPI (Synthea's hospitals) bills through its
    profile when one names it.
    """
    if not ctx.directory.billing:
        return sent
    make = partial(_make_profiled, sent, entry, ref, ctx)
    return _kept_provider("profiled", entry, "Organization", (sent, ref, ctx.directory), ctx, make)


def _make_profiled(
    sent: Provider | None, entry: _Entry | None, ref: Any, ctx: _Ctx
) -> Provider | None:
    pairs = _ref_identifiers(ref)
    if entry is not None and entry.type == "Organization":
        pairs = _pairs(entry.res) + pairs
    keys = [f"{system}|{value}" for system, value in pairs] + [value for _, value in pairs]
    if sent is None:
        profile = ctx.directory.billing_for(keys)
        if profile is not None:
            ctx.note("billing organisation without an NPI: billed through its provider profile")
        return profile
    done = complete_provider(ctx.directory, sent, keys)
    if done is not sent:
        ctx.note("billing provider completed from its provider profile")
    return done


# Billing providers completed from their profile, by directory, keys and provider as sent
# (frozen, compared by value): the same clinic bills most visits, in every format (the JSON
# format's too, domain.py), and completing one dumps and validates two models. What a
# directory returns unchanged is not kept.
_COMPLETED: dict[tuple[int, tuple[str, ...], Provider], tuple[ProviderDirectory, Provider]] = {}
_COMPLETED_MAX = 1024


# The same, by the identity of the provider sent (held, so its id names it): the JSON
# format's billing provider is one kept model in encounter after encounter (jsonfmt's kept
# parts), and hashing a Provider by value (its fields and its address's) had cost ~1.9 us
# of each JSON encounter of the pipeline mix.
_COMPLETED_BY_ID: dict[
    tuple[int, int, tuple[str, ...]], tuple[ProviderDirectory, Provider, Provider]
] = {}


def complete_provider(
    directory: ProviderDirectory, sent: Provider, keys: Sequence[str]
) -> Provider:
    """``directory.complete(sent, keys)``, kept by its arguments."""
    keys = tuple(keys)
    ident = (id(directory), id(sent), keys)
    seen = _COMPLETED_BY_ID.get(ident)
    if seen is not None and seen[0] is directory and seen[1] is sent:
        return seen[2]
    key = (id(directory), keys, sent)
    hit = _COMPLETED.get(key)
    if hit is not None and hit[0] is directory:
        done = hit[1]
    else:
        done = directory.complete(sent, keys)
        if done is not sent:
            if len(_COMPLETED) >= _COMPLETED_MAX:
                _COMPLETED.clear()
            _COMPLETED[key] = (directory, done)
    if len(_COMPLETED_BY_ID) >= _COMPLETED_MAX:
        _COMPLETED_BY_ID.clear()
    _COMPLETED_BY_ID[ident] = (directory, sent, done)
    return done


def _facility(enc: _Entry, ctx: _Ctx) -> tuple[Facility | None, str | None]:
    """The service facility (Encounter.location, else serviceProvider) and any POS it states."""
    pos = None
    for loc in enc.res.location or []:
        target = ctx.resolve(loc.location, enc)
        if target is None or target.type != "Location":
            continue
        # A practice's Location is kept whole (fhir_fast), and the facility made of it is
        # kept with it: making it again (its POS, NPI and address) had cost ~7 us a FHIR
        # encounter of the pipeline mix.
        make = partial(_location_facility, target, loc.location, ctx)
        facility, pos = _kept_provider("facility", target, "Location", (loc.location,), ctx, make)
        if facility is not None:
            return facility, pos
        break
    ref = enc.res.serviceProvider
    target = ctx.resolve(ref, enc)
    if target is not None and target.type == "Organization" and _text(target.res.name):
        org = target.res
        return (
            _shared(
                Facility,
                name=org.name.strip(),
                npi=_npi(_pairs(org), ctx),
                address=_optional_address(org, target.path, ctx, "facility"),
            ),
            pos,
        )
    if ref is not None and _text(ref.display):
        name, npi = ref.display.strip(), _npi(_ref_identifiers(ref), ctx)
        return _shared(Facility, name=name, npi=npi), pos
    return None, pos


def _location_facility(target: _Entry, ref: Any, ctx: _Ctx) -> tuple[Facility | None, str | None]:
    """The facility a Location makes (None when it has no name) and the POS it states."""
    res = target.res
    pos = next(
        (c.code for t in (res.type or []) for c in _codings(t) if c.system in POS and c.code),
        None,
    )
    name = _text(res.name) or _text(ref.display)
    if not name:
        return None, pos
    facility = _shared(
        Facility,
        name=name,
        npi=_npi(_pairs(res), ctx),
        address=_optional_address(res, target.path, ctx, "facility"),
    )
    return facility, pos


def _plan_type(concept: Any, payer_name: str, ctx: _Ctx) -> str:
    """X12 claim filing indicator from Coverage.type, else from the payer's name."""
    for coding in _codings(concept):
        code = (coding.code or "").strip().upper()
        system = coding.system or ""
        if code in X12_FILING_CODES and (
            system == CLAIM_FILING or "x12" in system.lower() or "filing" in system.lower()
        ):
            return code
        if system in SOPT and code[:1] in SOPT_FILING:
            return SOPT_FILING[code[:1]]
    text = " ".join(
        [payer_name, (_text(concept.text) or "") if concept is not None else ""]
        + [c.display or "" for c in _codings(concept)]
    ).lower()
    for needles, plan in (
        (("medicare", "dual eligible"), "MB"),
        (("medicaid", "medi-cal", "masshealth"), "MC"),
        (("blue cross", "blue shield", "bcbs", "anthem"), "BL"),
        (("hmo", "kaiser"), "HM"),
        (("tricare", "champus"), "CH"),
        (("veteran",), "VA"),
    ):
        if any(n in text for n in needles):
            ctx.note("plan type inferred from the payer name")
            return plan
    if text.strip():
        ctx.note("plan type not coded; commercial (CI) assumed from a named payer")
        return "CI"
    ctx.note("plan type unknown; ZZ (mutually defined)")
    return "ZZ"


def _slug(name: str) -> str:
    """A payer id derived from a payer name, for payers that carry no identifier."""
    return re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_")[:80] or "UNKNOWN"


def _is_self_pay(name: str) -> bool:
    """Whether a payer name means the patient pays (Synthea writes NO_INSURANCE)."""
    key = _NOT_LETTER.sub("", name.lower())
    return key in {"noinsurance", "selfpay", "self", "uninsured", "none"}


def _self_pay(patient_id: str, ctx: _Ctx, why: str) -> Coverage:
    """The explicit self-pay coverage used when a bundle has no payer."""
    ctx.note(f"{why}: self-pay coverage ({SELF_PAY_ID}, plan 09) with the MRN as member id")
    return Coverage(
        payer_id=SELF_PAY_ID,
        payer_name=SELF_PAY_NAME,
        plan_type=SELF_PAY_PLAN,
        member_id=patient_id,
    )


def _named_payer(name: str, patient_id: str, ctx: _Ctx) -> Coverage:
    """Coverage from a payer name alone (Synthea's Claim.insurance.coverage.display)."""
    if _is_self_pay(name):
        return _self_pay(patient_id, ctx, "payer named as no insurance")
    ctx.note("payer given by name only: payer_id derived from the name, member_id UNKNOWN")
    return Coverage(
        payer_id=_slug(name),
        payer_name=name,
        plan_type=_plan_type(None, name, ctx),
        member_id=UNKNOWN_MEMBER_ID,
    )


def _member_id(cov: Any, ctx: _Ctx) -> str:
    """subscriberId, else the identifier typed MB (member number), else an untyped one."""
    member_id = _text(cov.subscriberId)
    if member_id is not None:
        return member_id
    untyped = None
    for ident in cov.identifier or []:
        value = _text(ident.value)
        if value is None:
            continue
        codings = _codings(ident.type)
        labels = [c.display or "" for c in codings]
        labels.append((_text(ident.type.text) or "") if ident.type is not None else "")
        if any((c.code or "").strip().upper() == "MB" for c in codings) or any(
            "member" in label.lower() for label in labels
        ):
            return value
        if ident.type is None and untyped is None:
            untyped = value
    if untyped is not None:
        ctx.note("coverage has no subscriberId or member identifier; an untyped identifier used")
        return untyped
    ctx.note("coverage has no subscriberId or identifier; member_id UNKNOWN")
    return UNKNOWN_MEMBER_ID


def _coded_relationship(cov: Any, ctx: _Ctx) -> str | None:
    """Coverage.relationship as an X12 code; None when absent, 21 when not understood."""
    concept = cov.relationship
    codings = _codings(concept)
    # Official system first; older feeds use other URIs for the same codes.
    for coding in sorted(codings, key=lambda c: c.system != SUBSCRIBER_RELATIONSHIP):
        code = (coding.code or "").strip()
        if code in RELATIONSHIP:
            return RELATIONSHIP[code]
    for coding in codings:
        code = (coding.code or "").strip().upper()
        if code in X12_RELATIONSHIPS:
            return code
    if codings or (concept is not None and _text(concept.text)):
        ctx.note("Coverage.relationship not understood: relationship 21 (unknown)")
        return UNKNOWN_RELATIONSHIP
    return None


def _subscriber(target: _Entry, ctx: _Ctx) -> Subscriber | None:
    """The policy holder from a Patient or RelatedPerson: name, birth date, sex, address."""
    res, path = target.res, target.path
    try:
        family, given = _person_name(res, path, required=True) or ("", "")
        return _build(
            Subscriber,
            path,
            last_name=family,
            first_name=given,
            birth_date=_opt_date(res.birthDate),
            sex=SEX.get(res.gender or "", "U"),
            address=_optional_address(res, path, ctx, "subscriber"),
        )
    except InputError as exc:
        ctx.note(f"subscriber unusable ({exc.field}: {exc.reason}): no subscriber")
        return None


def _policy_holder(entry: _Entry, patient: _Entry, ctx: _Ctx) -> tuple[str, Subscriber | None]:
    """(X12 relationship, subscriber) from Coverage.relationship and Coverage.subscriber.

    A dependent whose subscriber cannot be read keeps its relationship and gets no
    subscriber, with a note: validation refuses the claim and says why, rather than intake
    billing the patient as the policy holder.
    """
    cov = entry.res
    ref = cov.subscriber
    target = ctx.resolve(ref, entry)
    if target is not None and target.type not in ("Patient", "RelatedPerson"):
        target = None
    relationship = _coded_relationship(cov, ctx)
    if relationship is None:
        if ref is None or target is patient:
            return SELF, None
        roles = [] if target is None or target.type != "RelatedPerson" else target.res.relationship
        relationship = next(
            (
                ROLE_RELATIONSHIP[code]
                for concept in roles or []
                for c in _codings(concept)
                if (code := (c.code or "").strip().upper()) in ROLE_RELATIONSHIP
            ),
            UNKNOWN_RELATIONSHIP,
        )
        ctx.note(
            "Coverage.relationship missing and Coverage.subscriber is not the patient: "
            f"relationship {relationship} ({X12_RELATIONSHIPS[relationship]})"
        )
    if relationship == SELF:
        if target is not None and target is not patient:
            ctx.note("Coverage.relationship is self but the subscriber is another person: ignored")
        return SELF, None
    if target is None or target is patient:
        why = "does not resolve" if target is None else "is the patient"
        if ref is None:
            why = "is missing"
        ctx.note(
            f"dependent coverage (relationship {relationship}) but Coverage.subscriber {why}: "
            "no subscriber, validation will refuse the claim"
        )
        return relationship, None
    return relationship, _subscriber(target, ctx)


class _Payer(NamedTuple):
    """What a coverage's payer fields are made of its payor Organization, payor reference
    and Coverage.type, and the notes the making made (replayed where they were made)."""

    name: str | None  # None: the payer has no name (an input error)
    self_pay: bool  # named as no insurance
    payer_id: str
    plan_type: str
    id_notes: tuple[str, ...]  # made where the payer id is worked out
    plan_notes: tuple[str, ...]  # made where the plan type is (after the subscriber's)


def _payer(org: Any, payor_ref: Any, cov_type: Any) -> _Payer:
    """The payer fields of a coverage (see _coverage_from)."""
    name = _text(org.name if org is not None else None) or _text(
        payor_ref.display if payor_ref is not None else None
    )
    name = name or _text(cov_type.text if cov_type is not None else None)
    if not name:
        return _Payer(None, False, "", "", (), ())
    if _is_self_pay(name):
        return _Payer(name, True, "", "", (), ())
    identifiers = (_pairs(org) if org is not None else []) + _ref_identifiers(payor_ref)
    payer_id = None
    for ident in org.identifier or [] if org is not None else []:
        if any(c.code == "NIIP" for c in _codings(ident.type)) and ident.value:
            payer_id = ident.value.strip()
            break
    if payer_id is None:
        payer_id = next(
            (v for s, v in identifiers if _PAYER_SYSTEM.search(s) and v.strip()),
            None,
        )
    id_notes: tuple[str, ...] = ()
    if payer_id is None:
        id_notes = ("payer has no payer identifier; payer_id derived from its name",)
        payer_id = _slug(name)
    notes = _Ctx(recording=[])
    plan_type = _plan_type(cov_type, name, notes)
    return _Payer(name, False, payer_id, plan_type, id_notes, tuple(notes.recording or ()))


# Payer fields kept by the identities of what they are made of: a payer's Organization is
# kept whole and its reference and Coverage.type are kept elements (fhir_fast), the same
# objects in every bundle naming that payer. Each entry holds those objects, so an
# identity in a key names a live one; they are read, never assigned to. Working them out
# again had cost 0.4% of the stage's instructions (callgrind, the pipeline benchmark's mix).
_PAYERS: dict[tuple[int, ...], tuple[tuple[Any, ...], _Payer]] = {}
_PAYERS_MAX = 1024


def _kept_payer(org: Any, payor_ref: Any, cov_type: Any) -> _Payer:
    """``_payer(...)``, the one made before from the same kept objects."""
    if not (
        (org is None or fhir_fast.kept_whole(org))
        and (payor_ref is None or fhir_fast.kept(payor_ref))
        and (cov_type is None or fhir_fast.kept(cov_type))
    ):
        return _payer(org, payor_ref, cov_type)
    held = (org, payor_ref, cov_type)
    key = (id(org), id(payor_ref), id(cov_type))
    hit = _PAYERS.get(key)
    if hit is not None and all(map(is_, hit[0], held)):
        return hit[1]
    made = _payer(org, payor_ref, cov_type)
    if len(_PAYERS) >= _PAYERS_MAX:
        _PAYERS.clear()
    _PAYERS[key] = (held, made)
    return made


def _coverage_from(entry: _Entry, patient: _Entry, patient_id: str, ctx: _Ctx) -> Coverage:
    """Contract coverage from a FHIR Coverage and its payor Organization."""
    cov = entry.res
    payor_ref = (cov.payor or [None])[0]
    payor = ctx.resolve(payor_ref, entry)
    payor_type = payor.type if payor else _ref_type(payor_ref)
    if payor_type in ("Patient", "RelatedPerson"):
        return _self_pay(patient_id, ctx, "coverage paid by the patient")
    org = payor.res if payor is not None and payor.type == "Organization" else None
    payer = _kept_payer(org, payor_ref, cov.type)
    if payer.name is None:
        raise InputError(f"{entry.path}.payor", "payer has no name")
    if payer.self_pay:
        return _self_pay(patient_id, ctx, "payer named as no insurance")
    for text in payer.id_notes:
        ctx.note(text)
    member_id = _member_id(cov, ctx)
    group = None
    for cls in cov.class_fhir or []:
        if any(c.code == "group" for c in _codings(cls.type)):
            group = _text(cls.value)
            break
    relationship, subscriber = _policy_holder(entry, patient, ctx)
    for text in payer.plan_notes:  # made where _plan_type made them
        ctx.note(text)
    return _build(
        Coverage,
        entry.path,
        payer_id=payer.payer_id,
        payer_name=payer.name,
        plan_type=payer.plan_type,
        member_id=member_id,
        group_number=group,
        relationship=relationship,
        subscriber=subscriber,
    )


def _coverages(
    claims: list[_Entry], patient: _Entry, patient_id: str, start: date, ctx: _Ctx
) -> list[Coverage]:
    """The encounter's coverages in coordination-of-benefits order, primary first: those a
    Claim references (Claim.insurance: focal first, then by sequence), else the patient's
    Coverages in force on the date of service by Coverage.order, else a payer named on the
    claim, else self-pay."""
    names: list[str] = []
    referenced: list[_Entry] = []
    for claim in claims:
        insurance = sorted(claim.res.insurance or [], key=lambda i: (not i.focal, i.sequence or 0))
        for ins in insurance:
            target = ctx.resolve(ins.coverage, claim)
            if target is not None and target.type == "Coverage":
                if all(target is not seen for seen in referenced):
                    referenced.append(target)
            elif ins.coverage is not None and _text(ins.coverage.display):
                names.append(ins.coverage.display.strip())
    if referenced:
        return _distinct([_coverage_from(e, patient, patient_id, ctx) for e in referenced])
    candidates = []
    for entry in ctx.of("Coverage"):
        cov = entry.res
        if cov.status in ("cancelled", "entered-in-error"):
            continue
        beneficiary = ctx.resolve(cov.beneficiary, entry)
        if beneficiary is not None and beneficiary is not patient:
            continue
        if beneficiary is None and len(ctx.of("Patient")) > 1:
            continue
        period = cov.period
        if period is not None:
            begin, end = _opt_date(period.start), _opt_date(period.end)
            if (begin and begin > start) or (end and end < start):
                continue
        candidates.append(entry)
    if candidates:
        ordered = sorted(candidates, key=lambda e: e.res.order or 10**6)
        return _distinct([_coverage_from(e, patient, patient_id, ctx) for e in ordered])
    if names:
        return [_named_payer(names[0], patient_id, ctx)]
    return [_self_pay(patient_id, ctx, "no coverage in the bundle")]


def _distinct(coverages: list[Coverage]) -> list[Coverage]:
    """Coverages in order, each payer and member once; self-pay only when nothing else."""
    out: list[Coverage] = []
    for coverage in coverages:
        if any((c.payer_id, c.member_id) == (coverage.payer_id, coverage.member_id) for c in out):
            continue
        out.append(coverage)
    paying = [c for c in out if c.plan_type != "09"]
    return paying or out[:1]


# --- diagnoses and services --------------------------------------------------------------


def _dx_code(concept: Any) -> tuple[str, Literal["icd10cm", "snomed", "text"], str | None] | None:
    """(code, system, display) of a diagnosis: ICD-10-CM, else SNOMED CT, else text."""
    codings = _codings(concept)
    text = _text(concept.text) if concept is not None else None
    for systems, name in ((ICD10CM, "icd10cm"), (SNOMED, "snomed")):
        for coding in codings:
            if coding.system in systems and _text(coding.code):
                display = _text(coding.display) or text
                return str(coding.code).strip(), name, display  # type: ignore[return-value]
    if text:
        return "", "text", text
    return None


ServiceSystem = Literal["cpt", "hcpcs", "icd10pcs", "snomed"]


def _svc_code(codings: list[Any], setting: Setting) -> tuple[str, ServiceSystem, str | None] | None:
    """(code, system, display) for a service; inpatient prefers ICD-10-PCS."""
    order: list[tuple[set[str], ServiceSystem]] = [
        (CPT, "cpt"),
        (HCPCS, "hcpcs"),
        (ICD10PCS, "icd10pcs"),
        (SNOMED, "snomed"),
    ]
    if setting == "inpatient":
        order.insert(0, order.pop(2))
    for systems, name in order:
        for coding in codings:
            code = _text(coding.code)
            if coding.system in systems and code:
                if name in ("cpt", "hcpcs"):
                    # HCPCS level I is CPT: classify by the code's shape, not the label.
                    name = "cpt" if _CPT_SHAPE.match(code) else "hcpcs"
                return code, name, _text(coding.display)
    return None


# Results of pure functions of one kept element (fhir_fast.kept: the same model object for
# the same content, in every bundle that sends it: the coding of a diagnosis, of a service,
# a claim's type), kept by the element's identity with the element held, so the identity
# names a live object. A bundle asked for them ~10 times (each Condition once per mention,
# each service line, each claim's type twice); kept, and each Condition read once, the
# mapping of a FHIR encounter went from 0.165 to 0.155 ms (three pairs, bundles not seen).
_OF_KEPT: dict[tuple[Any, ...], tuple[Any, Any]] = {}
_OF_KEPT_MAX = 4096


def _of_kept(fn: Callable[..., R], element: Any, *args: Any) -> R:
    """``fn(element, *args)``, the result made before for the same kept element."""
    if element is None or not fhir_fast.kept(element):
        return fn(element, *args)
    key = (fn, id(element), *args)
    hit = _OF_KEPT.get(key)
    if hit is not None and hit[0] is element:
        return hit[1]  # type: ignore[no-any-return]
    result = fn(element, *args)
    if len(_OF_KEPT) >= _OF_KEPT_MAX:
        _OF_KEPT.clear()
    _OF_KEPT[key] = (element, result)
    return result


def _concept_svc_code(
    concept: Any, setting: Setting
) -> tuple[str, ServiceSystem, str | None] | None:
    """``_svc_code`` of one CodeableConcept's codings."""
    return _svc_code(_codings(concept), setting)


def _first_code(concept: Any) -> str | None:
    """The first code of a CodeableConcept, as text."""
    return next((str(c.code) for c in _codings(concept) if c.code), None)


def _revenue(concept: Any, path: str) -> str | None:
    """A UB-04 revenue code from Claim.item.revenue: four digits (a leading zero added)."""
    for coding in _codings(concept):
        code = _text(coding.code)
        if code is None:
            continue
        if not _REVENUE.fullmatch(code):
            raise InputError(f"{path}.coding.code", "a revenue code is 3 or 4 digits")
        return code.zfill(4)
    return None


def _check_units(value: Any, path: str) -> float:
    """Units from a Quantity value; must be positive and finite."""
    if value is None:
        return 1.0
    units = float(value)
    if not (0 < units <= MAX_UNITS):
        raise InputError(path, f"must be a positive number up to {MAX_UNITS:g}")
    return units


def _item_charge(item: Any, path: str) -> Decimal | None:
    """A Claim.item charge: net, else unitPrice x quantity x factor; None when unpriced."""
    if item.net is not None and item.net.value is not None:
        return check_charge(item.net.value, f"{path}.net.value")
    if item.unitPrice is not None and item.unitPrice.value is not None:
        qty = item.quantity.value if item.quantity is not None else None
        try:
            amount = Decimal(item.unitPrice.value) * Decimal(qty if qty is not None else 1)
            if item.factor is not None:
                amount *= Decimal(item.factor)
        except ArithmeticError:  # decimal.Overflow on absurd exponents
            raise InputError(f"{path}.unitPrice.value", "charge out of range") from None
        return check_charge(amount, f"{path}.unitPrice.value")
    return None


@dataclass
class _Line:
    """A service line under construction (no code: a facility line by revenue code alone)."""

    code: str | None
    system: ServiceSystem | None
    display: str | None
    charge: Decimal | None
    units: float
    service_date: date | None
    dx_refs: list[str]
    modifiers: list[str]
    path: str
    revenue_code: str | None = None
    claim_type: Literal["professional", "institutional"] | None = None


class _EncounterBuilder:
    """Collects one Encounter's diagnoses and services from the bundle."""

    def __init__(self, enc: _Entry, ctx: _Ctx, setting: Setting, start: date) -> None:
        self.enc, self.ctx, self.setting, self.start = enc, ctx, setting, start
        self.dx_entries: dict[int, str] = {}  # id(Condition entry) -> documented code
        self.notes: list[EncounterNote] = []  # what this encounter's record does not carry

    def not_carried(
        self, kind: NoteKind, path: str, message: str, charge: Decimal | None = None
    ) -> None:
        """Say on the encounter what the bundle sent that the record does not carry."""
        self.notes.append(
            EncounterNote(kind=kind, field=path, message=message, charge=charge or None)
        )

    def points_here(self, ref: Any, origin: _Entry) -> bool:
        """Whether a reference resolves to this encounter."""
        return ref is not None and self.ctx.resolve(ref, origin) is self.enc

    def claims(self) -> list[_Entry]:
        """Claims for this encounter that bill professional or institutional services."""
        found = []
        for claim in self.ctx.linked(self.enc, "Claim"):
            res = claim.res
            kind = next((c.code for c in _codings(res.type)), None)
            if res.use not in (None, "claim") or kind in ("pharmacy", "oral", "vision"):
                self.ctx.ignored[f"Claim ({kind or res.use})"] += 1
                continue
            found.append(claim)
        return found

    def diagnoses(self, claims: list[_Entry]) -> list[DocumentedDiagnosis]:
        """Conditions of the encounter: Encounter.diagnosis by rank, claim order, then links."""
        ordered: list[tuple[_Entry | None, Any, str | None]] = []
        side: list[DocumentedDiagnosis] = []
        external: set[object] = set()  # keys of diagnoses typed as external causes
        ranked = sorted(
            (d for d in self.enc.res.diagnosis or []),
            key=lambda d: d.rank if d.rank is not None else 10**6,
        )
        for d in ranked:
            ordered.append((self.ctx.resolve(d.condition, self.enc), None, None))
        for claim in claims:
            for d in sorted(claim.res.diagnosis or [], key=lambda d: d.sequence):
                poa = next(
                    (str(c.code).strip().upper() for c in _codings(d.onAdmission) if c.code), None
                )
                entry = self.ctx.resolve(d.diagnosisReference, claim)
                concept = d.diagnosisCodeableConcept
                if entry is None and concept is None:
                    continue
                types = (
                    {str(c.code) for t in d.type for c in _codings(t) if c.code}
                    if d.type
                    else set()
                )
                roles = {DIAGNOSIS_ROLE[t] for t in types if t in DIAGNOSIS_ROLE}
                for role in sorted(roles & _SIDE_ROLES) if roles else ():
                    found = _of_kept(_dx_code, entry.res.code if entry is not None else concept)
                    if found is not None and found[0]:
                        side.append(
                            _shared(
                                DocumentedDiagnosis,
                                code=found[0],
                                system=found[1],
                                display=found[2],
                                role=role,
                            )
                        )
                if roles and roles <= _SIDE_ROLES and not types - _DIAGNOSIS_TYPES:
                    continue  # only admitting / reason for visit: not one of the claim's
                if "external_cause" in roles:
                    found = _of_kept(_dx_code, concept) if entry is None else None
                    external.add(id(entry) if found is None else (found[1], found[0], found[2]))
                ordered.append((entry, None if entry is not None else concept, poa))
        for cond in self.ctx.linked(self.enc, "Condition"):
            ordered.append((cond, None, None))
        result: list[tuple[str, Any, str | None, date | None]] = []
        keys: list[object] = []
        seen: set[object] = set()
        poa_by_key: dict[object, str] = {}
        for entry, concept, poa in ordered:
            if entry is not None and entry.type != "Condition":
                continue
            if entry is not None and id(entry) in seen:
                # A Condition read before (Encounter.diagnosis, then a claim, then its
                # link): what it gave then, and this mention's POA.
                if poa:
                    poa_by_key.setdefault(id(entry), poa)
                continue
            if entry is not None:
                verification = {c.code for c in _codings(entry.res.verificationStatus)}
                if verification & {"entered-in-error", "refuted"}:
                    continue
                if self._resolved_before(entry.res):
                    self.ctx.ignored["Condition (resolved before the encounter)"] += 1
                    continue
                concept = entry.res.code
            found = _of_kept(_dx_code, concept)
            if found is None:
                if entry is not None:
                    self.ctx.note("Condition without code or text skipped")
                continue
            code, system, display = found
            key: object = id(entry) if entry is not None else (system, code, display)
            if poa:
                poa_by_key.setdefault(key, poa)
            if key in seen:
                continue
            seen.add(key)
            keys.append(key)
            onset = None
            if entry is not None:
                self.dx_entries[id(entry)] = code
                res = entry.res
                onset = _opt_date(res.onsetDateTime) or (
                    _opt_date(res.onsetPeriod.start) if res.onsetPeriod is not None else None
                )
            result.append((code, system, display, onset))
        # Built once with their final values (what a copy of each with its rank, POA and
        # role updated held before).
        claim_dxs = [
            _shared(
                DocumentedDiagnosis,
                code=code,
                system=system,
                display=display,
                onset=onset,
                poa=poa_by_key.get(keys[i]),
                primary=i == 0,
                role="external_cause" if keys[i] in external else None,
            )
            for i, (code, system, display, onset) in enumerate(result)
        ]
        return claim_dxs + side

    def _resolved_before(self, res: Any) -> bool:
        """Whether a Condition was over (clinicalStatus and abatement) before this encounter:
        history, not a diagnosis of the visit. Resolved later, it was still treated here."""
        clinical = {c.code for c in _codings(res.clinicalStatus)}
        if not clinical & {"inactive", "resolved", "remission"}:
            return False
        abated = _opt_date(res.abatementDateTime) or (
            _opt_date(res.abatementPeriod.end or res.abatementPeriod.start)
            if res.abatementPeriod is not None
            else None
        )
        return abated is not None and abated < self.start

    def dx_ref(self, entry: _Entry | None, concept: Any) -> str | None:
        """The documented code a service points to, from a Condition or a concept."""
        if entry is not None:
            if id(entry) in self.dx_entries:
                return self.dx_entries[id(entry)]
            concept = entry.res.code if entry.type == "Condition" else None
        found = _of_kept(_dx_code, concept)
        return found[0] if found and found[0] else None

    def reason_refs(self, dx_codes: set[str]) -> list[str]:
        """Diagnoses named as the encounter's reason (Synthea's only link for the visit)."""
        refs: list[str] = []
        for concept in self.enc.res.reasonCode or []:
            for coding in _codings(concept):
                if coding.code in dx_codes and coding.code not in refs:
                    refs.append(coding.code)
        for ref in self.enc.res.reasonReference or []:
            code = self.dx_ref(self.ctx.resolve(ref, self.enc), None)
            if code and code in dx_codes and code not in refs:
                refs.append(code)
        return refs

    def procedure_date(self, proc: _Entry) -> date | None:
        """When a procedure was performed."""
        res = proc.res
        if res.performedDateTime is not None:
            return _opt_date(res.performedDateTime)
        if res.performedPeriod is not None:
            return _opt_date(res.performedPeriod.start)
        return None

    def services(self, claims: list[_Entry], dx_codes: set[str]) -> list[DocumentedService]:
        """Service lines from claim items, then unbilled procedures, then charge items."""
        lines: list[_Line] = []
        used_procs: set[int] = set()
        procs = [
            p
            for p in self.ctx.linked(self.enc, "Procedure")
            if p.res.status not in ("not-done", "entered-in-error")
        ]
        for claim in claims:
            lines += self._claim_lines(claim, dx_codes, used_procs)
        charge_items = [
            c
            for c in self.ctx.linked(self.enc, "ChargeItem")
            if c.res.status not in ("not-billable", "aborted", "entered-in-error")
        ]
        priced_by_proc: dict[int, _Entry] = {}
        used_items: set[int] = set()
        for item in charge_items:
            for ref in item.res.service or []:
                target = self.ctx.resolve(ref, item)
                if target is not None and target.type == "Procedure":
                    if id(target) in used_procs:
                        used_items.add(id(item))  # already billed on a Claim
                    priced_by_proc.setdefault(id(target), item)
        for proc in procs:
            if id(proc) in used_procs:
                continue
            found = _of_kept(_concept_svc_code, proc.res.code, self.setting)
            if found is None:
                self.ctx.ignored["Procedure (no billing code)"] += 1
                continue
            priced = priced_by_proc.get(id(proc))
            if priced is not None and id(priced) not in used_items:
                lines.append(self._charge_item_line(priced, found, self.procedure_date(proc)))
                used_items.add(id(priced))
                continue
            refs = []
            for reason in proc.res.reasonReference or []:
                ref = self.dx_ref(self.ctx.resolve(reason, proc), None)
                if ref and ref not in refs:
                    refs.append(ref)
            lines.append(
                _Line(
                    *found,
                    charge=None,
                    units=1.0,
                    service_date=self.procedure_date(proc),
                    dx_refs=refs,
                    modifiers=[],
                    path=proc.path,
                )
            )
        for item in charge_items:
            if id(item) in used_items:
                continue
            concept = item.res.code
            found = _of_kept(_concept_svc_code, concept, self.setting)
            if found is None:
                self.ctx.ignored["ChargeItem (no billing code)"] += 1
                line = self._charge_item_line(item, (None, None, None), None)
                self.not_carried(
                    "item_not_carried",
                    f"{item.path}.code",
                    "a charge item with no CPT, HCPCS, ICD-10-PCS or SNOMED CT code is not billed",
                    line.charge,
                )
                continue
            lines.append(self._charge_item_line(item, found, None))
        return [self._finish(line) for line in lines]

    def _charge_item_line(
        self,
        item: _Entry,
        found: tuple[str | None, ServiceSystem | None, str | None],
        when: date | None,
    ) -> _Line:
        """A line from a ChargeItem (priceOverride is the total for all units)."""
        res = item.res
        charge = None
        if res.priceOverride is not None and res.priceOverride.value is not None:
            charge = check_charge(res.priceOverride.value, f"{item.path}.priceOverride.value")
        occurred = _opt_date(res.occurrenceDateTime) or (
            _opt_date(res.occurrencePeriod.start) if res.occurrencePeriod is not None else None
        )
        refs = []
        for concept in res.reason or []:
            ref = self.dx_ref(None, concept)
            if ref and ref not in refs:
                refs.append(ref)
        qty = res.quantity.value if res.quantity is not None else None
        return _Line(
            *found,
            charge=charge,
            units=_check_units(qty, f"{item.path}.quantity.value"),
            service_date=occurred or when,
            dx_refs=refs,
            modifiers=[],
            path=item.path,
        )

    def _claim_lines(self, claim: _Entry, dx_codes: set[str], used: set[int]) -> list[_Line]:
        """Lines from one Claim; Synthea's unpriced visit line gets total minus priced items."""
        res = claim.res
        diag = {d.sequence: d for d in res.diagnosis or []}
        procs = {p.sequence: p for p in res.procedure or []}
        lines: list[_Line] = []
        priced = Decimal(0)
        kind = _of_kept(_first_code, res.type)
        claim_type = _claim_type(kind, self.setting)
        billed_procs: set[int] = set()
        for k, item in enumerate(res.item or []):
            path = f"{claim.path}.item[{k}]"
            charge = _item_charge(item, path)
            priced += charge or 0
            refs: list[str] = []
            for seq in item.diagnosisSequence or []:
                d = diag.get(seq)
                if d is None:
                    raise InputError(f"{path}.diagnosisSequence", f"no Claim.diagnosis {seq}")
                ref = self.dx_ref(
                    self.ctx.resolve(d.diagnosisReference, claim), d.diagnosisCodeableConcept
                )
                if ref and ref not in refs:
                    refs.append(ref)
            codings = _codings(item.productOrService)
            when = _opt_date(item.servicedDate) or (
                _opt_date(item.servicedPeriod.start) if item.servicedPeriod is not None else None
            )
            for seq in item.procedureSequence or []:
                billed_procs.add(seq)
                p = procs.get(seq)
                if p is None:
                    raise InputError(f"{path}.procedureSequence", f"no Claim.procedure {seq}")
                target = self.ctx.resolve(p.procedureReference, claim)
                if target is not None and target.type == "Procedure":
                    used.add(id(target))
                    codings = _codings(target.res.code) + codings
                    when = when or self.procedure_date(target)
                elif p.procedureCodeableConcept is not None:
                    codings = _codings(p.procedureCodeableConcept) + codings
                when = when or _opt_date(p.date)
            item_codes = {c.code for c in codings}
            if charge is None and not item.procedureSequence and refs and item_codes & set(refs):
                continue  # Synthea repeats each diagnosis as an unpriced claim item
            found: tuple[str | None, ServiceSystem | None, str | None] | None
            found = (
                _svc_code(codings, self.setting)
                if item.procedureSequence
                else _of_kept(_concept_svc_code, item.productOrService, self.setting)
            )
            revenue = _revenue(item.revenue, f"{path}.revenue")
            if found is not None and found[1] == "icd10pcs" and revenue and charge:
                # A facility charge that names the procedure it was for: the procedure is
                # coded for the stay (ICD-10-PCS), the charge is billed by its revenue code.
                lines.append(self._pcs_line(found, when, path))
                found = None
            if found is None and revenue and claim_type != "professional":
                found = (None, None, None)  # a facility line billed by revenue code alone
            if found is None:
                system = next((c.system for c in codings if c.system), "no code")
                self.ctx.ignored[f"Claim.item ({system})"] += 1
                self.ctx.note(f"claim items coded only in {system} are not carried")
                self.not_carried(
                    "item_not_carried",
                    f"{path}.productOrService",
                    f"a claim item coded only in {system}"
                    + ("" if revenue else " and without a revenue code")
                    + " cannot be billed",
                    charge,
                )
                continue
            if not refs and any(self.points_here(r, claim) for r in item.encounter or []):
                refs = self.reason_refs(dx_codes)
            qty = item.quantity.value if item.quantity is not None else None
            code, system, display = found
            lines.append(
                _Line(
                    code,
                    system,
                    display,
                    charge=charge,
                    units=_check_units(qty, f"{path}.quantity.value"),
                    service_date=when,
                    dx_refs=refs,
                    modifiers=[
                        str(c.code).strip()
                        for m in item.modifier or []
                        for c in _codings(m)
                        if _text(c.code)
                    ],
                    path=path,
                    revenue_code=revenue,
                    claim_type=claim_type,
                )
            )
        lines += self._claim_procedures(claim, billed_procs, used)
        unpriced = [line for line in lines if line.charge is None]
        if len(unpriced) == 1 and res.total is not None and res.total.value is not None:
            rest = Decimal(res.total.value) - priced
            if rest >= 0:
                unpriced[0].charge = check_charge(rest, f"{claim.path}.total.value")
                self.ctx.note("unpriced claim line charged Claim.total minus the priced items")
        return lines

    def _claim_procedures(self, claim: _Entry, billed: set[int], used: set[int]) -> list[_Line]:
        """Claim.procedure entries no item bills: the procedures of the stay (ICD-10-PCS on
        an institutional claim), as lines without a charge."""
        out: list[_Line] = []
        for k, p in enumerate(claim.res.procedure or []):
            if p.sequence in billed:
                continue
            path = f"{claim.path}.procedure[{k}]"
            target = self.ctx.resolve(p.procedureReference, claim)
            if target is not None and target.type == "Procedure":
                used.add(id(target))
                codings = _codings(target.res.code)
                when = self.procedure_date(target) or _opt_date(p.date)
            else:
                codings = _codings(p.procedureCodeableConcept)
                when = _opt_date(p.date)
            found = _svc_code(codings, self.setting)
            if found is None or found[1] != "icd10pcs":
                self.not_carried(
                    "code_not_carried",
                    path,
                    "a claim procedure that no item bills and that is not ICD-10-PCS is not "
                    "carried",
                )
                continue
            out.append(self._pcs_line(found, when, path))
        return out

    def _pcs_line(
        self,
        found: tuple[str | None, ServiceSystem | None, str | None],
        when: date | None,
        path: str,
    ) -> _Line:
        """The ICD-10-PCS procedure a priced facility item names, as an unpriced line."""
        return _Line(*found, charge=Decimal(0), units=1.0, service_date=when, dx_refs=[],
                     modifiers=[], path=path)  # fmt: skip

    def _finish(self, line: _Line) -> DocumentedService:
        """A contract service line; an unpriced line is charged 0 and noted."""
        if line.charge is None:
            self.ctx.note("service without a charge in the bundle: charge 0.00")
        return _build(
            DocumentedService,
            line.path,
            code=line.code,
            system=line.system,
            display=line.display,
            modifiers=line.modifiers,
            units=line.units,
            charge=line.charge if line.charge is not None else Decimal(0),
            service_date=line.service_date or self.start,
            dx_refs=line.dx_refs,
            revenue_code=line.revenue_code,
            claim_type=line.claim_type,
        )


def _claim_type(
    kind: str | None, setting: Setting
) -> Literal["professional", "institutional"] | None:
    """A Claim.type that differs from the encounter's setting: the physician's professional
    claim beside a facility claim (or the reverse); None when it follows the setting."""
    if kind == "professional" and setting != "professional":
        return "professional"
    if kind == "institutional" and setting == "professional":
        return "institutional"
    return None


# --- encounter ---------------------------------------------------------------------------


def _patient(entry: _Entry) -> Patient:
    """Minimum necessary patient data: MRN, name, birth date, sex, one US address."""
    res, path = entry.res, entry.path
    family, given = _person_name(res, path, required=True) or ("", "")
    if res.birthDate is None:
        raise InputError(f"{path}.birthDate", "missing")
    birth = _to_date(res.birthDate, f"{path}.birthDate")
    picked = _pick_address(res, path)
    if picked is None:
        raise InputError(f"{path}.address", "missing")
    mrn = None
    for ident in res.identifier or []:
        if any(c.code == "MR" for c in _codings(ident.type)) and _text(ident.value):
            mrn = ident.value.strip()
            break
    patient_id = mrn or _text(res.id)
    if patient_id is None:
        raise InputError(f"{path}.identifier", "no MRN identifier and no id")
    return _build(
        Patient,
        path,
        patient_id=patient_id,
        last_name=family,
        first_name=given,
        birth_date=birth,
        sex=SEX.get(res.gender or "", "U"),
        address=_address(*picked),
    )


def _note_text(enc: _Entry, ctx: _Ctx) -> str | None:
    """Plain-text clinical notes attached to the encounter by DocumentReference."""
    texts = []
    for doc in ctx.linked(enc, "DocumentReference"):
        if doc.res.status == "entered-in-error":
            continue
        for k, content in enumerate(doc.res.content or []):
            att = content.attachment
            if att is None or not (att.contentType or "").startswith("text/plain"):
                continue
            if att.data is None:
                continue
            path = f"{doc.path}.content[{k}].attachment.data"
            try:
                raw = att.data if isinstance(att.data, bytes) else base64.b64decode(att.data)
                texts.append(raw.decode("utf-8"))
            except (binascii.Error, UnicodeDecodeError, ValueError):
                raise InputError(path, "not base64-encoded UTF-8 text") from None
    return "\n\n".join(t for t in texts if t.strip()) or None


def _participants(enc: _Entry, ctx: _Ctx, wanted: set[str] | None) -> Provider | None:
    """The first practitioner with an NPI among participants of the wanted types (any type
    when None; primary performers first)."""

    def types(p: Any) -> set[str]:
        return {str(c.code) for t in p.type or [] for c in _codings(t) if c.code}

    candidates = [p for p in enc.res.participant or [] if p.individual is not None]
    if wanted is None:
        candidates.sort(key=lambda p: not types(p) & {"PPRF", "ATND", "PRF"})
    else:
        candidates = [p for p in candidates if types(p) & wanted]
    for p in candidates:
        target = ctx.resolve(p.individual, enc)
        if target is None and _ref_type(p.individual) not in (
            None,
            "Practitioner",
            "PractitionerRole",
        ):
            continue
        found = _practitioner(target, p.individual, ctx)
        if found is not None:
            return found
    return None


def _clinicians(
    enc: _Entry, ctx: _Ctx, setting: Setting
) -> tuple[Provider | None, Provider | None]:
    """(rendering, attending). Professional: the primary performer renders, no attending.
    Institutional: the ATND participant attends (else the primary performer, noted), and
    a primary performer (PPRF/PRF) renders when there is one."""
    if setting == "professional":
        return _participants(enc, ctx, None), None
    attending = _participants(enc, ctx, {"ATND"})
    rendering = _participants(enc, ctx, {"PPRF", "PRF"})
    if attending is None:
        attending = rendering or _participants(enc, ctx, None)
        if attending is not None:
            ctx.note("no attending (ATND) participant: the primary performer is the attending")
    return rendering, attending


def _ub04_codes(claims: list[_Entry], builder: _EncounterBuilder) -> dict[str, Any]:
    """Type of bill, occurrence codes and spans, value and condition codes from the claims'
    supportingInfo (codes in the NUBC code systems); anything else there is noted."""
    out: dict[str, Any] = {
        "type_of_bill": None,
        "occurrence_codes": [],
        "occurrence_spans": [],
        "value_codes": [],
        "condition_codes": [],
    }
    for claim in claims:
        for k, info in enumerate(claim.res.supportingInfo or []):
            path = f"{claim.path}.supportingInfo[{k}]"
            coding = next(
                (c for c in _codings(info.code) if c.system and NUBC in c.system.lower()), None
            )
            category = {str(c.code).lower() for c in _codings(info.category) if c.code}
            code = _text(coding.code) if coding is not None else None
            system = coding.system.lower() if coding is not None else ""
            if "typeofbill" in category or "typeofbill" in system:
                code = code or _text(info.valueString)
                if code:
                    out["type_of_bill"] = code if len(code) == 4 else f"0{code}"
                    continue
            elif code and "occurrencespan" in system and info.timingPeriod is not None:
                period = info.timingPeriod
                start = _to_date(period.start, f"{path}.timingPeriod.start")
                end = _to_date(period.end or period.start, f"{path}.timingPeriod.end")
                out["occurrence_spans"].append(OccurrenceSpan(code=code, start=start, end=end))
                continue
            elif code and "occurrence" in system and info.timingDate is not None:
                when = _to_date(info.timingDate, f"{path}.timingDate")
                out["occurrence_codes"].append(Occurrence(code=code, date=when))
                continue
            elif code and "value" in system and info.valueQuantity is not None:
                value = check_charge(info.valueQuantity.value, f"{path}.valueQuantity.value")
                out["value_codes"].append(ValueCode(code=code, amount=value))
                continue
            elif code and "condition" in system:
                out["condition_codes"].append(code)
                continue
            builder.not_carried(
                "data_not_carried",
                path,
                "supporting information that is not a NUBC type of bill, occurrence, span, "
                "value or condition code is not carried",
            )
    return out


def _care_team(claims: list[_Entry], roles: set[str], ctx: _Ctx) -> Provider | None:
    """The first Claim.careTeam member with one of ``roles`` and an NPI."""
    for claim in claims:
        for member in claim.res.careTeam or []:
            if {str(c.code) for c in _codings(member.role)} & roles:
                found = _practitioner(ctx.resolve(member.provider, claim), member.provider, ctx)
                if found is not None:
                    return found
    return None


def _operating(claims: list[_Entry], enc: _Entry, ctx: _Ctx) -> Provider | None:
    """The operating physician: Claim.careTeam (operating), else the performer of the
    encounter's first Medical and Surgical ICD-10-PCS Procedure."""
    found = _care_team(claims, OPERATING_ROLES, ctx)
    if found is not None:
        return found
    for proc in ctx.linked(enc, "Procedure"):
        code = next((c.code for c in _codings(proc.res.code) if c.system in ICD10PCS), None)
        if not code or not str(code).startswith("0"):
            continue
        for performer in proc.res.performer or []:
            found = _practitioner(ctx.resolve(performer.actor, proc), performer.actor, ctx)
            if found is not None:
                return found
    return None


def _time_of(value: Any) -> time | None:
    """The hour and minute of a FHIR dateTime that has a time, as written."""
    if isinstance(value, datetime):
        return value.time().replace(second=0, microsecond=0, tzinfo=None)
    return None


def _encounter(
    enc: _Entry,
    ctx: _Ctx,
    bundle_source: str | None,
    source_system: str | None,
    source_id: str,
    received_at: datetime,
) -> Encounter:
    """One Encounter record from an Encounter resource and what it references."""
    res, path = enc.res, enc.path
    local_id = _text(res.id)
    if local_id is None:
        raise InputError(f"{path}.id", "missing")
    meta_source = _text(res.meta.source) if res.meta is not None else None
    system = meta_source or bundle_source or source_system or DEFAULT_SOURCE_SYSTEM
    encounter_id = f"{system}/{local_id}"
    klass = (res.class_fhir.code or "").strip().upper() if res.class_fhir else ""
    if klass not in CLASS_SETTING:
        raise InputError(f"{path}.class.code", f"unsupported encounter class {klass!r}")
    setting, pos = CLASS_SETTING[klass]
    if res.period is None or res.period.start is None:
        raise InputError(f"{path}.period.start", "missing")
    start = _to_date(res.period.start, f"{path}.period.start")
    end = _to_date(res.period.end, f"{path}.period.end") if res.period.end else start
    if end < start:
        raise InputError(f"{path}.period.end", "is before period.start")

    patients = ctx.of("Patient")
    patient_entry = ctx.resolve(res.subject, enc)
    if patient_entry is None or patient_entry.type != "Patient":
        if len(patients) != 1:
            raise InputError(f"{path}.subject", "does not resolve to a Patient in the bundle")
        patient_entry = patients[0]
    patient = _patient(patient_entry)

    builder = _EncounterBuilder(enc, ctx, setting, start)
    claims = builder.claims()
    diagnoses = builder.diagnoses(claims)
    services = builder.services(claims, {d.code for d in diagnoses if d.code})

    rendering, attending = _clinicians(enc, ctx, setting)
    attending = _care_team(claims, {"attending"}, ctx) or attending
    ub04_codes = _ub04_codes(claims, builder) if setting != "professional" else {}
    professional_billing = None
    for claim in claims:
        kind = _of_kept(_first_code, claim.res.type)
        if _claim_type(kind, setting) == "professional" and claim.res.provider is not None:
            professional_billing = _organization(
                ctx.resolve(claim.res.provider, claim), claim.res.provider, ctx
            ) or _practitioner(ctx.resolve(claim.res.provider, claim), claim.res.provider, ctx)
            break
    billing = None
    facility_claims = [
        c for c in claims if _claim_type(_of_kept(_first_code, c.res.type), setting) is None
    ]
    candidates = [(c.res.provider, c) for c in facility_claims] + [(res.serviceProvider, enc)]
    for ref, origin in candidates:
        if ref is None:
            continue
        target = ctx.resolve(ref, origin)
        billing = _profiled(_organization(target, ref, ctx), target, ref, ctx)
        if billing is not None:
            break
    if billing is None and (rendering or attending) is not None:
        ctx.note("no organisation NPI in the bundle: the rendering practitioner is billing")
        billing = rendering or attending
    if billing is None:
        raise InputError(f"{path}.serviceProvider", "no billing provider with an NPI")

    facility, stated_pos = _facility(enc, ctx)
    admission_date = admission_type = admission_source = discharge = None
    admission_time = discharge_time = discharge_date = None
    if setting == "inpatient":
        admission_date = start
        admission_time = _time_of(res.period.start)
        if res.period.end is not None and res.status not in ("in-progress", "onleave"):
            discharge_date = end
            discharge_time = _time_of(res.period.end)
        for coding in _codings(res.priority):
            code = (coding.code or "").strip()
            admission_type = PRIORITY_ADMISSION.get(code) or (code if code.isdigit() else None)
            if admission_type:
                break
    hosp = res.hospitalization
    if hosp is not None and setting == "inpatient":
        for coding in _codings(hosp.admitSource):
            code = (coding.code or "").strip()
            admission_source = ADMIT_SOURCE.get(code) or (
                code.upper() if _ADMIT_SOURCE_CODE.fullmatch(code) else None
            )
            if admission_source:
                break
    if hosp is not None and res.status not in ("in-progress", "onleave"):
        for coding in _codings(hosp.dischargeDisposition):
            code = (coding.code or "").strip()
            discharge = DISCHARGE.get(code) or (code if _TWO_DIGITS.fullmatch(code) else None)
            if discharge:
                break

    coverages = _coverages(claims, patient_entry, patient.patient_id, start, ctx)
    return _build(
        Encounter,
        path,
        event_id=event_id(source_id, encounter_id, "intake", "v1"),
        encounter_id=encounter_id,
        source_id=source_id,
        source_format="fhir",
        received_at=received_at,
        setting=setting,
        service_start=start,
        service_end=end,
        place_of_service=stated_pos if stated_pos and _TWO_DIGITS.fullmatch(stated_pos) else pos,
        admission_date=admission_date,
        admission_time=admission_time,
        admission_type=admission_type,
        admission_source=admission_source,
        discharge_status=discharge,
        discharge_date=discharge_date,
        discharge_time=discharge_time,
        patient=patient,
        coverage=coverages[0],
        other_coverages=coverages[1:],
        billing_provider=billing,
        rendering_provider=rendering,
        attending_provider=attending,
        operating_provider=_operating(claims, enc, ctx) if setting != "professional" else None,
        professional_billing_provider=professional_billing,
        facility=facility,
        **ub04_codes,
        diagnoses=diagnoses,
        services=services,
        note_text=_note_text(enc, ctx),
        notes=builder.notes,
    )


def parse_bundle(
    bundle: dict[str, Any],
    *,
    source_id: str,
    received_at: datetime,
    source_system: str | None = None,
    directory: ProviderDirectory = EMPTY_DIRECTORY,
) -> FhirParse:
    """Every Encounter in a FHIR R4 Bundle (already JSON-decoded) as an Encounter record.

    ``directory`` (provider profiles) completes the billing provider with what the EHR left
    out (EIN, taxonomy, address)."""
    if bundle.get("resourceType") != "Bundle":
        raise InputError("resourceType", f"expected Bundle, got {bundle.get('resourceType')!r}")
    ctx = _index(bundle)
    ctx.directory = directory
    encounters = ctx.of("Encounter")
    if not encounters:
        raise InputError("Bundle.entry", "no Encounter resource")
    meta = bundle.get("meta")
    raw_source = meta.get("source") if isinstance(meta, dict) else None
    if raw_source is not None and not isinstance(raw_source, str):
        raise InputError("Bundle.meta.source", "must be a string")
    bundle_source = _text(raw_source)
    records = [
        _encounter(e, ctx, bundle_source, source_system, source_id, received_at)
        for e in encounters
        if e.res.status not in ("cancelled", "entered-in-error")
    ]
    if not records:
        raise InputError("Bundle.entry", "every Encounter is cancelled or entered in error")
    return FhirParse(records, dict(ctx.ignored), ctx.notes)
