"""Chaos: thousands of encounters while services are SIGKILLed and restarted, again and
again. Afterwards every claim is in exactly one final state, every encounter is billed or
ended before billing, no claim is duplicated and nothing is lost. CHAOS_ENCOUNTERS /
CHAOS_KILLS make it longer."""

from __future__ import annotations

import os
import random
import threading

import pytest
from supervised import lost_report

from pipeline.settings import Settings
from pipeline.supervisor import Supervisor
from pipeline.tracker import Ledger, Tracker
from sim.cli import publish_encounters

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

ENCOUNTERS = int(os.environ.get("CHAOS_ENCOUNTERS", "2500"))
KILLS = int(os.environ.get("CHAOS_KILLS", "12"))
VICTIMS = ("intake", "coding", "validation", "claims", "payer-sim", "remittance")


def claim_states(ledger: Ledger) -> dict[str, set[str]]:
    """Claim ids by final state: posted, refused at the payer's front end, or held."""
    return {
        "posted": set(ledger.posted),
        "payer_rejected": ledger.payer_rejected(),
        "payment_held": ledger.held(),
    }


def encounter_states(ledger: Ledger) -> dict[str, set[str]]:
    """Encounter ids that ended before any claim: rejected, held for a coder, dead letter."""
    return {
        "rejected": {e for e, o in ledger.outcome.items() if o == "rejected"},
        "review": ledger.in_review(),
        "dead_letter": set(ledger.dead_keys)
        & {e for encs in ledger.source_encounters.values() for e in encs},
    }


def once_each(states: dict[str, set[str]]) -> dict[str, list[str]]:
    counted: dict[str, list[str]] = {}
    for name, members in states.items():
        for member in members:
            counted.setdefault(member, []).append(name)
    return counted


def test_random_sigkills_lose_nothing_and_duplicate_nothing(
    bootstrap: str, pipeline: tuple[Settings, Supervisor]
) -> None:
    settings, sup = pipeline
    tracker = Tracker(bootstrap, settings)
    rng = random.Random(20261122)
    sender = threading.Thread(
        target=publish_encounters,
        kwargs={
            "bootstrap": bootstrap,
            "settings": settings,
            "count": ENCOUNTERS,
            "fmt": "mix",
            "seed": 41,
            "rate": 120.0,
            "on_sent": tracker.ledger.mark_sent,
        },
    )
    sender.start()
    killed: list[str] = []
    while len(killed) < KILLS:
        tracker.wait(lambda _: False, timeout=rng.uniform(0.8, 2.0))
        victim = rng.choice(VICTIMS)
        sup.kill(victim)  # SIGKILL: no chance to flush, commit or close
        killed.append(victim)
        tracker.wait(lambda _: False, timeout=rng.uniform(0.1, 0.6))
        sup.respawn(victim)
    sender.join()

    done = tracker.wait(lambda led: len(led.sent) == ENCOUNTERS and not led.lost(), timeout=600)
    tracker.wait(lambda _: False, timeout=2)
    tracker.close()
    ledger = tracker.ledger
    assert done, f"after kills {killed}: {lost_report(tracker, sup)}"
    summary = ledger.summary()
    assert summary["encounters_sent"] == ENCOUNTERS and summary["lost"] == 0
    assert len(killed) >= 10 and len(set(killed)) >= 4

    encounters = {e for encs in ledger.source_encounters.values() for e in encs}
    # One encounter may bill several claims (the facility's and the physician's, the next
    # payer's after the primary's): every claim ends in exactly one final state, and an
    # encounter without a claim in exactly one of the states that end it before billing.
    claims = once_each(claim_states(ledger))
    assert {c: s for c, s in claims.items() if len(s) != 1} == {}
    assert set(claims) == set(ledger.claim_encounter)
    billed = {ledger.claim_encounter[c] for c in claims}
    unbilled = once_each(encounter_states(ledger))
    assert {e: s for e, s in unbilled.items() if len(s) != 1} == {}
    assert billed & set(unbilled) == set()
    assert billed | set(unbilled) == encounters
    # No duplicate claim: one claim per encounter, claim type and payer (a secondary
    # coverage gets its own, and so do the facility's 837I and the physician's 837P to the
    # same payer), one event per claim; repeats after a kill re-send the same event (same
    # id), which consumers drop.
    per_payer = {
        (e, ledger.claim_types[c], ledger.payers[c]) for c, e in ledger.claim_encounter.items()
    }
    assert len(per_payer) == len(ledger.claim_encounter)
    assert all(len(events) == 1 for events in ledger.claim_events.values())
    assert all(len(events) == 1 for events in ledger.posting_events.values())
