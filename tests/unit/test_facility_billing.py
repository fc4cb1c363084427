"""Facility billing end to end, offline: FHIR -> intake -> coding -> scrubber -> 837I.

Textbook inpatient stays billed the way hospitals bill them (revenue codes, no HCPCS on
inpatient lines) must become 837Is that pyx12 accepts, with the MS-DRG in HI*DR, every
revenue line with its charge, and CLM02 equal to the sum of the lines.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import pytest
from factories import CMS_DIR, FACILITY_NPI, RENDERING_NPI, address, coded, encounter, procedure
from hospital_bundles import (
    ATTENDING_NPI,
    GROUP_NPI,
    ROOM_RATE,
    bundle,
    inpatient_items,
    item,
)

from pipeline.models import (
    CodedDiagnosis,
    CodedEncounter,
    Encounter,
    EncounterNote,
    Facility,
    Provider,
    ServiceLine,
    ValidatedEncounter,
)
from pipeline.tracker import Ledger
from services.claims.corrections import SubmittedClaims, write
from services.claims.domain import build_claim, build_claims
from services.coding.domain import Coder
from services.intake.domain import parse_raw
from services.refdata.codesets import CodeSets
from services.validation.engine import REGISTRY
from services.validation.packs import DEFAULT_PACK, get_pack
from services.validation.rules import validate
from services.x12.validate import validate_x12

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


# --- the facility edits of pack 2026.12.2: a trip and a near miss each --------------------

HOSPITAL = Facility(
    name="Princeton Baptist Medical Center",
    npi=FACILITY_NPI,
    address=address(postal_code="352112303"),
)
ATTENDING = Provider(npi=RENDERING_NPI, name="Okafor, Adaeze", entity="person")
SURGEON = Provider(npi="1234567893", name="Ortega, Luis", entity="person")
A, D = date(2026, 2, 20), date(2026, 2, 24)


def cdx(code: str, seq: int, poa: str | None = "Y", **more: Any) -> CodedDiagnosis:
    return CodedDiagnosis(
        code=code, sequence=seq, poa=poa, source="ehr", confidence=1.0, billable=True, **more
    )


def rev(n: int, revenue: str | None, charge: str, code: str | None = None, **more: Any) -> Any:
    fields: dict[str, Any] = {
        "line_number": n,
        "code": code,
        "code_system": ("HCPCS" if code[0].isalpha() else "CPT") if code else None,
        "units": 1.0,
        "charge": Decimal(charge),
        "dx_pointers": [],
        "service_date": A,
        "revenue_code": revenue,
    }
    return ServiceLine(**(fields | more))


def stay(enc: dict[str, Any] | None = None, **changes: Any) -> CodedEncounter:
    """A four-day NSTEMI stay billed by revenue code, clean under pack 2026.12.2."""
    fields: dict[str, Any] = {
        "setting": "inpatient",
        "place_of_service": "21",
        "service_start": A,
        "service_end": D,
        "admission_date": A,
        "admission_type": "1",
        "admission_source": "1",
        "discharge_status": "01",
        "discharge_date": D,
        "discharge_time": time(11, 40),
        "attending_provider": ATTENDING,
        "rendering_provider": None,
        "facility": HOSPITAL,
    }
    made: dict[str, Any] = {
        "diagnoses": [cdx("I214", 1), cdx("E119", 2)],
        "lines": [rev(1, "0120", "6000.00", units=4.0), rev(2, "0250", "842.60"),
                  rev(3, "0300", "1216.00")],
        "type_of_bill": "0111",
    }  # fmt: skip
    return coded(encounter(**(fields | (enc or {}))), **(made | changes))


def visit(enc: dict[str, Any] | None = None, **changes: Any) -> CodedEncounter:
    """An outpatient ED visit (0131): every line with its revenue and HCPCS codes."""
    fields: dict[str, Any] = {
        "setting": "outpatient",
        "place_of_service": "23",
        "service_start": A,
        "service_end": A,
        "attending_provider": ATTENDING,
        "rendering_provider": None,
        "facility": HOSPITAL,
        "discharge_status": "01",
    }
    made: dict[str, Any] = {
        "diagnoses": [cdx("R0789", 1, None)],
        "lines": [rev(1, "0450", "1250.00", "99284"), rev(2, "0300", "45.00", "85025"),
                  rev(3, "0250", "12.00")],
        "type_of_bill": "0131",
    }  # fmt: skip
    return coded(encounter(**(fields | (enc or {}))), **(made | changes))


def note(kind: str, charge: str | None = None) -> EncounterNote:
    return EncounterNote.model_validate(
        {"kind": kind, "field": "Claim.item[4]", "message": "not carried", "charge": charge}
    )


FACILITY_CASES: list[tuple[str, Callable[[], CodedEncounter], Callable[[], CodedEncounter]]] = [
    ("CF-UB-001", lambda: stay(lines=[rev(1, None, "10.00")]), stay),
    ("CF-UB-002", lambda: visit(lines=[rev(1, "0450", "1250.00")]),
     lambda: visit(lines=[rev(1, "0250", "12.00")])),
    ("CF-UB-003", lambda: stay(type_of_bill="0117"),
     lambda: stay({"prior_claim_reference": "PCN12345"}, type_of_bill="0117")),
    ("CF-UB-004", lambda: stay({"admission_type": None}),
     lambda: stay({"discharge_status": None}, type_of_bill="0112")),
    ("CF-UB-005", lambda: stay({"attending_provider": None}), stay),
    ("CF-UB-006", lambda: stay(pcs_procedures=[procedure("0SRC0J9", A)]),
     lambda: stay({"operating_provider": SURGEON}, pcs_procedures=[procedure("0SRC0J9", A)])),
    ("CF-UB-007", lambda: stay(lines=[rev(1, "0120", "7500.00", units=5.0)]), stay),
    ("CF-UB-008", lambda: stay(diagnoses=[cdx(c, i + 1) for i, c in enumerate(MANY_DX)]),
     lambda: stay(diagnoses=[cdx(c, i + 1) for i, c in enumerate(MANY_DX[:25])])),
    ("CF-UB-009", lambda: stay({"condition_codes": ["039"]}),
     lambda: stay({"condition_codes": ["39"]})),
    ("CF-UB-010", lambda: stay({"discharge_time": None}),
     lambda: stay({"discharge_time": None}, type_of_bill="0112")),
    ("CF-POA-001", lambda: stay(diagnoses=[cdx("I214", 1), cdx("E119", 2, None)]),
     lambda: stay(diagnoses=[cdx("I214", 1), cdx("Z87891", 2, None)])),
    ("CF-HAC-001", lambda: stay(diagnoses=[cdx("I214", 1), cdx("L89154", 2, "N")]),
     lambda: stay(diagnoses=[cdx("I214", 1), cdx("L89154", 2, "Y")])),
    ("CF-NOTE-001", lambda: stay({"notes": [note("item_not_carried", "120.00")]}),
     lambda: stay({"notes": [note("item_not_carried")]})),
    ("CF-NOTE-002", lambda: stay({"notes": [note("code_not_carried")]}),
     lambda: stay({"notes": [note("data_not_carried")]})),
    ("CF-NOTE-003", lambda: stay({"notes": [note("data_not_carried")]}), stay),
    ("CF-X12-001", lambda: stay({"coverage": COVERAGE.model_copy(update={"plan_type": "09"})}),
     stay),
    ("CF-UB-011", lambda: stay({"facility": HOSPITAL.model_copy(
        update={"address": address(postal_code="35211")})}), stay),
    ("CF-X12-002", lambda: stay({"coverage": COVERAGE.model_copy(update={"member_id": "ZG*1"})}),
     stay),
]  # fmt: skip
MANY_DX = ["I214", "E119", "I10", "E785", "Z794", "K219", "F17210", "J449", "N183", "D649"]
MANY_DX += ["E039", "G4733", "M1990", "Z87891", "R739", "E669", "Z6833", "I2510", "Z7982"]
MANY_DX += ["Z952", "E1165", "E1122", "N179", "E871", "D696", "R6520", "A419"]
COVERAGE = encounter().coverage


@pytest.fixture(scope="module")
def exempt_codesets(tmp_path_factory: pytest.TempPathFactory) -> CodeSets:
    """Code sets with a POA exempt list in the CMS file layout (POAexemptCodesFY26.txt)."""
    folder = tmp_path_factory.mktemp("refdata")
    rows = ["OrdFY26\tPOAexemptCode\tDescription", "15208\tZ87.891\tHistory of nicotine dependence"]
    (folder / "POAexemptCodesFY26.txt").write_text("\n".join(rows) + "\n")
    return CodeSets.load(folder)


def rule_hits(v: ValidatedEncounter, rule_id: str) -> list[Any]:
    return [e for e in v.edits if e.rule_id == rule_id]


@pytest.mark.parametrize(
    ("rule_id", "trip", "near"), FACILITY_CASES, ids=[c[0] for c in FACILITY_CASES]
)
def test_each_facility_edit_trips_and_its_near_miss_does_not(
    exempt_codesets: CodeSets, rule_id: str, trip: Callable[[], CodedEncounter],
    near: Callable[[], CodedEncounter],
) -> None:  # fmt: skip
    tripped = validate(trip(), exempt_codesets, validated_at=RECEIVED)
    assert rule_hits(tripped, rule_id), tripped.edits
    if DEFAULT_PACK.severity(REGISTRY[rule_id]) == "error":
        assert tripped.outcome == "rejected"
    assert rule_hits(validate(near(), exempt_codesets, validated_at=RECEIVED), rule_id) == []


def test_the_clean_stay_and_visit_pass_and_are_written(exempt_codesets: CodeSets) -> None:
    for c in (stay(), visit()):
        verdict = validate(c, exempt_codesets, validated_at=RECEIVED)
        assert verdict.outcome == "clean", verdict.edits
        claim_x12(verdict)


def test_every_new_rule_has_a_case() -> None:
    new = set(DEFAULT_PACK.rule_ids) - set(get_pack("2026.12.1").rule_ids)
    assert new - {"CF-POA-000"} == {c[0] for c in FACILITY_CASES}


def test_without_the_exempt_list_the_poa_edit_says_so_and_checks_hac_diagnoses() -> None:
    bare = CodeSets.load(None)
    missing = stay(diagnoses=[cdx("I214", 1), cdx("E119", 2, None), cdx("N390", 3, None)])
    verdict = validate(missing, bare, validated_at=RECEIVED)
    assert rule_hits(verdict, "CF-POA-000")
    assert [h.field for h in rule_hits(verdict, "CF-POA-001")] == ["diagnoses[2].poa"]


# --- one encounter, two claims: the ED physician's 837P beside the facility's 837I --------


def test_an_ed_visit_bills_the_facility_837i_and_the_physicians_837p(coder: Coder) -> None:
    facility = [item(1, "0450", "1250.00", code="99284", on=ADMITTED),
                item(2, "0300", "45.00", code="85025", on=ADMITTED),
                item(3, "0250", "12.00", on=ADMITTED)]  # fmt: skip
    physician = [item(1, None, "310.00", code="99284", on=ADMITTED)]
    body = bundle(
        ident="ed-1",
        klass="EMER",
        admitted=ADMITTED,
        days=0,
        diagnoses=[("R07.89", None)],
        items=facility,
        professional_items=physician,
    )
    coded, verdict = through(coder, body)
    assert verdict.outcome != "rejected", verdict.edits
    assert [ln.claim_type for ln in coded.lines] == [None, None, None, "professional"]
    claims = build_claims(verdict, sender_id="CLAIMFLOW", receiver_id="MEDICAREA")
    assert [c.claim_type for c in claims] == ["institutional", "professional"]
    assert len({c.claim_id for c in claims}) == 2
    assert {c.encounter_id for c in claims} == {verdict.encounter_id}
    for claim in claims:
        assert validate_x12(claim.x12) == [], claim.x12
    facility_x12, physician_x12 = claims[0].x12, claims[1].x12
    assert [s[1] for s in segments(facility_x12, "SV2")] == ["0450", "0300", "0250"]
    assert ["HI", "APR:R0789"] in segments(facility_x12, "HI")  # the reason for the visit
    assert [s[1] for s in segments(physician_x12, "SV1")] == ["HC:99284"]
    assert claims[0].total_charge == Decimal("1307.00") and claims[1].total_charge == 310
    nm1 = {s[1]: s for s in segments(physician_x12, "NM1")}
    assert nm1["85"][-1] == GROUP_NPI  # the physician group bills the 837P
    assert nm1["82"][-1] == ATTENDING_NPI  # the ED physician rendered


def split_visit(lines: list[ServiceLine] | None = None, **enc: Any) -> CodedEncounter:
    """The ED visit with the physician's professional E/M beside the facility's lines."""
    group = Provider(npi=GROUP_NPI, name="Princeton Baptist Physician Group",
                     entity="organization", tax_id="631234567", address=address())  # fmt: skip
    physician = rev(4, None, "310.00", "99284", claim_type="professional", dx_pointers=[1])
    facility = visit().lines
    return visit({"professional_billing_provider": group, **enc},
                 lines=facility + (lines if lines is not None else [physician]))  # fmt: skip


def test_the_physicians_837p_is_judged_by_the_837p_edits(exempt_codesets: CodeSets) -> None:
    """A split encounter is scrubbed as each claim is written: 13 diagnoses fit the 837I
    (25) but not the 837P (12), so CF-DX-004 rejects, naming the 837P; the facility lines
    are not judged by professional edits nor the physician's line by facility ones."""
    clean = validate(split_visit(), exempt_codesets, validated_at=RECEIVED)
    assert clean.outcome == "clean", clean.edits
    many = split_visit().model_copy(
        update={"diagnoses": [cdx(c, i + 1, None) for i, c in enumerate(MANY_DX[:13])]}
    )
    verdict = validate(many, exempt_codesets, validated_at=RECEIVED)
    [hit] = rule_hits(verdict, "CF-DX-004")
    assert verdict.outcome == "rejected"
    assert hit.message.startswith("On the physician's 837P: The claim lists 13 diagnoses")
    # The same 13 diagnoses on the facility's claim alone: nothing to say.
    alone = visit().model_copy(update={"diagnoses": many.diagnoses})
    assert rule_hits(validate(alone, exempt_codesets, validated_at=RECEIVED), "CF-DX-004") == []


