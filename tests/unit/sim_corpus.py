"""The simulators' output through the real stages, in one process, as corpora for the
differential tests of the stages' hot paths.

Both EHR mixes (office visits; office, ED visits and inpatient stays), parsed by intake,
coded, validated with the public reference data where it is present, billed by the claims
stage's writer (one interchange per claim, and batched as the claims stage sends them)
and paid by the payer simulator (its default policy: denials, refused lines,
partial payments, crossovers). Built once per test session: each step is deterministic.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from datetime import UTC, date, datetime

from shared_data import SHARED_DATA

from pipeline.errors import InputError
from pipeline.models import CodedEncounter, Encounter, SubmittedClaim, ValidatedEncounter
from services.claims.billing import ClaimWriter
from services.claims.domain import (
    PlannedClaim,
    claim_id_for,
    claim_parts,
    plan_claim,
    write_interchange,
)
from services.coding.domain import Coder
from services.intake.domain import parse_raw
from services.refdata.codesets import CodeSets
from services.validation.duplicates import DuplicateStore
from services.validation.rules import validate
from sim.ehr import generate
from sim.payer import adjudicate

RECEIVED_AT = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)
VALIDATED_AT = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
REFERENCE = date(2026, 3, 1)
CMS = SHARED_DATA / "cms"
MIXES = ("office", "all")


def refdata() -> object:
    return CMS if CMS.is_dir() else None


@functools.cache
def coder() -> Coder:
    return Coder.load(refdata())  # type: ignore[arg-type]


@functools.cache
def codesets() -> CodeSets:
    return CodeSets.load(refdata())  # type: ignore[arg-type]


@functools.cache
def encounters(mix: str, n: int = 150) -> tuple[Encounter, ...]:
    """n simulated visits of the mix, parsed by intake (JSON and FHIR, half each)."""
    out: list[Encounter] = []
    for source_id, ctype, body in generate(
        n,
        seed=21,
        fmt="mix",
        reference_date=REFERENCE,
        mix=mix,  # type: ignore[arg-type]
    ):
        out += parse_raw(body, ctype, source_id=source_id, received_at=RECEIVED_AT).encounters
    return tuple(out)


@functools.cache
def coded(mix: str) -> tuple[CodedEncounter, ...]:
    out = []
    for enc in encounters(mix):
        try:
            out.append(coder().code(enc, coded_at=RECEIVED_AT))
        except InputError:
            continue
    return tuple(out)


@functools.cache
def validated(mix: str) -> tuple[ValidatedEncounter, ...]:
    store = DuplicateStore(":memory:")
    out = []
    for c in coded(mix):
        verdict = validate(c, codesets(), validated_at=VALIDATED_AT, history=store)
        store.record(c, verdict.outcome)
        out.append(verdict)
    return tuple(out)


@functools.cache
def submitted(mix: str) -> tuple[SubmittedClaim, ...]:
    writer = ClaimWriter("CLAIMFLOW", "PAYERSIM")
    out: list[SubmittedClaim] = []
    for verdict in validated(mix):
        if verdict.outcome == "fail":
            continue
        try:
            out += writer.build(verdict)
        except InputError:
            continue
    return tuple(out)


@functools.cache
def payer_835s(mix: str, per_file: int = 25) -> tuple[str, ...]:
    """The payer simulator's 835s for the mix's claims, per payer, per_file claims a file."""
    by_payer: dict[str, list[SubmittedClaim]] = defaultdict(list)
    for claim in submitted(mix):
        by_payer[claim.payer_id].append(claim)
    out = []
    for payer_id, claims in sorted(by_payer.items()):
        for n in range(0, len(claims), per_file):
            out.append(
                adjudicate(
                    claims[n : n + per_file],
                    payer_id=payer_id,
                    payer_name="PAYER SIMULATOR",
                    payee_npi="1234567893",
                    payee_name="CLAIMFLOW CLINIC",
                    trace_number=f"EFT{payer_id[:6]}{n:05d}",
                    paid_date=date(2026, 3, 20),
                )
            )
    return tuple(out)


@functools.cache
def planned_groups(mix: str) -> tuple[tuple[tuple[str, str], list[PlannedClaim]], ...]:
    """The mix's planned claims by payer and claim type, as the claims stage groups them."""
    writer = ClaimWriter("CLAIMFLOW", "PAYERSIM")
    groups: dict[tuple[str, str], list[PlannedClaim]] = defaultdict(list)
    for verdict in validated(mix):
        if verdict.outcome == "fail":
            continue
        for key, part in claim_parts(verdict):
            try:
                planned = plan_claim(part, claim_id=claim_id_for(key), master=writer.master)
            except InputError:
                continue
            groups[(planned.payer_id, planned.claim_type)].append(planned)
    return tuple(sorted(groups.items()))


@functools.cache
def interchanges(mix: str, per_interchange: int = 25) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The mix's claims as the claims stage batches them: 837 interchanges of up to
    ``per_interchange`` claims of one payer and claim type, each with its claim ids."""
    writer = ClaimWriter("CLAIMFLOW", "PAYERSIM")
    out = []
    for number, (_, planned) in enumerate(planned_groups(mix), start=1):
        for n in range(0, len(planned), per_interchange):
            batch = planned[n : n + per_interchange]
            x12 = write_interchange(
                batch,
                sender_id=writer.sender_id,
                receiver_id=writer.receiver_id,
                control_number=number * 1000 + n,
            )
            out.append((x12, tuple(p.claim.claim_id for p in batch)))
    return tuple(out)
