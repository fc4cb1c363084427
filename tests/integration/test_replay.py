"""Replay after a rule change, on the real broker: the validation and claims stages run
in-process; ``claimflow replay`` re-validates the coded history with a changed pack, the
diff names exactly the encounters the change affects, the claims stage answers with
replacements and voids that reference the originals, and a second run changes nothing."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from unit.factories import coded, codesets_bare, encounter, line, patch

from pipeline.cli import main as claimflow
from pipeline.kafka import ensure_topics, make_producer
from pipeline.models import CodedDiagnosis, CodedEncounter, SubmittedClaim
from pipeline.replay import read_history
from pipeline.serde import registry
from pipeline.settings import Settings
from pipeline.stage import Runner, Stage
from services.claims.app import build_stage
from services.claims.domain import claim_id_for
from services.claims.settings import ClaimsSettings
from services.validation.app import ValidationStage
from services.validation.duplicates import DuplicateStore
from services.validation.engine import register_pack
from services.validation.packs import DEFAULT_PACK

pytestmark = pytest.mark.broker
REG = registry()
DAY = date.today() - timedelta(days=10)  # recent: inside every timely-filing limit

# The one rule that changes: CF-DX-002 (external-cause code listed first).
RUN = uuid.uuid4().hex[:6]
PACK_A = register_pack(DEFAULT_PACK.derive(f"it-{RUN}-a", severities={"CF-DX-002": "info"}))
PACK_B = register_pack(DEFAULT_PACK.derive(f"it-{RUN}-b", severities={"CF-DX-002": "warning"}))
PACK_C = register_pack(DEFAULT_PACK.derive(f"it-{RUN}-c", severities={"CF-DX-002": "error"}))


def _encounter(n: int, *, external_cause_first: bool = False, bad_npi: bool = False):
    """A clean office visit of its own patient; or one whose first diagnosis is an
    external-cause code (what the changed rule looks at); or one rejected by every pack."""
    enc = encounter(
        encounter_id=f"ENC-{RUN}-{n:03d}",
        event_id=f"ehr-{RUN}-{n}",
        source_id=f"ehr-{RUN}-{n}",
        service_start=DAY,
        service_end=DAY,
        received_at=datetime.now(UTC),
    )
    enc = patch(enc, patient=patch(enc.patient, patient_id=f"MRN-{RUN}-{n}"))
    if bad_npi:
        enc = patch(enc, billing_provider=patch(enc.billing_provider, npi="1847520397"))
    codes = ["V0001XA", "S82101A"] if external_cause_first else ["E119", "I10"]
    diagnoses = [
        CodedDiagnosis(code=c, sequence=i, source="ehr", confidence=1.0, billable=True)
        for i, c in enumerate(codes, 1)
    ]
    return coded(
        enc,
        event_id=f"coded-{RUN}-{n}",
        diagnoses=diagnoses,
        lines=[line(1, "99213", "145.00", [1, 2], service_date=DAY)],
    )


def _records(bootstrap: str, settings: Settings, topic: str) -> list[Any]:
    return [
        REG.decode(topic, r.value) for r in read_history(bootstrap, settings, topic, quiet_s=0.5)
    ]


def _wait_for(bootstrap: str, settings: Settings, topic: str, n: int, timeout: float = 60) -> list:
    deadline = time.monotonic() + timeout
    while True:
        got = _records(bootstrap, settings, topic)
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.3)


def _publish(bootstrap: str, settings: Settings, items: list[CodedEncounter]) -> None:
    producer = make_producer(bootstrap, settings)
    for item in items:
        producer.produce(
            settings.topic("encounters.coded.v1"),
            key=item.encounter_id.encode(),
            value=REG.encode("encounters.coded.v1", item),
        )
    assert producer.flush(10) == 0


class InThread:
    """A stage runner built and run in its own thread (SQLite stores stay in one thread)."""

    def __init__(self, build: Callable[[], tuple[Stage, Settings]], bootstrap: str) -> None:
        self.build = build
        self.bootstrap = bootstrap
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        stage, settings = self.build()
        runner = Runner(stage, settings, self.bootstrap)
        runner.stopping = self.stop
        runner.run()


@pytest.fixture
def stages(bootstrap: str, prefix: str, tmp_path: Path) -> Iterator[Settings]:
    """The validation stage (live pack A) and the claims stage, each in its own thread."""
    group = prefix.rstrip(".")
    settings = Settings(topic_prefix=prefix, group_prefix=group, state_dir=tmp_path / "validation")
    ensure_topics(bootstrap, settings, REG)
    claims_settings = ClaimsSettings.from_base(
        Settings(topic_prefix=prefix, group_prefix=group, state_dir=tmp_path / "claims")
    )

    def validation() -> tuple[Stage, Settings]:
        store = DuplicateStore.in_state_dir(settings.state_dir)
        return ValidationStage(codesets_bare(), PACK_A, store), settings

    def claims() -> tuple[Stage, Settings]:
        return build_stage(claims_settings), claims_settings

    running = [InThread(validation, bootstrap), InThread(claims, bootstrap)]
    yield settings
    for r in running:
        r.stop.set()
    for r in running:
        r.thread.join(20)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[str, dict[str, Any]]:
    capsys.readouterr()
    assert claimflow(list(argv)) == 0
    out = capsys.readouterr().out.strip()
    return out, json.loads(out.splitlines()[-1])


def test_replay_after_a_rule_change(
    bootstrap: str,
    stages: Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = stages
    for name, value in {
        "CLAIMFLOW_BOOTSTRAP_SERVERS": bootstrap,
        "CLAIMFLOW_TOPIC_PREFIX": settings.topic_prefix,
        "CLAIMFLOW_GROUP_PREFIX": settings.group_prefix,
        "CLAIMFLOW_STATE_DIR": str(settings.state_dir),
    }.items():
        monkeypatch.setenv(name, value)
    # Encounters 2, 9 and 10 list an external-cause code first; 5 has a mistyped NPI.
    first = [_encounter(n, external_cause_first=n == 2, bad_npi=n == 5) for n in range(1, 9)]
    second = [_encounter(n, external_cause_first=n in (9, 10)) for n in range(9, 13)]
    affected = sorted(e.encounter_id for e in first + second if e.diagnoses[0].code == "V0001XA")
    late_affected = affected[1:]
    _publish(bootstrap, settings, first)
    time.sleep(0.3)
    between = datetime.now(UTC)
    time.sleep(0.3)
    _publish(bootstrap, settings, second)

    # Live, pack A: CF-DX-002 is informational, so only encounter 5 is rejected.
    verdicts = _wait_for(bootstrap, settings, "encounters.validated.v1", 12)
    assert len(verdicts) == 12 and {v.rule_pack_version for v in verdicts} == {PACK_A.id}
    originals = _wait_for(bootstrap, settings, "claims.submitted.v1", 11)
    assert len(originals) == 11 and {c.frequency for c in originals} == {"1"}
    by_encounter = {c.encounter_id: c for c in originals}

    # Replay with pack B (CF-DX-002 warns): exactly the three encounters change outcome.
    text, summary = _cli(
        capsys, "replay", "--stage", "validation", "--rule-pack", PACK_B.id, "--from", "BEGINNING"
    )
    assert summary["by_rule"] == {"CF-DX-002": affected}, text
    assert (summary["changed"], summary["encounters"], summary["published"]) == (3, 12, 12)
    assert "clean -> warnings" in text and "added warning" in text

    claims = _wait_for(bootstrap, settings, "claims.submitted.v1", 14)
    replacements = [c for c in claims if c.frequency != "1"]
    assert sorted(c.encounter_id for c in replacements) == affected
    # Each claim names its interchange (claims.interchanges.v1) instead of carrying it.
    named = {c.interchange_control_number for c in replacements}
    deadline = time.monotonic() + 60
    while True:
        texts = {
            i.interchange_control_number: i.x12
            for i in _records(bootstrap, settings, "claims.interchanges.v1")
        }
        if named <= set(texts) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    for claim in replacements:
        original: SubmittedClaim = by_encounter[claim.encounter_id]
        assert claim.frequency == "7" and claim.claim_id == original.claim_id
        assert claim.original_reference == original.claim_id == claim_id_for(claim.encounter_id)
        assert claim.rule_pack_version == PACK_B.id
        assert claim.x12 is None
        assert f"REF*F8*{original.claim_id}~" in texts[claim.interchange_control_number]

    # The same replay again: nothing to publish, nothing changed, no claim.
    _, again = _cli(
        capsys, "replay", "--stage", "validation", "--rule-pack", PACK_B.id, "--from", "BEGINNING"
    )
    assert (again["changed"], again["published"], again["already_published"]) == (0, 0, 12)
    time.sleep(2)
    assert len(_records(bootstrap, settings, "encounters.validated.v1")) == 24
    assert len(_records(bootstrap, settings, "claims.submitted.v1")) == 14

    # Pack C (CF-DX-002 rejects) from a time between the two batches: only the later
    # encounters are re-validated; the two affected ones are voided.
    text, summary = _cli(
        capsys,
        "replay",
        "--stage",
        "validation",
        "--rule-pack",
        PACK_C.id,
        "--from",
        between.isoformat(),
    )
    assert summary["by_rule"] == {"CF-DX-002": late_affected}, text
    assert (summary["encounters"], summary["published"]) == (4, 4)
    assert "warnings -> rejected" in text
    claims = _wait_for(bootstrap, settings, "claims.submitted.v1", 16)
    voids = [c for c in claims if c.frequency == "8"]
    assert sorted(c.encounter_id for c in voids) == late_affected and len(claims) == 16
    for claim in voids:
        assert claim.original_reference == by_encounter[claim.encounter_id].claim_id

    # The correction work queue: the latest verdict per encounter, rejected ones only.
    capsys.readouterr()
    assert claimflow(["corrections", "list", "--json"]) == 0
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    queue = [q for q in lines if "queue" not in q]  # payer rejections are listed after
    expected = sorted([*late_affected, f"ENC-{RUN}-005"])
    assert sorted(q["encounter_id"] for q in queue) == expected
    npi = next(q for q in queue if q["encounter_id"] == f"ENC-{RUN}-005")
    assert [e["rule_id"] for e in npi["edits"]] == ["CF-NPI-001"]
    assert all("message" not in e for q in queue for e in q["edits"])  # no PHI by default
