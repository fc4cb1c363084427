"""The 837 common to the professional (837P) and institutional (837I) claim: what both
writers share, over ``services/x12/writer.py``.

- the claim to write (``ClaimInput``), the submitter, ``ClaimError``;
- value formatting of the claim (diagnosis and procedure codes, modifiers, person names,
  NPIs);
- the loops both guides define alike: 2010AA billing provider, 2000B/2010BA subscriber and
  2010BB payer, 2000C patient, the prior claim reference, the 2320/2330 other payers;
- the hierarchy (2000A billing provider, 2000B subscriber and payer, 2000C patient), the
  header (BHT, 1000A, 1000B) and the envelope, which ``build_837`` fills with the claim loop
  of a ``Profile``: the 837P's (``x12_837p.py``) or the 837I's (``x12_837i.py``).

Free text (names, addresses) has delimiter characters replaced; identifiers and codes that
contain them are rejected with ``InputError``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Literal

from pipeline.errors import InputError
from pipeline.models import Address, CodedEncounter, Coverage, Patient, Provider
from services.claims.cob import (
    PriorPayer,
    check_balance,
    later_payer_loops,
    prior_payer_loops,
    sequence_code,
)
from services.refdata import npi as npi_check
from services.x12 import guides
from services.x12.writer import (
    DELIMITERS,
    Rendered,
    Segment,
    Usage,
    ccyymmdd,
    d8,
    early,
    envelope_id,
    enveloped,
    hhmm,
    ident,
    render,
    text,
    transaction_set,
)

MAX_CLAIMS_PER_TRANSACTION = guides.MAX_CLAIMS_PER_TRANSACTION

# SBR09 claim filing indicator codes allowed by 005010X222A1 and 005010X223A2.
CLAIM_FILING_CODES = guides.CLAIM_FILING_CODES
SELF = "18"  # SBR02: the patient is the subscriber
# PAT01 individual relationship codes both guides allow when the patient is a dependent.
PATIENT_RELATIONSHIP_CODES = frozenset({"01", "19", "20", "21", "39", "40", "53", "G8"})
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
    # Coordination of benefits: the coverage billed when it is not the encounter's first
    # (a secondary or tertiary claim), and the payers that adjudicated it before (cob.py).
    billed_coverage: Coverage | None = None
    prior_payers: tuple[PriorPayer, ...] = ()
    # Payers after this one, known from the encounter: their 2320/2330 loops (without an
    # adjudication) let a payer forward the claim (a crossover) and tell it there is more.
    later_payers: tuple[Coverage, ...] = ()

    @property
    def coverage(self) -> Coverage:
        """The coverage this claim is billed to."""
        return self.billed_coverage or self.coded.encounter.coverage

    @property
    def sequence(self) -> str:
        """SBR01 of the billed payer: P, S or T after as many prior payers."""
        return sequence_code(len(self.prior_payers) + 1)


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


class ClaimError(InputError):
    """An ``InputError`` in one claim of a batch: ``claim_id`` says which claim to set aside."""

    def __init__(self, claim_id: str, field: str, reason: str) -> None:
        super().__init__(field, reason)
        self.claim_id = claim_id


# --- value formatting ----------------------------------------------------------------------


def dx_code(code: str, field: str) -> str:
    """An ICD-10-CM code as HI carries it: upper case, no dot."""
    out = code.replace(".", "").strip().upper()
    if not _ICD10.match(out):
        raise InputError(field, f"not an ICD-10-CM code: {code!r}")
    return out


#: What ``dx_code`` made of each code it accepted, by the code as sent: a code recurs on
#: many claims, and its replace, strip, upper, match and the field's name cost 0.37 us
#: (kept: 0.04).
_DX_CODES: dict[str, str] = {}


def kept_dx_code(code: str) -> str | None:
    """``dx_code`` of a code it accepted before, else None (``dx_code`` then says why, or
    keeps it): no field named, no error raised."""
    return _DX_CODES.get(code)


def dx_code_kept(code: str, field: str) -> str:
    """``dx_code``, kept by the code as sent when it is one."""
    out = _DX_CODES.get(code)
    if out is None:
        out = dx_code(code, field)
        if len(_DX_CODES) >= KEPT_MAX:
            _DX_CODES.clear()
        _DX_CODES[code] = out
    return out


#: A line's procedure composite (``HC:code[:modifiers]``, SV101 and SV202) by its code and
#: modifiers as sent, kept once ``procedure_code`` and ``modifiers`` accepted them: the
#: same few codes fill every claim, and checking them cost 0.9 us a line (kept: 0.18).
_PROCEDURES: dict[tuple[str | None, ...], str] = {}


def kept_procedure(code: str | None, mods: Sequence[str]) -> str | None:
    """The composite of a code and modifiers ``keep_procedure`` kept, else None."""
    return _PROCEDURES.get((code, *mods))


def keep_procedure(code: str | None, mods: Sequence[str], composite: str) -> None:
    """Keep the composite written of a code and modifiers both checks accepted."""
    if len(_PROCEDURES) >= KEPT_MAX:
        _PROCEDURES.clear()
    _PROCEDURES[(code, *mods)] = composite


def procedure_code(code: str, field: str) -> str:
    """A CPT/HCPCS code as SV1/SV2 carry it: five letters or digits."""
    out = code.strip().upper()
    if not _PROC.match(out):
        raise InputError(field, f"not a CPT/HCPCS code: {code!r}")
    return out


def modifiers(
    values: Sequence[str], field: str, *, at_most: int = guides.MAX_MODIFIERS
) -> list[str]:
    """Procedure modifiers, upper case, checked for shape and count."""
    mods = [m.strip().upper() for m in values if m.strip()]
    if len(mods) > at_most:
        raise InputError(f"{field}.modifiers", f"at most {at_most} modifiers fit on a line")
    for m in mods:
        if not _MODIFIER.match(m):
            raise InputError(f"{field}.modifiers", f"not a modifier: {m!r}")
    return mods


@dataclass(frozen=True)
class PersonName:
    """A person's name split the way NM1 wants it."""

    last: str
    first: str = ""
    middle: str = ""
    suffix: str = ""


