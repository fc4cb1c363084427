"""Write X12 005010X222A1 (837P professional) interchanges from coded encounters.

The hierarchy (billing provider, subscriber, payer, patient), the loops both claim types
share and the envelope are in ``x12_837_common.py``; this module brings the professional
claim loop (2300 CLM, HI, 2310 rendering provider and service facility, 2400 SV1 lines).
Every shape it writes is checked with pyx12 in ``tests/unit/test_claims_837.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from operator import attrgetter
from typing import Any

from pipeline.errors import InputError
from pipeline.models import Address, CodedEncounter, Facility, ServiceLine
from services.claims.cob import line_adjudication_loops
from services.claims.x12_837_common import (
    KEPT_MAX,
    ClaimInput,
    Profile,
    address_segments,
    build_837,
    check_npi,
    keep_procedure,
    kept_dx_code,
    kept_procedure,
    modifiers,
    prior_claim_reference,
    prior_payer_section,
    procedure_code,
    provider_nm1,
    provider_taxonomy,
    sorted_diagnoses,
)
from services.x12 import guides
from services.x12.writer import (
    COMPONENT,
    DELIMITERS,
    Rendered,
    Segment,
    amount,
    comp,
    d8,
    early,
    ident,
    quantity,
    text,
)

IMPLEMENTATION = guides.VERSION_837P
MAX_DIAGNOSES = guides.MAX_PROFESSIONAL_DIAGNOSES  # HI01..HI12
MAX_POINTERS = guides.MAX_DX_POINTERS  # SV107-1..SV107-4
MAX_LINES = guides.MAX_PROFESSIONAL_LINES
# POS where the guide requires the admission date (DTP*435): inpatient hospital, SNF, psych.
_INPATIENT_POS = frozenset({"21", "51", "61"})


# --- the 837P claim loop -------------------------------------------------------------------


def _line(
    line: ServiceLine, number: int, claim_pos: str, n_dx: int, claim_id: str
) -> list[Segment | Rendered]:
    """2400 loop: LX, SV1, DTP*472 and the line item control number.

    Written from the procedure accepted before (kept by code and modifiers as sent), when
    the line is billed at the claim's place, its charge is not negative and its pointers
    are distinct and in range: 2.8 us a line to 1.5, the simulator's 837Ps. Anything else
    is ``_checked_line``'s, the judge."""
    procedure = kept_procedure(line.code or "", line.modifiers)
    pointers = line.dx_pointers
    if (
        procedure is None
        or not pointers
        or len(pointers) > MAX_POINTERS
        or (line.place_of_service and line.place_of_service != claim_pos)
        or line.charge < 0
    ):
        return _checked_line(line, number, claim_pos, n_dx, claim_id)
    for p in pointers:
        if not 1 <= p <= n_dx:
            return _checked_line(line, number, claim_pos, n_dx, claim_id)
    if len(pointers) == 1:
        pointed = str(pointers[0])
    elif len(set(pointers)) == len(pointers):
        pointed = COMPONENT.join(map(str, pointers))
    else:
        return _checked_line(line, number, claim_pos, n_dx, claim_id)
    # ``_checked_line``'s text: SV105 empty (the claim's place), the rest never empty.
    return [
        f"LX*{number}~",
        f"SV1*{procedure}*{amount(line.charge)}*UN*{quantity(line.units)}***{pointed}~",
        f"DTP*472*D8*{d8(line.service_date)}~",
        f"REF*6R*{claim_id}L{number}~",
    ]


def _checked_line(
    line: ServiceLine, number: int, claim_pos: str, n_dx: int, claim_id: str
) -> list[Segment | Rendered]:
    """``_line`` of any line, each value checked (the procedure accepted is kept)."""
    field = f"lines[{number - 1}]"
    code = procedure_code(line.code or "", f"{field}.code")
    mods = modifiers(line.modifiers, field)
    keep_procedure(line.code or "", line.modifiers, COMPONENT.join(("HC", code, *mods)))
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
    line_pos = pos if pos != claim_pos else ""  # only when it differs from CLM05-1
    pointed = pointers[:MAX_POINTERS]
    sv1: Segment | Rendered
    if DELIMITERS.isdisjoint(line_pos):
        # The other values carry no delimiter and none is empty: the code and modifiers
        # are checked for shape, the numbers are digits (the claim id is an ``ident``).
        sv1 = (
            f"SV1*HC:{COMPONENT.join((code, *mods))}*{amount(line.charge)}*UN*"
            f"{quantity(line.units)}*{line_pos}**{COMPONENT.join(map(str, pointed))}~"
        )
    else:  # the segment that render refuses, naming SV105
        sv1 = early(
            "SV1",
            comp("HC", code, *mods),
            amount(line.charge),
            "UN",
            quantity(line.units),
            line_pos,
            "",
            comp(*(str(p) for p in pointed)),
        )
    return [
        f"LX*{number}~",
        sv1,
        f"DTP*472*D8*{d8(line.service_date)}~",
        f"REF*6R*{claim_id}L{number}~",
    ]


_FACILITY: dict[tuple[int, int], tuple[Facility, Address | None, list[Segment | Rendered]]] = {}


