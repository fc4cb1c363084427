"""The hospital account: ADT and DFT messages of one visit, billed once final; late charges."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from unit.test_charge_capture import CDM_CSV, seg

from pipeline.errors import InputError
from services.intake.account import AccountBook, AccountStore, hl7_parser, split_held
from services.refdata.chargemaster import load_chargemaster
from sim.ehr import provider_directory

T0 = datetime(2025, 6, 4, 15, 0, tzinfo=UTC)
HL7 = "x-application/hl7-v2+er7"
PID = seg("PID", {1: "1", 3: "E4417^^^STCATH^MR", 5: "Neil^Aoife", 7: "19480312", 8: "F",
                  11: "88 Elm St^^Austin^TX^78704"})  # fmt: skip
IN1 = seg("IN1", {1: "1", 3: "84980", 4: "Blue Cross Blue Shield", 15: "BL", 17: "SEL",
                  36: "XOD123456789"})  # fmt: skip


def pv1(**extra: str) -> str:
    fields = {1: "1", 2: "I", 3: "4N^401^A^STCATH", 4: "E", 7: "1497758544^Chen^Li^^^^^^NPI",
              14: "7", 19: "V778812^^^STCATH", 44: "20250601"}  # fmt: skip
    fields.update({int(k[1:]): v for k, v in extra.items()})
    return seg("PV1", fields)


def msh(kind: str, control: str) -> str:
    return f"MSH|^~\\&|EPICADT|STCATH|CLAIMFLOW|CF|20250604143000||{kind}|{control}|P|2.7"


ADT_A01 = "\r".join([msh("ADT^A01^ADT_A01", "A0"), PID, pv1(), IN1])
ADT_A03 = "\r".join(
    [
        msh("ADT^A03^ADT_A03", "A1"), PID, pv1(f45="20250604", f36="01"),
        seg("DG1", {1: "1", 3: "K35.80^^I10", 15: "1", 26: "Y"}),
        seg("PR1", {1: "1", 3: "0DTJ4ZZ^^I10P", 5: "20250602"}),
        IN1,
    ]
)  # fmt: skip


def dft(control: str, *ft1s: dict[int, str]) -> str:
    lines = [seg("FT1", {1: str(i), **f}) for i, f in enumerate(ft1s, 1)]
    return "\r".join([msh("DFT^P03^DFT_P03", control), PID, pv1(), *lines, IN1])


ROOM = {4: "20250601", 6: "CG", 7: "10120", 10: "3"}
CBC = {4: "20250602", 6: "CG", 7: "30025", 10: "2"}
CBC_CREDIT = {4: "20250603", 6: "CD", 7: "30025", 10: "1"}
SURGERY = {4: "20250602", 6: "CG", 7: "36044970", 10: "1", 25: "44970^^C4"}


@pytest.fixture
def cdm_path(tmp_path: Path) -> Path:
    path = tmp_path / "chargemaster.csv"
    path.write_text(CDM_CSV)
    return path


def book(cdm_path: Path, **options: object) -> AccountBook:
    parse = hl7_parser(provider_directory(), load_chargemaster(cdm_path))
    return AccountBook(AccountStore(":memory:"), parse, **options)  # type: ignore[arg-type]


def send(b: AccountBook, text: str, at: datetime = T0) -> list:
    held, rest = split_held(b, text.encode(), HL7)
    assert rest is None and held
    with b.store.atomic():
        return b.receive(held, at)


def lines(enc) -> list[tuple]:
    return [(s.code, s.revenue_code, s.units, s.charge) for s in enc.services]


def test_admit_charges_and_discharge_sent_apart_make_one_account(cdm_path: Path) -> None:
    b = book(cdm_path)
    assert send(b, ADT_A01) == []  # the visit is open
    assert send(b, dft("D1", ROOM, CBC)) == []  # in house: charges wait
    assert send(b, dft("D2", SURGERY, CBC_CREDIT)) == []
    [enc] = send(b, ADT_A03)  # discharged, no bill hold: the final bill
    assert enc.encounter_id == "STCATH/V778812" and enc.type_of_bill is None
    assert enc.billing_provider.tax_id == "742018365"  # from the provider profile
    assert lines(enc) == [
        (None, "0120", 3.0, Decimal("7200.00")),
        ("85025", "0300", 1.0, Decimal("52.00")),  # two tests, one credited
        ("44970", "0360", 1.0, Decimal("14500.00")),
        ("0DTJ4ZZ", None, 1.0, Decimal("0.00")),
    ]
    assert (enc.discharge_status, enc.admission_source) == ("01", "7")


def test_the_bill_hold_waits_for_late_charges(cdm_path: Path) -> None:
    b = book(cdm_path, bill_hold_s=2 * 3600)
    assert send(b, ADT_A03) == []
    assert b.due(T0 + timedelta(hours=1)) == []
    assert send(b, dft("D1", ROOM, CBC), T0 + timedelta(hours=1)) == []
    [enc] = b.due(T0 + timedelta(hours=2))
    assert [s.revenue_code for s in enc.services] == ["0120", "0300", None]
    assert b.due(T0 + timedelta(hours=3)) == []  # billed once


def test_a_charge_after_the_final_bill_goes_as_a_late_charge_claim(cdm_path: Path) -> None:
    b = book(cdm_path)
    send(b, dft("D1", ROOM))
    [final] = send(b, ADT_A03)
    [late] = send(b, dft("D2", CBC))
    assert late.encounter_id == "STCATH/V778812/late-1" and late.type_of_bill == "0115"
    assert lines(late) == [("85025", "0300", 2.0, Decimal("104.00"))]  # the new charge only
    assert late.event_id != final.event_id
    [again] = send(b, dft("D3", SURGERY))
    assert again.encounter_id == "STCATH/V778812/late-2"


def test_a_replacement_bills_the_whole_account_again(cdm_path: Path) -> None:
    b = book(cdm_path, late_charges="replacement")
    send(b, dft("D1", ROOM))
    [final] = send(b, ADT_A03)
    [replacement] = send(b, dft("D2", CBC))
    assert replacement.encounter_id == final.encounter_id
    assert replacement.type_of_bill == "0117"
    assert [s.revenue_code for s in replacement.services] == ["0120", "0300", None]


def test_an_unknown_charge_code_is_an_error_on_arrival_and_leaves_the_account(
    cdm_path: Path,
) -> None:
    b = book(cdm_path)
    send(b, dft("D1", ROOM))
    with pytest.raises(InputError) as caught:
        send(b, dft("D2", {4: "20250602", 6: "CG", 7: "77777", 10: "1"}))
    assert caught.value.field.endswith("FT1[1]-7")
    assert "not in the chargemaster" in caught.value.reason
    [enc] = send(b, ADT_A03)  # the refused message is not part of the account
    assert [s.revenue_code for s in enc.services] == ["0120", None]


def test_an_office_dft_is_not_held() -> None:
    office = dft("D9", SURGERY).replace("|I|4N^401^A^STCATH|", "|O|CLINIC^^^STCATH|")
    b = AccountBook(AccountStore(":memory:"), hl7_parser(provider_directory(), None))
    held, rest = split_held(b, office.encode(), HL7)
    assert held == [] and rest == office.encode()


def test_offline_parse_assembles_the_messages_of_a_visit_from_several_files(
    tmp_path: Path, cdm_path: Path
) -> None:
    directory = tmp_path / "providers.json"
    directory.write_text(json.dumps(provider_directory().to_json()))
    files = []
    for name, text in (("adt.hl7", ADT_A03), ("dft.hl7", dft("D1", ROOM, CBC, CBC_CREDIT))):
        (tmp_path / name).write_text(text + "\r")
        files.append(str(tmp_path / name))
    env = {"CLAIMFLOW_CHARGEMASTER": str(cdm_path), "CLAIMFLOW_PROVIDER_DIRECTORY": str(directory)}
    run = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "intake", "parse", *files],
        capture_output=True, text=True, env={**_env(), **env}, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    [enc] = [json.loads(line) for line in run.stdout.splitlines()]
    assert [(s["revenue_code"], s["charge"]) for s in enc["services"]] == [
        ("0120", "7200.00"), ("0300", "52.00"), (None, "0.00"),
    ]  # fmt: skip
    only_charges = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "intake", "parse", files[1]],
        capture_output=True, text=True, env={**_env(), **env}, check=False,
    )  # fmt: skip
    assert only_charges.returncode == 1 and only_charges.stdout == ""
    assert "PV1-45: 1 hospital account(s) not final" in only_charges.stderr


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("CLAIMFLOW_")}


# --- the held-out check: ADT^A03 + DFT^P03 -> one pyx12-valid 837I; an office DFT -> 837P ---


def _chain(tmp_path: Path, cdm_path: Path, *messages: str) -> str:
    """intake parse (every file) | code | validate | claims build, as a user runs them."""
    directory = tmp_path / "providers.json"
    directory.write_text(json.dumps(provider_directory().to_json()))
    files = []
    for i, text in enumerate(messages):
        (tmp_path / f"m{i}.hl7").write_text(text + "\r")
        files.append(str(tmp_path / f"m{i}.hl7"))
    env = {**_env(), "CLAIMFLOW_CHARGEMASTER": str(cdm_path),
           "CLAIMFLOW_PROVIDER_DIRECTORY": str(directory)}  # fmt: skip
    cli = f"{sys.executable} -m pipeline.cli"
    run = subprocess.run(
        f"{cli} intake parse {' '.join(files)} | {cli} code | {cli} validate | {cli} claims build",
        shell=True, capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return run.stdout


def _recent(text: str) -> str:
    """The sample visit moved to November 2026, inside every payer's timely filing."""
    for old, new in (("202506", "202611"), ("20150312", "19480312")):
        text = text.replace(old, new)
    return text