@lru_cache(maxsize=4096)
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


def check_npi(npi: str, field: str) -> str:
    """Return the NPI if its check digit is right (Luhn over '80840' + the first nine digits)."""
    if not re.fullmatch(r"\d{10}", npi):
        raise InputError(field, "an NPI has 10 digits")
    if not npi_check.is_valid(npi):
        raise InputError(field, "NPI check digit is wrong")
    return npi


# --- loops shared by 837P and 837I ---------------------------------------------------------


def address_segments(
    address: Address, field: str, *, physical: bool = False
) -> list[Segment | Rendered]:
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
    line2 = text(address.line2 or "", 55)
    n3 = f"N3*{line1}*{line2}~" if line2 else f"N3*{line1}~"  # free text: no delimiter
    city = text(address.city, 30)
    if len(city) < 2:
        raise InputError(f"{field}.city", "must have at least 2 characters")
    country = address.country.strip().upper()
    if country == "US":
        country = ""
    state, postal = address.state, address.postal_code
    n4: Segment | Rendered
    if state and postal and DELIMITERS.isdisjoint(state + postal + country):
        # ``early``'s text: the city is free text, none of the four carries a delimiter and
        # only the country may be empty, at the end (with the city's ``text``: 0.67 us
        # a segment to 0.52).
        n4 = f"N4*{city}*{state}*{postal}*{country}~" if country else f"N4*{city}*{state}*{postal}~"
    else:
        n4 = early("N4", city, state, postal, country)
    return [n3, n4]


KEPT_MAX = 4096
"""The most instances each by-instance memo below holds (then it is emptied at once)."""

_NM1: dict[tuple[int, str], tuple[Provider, str]] = {}


def provider_nm1(entity_code: str, provider: Provider, field: str) -> Segment | Rendered:
    """NM1 for a provider identified by NPI, as a person or an organisation.

    Kept by the provider instance (held with its text, so that its id names it while kept):
    the stage's decoder hands the same Provider object to every record it recurs in
    (``avro_read.KEPT``), and a Provider cannot change (frozen, immutable fields). Only a
    written NM1 is kept; a refusal is raised again each time. The ``field`` only names
    an error."""
    key = (id(provider), entity_code)
    hit = _NM1.get(key)
    if hit is not None and hit[0] is provider:
        return hit[1]
    out = _provider_nm1(entity_code, provider, field)
    if len(_NM1) >= KEPT_MAX:
        _NM1.clear()
    _NM1[key] = (provider, out)
    return out


