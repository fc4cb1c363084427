"""Master data where it is used: the scrubber, the 837 writer, expected payments, posting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from test_claims_837 import COVERAGE, MEDICARE_B, coded_encounter, validated
from test_claims_837i import MEDICARE_A, assert_valid, inpatient
from test_claims_837i import validated as validated_i

from pipeline.models import CodedEncounter, Coverage
from services.claims.domain import build_claim
from services.refdata.chargemaster import load_chargemaster
from services.refdata.codesets import CodeSets
from services.refdata.masterdata import MasterData
from services.refdata.payers import PayerRegistry
from services.remittance.denials import CodeTables, denial_for
from services.remittance.era import ClaimPayment
from services.remittance.posting import post
from services.validation.rules import validate

REGISTRY = PayerRegistry.from_json(
    {
        "payers": [
            {
                "payer_id": "04412",
                "name": "Medicare Part B",
                "aliases": ["Medicare"],
                "receiver_id": "NOVITAS-JL",
                "receiver_name": "NOVITAS SOLUTIONS",
                "submitter_id": "SUB778812",
                "medicare": True,
                "claim_types": {
                    "professional": {"filing_indicator": "MB"},
                    "institutional": {"payer_id": "04411", "filing_indicator": "MA"},
                },
            },
            {
                "payer_id": "77027",
                "name": "State Medicaid",
                "aliases": ["MCD01"],
                "timely_filing_days": 90,
                "claim_types": {"professional": {"filing_indicator": "MC"}},
                "contract": {"payer_name": "State Medicaid", "plan_name": "Medicaid"},
            },
            {
                "payer_id": "77028",
                "name": "Other State Medicaid",
                "timely_filing_days": 365,
                "claim_types": {"professional": {"filing_indicator": "MC"}},
            },
            {
                "payer_id": "87726",
                "name": "UnitedHealthcare",
                "timely_filing_days": 180,
                "claim_types": {"professional": {"filing_indicator": "CI"}},
            },
        ]
    }
)
# The professional fee schedule a Medicaid contract pays, in the price-transparency layout.
CDM = """\
hospital_name,last_updated_on,version,location_name,hospital_address
Magic City Family Medicine,2026-01-01,3.0.0,Main,1 Main St
description,code | 1,code | 1 | type,setting,standard_charge | gross,payer_name,plan_name,\
standard_charge | negotiated_dollar,standard_charge | negotiated_percentage,\
standard_charge | negotiated_algorithm,standard_charge | methodology
Office visit est. 25 min,99213,CPT,outpatient,150,State Medicaid,Medicaid,80,,,fee schedule
Office visit est. 25 min,99213,CPT,outpatient,150,Acme Health,PPO,,70,,\
percent of total billed charges
"""
MEDICAID = Coverage(payer_id="77027", payer_name="State Medicaid", plan_type="MC",
                    member_id="7123456789")  # fmt: skip
OTHER_MEDICAID = MEDICAID.model_copy(update={"payer_id": "77028"})


@pytest.fixture
def master(tmp_path: Path) -> MasterData:
    path = tmp_path / "cdm.csv"
    path.write_text(CDM)
    return MasterData(payers=REGISTRY, chargemaster=load_chargemaster(path))


def _segments(x12: str, name: str) -> list[list[str]]:
    return [s.split("*") for s in x12.split("~") if s.strip().startswith(name + "*")]


# --- the 837 writer ------------------------------------------------------------------------


def test_medicare_institutional_and_professional_filing_codes_and_ids(master: MasterData) -> None:
    # The EHR named Medicare by its Part B id on both claims.
    stay = inpatient(encounter={"coverage": MEDICARE_A.model_copy(update={"payer_id": "04412"})})
    facility = build_claim(validated_i(stay), sender_id="CF", receiver_id="CH", master=master)
    office = coded_encounter(coverage=MEDICARE_B)
    professional = build_claim(validated(office), sender_id="CF", receiver_id="CH", master=master)
    for claim, filing, payer_id in ((facility, "MA", "04411"), (professional, "MB", "04412")):
        assert _segments(claim.x12, "SBR")[0][9] == filing
        payer = next(s for s in _segments(claim.x12, "NM1") if s[1] == "PR")
        assert payer[9] == payer_id and claim.payer_id == payer_id
        isa = _segments(claim.x12, "ISA")[0]
        assert (isa[6].strip(), isa[8].strip()) == ("SUB778812", "NOVITAS-JL")
        receiver = next(s for s in _segments(claim.x12, "NM1") if s[1] == "40")
        assert receiver[3:4] == ["NOVITAS SOLUTIONS"] and receiver[9] == "NOVITAS-JL"
        assert_valid(claim.x12)


# --- expected payments and posting ---------------------------------------------------------


def _payment(claim_id: str, charge: Decimal, paid: Decimal) -> ClaimPayment:
    return ClaimPayment(claim_id, "1", charge, paid, Decimal(0), filing_indicator="MC")


def _posted(claim, paid: str):
    payment = _payment(claim.claim_id, claim.total_charge, Decimal(paid))
    posting = post(payment, claim, payer_id=claim.payer_id, file_id="F1", payment_trace="T1",
                   payment_date=None, posted_at=datetime(2026, 3, 9, tzinfo=UTC))  # fmt: skip
    return posting, denial_for(posting, payment, CodeTables(), queued_at=posting.posted_at)


def test_a_medicaid_payment_is_judged_against_its_contract_rate(master: MasterData) -> None:
    office = coded_encounter(coverage=MEDICAID)  # one 99213 line
    claim = build_claim(validated(office), sender_id="CF", receiver_id="CH", master=master)
    assert claim.expected_reimbursement == Decimal("80.00")
    assert claim.expected_basis == "contract State Medicaid/Medicaid: line rates"
    posting, item = _posted(claim, "80.00")
    assert posting.status == "paid" and item is None
    posting, item = _posted(claim, "55.00")
    assert item is not None and item.kind == "underpaid" and item.at_stake == Decimal("25.00")


def test_a_medicaid_payment_without_a_contract_is_no_underpayment(master: MasterData) -> None:
    office = coded_encounter(coverage=OTHER_MEDICAID)

    class EveryCodePriced:  # the Medicare fee schedule would price it at 92.47
        def allowed(self, *args: object, **kw: object) -> Decimal:
            return Decimal("92.47")

    claim = build_claim(validated(office), sender_id="CF", receiver_id="CH", master=master,
                        fee_schedule=EveryCodePriced())  # fmt: skip
    assert (claim.expected_reimbursement, claim.expected_basis) == (None, "no_contract")
    posting, item = _posted(claim, "41.20")
    assert posting.status == "paid" and posting.expected is None and item is None


def test_a_percentage_contract_prices_the_line_charge(tmp_path: Path, master: MasterData) -> None:
    reg = PayerRegistry.from_json(
        {"payers": [{"payer_id": "87726", "name": "Acme", "contract": {"payer_name": "Acme Health",
         "plan_name": "PPO"}, "claim_types": {"professional": {"filing_indicator": "CI"}}}]}
    )  # fmt: skip
    priced = MasterData(payers=reg, chargemaster=master.chargemaster)
    claim = build_claim(validated(coded_encounter(coverage=COVERAGE)), sender_id="CF",
                        receiver_id="CH", master=priced)  # fmt: skip
    line_charge = coded_encounter(coverage=COVERAGE).lines[0].charge
    assert claim.expected_reimbursement == (line_charge * Decimal("0.70")).quantize(Decimal("0.01"))


# --- the scrubber --------------------------------------------------------------------------


def _rules(coded: CodedEncounter, at: datetime, payers: PayerRegistry = REGISTRY) -> set[str]:
    verdict = validate(coded, CodeSets(), validated_at=at, payers=payers)
    return {e.rule_id for e in verdict.edits if e.severity == "error"}


def test_timely_filing_is_per_payer(master: MasterData) -> None:
    medicaid = coded_encounter(coverage=MEDICAID)
    uhc = coded_encounter(coverage=COVERAGE)
    day_100 = datetime.combine(
        medicaid.encounter.service_end + timedelta(days=100), datetime.min.time(), UTC
    )
    assert "CF-DATE-006" in _rules(medicaid, day_100)  # 90 days
    assert "CF-DATE-006" not in _rules(uhc, day_100)  # 180 days
    day_200 = day_100 + timedelta(days=100)
    assert "CF-DATE-006" in _rules(uhc, day_200)
    assert "CF-DATE-006" not in _rules(uhc, day_200, PayerRegistry())  # the pack's 365 days


def test_placeholder_and_unregistered_payers_are_errors() -> None:
    at = datetime.combine(
        coded_encounter().encounter.service_end + timedelta(days=3), datetime.min.time(), UTC
    )
    private = coded_encounter(coverage=COVERAGE.model_copy(update={"payer_id": "PRIVATE"}))
    assert "CF-PAYER-001" in _rules(private, at, PayerRegistry())
    unknown = coded_encounter(coverage=COVERAGE.model_copy(update={"payer_id": "60054"}))
    assert "CF-PAYER-002" in _rules(unknown, at)
    assert "CF-PAYER-002" not in _rules(unknown, at, PayerRegistry())  # no registry: no opinion
    assert not {"CF-PAYER-001", "CF-PAYER-002"} & _rules(coded_encounter(), at)
    stay = inpatient(encounter={"coverage": MEDICAID})  # Medicaid takes no 837I here
    assert "CF-PAYER-002" in _rules(stay, at)


def test_a_pay_to_address_from_the_profile_goes_in_2010ab(master: MasterData) -> None:
    from test_claims_837 import GROUP

    from pipeline.models import Address
    from services.refdata.providers import ProviderDirectory

    lockbox = Address(line1="PO Box 149001", city="Birmingham", state="AL",
                      postal_code="352149001")  # fmt: skip
    profiles = ProviderDirectory(billing={GROUP.npi: GROUP}, pay_to={GROUP.npi: lockbox})
    with_pay_to = MasterData(providers=profiles, payers=master.payers)
    claim = build_claim(validated(coded_encounter(coverage=MEDICARE_B)), sender_id="CF",
                        receiver_id="CH", master=with_pay_to)  # fmt: skip
    segments = [s.strip() for s in claim.x12.split("~")]
    at = segments.index("NM1*87*2")
    assert segments[at + 1 : at + 3] == ["N3*PO BOX 149001", "N4*BIRMINGHAM*AL*352149001"]
    assert segments[at - 1].startswith("REF*EI*")  # right after the billing provider
    assert_valid(claim.x12)
