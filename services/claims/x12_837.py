"""Write X12 005010X222A1 (837P professional) interchanges from coded encounters.

No library builds a valid 837, so this module does; every shape it writes is checked with
pyx12 in ``tests/unit/test_claims_837.py``. Delimiters are fixed: ``*`` element, ``:``
component, ``^`` repetition, ``~`` segment (followed by a newline for readability).
Free text (names, addresses) has delimiter characters replaced; identifiers and codes that
contain them are rejected with ``InputError``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from pipeline.errors import InputError
from pipeline.models import Address, CodedEncounter, Coverage, Patient, Provider, ServiceLine

ELEMENT = "*"
COMPONENT = ":"
REPETITION = "^"
SEGMENT = "~"
IMPLEMENTATION = "005010X222A1"
MAX_DIAGNOSES = 12  # HI01..HI12
MAX_POINTERS = 4  # SV107-1..SV107-4
MAX_LINES = 50  # 2400 loop repeat in 005010X222A1
MAX_CLAIMS_PER_TRANSACTION = 5000  # the guide's recommended ceiling per ST/SE

# SBR09 claim filing indicator codes allowed by 005010X222A1.
_FILING = "11 12 13 14 15 16 17 AM BL CH CI DS FI HM LM MA MB MC OF TV VA WC ZZ"
CLAIM_FILING_CODES = frozenset(_FILING.split())
SELF = "18"  # SBR02: the patient is the subscriber
# PAT01 individual relationship codes 005010X222A1 allows when the patient is a dependent.
PATIENT_RELATIONSHIP_CODES = frozenset({"01", "19", "20", "21", "39", "40", "53", "G8"})
# POS where the guide requires the admission date (DTP*435): inpatient hospital, SNF, psych.
_INPATIENT_POS = frozenset({"21", "51", "61"})
_DELIMITERS = frozenset(ELEMENT + COMPONENT + REPETITION + SEGMENT)
# Printable characters of the X12 extended character set, minus our delimiters.
_TEXT_OK = re.compile(r"[^A-Z0-9 !\"&'()+,\-./;?=%@\[\]_{}\\|<>#$]")
_PO_BOX = re.compile(r"\b(P\.?\s*O\.?\s*BOX|POST\s+OFFICE\s+BOX|LOCK\s*BOX)\b")
_ICD10 = re.compile(r"^[A-Z][0-9][0-9A-Z]{1,5}$")
_PROC = re.compile(r"^[A-Z0-9]{5}$")
_MODIFIER = re.compile(r"^[A-Z0-9]{2}$")
_CREDENTIAL_WORDS = "MD DO NP PA PAC RN PHD DPM DC OD DDS DMD FNP CRNA APRN LCSW DPT PT MBBS"
_CREDENTIALS = frozenset(_CREDENTIAL_WORDS.split())
_SUFFIXES = frozenset({"JR", "SR", "II", "III", "IV", "V"})
_PARTICLES = frozenset(
    {"DE", "LA", "DEL", "DA", "DI", "DOS", "VAN", "VON", "DER", "DEN", "LE", "DU"}
)

Frequency = Literal["1", "7", "8"]


@dataclass(frozen=True)
class ClaimInput:
    """One claim to write: a coded encounter, its patient control number and frequency."""

    claim_id: str
    coded: CodedEncounter
    frequency: Frequency = "1"
    original_reference: str | None = None  # payer claim control number; needed for 7 and 8


@dataclass(frozen=True)
class Submitter:
    """The 1000A submitter: who sends the file and whom the payer calls about it."""

    name: str
    contact_name: str
    phone: str | None = None  # ten digits
    email: str | None = None


DEFAULT_SUBMITTER = Submitter(
    name="CLAIMFLOW", contact_name="CLAIMS OPERATIONS", email="claims@claimflow.invalid"
)


# --- value formatting ----------------------------------------------------------------------


def text(value: str, max_len: int) -> str:
    """Upper-case free text, fold accents, drop delimiter and non-X12 characters, truncate."""
    folded = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode().upper()
    cleaned = " ".join(_TEXT_OK.sub(" ", folded).split())
    return cleaned[:max_len].rstrip()


def ident(value: str, field: str, *, min_len: int = 1, max_len: int = 80) -> str:
    """An identifier written as is: reject delimiters and bad lengths rather than alter it."""
    value = value.strip()
    if any(ch in _DELIMITERS for ch in value):
        raise InputError(
            field, f"contains an X12 delimiter ({ELEMENT}{COMPONENT}{REPETITION}{SEGMENT})"
        )
    if not value.isprintable() or not value.isascii():
        raise InputError(field, "contains characters X12 cannot carry")
    if not min_len <= len(value) <= max_len:
        raise InputError(field, f"length must be {min_len} to {max_len}, got {len(value)}")
    return value


def amount(value: Decimal) -> str:
    """An X12 R (decimal) value: cents at most, no trailing zeros (125, 125.5, 125.25)."""
    out = f"{Decimal(value).quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):f}"
    if "." in out:
        out = out.rstrip("0").rstrip(".")
    return "0" if out in ("-0", "") else out


def quantity(value: float) -> str:
    """Service units as an X12 R value (1, 1.5, 0.25)."""
    out = f"{Decimal(str(value)).quantize(Decimal('0.001'), rounding=ROUND_HALF_UP):f}"
    return out.rstrip("0").rstrip(".") if "." in out else out


def d8(value: date) -> str:
    """A date as CCYYMMDD."""
    return value.strftime("%Y%m%d")


def dx_code(code: str, field: str) -> str:
    """An ICD-10-CM code as HI carries it: upper case, no dot."""
    out = code.replace(".", "").strip().upper()
    if not _ICD10.match(out):
        raise InputError(field, f"not an ICD-10-CM code: {code!r}")
    return out


@dataclass(frozen=True)
class PersonName:
    """A person's name split the way NM1 wants it."""

    last: str
    first: str = ""
    middle: str = ""
    suffix: str = ""