def _provider_nm1(entity_code: str, provider: Provider, field: str) -> str:
    """``provider_nm1`` written."""
    npi = check_npi(provider.npi, f"{field}.npi")
    # The names are free text (``text``), the NPI ten digits: no delimiter, and the NPI
    # last is never empty.
    if provider.entity == "person":
        n = person_name(provider.name)
        return f"NM1*{entity_code}*1*{n.last}*{n.first}*{n.middle}**{n.suffix}*XX*{npi}~"
    org = text(provider.name, 60)
    if not org:
        raise InputError(f"{field}.name", "empty after removing characters X12 cannot carry")
    return f"NM1*{entity_code}*2*{org}*****XX*{npi}~"


_PRV: dict[tuple[str, str], str] = {}


def provider_taxonomy(code: str, taxonomy: str, field: str) -> Segment | Rendered:
    """PRV of a provider's taxonomy (``field`` names the provider, for an error), kept by
    code and taxonomy once written: the attending's or the rendering physician's recurs on
    claim after claim, and its ``ident`` and ``early`` cost 0.8 us (kept: 0.15)."""
    key = (code, taxonomy)
    out = _PRV.get(key)
    if out is None:
        checked = ident(taxonomy, f"{field}.taxonomy", min_len=10, max_len=10)
        written = early("PRV", code, "PXC", checked)
        if not isinstance(written, str):
            return written
        if len(_PRV) >= KEPT_MAX:
            _PRV.clear()
        out = _PRV[key] = written
    return out


def billing_loop(
    hl: int, provider: Provider, pay_to: Address | None = None
) -> list[Segment | Rendered]:
    """2000A billing provider HL, the 2010AA name, address and tax id, and the 2010AB pay-to
    address when payments go elsewhere (a lockbox; from the provider profile)."""
    return [f"HL*{hl}**20*1~", *_billing_provider(provider, pay_to)]  # digits and codes


def _billing_provider(provider: Provider, pay_to: Address | None) -> list[Segment | Rendered]:
    """``billing_loop`` after its HL: what does not depend on the provider's place."""
    field = "encounter.billing_provider"
    if provider.address is None:
        raise InputError(f"{field}.address", "the billing provider address is required")
    if provider.tax_id is None:
        raise InputError(f"{field}.tax_id", "the billing provider EIN (REF*EI) is required")
    out: list[Segment | Rendered] = []
    if provider.taxonomy:
        taxonomy = ident(provider.taxonomy, f"{field}.taxonomy", min_len=10, max_len=10)
        out.append(early("PRV", "BI", "PXC", taxonomy))
    out.append(provider_nm1("85", provider, field))
    out.extend(address_segments(provider.address, f"{field}.address", physical=True))
    out.append(early("REF", "EI", provider.tax_id))
    if pay_to is not None and pay_to != provider.address:
        out.append(early("NM1", "87", "2"))
        out.extend(address_segments(pay_to, f"{field}.pay_to"))
    return out


def relationship_of(coverage: Coverage) -> str:
    """The patient's relationship to the subscriber, checked against what the 837 allows."""
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


def _demographics(birth_date: date, sex: str) -> Segment | Rendered:
    """DMG: date of birth and sex, for a subscriber or a patient. Written as text when the
    sex is there and carries no delimiter (the date is digits): ``early`` cost 0.4 us."""
    if sex and DELIMITERS.isdisjoint(sex):
        return f"DMG*D8*{d8(birth_date)}*{sex}~"
    return early("DMG", "D8", d8(birth_date), sex)


_SEQUENCES = frozenset({"P", "S", "T"})


_PAYERS: dict[tuple[str, str], str] = {}


def _payer_nm1(coverage: Coverage) -> str:
    """2010BB NM1 of a payer, kept by its name and id as sent once written: a few payers
    fill every batch (their ``text`` and ``ident``: 0.47 us a claim; kept, 0.16)."""
    key = (coverage.payer_name, coverage.payer_id)
    out = _PAYERS.get(key)
    if out is None:
        payer_name = text(coverage.payer_name, 60)
        if not payer_name:
            raise InputError("encounter.coverage.payer_name", "empty after removing bad characters")
        payer_id = ident(coverage.payer_id, "encounter.coverage.payer_id", min_len=2)
        if len(_PAYERS) >= KEPT_MAX:
            _PAYERS.clear()
        # The name is free text, the id an ``ident``: no delimiter, neither empty.
        out = _PAYERS[key] = f"NM1*PR*2*{payer_name}*****PI*{payer_id}~"
    return out


