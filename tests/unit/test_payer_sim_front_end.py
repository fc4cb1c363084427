"""The payer simulator answers each 837 interchange like a payer's front end: a 999 from
pyx12, a 277CA accepting or rejecting each claim, then 835s for the accepted claims; and
the claims service turns those answers back into rejections."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from test_claims_837 import COVERAGE, coded_encounter, validated
from test_claims_837i import inpatient, outpatient
from test_claims_837i import validated as validated_hospital

from pipeline.models import PayerFile, SubmittedClaim, utcnow
from pipeline.stage import Incoming, Out
from services.claims.acks import parse_277ca, parse_999
from services.claims.app import ClaimsStage
from services.claims.domain import (
    interchange_record,
    plan_claim,
    submitted_claim,
    write_interchange,
)
from services.remittance.era import parse_835, validate_835
from services.remittance.posting import post
from services.x12.validate import validate_x12
from sim.payer import (
    AdjudicationPolicy,
    acknowledge_999,
    front_end_rejection,
)
from sim.payer_app import InterchangeStore, PayerSimOptions, PayerSimStage, RejectionOption


def interchange(n: int, icn: int = 501, prefix: str = "E") -> list[SubmittedClaim]:
    """``n`` claims of one payer in one 837P, as the claims service publishes them."""
    planned = [plan_claim(validated(coded_encounter(f"{prefix}{i}"))) for i in range(n)]
    x12 = write_interchange(planned, sender_id="CLAIMFLOW", receiver_id="CH01", control_number=icn)
    return [submitted_claim(p, icn, x12) for p in planned]


def incoming(claims: list[SubmittedClaim], adapter: bytes | None = b"simulator") -> list[Incoming]:
    headers = {"claimflow-adapter": adapter} if adapter is not None else {}
    return [
        Incoming("claims.submitted.v1", c.claim_id, c, b"", headers, 0, i, 0)
        for i, c in enumerate(claims)
    ]


def files(outs: list[Out], kind: str) -> list[PayerFile]:
    return [o.value for o in outs if o.value.kind == kind]  # type: ignore[attr-defined]


def test_each_interchange_gets_a_999_a_277ca_and_835s_that_pyx12_accepts() -> None:
    claims = interchange(12)
    stage = PayerSimStage(PayerSimOptions(front_end_rejection_rate=0.25))
    outs = list(stage.handle_batch(incoming(claims)))
    (f999,) = files(outs, "999")
    (f277,) = files(outs, "277CA")
    remits = files(outs, "835")
    for f in (f999, f277):
        assert validate_x12(f.body.decode()) == []
    assert all(validate_835(f.body.decode()) == [] for f in remits)
    (group,) = parse_999(f999.body.decode())
    assert group.group_control_number == "501" and not group.sets[0].rejected
    acks = {a.claim_id: a for a in parse_277ca(f277.body.decode())}
    assert set(acks) == {c.claim_id for c in claims}
    rejected = {cid for cid, a in acks.items() if a.rejected}
    assert 0 < len(rejected) < len(claims)  # 25% of 12, drawn per claim
    paid = {p.patient_control_number for f in remits for p in parse_835(f.body.decode()).claims}
    assert paid == set(acks) - rejected  # a rejected claim never reaches adjudication
    for a in acks.values():
        if not a.rejected:
            assert a.payer_claim_control_number and a.codes() == ["A2:20"]
    assert all(o.key == f"{COVERAGE.payer_id}:{o.value.file_id}" for o in outs)  # type: ignore[attr-defined]


def test_an_837_that_fails_pyx12_is_rejected_by_the_999_and_goes_no_further() -> None:
    claims = interchange(3)
    broken = claims[0].x12.replace("HI*ABK:", "HI*ABX:")
    claims = [c.model_copy(update={"x12": broken}) for c in claims]
    outs = list(PayerSimStage().handle_batch(incoming(claims)))
    assert [o.value.kind for o in outs] == ["999"]  # type: ignore[attr-defined]
    text = outs[0].value.body.decode()  # type: ignore[attr-defined]
    assert validate_x12(text) == []
    (group,) = parse_999(text)
    (st,) = group.sets
    assert st.rejected and st.errors and st.errors[0].segment_id == "HI"


def test_the_front_end_rejects_the_configured_share_with_the_configured_codes() -> None:
    policy = AdjudicationPolicy(front_end_rejection_rate=0.02)
    events = [f"claim-event-{i}" for i in range(5000)]
    decisions = [front_end_rejection("87726", e, policy) for e in events]
    share = sum(d is not None for d in decisions) / len(events)
    assert 0.012 < share < 0.028
    mix = Counter(f"{d.category}:{d.status}" for d in decisions if d is not None)
    assert set(mix) == {"A7:164", "A3:21", "A7:562", "A6:33"}
    only = PayerSimOptions(
        front_end_rejection_rate=1.0,
        front_end_rejections=[RejectionOption(category="A3", status="21")],
    ).policy()
    assert {front_end_rejection("87726", e, only).composite() for e in events[:50]} == {  # type: ignore[union-attr]
        ("A3", "21", "")
    }
    assert front_end_rejection("87726", events[0], AdjudicationPolicy()) == front_end_rejection(
        "87726", events[0], AdjudicationPolicy()
    )


def test_claims_routed_to_a_real_payer_are_left_alone() -> None:
    claims = interchange(2)
    assert list(PayerSimStage().handle_batch(incoming(claims, b"filedrop"))) == []
    assert len(list(PayerSimStage().handle_batch(incoming(claims, None)))) == 3  # no header


def test_answers_are_the_same_when_a_batch_is_replayed_or_split() -> None:
    claims = interchange(6)
    whole = list(PayerSimStage().handle_batch(incoming(claims)))
    again = list(PayerSimStage().handle_batch(incoming(claims)))
    assert [(o.key, o.value.event_id, o.value.body) for o in whole] == [  # type: ignore[attr-defined]
        (o.key, o.value.event_id, o.value.body)  # type: ignore[attr-defined]
        for o in again
    ]
    # Claims of one interchange read in two batches (two partitions): the same 999 twice
    # (a duplicate by event id), each claim in exactly one 277CA.
    stage = PayerSimStage()
    first = list(stage.handle_batch(incoming(claims[:4])))
    second = list(stage.handle_batch(incoming(claims[4:])))
    assert files(first, "999")[0].event_id == files(second, "999")[0].event_id
    seen = [
        a.claim_id
        for o in (first, second)
        for f in files(o, "277CA")
        for a in parse_277ca(f.body.decode())
    ]
    assert sorted(seen) == sorted(c.claim_id for c in claims)


def checked(claims: list[SubmittedClaim], icn: int = 501) -> tuple[Incoming, list[Incoming]]:
    """The interchange on claims.interchanges.v1 and its claims' events naming it, as the
    claims service publishes them (a claim check)."""
    record = interchange_record(
        icn,
        payer_id=claims[0].payer_id,
        claim_type="professional",
        adapter="simulator",
        claim_ids=[c.claim_id for c in claims],
        x12=claims[0].x12 or "",
        created_at=claims[0].submitted_at,
    )
    carried = Incoming(
        "claims.interchanges.v1", record.interchange_control_number, record, b"", {}, 0, 0, 0
    )
    refs = [c.model_copy(update={"x12": None}) for c in claims]
    return carried, incoming(refs)


def test_claims_that_name_their_interchange_are_answered_as_if_they_carried_it(
    tmp_path: Path,
) -> None:
    claims = interchange(6)
    carrying = list(PayerSimStage().handle_batch(incoming(claims)))
    record, refs = checked(claims)
    stage = PayerSimStage(store=InterchangeStore(tmp_path / "sim.sqlite3"))
    same_batch = list(stage.handle_batch([*refs, record]))
    assert [(o.key, o.value.body) for o in same_batch] == [(o.key, o.value.body) for o in carrying]  # type: ignore[attr-defined]
    # The claims first (another partition was read sooner): they wait in the store, across
    # a restart, and are answered when the interchange comes.
    store = InterchangeStore(tmp_path / "later.sqlite3")
    early = PayerSimStage(store=store)
    assert list(early.handle_batch(refs[:4])) == [] and store.waiting() == 4
    early.on_batch_done()
    early.close()
    restarted = PayerSimStage(store=InterchangeStore(tmp_path / "later.sqlite3"))
    later = list(restarted.handle_batch([record, *refs[4:]]))
    assert [(o.key, o.value.body) for o in later] == [(o.key, o.value.body) for o in carrying]  # type: ignore[attr-defined]
    assert restarted.store.waiting() == 0
    # The interchange and some of its claims: nothing until the last claim is in, then the
    # whole file is answered at once (one 999, one 277CA), as a payer answers it.
    partial = PayerSimStage()
    assert list(partial.handle_batch([record, *refs[:5]])) == []
    last = list(partial.handle_batch(refs[5:]))
    assert [(o.key, o.value.body) for o in last] == [(o.key, o.value.body) for o in carrying]  # type: ignore[attr-defined]
    # A claim event read again after its interchange was answered gets the same answers.
    repeat = list(partial.handle_batch(refs[:1]))
    assert files(repeat, "999")[0].event_id == files(carrying, "999")[0].event_id


def test_interchanges_routed_to_a_real_payer_are_not_kept() -> None:
    claims = interchange(2)
    record, refs = checked(claims)
    real = record.value.model_copy(update={"adapter": "filedrop"})
    stage = PayerSimStage()
    outs = stage.handle_batch([Incoming(record.topic, record.key, real, b"", {}, 0, 0, 0)])
    assert list(outs) == [] and stage.store.take_complete(real.interchange_control_number) == []


def test_hospital_claims_are_acknowledged_and_paid_by_drg_and_revenue_code() -> None:
    planned = [
        plan_claim(validated_hospital(inpatient(f"IP{i}", encounter={"coverage": COVERAGE})))
        for i in range(2)
    ] + [plan_claim(validated_hospital(outpatient("OP1", encounter={"coverage": COVERAGE})))]
    x12 = write_interchange(planned, sender_id="CLAIMFLOW", receiver_id="CH01", control_number=9)
    claims = [submitted_claim(p, 9, x12) for p in planned]
    outs = list(
        PayerSimStage(PayerSimOptions(front_end_rejection_rate=0)).handle_batch(incoming(claims))
    )
    assert validate_x12(files(outs, "999")[0].body.decode()) == []
    assert validate_x12(files(outs, "277CA")[0].body.decode()) == []
    (remit,) = files(outs, "835")
    text = remit.body.decode()
    assert validate_835(text) == []
    assert "*11*1**343~" in text  # CLP08 facility type 11, CLP09 frequency, CLP11 the DRG
    assert "SVC*NU:0120*" in text and "SVC*HC:85025*45*" in text
    by_id = {c.claim_id: c for c in claims}
    for payment in parse_835(text).claims:
        claim = by_id[payment.patient_control_number]
        posting = post(
            payment,
            claim,
            payer_id=claim.payer_id,
            file_id=remit.file_id,
            payment_trace="T",
            payment_date=None,
            posted_at=utcnow(),
        )
        assert posting.status in ("paid", "partially_paid", "denied")
        if claim.expected_reimbursement is not None and posting.status == "paid":
            assert posting.variance == 0  # the payer allowed the DRG amount


def test_the_claims_service_turns_the_simulators_answers_into_rejections(tmp_path: Path) -> None:
    from test_claims_service import answered
    from test_claims_service import stage as claims_stage_for

    claims_stage, _ = claims_stage_for(tmp_path)
    batch = [
        Incoming(
            "encounters.validated.v1",
            f"E{i}",
            validated(coded_encounter(f"E{i}")),
            b"",
            {},
            0,
            i,
            0,
        )
        for i in range(10)
    ]
    # The claim events name their interchange; it comes once, on its own topic.
    sent = [
        o
        for o in claims_stage.handle_batch(batch)
        if o.topic in ("claims.submitted.v1", "claims.interchanges.v1")
    ]
    assert all(o.value.x12 is None for o in sent if o.topic == "claims.submitted.v1")
    options = PayerSimOptions(front_end_rejection_rate=0.3, answer_adapters=["recorder"])
    simulator = PayerSimStage(options)
    answers = list(
        simulator.handle_batch(
            [
                Incoming(o.topic, o.key, o.value, b"", dict(o.headers), 0, i, 0)
                for i, o in enumerate(sent)
            ]
        )
    )
    back = [
        Incoming("payer.inbound.v1", o.key, o.value, b"", {}, 1, i, 0)
        for i, o in enumerate(answers)
    ]
    rejections = [
        o.value for o in answered(claims_stage, back) if o.topic == "claims.rejections.v1"
    ]
    acks = [a for f in files(answers, "277CA") for a in parse_277ca(f.body.decode())]
    assert {r.claim_id for r in rejections} == {a.claim_id for a in acks if a.rejected}
    assert rejections and all(r.source == "277CA" and r.encounter_id for r in rejections)
    assert isinstance(claims_stage, ClaimsStage)


def test_acknowledge_999_is_deterministic_and_answers_the_submitter() -> None:
    claims = interchange(2)
    a = acknowledge_999(claims[0].x12, payer_id="87726", created=claims[0].submitted_at)
    b = acknowledge_999(claims[0].x12, payer_id="87726", created=claims[0].submitted_at)
    assert a == b and a.accepted
    assert "*ZZ*CH01           *ZZ*CLAIMFLOW      *" in a.text  # from the receiver, to us


def test_a_sampled_simulator_checks_one_interchange_in_n_and_accepts_the_rest() -> None:
    stage = PayerSimStage(PayerSimOptions(validate_every=2))
    verdicts = {}
    for icn in (501, 502):
        claims = interchange(3, icn=icn)
        broken = claims[0].x12.replace("HI*ABK:", "HI*ABX:")
        claims = [c.model_copy(update={"x12": broken}) for c in claims]
        (ack,) = files(list(stage.handle_batch(incoming(claims))), "999")
        assert validate_x12(ack.body.decode()) == []
        (group,) = parse_999(ack.body.decode())
        verdicts[icn] = group.sets[0].rejected
    # 502 is the one in two that pyx12 reads; 501 passes unchecked, as the setting says.
    assert verdicts == {501: False, 502: True}
