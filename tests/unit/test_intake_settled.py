"""A settlement the intake stage sends to its visit's partition and is handed back at once:
read from the event it was made of only when validating its body could give nothing else
(``valid_as_sent``), and validated as before otherwise."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from pipeline.models import ClaimSettled
from pipeline.stage import Incoming
from services.intake.app import BY_VISIT, IntakeStage, partitioned_accounts, valid_as_sent
from services.intake.settings import IntakeSettings
from sim.ehr import provider_directory

VALID: dict[str, Any] = {
    "event_id": "ev1",
    "claim_id": "C1",
    "encounter_id": "ehr-sim/V1",
    "payer_id": "60054",
    "status": "paid",
    "posting_event_id": "p1",
    "settled_at": datetime(2026, 11, 3, 4, 5, 6, 123000, tzinfo=UTC),
}

# Each value a trusted read could hand over (no constraint checked): the model's own, and
# ones it refuses or would change.
VARIANTS: dict[str, list[Any]] = {
    "event_id": ["", 'é\u2028"\\x', 7, None, b"ev"],
    "claim_id": ["", " ", "C\x00", 7, None],
    "encounter_id": [None, "", "STCATH/V7/late-1", 7, b"x"],
    "payer_id": ["", 60054, None],
    "status": ["partially_paid", "denied", "written_off", "reopened", "PAID", "", None, 1],
    "posting_event_id": ["", 3.5, None],
    "settled_at": [
        datetime(2026, 1, 1, 0, 0),  # naive
        datetime(2026, 1, 1, 12, 30, 0, 7, tzinfo=timezone(timedelta(hours=-5))),
        datetime(1970, 1, 1, tzinfo=UTC),
        "2026-01-01T00:00:00Z",
        1_780_000_000,
    ],
}


def events() -> list[ClaimSettled]:
    made = [ClaimSettled.model_construct(**VALID)]
    for name, values in VARIANTS.items():
        made += [ClaimSettled.model_construct(**{**VALID, name: value}) for value in values]
    return made


def test_valid_as_sent_only_when_validation_gives_back_the_same_values() -> None:
    checked = 0
    for event in events():
        try:
            body = event.model_dump_json(warnings=False).encode()
        except Exception:  # noqa: BLE001 - the stage fails there either way
            continue
        try:
            again = ClaimSettled.model_validate_json(body)
        except ValidationError:
            assert not valid_as_sent(event), event
            continue
        if valid_as_sent(event):
            checked += 1
            for name in ClaimSettled.model_fields:
                assert getattr(again, name) == getattr(event, name), (name, event)
                assert type(getattr(again, name)) is type(getattr(event, name)), (name, event)
            assert again.settled_at.timestamp() == event.settled_at.timestamp()
    assert checked >= 10


@pytest.fixture
def stage(tmp_path: Path) -> Any:
    directory = tmp_path / "directory.json"
    directory.write_text(json.dumps(provider_directory().to_json()))
    settings = IntakeSettings(state_dir=tmp_path / "state", provider_directory=directory)
    accounts = partitioned_accounts(settings.state_dir)
    accounts.open(0)
    made = IntakeStage(settings, accounts)
    yield made
    made.close()
    accounts.close_all()


def hop(stage: IntakeStage, event: ClaimSettled, *, copied: bool) -> list[Any]:
    """A settlement read, and its record to the visit's partition handed back: as it is (the
    runner's in-process hop) or as bytes read again (a copy of the body)."""
    [out] = stage.handle(Incoming("remittance.settled.v1", "C1", event, b"", {}, 0, 0, 0))
    assert out.topic == BY_VISIT
    raw: Any = out.value
    if copied:
        raw = raw.model_copy(update={"body": bytes(bytearray(raw.body))})
    return list(stage.handle(Incoming(BY_VISIT, out.key, raw, b"", {}, 0, 0, 0)))


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")
def test_a_settlement_handed_back_reads_as_its_body_validated(stage: IntakeStage) -> None:
    for event in events():
        try:
            event.model_dump_json(warnings=False)
            ok = isinstance(event.encounter_id, str) and "/" in event.encounter_id
        except Exception:  # noqa: BLE001 - not sent on
            ok = False
        if not ok or not isinstance(event.event_id, str):
            continue
        results: list[Any] = []
        for copied in (True, False):
            try:
                results.append(("out", hop(stage, event, copied=copied)))
            except (ValidationError, ValueError) as exc:
                results.append(("error", type(exc), str(exc)))
        assert results[0] == results[1], event
        assert stage.partitioned is not None
        assert stage.partitioned.get(0).take_changes() == []  # no account billed it