def subscriber_loop(
    hl: int, parent: int, coverage: Coverage, patient: Patient | None, sequence: str = "P"
) -> list[Segment | Rendered]:
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
    payer = _payer_nm1(coverage)
    if patient is not None:
        last = text(patient.last_name, 60)
        if not last:
            raise InputError("encounter.patient.last_name", "empty after removing bad characters")
        # Free text (``text``), identifiers (``ident``), filing codes and numbers: none
        # carries a delimiter, and the last, first and member are never empty.
        return [
            f"HL*{hl}*{parent}*22*0~",
            # The group is an ``ident`` (no delimiter), the filing code one of the guide's.
            f"SBR*{sequence}*{SELF}*{group}******{filing}~"
            if sequence in _SEQUENCES
            else early("SBR", sequence, SELF, group, "", "", "", "", "", filing),
            f"NM1*IL*1*{last}*{text(patient.first_name, 35)}****MI*{member}~",
            *address_segments(patient.address, "encounter.patient.address"),
            _demographics(patient.birth_date, patient.sex),
            payer,
        ]
    subscriber = coverage.subscriber
    if subscriber is None:  # relationship_of refuses this before grouping; kept for safety
        raise InputError("encounter.coverage.subscriber", "required for a dependent patient")
    field = "encounter.coverage.subscriber"
    last = text(subscriber.last_name, 60)
    if not last:
        raise InputError(f"{field}.last_name", "empty after removing bad characters")
    out = [
        f"HL*{hl}*{parent}*22*1~",
        # SBR02 is sent only when the subscriber is the patient.
        f"SBR*{sequence}**{group}******{filing}~"
        if sequence in _SEQUENCES
        else early("SBR", sequence, "", group, "", "", "", "", "", filing),
        f"NM1*IL*1*{last}*{text(subscriber.first_name, 35)}****MI*{member}~",
    ]
    # N3/N4 and DMG are situational for a subscriber who is not the patient: sent when known.
    if subscriber.address is not None:
        out.extend(address_segments(subscriber.address, f"{field}.address"))
    if subscriber.birth_date is not None:
        out.append(_demographics(subscriber.birth_date, subscriber.sex))
    out.append(payer)
    return out


def patient_loop(
    hl: int, parent: int, patient: Patient, relationship: str
) -> list[Segment | Rendered]:
    """2000C patient HL and 2010CA: the dependent patient's relationship, name and address."""
    last = text(patient.last_name, 60)
    if not last:
        raise InputError("encounter.patient.last_name", "empty after removing bad characters")
    return [
        early("HL", str(hl), str(parent), "23", "0"),
        early("PAT", relationship),
        early("NM1", "QC", "1", last, text(patient.first_name, 35)),
        *address_segments(patient.address, "encounter.patient.address"),
        _demographics(patient.birth_date, patient.sex),
    ]


def prior_claim_reference(claim: ClaimInput) -> list[Segment | Rendered]:
    """REF*F8, the payer's claim control number a replacement (7) or void (8) refers to."""
    if claim.frequency not in ("7", "8"):
        return []
    if not claim.original_reference:
        raise InputError(
            "original_reference", "a replacement or void needs the payer's claim number"
        )
    return [f"REF*F8*{ident(claim.original_reference, 'original_reference', max_len=50)}~"]


def sorted_diagnoses(coded: CodedEncounter, at_most: int) -> list[tuple[str, str | None]]:
    """(code as HI carries it, POA) in sequence order; more than ``at_most`` is refused.

    The scrubber rejects such a claim first (CF-DX-004); the writer never cuts the list, since
    a diagnosis left off the claim is billed silently without it.
    """
    if len(coded.diagnoses) > at_most:
        raise InputError(
            "diagnoses",
            f"{len(coded.diagnoses)} diagnoses; this claim carries at most {at_most}",
        )
    diagnoses = sorted(coded.diagnoses, key=lambda d: d.sequence)
    return [(dx_code_kept(d.code, f"diagnoses[{i}].code"), d.poa) for i, d in enumerate(diagnoses)]


