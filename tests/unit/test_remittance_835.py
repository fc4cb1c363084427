"""The payer simulator's 835s, the 835 parser and validator, and remittance posting."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from factories import BILLING_NPI, VALIDATED_AT, coded, encounter
from shared_data import SHARED_DATA, requires_shared, shared_text

from pipeline.errors import InputError
from pipeline.models import (
    CodedEncounter,
    RemittancePosting,
    SubmittedClaim,
    Subscriber,
    ValidatedEncounter,
    event_id,
)
from services.claims.domain import build_claim, claim_id_for
from services.claims.x12_837_common import ClaimInput
from services.claims.x12_837p import build_837p
from services.remittance.era import (
    ClaimPayment,
    parse_835,
    parse_835_transactions,
    read_segments,
    validate_835,
)
from services.remittance.posting import post, post_remittance
from sim import payer as payer_sim
from sim.payer import (
    AdjudicationPolicy,
    ClaimDecision,
    adjudicate,
    adjudicate_claim,
    read_837_claim,
)

SAMPLE_835 = SHARED_DATA / "x12" / "835_mult_loops.txt"
PAYER = "MEDICARE01"
NPI = "1234567893"
POSTED_AT = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
D = Decimal

# --- a minimal but syntactically realistic 837P ------------------------------------------

Line = tuple[str, str, str]  # procedure (with :modifiers), charge, service date CCYYMMDD


def x12_837(claim_id: str, lines: Sequence[Line], *, sbr09: str = "MB", freq: str = "1") -> str:
    """One 837P interchange: billing provider, subscriber = patient, one claim."""
    total = sum(D(charge) for _, charge, _ in lines)
    body = [
        "ST*837*0001*005010X222A1",
        "BHT*0019*00*B0001*20250301*1200*CH",
        "NM1*41*2*CLAIMFLOW CLINIC*****46*CLAIMFLOW",
        "PER*IC*BILLING OFFICE*TE*4105550100",
        f"NM1*40*2*PAYER*****46*{PAYER}",
        "HL*1**20*1",
        f"NM1*85*2*CLAIMFLOW CLINIC*****XX*{NPI}",
        "N3*1 MAIN ST",
        "N4*BALTIMORE*MD*21201",
        "REF*EI*123456789",
        "HL*2*1*22*0",
        f"SBR*P*18*******{sbr09}",
        "NM1*IL*1*DOE*JANE****MI*1EG4TE5MK72",
        "N3*2 ELM ST",
        "N4*BALTIMORE*MD*21202",
        "DMG*D8*19500101*F",
        f"NM1*PR*2*MEDICARE PART B*****PI*{PAYER}",
        f"CLM*{claim_id}*{total}***11:B:{freq}*Y*A*Y*Y",
        "HI*ABK:E119*ABF:I10",
    ]
    for number, (code, charge, day) in enumerate(lines, start=1):
        body += [
            f"LX*{number}",
            f"SV1*HC:{code}*{charge}*UN*1***1:2",
            f"DTP*472*D8*{day}",
            f"REF*6R*{claim_id}-{number}",
        ]
    body.append(f"SE*{len(body) + 1}*0001")
    isa = (
        f"ISA*00*{'':10}*00*{'':10}*ZZ*{'CLAIMFLOW':<15}*ZZ*{PAYER:<15}*250301*1200"
        "*^*00501*000000101*0*T*:"
    )
    segments = [isa, "GS*HC*CLAIMFLOW*MEDICARE01*20250301*1200*101*X*005010X222A1", *body]
    segments += ["GE*1*101", "IEA*1*000000101"]
    return "~\n".join(segments) + "~\n"


VISIT: list[Line] = [
    ("99214", "150.00", "20250215"),
    ("36415", "25.00", "20250215"),
    ("80053:QW", "75.50", "20250216"),
]


def submitted(
    claim_id: str,
    lines: Sequence[Line] = VISIT,
    *,
    expected: str | None = "120.00",
    sbr09: str = "MB",
    freq: str = "1",
) -> SubmittedClaim:
    """A SubmittedClaim around the 837 above."""
    total = sum(D(charge) for _, charge, _ in lines)
    return SubmittedClaim(
        event_id=event_id(claim_id, "claims", "v1"),
        claim_id=claim_id,
        encounter_id=f"E-{claim_id}",
        frequency=freq,  # type: ignore[arg-type]
        payer_id=PAYER,
        payer_name="MEDICARE PART B",
        total_charge=total,
        expected_reimbursement=D(expected) if expected is not None else None,
        expected_basis="fee_schedule" if expected is not None else "none",
        line_count=len(lines),
        service_start=date(2025, 2, 15),
        service_end=date(2025, 2, 16),
        interchange_control_number="000000101",
        x12=x12_837(claim_id, lines, sbr09=sbr09, freq=freq),
        submitted_at=POSTED_AT,
    )


def find_claim(kind: str, policy: AdjudicationPolicy = payer_sim.DEFAULT_POLICY, **kw: object):
    """The first claim id C0001, C0002… whose seeded decision is of ``kind``."""
    for n in range(1, 600):
        claim = submitted(f"C{n:04d}", **kw)  # type: ignore[arg-type]
        decision = adjudicate_claim(claim, policy=policy)
        if _kind(decision) == kind:
            return claim, decision
    raise AssertionError(f"no {kind} claim among 600 seeds")


def _kind(decision: ClaimDecision) -> str:
    if decision.status_code == "4":
        return "denied"
    if any(line.paid == 0 and line.allowed == 0 for line in decision.lines):
        return "line_denied"
    if any(a.reason == "1" for line in decision.lines for a in line.adjustments):
        return "deductible"
    return "paid"


def remit(claims: Sequence[SubmittedClaim], **kw: object) -> str:
    """The simulator's 835 for claims, with fixed payment details."""
    args: dict[str, object] = {
        "payer_id": PAYER,
        "payer_name": "MEDICARE PART B",
        "payee_npi": NPI,
        "payee_name": "CLAIMFLOW CLINIC",
        "payee_tax_id": "123456789",
        "trace_number": "EFT000123",
        "paid_date": date(2025, 3, 7),
    }
    return adjudicate(claims, **(args | kw))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def batch() -> list[SubmittedClaim]:
    """Varied claims: paid, deductible, a denied line, a denied claim, commercial, Medicaid."""
    return [
        find_claim("paid")[0],
        find_claim("deductible")[0],
        find_claim("line_denied")[0],
        find_claim("denied")[0],
        submitted("K0001", expected=None, sbr09="CI"),
        submitted("K0002", [("99213", "110.00", "20250220")], expected=None, sbr09="MC"),
    ]


