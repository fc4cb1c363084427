"""837s built per second in one process, and validated per second with pyx12.

The validated encounters are generated here (deterministic): office visits with one to
four lines and one to four diagnoses across three payers, some patients dependents, and one
in ten a hospital stay (837I, with PCS procedures and a DRG). Measured on the same records,
best of BENCH_REPEAT runs (default 3):

- baseline: Avro decode of the same validated records (what the runner does before the
  domain is called, with fastavro);
- build: plan + one 837 per payer and claim type, at most 25 claims each (as the service
  batches), + the claims.submitted.v1 event of every claim;
- build_single: one claim per interchange (``build_claim``, the offline command's path);
- stage: the claims service's stage (no broker) on batches of 500: SQLite control numbers on
  disk (one durable commit per interchange), the simulator adapter, every output Avro-encoded;
- validate: pyx12 over each batched interchange (maps parsed once per process), and over
  single-claim interchanges; ``validate_uncached`` is pyx12 as it comes (maps parsed for
  every document), on a few claims only, to show what the map cache buys.

Environment: BENCH_CLAIMS (default 2000), BENCH_VALIDATE_SINGLE (default 200),
BENCH_VALIDATE_UNCACHED (default 5).
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.models import (
    Address,
    CodedDiagnosis,
    CodedEncounter,
    CodedProcedure,
    Coverage,
    Drg,
    Encounter,
    Facility,
    Patient,
    Provider,
    ServiceLine,
    Subscriber,
    ValidatedEncounter,
    event_id,
)
from pipeline.serde import registry
from pipeline.stage import Incoming
from services.claims.adapters import AdapterContext, Router
from services.claims.app import ClaimsStage
from services.claims.domain import (
    PlannedClaim,
    build_claim,
    plan_claim,
    submitted_claim,
    write_interchange,
)
from services.claims.settings import ClaimsOptions, ClaimsSettings
from services.x12.validate import validate_x12
from sim.adapter import SimulatorAdapter

WHEN = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
VISIT = date(2026, 3, 2)
PER_INTERCHANGE = 25
CPT = [("99213", "125.00"), ("36415", "15.50"), ("85025", "32.25"), ("93000", "60.00")]
CPT += [("80053", "88.10"), ("99214", "180.00"), ("G0444", "24.00"), ("83036", "38.00")]
DX = ["E119", "I10", "J069", "E785", "R059", "Z0000", "K219", "M545"]
PAYERS = [
    ("00510", "Blue Cross and Blue Shield of Alabama", "BL"),
    ("87726", "UnitedHealthcare", "CI"),
    ("MEDICARE_B_AL", "Medicare Part B", "MB"),
]


def npi(base9: str) -> str:
    """A valid NPI: nine digits and the Luhn check digit over '80840' + them."""
    total = 0
    for i, ch in enumerate(reversed("80840" + base9)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return base9 + str((10 - total % 10) % 10)


def _address(line1: str, postal: str) -> Address:
    return Address(line1=line1, city="Birmingham", state="AL", postal_code=postal)


GROUP = Provider(
    npi=npi("184752039"),
    name="Magic City Family Medicine PC",
    tax_id="631234567",
    taxonomy="207Q00000X",
    address=_address("1600 7th Ave S", "352332105"),
)
DOCTOR = Provider(npi=npi("166301928"), name="Okafor, Adaeze", entity="person")
HOSPITAL = Facility(
    name="Princeton Baptist Medical Center",
    npi=npi("150862437"),
    address=_address("701 Princeton Ave SW", "352112303"),
)


def encounter(n: int, rng: random.Random) -> ValidatedEncounter:
    """One clean verdict: an office visit, or (one in ten) an inpatient stay."""
    eid = f"BENCH-{n:06d}"
    payer_id, payer_name, plan = PAYERS[n % len(PAYERS)]
    dependent = plan != "MB" and rng.random() < 0.2
    coverage = Coverage(
        payer_id=payer_id,
        payer_name=payer_name,
        plan_type=plan,
        member_id=f"M{n:09d}",
        group_number="G100" if plan != "MB" else None,
        relationship="19" if dependent else "18",
        subscriber=Subscriber(last_name="Rivera", first_name="Ana") if dependent else None,
    )
    patient = Patient(
        patient_id=f"P{n}",
        last_name="Rivera",
        first_name=rng.choice(["Luis", "Maria", "Sam", "Noor"]),
        birth_date=date(1950 + n % 60, 1 + n % 12, 1 + n % 28),
        sex=rng.choice(["F", "M"]),
        address=_address(f"{100 + n % 900} Cahaba Rd", "35213"),
    )
    inpatient = n % 10 == 9
    start = VISIT - timedelta(days=3) if inpatient else VISIT
    dx = rng.sample(DX, 1 + rng.randrange(4))
    codes: list[tuple[str, str, str | None, float]]
    if inpatient:
        codes = [("", "7200.00", "0120", 3.0), ("", "5200.00", "0360", 1.0)]
        codes.append(("85025", "45.00", "0300", 1.0))
    else:
        codes = [(c, ch, None, 1.0) for c, ch in rng.sample(CPT, 1 + rng.randrange(4))]
    enc = Encounter(
        event_id=event_id(eid, "intake", "bench"),
        encounter_id=eid,
        source_id=f"src-{eid}",
        source_format="json",
        received_at=WHEN,
        setting="inpatient" if inpatient else "professional",
        service_start=start,
        service_end=VISIT,
        place_of_service="21" if inpatient else "11",
        admission_date=start if inpatient else None,
        admission_type="1" if inpatient else None,
        admission_source="7" if inpatient else None,
        discharge_status="01" if inpatient else None,
        patient=patient,
        coverage=coverage,
        billing_provider=GROUP,
        rendering_provider=DOCTOR,
        attending_provider=DOCTOR if inpatient else None,
        operating_provider=DOCTOR if inpatient else None,  # 0DTJ4ZZ is surgical
        facility=HOSPITAL if inpatient else None,
        diagnoses=[],
        services=[],
    )
    coded = CodedEncounter(
        event_id=event_id(eid, "coding", "bench"),
        encounter_id=eid,
        encounter=enc,
        diagnoses=[
            CodedDiagnosis(
                code=c, sequence=i + 1, source="ehr", confidence=1.0, billable=True, poa="Y"
            )
            for i, c in enumerate(dx)
        ],
        pcs_procedures=[CodedProcedure(code="0DTJ4ZZ", date=start, source="ehr", confidence=1)]
        if inpatient
        else [],
        lines=[
            ServiceLine(
                line_number=i + 1,
                code=code,
                code_system="HCPCS" if code[:1].isalpha() or not code else "CPT",
                units=units,
                charge=Decimal(charge),
                dx_pointers=list(range(1, min(len(dx), 4) + 1)),
                service_date=VISIT,
                revenue_code=revenue,
            )
            for i, (code, charge, revenue, units) in enumerate(codes)
        ],
        drg=Drg(code="343", weight=1.0284) if inpatient else None,
        code_set_version="FY2026",
        confidence=1.0,
        coded_at=WHEN,
    )
    return ValidatedEncounter(
        event_id=event_id(eid, "validation", "bench"),
        encounter_id=eid,
        outcome="clean",
        edits=[],
        rule_pack_version="bench",
        coded=coded,
        validated_at=WHEN,
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
    count = int(os.environ.get("BENCH_CLAIMS", "2000"))
    runs = int(os.environ.get("BENCH_REPEAT", "3"))
    single_n = int(os.environ.get("BENCH_VALIDATE_SINGLE", "200"))
    uncached_n = int(os.environ.get("BENCH_VALIDATE_UNCACHED", "5"))
    rng = random.Random(837)
    verdicts = [encounter(n, rng) for n in range(count)]
    reg = registry()
    raw = [reg.encode("encounters.validated.v1", v) for v in verdicts]

    def decode_all() -> None:
        for data in raw:
            reg.decode("encounters.validated.v1", data)

    interchanges: list[str] = []

    def build_batched() -> None:
        interchanges.clear()
        groups: dict[tuple[str, str], list[PlannedClaim]] = defaultdict(list)
        for verdict in verdicts:
            one = plan_claim(verdict)
            groups[(one.payer_id, one.claim_type)].append(one)
        number = 0
        for planned in groups.values():
            for i in range(0, len(planned), PER_INTERCHANGE):
                chunk = planned[i : i + PER_INTERCHANGE]
                number += 1
                x12 = write_interchange(
                    chunk, sender_id="CLAIMFLOW", receiver_id="CH01", control_number=number
                )
                interchanges.append(x12)
                for p in chunk:
                    submitted_claim(p, number, x12)

    singles: list[str] = []

    def build_singles() -> None:
        singles.clear()
        for verdict in verdicts:
            singles.append(build_claim(verdict, sender_id="CLAIMFLOW", receiver_id="CH01").x12)

    stage_times: list[float] = []
    stage_outputs: dict[str, int] = {}

    def stage_all() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            settings = ClaimsSettings(
                state_dir=Path(tmp), claims=ClaimsOptions(routes={"*": "simulator"})
            )
            simulator = SimulatorAdapter(AdapterContext("simulator"))
            stage = ClaimsStage(
                settings, None, Router({"*": "simulator"}, {"simulator": simulator})
            )
            msgs = [
                Incoming("encounters.validated.v1", v.encounter_id, v, b"", {}, 0, n, 0)
                for n, v in enumerate(verdicts)
            ]
            stage_outputs.clear()
            started = time.perf_counter()
            for i in range(0, len(msgs), 500):
                for out in stage.handle_batch(msgs[i : i + 500]):
                    reg.encode(out.topic, out.value)
                    stage_outputs[out.topic] = stage_outputs.get(out.topic, 0) + 1
                stage.on_batch_done()
            stage_times.append(time.perf_counter() - started)
            stage.close()

    baseline_s = best(runs, decode_all)
    build_s = best(runs, build_batched)
    single_s = best(runs, build_singles)
    for _ in range(runs):
        stage_all()
    stage_s = min(stage_times)

    validate_x12(interchanges[0])  # load pyx12's maps once, outside the timing
    errors = 0

    def validate_batched() -> None:
        nonlocal errors
        errors = sum(len(validate_x12(x)) for x in interchanges)

    validate_s = best(1, validate_batched)
    sample = singles[:single_n]
    validate_single_s = best(1, lambda: [validate_x12(x) for x in sample])
    uncached = singles[:uncached_n]
    uncached_s = best(1, lambda: [validate_x12(x, cache_maps=False) for x in uncached])
    institutional = sum(1 for v in verdicts if v.coded.encounter.setting != "professional")
    return {
        "claims": count,
        "institutional_claims": institutional,
        "interchanges": len(interchanges),
        "baseline_avro_decode_per_s": round(count / baseline_s),
        "build_claims_per_s": round(count / build_s),
        "build_single_claims_per_s": round(count / single_s),
        "stage_claims_per_s": round(count / stage_s),
        "validate_claims_per_s": round(count / validate_s, 1),
        "validate_single_claims_per_s": round(len(sample) / validate_single_s, 1),
        "validate_uncached_claims_per_s": round(len(uncached) / uncached_s, 2),
        "pyx12_errors": errors,
        "build_vs_baseline": round(baseline_s / build_s, 3),
        "build_single_vs_baseline": round(baseline_s / single_s, 3),
        "stage_vs_baseline": round(baseline_s / stage_s, 3),
        "validate_vs_baseline": round(baseline_s / validate_s, 4),
        "stage_outputs": stage_outputs,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(main()))
