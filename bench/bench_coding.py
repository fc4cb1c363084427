"""Encounters coded per second in one process: structured codes, and diagnoses from notes.

The encounters are the EHR simulator's (deterministic), parsed by intake. Two inputs:
- structured: as the simulator sends them, ICD-10-CM codes on every diagnosis;
- notes: the same visits with the structured diagnoses removed and a clinical note in
  their place, written from the diagnoses' titles in the words clinicians use (some
  abbreviated, the "unspecified" qualifiers dropped), plus sentences a coder must not
  code (denied symptoms, history, family history) and the visit's total time (matching
  the billed E/M level in nine visits out of ten).
Baseline, on the same encounters in the same run: ``Encounter.model_validate`` +
``model_dump`` (what any stage pays to read and write a record). Reported: encounters/s,
the share that went to coder review, the ratio to the baseline, and for notes how many
of the structured codes the note reading found (recall) and how many codes it found that
the structured data did not have (precision). Best of BENCH_REPEAT runs (default 3).
Environment: BENCH_CODING_N (default 2000), BENCH_REPEAT.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from pipeline.models import Encounter
from services.coding import em
from services.coding.domain import Coder
from services.coding.terms import default_index
from services.intake.domain import parse_raw
from sim.ehr import DX, generate

WHEN = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)
REFERENCE = date(2026, 3, 1)
SHARED_CMS = Path(__file__).resolve().parents[2] / "shared" / "data" / "cms"

# How clinicians write some of the simulator's diagnoses (abbreviations the index knows).
SPOKEN = {
    "I10": ["HTN", "hypertension", "essential hypertension"],
    "E11.9": ["T2DM", "type 2 diabetes", "diabetes mellitus type 2"],
    "E78.5": ["hyperlipidemia", "HLD"],
    "J44.9": ["COPD"],
    "I48.91": ["atrial fibrillation", "afib"],
    "I25.10": ["CAD"],
    "K21.9": ["GERD"],
    "N39.0": ["UTI"],
    "J06.9": ["URI", "acute upper respiratory infection"],
}
DISTRACTORS = [
    "Denies chest pain.",
    "No fever or chills.",
    "Denies shortness of breath.",
    "Family history of diabetes in mother.",
    "History of pneumonia as a child.",
    "Return if fever develops.",
    "Mother has breast cancer.",
]


def encounters(n: int) -> list[Encounter]:
    """n simulated encounters, parsed by intake."""
    out: list[Encounter] = []
    for source_id, ctype, body in generate(n, seed=42, fmt="mix", reference_date=REFERENCE):
        out += parse_raw(body, ctype, source_id=source_id, received_at=WHEN).encounters
    return out


def _spoken(code: str, rng: random.Random) -> str:
    if code in SPOKEN:
        return rng.choice(SPOKEN[code])
    title = DX.get(code, code)
    for qualifier in (", unspecified", "Unspecified ", ", site not specified"):
        title = title.replace(qualifier, "")
    return title[0].lower() + title[1:]


def _minutes(enc: Encounter, rng: random.Random) -> int:
    """A total time that supports the billed office E/M level (one visit in ten does not)."""
    billed = next((s.code for s in enc.services if em.family_of(s.code)), None)
    if billed is None or rng.random() < 0.1:
        return rng.choice([15, 20, 25, 32, 41])
    family = em.family_of(billed)
    assert family is not None
    codes = em.NEW if family == "new" else em.ESTABLISHED
    low = em.MINUTES[family][codes.index(billed)]
    return low + rng.randrange(0, 10)


def with_note(enc: Encounter, rng: random.Random) -> Encounter:
    """The visit with its diagnoses written in a note instead of coded."""
    codes = [d.code for d in enc.diagnoses]
    lines = [f"HPI: {rng.choice(['Follow-up visit.', 'Seen today.', 'Here for a visit.'])}"]
    lines += rng.sample(DISTRACTORS, k=2)
    lines.append("Assessment:")
    lines += [f"{n}. {_spoken(c, rng)}." for n, c in enumerate(codes, 1)]
    lines.append(f"Total time: {_minutes(enc, rng)} minutes.")
    services = [s.model_copy(update={"dx_refs": []}) for s in enc.services]
    return enc.model_copy(
        update={"diagnoses": [], "services": services, "note_text": "\n".join(lines)}
    )


def _best(run: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> dict[str, Any]:
    n = int(os.environ.get("BENCH_CODING_N", "2000"))
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    started = time.perf_counter()
    default_index()
    index_s = time.perf_counter() - started
    coder = Coder.load(SHARED_CMS if SHARED_CMS.is_dir() else None)
    structured = encounters(n)
    rng = random.Random(7)
    noted = [with_note(e, rng) for e in structured]

    def baseline() -> int:
        for enc in structured:
            Encounter.model_validate(enc.model_dump())
        return len(structured)

    def code_all(batch: list[Encounter]) -> Callable[[], list[Any]]:
        def run() -> list[Any]:
            out: list[Any] = []
            for enc in batch:
                try:
                    out.append(coder.code(enc, coded_at=WHEN))
                except InputError:
                    out.append(None)
            return out

        return run

    base_s, _ = _best(baseline, repeat)
    structured_s, coded = _best(code_all(structured), repeat)
    notes_s, from_notes = _best(code_all(noted), repeat)

    found = expected = extra = 0
    for want, got in zip(coded, from_notes, strict=True):
        if want is None or got is None:
            continue
        want_codes = {d.code for d in want.diagnoses}
        got_codes = {d.code for d in got.diagnoses}
        expected += len(want_codes)
        found += len(want_codes & got_codes)
        extra += len(got_codes - want_codes)

    def review_share(results: list[Any]) -> float:
        done = [r for r in results if r is not None]
        return round(sum(bool(r.review_reasons) for r in done) / max(1, len(done)), 3)

    count = len(structured)
    return {
        "encounters": count,
        "index_build_s": round(index_s, 2),
        "baseline_validate_dump_per_s": round(count / base_s),
        "structured_per_s": round(count / structured_s),
        "structured_review_share": review_share(coded),
        "structured_dead_letters": sum(r is None for r in coded),
        "structured_cost_vs_baseline": round(structured_s / base_s, 2),
        "notes_per_s": round(count / notes_s),
        "notes_review_share": review_share(from_notes),
        "notes_cost_vs_baseline": round(notes_s / base_s, 2),
        "notes_code_recall": round(found / max(1, expected), 3),
        "notes_code_precision": round(found / max(1, found + extra), 3),
    }