def prior_payer_section(
    claim: ClaimInput, *, institutional: bool = False
) -> list[Segment | Rendered]:
    """The 2320/2330 loops: the payers before this one (a secondary or tertiary claim), their
    adjudications balanced, then the payers known to come after it."""
    patient = claim.coded.encounter.patient
    out: list[Segment | Rendered] = []
    if claim.prior_payers:
        lines = claim.coded.lines
        charges = {n: line.charge for n, line in enumerate(lines, start=1)}
        total = sum(charges.values(), Decimal("0"))
        for prior in claim.prior_payers:
            check_balance(prior, total, charges)
        out += prior_payer_loops(claim.prior_payers, patient, institutional=institutional)
    if claim.later_payers:
        first = len(claim.prior_payers) + 2
        later = later_payer_loops(claim.later_payers, patient, first, institutional=institutional)
        out += later
    return out


# --- the transaction and the interchange ---------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """What an 837 flavour brings to the shared hierarchy: its guide and its claim loop."""

    implementation: str
    claim_loop: Callable[[ClaimInput], list[Segment | Rendered]]
    billing_provider: Callable[[ClaimInput], Provider]


@dataclass
class _Insured:
    """One 2000B loop: a subscriber's policy with a payer and the patients it carries claims for.

    ``patient`` is set when the subscriber is the patient (claims follow the 2000B directly);
    otherwise each (patient, relationship) in ``patients`` gets its own 2000C loop.
    """

    coverage: Coverage
    patient: Patient | None
    patients: dict[tuple[Patient, str], list[ClaimInput]]
    sequence: str = "P"


def _blamed(claim: ClaimInput, exc: InputError) -> ClaimError:
    """In a batch, the InputError of one claim's loops as that claim's (field prefix and
    ``claim_id``), so that the caller can set it aside and write the rest."""
    claim_id = claim.claim_id
    return ClaimError(claim_id, f"claims[{claim_id}].{exc.field}", exc.reason)


def _group(
    claims: Sequence[ClaimInput], billing_of: Callable[[ClaimInput], Provider]
) -> list[tuple[Provider, list[_Insured]]]:
    """Claims grouped by billing provider, then subscriber and payer, in first-seen order.

    A patient who is the subscriber gets a 2000B of their own (SBR02 18). Dependents of one
    subscriber with one payer share a 2000B, one 2000C per patient: the guide does not let a
    2000B both be the patient and have patients under it.
    """
    if len(claims) == 1:  # nothing to group: the loops of one claim
        [claim] = claims
        coverage = claim.coverage
        relationship = relationship_of(coverage)
        billing = billing_of(claim)
        patient = claim.coded.encounter.patient
        alone = patient if relationship == SELF else None
        insured = _Insured(coverage, alone, {(patient, relationship): [claim]}, claim.sequence)
        return [(billing, [insured])]
    return _grouped(claims, billing_of)


def _grouped(
    claims: Sequence[ClaimInput], billing_of: Callable[[ClaimInput], Provider]
) -> list[tuple[Provider, list[_Insured]]]:
    """``_group`` of any number of claims.

    A billing provider is looked up by instance first (the decoder shares it between the
    claims it bills: ``provider_nm1``), by value only when that instance is new: hashing a
    Provider and its address cost 0.5 us a claim."""
    providers: dict[Provider, dict[tuple[object, ...], _Insured]] = {}
    # id -> (the provider, its insureds): held, so that no id is another's while grouping
    by_instance: dict[int, tuple[Provider, dict[tuple[object, ...], _Insured]]] = {}
    batch = len(claims) > 1
    for claim in claims:
        enc = claim.coded.encounter
        coverage = claim.coverage
        try:
            relationship = relationship_of(coverage)
            billing = billing_of(claim)
        except InputError as exc:
            if not batch or isinstance(exc, ClaimError):
                raise
            raise _blamed(claim, exc) from exc
        seen = by_instance.get(id(billing))
        if seen is not None and seen[0] is billing:
            insureds = seen[1]
        else:
            insureds = providers.setdefault(billing, {})
            by_instance[id(billing)] = (billing, insureds)
        sequence = claim.sequence  # a property: once
        if relationship == SELF:
            key: tuple[object, ...] = (SELF, sequence, coverage, enc.patient)
            patient: Patient | None = enc.patient
        else:
            key = (
                sequence,
                coverage.payer_id,
                coverage.payer_name,
                coverage.plan_type,
                coverage.member_id,
                coverage.group_number,
                coverage.subscriber,
            )
            patient = None
        insured = insureds.get(key)
        if insured is None:
            insured = insureds[key] = _Insured(coverage, patient, {}, sequence)
        insured.patients.setdefault((enc.patient, relationship), []).append(claim)
    return [(p, list(insureds.values())) for p, insureds in providers.items()]