def person_name(name: str) -> PersonName:
    """Split 'Last, First M' or 'Dr. First M Last Jr, MD' into NM1 parts (credentials dropped)."""

    def words(part: str) -> list[str]:
        return [w for w in text(part, 200).replace(",", " ").split() if w]

    def bare(word: str) -> str:
        return word.replace(".", "").replace("-", "")

    parts = name.split(",")
    suffix = ""
    # Trailing comma parts made only of credentials or suffixes ("..., Jr., MD") are not names.
    while len(parts) > 1 and all(
        bare(w) in _CREDENTIALS or bare(w) in _SUFFIXES for w in words(parts[-1])
    ):
        found = [bare(w) for w in words(parts.pop()) if bare(w) in _SUFFIXES]
        suffix = found[0] if found else suffix
    if len(parts) > 1:  # "Last, First Middle"
        last_words = words(parts[0])
        given = words(" ".join(parts[1:]))
    else:  # "First Middle Last"
        tokens = [w for w in words(parts[0]) if bare(w) not in _CREDENTIALS]
        if tokens and bare(tokens[0]) in {"DR", "MR", "MRS", "MS"}:
            tokens = tokens[1:]
        if len(tokens) > 1 and bare(tokens[-1]) in _SUFFIXES:
            suffix = bare(tokens.pop())
        cut = len(tokens) - 1
        while cut > 1 and bare(tokens[cut - 1]) in _PARTICLES:  # "Maria de la Cruz"
            cut -= 1
        last_words, given = tokens[cut:], tokens[:cut]
    if len(last_words) > 1 and bare(last_words[-1]) in _SUFFIXES:  # "Smith Jr, John"
        suffix = bare(last_words.pop())
    given = [w for w in given if bare(w) not in _CREDENTIALS]
    if given and bare(given[-1]) in _SUFFIXES:
        suffix = bare(given.pop())
    last = " ".join(last_words)[:60] or text(name, 60)
    return PersonName(
        last=last,
        first=given[0][:35] if given else "",
        middle=" ".join(given[1:])[:25],
        suffix=suffix[:10],
    )