# --- the 837 reader -----------------------------------------------------------------------


def test_read_837_claim_finds_lines_dates_and_plan() -> None:
    claim = read_837_claim(x12_837("A1", VISIT, sbr09="CI"), "A1")
    assert claim.charge == D("250.50")
    assert claim.filing_indicator == "CI"
    assert claim.member_id == "1EG4TE5MK72"
    assert [line.code for line in claim.lines] == ["99214", "36415", "80053"]
    assert claim.lines[2].modifiers == ("QW",)
    assert claim.lines[2].service_date == date(2025, 2, 16)
    assert claim.lines[0].line_control_number == "A1-1"


def test_read_837_claim_picks_the_claim_by_id_among_many() -> None:
    first = x12_837("A1", VISIT, sbr09="CI").split("~\n")
    second = x12_837("B2", VISIT[:1], sbr09="MB").split("~\n")
    start = second.index("HL*2*1*22*0")
    subscriber = [seg.replace("HL*2*1*22*0", "HL*3*1*22*0") for seg in second[start:-4]]
    subscriber = [seg.replace("DOE*JANE", "ROE*RICHARD") for seg in subscriber]
    se = next(i for i, seg in enumerate(first) if seg.startswith("SE*"))
    segments = first[:se] + subscriber + first[se:]
    se += len(subscriber)
    segments[se] = f"SE*{se - 1}*0001"
    text = "~\n".join(segments)
    a1, b2 = read_837_claim(text, "A1"), read_837_claim(text, "B2")
    assert (len(a1.lines), a1.filing_indicator, a1.patient_last_name) == (3, "CI", "DOE")
    assert (len(b2.lines), b2.filing_indicator, b2.patient_last_name) == (1, "MB", "ROE")
    with pytest.raises(InputError) as err:
        read_837_claim(text, "NOPE")
    assert err.value.field == "CLM01"


@requires_shared
def test_837_whose_charge_does_not_add_up_is_refused() -> None:
    text = (SAMPLE_835.parent / "x12_many_claims.txt").read_text()
    with pytest.raises(InputError) as err:
        read_837_claim(text, "A37YH556")  # CLM02 500 but one SV1 of 12.25
    assert err.value.field == "CLM02"


# --- the simulator ------------------------------------------------------------------------


