"""Held-out check of code assignment from problem-list text: right, held for a coder, wrong.

``bench/coding_eval.jsonl`` holds condition text written the way clinicians write problem lists
(abbreviations, word order, combinations, history / family / status mentions, uncertain
diagnoses in both settings, laterality), each case with the codes a certified coder would
assign by the ICD-10-CM Official Guidelines (FY2026), or "hold" when nothing can be coded
with certainty. It was written before the guideline rules and is not used to tune them.

Each case is one encounter whose diagnoses are text-only, coded by ``Coder.code`` exactly as
the service codes it. Scored per case:
- right: not held, and the set of codes equals the expected set (or held when "hold" is
  expected);
- held: the encounter went to a coder (review reasons) when codes were expected;
- wrong: not held, and the codes differ from the expected ones.
Reported: counts and shares, and the wrong cases with what was coded.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.models import (
    Address,
    Coverage,
    DocumentedDiagnosis,
    DocumentedService,
    Encounter,
    Facility,
    Patient,
    Provider,
)
from services.coding.domain import Coder
from services.refdata.codesets import CodeSets

CASES = Path(__file__).with_name("coding_eval.jsonl")
DAY = date(2026, 3, 10)  # FY2026
WHEN = datetime(2026, 3, 10, 17, 0, tzinfo=UTC)


def _encounter(case: dict[str, Any]) -> Encounter:
    inpatient = case["setting"] == "inpatient"
    address = Address(line1="1 Main St", city="Birmingham", state="AL", postal_code="352331234")
    return Encounter(
        event_id=f"eval-{case['id']}",
        encounter_id=f"EVAL-{case['id']}",
        source_id=f"eval-{case['id']}",
        source_format="json",
        received_at=WHEN,
        setting=case["setting"],
        service_start=DAY,
        service_end=date(2026, 3, 13) if inpatient else DAY,
        place_of_service="21" if inpatient else "11",
        patient=Patient(
            patient_id="EVAL1",
            last_name="Case",
            first_name="Eval",
            birth_date=date(1956, 5, 1),
            sex="F",
            address=address,
        ),
        coverage=Coverage(
            payer_id="00510", payer_name="Medicare", member_id="1EG4TE5MK73", plan_type="MB"
        ),
        billing_provider=Provider(
            npi="1847520396", name="Eval Clinic", tax_id="631234567", address=address
        ),
        rendering_provider=Provider(npi="1663019283", name="Eval Doctor"),
        facility=Facility(npi="1508624370", name="Eval Hospital", address=address),
        diagnoses=[
            DocumentedDiagnosis(code="", system="text", display=text, primary=(i == 0))
            for i, text in enumerate(case["problems"])
        ],
        services=[
            DocumentedService(
                code="99223" if inpatient else "99213", system="cpt", charge=Decimal("150.00")
            )
        ],
        discharge_status="01" if inpatient else None,
        admission_date=DAY if inpatient else None,
    )


def evaluate(coder: Coder, cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Score every case: right / held / wrong, with the wrong ones listed."""
    right = held = wrong = 0
    wrongs: list[dict[str, Any]] = []
    for case in cases:
        coded = coder.code(_encounter(case), coded_at=WHEN)
        codes = sorted({d.code for d in coded.diagnoses if d.billable})
        expect = case["expect"]
        if coded.review_reasons:
            if expect == "hold":
                right += 1
            else:
                held += 1
            continue
        want = "hold" if expect == "hold" else sorted(c.replace(".", "") for c in expect)
        if codes == want:
            right += 1
        else:
            wrong += 1
            wrongs.append({"id": case["id"], "coded": codes, "expected": want})
    n = len(cases)
    return {
        "cases": n,
        "right": right,
        "held": held,
        "wrong": wrong,
        "right_share": round(right / n, 3),
        "held_share": round(held / n, 3),
        "wrong_share": round(wrong / n, 3),
        "wrong_cases": wrongs,
    }


def main() -> dict[str, Any]:
    cases = [json.loads(line) for line in CASES.read_text().splitlines() if line.strip()]
    coder = Coder(CodeSets.load(None))
    try:
        return evaluate(coder, cases)
    finally:
        coder.close()
