"""The records the offline chain writes: the simulator's encounters carried through intake,
coding, validation, claims, the payer simulator and remittance in one process, by topic.
A corpus of real records of the main contracts, for the contract tests and for the
benchmarks of what a record costs to encode and decode (``bench_serde.py``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime

from pipeline.models import CodedEncounter, Encounter, Model, PayerFile, ValidatedEncounter
from pipeline.serde import registry
from pipeline.settings import Settings
from pipeline.stage import Incoming, Out

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
REFERENCE = date(2026, 11, 20)


def _incoming(topic: str, key: str, value: Model) -> Incoming:
    return Incoming(topic, key, value, registry().encode(topic, value), {}, 0, 0, 0)


def validated(
    n: int, seed: int, mix: str = "office"
) -> Iterator[tuple[Encounter, CodedEncounter, ValidatedEncounter]]:
    """Each of ``n`` simulated encounters (the pipeline benchmark's mix of formats; ``mix``
    office, or all with ED visits and stays) through intake, coding and validation."""
    from services.claims.settings import ClaimsSettings
    from services.coding.domain import Coder
    from services.intake.domain import parse_raw
    from services.refdata.codesets import CodeSets
    from services.refdata.masterdata import load_master_data
    from services.validation.rules import validate
    from sim.ehr import generate

    master = load_master_data(ClaimsSettings())
    coder = Coder.load(None)
    codesets = CodeSets.load(None)
    sent = generate(n, seed=seed, fmt="mix", reference_date=REFERENCE, mix=mix)  # type: ignore[arg-type]
    for source_id, ctype, body in sent:
        parsed = parse_raw(
            body,
            ctype,
            source_id=source_id,
            received_at=NOW,
            directory=master.providers,
            chargemaster=master.chargemaster,
        )
        for enc in parsed.encounters:
            coded = coder.code(enc, coded_at=NOW)
            yield enc, coded, validate(coded, codesets, validated_at=NOW, payers=master.payers)
    coder.close()


def offline_chain(n: int = 40, seed: int = 11) -> dict[str, list[Model]]:
    """Every record the offline chain writes for ``n`` simulated encounters (the pipeline
    benchmark's mix of formats), by topic; each 835 also split by claim and payer as the
    live remittance service does."""
    from services.claims.domain import build_claims
    from services.claims.settings import ClaimsSettings
    from services.refdata.masterdata import load_master_data
    from services.remittance.app import RemittanceStage, load_codes
    from services.remittance.ledger import Ledger
    from services.remittance.split import split_file
    from sim.payer_app import PayerSimOptions, PayerSimStage

    settings = ClaimsSettings()
    master = load_master_data(settings)
    out: dict[str, list[Model]] = defaultdict(list)
    for enc, coded, verdict in validated(n, seed):
        out["encounters.collected.v1"].append(enc)
        out["encounters.coded.v1"].append(coded)
        out["encounters.validated.v1"].append(verdict)
        if verdict.outcome == "rejected":
            continue
        out["claims.submitted.v1"] += build_claims(
            verdict,
            sender_id=settings.claims.sender_id,
            receiver_id=settings.claims.receiver_id,
            master=master,
        )
    claims = out["claims.submitted.v1"]
    payer = PayerSimStage(PayerSimOptions(validate_every=1_000_000))
    sent = [_incoming("claims.submitted.v1", c.claim_id, c) for c in claims]
    files = list(payer.handle_batch(sent))
    remittance = RemittanceStage(Ledger(":memory:"), codes=load_codes(Settings()))
    for claim in claims:
        list(remittance.handle(_incoming("claims.submitted.v1", claim.claim_id, claim)))
    for file in files:
        assert isinstance(file.value, PayerFile)
        outs: list[Out] = list(remittance.handle(_incoming(file.topic, file.key, file.value)))
        for o in outs:
            out[o.topic].append(o.value)
        if file.value.kind == "835":
            for o in split_file(file.value, (0, 0)).outputs():
                out[o.topic].append(o.value)
    return dict(out)
