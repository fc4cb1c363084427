"""Claims validated per second in one process, with the NCCI tables loaded.

Input: the EHR simulator's encounters (office visits, ED visits and inpatient stays),
parsed by intake and coded by coding before anything is timed, as encounters.coded.v1
Avro records. Measured on the same records in the same run:

- baseline: Avro decode of the coded record + encode of its verdict (what the stage pays
  for the record whatever the rules): the ratios below are to it;
- validate: the default rule pack over each decoded encounter (duplicate-claim table in
  memory), with the CMS NCCI excerpts from the public reference files (tests/shared_data.py) or
  CLAIMFLOW_REFDATA_DIR;
  the first pass (cold MCE caches) and the best of BENCH_REPEAT passes;
- stage path: decode + validate + encode;
- full-size PTP: the same with a synthetic practitioner PTP table of BENCH_PTP_ROWS rows
  in the official layout (the CMS tables run to millions of rows; the excerpt has 155),
  with its load time and memory, and edits among the simulator's own codes so
  that some fire.

Environment: BENCH_VALIDATION_N (default 2000), BENCH_REPEAT (3), BENCH_PTP_ROWS (1000000).
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from pipeline.models import CodedEncounter, ValidatedEncounter
from pipeline.serde import registry
from services.coding.domain import Coder
from services.intake.domain import parse_raw
from services.refdata.codesets import CodeSets
from services.refdata.ncci import PtpTable
from services.validation.duplicates import DuplicateStore
from services.validation.packs import DEFAULT_PACK
from services.validation.rules import validate
from sim.ehr import generate

WHEN = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)
VALIDATED_AT = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
REFERENCE = date(2026, 3, 1)
SHARED_CMS = Path(__file__).resolve().parents[2] / "shared" / "data" / "cms"
CODED, VALIDATED = "encounters.coded.v1", "encounters.validated.v1"
PTP_HEADER = (
    "CPT only copyright 2025 American Medical Association.  All rights reserved.\t\t\t\t\t\t\r\n"
    "Column1/Column2 Edits\t\t\t\t\t\t\r\n"
    "Column 1\tColumn 2\t*=in existence\tEffective\tDeletion\tModifier\tPTP Edit Rationale\r\n"
)
RATIONALES = (
    "Misuse of Column Two code with Column One code",
    "Standards of medical/surgical practice",
    "CPT Manual or CMS manual coding instruction",
    "Mutually exclusive procedures",
)


def coded_records(n: int) -> tuple[list[bytes], str]:
    """n simulated encounters, parsed and coded, as encounters.coded.v1 Avro bytes; and the
    simulator mix used ("all" when the simulator can make it, else office visits only)."""
    reg = registry()
    coder = Coder.load(None)
    for mix in ("all", "office"):
        out: list[bytes] = []
        try:
            for source_id, ctype, body in generate(
                n,
                seed=42,
                fmt="mix",
                reference_date=REFERENCE,
                mix=mix,  # type: ignore[arg-type]
            ):
                for enc in parse_raw(body, ctype, source_id=source_id, received_at=WHEN).encounters:
                    try:
                        out.append(reg.encode(CODED, coder.code(enc, coded_at=WHEN)))
                    except InputError:
                        continue
        except IndexError:  # the simulator's "all" mix could not make a stay for a patient
            continue
        return out, mix
    raise RuntimeError("the simulator made no encounters")


def table_mb(table: PtpTable) -> float:
    """Memory the PTP table holds: its dicts, packed rows and (shared) code strings."""
    total = sys.getsizeof(table.pairs)
    codes: set[int] = set()
    for col1, inner in table.pairs.items():
        total += sys.getsizeof(inner)
        codes.add(id(col1))
        for col2, packed in inner.items():
            total += sys.getsizeof(packed)
            codes.add(id(col2))
    return (total + len(codes) * sys.getsizeof("00000")) / 2**20


def synthetic_ptp(folder: Path, rows: int, codes: list[str]) -> int:
    """A practitioner PTP file of ``rows`` rows: every pair of the given codes (some
    active, indicators 0 and 1), then filler pairs of made-up codes. Returns the pairs
    among the given codes."""
    rng = random.Random(11)
    lines = [PTP_HEADER]
    own = 0
    for a in codes:
        for b in codes:
            if a != b and rng.random() < 0.25:
                indicator = rng.choice("011")
                lines.append(f"{a}\t{b}\t\t20200101\t*\t{indicator}\t{rng.choice(RATIONALES)}\r\n")
                own += 1
    n = len(lines) - 1
    while n < rows:
        col1 = f"{rng.randrange(10000, 99999):05d}"
        for _ in range(rng.randrange(20, 200)):
            col2 = f"{rng.randrange(10000, 99999):05d}"
            deletion = rng.choice(("*", "*", "*", "20191231"))
            indicator = rng.choice("0119")
            rationale = rng.choice(RATIONALES)
            lines.append(f"{col1}\t{col2}\t\t20150101\t{deletion}\t{indicator}\t{rationale}\r\n")
            n += 1
    (folder / "ccipra-v999r0-f1.txt").write_text("".join(lines), encoding="latin-1")
    return own


def _best(run: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """(first, best) seconds of ``repeat`` runs, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return times[0], min(times), result


