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


def billed_stage(tmp_path: Path, handed: bool) -> tuple[IntakeStage, Any]:
    """A live stage (partition 0 of its accounts open) whose account of STCATH/V778812 is
    billed, its store's changes taken; ``handed``: the runner would hand a record re-keyed
    by visit straight back (one partition)."""
    from unit.test_charge_capture import CDM_CSV
    from unit.test_hospital_account import ADT_A03, CBC, ROOM, dft, raw_record, stage_settings

    tmp_path.mkdir()
    cdm = tmp_path / "cdm.csv"
    cdm.write_text(CDM_CSV)
    accounts = partitioned_accounts(stage_settings(tmp_path, cdm).state_dir)
    accounts.open(0)
    made = IntakeStage(stage_settings(tmp_path, cdm), accounts)
    for n, text in enumerate((dft("D1", ROOM, CBC), ADT_A03)):
        [rekeyed] = made.handle(raw_record(text, n))
        outs = list(made.handle(Incoming(BY_VISIT, rekeyed.key, rekeyed.value, b"", {}, 0, n, 0)))
    assert [o.key for o in outs] == ["STCATH/V778812"]
    accounts.get(0).take_changes()
    if handed:
        made.handed_back = lambda topic: topic == BY_VISIT  # type: ignore[method-assign]
    return made, accounts


def looped(stage: IntakeStage, event: ClaimSettled) -> list[Any]:
    """A settlement read, and what it re-keys by visit handed back (the in-process hop)."""
    outs = []
    for out in stage.handle(Incoming("remittance.settled.v1", "C1", event, b"", {}, 0, 0, 0)):
        if out.topic != BY_VISIT:
            outs.append(out)
            continue
        outs += stage.handle(Incoming(BY_VISIT, out.key, out.value, b"", {}, 0, 0, 0))
    return outs


def test_a_settlement_handed_back_at_once_is_settled_without_its_record(tmp_path: Path) -> None:
    """Told by the runner that its record would be handed straight back, the stage settles
    the account at once: the same outputs, errors and store changes as through the record."""
    settled = [
        {**VALID, "encounter_id": "STCATH/V778812", "payer_id": "84980"},
        {**VALID, "encounter_id": "STCATH/V778812", "status": "reopened", "event_id": "ev2"},
        {**VALID, "encounter_id": "STCATH/V778812", "claim_id": ""},  # refused by validation
        {**VALID, "encounter_id": "ehr-sim/V1"},  # no account of the store billed it
        {**VALID, "encounter_id": "no-account"},
        {**VALID, "encounter_id": "STCATH/V778812/late-1", "event_id": "ev3"},
    ]
    seen: list[list[Any]] = []
    for handed in (False, True):
        stage, accounts = billed_stage(tmp_path / str(handed), handed)
        results: list[Any] = []
        for values in settled:
            event = ClaimSettled.model_construct(**values)
            try:
                results.append(("out", looped(stage, event)))
            except ValueError as exc:  # a ValidationError
                results.append(("error", type(exc), str(exc)))
            results.append(accounts.get(0).take_changes())
        seen.append(results)
        if handed:  # settled at once: nothing re-keyed
            event = ClaimSettled.model_construct(**settled[0])
            msg = Incoming("remittance.settled.v1", "C1", event, b"", {}, 0, 0, 0)
            assert list(stage.handle(msg)) == []
        stage.close()
        accounts.close_all()
    assert seen[0] == seen[1]
    assert seen[0][1] and seen[0][3]  # the billed account's settlement and reopening written
    assert seen[0][4][0] == "error"


def test_the_runner_tells_the_stage_when_a_record_would_be_handed_back(stage: IntakeStage) -> None:
    """Only while every topic has one partition and this instance holds the by-visit one."""
    from pipeline.settings import Settings
    from pipeline.stage import Runner

    settings = Settings(topic_prefix="t.")
    runner = Runner(stage, settings, "localhost:1")
    assert not stage.handed_back(BY_VISIT)  # not known to be one partition
    runner._local_targets = frozenset({BY_VISIT})
    runner._owned = {(settings.topic(BY_VISIT), 0)}
    assert stage.handed_back(BY_VISIT) and not stage.handed_back("encounters.collected.v1")
    runner._owned = {(settings.topic(BY_VISIT), 1)}
    assert not stage.handed_back(BY_VISIT)