# --- segments ------------------------------------------------------------------------------


def _seg(*elements: str) -> str:
    """Join elements, drop trailing empty ones, terminate."""
    items = list(elements)
    while items and items[-1] == "":
        items.pop()
    return ELEMENT.join(items) + SEGMENT


def _comp(*parts: str) -> str:
    """Join a composite, dropping trailing empty components."""
    items = list(parts)
    while items and items[-1] == "":
        items.pop()
    return COMPONENT.join(items)


def _address(address: Address, field: str, *, physical: bool = False) -> list[str]:
    """N3 and N4; ``physical`` applies the guide's rules for 2010AA and 2310C locations."""
    line1 = text(address.line1, 55)
    if not line1:
        raise InputError(f"{field}.line1", "empty after removing characters X12 cannot carry")
    if physical:
        # pyx12 does not check these two, but the guide requires them and payers reject on them.
        if len(address.postal_code) != 9:
            raise InputError(f"{field}.postal_code", "the guide requires the full 9-digit ZIP")
        lines = f"{address.line1} {address.line2 or ''}"
        if _PO_BOX.search(lines.upper()):
            raise InputError(f"{field}.line1", "must be a street address, not a post office box")
    n3 = _seg("N3", line1, text(address.line2 or "", 55))
    city = text(address.city, 30)
    if len(city) < 2:
        raise InputError(f"{field}.city", "must have at least 2 characters")
    country = address.country.strip().upper()
    n4 = _seg("N4", city, address.state, address.postal_code, "" if country == "US" else country)
    return [n3, n4]


def _nm1_provider(entity_code: str, provider: Provider, field: str) -> str:
    """NM1 for a provider identified by NPI, as a person or an organisation."""
    npi = check_npi(provider.npi, f"{field}.npi")
    if provider.entity == "person":
        n = person_name(provider.name)
        return _seg("NM1", entity_code, "1", n.last, n.first, n.middle, "", n.suffix, "XX", npi)
    org = text(provider.name, 60)
    if not org:
        raise InputError(f"{field}.name", "empty after removing characters X12 cannot carry")
    return _seg("NM1", entity_code, "2", org, "", "", "", "", "XX", npi)


def check_npi(npi: str, field: str) -> str:
    """Return the NPI if its check digit is right (Luhn over '80840' + the first nine digits)."""
    if not re.fullmatch(r"\d{10}", npi):
        raise InputError(field, "an NPI has 10 digits")
    digits = [int(c) for c in "80840" + npi[:9]]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    if (10 - total % 10) % 10 != int(npi[9]):
        raise InputError(field, "NPI check digit is wrong")
    return npi


def _billing_loop(hl: int, provider: Provider) -> list[str]:
    """2000A billing provider HL and the 2010AA name, address and tax id."""
    field = "encounter.billing_provider"
    if provider.address is None:
        raise InputError(f"{field}.address", "the billing provider address is required")
    if provider.tax_id is None:
        raise InputError(f"{field}.tax_id", "the billing provider EIN (REF*EI) is required")
    out = [_seg("HL", str(hl), "", "20", "1")]
    if provider.taxonomy:
        taxonomy = ident(provider.taxonomy, f"{field}.taxonomy", min_len=10, max_len=10)
        out.append(_seg("PRV", "BI", "PXC", taxonomy))
    out.append(_nm1_provider("85", provider, field))
    out.extend(_address(provider.address, f"{field}.address", physical=True))
    out.append(_seg("REF", "EI", provider.tax_id))
    return out


