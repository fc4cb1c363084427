"""What the claims stage's stores read back is taken from the models they wrote, kept by
their stored text (``services/claims/parsed.py``), instead of parsed again: for every
posting and verdict the stage stored for the simulator's encounters (billed, answered by
the payer simulator, posted, billed to the next payers), the kept model is the one its
text reads as (its Avro record), and writes the same JSON."""

from __future__ import annotations

import io
import tempfile
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bench.bench_claims_stage import Loop, run, verdicts
from pipeline.models import RemittancePosting, ValidatedEncounter
from services.claims.corrections import VERDICTS
from services.claims.parsed import Parsed, avro_text, read_text
from services.claims.secondary import POSTINGS, CobLedger


def test_kept_models_are_what_their_text_parses_to() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        loop = Loop(Path(tmp), None)
        remits = []
        corpus = verdicts(120, "all")  # the postings stored: those of a payer billed after
        for i in range(0, len(corpus), 20):
            remits += loop.answer(loop.bill(corpus[i : i + 20]))
        for _ in range(2):
            remits = loop.answer(loop.post(remits))
        stored = []
        for part, cob in loop.stage.cob_stores.items():
            rows = cob.db.execute("SELECT posting FROM cob_postings").fetchall()
            stored += [(cob._parsed, RemittancePosting, row[0]) for row in rows]
            submitted = loop.stage.submitted_stores.open(part)
            rows = submitted.db.execute("SELECT billed FROM submitted").fetchall()
            stored += [(submitted._parsed, ValidatedEncounter, row[0]) for row in rows]
        loop.stage.close()
    kinds = {model for _, model, _ in stored}
    assert kinds == {RemittancePosting, ValidatedEncounter} and len(stored) > 100
    assert sum(model is RemittancePosting for _, model, _ in stored) > 10
    for kept, model, text in stored:
        parsed = kept.parse(text)  # the record (``read_text``)
        value = kept.get(text)
        assert type(value) is type(parsed) is model and value == parsed
        assert value.model_dump_json() == parsed.model_dump_json()
        assert not text.startswith("{")  # not JSON: the record in base64
        topic = VERDICTS if model is ValidatedEncounter else POSTINGS
        assert read_text(topic, model, text) == parsed
        # The JSON an older version kept reads as the same model.
        assert read_text(topic, model, value.model_dump_json()) == value


def test_a_text_not_kept_is_parsed_and_the_oldest_forgotten() -> None:
    kept = Parsed(RemittancePosting, 1)
    posting = RemittancePosting(
        event_id="e1",
        claim_id="A1",
        payer_id="P1",
        claim_status_code="1",
        status="paid",
        total_charge=Decimal("100.00"),
        paid=Decimal("80.00"),
        patient_responsibility=Decimal("20.00"),
        adjustments=[],
        file_id="f1",
        posted_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    text = posting.model_dump_json()
    first = kept.get(text)
    assert first == posting and first is not posting and kept.get(text) is first
    kept.keep(text.replace("A1", "B2"), posting)  # the only one kept now
    again = kept.get(text)
    assert again == posting and again is not first


def test_a_posting_that_bills_no_one_is_stored_without_being_kept_parsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A posting no later payer is billed from (``bills_none``) is written to the COB
    ledger but not kept parsed; what the stage writes is the same as when every posting
    was kept (the judge), and a posting not kept still reads as its model."""
    corpus = verdicts(60, "all")
    recorded: list[tuple[CobLedger, str, bool]] = []
    record = CobLedger.record

    def noted(
        self: CobLedger,
        encounter_id: str,
        position: int,
        posting: RemittancePosting,
        encoded: bytes | None = None,
        *,
        read_soon: bool = True,
    ) -> None:
        record(self, encounter_id, position, posting, encoded, read_soon=read_soon)
        if posting.status != "reversed":
            recorded.append((self, avro_text(POSTINGS, posting, encoded), read_soon))

    monkeypatch.setattr(CobLedger, "record", noted)
    written = io.StringIO()
    run(corpus, written)
    soon = {text for _, text, read_soon in recorded if read_soon}
    later = [(cob, text) for cob, text, read_soon in recorded if not read_soon]
    assert later and soon  # both kinds in the corpus
    for cob, text in later:
        if text not in soon:
            assert text not in cob._parsed._by_text
        assert cob._parsed.get(text) == read_text(POSTINGS, RemittancePosting, text)

    def kept_all(self: CobLedger, *args: Any, read_soon: bool = True, **kwargs: Any) -> None:
        record(self, *args, **kwargs)  # the judge: every posting kept parsed, as before

    monkeypatch.setattr(CobLedger, "record", kept_all)
    judged = io.StringIO()
    run(corpus, judged)
    assert written.getvalue() == judged.getvalue()