def test_an_edit_of_one_claim_points_at_the_encounters_own_line_and_provider(
    exempt_codesets: CodeSets,
) -> None:
    # The physician's line points at no diagnosis: an 837P edit (SV107), on line 4 of the
    # encounter, lines[3] (the part's first line).
    bad = rev(4, None, "310.00", "99284", claim_type="professional", dx_pointers=[])
    verdict = validate(split_visit([bad]), exempt_codesets, validated_at=RECEIVED)
    [hit] = rule_hits(verdict, "CF-LINE-003")
    assert (hit.field, hit.line) == ("lines[3].dx_pointers", 4)
    assert hit.message.startswith("On the physician's 837P: ")
    # The group that bills the 837P has a 5-digit ZIP: the 837P's billing provider edit
    # names the professional billing provider, not the hospital (whose ZIP+4 is fine).
    short = Provider(npi=GROUP_NPI, name="Princeton Baptist Physician Group",
                     entity="organization", tax_id="631234567",
                     address=address(postal_code="35211"))  # fmt: skip
    verdict = validate(split_visit(professional_billing_provider=short), exempt_codesets,
                       validated_at=RECEIVED)  # fmt: skip
    fields = [h.field for h in rule_hits(verdict, "CF-ADDR-001")]
    assert fields == ["encounter.professional_billing_provider.address.postal_code"]
    # A hit both claims share (the coverage's) is reported once, without a claim named.
    coverage = encounter().coverage.model_copy(update={"member_id": " "})
    verdict = validate(split_visit(coverage=coverage), exempt_codesets, validated_at=RECEIVED)
    [shared] = rule_hits(verdict, "CF-REQ-002")
    assert shared.field == "encounter.coverage.member_id"
    assert shared.message.startswith("The member id is missing")