def test_simulator_835_passes_pyx12_and_balances(batch: list[SubmittedClaim]) -> None:
    text = remit(batch)
    assert validate_835(text) == []
    remittance = parse_835(text)
    assert len(remittance.claims) == len(batch)
    assert remittance.payment_amount == sum(c.paid for c in remittance.claims)
    assert remittance.balance_errors() == []
    assert remittance.payer_id == PAYER
    assert remittance.payee_id == NPI
    assert remittance.trace_number == "EFT000123"
    assert remittance.payment_method == "ACH"
    assert remittance.payment_date == date(2025, 3, 7)


def test_parse_round_trips_every_decision(batch: list[SubmittedClaim]) -> None:
    decisions = [adjudicate_claim(c) for c in batch]
    remittance = parse_835(remit(batch))
    for decision, claim in zip(decisions, remittance.claims, strict=True):
        assert claim.patient_control_number == decision.claim.claim_id
        assert claim.status_code == decision.status_code
        assert claim.charge == decision.charge
        assert claim.paid == decision.paid
        assert claim.patient_responsibility == decision.patient_responsibility
        assert claim.payer_claim_control_number == decision.payer_claim_control_number
        assert claim.charge == sum(line.charge for line in claim.service_lines)
        for parsed, decided in zip(claim.service_lines, decision.lines, strict=True):
            assert parsed.procedure == decided.line.code
            assert parsed.paid == decided.paid
            assert parsed.charge - parsed.adjustment_total == parsed.paid
            assert set(parsed.adjustments) == set(decided.adjustments)
            assert parsed.line_control_number == decided.line.line_control_number


def test_medicare_pricing_follows_the_rules() -> None:
    claim, decision = find_claim("paid")
    assert decision.allowed == D("120.00")  # expected reimbursement becomes the allowed amount
    for line in decision.lines:
        by_reason = {a.reason: a.amount for a in line.adjustments}
        assert by_reason["45"] == line.line.charge - line.allowed
        assert by_reason["2"] == (line.allowed * D("0.20")).quantize(D("0.01"))
        assert "253" in by_reason  # 2% sequestration on what Medicare pays
    assert decision.patient_responsibility == sum(
        a.amount for line in decision.lines for a in line.adjustments if a.group == "PR"
    )


def test_commercial_visit_gets_a_copay_and_percent_of_charges() -> None:
    decision = adjudicate_claim(submitted("K0001", expected=None, sbr09="CI"))
    assert decision.status_code == "1"
    visit = decision.lines[0]
    assert visit.allowed == D("90.00")  # 60% of 150.00
    assert any(a.group == "PR" and a.reason == "3" for a in visit.adjustments)


def test_denied_claim_is_adjusted_in_full_with_a_reason() -> None:
    claim, decision = find_claim("denied")
    assert decision.paid == 0 and decision.patient_responsibility == 0
    reasons = {a.reason for line in decision.lines for a in line.adjustments}
    assert len(reasons) == 1 and reasons <= {"16", "50", "29"}
    if reasons == {"16"}:
        assert decision.remark_codes == ("MA130",)
    parsed = parse_835(remit([claim])).claims[0]
    assert parsed.status_code == "4"
    assert parsed.balance_errors() == []


def test_decisions_are_deterministic_and_denials_are_rare() -> None:
    claims = [submitted(f"R{n:04d}") for n in range(300)]
    first = [adjudicate_claim(c) for c in claims]
    assert first == [adjudicate_claim(c) for c in claims]
    assert remit(claims[:5]) == remit(claims[:5])
    denied = sum(d.status_code == "4" for d in first)
    assert 3 <= denied <= 30  # about 5%


def test_a_void_is_answered_with_a_reversal_and_a_forward_balance() -> None:
    claim, decision = find_claim("paid")
    void = submitted(claim.claim_id, freq="8")
    text = remit([void])
    assert validate_835(text) == []
    remittance = parse_835(text)
    reversal = remittance.claims[0]
    assert reversal.status_code == "22"
    assert reversal.paid == -decision.paid
    assert reversal.payer_claim_control_number == decision.payer_claim_control_number
    assert remittance.payment_amount == 0
    assert [p.reason for p in remittance.provider_adjustments] == ["FB"]


def test_check_payment_and_all_denied_notice() -> None:
    denied_claim, _ = find_claim("denied")
    notice = parse_835(remit([denied_claim]))
    assert (notice.handling_code, notice.payment_method, notice.payment_amount) == ("H", "NON", 0)
    paid_claim, _ = find_claim("paid")
    check = remit([paid_claim], payment_method="CHK")
    assert validate_835(check) == []
    assert parse_835(check).payment_method == "CHK"