def relationship_of(coverage: Coverage) -> str:
    """The patient's relationship to the subscriber, checked against what the 837P allows."""
    code = coverage.relationship.strip().upper()
    if code != SELF and code not in PATIENT_RELATIONSHIP_CODES:
        allowed = ", ".join(sorted(PATIENT_RELATIONSHIP_CODES))
        raise InputError(
            "encounter.coverage.relationship",
            f"{code!r} is not an 837P relationship: 18 (self) or, for a dependent, {allowed}",
        )
    if code != SELF and coverage.subscriber is None:
        raise InputError(
            "encounter.coverage.subscriber",
            f"the subscriber is required when the patient is not the subscriber "
            f"(relationship {code})",
        )
    return code


def _demographics(birth_date: date, sex: str) -> str:
    """DMG: date of birth and sex, for a subscriber or a patient."""
    return _seg("DMG", "D8", d8(birth_date), sex)


def _subscriber_loop(
    hl: int, parent: int, coverage: Coverage, patient: Patient | None
) -> list[str]:
    """2000B subscriber HL, 2010BA subscriber and 2010BB payer.

    ``patient`` is given when the patient is the subscriber (SBR02 18, claims follow directly);
    otherwise the subscriber comes from ``coverage.subscriber`` and 2000C patient loops follow.
    """
    filing = coverage.plan_type.upper()
    if filing not in CLAIM_FILING_CODES:
        raise InputError("encounter.coverage.plan_type", f"not a claim filing code: {filing!r}")
    group = ""
    if coverage.group_number:
        group = ident(coverage.group_number, "encounter.coverage.group_number", max_len=50)
    member = ident(coverage.member_id, "encounter.coverage.member_id", min_len=2)
    payer_name = text(coverage.payer_name, 60)
    if not payer_name:
        raise InputError("encounter.coverage.payer_name", "empty after removing bad characters")
    payer_id = ident(coverage.payer_id, "encounter.coverage.payer_id", min_len=2)
    if patient is not None:
        last = text(patient.last_name, 60)
        if not last:
            raise InputError("encounter.patient.last_name", "empty after removing bad characters")
        return [
            _seg("HL", str(hl), str(parent), "22", "0"),
            _seg("SBR", "P", SELF, group, "", "", "", "", "", filing),
            _seg("NM1", "IL", "1", last, text(patient.first_name, 35), "", "", "", "MI", member),
            *_address(patient.address, "encounter.patient.address"),
            _demographics(patient.birth_date, patient.sex),
            _seg("NM1", "PR", "2", payer_name, "", "", "", "", "PI", payer_id),
        ]
    subscriber = coverage.subscriber
    if subscriber is None:  # relationship_of refuses this before grouping; kept for safety
        raise InputError("encounter.coverage.subscriber", "required for a dependent patient")
    field = "encounter.coverage.subscriber"
    last = text(subscriber.last_name, 60)
    if not last:
        raise InputError(f"{field}.last_name", "empty after removing bad characters")
    out = [
        _seg("HL", str(hl), str(parent), "22", "1"),
        # SBR02 is sent only when the subscriber is the patient.
        _seg("SBR", "P", "", group, "", "", "", "", "", filing),
        _seg("NM1", "IL", "1", last, text(subscriber.first_name, 35), "", "", "", "MI", member),
    ]
    # N3/N4 and DMG are situational for a subscriber who is not the patient: sent when known.
    if subscriber.address is not None:
        out.extend(_address(subscriber.address, f"{field}.address"))
    if subscriber.birth_date is not None:
        out.append(_demographics(subscriber.birth_date, subscriber.sex))
    out.append(_seg("NM1", "PR", "2", payer_name, "", "", "", "", "PI", payer_id))
    return out


def _patient_loop(hl: int, parent: int, patient: Patient, relationship: str) -> list[str]:
    """2000C patient HL and 2010CA: the dependent patient's relationship, name and address."""
    last = text(patient.last_name, 60)
    if not last:
        raise InputError("encounter.patient.last_name", "empty after removing bad characters")
    return [
        _seg("HL", str(hl), str(parent), "23", "0"),
        _seg("PAT", relationship),
        _seg("NM1", "QC", "1", last, text(patient.first_name, 35)),
        *_address(patient.address, "encounter.patient.address"),
        _demographics(patient.birth_date, patient.sex),
    ]


