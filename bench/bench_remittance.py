"""835 claim payments posted per second, in one process, against reading the same 835s.

The 835s are generated here (deterministic, balanced): files of BENCH_PER_FILE claims
(default 50), three lines each, contractual and patient-share adjustments, sequestration,
about one claim in twenty denied and one line in ten bundled, so the denial queue works too.
Measured on the same text, best of BENCH_REPEAT runs (default 3):

- baseline: pyx12's ``X12Reader`` iterating the segments, nothing else;
- parse: ``parse_835_transactions`` and the balancing checks;
- post: parse + match (dict lookup) + posting + denial work-queue items;
- stage: the remittance service's stage on a SQLite ledger on disk (claims loaded first),
  Avro-encoding every output as the runner would, committing per file; no broker.

Environment: BENCH_CLAIMS (default 3000).
"""

from __future__ import annotations

import io
import os
import random
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyx12.x12file

from pipeline.models import PayerFile, SubmittedClaim, event_id
from pipeline.serde import registry
from pipeline.stage import Incoming
from services.remittance.app import RemittanceStage
from services.remittance.denials import CodeTables, denial_for
from services.remittance.era import parse_835_transactions
from services.remittance.ledger import Ledger
from services.remittance.posting import post_remittance

PAYER = "BENCHPAYER"
NPI = "1234567893"
WHEN = datetime(2026, 3, 9, 8, 0, tzinfo=UTC)
CENT = Decimal("0.01")


def _amt(value: Decimal) -> str:
    return f"{value.quantize(CENT)}"


def make_claims(count: int) -> list[SubmittedClaim]:
    """Submitted claims the 835s answer (no X12: the ledger drops it anyway)."""
    return [
        SubmittedClaim(
            event_id=event_id(f"B{n:07d}", "bench"),
            claim_id=f"B{n:07d}",
            encounter_id=f"E{n:07d}",
            payer_id=PAYER,
            payer_name="BENCH PAYER",
            total_charge=Decimal("250.00"),
            expected_reimbursement=Decimal("150.00"),
            expected_basis="fee_schedule",
            line_count=3,
            service_start=date(2026, 3, 2),
            service_end=date(2026, 3, 2),
            interchange_control_number=f"{n:09d}",
            x12="",
            submitted_at=WHEN,
        )
        for n in range(count)
    ]


def _claim_segments(claim_id: str, rng: random.Random) -> tuple[list[str], Decimal]:
    charges = [Decimal("150.00"), Decimal("60.00"), Decimal("40.00")]
    allowed = [Decimal("90.00"), Decimal("36.00"), Decimal("24.00")]
    codes = ["99214", "83036", "36415"]
    denied = rng.random() < 0.05
    lines, paid_total, pr_total = [], Decimal(0), Decimal(0)
    for n, (charge, allow, code) in enumerate(zip(charges, allowed, codes, strict=True)):
        if denied:
            lines.append((code, charge, Decimal(0), [("CO", "16", charge)], ["MA130"]))
            continue
        if n > 0 and rng.random() < 0.1:
            lines.append((code, charge, Decimal(0), [("CO", "97", charge)], ["M15"]))
            continue
        coinsurance = (allow * Decimal("0.20")).quantize(CENT)
        sequestration = ((allow - coinsurance) * Decimal("0.02")).quantize(CENT)
        paid = allow - coinsurance - sequestration
        adjustments = [("CO", "45", charge - allow), ("CO", "253", sequestration)]
        adjustments.append(("PR", "2", coinsurance))
        lines.append((code, charge, paid, adjustments, []))
        paid_total += paid
        pr_total += coinsurance
    status = "4" if denied else "1"
    segments = [
        f"CLP*{claim_id}*{status}*250*{_amt(paid_total)}*{_amt(pr_total) if pr_total else ''}"
        f"*MB*ICN{claim_id}*11*1",
        f"NM1*QC*1*DOE*JANE****MI*MBI{claim_id}",
        "DTM*232*20260302",
        "DTM*233*20260302",
    ]
    for code, charge, paid, adjustments, remarks in lines:
        segments.append(f"SVC*HC:{code}*{_amt(charge)}*{_amt(paid)}**1")
        segments.append("DTM*472*20260302")
        by_group: dict[str, list[str]] = {}
        for group, reason, amount in adjustments:
            by_group.setdefault(group, []).append(f"{reason}*{_amt(amount)}")
        segments += [f"CAS*{group}*{'**'.join(parts)}" for group, parts in by_group.items()]
        segments += [f"LQ*HE*{rarc}" for rarc in remarks]
    return segments, paid_total