def _rendered(segments: Iterable[Segment | Rendered]) -> tuple[Segment | Rendered, ...]:
    """Segments rendered now, to be kept; as they are when one is refused, so that the
    document's ``render`` refuses it where it always did."""
    segments = tuple(segments)
    try:
        return tuple([s if isinstance(s, str) else s.render() for s in segments])
    except InputError:
        return segments


_Lines = tuple[Segment | Rendered, ...]
_BILLING: dict[tuple[int, int], tuple[Provider, Address | None, _Lines]] = {}


def _billing_lines(hl: int, provider: Provider, pay_to: Address | None) -> list[Segment | Rendered]:
    """``billing_loop`` rendered, kept: it is the same for every interchange of a provider.
    Kept by the instances first (as ``provider_nm1``): the lru_cache behind hashes the
    Provider, its Address and compares them field by field on each interchange. Kept
    without the HL, which is the provider's place in its interchange (in a batch, kept
    with it, 186 of the claims stage bench's 690 loops were looked up by value)."""
    key = (id(provider), id(pay_to))
    hit = _BILLING.get(key)
    if hit is not None and hit[0] is provider and hit[1] is pay_to:
        return [f"HL*{hl}**20*1~", *hit[2]]
    out = _billing_lines_by_value(provider, pay_to)
    if len(_BILLING) >= KEPT_MAX:
        _BILLING.clear()
    _BILLING[key] = (provider, pay_to, out)
    return [f"HL*{hl}**20*1~", *out]


@lru_cache(maxsize=256)
def _billing_lines_by_value(provider: Provider, pay_to: Address | None) -> _Lines:
    """``_billing_lines`` by equal values."""
    return _rendered(_billing_provider(provider, pay_to))


def _header(
    bht_ref: str,
    created: datetime,
    submitter: Submitter,
    sender_id: str,
    receiver_name: str,
    receiver_id: str,
) -> list[Segment | Rendered]:
    """BHT, 1000A submitter and 1000B receiver."""
    return [
        early("BHT", "0019", "00", bht_ref, ccyymmdd(created), hhmm(created), "CH"),
        *_parties(submitter, sender_id, receiver_name, receiver_id),
    ]


@lru_cache(maxsize=64)
def _parties(
    submitter: Submitter, sender_id: str, receiver_name: str, receiver_id: str
) -> tuple[Segment | Rendered, ...]:
    """1000A submitter and 1000B receiver, rendered and kept: the same in every interchange
    from one sender to one receiver."""
    contact: list[str] = ["IC", text(submitter.contact_name, 60)]
    if submitter.phone:
        contact += ["TE", ident(submitter.phone, "submitter.phone", min_len=10, max_len=10)]
    if submitter.email:
        contact += ["EM", ident(submitter.email, "submitter.email", max_len=256)]
    if len(contact) < 4:
        raise InputError("submitter", "a phone number or an email address is required")
    return _rendered(
        [
            early("NM1", "41", "2", text(submitter.name, 60), "", "", "", "", "46", sender_id),
            early("PER", *contact),
            early("NM1", "40", "2", text(receiver_name, 60), "", "", "", "", "46", receiver_id),
        ]
    )


def _detail_one(
    claim: ClaimInput, profile: Profile, pay_to: Mapping[str, Address]
) -> list[Segment | Rendered]:
    """``_detail`` of a claim alone in its interchange: its loops in ``_detail``'s order,
    without the grouping's objects (an ``_Insured``, a dict keyed by the patient, whose
    hash alone cost 0.5 us; 20.3 us to 17.7 an interchange, the simulator's claims). Asked
    in ``_group``'s order too."""
    coverage = claim.coverage
    relationship = relationship_of(coverage)
    provider = profile.billing_provider(claim)
    patient = claim.coded.encounter.patient
    sequence = claim.sequence
    segs = _billing_lines(1, provider, pay_to.get(provider.npi))
    if relationship == SELF:
        segs += subscriber_loop(2, 1, coverage, patient, sequence)
    else:
        segs += subscriber_loop(2, 1, coverage, None, sequence)
        segs += patient_loop(3, 2, patient, relationship)
    segs += profile.claim_loop(claim)
    return segs


