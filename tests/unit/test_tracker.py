"""The tracker's ledger: a publisher thread marks what it sent while the owner counts, and the
count of what is in flight follows every record that changes an encounter's fate."""

from __future__ import annotations

import threading
from collections import Counter
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace as NS

import pytest

from pipeline.tracker import Ledger


def collected(led: Ledger, source: str, encounter: str) -> None:
    value = NS(
        event_id=f"c-{encounter}",
        source_id=source,
        encounter_id=encounter,
        coverage=NS(plan_type="CI"),
    )
    led.add("encounters.collected.v1", encounter, value)


def test_a_publisher_thread_marks_sent_while_the_owner_counts() -> None:
    """`claimflow run` died here: the publisher added to `sent` while `lost()` iterated it."""
    led = Ledger()
    n = 200_000
    done, counted = threading.Event(), threading.Event()

    def publish() -> None:
        for i in range(n):
            led.mark_sent(f"s{i}")
            if i % 20_000 == 0:  # let the owner count while we are still sending
                counted.clear()
                counted.wait(5)
        done.set()

    thread = threading.Thread(target=publish)
    thread.start()
    counts = []
    while not done.is_set():
        summary = led.summary()  # raised "Set changed size during iteration" before
        counts.append(summary["encounters_sent"])
        counted.set()
        assert summary["lost"] == summary["encounters_sent"]  # nothing collected yet
    thread.join()
    assert counts == sorted(counts) and len(counts) > 1
    assert led.summary()["encounters_sent"] == n and len(led.lost()) == n


def test_in_flight_follows_each_record_that_changes_a_fate() -> None:
    led = Ledger()
    led.mark_sent("s1")
    led.mark_sent("s2")
    assert led.lost() == ["s1", "s2"]
    collected(led, "s1", "e1")
    collected(led, "s2", "e2")
    led.add("coding.review.v1", "e1", NS(event_id="r1", encounter_id="e1"))
    assert led.lost() == ["s2"]  # held for a coder: final until the coder decides
    led.add("encounters.coded.v1", "e1", NS(event_id="k1", encounter_id="e1"))
    assert led.lost() == ["s1", "s2"]  # decided: on its way again
    led.add(
        "encounters.validated.v1",
        "e1",
        NS(event_id="v1", encounter_id="e1", outcome="rejected", edits=[]),
    )
    assert led.lost() == ["s2"]
    # A record can arrive before the one that links it to its source (topics interleave).
    led.add(
        "remittance.posted.v1",
        "C2",
        NS(event_id="p2", claim_id="C2", status="paid", paid=0),
    )
    assert led.lost() == ["s2"]
    led.add(
        "claims.submitted.v1",
        "C2",
        NS(
            event_id="x2",
            claim_id="C2",
            encounter_id="e2",
            payer_id="P",
            payer_name="Payer",
            claim_type="professional",
            total_charge=0,
        ),
    )
    assert led.lost() == [] and led.summary()["lost"] == 0


def test_a_claim_gets_the_837_of_the_interchange_it_names_in_either_order() -> None:
    led = Ledger(keep_x12=True)
    claim = dict(
        payer_id="P", payer_name="Payer", claim_type="professional", total_charge=0, x12=None
    )
    led.add(
        "claims.submitted.v1", "C1", NS(event_id="x1", claim_id="C1", encounter_id="e1", **claim)
    )
    assert led.x12 == {}
    led.add(
        "claims.interchanges.v1",
        "000000007",
        NS(event_id="i7", claim_ids=["C1", "C2"], x12="ISA*...~CLM*C1*~CLM*C2*~"),
    )
    led.add(
        "claims.submitted.v1", "C2", NS(event_id="x2", claim_id="C2", encounter_id="e2", **claim)
    )
    assert led.x12 == {"C1": "ISA*...~CLM*C1*~CLM*C2*~", "C2": "ISA*...~CLM*C1*~CLM*C2*~"}
    # Written before the claim check: the event carries its interchange itself.
    old = {**claim, "x12": "ISA*old~"}
    led.add("claims.submitted.v1", "C3", NS(event_id="x3", claim_id="C3", encounter_id="e3", **old))
    assert led.x12["C3"] == "ISA*old~"