def make_835(claim_ids: list[str], number: int, rng: random.Random) -> str:
    """One balanced 835 interchange paying ``claim_ids``."""
    body: list[str] = []
    total = Decimal(0)
    for claim_id in claim_ids:
        segments, paid = _claim_segments(claim_id, rng)
        body += segments
        total += paid
    trace = f"BENCH{number:08d}"
    head = [
        "ST*835*0001",
        f"BPR*I*{_amt(total)}*C*ACH*CCP*01*011000015*DA*123456*1990000001**01*021000021*DA"
        "*654321*20260309",
        f"TRN*1*{trace}*1990000001",
        "DTM*405*20260309",
        "N1*PR*BENCH PAYER",
        "N3*PO BOX 1",
        "N4*ANYTOWN*MD*21201",
        f"REF*2U*{PAYER}",
        "PER*BL*EDI*TE*8005550100",
        f"N1*PE*BENCH CLINIC*XX*{NPI}",
        "LX*1",
    ]
    st = head + body
    st.append(f"SE*{len(st) + 1}*0001")
    isa = (
        f"ISA*00*{'':10}*00*{'':10}*ZZ*{PAYER:<15}*ZZ*{NPI:<15}*260309*0800*^*00501"
        f"*{number:09d}*0*P*:"
    )
    segments = [isa, f"GS*HP*{PAYER}*{NPI}*20260309*0800*{number}*X*005010X221A1", *st]
    segments += [f"GE*1*{number}", f"IEA*1*{number:09d}"]
    return "~\n".join(segments) + "~\n"


def best(runs: int, fn: Callable[[], Any]) -> float:
    """Least wall time of ``runs`` calls."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> dict[str, Any]:
    count = int(os.environ.get("BENCH_CLAIMS", "3000"))
    per_file = int(os.environ.get("BENCH_PER_FILE", "50"))
    runs = int(os.environ.get("BENCH_REPEAT", "3"))
    rng = random.Random(835)
    claims = make_claims(count)
    ids = [c.claim_id for c in claims]
    texts = [
        make_835(ids[i : i + per_file], n, rng) for n, i in enumerate(range(0, count, per_file))
    ]
    lookup = {c.claim_id: c for c in claims}
    codes = CodeTables()
    reg = registry()

    def read_only() -> None:
        for text in texts:
            for _ in pyx12.x12file.X12Reader(io.StringIO(text)):
                pass

    def parse_only() -> None:
        for text in texts:
            for remit in parse_835_transactions(text):
                assert not remit.balance_errors()

    queued = 0

    def post_all() -> None:
        nonlocal queued
        queued = 0
        for n, text in enumerate(texts):
            for remit in parse_835_transactions(text):
                assert not remit.balance_errors()
                postings = post_remittance(remit, lookup, file_id=f"F{n}", posted_at=WHEN)
                for posting, payment in zip(postings, remit.claims, strict=True):
                    queued += denial_for(posting, payment, codes, queued_at=WHEN) is not None

    files = [
        PayerFile(
            event_id=event_id(PAYER, str(n)),
            payer_id=PAYER,
            file_id=f"F{n}",
            kind="835",
            body=text.encode("ascii"),
            received_at=WHEN,
        )
        for n, text in enumerate(texts)
    ]
    outputs: dict[str, int] = {}

    def stage_all() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            stage = RemittanceStage(Ledger(Path(tmp) / "ledger.sqlite3"))
            for claim in claims:
                stage.handle(
                    Incoming("claims.submitted.v1", claim.claim_id, claim, b"", {}, 0, 0, 0)
                )
            stage.on_batch_done()
            started = time.perf_counter()
            outputs.clear()
            for n, file in enumerate(files):
                msg = Incoming("payer.inbound.v1", file.file_id, file, b"", {}, 1, n, 0)
                for out in stage.handle(msg):
                    reg.encode(out.topic, out.value)
                    outputs[out.topic] = outputs.get(out.topic, 0) + 1
                stage.on_batch_done()
            stage_times.append(time.perf_counter() - started)
            stage.close()

    stage_times: list[float] = []
    baseline_s = best(runs, read_only)
    parse_s = best(runs, parse_only)
    post_s = best(runs, post_all)
    for _ in range(runs):
        stage_all()
    stage_s = min(stage_times)
    segments = sum(text.count("~") for text in texts)
    return {
        "claims": count,
        "files": len(texts),
        "segments": segments,
        "baseline_pyx12_read_claims_per_s": round(count / baseline_s),
        "parse_claims_per_s": round(count / parse_s),
        "post_claims_per_s": round(count / post_s),
        "stage_claims_per_s": round(count / stage_s),
        "parse_vs_baseline": round(baseline_s / parse_s, 3),
        "post_vs_baseline": round(baseline_s / post_s, 3),
        "stage_vs_baseline": round(baseline_s / stage_s, 3),
        "denials_queued": queued,
        "stage_outputs": outputs,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(main()))