def test_adt_and_dft_of_one_visit_become_one_valid_837i(tmp_path: Path, cdm_path: Path) -> None:
    from services.x12.validate import validate_x12

    surgeon = "1245319599^Okafor^Daniel^^^^^^NPI"  # PR1-11 (read up to 2.6)
    adt = _recent(ADT_A03).replace("|P|2.7", "|P|2.5.1")
    adt = adt.replace("|0DTJ4ZZ^^I10P||20261102", f"|0DTJ4ZZ^^I10P||20261102||||||{surgeon}")
    x12 = _chain(tmp_path, cdm_path, adt, _recent(dft("D1", ROOM, CBC, SURGERY, CBC_CREDIT)))
    assert x12.count("ST*837*") == 1 and "005010X223A2" in x12  # one 837I
    segments = [s.strip() for s in x12.split("~")]
    assert "HI*DR:399" in segments  # appendectomy without CC/MCC
    lines = [s for s in segments if s.startswith("SV2*")]
    assert lines == ["SV2*0120**7200*DA*3", "SV2*0300*HC:85025*52*UN*1",
                     "SV2*0360*HC:44970*14500*UN*1"]  # fmt: skip
    clm = next(s for s in segments if s.startswith("CLM*"))
    assert clm.split("*")[2] == "21752"  # the credited test netted out
    assert validate_x12(x12) == []


