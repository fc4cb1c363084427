"""The intake stage without a broker: repeats dropped durably, and no PHI in logs or labels."""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from pipeline.logs import JsonFormatter
from pipeline.models import Encounter, RawMessage
from pipeline.settings import Settings
from pipeline.stage import Incoming, Runner, reason_of
from services.intake.app import IntakeStage
from services.intake.seen import SeenMessages
from services.intake.settings import IntakeSettings
from sim.ehr import generate, provider_directory

REFERENCE = date(2026, 3, 1)


@pytest.fixture
def settings(tmp_path: Path) -> IntakeSettings:
    directory = tmp_path / "directory.json"
    directory.write_text(json.dumps(provider_directory().to_json()))
    return IntakeSettings(state_dir=tmp_path / "state", provider_directory=directory)


def incoming(source_id: str, body: bytes, ctype: str, offset: int = 0) -> Incoming:
    """A bare record as an EHR would produce it: bytes and a content-type header."""
    return Incoming(
        topic="intake.raw.v1",
        key=source_id,
        value=None,
        raw=body,
        headers={"content-type": ctype.encode()},
        partition=0,
        offset=offset,
        timestamp_ms=int(time.time() * 1000),
    )


def envelope(source_id: str, body: bytes, ctype: str) -> Incoming:
    """A record the gateway produced: the RawMessage envelope."""
    raw = RawMessage(
        source_id=source_id, content_type=ctype, body=body, received_at=datetime.now(UTC)
    )
    return Incoming("intake.raw.v1", source_id, raw, b"\xc3\x01...", {}, 0, 0, 0)


def test_a_resent_message_yields_one_encounter_even_across_a_restart(
    settings: IntakeSettings,
) -> None:
    (sid, ctype, body), (sid2, ctype2, body2) = generate(2, seed=3, fmt="hl7v2")
    stage = IntakeStage(settings)
    [out] = stage.handle(envelope(sid, body, ctype))
    assert isinstance(out.value, Encounter) and out.key == out.value.encounter_id
    assert stage.handle(envelope(sid, body, ctype)) == []  # the same batch
    stage.on_batch_done()
    stage.close()
    again = IntakeStage(settings)  # the process restarted
    assert again.handle(incoming(sid, body, ctype)) == []  # envelope or bare: same message
    corrected = body.replace(b"|CG|", b"|CG|", 1) + b"NTE|1||corrected\r"
    assert len(list(again.handle(incoming(sid, corrected, ctype)))) == 1  # same id, new body
    assert len(list(again.handle(incoming(sid2, body2, ctype2)))) == 1
    again.close()


def test_a_batch_lost_before_its_commit_is_read_again(settings: IntakeSettings) -> None:
    sid, ctype, body = next(generate(1, seed=4, fmt="fhir"))
    stage = IntakeStage(settings)
    assert len(list(stage.handle(incoming(sid, body, ctype)))) == 1
    stage.close()  # killed: on_batch_done never ran, the offsets were not committed either
    again = IntakeStage(settings)
    assert len(list(again.handle(incoming(sid, body, ctype)))) == 1
    again.close()


def test_a_rejected_message_is_not_remembered(settings: IntakeSettings) -> None:
    from pipeline.errors import InputError

    stage = IntakeStage(settings)
    bad = b'{"resourceType": "Bundle", "entry": []}'
    for _ in range(2):  # the sender may fix its configuration, or ours, and resend
        with pytest.raises(InputError):
            stage.handle(incoming("b1", bad, "application/fhir+json"))
        stage.on_batch_done()
    stage.close()


def test_seen_messages_are_pruned_after_the_window(tmp_path: Path) -> None:
    seen = SeenMessages(tmp_path / "seen.sqlite")
    seen.add("a", "d1", at=time.time() - 40 * 86400)
    seen.add("b", "d2")
    seen.commit()
    assert seen.seen("a", "d1") and len(seen) == 2
    assert seen.prune(time.time() - 30 * 86400) == 1
    assert not seen.seen("a", "d1") and seen.seen("b", "d2")
    seen.close()


def test_an_unreadable_provider_directory_stops_the_service(tmp_path: Path) -> None:
    from services.intake import app

    broken = tmp_path / "directory.json"
    broken.write_text('{"billing": {"X": {"npi": "1"}}}')
    bad = IntakeSettings(state_dir=tmp_path, provider_directory=broken)
    with pytest.raises(SystemExit, match="CLAIMFLOW_PROVIDER_DIRECTORY"):
        app.main(bad)


