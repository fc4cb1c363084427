"""Secondary and tertiary claims: the primary's 835, posted, becomes the 2320/2330/2430 loops.

The whole way is real: the claims stage's 837P to Medicare, the payer simulator's 835 for
it, remittance's parser and posting, then the secondary 837P from that posting, checked
with pyx12 and by the guide's COB balancing.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from factories import BILLING_NPI, MEDICARE_B, MEDIGAP_F, VALIDATED_AT, coded, encounter

from pipeline.errors import InputError
from pipeline.models import (
    CodedEncounter,
    Coverage,
    LineAdjustment,
    PayerFile,
    RemittancePosting,
    SubmittedClaim,
    ValidatedEncounter,
    event_id,
)
from pipeline.serde import registry
from pipeline.stage import Incoming
from services.claims.cob import LineAdjudication, PriorPayer, prior_payer
from services.claims.domain import build_claim
from services.claims.x12_837_common import ClaimInput
from services.claims.x12_837p import build_837p
from services.remittance.era import parse_835
from services.remittance.posting import post
from services.x12.reader import read_segments
from services.x12.validate import validate_x12
from sim.payer import adjudicate

REG = registry()

MEDICARE, MEDIGAP = MEDICARE_B, MEDIGAP_F
MEDICAID = Coverage(
    payer_id="77027", payer_name="Alabama Medicaid", plan_type="MC", member_id="AM5511"
)
AT = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)


def medicare_visit() -> CodedEncounter:
    return coded(encounter(coverage=MEDICARE))


def clean(record: CodedEncounter) -> ValidatedEncounter:
    """A clean verdict on a coded encounter."""
    return ValidatedEncounter(
        event_id=event_id(record.encounter_id, "validation", "test"),
        encounter_id=record.encounter_id,
        outcome="clean",
        edits=[],
        rule_pack_version="test",
        coded=record,
        validated_at=VALIDATED_AT,
    )


def answer(claim: SubmittedClaim, trace: str) -> str:
    """The payer simulator's 835 for one claim."""
    return adjudicate(
        [claim],
        payer_id=claim.payer_id,
        payer_name=claim.payer_name,
        payee_npi=BILLING_NPI,
        payee_name="MAGIC CITY FAMILY MEDICINE PC",
        trace_number=trace,
        paid_date=date(2026, 3, 20),
    )


def primary_posting(record: CodedEncounter) -> tuple[SubmittedClaim, RemittancePosting]:
    """Bill Medicare, let the payer simulator answer with an 835, and post it."""
    verdict = clean(record)
    claim = build_claim(verdict, sender_id="CLAIMFLOW", receiver_id="04412")
    payment = parse_835(answer(claim, "EFT26032001")).claims[0]
    posting = post(
        payment,
        claim,
        payer_id=claim.payer_id,
        file_id="era-1",
        payment_trace="EFT26032001",
        payment_date=date(2026, 3, 20),
        posted_at=AT,
    )
    return claim, posting


def secondary_837(
    record: CodedEncounter, claim_id: str, coverage: Coverage, *priors: PriorPayer
) -> str:
    claim = ClaimInput(
        f"{claim_id}-{len(priors) + 1}", record, billed_coverage=coverage, prior_payers=priors
    )
    return build_837p(
        [claim], sender_id="CLAIMFLOW", receiver_id=coverage.payer_id, control_number=42, created=AT
    )


def segments(text: str, sid: str) -> list[list[str]]:
    return [list(s.elements) for s in read_segments(text) if s.id == sid]


def test_a_medicare_primary_835_becomes_a_pyx12_valid_secondary_837p() -> None:
    record = medicare_visit()
    claim, posting = primary_posting(record)
    assert posting.status in {"paid", "partially_paid"} and posting.paid > 0
    prior = prior_payer(posting, MEDICARE, 1)
    x12 = secondary_837(record, claim.claim_id, MEDIGAP, prior)
    assert validate_x12(x12) == []
    sbrs = segments(x12, "SBR")
    assert [s[0] for s in sbrs] == ["S", "P"]  # 2000B billed to the Medigap plan, 2320 Medicare
    assert sbrs[0][8] == "CI" and sbrs[1][8] == "MB"
    assert segments(x12, "AMT") == [["D", str(posting.paid)]]
    nm1 = {s[0]: s for s in segments(x12, "NM1")}
    assert nm1["PR"][8] == "04412" or any(
        s[8] == "04412" for s in segments(x12, "NM1") if s[0] == "PR"
    )
    assert ["F8", posting.payer_claim_control_number] in segments(x12, "REF")
    svds = segments(x12, "SVD")
    assert [s[0] for s in svds] == ["04412", "04412"]
    assert sum(Decimal(s[1]) for s in svds) == posting.paid
    assert segments(x12, "DTP").count(["573", "D8", "20260320"]) == 2
    # every CAS the primary sent, on its line, and the line's CAS balance its SVD
    cas = segments(x12, "CAS")
    adjusted = sum(Decimal(s[i]) for s in cas for i in range(2, len(s), 3) if s[i])
    assert adjusted == claim.total_charge - posting.paid