def _line(line: ServiceLine, number: int, claim_pos: str, n_dx: int, claim_id: str) -> list[str]:
    """2400 loop: LX, SV1, DTP*472 and the line item control number."""
    field = f"lines[{number - 1}]"
    code = line.code.strip().upper()
    if not _PROC.match(code):
        raise InputError(f"{field}.code", f"not a CPT/HCPCS code: {line.code!r}")
    mods = [m.strip().upper() for m in line.modifiers if m.strip()]
    if len(mods) > 4:
        raise InputError(f"{field}.modifiers", "at most 4 modifiers fit on a professional line")
    for m in mods:
        if not _MODIFIER.match(m):
            raise InputError(f"{field}.modifiers", f"not a modifier: {m!r}")
    pointers: list[int] = []
    for p in line.dx_pointers:
        if not 1 <= p <= n_dx:
            raise InputError(f"{field}.dx_pointers", f"pointer {p} is outside 1..{n_dx}")
        if p not in pointers:
            pointers.append(p)
    if not pointers:
        raise InputError(f"{field}.dx_pointers", "a professional line needs a diagnosis pointer")
    if line.charge < 0:
        raise InputError(f"{field}.charge", "must not be negative")
    pos = line.place_of_service or claim_pos
    return [
        _seg("LX", str(number)),
        _seg(
            "SV1",
            _comp("HC", code, *mods),
            amount(line.charge),
            "UN",
            quantity(line.units),
            pos if pos != claim_pos else "",  # only when it differs from CLM05-1
            "",
            _comp(*(str(p) for p in pointers[:MAX_POINTERS])),
        ),
        _seg("DTP", "472", "D8", d8(line.service_date)),
        _seg("REF", "6R", f"{claim_id}L{number}"),
    ]


def claim_segments(claim: ClaimInput) -> list[str]:
    """The 2300 claim loop with its 2310 providers and 2400 lines.

    Line ``dx_pointers`` are 1-based positions in the diagnoses ordered by ``sequence``.
    """
    coded = claim.coded
    enc = coded.encounter
    claim_id = ident(claim.claim_id, "claim_id", max_len=38)
    if not coded.lines:
        raise InputError("lines", "a claim needs at least one service line")
    if len(coded.lines) > MAX_LINES:
        raise InputError("lines", f"a professional claim carries at most {MAX_LINES} lines")
    diagnoses = sorted(coded.diagnoses, key=lambda d: d.sequence)[:MAX_DIAGNOSES]
    if not diagnoses:
        raise InputError("diagnoses", "a professional claim needs a principal diagnosis")
    codes = [dx_code(d.code, f"diagnoses[{i}].code") for i, d in enumerate(diagnoses)]
    total = sum((line.charge for line in coded.lines), Decimal("0"))
    pos = enc.place_of_service

    out = [
        _seg(
            "CLM",
            claim_id,
            amount(total),
            "",
            "",
            _comp(pos, "B", claim.frequency),
            "Y",
            "A",
            "Y",
            "Y",
        )
    ]
    if pos in _INPATIENT_POS and enc.admission_date is not None:
        out.append(_seg("DTP", "435", "D8", d8(enc.admission_date)))
    if claim.frequency in ("7", "8"):
        if not claim.original_reference:
            raise InputError(
                "original_reference", "a replacement or void needs the payer's claim number"
            )
        ref = ident(claim.original_reference, "original_reference", max_len=50)
        out.append(_seg("REF", "F8", ref))
    out.append(_seg("HI", *(_comp("ABK" if i == 0 else "ABF", c) for i, c in enumerate(codes))))
    rendering = enc.rendering_provider
    if rendering is not None and rendering.npi != enc.billing_provider.npi:
        field = "encounter.rendering_provider"
        out.append(_nm1_provider("82", rendering, field))
        if rendering.taxonomy:
            taxonomy = ident(rendering.taxonomy, f"{field}.taxonomy", min_len=10, max_len=10)
            out.append(_seg("PRV", "PE", "PXC", taxonomy))
    facility = enc.facility
    billing_address = enc.billing_provider.address
    if (
        facility is not None
        and facility.address is not None
        and (facility.address != billing_address)
    ):
        name = text(facility.name, 60)
        if not name:
            raise InputError("encounter.facility.name", "empty after removing bad characters")
        npi = check_npi(facility.npi, "encounter.facility.npi") if facility.npi else ""
        out.append(_seg("NM1", "77", "2", name, "", "", "", "", "XX" if npi else "", npi))
        out.extend(_address(facility.address, "encounter.facility.address", physical=True))
    for number, line in enumerate(coded.lines, start=1):
        out.extend(_line(line, number, pos, len(codes), claim_id))
    return out


