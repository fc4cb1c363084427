"""The COB ledger keeps a payer's posting as its remittance.posted.v1 record in base64
(``services/claims/parsed.py``), the bytes the stage received. Held here: what it reads
back is the posting, whether it encoded it or kept the bytes received; and it still reads
what an older version wrote (the posting's JSON), both in its SQLite file and in its
changelog records."""

from __future__ import annotations

import json
import sqlite3
from base64 import b64encode
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

from pipeline.models import LineAdjustment, PostedLine, RemittancePosting
from pipeline.serde import registry
from services.claims.parsed import avro_text, read_text
from services.claims.secondary import POSTINGS, CobLedger

BY_ENCOUNTER = "claims.postings-by-encounter.v1"


def posting(n: int, *, status: str = "partially_paid") -> RemittancePosting:
    adjustment = LineAdjustment(group="PR", reason="1", amount=Decimal("20.00"), quantity=None)
    return RemittancePosting(
        event_id=f"e{n}",
        claim_id=f"C{n}",
        encounter_id=f"ENC-{n}",
        payer_id=f"P{n % 3}",
        payer_claim_control_number=f"PCN{n}" if n % 2 else None,
        claim_status_code="1",
        status=status,  # type: ignore[arg-type]
        total_charge=Decimal("100.00"),
        paid=Decimal("80.00"),
        patient_responsibility=Decimal("20.00"),
        adjustments=[],
        remark_codes=["N130"] if n % 3 else [],
        payment_date=date(2026, 1, 2),
        file_id=f"f{n}",
        posted_at=datetime(2026, 1, 2, 3, 4, 5, 123000, tzinfo=UTC),
        payer_sequence=1,
        lines=[
            PostedLine(
                line=1,
                qualifier="HC",
                procedure="99213",
                modifiers=["25"] if n % 2 else [],
                charge=Decimal("100.00"),
                paid=Decimal("80.00"),
                units=1.0,
                line_control_number=f"C{n}L1",
                service_date=date(2025, 12, 30),
                adjustments=[adjustment],
            )
        ],
        claim_adjustments=[adjustment] if n % 4 == 0 else [],
    )


def test_a_posting_reads_back_whether_encoded_or_kept_as_received() -> None:
    reg = registry()
    for n in range(12):
        value = posting(n)
        received = reg.encode(BY_ENCOUNTER, value)
        kept = avro_text(POSTINGS, value, received)
        assert kept == b64encode(received).decode()  # the bytes received, as they are
        assert read_text(POSTINGS, RemittancePosting, kept) == value
        encoded = avro_text(POSTINGS, value)
        assert read_text(POSTINGS, RemittancePosting, encoded) == value
        # Bytes that are not a posting's record are not kept: the posting is encoded.
        assert avro_text(POSTINGS, value, b"\xc3\x01junk") == encoded
        assert read_text(POSTINGS, RemittancePosting, value.model_dump_json()) == value


def previous_version_rows(ledger: CobLedger, postings: list[RemittancePosting]) -> None:
    """Rows as the previous version wrote them: each posting's JSON."""
    for p in postings:
        ledger.db.execute(
            "INSERT INTO cob_postings VALUES (?, 1, ?)", (p.encounter_id, p.model_dump_json())
        )


def test_a_file_of_the_previous_version_is_read(tmp_path: Path) -> None:
    path = tmp_path / CobLedger.FILENAME
    postings = [posting(n) for n in range(8)]
    old = CobLedger(path)
    previous_version_rows(old, postings)
    old.commit()
    old.close()
    with sqlite3.connect(path) as db:
        assert all(r[0].startswith("{") for r in db.execute("SELECT posting FROM cob_postings"))

    ledger = CobLedger(path, changelog=True)
    for p in postings:
        assert ledger.earlier(str(p.encounter_id), 2) == [p]
        # The secondary's posting, written now, is read beside the primary's old row.
        secondary = posting(100 + int(p.event_id[1:])).model_copy(
            update={"encounter_id": p.encounter_id}
        )
        ledger.record(str(p.encounter_id), 2, secondary)
        assert ledger.earlier(str(p.encounter_id), 3) == [p, secondary]
    forms = [r[0][:1] for r in ledger.db.execute("SELECT posting FROM cob_postings ORDER BY 1")]
    assert sorted(set(forms)) == ["w", "{"]


def test_changelog_records_of_the_previous_version_restore(tmp_path: Path) -> None:
    postings = [posting(n) for n in range(8)]
    writer = CobLedger(tmp_path / "old.sqlite3", changelog=True)
    previous_version_rows(writer, postings)
    records = writer.take_changes()
    assert all(json.loads(v)["posting"].startswith("{") for _, v in records if v)
    # Newer records after them: a posting replaced in the new form, one billed mark.
    replaced = postings[0].model_copy(update={"paid": Decimal("70.00"), "event_id": "e0b"})
    writer.record(str(replaced.encounter_id), 1, replaced)
    writer.mark_billed(str(replaced.encounter_id), 2, "C0-2")
    records += writer.take_changes()
    writer.commit()

    restored = CobLedger(tmp_path / "restored.sqlite3")
    for key, value in records:
        restored.apply(key, value)
    restored.commit()
    assert restored.earlier(str(replaced.encounter_id), 2) == [replaced]
    assert restored.billed(str(replaced.encounter_id), 2) == "C0-2"
    for p in postings[1:]:
        assert restored.earlier(str(p.encounter_id), 2) == [p]
        assert writer.earlier(str(p.encounter_id), 2) == [p]