def test_simulator_refuses_claims_for_another_payer() -> None:
    claim = submitted("X1").model_copy(update={"payer_id": "OTHER"})
    with pytest.raises(InputError) as err:
        remit([claim])
    assert err.value.field == "payer_id"


# --- dependents: the claim's patient is not the subscriber ---------------------------------

HUSBAND = Subscriber(last_name="Whitfield", first_name="Marcus")


def family_visit(encounter_id: str, relationship: str = "18", **patient: object) -> CodedEncounter:
    """The factories' clean visit, billed for a dependent of HUSBAND unless relationship is 18."""
    base = encounter()
    coverage = base.coverage
    if relationship != "18":
        coverage = coverage.model_copy(update={"relationship": relationship, "subscriber": HUSBAND})
    person = base.patient.model_copy(update={"patient_id": f"MRN-{encounter_id}", **patient})
    return coded(
        base.model_copy(
            update={"encounter_id": encounter_id, "patient": person, "coverage": coverage}
        )
    )


def billed(record: CodedEncounter) -> SubmittedClaim:
    """The claims stage's output for a coded encounter, as the payer receives it."""
    verdict = ValidatedEncounter(
        event_id=event_id(record.encounter_id, "validation", "test"),
        encounter_id=record.encounter_id,
        outcome="clean",
        edits=[],
        rule_pack_version="test",
        coded=record,
        validated_at=VALIDATED_AT,
    )
    return build_claim(verdict, sender_id="CLAIMFLOW", receiver_id="BCBSAL")


def test_read_837_claim_takes_the_patient_from_2010ca_and_the_member_id_from_2010ba() -> None:
    wife = family_visit("E-WIFE", "01")
    son = family_visit("E-SON", "19", first_name="Tobias", birth_date=date(2012, 4, 3), sex="M")
    husband = family_visit("E-HUSBAND", first_name="Marcus", sex="M")
    claims = [
        ClaimInput(claim_id=claim_id_for(c.encounter_id), coded=c) for c in (wife, son, husband)
    ]
    x12 = build_837p(
        claims, sender_id="CLAIMFLOW", receiver_id="BCBSAL", control_number=7, created=VALIDATED_AT
    )
    names: dict[str, tuple[str | None, ...]] = {}
    for claim in claims:
        read = read_837_claim(x12, claim.claim_id)
        assert (read.member_id, read.filing_indicator) == ("ZGH884512093", "BL")
        assert len(read.lines) == 2
        names[claim.coded.encounter_id] = (
            read.patient_first_name,
            read.patient_last_name,
            read.insured_first_name,
        )
    assert names == {
        "E-WIFE": ("LORETTA", "WHITFIELD", "MARCUS"),
        "E-SON": ("TOBIAS", "WHITFIELD", "MARCUS"),
        "E-HUSBAND": ("MARCUS", "WHITFIELD", None),  # the patient is the subscriber
    }


def test_a_dependents_claim_round_trips_through_the_payer_simulator() -> None:
    dependent = billed(family_visit("E-WIFE", "01"))
    subscriber = billed(family_visit("E-HUSBAND", first_name="Marcus", sex="M"))
    text = adjudicate(
        [dependent, subscriber],
        payer_id=dependent.payer_id,
        payer_name=dependent.payer_name,
        payee_npi=BILLING_NPI,
        payee_name="MAGIC CITY FAMILY MEDICINE PC",
        trace_number="EFT000777",
        paid_date=date(2026, 3, 20),
    )
    assert validate_835(text) == []
    remittance = parse_835(text)
    paid_wife, paid_husband = remittance.claims
    assert paid_wife.patient_control_number == dependent.claim_id
    assert (paid_wife.patient_first_name, paid_wife.patient_last_name) == ("LORETTA", "WHITFIELD")
    assert paid_wife.patient_member_id is None  # the member id is the insured's, on NM1*IL
    assert (paid_husband.patient_first_name, paid_husband.patient_member_id) == (
        "MARCUS",
        "ZGH884512093",
    )
    assert remittance.balance_errors() == []
    insured = [s for s in text.split("~\n") if s.startswith(("NM1*QC", "NM1*IL"))]
    assert insured == [
        "NM1*QC*1*WHITFIELD*LORETTA",
        "NM1*IL*1*WHITFIELD*MARCUS****MI*ZGH884512093",
        "NM1*QC*1*WHITFIELD*MARCUS****MI*ZGH884512093",  # no NM1*IL: the same person
    ]