def test_a_dead_letter_settles_the_source_it_names() -> None:
    led = Ledger()
    led.sent.add("bad")  # the owning thread may still add directly
    assert led.summary()["lost"] == 1
    letter = NS(
        event_id=None,
        stage="intake",
        error_class="InputError",
        field="body",
        error_message="not JSON",
        source_topic="intake.raw.v1",
    )
    led.add("dlq.intake.v1", "bad", letter)
    assert led.lost() == [] and led.summary()["dlq"] == 1


def test_repeats_intake_dropped_are_read_from_its_metrics_across_a_restart() -> None:
    """Intake sends nothing downstream for a repeat: the run's live line and summary read
    its /metrics counter, and keep the count when a restarted intake starts again at 0."""
    from prometheus_client import CollectorRegistry, Counter, start_http_server

    from pipeline.broker import free_port
    from pipeline.supervisor import Child
    from sim.cli import _RepeatCount

    def intake(dropped: int) -> tuple[int, object]:
        reg = CollectorRegistry()
        outcomes = Counter("claimflow_outcomes", "", ["service", "outcome"], registry=reg)
        outcomes.labels("intake", "read_fhir").inc(7)
        outcomes.labels("intake", "repeat_dropped").inc(dropped)
        port = free_port()
        server, _ = start_http_server(port, addr="127.0.0.1", registry=reg)
        return port, server

    port, server = intake(20)
    child = Child("intake", port, Path("intake.log"))
    count = _RepeatCount(child)
    assert count.read() == 20
    server.shutdown()  # type: ignore[attr-defined]
    assert count.read() == 20  # not answering: the last count stands
    port2, server2 = intake(3)  # restarted (on another port): its counter starts again
    child.metrics_port = port2
    assert count.read() == 23 and count.total == 23
    server2.shutdown()  # type: ignore[attr-defined]
    assert _RepeatCount(Child("intake", free_port(), Path("intake.log"))).read() == 0


def test_each_run_of_the_simulator_has_a_new_seed_unless_given() -> None:
    from argparse import Namespace

    from sim.cli import _seed

    assert _seed(Namespace(seed=7)) == 7
    assert len({_seed(Namespace(seed=None)) for _ in range(5)}) == 5


def test_an_encounter_with_a_secondary_coverage_settles_after_the_last_payer_due() -> None:
    led = Ledger()
    led.mark_sent("s1")
    primary, medigap = NS(payer_id="MEDICARE_B", plan_type="MB"), NS(payer_id="36273")
    led.add(
        "encounters.collected.v1",
        "e1",
        NS(event_id="c", source_id="s1", encounter_id="e1", coverage=primary,
           other_coverages=[medigap]),
    )  # fmt: skip

    def claim(claim_id: str, payer: str) -> None:
        value = NS(event_id=claim_id, claim_id=claim_id, encounter_id="e1", payer_id=payer,
                   payer_name=payer, claim_type="professional",
                   total_charge=Decimal("100.00"))  # fmt: skip
        led.add("claims.submitted.v1", claim_id, value)

    def posting(claim_id: str, payer: str, left: str) -> None:
        value = NS(event_id=f"p-{claim_id}", claim_id=claim_id, payer_id=payer, status="paid",
                   paid=Decimal("50.00"), patient_responsibility=Decimal(left),
                   crossover_payer=None)  # fmt: skip
        led.add("remittance.posted.v1", claim_id, value)

    claim("C1", "MEDICARE_B")
    posting("C1", "MEDICARE_B", "20.00")
    assert led.lost() == ["s1"]  # the Medigap plan is still to be billed
    claim("C1-2", "36273")
    assert led.lost() == ["s1"]
    posting("C1-2", "36273", "0.00")
    assert led.lost() == []
    assert led.summary()["submitted"] == 2 and led.summary()["posted"] == 2