def test_a_tertiary_claim_reports_both_prior_payers() -> None:
    record = medicare_visit()
    claim, posting = primary_posting(record)
    primary = prior_payer(posting, MEDICARE, 1)
    # The Medigap plan paid the coinsurance left by Medicare, line by line (CARC 23: the
    # prior payer's adjudication), leaving the deductible, if any, to Medicaid.
    lines = []
    for line in primary.lines:
        coinsurance = sum(
            (a.amount for a in line.adjustments if (a.group, a.reason) == ("PR", "2")), Decimal(0)
        )
        charge = record.lines[line.line_number - 1].charge
        lines.append(
            LineAdjudication(
                line_number=line.line_number,
                qualifier="HC",
                procedure=line.procedure,
                modifiers=line.modifiers,
                paid=coinsurance,
                units=line.units,
                revenue_code=None,
                adjustments=(LineAdjustment(group="OA", reason="23", amount=charge - coinsurance),),
            )
        )
    secondary = PriorPayer(
        coverage=MEDIGAP,
        sequence="S",
        paid=sum((x.paid for x in lines), Decimal(0)),
        adjudicated=date(2026, 4, 2),
        payer_claim_control_number="MG2026040200017",
        lines=tuple(lines),
    )
    x12 = secondary_837(record, claim.claim_id, MEDICAID, primary, secondary)
    assert validate_x12(x12) == []
    assert [s[0] for s in segments(x12, "SBR")] == ["T", "P", "S"]
    assert [s[0] for s in segments(x12, "AMT")] == ["D", "D"]
    assert [s[0] for s in segments(x12, "SVD")] == ["04412", "36273", "04412", "36273"]
    assert "-3" in [s for s in segments(x12, "CLM")][0][0]


def test_a_prior_adjudication_that_does_not_balance_is_refused() -> None:
    record = medicare_visit()
    claim, posting = primary_posting(record)
    prior = prior_payer(posting, MEDICARE, 1)
    wrong = PriorPayer(**{**prior.__dict__, "paid": prior.paid + Decimal("1.00")})
    with pytest.raises(InputError) as err:
        secondary_837(record, claim.claim_id, MEDIGAP, wrong)
    assert err.value.field == "prior_payers[04412]" and "AMT*D" in err.value.reason


def test_a_primary_claim_is_unchanged() -> None:
    record = medicare_visit()
    x12 = build_837p(
        [ClaimInput("CF1", record)],
        sender_id="CLAIMFLOW",
        receiver_id="04412",
        control_number=7,
        created=AT,
    )
    assert [s[0] for s in segments(x12, "SBR")] == ["P"]
    assert segments(x12, "SVD") == [] and segments(x12, "AMT") == []


MEDICARE_A = Coverage(
    payer_id="04411",
    payer_name="Palmetto GBA Medicare Part A",
    plan_type="MA",
    member_id="1EG4TE5MK72",
)


def test_an_inpatient_primary_835_becomes_a_pyx12_valid_secondary_837i() -> None:
    from test_claims_837i import inpatient

    from services.claims.x12_837_common import build_837
    from services.claims.x12_837i import INSTITUTIONAL

    record = inpatient(encounter={"coverage": MEDICARE_A})
    claim, posting = primary_posting(record)
    assert claim.claim_type == "institutional"
    assert {line.qualifier for line in posting.lines} >= {"NU"}  # revenue-code-only lines
    prior = prior_payer(posting, MEDICARE_A, 1)
    secondary = ClaimInput(
        f"{claim.claim_id}-2", record, billed_coverage=MEDIGAP, prior_payers=(prior,)
    )
    x12 = build_837(
        [secondary],
        INSTITUTIONAL,
        sender_id="CLAIMFLOW",
        receiver_id="36273",
        control_number=9,
        created=AT,
    )
    assert validate_x12(x12) == []
    assert [s[0] for s in segments(x12, "SBR")] == ["S", "P"]
    svds = segments(x12, "SVD")
    assert [s[3] for s in svds] == ["0120", "0360", "0250", "0300"]  # SVD04 revenue codes
    assert [s[2] for s in svds] == ["", "", "", "HC:85025"]  # SVD03 only for a HCPCS line


# --- the claims stage: a posting bills the next payer ----------------------------------------