def test_the_corrections_store_and_the_tracker_account_for_both_claims(
    coder: Coder, tmp_path: Any
) -> None:
    body = bundle(
        ident="ed-2",
        klass="EMER",
        admitted=ADMITTED,
        days=0,
        diagnoses=[("R07.89", None)],
        items=[item(1, "0450", "1250.00", code="99284", on=ADMITTED)],
        professional_items=[item(1, None, "310.00", code="99284", on=ADMITTED)],
    )
    _, verdict = through(coder, body)
    store = SubmittedClaims(tmp_path / "submitted.sqlite3")
    planned = store.claims_for(verdict)
    assert [p.claim_type for p in planned] == ["institutional", "professional"]
    assert store.claims_for(verdict) == []  # answered: never a second original
    claims = [write(p, sender_id="CLAIMFLOW", receiver_id="PAYER") for p in planned]
    ledger = Ledger()
    ledger.add("encounters.validated.v1", verdict.encounter_id, verdict)
    ledger.add("claims.submitted.v1", claims[0].claim_id, claims[0])
    ledger.posted[claims[0].claim_id] = "paid"
    assert not ledger.encounter_done(verdict.encounter_id)  # the 837P is still out
    ledger.add("claims.submitted.v1", claims[1].claim_id, claims[1])
    assert not ledger.encounter_done(verdict.encounter_id)
    ledger.posted[claims[1].claim_id] = "paid"
    assert ledger.encounter_done(verdict.encounter_id)
    assert ledger.encounter_claim[verdict.encounter_id] == claims[0].claim_id  # the facility's


