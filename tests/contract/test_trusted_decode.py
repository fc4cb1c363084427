"""Trusted decode: a record a stage wrote is built without validating it again, and the model
it gives equals the validated one, for every contract; records from the edges are validated.

The records are the simulator's encounters carried through the whole offline chain (intake,
coding, validation, claims, the payer simulator, remittance) and every golden record.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest
from pydantic import ValidationError

from pipeline.models import CoderDecision, Model, PayerFile
from pipeline.serde import MAGIC, model_builder, registry
from pipeline.settings import Settings
from pipeline.stage import Incoming, Out

REG = registry()
GOLDEN = Path(__file__).parent / "golden"
NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
REFERENCE = date(2026, 11, 20)


def _incoming(topic: str, key: str, value: Model) -> Incoming:
    return Incoming(topic, key, value, REG.encode(topic, value), {}, 0, 0, 0)


@pytest.fixture(scope="module")
def chain() -> dict[str, list[Model]]:
    """Every record the offline chain writes for 40 simulated encounters, by topic."""
    from services.claims.domain import build_claims
    from services.claims.settings import ClaimsSettings
    from services.coding.domain import Coder
    from services.intake.domain import parse_raw
    from services.refdata.codesets import CodeSets
    from services.refdata.masterdata import load_master_data
    from services.remittance.app import RemittanceStage, load_codes
    from services.remittance.ledger import Ledger
    from services.validation.rules import validate
    from sim.ehr import generate
    from sim.payer_app import PayerSimOptions, PayerSimStage

    settings = ClaimsSettings()
    master = load_master_data(settings)
    coder = Coder.load(None)
    codesets = CodeSets.load(None)
    out: dict[str, list[Model]] = defaultdict(list)
    for source_id, ctype, body in generate(40, seed=11, fmt="mix", reference_date=REFERENCE):
        parsed = parse_raw(
            body,
            ctype,
            source_id=source_id,
            received_at=NOW,
            directory=master.providers,
            chargemaster=master.chargemaster,
        )
        for enc in parsed.encounters:
            out["encounters.collected.v1"].append(enc)
            coded = coder.code(enc, coded_at=NOW)
            out["encounters.coded.v1"].append(coded)
            verdict = validate(coded, codesets, validated_at=NOW, payers=master.payers)
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
    coder.close()
    return dict(out)


def test_the_chain_writes_every_record_of_the_main_contracts(
    chain: dict[str, list[Model]],
) -> None:
    for topic in (
        "encounters.collected.v1",
        "encounters.coded.v1",
        "encounters.validated.v1",
        "claims.submitted.v1",
        "remittance.posted.v1",
        "remittance.denials.v1",
    ):
        assert chain.get(topic), topic


def _both_ways(topic: str, value: Model) -> None:
    data = REG.encode(topic, value)
    validated = REG.decode(topic, data, validate=True)
    trusted = REG.decode(topic, data, validate=False)
    assert type(trusted) is type(validated)
    assert trusted == validated
    # Equal down to the types: an int where the validated model has a float would compare
    # equal but print differently.
    assert trusted.model_dump_json() == validated.model_dump_json()
    assert trusted.model_dump() == validated.model_dump()
    assert trusted == value


def test_trusted_and_validated_decode_agree_on_every_record_of_the_chain(
    chain: dict[str, list[Model]],
) -> None:
    for topic, values in chain.items():
        for value in values:
            _both_ways(topic, value)


@pytest.mark.parametrize("topic", sorted(REG.topics))
def test_trusted_and_validated_decode_agree_on_every_golden_record(topic: str) -> None:
    source = REG.topics[topic].schema_of or topic  # a repartition topic: its source's record
    name = "dead-letter" if source.startswith("dlq.") else source
    golden: dict[str, Any] = json.loads((GOLDEN / f"{name}.json").read_text())
    _both_ways(topic, REG.topics[topic].model.model_validate(golden))


def test_a_record_read_with_an_older_schema_builds_the_same_model() -> None:
    # Fields the older writer did not have take the reader's defaults on both paths.
    topic = "encounters.collected.v1"
    old = REG.versions[topic][0]
    golden = REG.topics[topic].model.model_validate(
        json.loads((GOLDEN / f"{topic}.json").read_text())
    )
    datum = REG.decode_dict(topic, REG.encode(topic, golden))
    buf = io.BytesIO()
    buf.write(MAGIC + old.fingerprint)
    fastavro.schemaless_writer(buf, old.parsed, datum)
    data = buf.getvalue()
    assert REG.decode(topic, data, validate=False) == REG.decode(topic, data, validate=True)


def test_only_records_a_stage_wrote_are_trusted() -> None:
    trusted = {t for t, spec in REG.topics.items() if spec.trusted}
    assert {"encounters.collected.v1", "encounters.validated.v1", "remittance.posted.v1"} <= trusted
    for edge in ("intake.raw.v1", "coding.decisions.v1", "coding.audit-results.v1"):
        assert edge not in trusted
    assert {"payer.inbound.v1", "workqueue.actions.v1"}.isdisjoint(trusted)
    stages = {"intake", "coding", "validation", "claims", "remittance"}
    assert {REG.topics[t].producer for t in trusted} == stages


def test_a_record_from_an_edge_is_still_validated() -> None:
    # Avro allows an empty coder id; the model does not, and a coder's decision is an edge.
    decision = CoderDecision.model_construct(
        event_id="e1",
        encounter_id="enc-1",
        coder_id="",
        action="confirm",
        diagnoses=[],
        pcs_procedures=[],
        note=None,
        decided_at=NOW,
    )
    data = REG.encode("coding.decisions.v1", decision)
    with pytest.raises(ValidationError, match="coder_id"):
        REG.decode("coding.decisions.v1", data)


def test_every_model_of_a_topic_has_a_trusted_build() -> None:
    for spec in REG.topics.values():
        assert callable(model_builder(spec.model))


def test_a_datum_without_a_defaulted_field_takes_the_default_on_both_paths() -> None:
    topic = "encounters.collected.v1"
    model = REG.topics[topic].model
    datum = model.model_validate(json.loads((GOLDEN / f"{topic}.json").read_text())).model_dump()
    del datum["notes"], datum["note_text"]
    assert model_builder(model)(datum) == model.model_validate(datum)