def by_encounter(claims_stage: Any, posting: RemittancePosting, offset: int) -> list[Any]:
    """A posting through the claims stage as the broker carries it: from remittance.posted.v1
    re-keyed by encounter (the same bytes), then billed from claims.postings-by-encounter.v1."""
    from test_claims_service import incoming

    moved = list(claims_stage.handle_batch([incoming(posting, offset, "remittance.posted.v1")]))
    (out,) = moved
    assert (out.topic, out.key) == ("claims.postings-by-encounter.v1", posting.encounter_id)
    assert out.raw == REG.encode("remittance.posted.v1", posting)
    return list(claims_stage.handle_batch([incoming(posting, offset, out.topic)]))


def test_the_claims_stage_bills_the_secondary_then_the_tertiary_and_never_twice(
    tmp_path: Path,
) -> None:
    from test_claims_service import incoming, stage, submitted

    from services.remittance.app import RemittanceStage
    from services.remittance.ledger import Ledger

    claims_stage, _ = stage(tmp_path)
    remittance = RemittanceStage(Ledger(tmp_path / "ledger.sqlite3"))
    record = with_a_deductible(other_coverages=[MEDIGAP, MEDICAID])
    verdict = clean(record)

    def through_the_payer(claim: SubmittedClaim, offset: int) -> RemittancePosting:
        """The payer simulator's 835 for the claim, posted by the remittance stage."""
        remittance.handle(Incoming("claims.submitted.v1", claim.claim_id, claim, b"", {}, 0, 0, 0))
        text = answer(claim, f"TRACE{offset}")
        file = PayerFile(
            event_id=event_id(claim.payer_id, f"F{offset}"),
            payer_id=claim.payer_id,
            file_id=f"F{offset}",
            kind="835",
            body=text.encode(),
            received_at=AT,
        )
        outs = remittance.handle(Incoming("payer.inbound.v1", "k", file, b"", {}, 0, offset, 0))
        (posting,) = [o.value for o in outs if o.topic == "remittance.posted.v1"]
        return posting  # type: ignore[no-any-return]

    (primary,) = submitted(list(claims_stage.handle_batch([incoming(verdict, 0)])))
    assert primary.payer_id == "04412"
    posting = through_the_payer(primary, 1)
    assert posting.patient_responsibility > 0 and posting.payer_sequence == 1
    (secondary,) = submitted(by_encounter(claims_stage, posting, 1))
    assert (secondary.claim_id, secondary.payer_id) == (f"{primary.claim_id}-2", "36273")
    assert secondary.expected_reimbursement is None
    assert validate_x12(secondary.x12) == []
    assert [s[0] for s in segments(secondary.x12, "SBR")] == ["S", "P", "T"]
    assert submitted(by_encounter(claims_stage, posting, 1)) == []  # redelivered: once

    second = through_the_payer(secondary, 2)
    assert (second.claim_status_code, second.payer_sequence) == ("2", 2)
    assert second.expected is None and second.variance is None
    assert second.patient_responsibility > 0  # the Medigap plan left the deductible
    (tertiary,) = submitted(by_encounter(claims_stage, second, 2))
    assert (tertiary.claim_id, tertiary.payer_id) == (f"{primary.claim_id}-3", "77027")
    assert validate_x12(tertiary.x12) == []
    assert [s[0] for s in segments(tertiary.x12, "SBR")] == ["T", "P", "S"]
    third = through_the_payer(tertiary, 3)
    assert (third.claim_status_code, third.payer_sequence, third.expected) == ("3", 3, None)
    last = by_encounter(claims_stage, third, 3)
    assert submitted(last) == []  # the last payer: what is left is the patient's


def with_a_deductible(**changes: object) -> CodedEncounter:
    """A Medicare visit whose primary adjudication (the simulator's, seeded by the claim id)
    leaves a deductible, so a secondary that pays only coinsurance leaves something."""
    for n in range(200):
        enc = encounter(coverage=MEDICARE, encounter_id=f"ENC-COB-{n}", **changes)
        record = coded(enc)
        _, posting = primary_posting(record)
        if any(a.reason == "1" for line in posting.lines for a in line.adjustments):
            return record
    raise AssertionError("no Medicare deductible among 200 seeded visits")


def test_a_crossover_bills_no_secondary(tmp_path: Path) -> None:
    from test_claims_service import incoming, stage, submitted

    claims_stage, _ = stage(tmp_path)
    record = coded(encounter(coverage=MEDICARE, other_coverages=[MEDIGAP]))
    verdict = clean(record)
    (primary,) = submitted(list(claims_stage.handle_batch([incoming(verdict, 0)])))
    _, posting = primary_posting(record)
    crossed = posting.model_copy(
        update={"crossover_payer": "AARP MEDICARE SUPPLEMENT", "claim_status_code": "19"}
    )
    assert crossed.patient_responsibility > 0
    outs = by_encounter(claims_stage, crossed, 1)
    assert submitted(outs) == [] and not [o for o in outs if o.topic.startswith("dlq")]
    # the same posting without the crossover bills the Medigap plan
    outs = by_encounter(claims_stage, posting, 2)
    assert [c.payer_id for c in submitted(outs)] == ["36273"]


