"""The whole pipeline: the real broker, the five services and the payer simulator as
separate processes, encounters in at one end and posted remittances out at the other."""

from __future__ import annotations

import json
import stat
import time

import pytest
from supervised import lost_report

from pipeline.kafka import make_producer
from pipeline.settings import Settings
from pipeline.supervisor import Supervisor
from pipeline.tracker import Ledger, Tracker
from services.x12.validate import validate_x12
from sim.cli import publish_encounters
from sim.ehr import generate

pytestmark = [pytest.mark.broker, pytest.mark.e2e]


def send_raw(bootstrap: str, settings: Settings, source_id: str, body: bytes, ctype: str) -> None:
    producer = make_producer(bootstrap, settings)
    producer.produce(
        settings.topic("intake.raw.v1"),
        key=source_id.encode(),
        value=body,
        headers=[("content-type", ctype.encode())],
    )
    assert producer.flush(10) == 0


def json_encounter_with_unknown_code() -> tuple[str, bytes]:
    source_id, _, body = next(generate(1, seed=99, fmt="json"))
    record = json.loads(body)
    record["diagnoses"][0]["code"] = "E11.999"  # not an ICD-10-CM code in any year
    return source_id + "-bad-dx", json.dumps(record).encode()


def all_done(ledger: Ledger) -> bool:
    return bool(ledger.sent) and not ledger.lost()


def test_good_encounters_are_posted_once_and_bad_ones_are_dead_letters(
    bootstrap: str, pipeline: tuple[Settings, Supervisor]
) -> None:
    settings, sup = pipeline
    tracker = Tracker(bootstrap, settings, keep_x12=True)
    good = publish_encounters(
        bootstrap, settings, 40, "mix", seed=11, on_sent=tracker.ledger.mark_sent
    )
    bad = {
        "bad-json": (b'{"encounter_id": "x", "patient": ', "application/json"),
        "bundle-without-encounter": (
            json.dumps(
                {
                    "resourceType": "Bundle",
                    "type": "collection",
                    "entry": [{"resource": {"resourceType": "Patient", "id": "p1"}}],
                }
            ).encode(),
            "application/fhir+json",
        ),
    }
    bad_dx_id, bad_dx_body = json_encounter_with_unknown_code()
    bad[bad_dx_id] = (bad_dx_body, "application/json")
    for source_id, (body, ctype) in bad.items():
        send_raw(bootstrap, settings, source_id, body, ctype)
        tracker.ledger.mark_sent(source_id)

    assert tracker.wait(all_done, timeout=180), lost_report(tracker, sup)
    tracker.wait(lambda _: False, timeout=2)  # let any stray repeat arrive
    tracker.close()
    ledger = tracker.ledger

    assert good == 40
    letters = {d["key"]: d for stage in ledger.dead.values() for d in stage}
    (bad_dx_encounter,) = ledger.source_encounters[bad_dx_id]  # collected, then refused
    assert set(letters) == {"bad-json", "bundle-without-encounter", bad_dx_encounter}
    assert "JSON" in letters["bad-json"]["reason"]
    assert letters["bundle-without-encounter"]["field"].startswith("Bundle")
    assert "Encounter" in letters["bundle-without-encounter"]["reason"]
    dx_letter = letters[bad_dx_encounter]
    assert dx_letter["field"].startswith("diagnoses") and "E11.999" in dx_letter["reason"]
    assert ledger.dead.keys() <= {"intake", "coding"}

    good_sources = ledger.sent - set(bad)
    for source in good_sources:
        (encounter,) = ledger.source_encounters[source]
        if encounter in ledger.in_review() or ledger.outcome[encounter] == "rejected":
            continue
        claim = ledger.encounter_claim[encounter]
        if claim in ledger.payer_rejected():
            continue
        assert sum(ledger.posting_events[claim].values()) == 1, claim  # exactly once
    summary = ledger.summary()
    assert summary["lost"] == 0
    # Every claim is adjudicated once: paid or denied on an 835, or refused by the
    # payer's front end (999/277CA).
    assert summary["posted"] + summary["payer_rejected"] == summary["submitted"] > 0
    assert summary["clean"] + summary["rejected"] + summary["review"] == len(good_sources)
    assert ledger.duplicates("claims.submitted.v1") == 0

    errors = {claim: validate_x12(x12) for claim, x12 in ledger.x12.items()}
    assert len(errors) == summary["submitted"]
    assert {claim: e for claim, e in errors.items() if e} == {}