# --- an interim bill, an outpatient surgery, and an item intake cannot carry --------------


def test_an_interim_bill_goes_out_as_0112_with_status_30_and_no_discharge_hour(
    coder: Coder,
) -> None:
    tob = {"code": {"coding": [{"system": "https://www.nubc.org/CodeSystem/TypeOfBill",
                                "code": "0112"}]},
           "category": {"coding": [{"code": "typeofbill"}]}, "sequence": 1}  # fmt: skip
    body = bundle(
        ident="interim",
        klass="IMP",
        admitted=ADMITTED,
        days=3,
        diagnoses=[("J18.9", "Y"), ("J96.01", "Y")],
        items=inpatient_items(ADMITTED, 3),
        status="in-progress",
        supporting=[tob],
    )
    coded, verdict = through(coder, body)
    assert coded.type_of_bill == "0112" and coded.encounter.discharge_date is None
    assert verdict.outcome != "rejected", verdict.edits
    x12 = claim_x12(verdict)
    (clm,) = segments(x12, "CLM")
    assert clm[5] == "11:A:2"
    assert segments(x12, "CL1")[0][3] == "30"  # still a patient
    assert not [s for s in segments(x12, "DTP") if s[1] == "096"]


def test_an_outpatient_surgery_bills_13x_with_revenue_and_hcpcs_and_is_checked(
    coder: Coder,
) -> None:
    items = [item(1, "0360", "4200.00", code="47562", on=ADMITTED),
             item(2, "0370", "900.00", on=ADMITTED),
             item(3, "0710", "650.00", on=ADMITTED),
             item(4, "0250", "120.00", on=ADMITTED)]  # fmt: skip
    body = bundle(
        ident="opsurg", klass="SS", admitted=ADMITTED, days=0,
        diagnoses=[("K80.20", None)], items=items,
    )  # fmt: skip
    coded, verdict = through(coder, body)
    assert coded.type_of_bill == "0131"
    assert verdict.outcome != "rejected", verdict.edits
    x12 = claim_x12(verdict)
    assert segments(x12, "CLM")[0][5] == "13:A:1"
    assert [s[1:3] for s in segments(x12, "SV2")] == [
        ["0360", "HC:47562"],
        ["0370", ""],
        ["0710", ""],
        ["0250", ""],
    ]
    # The payer rule: an operating-room line on an outpatient bill needs its HCPCS code.
    items[0] = item(1, "0360", "4200.00", on=ADMITTED)
    body = bundle(
        ident="opsurg2", klass="SS", admitted=ADMITTED, days=0,
        diagnoses=[("K80.20", None)], items=items,
    )  # fmt: skip
    _, verdict = through(coder, body)
    assert verdict.outcome == "rejected"
    assert [e.field for e in verdict.edits if e.rule_id == "CF-UB-002"] == ["lines[0].code"]