# --- interchange ---------------------------------------------------------------------------


@dataclass
class _Insured:
    """One 2000B loop: a subscriber's policy with a payer and the patients it carries claims for.

    ``patient`` is set when the subscriber is the patient (claims follow the 2000B directly);
    otherwise each (patient, relationship) in ``patients`` gets its own 2000C loop.
    """

    coverage: Coverage
    patient: Patient | None
    patients: dict[tuple[Patient, str], list[ClaimInput]]


@contextmanager
def _blame(claim: ClaimInput, batch: bool) -> Iterator[None]:
    """In a batch, prefix an InputError's field with the claim it came from."""
    try:
        yield
    except InputError as exc:
        if not batch:
            raise
        raise InputError(f"claims[{claim.claim_id}].{exc.field}", exc.reason) from exc


def _group(claims: Sequence[ClaimInput]) -> list[tuple[Provider, list[_Insured]]]:
    """Claims grouped by billing provider, then subscriber and payer, in first-seen order.

    A patient who is the subscriber gets a 2000B of their own (SBR02 18). Dependents of one
    subscriber with one payer share a 2000B, one 2000C per patient: the guide does not let a
    2000B both be the patient and have patients under it.
    """
    providers: dict[Provider, dict[tuple[object, ...], _Insured]] = {}
    for claim in claims:
        enc = claim.coded.encounter
        coverage = enc.coverage
        with _blame(claim, len(claims) > 1):
            relationship = relationship_of(coverage)
        insureds = providers.setdefault(enc.billing_provider, {})
        if relationship == SELF:
            key: tuple[object, ...] = (SELF, coverage, enc.patient)
            patient: Patient | None = enc.patient
        else:
            key = (
                coverage.payer_id,
                coverage.payer_name,
                coverage.plan_type,
                coverage.member_id,
                coverage.group_number,
                coverage.subscriber,
            )
            patient = None
        insured = insureds.setdefault(key, _Insured(coverage, patient, {}))
        insured.patients.setdefault((enc.patient, relationship), []).append(claim)
    return [(p, list(insureds.values())) for p, insureds in providers.items()]