# --- the parser on a payer's own file -------------------------------------------------------


@requires_shared
def test_pyx12_sample_835_parses() -> None:
    text = SAMPLE_835.read_text()
    assert validate_835(text) == []
    remittance = parse_835(text)
    assert (remittance.handling_code, remittance.payment_amount) == ("H", D("0.00"))
    assert remittance.trace_number == "000000000"
    assert remittance.payer_name == "PAYER"
    assert (remittance.payee_id_qualifier, remittance.payee_id) == ("FI", "444313000")
    assert len(remittance.claims) == 1
    claim = remittance.claims[0]
    assert claim.patient_control_number == "2005555A"
    assert (claim.status_code, claim.charge, claim.paid) == ("4", D("915.39"), D("0.00"))
    assert claim.payer_claim_control_number == "4276512332"
    assert [line.charge for line in claim.service_lines] == [D("500.04"), D("127.80"), D("287.55")]
    assert [(a.group, a.reason) for _, a in claim.all_adjustments()] == [
        ("CO", "16"),
        ("OA", "A7"),
        ("OA", "A7"),
    ]
    assert claim.all_remark_codes() == ["N14"]
    assert claim.service_lines[0].service_date == date(2003, 11, 29)


def test_parser_honours_the_delimiters_the_isa_declares() -> None:
    claim, _ = find_claim("paid")
    text = remit([claim]).replace("*", "|").replace(":", ">").replace("~\n", "\r\n")
    # ISA16 is now '>' and the segment terminator is '\r' (followed by a line feed).
    remittance = parse_835(text)
    assert remittance.claims[0].service_lines[0].procedure == "99214"
    assert remittance.balance_errors() == []


@requires_shared
def test_cas_with_several_triplets() -> None:
    text = SAMPLE_835.read_text().replace("CAS*CO*16*500.04~", "CAS*CO*16*400.04**45*90*2*97*10~")
    claim = parse_835(text).claims[0]
    line = claim.service_lines[0]
    assert [(a.reason, a.amount, a.quantity) for a in line.adjustments] == [
        ("16", D("400.04"), None),
        ("45", D("90.00"), D("2")),
        ("97", D("10.00"), None),
    ]
    assert claim.balance_errors() == []


@requires_shared
def test_validate_reports_broken_balancing() -> None:
    sample = SAMPLE_835.read_text()
    line = validate_835(sample.replace("SVC*HC:T1005*127.8*0**16~", "SVC*HC:T1005*127.8*5**16~"))
    assert any("SVC03" in e for e in line), line
    claim = validate_835(sample.replace("CLP*2005555A*4*915.39*0*", "CLP*2005555A*4*915.39*10*"))
    assert any("CLP04" in e for e in claim), claim
    assert any("BPR02" in e for e in claim), claim


@requires_shared
def test_validate_reports_pyx12_errors() -> None:
    text = SAMPLE_835.read_text().replace("CLP*2005555A*4*", "CLP*2005555A*99*")
    errors = validate_835(text)
    assert any("CLP02" in e for e in errors), errors


@requires_shared
@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("", "ISA"),
        ('{"resourceType": "Bundle"}', "ISA"),
        ("ISA*00*short~", "ISA"),
        (shared_text("x12/x12_valid.txt"), "GS08"),
        (shared_text("x12/835_mult_loops.txt").replace("*00501*", "*00401*"), "ISA12"),
        (shared_text("x12/835_mult_loops.txt").replace("ST*835*", "ST*837*"), "ST01"),
        (
            shared_text("x12/835_mult_loops.txt").replace(
                "CLP*2005555A*4*915.39", "CLP*2005555A*4*ABC"
            ),
            "CLP03",
        ),
        (shared_text("x12/835_mult_loops.txt").replace("CAS*CO*16*", "CAS*XX*16*"), "CAS01"),
    ],
)
def test_bad_input_names_the_segment(text: str, field: str) -> None:
    with pytest.raises(InputError) as err:
        parse_835(text)
    assert err.value.field == field


@requires_shared
def test_835_without_claims_is_refused() -> None:
    text = SAMPLE_835.read_text()
    head, _, _ = text.partition("LX*1~")
    no_claims = head + "SE*11*0001~\nGE*1*383880001~\nIEA*1*000238388~\n"
    with pytest.raises(InputError) as err:
        parse_835(no_claims)
    assert err.value.field == "CLP"
    assert validate_835(no_claims) == ["CLP: no claim payment (CLP) in the 835"]