def test_a_charge_intake_cannot_carry_is_a_note_and_an_error(coder: Coder) -> None:
    items = inpatient_items(ADMITTED, 2)
    items.append({"sequence": 9, "productOrService": {"text": "TV rental"},
                  "net": {"value": 45.0, "currency": "USD"}})  # fmt: skip
    body = bundle(
        ident="tv", klass="IMP", admitted=ADMITTED, days=2,
        diagnoses=[("J18.9", "Y")], items=items,
    )  # fmt: skip
    enc = collected(body)
    (note_,) = [n for n in enc.notes if n.kind == "item_not_carried"]
    assert note_.charge == Decimal("45.00") and note_.field and "item[5]" in note_.field
    coded = coder.code(enc, coded_at=RECEIVED)
    verdict = validate(coded, coder.codesets, validated_at=RECEIVED)
    assert verdict.outcome == "rejected"
    (edit,) = [e for e in verdict.edits if e.rule_id == "CF-NOTE-001"]
    assert "45.00" in edit.message and edit.fix_hint


def test_a_missing_poa_on_a_stay_is_an_error_with_the_fix(coder: Coder) -> None:
    body = bundle(
        ident="nopoa", klass="IMP", admitted=ADMITTED, days=3,
        diagnoses=[("J18.9", "Y"), ("N39.0", None)], items=inpatient_items(ADMITTED, 3),
    )  # fmt: skip
    _, verdict = through(coder, body)
    assert verdict.outcome == "rejected"
    (edit,) = [e for e in verdict.edits if e.rule_id == "CF-POA-001"]
    assert edit.field == "diagnoses[1].poa" and "Y (present at admission)" in (edit.fix_hint or "")