def _transaction(
    claims: Sequence[ClaimInput],
    st_control: str,
    bht_ref: str,
    created: datetime,
    submitter: Submitter,
    sender_id: str,
    receiver_name: str,
    receiver_id: str,
) -> list[str]:
    """One ST..SE transaction set carrying ``claims``."""
    contact = [
        "IC",
        text(submitter.contact_name, 60),
        *(
            ("TE", ident(submitter.phone, "submitter.phone", min_len=10, max_len=10))
            if submitter.phone
            else ()
        ),
        *(
            ("EM", ident(submitter.email, "submitter.email", max_len=256))
            if submitter.email
            else ()
        ),
    ]
    if len(contact) < 4:
        raise InputError("submitter", "a phone number or an email address is required")
    segs = [
        _seg("ST", "837", st_control, IMPLEMENTATION),
        _seg(
            "BHT", "0019", "00", bht_ref, created.strftime("%Y%m%d"), created.strftime("%H%M"), "CH"
        ),
        _seg("NM1", "41", "2", text(submitter.name, 60), "", "", "", "", "46", sender_id),
        _seg("PER", *contact),
        _seg("NM1", "40", "2", text(receiver_name, 60), "", "", "", "", "46", receiver_id),
    ]
    batch = len(claims) > 1
    hl = 0
    for provider, insureds in _group(claims):
        hl += 1
        provider_hl = hl
        segs.extend(_billing_loop(provider_hl, provider))
        for insured in insureds:
            hl += 1
            subscriber_hl = hl
            first = next(iter(insured.patients.values()))[0]
            with _blame(first, batch):
                segs.extend(
                    _subscriber_loop(subscriber_hl, provider_hl, insured.coverage, insured.patient)
                )
            for (patient, relationship), patient_claims in insured.patients.items():
                if insured.patient is None:
                    hl += 1
                    with _blame(patient_claims[0], batch):
                        segs.extend(_patient_loop(hl, subscriber_hl, patient, relationship))
                for claim in patient_claims:
                    with _blame(claim, batch):
                        segs.extend(claim_segments(claim))
    segs.append(_seg("SE", str(len(segs) + 1), st_control))
    return segs


def build_837p(
    claims: Sequence[ClaimInput],
    *,
    sender_id: str,
    receiver_id: str,
    control_number: int,
    created: datetime,
    receiver_name: str | None = None,
    submitter: Submitter = DEFAULT_SUBMITTER,
    usage: Literal["P", "T"] = "P",
) -> str:
    """One 837P interchange (ISA..IEA) for a batch of claims, hierarchy built from the data."""
    if not claims:
        raise InputError("claims", "an interchange needs at least one claim")
    if not 1 <= control_number <= 999_999_999:
        raise InputError("control_number", "must be 1 to 999999999")
    sender = ident(sender_id, "sender_id", min_len=2, max_len=15)
    receiver = ident(receiver_id, "receiver_id", min_len=2, max_len=15)
    icn = f"{control_number:09d}"
    segs = [
        _seg(
            "ISA",
            "00",
            " " * 10,
            "00",
            " " * 10,
            "ZZ",
            sender.ljust(15),
            "ZZ",
            receiver.ljust(15),
            created.strftime("%y%m%d"),
            created.strftime("%H%M"),
            REPETITION,
            "00501",
            icn,
            "0",
            usage,
            COMPONENT,
        ),
        _seg(
            "GS",
            "HC",
            sender,
            receiver,
            created.strftime("%Y%m%d"),
            created.strftime("%H%M"),
            str(control_number),
            "X",
            IMPLEMENTATION,
        ),
    ]
    chunks = [
        claims[i : i + MAX_CLAIMS_PER_TRANSACTION]
        for i in range(0, len(claims), MAX_CLAIMS_PER_TRANSACTION)
    ]
    for n, chunk in enumerate(chunks, start=1):
        segs.extend(
            _transaction(
                chunk,
                f"{n:04d}",
                f"{icn}{n:04d}",
                created,
                submitter,
                sender,
                receiver_name or receiver,
                receiver,
            )
        )
    segs.append(_seg("GE", str(len(chunks)), str(control_number)))
    segs.append(_seg("IEA", "1", icn))
    return "\n".join(segs) + "\n"


def build_837p_claim(
    claim: ClaimInput,
    *,
    sender_id: str,
    receiver_id: str,
    control_number: int,
    created: datetime,
    receiver_name: str | None = None,
    submitter: Submitter = DEFAULT_SUBMITTER,
    usage: Literal["P", "T"] = "P",
) -> str:
    """Convenience: an interchange carrying one claim."""
    return build_837p(
        [claim],
        sender_id=sender_id,
        receiver_id=receiver_id,
        control_number=control_number,
        created=created,
        receiver_name=receiver_name,
        submitter=submitter,
        usage=usage,
    )