def test_an_office_dft_becomes_an_837p(tmp_path: Path, cdm_path: Path) -> None:
    from services.x12.validate import validate_x12

    office = _recent(dft("D7", {4: "20250602", 6: "CG", 7: "30025", 10: "1", 11: "52.00",
                               20: "1497758544^Chen^Li^^^^^^NPI", 19: "K35.80^^I10"}))  # fmt: skip
    office = office.replace("|I|4N^401^A^STCATH|E|", "|O|CLINIC^^^STCATH||")
    x12 = _chain(tmp_path, cdm_path, office)
    assert x12.count("ST*837*") == 1 and "005010X222A1" in x12
    assert "SV1*HC:85025*52*UN*1" in x12
    assert validate_x12(x12) == []


# --- the intake stage keeps accounts across messages and restarts ---------------------------


def stage_settings(tmp_path: Path, cdm_path: Path):  # type: ignore[no-untyped-def]
    """Intake's settings with the simulator's providers and the test chargemaster."""
    from services.intake.settings import IntakeOptions, IntakeSettings

    directory = tmp_path / "providers.json"
    directory.write_text(json.dumps(provider_directory().to_json()))
    return IntakeSettings(
        state_dir=tmp_path / "state", provider_directory=directory, chargemaster=cdm_path,
        intake=IntakeOptions(bill_hold_hours=0),
    )  # fmt: skip