def _detail(
    claims: Sequence[ClaimInput], profile: Profile, pay_to: Mapping[str, Address]
) -> list[Segment | Rendered]:
    """The HL hierarchy with every claim under its provider, subscriber and patient."""
    if len(claims) == 1:
        return _detail_one(claims[0], profile, pay_to)
    return _detail_grouped(claims, profile, pay_to)


def _detail_grouped(
    claims: Sequence[ClaimInput], profile: Profile, pay_to: Mapping[str, Address]
) -> list[Segment | Rendered]:
    """``_detail`` of any number of claims, grouped (of one, ``_detail_one``'s judge).

    In a batch, an InputError is raised as a ``ClaimError`` of the claim whose loop was
    being written (``blamed``): one handler for the batch, not a ``_Blame`` entered for
    each loop (1,707 of them in the claims stage bench, 0.26 us each)."""
    segs: list[Segment | Rendered] = []
    hl = 0
    groups = _group(claims, profile.billing_provider)
    blamed = None
    try:
        for provider, insureds in groups:
            hl += 1
            provider_hl = hl
            blamed = next(iter(insureds[0].patients.values()))[0]
            segs += _billing_lines(provider_hl, provider, pay_to.get(provider.npi))
            for insured in insureds:
                hl += 1
                subscriber_hl = hl
                blamed = next(iter(insured.patients.values()))[0]
                segs += subscriber_loop(
                    subscriber_hl,
                    provider_hl,
                    insured.coverage,
                    insured.patient,
                    insured.sequence,
                )
                for (patient, relationship), patient_claims in insured.patients.items():
                    if insured.patient is None:
                        hl += 1
                        blamed = patient_claims[0]
                        segs += patient_loop(hl, subscriber_hl, patient, relationship)
                    for claim in patient_claims:
                        blamed = claim
                        segs += profile.claim_loop(claim)
    except InputError as exc:
        if len(claims) < 2 or blamed is None or isinstance(exc, ClaimError):
            raise  # a claim alone, or raised as it is
        raise _blamed(blamed, exc) from exc
    return segs


def build_837(
    claims: Sequence[ClaimInput],
    profile: Profile,
    *,
    sender_id: str,
    receiver_id: str,
    control_number: int,
    created: datetime,
    receiver_name: str | None = None,
    submitter: Submitter = DEFAULT_SUBMITTER,
    usage: Usage = "P",
    pay_to: Mapping[str, Address] | None = None,
) -> str:
    """One 837 interchange (ISA..IEA) of ``profile``'s flavour, hierarchy built from the data.

    ``pay_to``: pay-to addresses by billing provider NPI (the provider profiles).

    In a batch, an error in one claim raises ``ClaimError`` naming it, so the caller can set
    that claim aside and write the rest.
    """
    if not claims:
        raise InputError("claims", "an interchange needs at least one claim")
    sender = envelope_id(sender_id, "sender_id")
    receiver = envelope_id(receiver_id, "receiver_id")
    per_set = MAX_CLAIMS_PER_TRANSACTION
    chunks = [claims[i : i + per_set] for i in range(0, len(claims), per_set)]
    icn = f"{control_number:09d}"
    version = profile.implementation
    if not (version and DELIMITERS.isdisjoint(version)):
        transactions = []
        for n, chunk in enumerate(chunks, start=1):
            header = _header(
                f"{icn}{n:04d}", created, submitter, sender, receiver_name or receiver, receiver
            )
            body = header + _detail(chunk, profile, pay_to or {})
            transactions.append(transaction_set("837", f"{n:04d}", version, body))
    else:
        # ``_header`` and ``transaction_set`` as text: BHT, ST and SE carry digits and codes,
        # the version no delimiter (``early`` on each: 3.1 us an interchange to 1.6).
        parties = _parties(submitter, sender, receiver_name or receiver, receiver)
        day, clock = ccyymmdd(created), hhmm(created)
        transactions = []
        for n, chunk in enumerate(chunks, start=1):
            st = f"{n:04d}"
            body = [f"BHT*0019*00*{icn}{st}*{day}*{clock}*CH~", *parties]
            body += _detail(chunk, profile, pay_to or {})
            transactions.append([f"ST*837*{st}*{version}~", *body, f"SE*{len(body) + 2}*{st}~"])
    return render(
        enveloped(sender, receiver, control_number, created, "HC", version, usage, transactions)
    )
