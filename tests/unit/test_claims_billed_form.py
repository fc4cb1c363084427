"""The corrections store keeps the verdict a claim was built from as its Avro record in
base64 (``billed_text``), the bytes the stage received when the claim bills the verdict as
it came. Held here: on the simulator's verdicts and their facility / physician parts,
``read_billed`` gives back the verdict its JSON (the form older versions stored) gives,
whether encoded by the store or taken as received; and a store still reads what an older
version wrote, both in its SQLite file and in its changelog records."""

from __future__ import annotations

import json
import sqlite3
from base64 import b64encode
from pathlib import Path
from typing import Any

import pytest
from sim_corpus import validated
from test_claims_submitted_layout import previous_file

from pipeline.avro_write import writer_for
from pipeline.errors import DecodeError
from pipeline.models import ValidatedEncounter, event_id
from pipeline.serde import registry
from services.claims.corrections import (
    VERDICTS,
    SubmittedClaims,
    billed_text,
    read_billed,
    without_note,
)
from services.claims.domain import claim_id_for, claim_parts
from services.refdata import ub04


def parts(mix: str) -> list[tuple[ValidatedEncounter, ValidatedEncounter]]:
    """(verdict, part) of every claim the corpus bills, and of the verdicts with a note."""
    out = []
    for verdict in validated(mix):
        out += [(verdict, part) for _, part in claim_parts(verdict)]
    return out


@pytest.mark.parametrize("mix", ["office", "all"])
def test_the_stored_form_reads_back_as_the_json_did(mix: str) -> None:
    reg = registry()
    found = parts(mix)
    assert len(found) > 50 and any(v is not p for v, p in found) == (mix == "all")
    for verdict, part in found:
        kept = without_note(part)
        old = ValidatedEncounter.model_validate_json(kept.model_dump_json())
        text = billed_text(kept)
        assert not text.startswith("{")
        assert read_billed(text) == old == kept
        assert read_billed(text).model_dump_json() == kept.model_dump_json()
        # The record as received, kept as it is: the same verdict.
        received = reg.encode(VERDICTS, verdict)
        assert read_billed(billed_text(verdict, received)) == verdict
        assert billed_text(verdict, received) == b64encode(received).decode()
        # JSON, as older versions stored it, still reads.
        assert read_billed(kept.model_dump_json()) == kept


def test_bytes_that_are_no_verdict_record_are_encoded_not_kept() -> None:
    verdict = validated("office")[0]
    for bad in (b"", b"not avro", registry().encode("encounters.coded.v1", verdict.coded)):
        text = billed_text(verdict, bad)
        assert read_billed(text) == verdict


def test_a_stored_text_that_is_neither_form_is_an_error() -> None:
    for bad in ("%%%", b64encode(b"\xc3\x01" + b"\0" * 20).decode()):
        with pytest.raises((ValueError, DecodeError)):
            read_billed(bad)


def old_rows(store: SubmittedClaims, verdicts: list[ValidatedEncounter]) -> None:
    """Rows as the previous version wrote them: the verdict's JSON in ``billed``."""
    for v in verdicts:
        store.db.execute(
            "INSERT INTO submitted VALUES (?, ?, '1', ?, NULL, ?)",
            (
                v.encounter_id,
                claim_id_for(v.encounter_id),
                f"E-{v.encounter_id}",
                v.model_dump_json(),
            ),
        )
        store.db.execute("INSERT INTO answered VALUES (?, ?)", (v.event_id, v.encounter_id))


def billable(mix: str) -> list[ValidatedEncounter]:
    out = [v for v in validated(mix) if v.outcome != "rejected" and len(claim_parts(v)) == 1]
    return out[:20]


def answers(store: SubmittedClaims, verdicts: list[ValidatedEncounter]) -> list[object]:
    """What the store answers, for each verdict, to it replayed, changed and rejected."""
    out: list[object] = []
    for v in verdicts:
        prior = store.prior(v.encounter_id)
        assert prior is not None and prior.billed == v
        replay = v.model_copy(update={"event_id": event_id(v.event_id, "replay")})
        assert store.claims_for(replay) == []  # same content: nothing
        other = "warnings" if v.outcome == "clean" else "clean"
        toggled = v.model_copy(update={"event_id": event_id(v.event_id, "t"), "outcome": other})
        voided = {"event_id": event_id(v.event_id, "r"), "outcome": "rejected"}
        rejected = v.model_copy(update=voided)
        for asked in (toggled, rejected):
            planned = store.claims_for(asked)
            out.append([(p.claim.frequency, p.claim_id, p.event_id) for p in planned])
        # The void was built from the verdict billed before it (the toggled one).
        assert store.prior(v.encounter_id).billed == toggled  # type: ignore[union-attr]
    return out