@requires_shared
def test_read_segments_keeps_components() -> None:
    seg = next(s for s in read_segments(SAMPLE_835.read_text()) if s.id == "SVC")
    assert (seg.comp(1, 1), seg.comp(1, 2), seg.el(2)) == ("HC", "T1005", "500.04")


# --- posting ------------------------------------------------------------------------------


def _post(payment: ClaimPayment, claim: SubmittedClaim | None) -> RemittancePosting:
    return post(
        payment,
        claim,
        payer_id=PAYER,
        file_id="F1",
        payment_trace="EFT000123",
        payment_date=date(2025, 3, 7),
        posted_at=POSTED_AT,
    )


def _payment(claim: SubmittedClaim) -> ClaimPayment:
    return parse_835(remit([claim])).claims[0]


def test_paid_claim_posts_paid_with_sequestration_as_the_only_variance() -> None:
    claim, decision = find_claim("paid")
    posting = _post(_payment(claim), claim)
    assert posting.status == "paid"
    assert posting.paid == decision.paid
    assert posting.patient_responsibility == decision.patient_responsibility
    assert posting.expected == D("120.00")
    sequestration = sum(a.amount for a in posting.adjustments if a.reason == "253")
    assert sequestration > 0
    assert posting.variance == -sequestration
    assert posting.encounter_id == f"E-{claim.claim_id}"
    assert {a.line for a in posting.adjustments} == {1, 2, 3}
    assert posting.event_id == event_id(
        claim.claim_id, decision.payer_claim_control_number, "1", "EFT000123", "remittance", "v1"
    )


def test_denied_line_posts_partially_paid() -> None:
    claim, _ = find_claim("line_denied")
    posting = _post(_payment(claim), claim)
    assert posting.status == "partially_paid"
    assert any(a.reason in {"97", "50"} and a.line for a in posting.adjustments)
    assert posting.variance is not None and posting.variance < 0
    assert set(posting.remark_codes) & {"M15", "N115"}


def test_underpayment_against_expected_posts_partially_paid() -> None:
    claim, _ = find_claim("paid")
    higher = claim.model_copy(update={"expected_reimbursement": D("150.00")})
    posting = _post(_payment(claim), higher)
    assert posting.status == "partially_paid"
    assert posting.variance is not None and posting.variance < D("-30.00")


def test_denied_claim_posts_denied_with_full_negative_variance() -> None:
    claim, _ = find_claim("denied")
    posting = _post(_payment(claim), claim)
    assert posting.status == "denied"
    assert posting.claim_status_code == "4"
    assert posting.paid == 0
    assert posting.variance == D("-120.00")
    assert sum(a.amount for a in posting.adjustments) == posting.total_charge


def test_reversal_and_unmatched() -> None:
    claim, _ = find_claim("paid")
    reversal = _payment(submitted(claim.claim_id, freq="8"))
    posted = _post(reversal, claim)
    assert posted.status == "reversed"
    assert posted.paid < 0 and posted.variance is None
    original = _post(_payment(claim), claim)
    assert posted.event_id != original.event_id  # a reversal is not a duplicate of the payment
    unmatched = _post(_payment(claim), None)
    assert unmatched.status == "unmatched"
    assert unmatched.claim_id == claim.claim_id
    assert (unmatched.expected, unmatched.variance, unmatched.encounter_id) == (None, None, None)


@requires_shared
def test_sample_835_posts_denied_and_redelivery_keeps_the_event_id() -> None:
    remittance = parse_835(SAMPLE_835.read_text())
    postings = post_remittance(remittance, {}, file_id="F9", posted_at=POSTED_AT)
    again = post_remittance(
        parse_835_transactions(SAMPLE_835.read_text())[0], {}, file_id="F10", posted_at=POSTED_AT
    )
    assert [p.status for p in postings] == ["unmatched"]
    assert postings[0].event_id == again[0].event_id
    assert postings[0].remark_codes == ["N14"]
    assert postings[0].payment_trace == "000000000"
    # matched against a claim, the same payment is a denial
    claim = submitted("2005555A", [("T1005", "915.39", "20031129")], expected=None)
    matched = post_remittance(remittance, {"2005555A": claim}, file_id="F9", posted_at=POSTED_AT)
    assert matched[0].status == "denied"
    assert matched[0].variance is None