def test_the_stages_declare_what_the_tracker_follows_and_the_plumbing_names_no_topic() -> None:
    """Every topic whose records settle an encounter, and each stage's dead letters, come from
    the stages' declarations (entry points claimflow.tracking), not from pipeline/."""
    from pathlib import Path

    from pipeline.tracker import followed

    root = Path(__file__).resolve().parents[2]
    assert set(followed()) == {
        "encounters.collected.v1",
        "encounters.coded.v1",
        "coding.review.v1",
        "coding.audits.v1",
        "encounters.validated.v1",
        "claims.submitted.v1",
        "claims.interchanges.v1",
        "claims.rejections.v1",
        "payer.inbound.v1",
        "remittance.posted.v1",
        "remittance.exceptions.v1",
        "remittance.denials.v1",
        *(f"dlq.{s}.v1" for s in ("intake", "coding", "validation", "claims", "remittance")),
    }
    # The live tracker of run/demo does not read the 837s: only a test that checks them.
    assert set(followed()) - set(followed(keep_x12=False)) == {"claims.interchanges.v1"}
    topics = [p.name for p in (root / "schemas").iterdir() if p.is_dir()]
    for plumbing in ("tracker.py", "report.py"):
        source = (root / "pipeline" / plumbing).read_text()
        assert [t for t in topics if t in source] == [], plumbing


def test_the_live_counts_kept_as_records_arrive_agree_with_a_recount() -> None:
    """``summary`` no longer passes over every encounter of the run (the live line of an
    open-ended run refreshes twice a second): what it keeps must equal the recount."""
    led = Ledger()
    claim = dict(payer_id="P", payer_name="Payer", claim_type="professional", total_charge=0)
    for n in range(30):
        led.mark_sent(f"s{n}")
        collected(led, f"s{n}", f"e{n}")
        if n % 3 == 0:  # a visit whose second message makes a second encounter
            collected(led, f"s{n}", f"e{n}b")
        if n % 4 == 0:  # an encounter collected again from another source
            collected(led, f"s{n + 1}", f"e{n}")
        outcome = ("clean", "warnings", "rejected")[n % 3]
        verdict = NS(event_id=f"v{n}", encounter_id=f"e{n}", outcome=outcome, edits=[])
        led.add("encounters.validated.v1", f"e{n}", verdict)
        if n % 5 == 0:  # validated again after a rule change: the last outcome counts
            again = NS(event_id=f"w{n}", encounter_id=f"e{n}", outcome="clean", edits=[])
            led.add("encounters.validated.v1", f"e{n}", again)
        for event in range(1 + (n % 7 == 0) + (n % 14 == 0)):  # sent once, twice, or thrice
            value = NS(event_id=f"x{n}.{event}", claim_id=f"C{n}", encounter_id=f"e{n}", **claim)
            led.add("claims.submitted.v1", f"C{n}", value)
    summary = led.summary()
    outcomes = Counter(led.outcome.values())
    assert summary["collected"] == len(set().union(*led.source_encounters.values())) == 40
    assert (summary["clean"], summary["rejected"]) == (
        outcomes["clean"] + outcomes["warnings"],
        outcomes["rejected"],
    )
    assert summary["clean"] == 22 and summary["rejected"] == 8  # two rejected, then clean
    assert led.resubmitted() == {c for c, e in led.claim_events.items() if len(e) > 1}
    assert summary["resubmitted"] == 5
    del led.outcome["e0"]
    assert led.summary()["clean"] == 21
    with pytest.raises(TypeError, match="item assignment"):
        led.outcome.update({"e1": "clean"})