def raw_record(text: str, n: int):  # type: ignore[no-untyped-def]
    """An HL7 v2 message on intake.raw.v1 as an EHR writes it (bare, keyed m<n>)."""
    import time as clock

    from pipeline.stage import Incoming

    return Incoming("intake.raw.v1", f"m{n}", None, text.encode(),
                    {"content-type": HL7.encode()}, 0, n, int(clock.time() * 1000))  # fmt: skip


def test_the_stage_bills_an_account_from_messages_sent_apart_even_across_a_restart(
    tmp_path: Path, cdm_path: Path
) -> None:
    from services.intake.app import IntakeStage

    settings = stage_settings(tmp_path, cdm_path)
    record = raw_record
    stage = IntakeStage(settings)
    assert list(stage.handle(record(dft("D1", ROOM, CBC), 1))) == []
    stage.on_batch_done()
    stage.close()
    stage = IntakeStage(settings)  # a restart: the account is on disk
    assert list(stage.handle(record(dft("D2", SURGERY, CBC_CREDIT), 2))) == []
    [out] = stage.handle(record(ADT_A03, 3))
    assert out.topic == "encounters.collected.v1" and out.key == "STCATH/V778812"
    assert lines(out.value)[:3] == [
        (None, "0120", 3.0, Decimal("7200.00")),
        ("85025", "0300", 1.0, Decimal("52.00")),
        ("44970", "0360", 1.0, Decimal("14500.00")),
    ]
    stage.on_batch_done()
    with pytest.raises(InputError):  # refused: to the dead-letter topic, the account unchanged
        stage.handle(record(dft("D4", {4: "20250603", 6: "CG", 7: "55555", 10: "1"}), 4))
    [late] = stage.handle(record(dft("D5", CBC), 5))
    assert late.value.type_of_bill == "0115" and late.key == "STCATH/V778812/late-1"
    stage.close()


# --- several intake instances: accounts keyed by visit, following their partition ----------


def test_a_message_read_again_adds_nothing_to_its_account(cdm_path: Path) -> None:
    b = book(cdm_path)
    for _ in range(2):  # the by-visit hop is at-least-once: the same record read twice
        held, _ = split_held(b, dft("D1", ROOM, CBC).encode(), HL7)
        with b.store.atomic():
            assert b.receive(held, T0, "hl7v2:STCATH:D1") == []
    held, _ = split_held(b, ADT_A03.encode(), HL7)
    with b.store.atomic():
        [enc] = b.receive(held, T0, "hl7v2:STCATH:A1")
    assert lines(enc)[:2] == [
        (None, "0120", 3.0, Decimal("7200.00")),
        ("85025", "0300", 2.0, Decimal("104.00")),  # once, not twice
    ]


def test_an_accounts_changelog_rebuilds_it_on_another_instance(cdm_path: Path) -> None:
    parse = hl7_parser(provider_directory(), load_chargemaster(cdm_path))
    first = AccountBook(AccountStore(":memory:", changelog=True), parse)
    held, _ = split_held(first, dft("D1", ROOM, CBC).encode(), HL7)
    with first.store.atomic():
        first.receive(held, T0, "hl7v2:STCATH:D1")
    changes = first.store.take_changes()
    assert [key for key, _ in changes] == ["STCATH|V778812"]
    moved = AccountBook(AccountStore(":memory:"), parse)  # the partition's new owner
    for key, value in changes:
        moved.store.apply(key, value)
    assert moved.store.take_changes() == []  # a restore writes nothing back to the changelog
    held, _ = split_held(moved, dft("D1", ROOM, CBC).encode() + b"\r" + ADT_A03.encode(), HL7)
    with moved.store.atomic():  # the DFT again (a re-read) and the discharge
        [enc] = moved.receive(held[:1], T0, "hl7v2:STCATH:D1") + moved.receive(
            held[1:], T0, "hl7v2:STCATH:A1"
        )
    assert [s.revenue_code for s in enc.services] == ["0120", "0300", None]
    assert lines(enc)[1] == ("85025", "0300", 2.0, Decimal("104.00"))


