"""Retention on the real broker: remittance posts the payer's 835s and says each claim is
settled on remittance.settled.v1; the claims stage, told so through that topic (never by
reading remittance's files), prunes the claims' stored verdicts and 837 text once the
window has passed, so nothing of the patients stays in its state files; a correction that
comes later goes to the dead-letter topic with the reason."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from integration.test_claims_service_broker import Reader, publish, running
from unit.test_claims_837 import COVERAGE, PATIENT, coded_encounter, validated

from pipeline.kafka import ensure_topics, make_producer
from pipeline.models import event_id
from pipeline.serde import registry
from services.claims.app import build_stage
from services.claims.settings import ClaimsOptions, ClaimsSettings
from services.remittance.app import RemittanceSettings, RemittanceStage
from services.remittance.ledger import Ledger
from sim.payer_app import PayerSimOptions, PayerSimStage

pytestmark = pytest.mark.broker
REG = registry()


def pruned(state: Path) -> int:
    """Encounters pruned, over the corrections store of every partition."""
    count = 0
    for path in sorted((state / "claims-submitted").glob("submitted-p*.sqlite3")):
        with sqlite3.connect(path) as db:
            count += int(db.execute("SELECT count(*) FROM pruned").fetchone()[0])
    return count


def until(condition: object, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.2)
    return False


def _verdict(letter: object) -> bool:
    """A dead letter of a verdict (not of a posting)."""
    return str(getattr(letter, "source_topic", "")).endswith("encounters.validated.v1")


def test_settled_claims_are_pruned_through_the_settlement_topic(
    bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    settings = ClaimsSettings(
        topic_prefix=prefix,
        group_prefix=prefix.rstrip("."),
        state_dir=state,
        claims=ClaimsOptions(settled_retention_days=0, retention_sweep_s=0.2),
    )
    remit_settings = RemittanceSettings(
        topic_prefix=prefix, group_prefix=prefix.rstrip("."), state_dir=state
    )
    ensure_topics(bootstrap, settings, REG)
    settled = Reader(bootstrap, settings, "remittance.settled.v1")
    posted = Reader(bootstrap, settings, "remittance.posted.v1")
    dead = Reader(bootstrap, settings, "dlq.claims.v1")
    ids = [f"R-{i}" for i in range(6)]
    publish(bootstrap, settings, ids, COVERAGE)
    payer = PayerSimStage(PayerSimOptions(front_end_rejection_rate=0))
    remittance = RemittanceStage(Ledger(state / "remittance-ledger.sqlite3"))
    with running(payer, settings, bootstrap), running(remittance, remit_settings, bootstrap):
        with running(build_stage(settings), settings, bootstrap):
            events = settled.until(lambda r: len(r) >= len(ids))
            assert until(lambda: pruned(state) == len(ids))
        postings = posted.until(lambda r: len(r) >= len(ids))
        # A verdict for a pruned encounter (a replay with a new rule pack) is refused.
        late = validated(coded_encounter(ids[0], coverage=COVERAGE), "rejected")
        late = late.model_copy(update={"event_id": event_id(late.event_id, "replay")})
        producer = make_producer(bootstrap, settings)
        producer.produce(
            settings.topic("encounters.validated.v1"),
            key=ids[0].encode(),
            value=REG.encode("encounters.validated.v1", late),
        )
        assert producer.flush(10) == 0
        with running(build_stage(settings), settings, bootstrap):
            letters = dead.until(lambda r: any(_verdict(x) for x in r))
    for reader in (settled, posted, dead):
        reader.close()

    by_claim = {e.claim_id: e for e in events}  # type: ignore[attr-defined]
    assert set(by_claim) == {p.claim_id for p in postings}  # type: ignore[attr-defined]
    for posting in postings:
        event = by_claim[posting.claim_id]  # type: ignore[attr-defined]
        assert event.status == posting.status and event.posting_event_id == posting.event_id  # type: ignore[attr-defined]
    # The late verdict is refused, naming the field and the reason. With a zero-day window a
    # claim is pruned as soon as its settlement is handled, and its posting comes on another
    # topic (claims.postings-by-encounter.v1), read in either order: a posting handled after
    # its claim's settlement is refused the same way, never silently dropped.
    refused = [x for x in letters if _verdict(x)]
    assert len(refused) == 1 and refused[0].field == "encounter_id"  # type: ignore[attr-defined]
    for letter in letters:
        assert letter.field == "encounter_id"  # type: ignore[attr-defined]
        assert "pruned after the retention window" in letter.error_message  # type: ignore[attr-defined]
        assert _verdict(letter) or letter.source_topic.endswith(  # type: ignore[attr-defined]
            "claims.postings-by-encounter.v1"
        )

    # Nothing of the patients stays in the claims stage's files (write-ahead logs included).
    disk = b"".join(p.read_bytes() for p in sorted(state.glob("claims-*/*.sqlite3*")))
    assert disk and COVERAGE.member_id.encode() not in disk
    assert PATIENT.last_name.upper().encode() not in disk
    assert f'"last_name":"{PATIENT.last_name}"'.encode() not in disk
