"""Remittance against what real payers send: 835s with defects, splits, PLBs and crossovers.

The fixtures in tests/fixtures/835/ are written from the 835 guide (005010X221A1) with the
habits of real payers; each carries one defect or case, and pyx12 reports exactly that
defect and nothing else (checked below), so the rest of each file is a valid 835.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from shared_data import SHARED_DATA, requires_shared

from pipeline.cli import main as cli
from pipeline.models import (
    Denial,
    PayerFile,
    RemittanceException,
    RemittancePosting,
    SubmittedClaim,
    event_id,
)
from pipeline.stage import Incoming, Out
from services.remittance.app import RemittanceStage
from services.remittance.era import read_835, validate_835
from services.remittance.ledger import Ledger
from services.remittance.posting import triage

FIXTURES = Path(__file__).parents[1] / "fixtures" / "835"
MEDICARE = "MEDICARE_B"
MEDIGAP = "36273"
D = Decimal
AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def claim(claim_id: str, charge: str, expected: str | None) -> SubmittedClaim:
    """A submitted professional claim, as the claims stage records it."""
    return SubmittedClaim(
        event_id=event_id(claim_id, "claims", "v1"),
        claim_id=claim_id,
        encounter_id=f"E-{claim_id}",
        payer_id=MEDICARE,
        payer_name="MEDICARE PART B",
        total_charge=D(charge),
        expected_reimbursement=D(expected) if expected else None,
        expected_basis="fee_schedule" if expected else "none",
        line_count=1,
        service_start=date(2026, 11, 10),
        service_end=date(2026, 11, 10),
        interchange_control_number="000000001",
        x12="",
        submitted_at=AT,
    )


CLAIMS = [
    claim("PCN1001", "200.00", "123.00"),
    claim("PCN1002", "120.00", "80.00"),
    claim("PCN1003", "120.00", "80.00"),
    claim("PCN2001", "280.00", "143.00"),
    claim("PCN3001", "60.00", "50.00"),
    claim("PCN3002", "150.00", "125.00"),
    claim("PCN4001", "200.00", "123.00"),
]


@pytest.fixture
def stage(tmp_path: Path) -> RemittanceStage:
    st = RemittanceStage(Ledger(tmp_path / "ledger.sqlite3"))
    for c in CLAIMS:
        st.handle(Incoming("claims.submitted.v1", c.claim_id, c, b"", {}, 0, 0, 0))
    return st


def receive(st: RemittanceStage, name: str, payer: str = MEDICARE) -> dict[str, list[Out]]:
    file = PayerFile(
        event_id=event_id(payer, name),
        payer_id=payer,
        file_id=name,
        kind="835",
        body=fixture(name),
        received_at=AT,
    )
    outs = list(st.handle(Incoming("payer.inbound.v1", name, file, b"", {}, 0, 7, 0)))
    by_topic: dict[str, list[Out]] = {}
    for out in outs:
        by_topic.setdefault(out.topic, []).append(out)
    return by_topic


def postings(outs: dict[str, list[Out]]) -> list[RemittancePosting]:
    return [o.value for o in outs.get("remittance.posted.v1", [])]  # type: ignore[misc]


# --- each fixture is a valid 835 but for its one defect ---------------------------------------

DEFECTS = {
    "bpr16_impossible_date.835": ["BPR16"],
    "latin1_patient_name.835": ["NM103", "NM104"],
    "two_payments_one_off_by_a_cent.835": ["BPR02 98.41"],
}


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.835")), ids=lambda p: p.name)
def test_every_fixture_is_valid_but_for_its_one_defect(path: Path) -> None:
    text = path.read_bytes().decode("iso-8859-1")
    if path.name == "component_separator_mismatch.835":
        assert validate_835(text) != []
        text = text[:104] + ">" + text[105:]  # with ISA16 saying what the file writes: valid
    errors = validate_835(text)
    expected = DEFECTS.get(path.name, [])
    assert all(any(marker in e for marker in expected) for e in errors), errors
    for marker in expected:
        assert any(marker in e for e in errors), (marker, errors)


# --- defects that change no amount are posted with a warning ----------------------------------


def test_an_impossible_bpr16_date_is_posted_with_a_warning(stage: RemittanceStage) -> None:
    outs = receive(stage, "bpr16_impossible_date.835")
    posted = postings(outs)
    assert [p.claim_id for p in posted] == ["PCN1001", "PCN1002"]
    assert sum((p.paid for p in posted), D(0)) == D("159.85")
    assert all(any("BPR16 '20002316'" in w for w in p.warnings) for p in posted)
    assert posted[0].payment_date == date(2026, 11, 30)  # DTM*405, said in the warnings
    assert "remittance.exceptions.v1" not in outs and "remittance.denials.v1" not in outs


def test_a_component_separator_other_than_isa16_is_read_when_unambiguous(
    stage: RemittanceStage,
) -> None:
    posted = postings(receive(stage, "component_separator_mismatch.835"))
    paid = [(p.claim_id, p.paid) for p in posted]
    assert paid == [("PCN1001", D("98.40")), ("PCN1002", D("61.45"))]
    assert posted[1].lines[0].procedure == "99213" and posted[1].lines[0].modifiers == ["25"]
    assert any("written with '>'" in w for w in posted[0].warnings)


def test_a_separator_mismatch_that_is_ambiguous_is_not_guessed() -> None:
    text = fixture("component_separator_mismatch.835").decode()
    mixed = text.replace("SVC*HC>99214", "SVC*HC:99214", 1)  # one composite with ':'
    read = read_835(mixed)
    assert read.warnings == ()
    (remit,) = read.remittances
    assert [c.patient_control_number for c in remit.claims] == ["PCN1001"]
    assert [d.patient_control_number for d in remit.defects] == ["PCN1002"]
    assert remit.defects[0].field == "SVC01"


def test_a_non_ascii_byte_is_decoded_as_latin_1_and_posted(stage: RemittanceStage) -> None:
    (posting,) = postings(receive(stage, "latin1_patient_name.835"))
    assert (posting.claim_id, posting.paid, posting.status) == ("PCN1001", D("98.40"), "paid")
    assert any("0xD1" in w and "ISO 8859-1" in w for w in posting.warnings)
    (remit,) = read_835(fixture("latin1_patient_name.835")).remittances
    assert remit.claims[0].patient_last_name == "MUÑOZ"


def test_utf8_bytes_are_read_as_utf8() -> None:
    body = fixture("latin1_patient_name.835").replace(b"MU\xd1OZ", "MUÑOZ".encode())
    body = body.replace(b"JOS\xc9", "JOSÉ".encode())
    read = read_835(body)
    assert read.remittances[0].claims[0].patient_last_name == "MUÑOZ"
    assert "UTF-8" in read.warnings[0]


def test_a_non_ascii_byte_in_the_isa_keeps_its_fixed_length() -> None:
    body = fixture("latin1_patient_name.835").replace(b"PALMETTOGBA ", b"PALMETT\xc3\x93GBA", 1)
    read = read_835(body)  # valid UTF-8, but read so it would be 105 characters: ISO 8859-1
    assert "ISO 8859-1" in read.warnings[0] and read.remittances[0].payment_amount == D("98.40")


# --- errors isolated per transaction set and per claim ----------------------------------------


def test_a_balanced_payment_is_posted_beside_an_unbalanced_one(stage: RemittanceStage) -> None:
    outs = receive(stage, "two_payments_one_off_by_a_cent.835")
    assert [(p.claim_id, p.paid) for p in postings(outs)] == [("PCN1002", D("61.45"))]
    (held,) = outs["remittance.exceptions.v1"]
    exception = held.value
    assert isinstance(exception, RemittanceException)
    assert (exception.kind, exception.transaction_control_number) == ("unbalanced_payment", "0001")
    assert [c.claim_id for c in exception.claims] == ["PCN1001"]
    assert any("BPR02 98.41" in e for e in exception.errors)
    assert exception.body == fixture("two_payments_one_off_by_a_cent.835")
    assert stage.ledger.postings("PCN1001") == []


def test_an_unbalanced_claim_is_held_alone_and_its_payment_posted() -> None:
    text = fixture("bpr16_impossible_date.835").decode().replace("CAS*CO*45*77~", "CAS*CO*45*76~")
    postable, held = triage(read_835(text))
    assert [c.patient_control_number for c in postable[0].claims] == ["PCN1002"]
    assert [(h.kind, h.claims[0].patient_control_number) for h in held] == [
        ("unbalanced_claim", "PCN1001")
    ]
    assert any("SVC02 200.00 - CAS 100.60 != SVC03 98.40" in e for e in held[0].errors)


# --- splits, contracts and payers: no false underpayment --------------------------------------


def test_a_claim_split_over_two_clps_nets_without_a_false_underpayment(
    stage: RemittanceStage,
) -> None:
    outs = receive(stage, "split_claim.835")
    first, second = postings(outs)
    assert (first.claim_id, second.claim_id) == ("PCN2001", "PCN2001")
    assert first.variance is None  # the payer has adjudicated 200.00 of the 280.00 billed
    assert second.variance == D("0.00")  # 98.40 + 24.60 + 16.00 + 4.00 = 143.00 expected
    assert {p.status for p in (first, second)} == {"paid"}
    assert "remittance.denials.v1" not in outs
    assert stage.ledger.net_paid("PCN2001") == D("114.40")


def test_a_split_that_comes_up_short_is_still_an_underpayment(stage: RemittanceStage) -> None:
    text = fixture("split_claim.835").decode()
    short = text.replace("CLP*PCN2001*1*80*16*4*", "CLP*PCN2001*1*80*6*4*").replace(
        "SVC*HC:93000*80*16**1~\nDTM*472*20261114~\nCAS*CO*45*60~",
        "SVC*HC:93000*80*6**1~\nDTM*472*20261114~\nCAS*CO*45*70~",
    )
    short = short.replace("BPR*I*114.40*", "BPR*I*104.40*")
    outs = _receive_text(stage, short, "short.835")
    (denial,) = outs["remittance.denials.v1"]
    assert isinstance(denial.value, Denial)
    assert (denial.value.kind, denial.value.at_stake) == ("underpaid", D("10.00"))


def _receive_text(st: RemittanceStage, text: str, name: str) -> dict[str, list[Out]]:
    file = PayerFile(
        event_id=event_id(MEDICARE, name),
        payer_id=MEDICARE,
        file_id=name,
        kind="835",
        body=text.encode(),
        received_at=AT,
    )
    by_topic: dict[str, list[Out]] = {}
    for out in st.handle(Incoming("payer.inbound.v1", name, file, b"", {}, 0, 0, 0)):
        by_topic.setdefault(out.topic, []).append(out)
    return by_topic


def test_medicaid_paid_against_a_medicare_price_is_no_underpayment(stage: RemittanceStage) -> None:
    text = fixture("bpr16_impossible_date.835").decode().replace("*MB*2026334000101", "*MC*X1")
    posted = postings(outs := _receive_text(stage, text, "medicaid.835"))
    assert posted[0].expected is None and posted[0].variance is None
    assert "remittance.denials.v1" not in outs


def test_a_crossover_and_the_secondary_payment_post_by_payer_without_underpayment(
    stage: RemittanceStage,
) -> None:
    (primary,) = postings(receive(stage, "medicare_crossover.835"))
    assert (primary.payer_sequence, primary.crossover_payer) == (1, "AARP MEDICARE SUPPLEMENT")
    assert primary.remark_codes == ["MA18"] and primary.variance == D("0.00")
    outs = receive(stage, "medigap_secondary.835", payer=MEDIGAP)
    (secondary,) = postings(outs)
    assert (secondary.payer_id, secondary.payer_sequence) == (MEDIGAP, 2)
    assert (secondary.paid, secondary.expected) == (D("24.60"), None)
    assert "remittance.denials.v1" not in outs
    assert primary.event_id != secondary.event_id
    assert stage.ledger.net_paid("PCN4001") == D("123.00")


# --- PLB: applied to the claim its reference names, forward balances carried -------------------


def test_a_wo_takeback_is_applied_to_the_claim_its_reference_names(stage: RemittanceStage) -> None:
    receive(stage, "bpr16_impossible_date.835")
    assert stage.ledger.net_paid("PCN1001") == D("98.40")
    outs = receive(stage, "plb_wo_takeback.835")
    assert [p.claim_id for p in postings(outs)] == ["PCN1003"]
    assert stage.ledger.claim_plb("PCN1001") == [("WO", "2026334000101", D("50.00"))]
    assert stage.ledger.net_paid("PCN1001") == D("48.40")
    assert stage.ledger.provider_balance(MEDICARE) == []


def test_a_forward_balance_is_carried_to_the_next_file(stage: RemittanceStage) -> None:
    receive(stage, "bpr16_impossible_date.835")
    receive(stage, "plb_forward_balance_1.835")
    assert stage.ledger.net_paid("PCN1001") == D("0.00")  # WO 98.40 took it all back
    assert stage.ledger.forward_balance(MEDICARE) == D("58.40")  # owed, carried
    receive(stage, "plb_forward_balance_2.835")
    assert stage.ledger.forward_balance(MEDICARE) == D("0.00")  # collected in the next file
    assert stage.ledger.net_paid("PCN3002") == D("100.00")


def test_a_plb_naming_no_known_claim_is_held_as_a_provider_balance(
    stage: RemittanceStage,
) -> None:
    text = fixture("plb_wo_takeback.835").decode().replace("WO:2026334000101", "WO:UNKNOWN77")
    _receive_text(stage, text, "unknown.835")
    assert stage.ledger.provider_balance(MEDICARE) == [("WO", "UNKNOWN77", D("50.00"))]


# --- the public sample ----------------------------------------------------------------------


@requires_shared
def test_the_public_multi_loop_sample_is_read_and_balances() -> None:
    read = read_835((SHARED_DATA / "x12" / "835_mult_loops.txt").read_bytes())
    (remit,) = read.remittances
    assert remit.payment_amount == D("0.00") and remit.balance_errors() == []
    assert [c.status_code for c in remit.claims] == ["4"]


def test_the_offline_command_shows_the_takeback_and_the_carried_balance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    claims = tmp_path / "claims.jsonl"
    claims.write_text("".join(c.model_dump_json() + "\n" for c in CLAIMS))
    files = ["bpr16_impossible_date.835", "plb_wo_takeback.835", "plb_forward_balance_1.835"]
    assert cli(["remit", "post", *(str(FIXTURES / f) for f in files), "--claims", str(claims)]) == 0
    *outs, last = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {o["value"]["payer_id"] for o in outs} == {MEDICARE}  # REF*2U of each 835
    ledger = last["ledger"]
    assert ledger["claims"] == {"PCN1001": "-50.00"}  # 98.40 paid, WO 50.00 and 98.40 back
    assert ledger["forward_balances"] == {MEDICARE: "58.40"}
    assert [(a["reason"], a["target"]) for a in ledger["provider_adjustments"]] == [
        ("WO", "claim"),
        ("WO", "claim"),
        ("FB", "forward_balance"),
    ]
