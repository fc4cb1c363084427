"""The duplicate store's fingerprint (``duplicates.fingerprint``) with its dates' text kept
by date and no sort of an empty modifier list; the function before is the judge, over the
simulator's coded encounters of both mixes and variants of them (modifiers in any order,
revenue-code lines, no rendering provider, the same dates again)."""

from __future__ import annotations

import hashlib

from sim_corpus import coded

from pipeline.models import CodedEncounter
from services.validation import duplicates
from services.validation.duplicates import fingerprint


def judge(coded: CodedEncounter) -> str:
    enc = coded.encounter
    rendering = enc.rendering_provider.npi if enc.rendering_provider else ""
    lines = sorted(
        f"{line.code or 'rev' + (line.revenue_code or '')}:{'.'.join(sorted(line.modifiers))}:"
        f"{line.service_date.isoformat()}"
        for line in coded.lines
    )
    parts = [
        enc.patient.patient_id,
        enc.coverage.payer_id,
        enc.coverage.member_id,
        enc.billing_provider.npi,
        rendering,
        enc.service_start.isoformat(),
        enc.service_end.isoformat(),
        *lines,
    ]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def variants(c: CodedEncounter) -> list[CodedEncounter]:
    out = [c]
    if c.lines:
        first = c.lines[0]
        out.append(
            c.model_copy(
                update={
                    "lines": [
                        first.model_copy(update={"modifiers": ["XU", "25", "59"]}),
                        first.model_copy(update={"code": None, "revenue_code": "0450"}),
                        first.model_copy(update={"code": None, "revenue_code": None}),
                        *c.lines[1:],
                    ]
                }
            )
        )
    enc = c.encounter.model_copy(update={"rendering_provider": None})
    out.append(c.model_copy(update={"encounter": enc, "lines": []}))
    return out


def test_the_fingerprint_is_the_one_worked_out_before() -> None:
    seen = 0
    for _ in range(2):  # the second time, every date's text is kept
        for mix in ("office", "all"):
            for c in coded(mix):
                for v in variants(c):
                    assert fingerprint(v) == judge(v), v.encounter_id
                    seen += 1
    assert seen > 600 and duplicates._ISO


def test_the_kept_dates_are_bounded() -> None:
    from datetime import date, timedelta

    day = date(2020, 1, 1)
    for i in range(duplicates._ISO_KEPT + 10):
        assert duplicates._iso(day + timedelta(days=i)) == (day + timedelta(days=i)).isoformat()
    assert len(duplicates._ISO) <= duplicates._ISO_KEPT