# --- minimum necessary PHI -------------------------------------------------------------


def note_bundle(text: str) -> bytes:
    """A simulator bundle with a clinical note attached to its encounter."""
    _, _, body = next(generate(1, seed=31, fmt="fhir"))
    bundle = json.loads(body)
    enc = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Encounter")
    bundle["entry"].append(
        {
            "fullUrl": "urn:uuid:note-1",
            "resource": {
                "resourceType": "DocumentReference",
                "id": "note-1",
                "status": "current",
                "content": [
                    {
                        "attachment": {
                            "contentType": "text/plain",
                            "data": base64.b64encode(text.encode()).decode(),
                        }
                    }
                ],
                "context": {"encounter": [{"reference": enc["fullUrl"]}]},
            },
        }  # fmt: skip
    )
    return json.dumps(bundle).encode()


def test_logs_and_metric_labels_carry_no_phi(
    settings: IntakeSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    note = "Patient disclosed a family history of Huntington disease."
    messages = [
        (sid, ctype, body)
        for fmt in ("json", "fhir", "hl7v2")
        for sid, ctype, body in generate(40, seed=5, fmt=fmt, reference_date=REFERENCE, mix="all")  # type: ignore[arg-type]
    ] + [("note-1", "application/fhir+json", note_bundle(note))]
    # Broken copies that still carry the PHI: their rejections must not echo it.
    broken = []
    for sid, ctype, body in messages[:40:4] + messages[80:120:4]:
        text = body.decode()
        if ctype == "application/json":
            record = json.loads(text)
            record["patient"]["birth_date"] = record["patient"]["birth_date"][:7]
            record["patient"]["address"]["postal_code"] = record["patient"]["last_name"]
            broken.append((f"{sid}-bad", ctype, json.dumps(record).encode()))
        else:  # HL7 v2: a birth date with a stray letter
            segments = text.split("\r")
            for k, segment in enumerate(segments):
                if segment.startswith("PID|"):
                    fields = segment.split("|")
                    fields[7] = f"X{fields[7]}"
                    segments[k] = "|".join(fields)
            broken.append((f"{sid}-bad", ctype, "\r".join(segments).encode()))
    stage = IntakeStage(settings)
    runner = Runner(stage, Settings(), "unused:9092")
    encounters: list[Encounter] = []
    reasons = []
    for offset, (sid, ctype, body) in enumerate(messages + broken + messages[:20]):
        msg = incoming(sid, body, ctype, offset)
        try:
            encounters += [out.value for out in stage.handle(msg)]
        except Exception as exc:  # noqa: BLE001 - routed as the runner does
            reasons.append(reason_of(exc))
            runner._reject(msg, exc)
    stage.on_batch_done()
    stage.close()
    assert len(encounters) == len(messages) and len(reasons) == len(broken)
    assert any(e.note_text == note for e in encounters)  # the note reached the contract ...

    secrets: set[str] = {note, "Huntington"}
    for e in encounters:
        p = e.patient
        born = p.birth_date
        secrets |= {p.last_name, p.first_name, born.isoformat(), born.strftime("%Y%m%d")}
        secrets |= {p.patient_id, e.coverage.member_id}
        if e.coverage.subscriber is not None:
            secrets |= {e.coverage.subscriber.last_name, e.coverage.subscriber.first_name}
    secrets = {s for s in secrets if len(s) >= 4}  # "Lee" could be any word
    logged = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert "input rejected" in logged and "repeated source message dropped" in logged
    leaks = sorted(s for s in secrets if s in logged)
    assert not leaks, leaks[:5]  # ... but never a log line
    leaks = sorted(s for s in secrets for r in reasons if s in r)
    assert not leaks, leaks[:5]  # nor a dead letter's reason

    values = {
        value
        for family in REGISTRY.collect()
        if family.name.startswith("claimflow")
        for sample in family.samples
        for name, value in sample.labels.items()
        if name not in ("le", "quantile")  # histogram buckets, not data
    }
    # Bounded means no ids: the character class below excludes encounter ids ("/") and
    # the checks after it exclude PHI and source ids. (A count bound would depend on how
    # many other metrics this process happens to have registered.)
    assert values
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]{1,40}", v) for v in values), values
    assert not values & secrets and not any(v.startswith("sim-") for v in values)