def test_a_file_of_the_previous_version_opens_and_answers_alike(tmp_path: Path) -> None:
    verdicts = billable("all")
    path = tmp_path / SubmittedClaims.FILENAME
    # The previous version's file: its tables (``PREVIOUS_SCHEMA``), verdicts stored as JSON.
    old = SubmittedClaims(previous_file(path))
    assert not old.by_claim
    old_rows(old, verdicts)
    old.commit()
    old.close()
    with sqlite3.connect(path) as db:
        texts = [r[0] for r in db.execute("SELECT billed FROM submitted")]
    assert len(texts) == len(verdicts) and all(t.startswith("{") for t in texts)

    store = SubmittedClaims(path, changelog=True)
    got = answers(store, verdicts)
    assert [[k[0] for k in kinds] for kinds in got] == [["7"], ["8"]] * len(verdicts)
    # What it wrote since is the new form, next to the old rows it did not rewrite.
    forms = {r[0][:1] for r in store.db.execute("SELECT billed FROM submitted")}
    assert forms == {"w"}  # every row was rewritten by the void (base64 of C3 01 ...)
    store.commit()
    store.close()

    # Against a store that never held an old row (today's tables): the same answers.
    fresh = SubmittedClaims(tmp_path / "fresh.sqlite3")
    assert fresh.by_claim
    for v in verdicts:
        fresh.claims_for(v)
        fresh.db.execute(
            "UPDATE submitted SET claim_event_id = ? WHERE encounter_id = ?",
            (f"E-{v.encounter_id}", v.encounter_id),
        )
    assert answers(fresh, verdicts) == got


def test_changelog_records_of_the_previous_version_restore(tmp_path: Path) -> None:
    verdicts = billable("office")
    # The records the previous version sent: its rows, as the triggers log them.
    writer = SubmittedClaims(previous_file(tmp_path / "old.sqlite3"), changelog=True)
    old_rows(writer, verdicts)
    records = writer.take_changes()
    submitted = [json.loads(v) for k, v in records if k.startswith("submitted:") and v]
    assert len(submitted) == len(verdicts) and all(r["billed"][0] == "{" for r in submitted)
    # Then a status change (a slim record), and rows in the new form after them.
    writer.set_payer_claim_control_number(claim_id_for(verdicts[0].encounter_id), "PCN-1")
    records += writer.take_changes()
    newer = billable("all")[-3:]
    for v in newer:
        writer.claims_for(v)
    records += writer.take_changes()
    writer.commit()

    restored = SubmittedClaims(tmp_path / "restored.sqlite3")
    for key, value in records:
        restored.apply(key, value)
    restored.commit()
    for v in verdicts:
        assert restored.prior(v.encounter_id) == writer.prior(v.encounter_id)
        assert restored.prior(v.encounter_id).billed == v  # type: ignore[union-attr]
    assert restored.prior(verdicts[0].encounter_id).reference == "PCN-1"  # type: ignore[union-attr]
    for v in newer:
        assert restored.prior(v.encounter_id) == writer.prior(v.encounter_id)
    assert answers(restored, verdicts) == answers(writer, verdicts)


def test_a_split_encounters_parts_are_written_the_same_with_shared_records_kept() -> None:
    """An encounter split into a facility and a professional claim has both parts encoded
    (neither is the record received), and the second shares the first's patient, coverage,
    providers and diagnoses: the verdict writer keeps their bytes by instance
    (``avro_write.SHARED``). The writer that keeps none is the judge, fresh verdicts and
    verdicts written before alike."""
    sv = registry().latest(VERDICTS)
    named = sv.parsed["__named_schemas"]
    kept = writer_for(sv.parsed, named, ValidatedEncounter)
    plain = writer_for(sv.parsed, named, ValidatedEncounter, kept=frozenset())
    assert kept is not None and plain is not None

    def written(write: Any, value: ValidatedEncounter) -> bytes:
        out = bytearray()
        write(value, out)
        return bytes(out)

    split = [claim_parts(v) for v in validated("all") if len(claim_parts(v)) > 1]
    assert len(split) > 10
    for _ in range(2):  # the second time, the verdicts' shared records are all kept
        for pair in split:
            for _, part in pair:
                assert written(kept, part) == written(plain, part), part.encounter_id
    memos = [v for k, v in kept.__globals__.items() if k.startswith("kept")]
    assert memos and all(memos)


def test_a_professional_part_has_the_lines_two_copies_made() -> None:
    """``ub04.claim_part`` renumbers a professional line and drops its claim type in one
    copy; the judge is the two copies it made before: equal values, fields set, order."""
    found = 0
    for verdict in validated("all"):
        coded = verdict.coded
        if len(ub04.claim_kinds(coded)) < 2:
            continue
        setting = coded.encounter.setting
        for renumber in (True, False):
            part = ub04.claim_part(coded, "professional", renumber=renumber)
            lines = [
                ln for ln in coded.lines if ub04.line_claim_type(ln, setting) == "professional"
            ]
            if renumber:
                lines = [ln.model_copy(update={"line_number": n}) for n, ln in enumerate(lines, 1)]
            judge = [ln.model_copy(update={"claim_type": None}) for ln in lines]
            assert part.lines == judge
            assert [ln.model_fields_set for ln in part.lines] == [
                ln.model_fields_set for ln in judge
            ]
            assert [list(ln.__dict__) for ln in part.lines] == [list(ln.__dict__) for ln in judge]
            found += 1
    assert found > 10
