"""835 claim payments posted per second, in one process, against reading the same 835s.

The 835s are written by the payer simulator's 835 writer (``sim/payer.py``) from
adjudications made here (deterministic, balanced): files of BENCH_PER_FILE claims
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
from services.remittance.era import CasAdjustment, parse_835_transactions
from services.remittance.ledger import Ledger
from services.remittance.posting import post_remittance
from sim.payer import Claim837, ClaimDecision, ClaimLine, LineDecision, render_835

PAYER = "BENCHPAYER"
NPI = "1234567893"
WHEN = datetime(2026, 3, 9, 8, 0, tzinfo=UTC)
CENT = Decimal("0.01")


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


CODES = ("99214", "83036", "36415")
CHARGES = (Decimal("150.00"), Decimal("60.00"), Decimal("40.00"))
ALLOWED = (Decimal("90.00"), Decimal("36.00"), Decimal("24.00"))
SERVICE_DATE = date(2026, 3, 2)


def _decision(claim_id: str, rng: random.Random) -> ClaimDecision:
    """How the bench payer adjudicated one three-line claim."""
    billed = tuple(
        ClaimLine(n, "HC", code, (), charge, Decimal(1), SERVICE_DATE, None)
        for n, (code, charge) in enumerate(zip(CODES, CHARGES, strict=True), start=1)
    )
    claim = Claim837(
        claim_id=claim_id,
        charge=sum(CHARGES, Decimal(0)),
        place_of_service="11",
        frequency="1",
        filing_indicator="MB",
        member_id=f"MBI{claim_id}",
        patient_last_name="DOE",
        patient_first_name="JANE",
        lines=billed,
    )
    denied = rng.random() < 0.05
    lines: list[LineDecision] = []
    for n, (line, allow) in enumerate(zip(billed, ALLOWED, strict=True)):
        if denied:
            lines.append(_refused(line, "16", "MA130"))
            continue
        if n > 0 and rng.random() < 0.1:
            lines.append(_refused(line, "97", "M15"))
            continue
        coinsurance = (allow * Decimal("0.20")).quantize(CENT)
        sequestration = ((allow - coinsurance) * Decimal("0.02")).quantize(CENT)
        adjustments = (
            CasAdjustment("CO", "45", line.charge - allow),
            CasAdjustment("CO", "253", sequestration),
            CasAdjustment("PR", "2", coinsurance),
        )
        lines.append(LineDecision(line, allow, allow - coinsurance - sequestration, adjustments))
    return ClaimDecision(
        claim=claim,
        status_code="4" if denied else "1",
        charge=claim.charge,
        paid=sum((line.paid for line in lines), Decimal(0)),
        patient_responsibility=sum(
            (a.amount for line in lines for a in line.adjustments if a.group == "PR"), Decimal(0)
        ),
        payer_claim_control_number=f"ICN{claim_id}",
        service_start=SERVICE_DATE,
        service_end=SERVICE_DATE,
        lines=tuple(lines),
    )


def _refused(line: ClaimLine, carc: str, rarc: str) -> LineDecision:
    """A line paid nothing: the whole charge a contractual adjustment, with its remark."""
    return LineDecision(
        line, Decimal(0), Decimal(0), (CasAdjustment("CO", carc, line.charge),), (rarc,)
    )


def make_835(claim_ids: list[str], number: int, rng: random.Random) -> str:
    """One balanced 835 interchange paying ``claim_ids`` (the payer simulator's writer)."""
    return render_835(
        [_decision(claim_id, rng) for claim_id in claim_ids],
        payer_id=PAYER,
        payer_name="BENCH PAYER",
        payee_npi=NPI,
        payee_name="BENCH CLINIC",
        trace_number=f"BENCH{number:08d}",
        paid_date=date(2026, 3, 9),
        control_number=number + 1,
    )


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
