"""Facility billing end to end, offline: FHIR -> intake -> coding -> scrubber -> 837I.

Textbook inpatient stays billed the way hospitals bill them (revenue codes, no HCPCS on
inpatient lines) must become 837Is that pyx12 accepts, with the MS-DRG in HI*DR, every
revenue line with its charge, and CLM02 equal to the sum of the lines.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from factories import CMS_DIR
from hospital_bundles import ROOM_RATE, bundle, inpatient_items

from pipeline.models import CodedEncounter, Encounter, ValidatedEncounter
from services.claims.domain import build_claim
from services.claims.x12_validate import validate_x12
from services.coding.domain import Coder
from services.intake.domain import parse_raw
from services.validation.rules import validate

RECEIVED = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ADMITTED = date(2026, 2, 20)


@pytest.fixture(scope="module")
def coder() -> Coder:
    return Coder.load(CMS_DIR if CMS_DIR.is_dir() else None)


def collected(body: bytes) -> Encounter:
    (enc,) = parse_raw(
        body, "application/fhir+json", source_id="t", received_at=RECEIVED
    ).encounters
    return enc


def through(coder: Coder, body: bytes) -> tuple[CodedEncounter, ValidatedEncounter]:
    coded = coder.code(collected(body), coded_at=RECEIVED)
    return coded, validate(coded, coder.codesets, validated_at=RECEIVED)


def segments(x12: str, seg_id: str) -> list[list[str]]:
    return [s.split("*") for s in x12.replace("\n", "").split("~") if s.split("*")[0] == seg_id]


def claim_x12(verdict: ValidatedEncounter) -> str:
    claim = build_claim(verdict, sender_id="CLAIMFLOW", receiver_id="MEDICAREA")
    errors = validate_x12(claim.x12)
    assert errors == [], "\n".join(errors) + "\n" + claim.x12
    return claim.x12


TEXTBOOK = [
    # (principal, secondary, PCS, MS-DRG, surgical): the CMS MS-DRG V43 definitions
    ("I21.4", ["J96.01"], [], "280", False),  # NSTEMI with MCC
    ("I21.4", ["N17.9"], [], "281", False),  # NSTEMI with CC
    ("I21.4", [], [], "282", False),  # NSTEMI without CC/MCC
    ("J18.9", ["J96.01"], [], "193", False),  # simple pneumonia with MCC
    ("M17.11", [], ["0SRC0J9"], "470", True),  # knee replacement without MCC
]


@pytest.mark.parametrize(("principal", "secondary", "pcs", "drg", "surgical"), TEXTBOOK)
def test_textbook_stays_billed_by_revenue_code_become_valid_837is(
    coder: Coder, principal: str, secondary: list[str], pcs: list[str], drg: str, surgical: bool
) -> None:
    days = 4
    items = inpatient_items(ADMITTED, days, surgical=surgical)
    body = bundle(
        ident=f"stay-{drg}",
        klass="IMP",
        admitted=ADMITTED,
        days=days,
        diagnoses=[(principal, "Y"), *((c, "Y") for c in secondary)],
        items=items,
        pcs=pcs,
    )
    coded, verdict = through(coder, body)
    assert verdict.outcome != "rejected", verdict.edits
    assert coded.drg is not None and coded.drg.code == drg
    x12 = claim_x12(verdict)
    assert ["HI", f"DR:{drg}"] in segments(x12, "HI")
    sv2 = segments(x12, "SV2")
    expected = [
        (it["revenue"]["coding"][0]["code"], Decimal(str(it["net"]["value"]))) for it in items
    ]
    assert [(s[1], Decimal(s[3])) for s in sv2] == expected
    assert sv2[0][4:6] == ["DA", str(days)]  # room and board in days
    assert all(s[2] == "" for s in sv2[:4])  # no HCPCS on the inpatient revenue lines
    (clm,) = segments(x12, "CLM")
    assert Decimal(clm[2]) == sum(e for _, e in expected)
    assert Decimal(clm[2]) > ROOM_RATE * days
    assert clm[5] == "11:A:1"
    assert ["DTP", "435", "DT", "202602202115"] in segments(x12, "DTP")
    assert ["DTP", "096", "TM", "1140"] in segments(x12, "DTP")
    nm1 = {s[1]: s for s in segments(x12, "NM1")}
    assert "71" in nm1
    assert ("72" in nm1) is surgical