def test_a_corrected_claim_refers_to_the_payer_number_its_835_gave(tmp_path: Path) -> None:
    """The denial work queue's loop: the payer's claim number (CLP07) comes with the posting;
    the encounter corrected (re-coded) goes back out as a replacement (7) that names it."""
    from test_claims_service import incoming, stage, submitted

    from pipeline.tracker import Ledger as Tracked

    claims_stage, _ = stage(tmp_path)
    record = medicare_visit()
    (original,) = submitted(list(claims_stage.handle_batch([incoming(clean(record), 0)])))
    _, posting = primary_posting(record)
    assert posting.claim_id == original.claim_id and posting.payer_claim_control_number
    by_encounter(claims_stage, posting, 1)
    fixed_line = record.lines[1].model_copy(update={"modifiers": ["QW"]})
    fixed = record.model_copy(update={"lines": [record.lines[0], fixed_line]})
    verdict = clean(fixed).model_copy(update={"event_id": "verdict-after-the-fix"})
    (replacement,) = submitted(list(claims_stage.handle_batch([incoming(verdict, 2)])))
    assert (replacement.claim_id, replacement.frequency) == (original.claim_id, "7")
    assert replacement.original_reference == posting.payer_claim_control_number
    assert ["F8", posting.payer_claim_control_number] in segments(replacement.x12, "REF")
    assert validate_x12(replacement.x12) == []
    tracked = Tracked()
    for claim in (original, replacement):
        tracked.add("claims.submitted.v1", claim.claim_id, claim)
    assert tracked.resubmitted() == {original.claim_id}


def test_the_payer_registry_names_each_payer_and_may_keep_secondaries_on_paper() -> None:
    from services.claims.secondary import next_claim
    from services.refdata.masterdata import MasterData
    from services.refdata.payers import PayerRegistry

    def registry(electronic: bool) -> MasterData:
        payers = [
            {"payer_id": "04412", "name": "Medicare Part B", "aliases": ["MEDICARE_B"],
             "medicare": True, "claim_types": {"professional": {"filing_indicator": "MB"}}},
            {"payer_id": "36273", "name": "AARP Medicare Supplement", "aliases": ["MEDIGAP"],
             "secondary_electronic": electronic,
             "claim_types": {"professional": {"filing_indicator": "CI"}}},
        ]  # fmt: skip
        return MasterData(payers=PayerRegistry.from_json({"payers": payers}))

    as_sent = MEDICARE.model_copy(update={"payer_id": "MEDICARE_B"})
    medigap = MEDIGAP.model_copy(update={"payer_id": "MEDIGAP", "plan_type": "12"})
    record = coded(encounter(coverage=as_sent, other_coverages=[medigap]))
    _, posting = primary_posting(coded(encounter(coverage=MEDICARE)))
    posting = posting.model_copy(update={"encounter_id": record.encounter_id})
    found = next_claim(posting, clean(record), posting.claim_id, master=registry(True))
    assert found.planned is not None and found.position == 1
    assert (found.planned.payer_id, found.planned.claim.coverage.plan_type) == ("36273", "CI")
    (prior,) = found.planned.claim.prior_payers
    assert prior.coverage.payer_id == "04412"  # 2330B and SVD01: the id the 835 came from
    paper = next_claim(posting, clean(record), posting.claim_id, master=registry(False))
    assert paper.planned is None and "paper" in paper.reason
    unknown = next_claim(posting, clean(record), posting.claim_id)  # no registry: as sent
    assert unknown.planned is None and "none of the encounter's coverages" in unknown.reason


def test_the_primary_claim_names_the_payers_after_it_so_it_can_cross_over() -> None:
    record = coded(encounter(coverage=MEDICARE, other_coverages=[MEDIGAP, MEDICAID]))
    claim = build_claim(clean(record), sender_id="CLAIMFLOW", receiver_id="04412")
    assert validate_x12(claim.x12) == []
    assert [s[0] for s in segments(claim.x12, "SBR")] == ["P", "S", "T"]
    payers = [s[8] for s in segments(claim.x12, "NM1") if s[0] == "PR"]
    assert payers == ["04412", "36273", "77027"]
    assert segments(claim.x12, "AMT") == [] and segments(claim.x12, "SVD") == []
    _, posting = primary_posting(record)  # the payer adjudicates it as the primary
    assert posting.claim_status_code == "1" and posting.payer_sequence == 1