def main() -> dict[str, Any]:
    n = int(os.environ.get("BENCH_VALIDATION_N", "2000"))
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    ptp_rows = int(os.environ.get("BENCH_PTP_ROWS", "1000000"))
    refdata = Path(os.environ.get("CLAIMFLOW_REFDATA_DIR") or SHARED_CMS)
    reg = registry()
    records, mix = coded_records(n)
    decoded = [reg.decode(CODED, r) for r in records]
    settings = Counter(c.encounter.setting for c in decoded)  # type: ignore[attr-defined]
    count = len(records)
    codesets = CodeSets.load(refdata if refdata.is_dir() else None)
    caps = codesets.capabilities()

    def verdicts(cs: CodeSets) -> Callable[[], list[ValidatedEncounter]]:
        def run() -> list[ValidatedEncounter]:
            store = DuplicateStore(":memory:")
            out = []
            for coded in decoded:
                assert isinstance(coded, CodedEncounter)
                v = validate(coded, cs, validated_at=VALIDATED_AT, history=store)
                store.record(coded, v.outcome)
                out.append(v)
            return out

        return run

    first_s, validate_s, results = _best(verdicts(codesets), repeat)

    def baseline() -> None:
        for raw, verdict in zip(records, results, strict=True):
            reg.decode(CODED, raw)
            reg.encode(VALIDATED, verdict)

    _, base_s, _ = _best(baseline, repeat)

    def stage_path() -> None:
        store = DuplicateStore(":memory:")
        for raw in records:
            coded = reg.decode(CODED, raw)
            assert isinstance(coded, CodedEncounter)
            v = validate(coded, codesets, validated_at=VALIDATED_AT, history=store)
            store.record(coded, v.outcome)
            reg.encode(VALIDATED, v)

    _, stage_s, _ = _best(stage_path, repeat)

    # A full-size practitioner PTP table next to the real MUE excerpt.
    # Facility lines billed by revenue code alone have no procedure code: no PTP pair.
    line_codes = sorted({ln.code for c in decoded for ln in c.lines if ln.code})  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        own_pairs = synthetic_ptp(folder, ptp_rows, line_codes)
        for mue in refdata.glob("MCR_MUE_*.csv") if refdata.is_dir() else []:
            shutil.copy(mue, folder / mue.name)
        started = time.perf_counter()
        big = CodeSets.load(folder)
        load_s = time.perf_counter() - started
        table = big.ncci.ptp["practitioner"]
        big_first_s, big_s, big_results = _best(verdicts(big), repeat)

    def tally(vs: list[ValidatedEncounter]) -> dict[str, int]:
        return dict(Counter(v.outcome for v in vs))

    def fired(vs: list[ValidatedEncounter], prefix: str) -> int:
        return sum(any(e.rule_id.startswith(prefix) for e in v.edits) for v in vs)

    return {
        "encounters": count,
        "simulator_mix": mix,
        "settings": dict(settings),
        "rule_pack": DEFAULT_PACK.id,
        "ncci_loaded": {k: v for k, v in caps.items() if k.startswith("ncci")},
        "ptp_rows": len(codesets.ncci.ptp["practitioner"]) if caps["ncci_ptp"] else 0,
        "mue_codes": len(codesets.ncci.mue["practitioner"]) if caps["ncci_mue"] else 0,
        "baseline_avro_decode_encode_per_s": round(count / base_s),
        "validate_first_pass_per_s": round(count / first_s),
        "validate_per_s": round(count / validate_s),
        "validate_cost_vs_baseline": round(validate_s / base_s, 2),
        "stage_path_per_s": round(count / stage_s),
        "stage_path_cost_vs_baseline": round(stage_s / base_s, 2),
        "outcomes": tally(results),
        "full_size_ptp": {
            "rows": len(table),
            "pairs_among_simulator_codes": own_pairs,
            "load_s": round(load_s, 2),
            "table_mb": round(table_mb(table)),
            "validate_first_pass_per_s": round(count / big_first_s),
            "validate_per_s": round(count / big_s),
            "validate_cost_vs_baseline": round(big_s / base_s, 2),
            "encounters_with_ncci_hits": fired(big_results, "CF-NCCI-001"),
            "outcomes": tally(big_results),
        },
    }