def test_a_restored_account_bills_nothing_again_so_intake_sends_its_bills_first(
    cdm_path: Path,
) -> None:
    """The discharge that completes an account, read again after a crash whose changelog
    already holds the billed account, bills nothing: the account says it was read. Were the
    changes sent before the bill (the runner's default), a kill between the two would lose
    the bill for good, so intake has its outputs acknowledged first."""
    from services.intake.app import IntakeStage

    parse = hl7_parser(provider_directory(), load_chargemaster(cdm_path))
    first = AccountBook(AccountStore(":memory:", changelog=True), parse)
    held, _ = split_held(first, ADT_A03.encode(), HL7)
    with first.store.atomic():
        [bill] = first.receive(held, T0, "hl7v2:STCATH:A1")
    restored = AccountBook(AccountStore(":memory:"), parse)  # after the crash, from the changelog
    for key, value in first.store.take_changes():
        restored.store.apply(key, value)
    with restored.store.atomic():
        assert restored.receive(held, T0, "hl7v2:STCATH:A1") == []  # the replay: nothing
    assert bill.encounter_id == "STCATH/V778812"
    assert IntakeStage.outputs_before_state


def test_the_live_stage_sends_held_messages_to_their_visits_partition(
    tmp_path: Path, cdm_path: Path
) -> None:
    from dataclasses import replace

    from pipeline.serde import registry
    from pipeline.stage import Incoming, Out, dead_letter
    from services.intake.app import BY_VISIT, IntakeStage, partitioned_accounts

    reg = registry()
    settings = stage_settings(tmp_path, cdm_path)
    accounts = partitioned_accounts(settings.state_dir)
    stage = IntakeStage(settings, accounts)
    assert stage.inputs == ("intake.raw.v1", "remittance.settled.v1", BY_VISIT)
    raw = raw_record

    office = dft("D9", SURGERY).replace("|I|4N^401^A^STCATH|", "|O|CLINIC^^^STCATH|")
    outs = list(stage.handle(raw(dft("D1", ROOM, CBC) + "\r" + office, 1)))
    # The office visit is billed as it comes; the inpatient charges go to their visit.
    assert sorted(o.topic for o in outs) == ["encounters.collected.v1", BY_VISIT]
    [rekeyed] = [o for o in outs if o.topic == BY_VISIT]
    [adt] = stage.handle(raw(ADT_A03, 2))
    assert adt.key == rekeyed.key  # every message of the visit: one key, one partition
    accounts.open(1)

    def by_visit(out: Out, offset: int) -> Incoming:
        value = reg.encode(BY_VISIT, out.value)
        return Incoming(BY_VISIT, out.key, reg.decode(BY_VISIT, value), value, {}, 1, offset, 0)

    assert list(stage.handle(by_visit(rekeyed, 0))) == []
    [bill] = stage.handle(by_visit(adt, 1))
    assert bill.topic == "encounters.collected.v1" and bill.key == "STCATH/V778812"
    assert [s.revenue_code for s in bill.value.services] == ["0120", "0300", None]
    assert bill.value.source_id == "m2"  # the message that completed the account
    changes = accounts.get(1).take_changes()
    # The account, and the bill it sent (for retention after settlement), follow the partition.
    assert {key for key, _ in changes} == {"STCATH|V778812", "~bill:STCATH/V778812"}
    with pytest.raises(LookupError, match="partition 2 of intake.by-visit.v1 is not assigned"):
        stage.handle(replace(by_visit(adt, 2), partition=2))  # the runner restores first
    # A message that breaks its account: its dead letter is keyed by its source message id
    # (what the tracker accounts a sent message by), the letter keeps the visit key.
    unknown = raw_record(dft("D4", {4: "20250603", 6: "CG", 7: "55555", 10: "1"}), 4)
    [broken] = stage.handle(unknown)
    bad = by_visit(broken, 3)
    with pytest.raises(InputError) as caught:
        stage.handle(bad)
    letter = dead_letter("intake", bad, caught.value, stage.dead_letter_key(bad))
    assert (letter.key, letter.value.key) == ("m4", broken.key)
    assert letter.value.source_topic == BY_VISIT and letter.value.value == bad.raw
    stage.close()
    accounts.close_all()