@pytest.mark.parametrize("victim", ["claims", "remittance"])
def test_sigkill_mid_run_loses_nothing_and_duplicates_no_claim(
    bootstrap: str, pipeline: tuple[Settings, Supervisor], victim: str
) -> None:
    settings, sup = pipeline
    tracker = Tracker(bootstrap, settings)
    publish_encounters(bootstrap, settings, 60, "mix", seed=23, on_sent=tracker.ledger.mark_sent)
    # Kill the service once it has done part of the work.
    progressed = {
        "claims": lambda led: len(led.claim_encounter) >= 5,
        "remittance": lambda led: len(led.posted) >= 5,
    }[victim]
    assert tracker.wait(progressed, timeout=120)
    sup.kill(victim)
    publish_encounters(bootstrap, settings, 60, "mix", seed=24, on_sent=tracker.ledger.mark_sent)
    time.sleep(1)
    sup.respawn(victim)

    assert tracker.wait(all_done, timeout=180), lost_report(tracker, sup)
    tracker.wait(lambda _: False, timeout=2)
    tracker.close()
    ledger = tracker.ledger
    summary = ledger.summary()
    assert summary["encounters_sent"] == 120
    assert summary["lost"] == 0 and summary["dlq"] == 0
    assert summary["posted"] + summary["payer_rejected"] == summary["submitted"]
    assert len(set(ledger.claim_encounter.values())) == summary["clean"]
    # One claim per encounter and payer (a secondary coverage gets its own, after the
    # primary's 835): a replayed batch re-sends the same event, never a new claim.
    per_payer = {(e, ledger.payers[c]) for c, e in ledger.claim_encounter.items()}
    assert len(ledger.claim_encounter) == len(per_payer)
    assert all(len(events) == 1 for events in ledger.claim_events.values())
    # Each claim is posted once: repeats after the crash carry the same event id.
    assert all(len(events) == 1 for events in ledger.posting_events.values())


def _phi_values(messages: list[tuple[str, str, bytes]]) -> set[str]:
    """Names, birth dates, member ids, MRNs and note text of the simulated patients."""
    from pipeline.models import utcnow
    from services.intake.domain import parse_raw

    values: set[str] = set()
    for source_id, ctype, body in messages:
        for enc in parse_raw(body, ctype, source_id=source_id, received_at=utcnow()).encounters:
            p, cov = enc.patient, enc.coverage
            values |= {
                p.last_name,
                p.first_name,
                p.patient_id,
                cov.member_id,
                p.birth_date.isoformat(),
                p.birth_date.strftime("%Y%m%d"),
            }
            if cov.subscriber:
                values |= {cov.subscriber.last_name, cov.subscriber.first_name}
            if enc.note_text:
                values.add(enc.note_text[:40])
    return {v for v in values if v and len(v) >= 4}


def _marked_on_topics(bootstrap: str, settings: Settings) -> set[str]:
    """The values of every field marked phi in every record of every topic (the schemas'
    marks are held by tests/contract/test_phi.py)."""
    from phi import marked_values, searchable

    from pipeline.errors import DecodeError
    from pipeline.replay import read_history
    from pipeline.serde import registry

    reg = registry()
    found: set[str] = set()
    topics_with_phi = set()
    for topic in reg.topics:
        schema = reg.latest(topic).schema
        for rec in read_history(bootstrap, settings, topic, quiet_s=0.5):
            try:
                datum = reg.decode_dict(topic, rec.value)
            except DecodeError:
                continue  # intake.raw.v1 carries the EHR's bytes, not Avro
            values = searchable(marked_values(schema, datum))
            topics_with_phi |= {topic} if values else set()
            found |= values
    # The 837 (names, member ids) is on claims.interchanges.v1; claim events only name it.
    assert {"encounters.collected.v1", "claims.interchanges.v1"} <= topics_with_phi
    return found


def test_no_phi_in_any_log_line_or_metric(
    bootstrap: str, pipeline: tuple[Settings, Supervisor]
) -> None:
    import re
    import urllib.request

    settings, sup = pipeline
    tracker = Tracker(bootstrap, settings)
    messages = list(generate(40, seed=31, fmt="mix"))
    phi = _phi_values(messages)
    assert len(phi) > 80  # the check below has something to find
    publish_encounters(bootstrap, settings, 40, "mix", seed=31, on_sent=tracker.ledger.mark_sent)
    assert tracker.wait(all_done, timeout=180), lost_report(tracker, sup)
    tracker.close()
    # And whatever any topic marks as patient data, in the forms a log line could show it.
    phi |= _marked_on_topics(bootstrap, settings)

    texts = {}
    for name, child in sup.children.items():
        texts[f"{name}.log"] = child.log_path.read_text(errors="replace")
        with urllib.request.urlopen(f"http://127.0.0.1:{child.metrics_port}/metrics") as resp:
            texts[f"{name}/metrics"] = resp.read().decode()
    assert any("claimflow_records_in_total" in t for t in texts.values())
    pattern = re.compile("|".join(re.escape(v) for v in sorted(phi, key=len, reverse=True)))
    leaks = {
        where: sorted(set(pattern.findall(text)))[:5]
        for where, text in texts.items()
        if pattern.search(text)
    }
    assert leaks == {}

    # At rest: the stores hold PHI, and only their owner can read them (0600 in 0700).
    paths = [sup.run_dir, *sup.run_dir.rglob("*")]
    stored = b"".join(p.read_bytes() for p in paths if p.is_file() and ".sqlite" in p.name)
    assert any(v.encode() in stored for v in phi)  # so the modes below protect something
    wide = {
        str(p.relative_to(sup.run_dir)): oct(stat.S_IMODE(p.stat().st_mode))
        for p in paths
        if stat.S_IMODE(p.stat().st_mode) & 0o077
    }
    assert wide == {}
