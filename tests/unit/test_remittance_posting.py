"""Remittance beyond parsing: every amount of the public 835, PLB, reversal + correction
netting, denials and their work-queue items, exceptions, and the stage's matching."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from shared_data import SHARED_DATA, requires_shared
from test_remittance_835 import NPI, PAYER, POSTED_AT, find_claim, remit, submitted

from pipeline.cli import main as cli
from pipeline.errors import InputError
from pipeline.models import Denial, PayerFile, RemittanceException, RemittancePosting, event_id
from pipeline.stage import Incoming, Out
from services.remittance.app import RemittanceOptions, RemittanceStage
from services.remittance.denials import CodeTables, denial_for, read_code_list
from services.remittance.era import parse_835, parse_835_transactions, validate_835
from services.remittance.ledger import Ledger
from services.remittance.matching import Matcher
from services.remittance.posting import Pricing, net, post, post_remittance, reconcile
from sim.payer import adjudicate_claim, render_835

D = Decimal
SAMPLE_835 = SHARED_DATA / "x12" / "835_mult_loops.txt"


def sample() -> str:
    return SAMPLE_835.read_text()


def with_bpr(text: str, amount: str) -> str:
    """The 835 with BPR02 replaced (BPR01 I, a payment)."""
    lines = text.split("~\n")
    index = next(i for i, s in enumerate(lines) if s.startswith("BPR*"))
    parts = lines[index].split("*")
    parts[1], parts[2] = "I", amount
    lines[index] = "*".join(parts)
    return "~\n".join(lines)


def add_segments(text: str, before: str, segments: Iterable[str]) -> str:
    """Insert segments before the first one starting with ``before``; fix SE01."""
    lines = text.split("~\n")
    index = next(i for i, s in enumerate(lines) if s.startswith(before))
    lines[index:index] = list(segments)
    se = next(i for i, s in enumerate(lines) if s.startswith("SE*"))
    st = next(i for i, s in enumerate(lines) if s.startswith("ST*"))
    lines[se] = f"SE*{se - st + 1}*{lines[se].split('*')[2]}"
    return "~\n".join(lines)


# --- the public sample, amount by amount ----------------------------------------------------


@requires_shared
def test_every_amount_of_the_public_835_is_read_as_the_file_states() -> None:
    remittance = parse_835(sample())
    assert (remittance.payment_amount, remittance.credit_debit, remittance.payment_method) == (
        D("0.00"),
        "C",
        "NON",
    )
    assert remittance.payment_date == date(2004, 10, 28)
    assert (remittance.trace_number, remittance.originator_id) == ("000000000", "1386000134")
    assert remittance.production_date == date(2013, 9, 1)
    assert (remittance.payee_name, remittance.payee_id) == ("UNKNOWN", "444313000")
    claim = remittance.claims[0]
    assert (claim.charge, claim.paid, claim.patient_responsibility) == (D("915.39"), 0, 0)
    assert (claim.filing_indicator, claim.payer_claim_control_number) == ("MC", "4276512332")
    assert (claim.patient_last_name, claim.patient_first_name) == ("BACH", "JOHANN")
    assert claim.rendering_provider_id == "44452736"
    lines = claim.service_lines
    assert [(ln.procedure, ln.charge, ln.paid, ln.units) for ln in lines] == [
        ("T1005", D("500.04"), 0, D("68")),
        ("T1005", D("127.80"), 0, D("16")),
        ("T1005", D("287.55"), 0, D("36")),
    ]
    assert [(a.group, a.reason, a.amount) for ln in lines for a in ln.adjustments] == [
        ("CO", "16", D("500.04")),
        ("OA", "A7", D("127.80")),
        ("OA", "A7", D("287.55")),
    ]
    assert [(ln.service_date, ln.service_end) for ln in lines] == [
        (date(2003, 11, 29), date(2003, 11, 29)),
        (date(2003, 10, 30), date(2003, 10, 30)),
        (date(2003, 10, 31), date(2003, 10, 31)),
    ]
    assert [ln.remark_codes for ln in lines] == [("N14",)] * 3
    summary = reconcile(remittance)
    assert (summary.claims_paid, summary.provider_adjustment_total, summary.cash) == (0, 0, 0)
    assert summary.balanced and remittance.balance_warnings() == []


@requires_shared
def test_public_835_denial_is_queued_as_missing_information_with_a_replacement() -> None:
    remittance = parse_835(sample())
    claim = submitted("2005555A", [("T1005", "915.39", "20031129")], expected=None)
    posting = post_remittance(remittance, {"2005555A": claim}, file_id="F9", posted_at=POSTED_AT)[0]
    item = denial_for(posting, remittance.claims[0], CodeTables(), queued_at=POSTED_AT)
    assert item is not None
    assert (item.kind, item.category, item.action) == (
        "denied",
        "missing_information",
        "correct_and_replace",
    )
    assert item.resubmit_frequency == "7"
    assert item.at_stake == D("915.39")  # CO-16 500.04 + OA-A7 (unknown code, refused) 415.35
    assert [(r.carc, r.line) for r in item.reasons] == [("16", 1), ("A7", 2), ("A7", 3)]
    assert [r.description is None for r in item.reasons] == [False, True, True]
    assert [(r.code, r.description is not None) for r in item.remarks] == [("N14", True)]
    assert [line.line for line in item.lines] == [1, 2, 3]


# --- several transactions, debits, MIA/MOA, the originally billed code ----------------------


def two_payments() -> str:
    """One interchange with two 835 transactions (two payments) from the simulator."""
    first_claim, _ = find_claim("paid")
    second_claim, _ = find_claim("deductible")
    one = remit([first_claim]).split("~\n")
    two = remit([second_claim], trace_number="EFT000124").split("~\n")
    st = next(i for i, s in enumerate(two) if s.startswith("ST*"))
    se = next(i for i, s in enumerate(two) if s.startswith("SE*"))
    second = [
        s.replace("ST*835*0001", "ST*835*0002").replace("*0001", "*0002")
        if s.startswith(("ST*", "SE*"))
        else s
        for s in two[st : se + 1]
    ]
    at = next(i for i, s in enumerate(one) if s.startswith("GE*"))
    merged = one[:at] + second + [one[at].replace("GE*1*", "GE*2*")] + one[at + 1 :]
    return "~\n".join(merged)


def test_every_transaction_of_a_multi_payment_file_is_parsed() -> None:
    text = two_payments()
    remits = parse_835_transactions(text)
    assert [r.transaction_control_number for r in remits] == ["0001", "0002"]
    assert [r.trace_number for r in remits] == ["EFT000123", "EFT000124"]
    assert all(r.balance_errors() == [] for r in remits)
    with pytest.raises(InputError) as err:
        parse_835(text)
    assert err.value.field == "ST"


def test_cli_remit_parse_prints_each_payment_and_fails_on_an_unbalanced_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "two.835"
    good.write_text(two_payments())
    assert cli(["remit", "parse", str(good)]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [p["trace_number"] for p in printed] == ["EFT000123", "EFT000124"]
    assert all(p["balance_errors"] == [] for p in printed)
    assert printed[0]["summary"]["cash"] == printed[0]["payment_amount"]
    bad = tmp_path / "bad.835"
    bad.write_text(with_bpr(remit([find_claim("paid")[0]]), "1.00"))
    assert cli(["remit", "parse", str(bad)]) == 1
    (line,) = capsys.readouterr().out.splitlines()
    assert "BPR02" in json.loads(line)["balance_errors"][0]


def test_a_debit_payment_balances_negative() -> None:
    claim, decision = find_claim("paid")
    reversal = remit([submitted(claim.claim_id, freq="8")])
    lines = [s for s in reversal.split("~\n") if not s.startswith("PLB*")]
    text = "~\n".join(lines)
    text = text.replace("BPR*H*0*C*NON", f"BPR*I*{decision.paid}*D*ACH")
    se = next(s for s in text.split("~\n") if s.startswith("SE*"))
    count = int(se.split("*")[1])
    text = text.replace(se, f"SE*{count - 1}*0001")
    remittance = parse_835(text)
    assert remittance.net_payment == -decision.paid
    assert remittance.balance_errors() == []


def test_mia_moa_drg_original_reference_and_the_originally_billed_code() -> None:
    claim, _ = find_claim("paid")
    text = remit([claim])
    text = text.replace(f"CLP*{claim.claim_id}*1*", f"CLP*{claim.claim_id}*1*", 1)
    lines = text.split("~\n")
    clp = next(i for i, s in enumerate(lines) if s.startswith("CLP*"))
    lines[clp] = lines[clp] + "**470*1.9373"
    lines.insert(clp + 2, "MIA*3***1250.5*MA01")
    lines.insert(clp + 3, "MOA*0.85*12.5*MA18")
    lines.insert(clp + 4, "REF*F8*OLDICN001")
    lines.insert(clp + 5, "AMT*I*2.15")
    svc = next(i for i, s in enumerate(lines) if s.startswith("SVC*"))
    lines[svc] = lines[svc] + "*HC:99215:25*1"
    remittance = parse_835("~\n".join(lines))
    paid = remittance.claims[0]
    assert (paid.drg_code, paid.drg_weight) == ("470", D("1.9373"))
    assert (paid.covered_days, paid.drg_amount) == (D("3"), D("1250.50"))
    assert (paid.reimbursement_rate, paid.hcpcs_payable) == (D("0.85"), D("12.50"))
    assert paid.remark_codes == ("MA01", "MA18")
    assert (paid.original_reference, paid.interest) == ("OLDICN001", D("2.15"))
    line = paid.service_lines[0]
    assert (line.procedure, line.original_procedure, line.original_modifiers) == (
        "99214",
        "99215",
        ("25",),
    )
    assert line.original_units == D("1") and line.recoded


def test_unknown_claim_status_code_is_refused() -> None:
    claim, _ = find_claim("paid")
    text = remit([claim]).replace(f"CLP*{claim.claim_id}*1*", f"CLP*{claim.claim_id}*99*")
    with pytest.raises(InputError) as err:
        parse_835(text)
    assert err.value.field == "CLP02"


def test_line_charges_that_miss_clp03_are_a_warning_not_an_error() -> None:
    claim, _ = find_claim("paid")
    lines = remit([claim]).split("~\n")
    first_svc = next(i for i, s in enumerate(lines) if s.startswith("SVC*"))
    second_svc = next(i for i, s in enumerate(lines) if s.startswith("SVC*") and i > first_svc)
    # The payer leaves line 1 out and reports its adjustments at claim level (after CLP).
    moved = [seg for seg in lines[first_svc:second_svc] if seg.startswith("CAS*")]
    del lines[first_svc:second_svc]
    clp = next(i for i, s in enumerate(lines) if s.startswith("CLP*"))
    lines[clp + 1 : clp + 1] = moved
    se = next(i for i, s in enumerate(lines) if s.startswith("SE*"))
    lines[se] = f"SE*{se - 1}*0001"
    text = "~\n".join(lines)
    assert validate_835(text) == []
    remittance = parse_835(text)
    assert any("SVC02" in w for w in remittance.balance_warnings())
    assert remittance.balance_errors() == []  # so the file is posted


# --- PLB ------------------------------------------------------------------------------------


def test_provider_level_adjustments_are_applied_to_the_payment() -> None:
    claim, decision = find_claim("paid")
    text = remit([claim])
    plb = [f"PLB*{NPI}*20251231*L6*-5.25*WO:ICN998877*20"]  # interest paid, recoupment
    text = add_segments(text, "SE*", plb)
    unbalanced = parse_835(text)
    assert [(p.reason, p.reference, p.amount) for p in unbalanced.provider_adjustments] == [
        ("L6", None, D("-5.25")),
        ("WO", "ICN998877", D("20.00")),
    ]
    assert any("PLB 14.75" in e for e in unbalanced.balance_errors())
    cash = decision.paid - D("14.75")
    remittance = parse_835(with_bpr(text, str(cash)))
    summary = reconcile(remittance)
    assert summary.balanced
    assert (summary.claims_paid, summary.provider_adjustment_total) == (decision.paid, D("14.75"))
    assert summary.cash == summary.payment_amount == cash


# --- reversal and correction ------------------------------------------------------------------


def test_a_reversal_and_its_correction_net_to_the_corrected_payment() -> None:
    claim, first = find_claim("paid")
    original = parse_835(remit([claim]))
    # The payer re-prices the claim: it reverses the payment and pays again, in one 835.
    repriced = claim.model_copy(update={"expected_reimbursement": D("100.00")})
    corrected = adjudicate_claim(repriced)
    reversal = adjudicate_claim(submitted(claim.claim_id, freq="8"))
    text = render_835(
        [reversal, corrected],
        payer_id=PAYER,
        payer_name="MEDICARE PART B",
        payee_npi=NPI,
        payee_name="CLAIMFLOW CLINIC",
        trace_number="EFT000999",
        paid_date=date(2025, 4, 1),
    )
    second = parse_835(text)
    assert second.balance_errors() == []
    # The claims net to a debit; the payer carries it forward (PLB FB) and pays nothing.
    assert second.claims_paid == corrected.paid - first.paid < 0
    assert [(p.reason, p.amount) for p in second.provider_adjustments] == [
        ("FB", second.claims_paid)
    ]
    assert second.net_payment == 0
    claims = {claim.claim_id: claim}
    postings = post_remittance(original, claims, file_id="F1", posted_at=POSTED_AT)
    postings += post_remittance(second, claims, file_id="F2", posted_at=POSTED_AT)
    assert [p.status for p in postings] == ["paid", "reversed", "partially_paid"]
    assert len({p.event_id for p in postings}) == 3  # the correction is not the payment again
    total = net(postings)
    assert total.paid == corrected.paid
    assert total.patient_responsibility == corrected.patient_responsibility
    assert total.adjustments["CO"] == sum(
        (a.amount for line in corrected.lines for a in line.adjustments if a.group == "CO"),
        D(0),
    )
    assert total.status == "partially_paid"  # below the first expected amount (120.00)
    with pytest.raises(InputError):
        net([])


# --- pricing ------------------------------------------------------------------------------


class FakeWeights:
    def weight(self, drg: str, discharge: date) -> object | None:
        return {"470": 1.9373}.get(drg) if discharge.year == 2025 else None


def test_inpatient_expected_is_drg_weight_times_base_rate() -> None:
    claim, _ = find_claim("paid", expected=None)
    payment = parse_835(remit([claim])).claims[0]
    drg_payment = replace(payment, drg_code="470")
    pricing = Pricing(drg_weights=FakeWeights(), drg_base_rate=D("6500.00"))
    assert pricing.expected(drg_payment, claim) == (D("12592.45"), "drg")
    assert pricing.expected(payment, claim) == (None, "none")  # not paid by DRG
    assert Pricing().expected(drg_payment, claim) == (None, "none")  # no base rate
    posting = post(
        drg_payment,
        claim,
        payer_id=PAYER,
        file_id="F1",
        payment_trace="T",
        payment_date=None,
        posted_at=POSTED_AT,
        pricing=pricing,
    )
    assert posting.expected == D("12592.45") and posting.status == "partially_paid"


# --- denials ------------------------------------------------------------------------------


def _posted(claim_kind: str, **kw: object) -> tuple[RemittancePosting, Denial | None]:
    claim, _ = find_claim(claim_kind, **kw)  # type: ignore[arg-type]
    payment = parse_835(remit([claim])).claims[0]
    posting = post(
        payment,
        claim,
        payer_id=PAYER,
        file_id="F1",
        payment_trace="EFT000123",
        payment_date=None,
        posted_at=POSTED_AT,
    )
    return posting, denial_for(posting, payment, CodeTables(), queued_at=POSTED_AT)


def test_paid_claim_is_not_queued() -> None:
    posting, item = _posted("paid")
    assert posting.status == "paid" and item is None


def test_denied_claim_is_queued_with_its_category_and_next_action() -> None:
    posting, item = _posted("denied")
    assert item is not None and posting.status == "denied"
    carcs = {r.carc for r in item.reasons}
    expected = {
        "16": ("missing_information", "correct_and_resubmit", "1"),  # with MA130: a new claim
        "50": ("medical_necessity", "send_documentation", None),
        "29": ("timely_filing", "appeal", None),
    }[carcs.pop()]
    assert (item.category, item.action, item.resubmit_frequency) == expected
    assert item.kind == "denied" and item.at_stake == posting.total_charge
    assert item.event_id == event_id(posting.event_id, "remittance.denials", "v1")
    assert item.encounter_id == posting.encounter_id


def test_a_denied_line_is_queued_as_partially_denied() -> None:
    posting, item = _posted("line_denied")
    assert item is not None and item.kind == "partially_denied"
    assert item.category in {"bundling", "medical_necessity"}
    (line,) = item.lines
    assert line.paid == 0 and line.carcs and line.line > 1
    assert item.at_stake == line.charge


def test_underpayment_is_queued_with_the_shortfall() -> None:
    claim, _ = find_claim("paid")
    payment = parse_835(remit([claim])).claims[0]
    higher = claim.model_copy(update={"expected_reimbursement": D("150.00")})
    posting = post(
        payment,
        higher,
        payer_id=PAYER,
        file_id="F1",
        payment_trace="T1",
        payment_date=None,
        posted_at=POSTED_AT,
    )
    item = denial_for(posting, payment, CodeTables(), queued_at=POSTED_AT)
    assert item is not None
    assert (item.kind, item.category, item.action) == (
        "underpaid",
        "underpayment",
        "review_payment",
    )
    assert item.at_stake == D("30.00")  # sequestration is not a shortfall
    small = denial_for(
        posting, payment, CodeTables(), underpayment_tolerance=D("50"), queued_at=POSTED_AT
    )
    assert small is None


def test_a_recoded_line_shows_the_code_billed() -> None:
    claim, _ = find_claim("paid")
    lines = remit([claim]).split("~\n")
    svc = next(i for i, s in enumerate(lines) if s.startswith("SVC*"))
    lines[svc] = lines[svc].replace("SVC*HC:99214*", "SVC*HC:99213*") + "*HC:99214"
    payment = parse_835("~\n".join(lines)).claims[0]
    cas = next(i for i, s in enumerate(lines) if s.startswith("CAS*") and i > svc)
    assert lines[cas].startswith("CAS*CO*45*")
    posting = post(
        payment,
        claim,
        payer_id=PAYER,
        file_id="F",
        payment_trace="T",
        payment_date=None,
        posted_at=POSTED_AT,
    )
    item = denial_for(posting, payment, CodeTables(), queued_at=POSTED_AT)
    assert item is None  # recoded but fully paid as expected: nothing refused
    # the same line with a coding denial on it
    lines[cas] = lines[cas].replace("CAS*CO*45*", "CAS*CO*4*")
    payment = parse_835("~\n".join(lines)).claims[0]
    posting = post(
        payment,
        claim,
        payer_id=PAYER,
        file_id="F",
        payment_trace="T",
        payment_date=None,
        posted_at=POSTED_AT,
    )
    item = denial_for(posting, payment, CodeTables(), queued_at=POSTED_AT)
    assert item is not None and item.category == "coding"
    assert (item.lines[0].procedure, item.lines[0].original_procedure) == ("99213", "99214")
    assert item.action == "correct_and_replace" and item.resubmit_frequency == "7"


def test_official_code_lists_replace_the_paraphrases(tmp_path: Path) -> None:
    (tmp_path / "CARC_codes.csv").write_text(
        "Code,Description,Start Date\n97,The benefit for this service is included elsewhere.,"
        "1995-01-01\nP99,A code the curated table does not know.,2024-01-01\n"
    )
    (tmp_path / "rarc.csv").write_text("RARC,Description\nM15,Official M15 wording.\n")
    tables = CodeTables.load(tmp_path)
    assert len(tables.sources) == 2
    carc_97 = tables.carc_info("97")
    assert carc_97 is not None and carc_97.category == "bundling"
    assert carc_97.description.startswith("The benefit")
    unknown = tables.carc_info("P99")
    assert unknown is not None and (unknown.category, unknown.kind) == ("other", "denial")
    rarc_m15 = tables.rarc_info("M15")
    assert rarc_m15 is not None and rarc_m15.description == "Official M15 wording."
    (tmp_path / "carc_bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="header"):
        read_code_list(tmp_path / "carc_bad.csv")
    assert CodeTables.load(None).carc_info("45") is not None


# --- the stage: matching, waiting, exceptions, replays ----------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def payer_file(text: str, file_id: str = "F1") -> PayerFile:
    return PayerFile(
        event_id=event_id(PAYER, file_id),
        payer_id=PAYER,
        file_id=file_id,
        kind="835",
        body=text.encode("ascii"),
        received_at=POSTED_AT,
    )


def incoming(topic: str, value: object, offset: int = 0) -> Incoming:
    return Incoming(topic, None, value, b"", {}, 0, offset, 0)


@pytest.fixture
def stage() -> Iterable[tuple[RemittanceStage, Clock]]:
    clock = Clock()
    options = RemittanceOptions(unmatched_grace_s=60, sweep_interval_s=1)
    yield RemittanceStage(Ledger(":memory:"), options=options, clock=clock), clock


def run(stage: RemittanceStage, topic: str, value: object, offset: int = 0) -> list[Out]:
    outs = list(stage.handle(incoming(topic, value, offset)))
    stage.on_batch_done()
    return outs


def by_topic(outs: list[Out]) -> dict[str, list[object]]:
    grouped: dict[str, list[object]] = {}
    for out in outs:
        grouped.setdefault(out.topic, []).append(out.value)
    return grouped


def test_stage_posts_matched_payments_queues_denials_and_ignores_replays(
    stage: tuple[RemittanceStage, Clock],
) -> None:
    st, _ = stage
    paid, _ = find_claim("paid")
    denied, _ = find_claim("denied")
    for claim in (paid, denied):
        assert run(st, "claims.submitted.v1", claim) == []
    file = payer_file(remit([paid, denied]))
    outs = by_topic(run(st, "payer.inbound.v1", file))
    assert [p.status for p in outs["remittance.posted.v1"]] == ["paid", "denied"]  # type: ignore[attr-defined]
    (item,) = outs["remittance.denials.v1"]
    assert isinstance(item, Denial) and item.claim_id == denied.claim_id
    assert run(st, "payer.inbound.v1", file) == []  # redelivered: posted before
    assert st.ledger.net_paid(paid.claim_id) > 0


def test_payment_for_an_unknown_claim_waits_then_lands_in_exceptions(
    stage: tuple[RemittanceStage, Clock],
) -> None:
    st, clock = stage
    claim, decision = find_claim("paid")
    file = payer_file(remit([claim]))
    assert run(st, "payer.inbound.v1", file, offset=7) == []
    assert st.ledger.waiting_count() == 1
    clock.now += 59
    assert list(st.on_idle()) == []  # still within the grace period
    clock.now += 2
    (out,) = list(st.on_idle())
    st.on_batch_done()
    exception = out.value
    assert isinstance(exception, RemittanceException)
    assert (out.topic, out.key, exception.kind) == (
        "remittance.exceptions.v1",
        claim.claim_id,
        "unmatched_payment",
    )
    assert [(c.claim_id, c.paid) for c in exception.claims] == [(claim.claim_id, decision.paid)]
    assert (exception.source_offset, exception.payment_trace) == (7, "EFT000123")
    assert list(st.on_idle()) == []  # reported once
    # Never dropped: the claim arrives late and the payment is posted after all.
    outs = by_topic(run(st, "claims.submitted.v1", claim))
    assert [p.claim_id for p in outs["remittance.posted.v1"]] == [claim.claim_id]  # type: ignore[attr-defined]
    assert st.ledger.waiting_count() == 0


def test_an_unmatched_payment_is_pruned_after_its_retention_window(tmp_path: Path) -> None:
    """The payment whose claim never came keeps the patient's name and member id in the
    ledger; past ``unmatched_retention_days`` it is deleted, its bytes overwritten (the file
    and the write-ahead log), a tombstone goes to the changelog, the exception stays."""
    clock = Clock()
    options = RemittanceOptions(unmatched_grace_s=60, unmatched_retention_days=2)
    path = tmp_path / "ledger-p0.sqlite3"
    ledger = Ledger(path, changelog=True)
    matcher = Matcher(ledger, options=options, clock=clock)
    claim, _ = find_claim("paid")
    text = remit([claim])
    name = parse_835(text).claims[0].patient_last_name
    assert name and name.encode() in text.encode()
    matcher.payer_file(payer_file(text))
    ledger.commit()

    def on_disk() -> bytes:
        return b"".join(p.read_bytes() for p in sorted(tmp_path.glob("ledger-p0.sqlite3*")))

    assert name.encode() in on_disk()
    clock.now += 61
    (reported,) = matcher.overdue()
    assert reported.value.kind == "unmatched_payment"  # type: ignore[attr-defined]
    ledger.commit()
    clock.now += 86_400  # a day: still kept
    assert matcher.overdue() == [] and ledger.waiting_count() == 1
    ledger.take_changes()
    clock.now += 86_400  # past two days since it was read: pruned
    assert matcher.overdue() == []
    assert ledger.waiting_count() == 0
    (tombstone,) = ledger.take_changes()
    assert json.loads(tombstone[0])[0] == "waiting" and tombstone[1] is None
    ledger.commit()
    assert name.encode() not in on_disk()
    assert b'"patient_member_id"' not in on_disk()
    # The claim that comes after all finds nothing to post: the exception was the record.
    assert [o.topic for o in matcher.claim(claim)] == []
    ledger.close()


def test_a_claim_arriving_within_the_grace_period_releases_its_payment(
    stage: tuple[RemittanceStage, Clock],
) -> None:
    st, clock = stage
    first, _ = find_claim("paid")
    second, _ = find_claim("deductible")
    file = payer_file(remit([first, second]))
    run(st, "claims.submitted.v1", second)
    outs = run(st, "payer.inbound.v1", file)
    assert [o.key for o in outs if o.topic == "remittance.posted.v1"] == [second.claim_id]
    outs = run(st, "claims.submitted.v1", first)
    assert [o.key for o in outs if o.topic == "remittance.posted.v1"] == [first.claim_id]
    clock.now += 3600
    assert list(st.on_idle()) == []


def test_an_unbalanced_payment_is_posted_nowhere_and_reported(
    stage: tuple[RemittanceStage, Clock],
) -> None:
    st, _ = stage
    claim, _ = find_claim("paid")
    run(st, "claims.submitted.v1", claim)
    text = with_bpr(remit([claim]), "1.00")
    (out,) = run(st, "payer.inbound.v1", payer_file(text), offset=3)
    exception = out.value
    assert isinstance(exception, RemittanceException)
    assert (exception.kind, out.key) == ("unbalanced_payment", f"{PAYER}:F1")
    assert exception.transaction_control_number == "0001"
    assert any("BPR02" in e for e in exception.errors)
    assert [c.claim_id for c in exception.claims] == [claim.claim_id]
    assert exception.body == text.encode() and exception.source_offset == 3
    assert st.ledger.postings(claim.claim_id) == []


def test_unreadable_x12_goes_to_exceptions_and_non_x12_to_the_dead_letter_topic(
    stage: tuple[RemittanceStage, Clock],
) -> None:
    st, _ = stage
    claim, _ = find_claim("paid")
    broken = remit([claim]).replace(f"CLP*{claim.claim_id}*1*", f"CLP*{claim.claim_id}*1*X")
    (out,) = run(st, "payer.inbound.v1", payer_file(broken))  # CLP04 still balances BPR02
    assert isinstance(out.value, RemittanceException) and out.value.kind == "unreadable_claim"
    assert "CLP03" in out.value.errors[0] and out.key == claim.claim_id
    broken = broken.replace("*00501*", "*00401*")  # the envelope itself cannot be read
    (out,) = run(st, "payer.inbound.v1", payer_file(broken, "F2"))
    assert isinstance(out.value, RemittanceException) and out.value.kind == "unreadable_file"
    with pytest.raises(InputError):
        st.handle(incoming("payer.inbound.v1", payer_file('{"not": "x12"}')))


def test_a_predetermination_is_not_posted(stage: tuple[RemittanceStage, Clock]) -> None:
    st, _ = stage
    claim, _ = find_claim("paid")
    run(st, "claims.submitted.v1", claim)
    text = remit([claim]).replace(f"CLP*{claim.claim_id}*1*", f"CLP*{claim.claim_id}*25*")
    (out,) = run(st, "payer.inbound.v1", payer_file(text))
    assert isinstance(out.value, RemittanceException) and out.value.kind == "other"


def test_plb_adjustments_are_kept_with_the_payment(stage: tuple[RemittanceStage, Clock]) -> None:
    st, _ = stage
    claim, decision = find_claim("paid")
    run(st, "claims.submitted.v1", claim)
    text = add_segments(remit([claim]), "SE*", [f"PLB*{NPI}*20251231*L6*-5.25"])
    outs = run(st, "payer.inbound.v1", payer_file(with_bpr(text, str(decision.paid + D("5.25")))))
    assert [o.topic for o in outs] == ["remittance.posted.v1", "remittance.settled.v1"]
    assert st.ledger.provider_adjustments(PAYER, "EFT000123") == [("L6", D("-5.25"))]


def test_ledger_of_the_first_layout_is_migrated(tmp_path: Path) -> None:
    """A payment that waited in the first layout (the payer file, per claim) waits on as a
    claim payment record; one whose file cannot be read stays where it is, said in the log."""
    import sqlite3

    claim, _ = find_claim("paid")
    file = payer_file(remit([claim]))
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE pending (claim_id TEXT NOT NULL, file_key TEXT NOT NULL, "
        "file_record TEXT NOT NULL, PRIMARY KEY (claim_id, file_key));"
        "CREATE TABLE posted (event_id TEXT PRIMARY KEY, claim_id TEXT NOT NULL);"
        "INSERT INTO pending VALUES ('C1', 'F1', '{}');"
        "INSERT INTO posted VALUES ('e1', 'C1');"
    )
    db.execute(
        "INSERT INTO pending VALUES (?, ?, ?)",
        (claim.claim_id, f"{PAYER}:{file.file_id}", file.model_dump_json()),
    )
    db.commit()
    db.close()
    matcher = Matcher(Ledger(path), clock=lambda: 1.0)
    ledger = matcher.ledger
    assert ledger.waiting_count() == 1
    assert [w.claim_id for w in ledger.overdue(1.0)] == [claim.claim_id]  # overdue at once
    assert [w.claim_id for w in ledger.legacy_waiting()] == ["C1"]  # unreadable: kept
    assert ledger.postings("C1") == []  # the old row has no amounts
    posted = [o.key for o in matcher.claim(claim) if o.topic == "remittance.posted.v1"]
    assert posted == [claim.claim_id] and ledger.waiting_count() == 0
    ledger.close()


def test_stage_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.settings import Settings
    from services.remittance.app import RemittanceSettings

    monkeypatch.setenv("CLAIMFLOW_REMITTANCE__UNMATCHED_GRACE_S", "2.5")
    config = RemittanceSettings.from_base(Settings(topic_prefix="x."))
    assert config.remittance.unmatched_grace_s == 2.5 and config.topic_prefix == "x."


def test_demo_accounting_counts_held_and_denied_claims() -> None:
    from pipeline.models import ExceptionClaim
    from pipeline.tracker import Ledger as Accounting

    books = Accounting()
    for n, claim in enumerate(("C1", "C2", "C3")):
        books.sent.add(f"s{n}")
        books.source_encounters[f"s{n}"].add(f"E{n}")
        books.outcome[f"E{n}"] = "clean"
        books.claim_encounter[claim] = f"E{n}"
        books.encounter_claim[f"E{n}"] = claim
    posting = RemittancePosting.model_validate(
        {
            **json.loads(
                (
                    Path(__file__).parents[1] / "contract/golden/remittance.posted.v1.json"
                ).read_text()
            ),
            "claim_id": "C1",
            "status": "denied",
        }
    )
    books.add("remittance.posted.v1", "C1", posting)
    held = RemittanceException(
        event_id="x",
        kind="unbalanced_file",
        payer_id=PAYER,
        file_id="F1",
        claims=[
            ExceptionClaim(
                claim_id="C2",
                claim_status_code="1",
                total_charge=D(1),
                paid=D(1),
                patient_responsibility=D(0),
            )
        ],
        received_at=POSTED_AT,
        detected_at=POSTED_AT,
    )
    books.add("remittance.exceptions.v1", "F1", held)
    summary = books.summary()
    assert (summary["posted"], summary["exceptions"], summary["lost"]) == (1, 1, 1)
    assert books.lost() == ["s2"]


def test_cli_remit_post_posts_queues_and_reports_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paid, _ = find_claim("paid")
    denied, _ = find_claim("denied")
    stranger, _ = find_claim("deductible")
    claims = tmp_path / "claims.jsonl"
    claims.write_text("\n".join(c.model_dump_json() for c in (paid, denied)) + "\n")
    era = tmp_path / "era.835"
    era.write_text(remit([paid, denied, stranger]))
    assert cli(["remit", "post", str(era), "--claims", str(claims)]) == 1
    *printed, ledger = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert ledger["ledger"]["provider_adjustments"] == []  # the last line: the PLB ledger
    topics = [(p["topic"], p["key"]) for p in printed]
    assert topics == [
        ("remittance.posted.v1", paid.claim_id),
        ("remittance.settled.v1", paid.claim_id),
        ("remittance.posted.v1", denied.claim_id),
        ("remittance.settled.v1", denied.claim_id),
        ("remittance.denials.v1", denied.claim_id),
        ("remittance.exceptions.v1", stranger.claim_id),  # no such claim among --claims
    ]
    assert printed[0]["value"]["payer_id"] == PAYER  # read from the 835 (REF*2U)
    claims.write_text(claims.read_text() + stranger.model_dump_json() + "\n")
    assert cli(["remit", "post", str(era), "--claims", str(claims)]) == 0


def test_a_claim_forwarded_as_not_ours_is_a_coordination_of_benefits_item() -> None:
    claim, _ = find_claim("denied")
    text = remit([claim]).replace(f"CLP*{claim.claim_id}*4*", f"CLP*{claim.claim_id}*23*")
    # The payer's whole charge is the prior payer's business (OA-23), with no remark codes.
    lines = [s for s in text.split("~\n") if not s.startswith(("MOA*", "LQ*"))]
    lines = [re.sub(r"^CAS\*CO\*\w+\*", "CAS*OA*23*", s) for s in lines]
    se = next(i for i, s in enumerate(lines) if s.startswith("SE*"))
    lines[se] = f"SE*{se - 1}*0001"
    assert validate_835("~\n".join(lines)) == []
    payment = parse_835("~\n".join(lines)).claims[0]
    posting = post(
        payment,
        claim,
        payer_id=PAYER,
        file_id="F",
        payment_trace="T",
        payment_date=None,
        posted_at=POSTED_AT,
    )
    item = denial_for(posting, payment, CodeTables(), queued_at=POSTED_AT)
    assert posting.status == "denied"
    assert item is not None and item.category == "coordination_of_benefits"
    assert item.action == "bill_other_payer" and item.reasons == []


def test_the_metric_children_kept_are_those_labels_gives() -> None:
    """Remittance keeps each labelled child once made: it must be the child ``labels`` gives,
    so a count made through it is the series the dashboards read."""
    from pipeline.metrics import OUTCOMES
    from services.remittance import metrics as domain

    child = domain.children(domain.ADJUSTMENTS)
    assert child("CO") is domain.ADJUSTMENTS.labels("CO") is child("CO")
    assert child("PR") is not child("CO")
    before = OUTCOMES.labels("remittance", "paid")._value.get()
    domain.outcome("paid").inc()
    assert OUTCOMES.labels("remittance", "paid")._value.get() == before + 1