def _service_facility(
    facility: Facility, billing_address: Address | None
) -> list[Segment | Rendered]:
    """2310C service facility, when the facility is elsewhere than the billing provider.

    Kept by the facility and address instances (immutable, shared by the decoder, as
    ``provider_nm1``'s providers): written, it compared two addresses field by field and
    checked the NPI and the street address on every claim. A refusal is not kept."""
    key = (id(facility), id(billing_address))
    hit = _FACILITY.get(key)
    if hit is not None and hit[0] is facility and hit[1] is billing_address:
        return hit[2]
    out: list[Segment | Rendered] = []
    if facility.address is not None and facility.address != billing_address:
        name = text(facility.name, 60)
        if not name:
            raise InputError("encounter.facility.name", "empty after removing bad characters")
        npi = check_npi(facility.npi, "encounter.facility.npi") if facility.npi else ""
        out.append(early("NM1", "77", "2", name, "", "", "", "", "XX" if npi else "", npi))
        out.extend(address_segments(facility.address, "encounter.facility.address", physical=True))
    if len(_FACILITY) >= KEPT_MAX:
        _FACILITY.clear()
    _FACILITY[key] = (facility, billing_address, out)
    return out


_BY_SEQUENCE = attrgetter("sequence")


def _diagnosis_codes(coded: CodedEncounter) -> list[str]:
    """The codes of ``sorted_diagnoses``, from those ``dx_code`` accepted before (1.4 us
    a claim to 0.6); ``sorted_diagnoses`` checks any other, and says what it refuses."""
    diagnoses = coded.diagnoses
    if len(diagnoses) <= MAX_DIAGNOSES:
        out = []
        for d in sorted(diagnoses, key=_BY_SEQUENCE):
            code = kept_dx_code(d.code)
            if code is None:
                break
            out.append(code)
        else:
            return out
    return [code for code, _ in sorted_diagnoses(coded, MAX_DIAGNOSES)]


def professional_claim_loop(claim: ClaimInput) -> list[Segment | Rendered]:
    """The 837P 2300 claim loop with its 2310 providers and 2400 lines.

    Line ``dx_pointers`` are 1-based positions in the diagnoses ordered by ``sequence``.
    """
    coded = claim.coded
    enc = coded.encounter
    claim_id = ident(claim.claim_id, "claim_id", max_len=38)
    if not coded.lines:
        raise InputError("lines", "a claim needs at least one service line")
    if len(coded.lines) > MAX_LINES:
        raise InputError("lines", f"a professional claim carries at most {MAX_LINES} lines")
    codes = _diagnosis_codes(coded)
    if not codes:
        raise InputError("diagnoses", "a professional claim needs a principal diagnosis")
    total = sum((line.charge for line in coded.lines), Decimal("0"))
    pos = enc.place_of_service

    frequency = claim.frequency
    clm: Segment | Rendered
    if pos and frequency and DELIMITERS.isdisjoint(pos + frequency):
        # The claim id is an ``ident``, the total a number: no delimiter, none empty.
        clm = f"CLM*{claim_id}*{amount(total)}***{pos}:B:{frequency}*Y*A*Y*Y~"
    else:  # the segment render writes, or refuses naming CLM05, as it always did
        clm = early(
            "CLM", claim_id, amount(total), "", "", comp(pos, "B", frequency), "Y", "A", "Y", "Y"
        )
    out = [clm]
    if pos in _INPATIENT_POS and enc.admission_date is not None:
        out.append(f"DTP*435*D8*{d8(enc.admission_date)}~")
    out.extend(prior_claim_reference(claim))
    # The codes are checked for shape (``dx_code``): no delimiter.
    out.append(f"HI*ABK:{codes[0]}{''.join([f'*ABF:{c}' for c in codes[1:]])}~")
    rendering = enc.rendering_provider
    if rendering is not None and rendering.npi != enc.billing_provider.npi:
        field = "encounter.rendering_provider"
        out.append(provider_nm1("82", rendering, field))
        if rendering.taxonomy:
            out.append(provider_taxonomy("PE", rendering.taxonomy, field))
    facility = enc.facility
    if facility is not None:
        out.extend(_service_facility(facility, enc.billing_provider.address))
    out.extend(prior_payer_section(claim))
    n_dx = len(codes)
    priors = claim.prior_payers
    for number, line in enumerate(coded.lines, start=1):
        out.extend(_line(line, number, pos, n_dx, claim_id))
        if priors:  # none on a first payer's claim: no call
            out.extend(line_adjudication_loops(priors, number))
    return out


PROFESSIONAL = Profile(
    implementation=IMPLEMENTATION,
    claim_loop=professional_claim_loop,
    billing_provider=lambda claim: claim.coded.encounter.billing_provider,
)


def build_837p(claims: Sequence[ClaimInput], **options: Any) -> str:
    """One 837P interchange (ISA..IEA) for a batch of professional claims;
    the options are ``build_837``'s."""
    return build_837(claims, PROFESSIONAL, **options)


def build_837p_claim(claim: ClaimInput, **options: Any) -> str:
    """Convenience: an interchange carrying one claim."""
    return build_837p([claim], **options)
