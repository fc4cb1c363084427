"""The key headers producers set for the re-key hops (``pipeline/stage.py``, ``PassThrough``):
a record forwarded by its header gets the key the consuming stage would have computed from
the decoded record, byte for byte, on every record of the offline chain.

Topic keys are part of the contract: the expected keys are computed here the way the
re-key hops computed them before the headers existed.
"""

from __future__ import annotations

import hashlib

from pipeline.models import ClaimSettled, CodedEncounter, Model, RemittancePosting
from pipeline.stage import ENCOUNTER_HEADER, PATIENT_KEY_HEADER
from services.claims.app import BY_ENCOUNTER, POSTED, SETTLED, SETTLED_BY_ENCOUNTER, ClaimsStage
from services.coding.app import _outs as coding_outs
from services.remittance.app import _out as remittance_out
from services.validation.app import CODED, ValidationStage
from services.validation.duplicates import patient_key


def _member_hash(coded: CodedEncounter) -> str:
    cov = coded.encounter.coverage
    return hashlib.sha256(f"{cov.payer_id}\x1f{cov.member_id}".encode()).hexdigest()[:32]


def test_coding_names_the_patient_key_validation_computes(
    chain: dict[str, list[Model]],
) -> None:
    coded = chain["encounters.coded.v1"]
    assert len({c.encounter.coverage.member_id for c in coded}) > 10  # many members
    for value in coded:
        assert isinstance(value, CodedEncounter)
        (out,) = coding_outs([(CODED, value.encounter_id, value)])
        assert out.key == value.encounter_id  # the topic's own key is unchanged
        header = out.headers[PATIENT_KEY_HEADER]
        assert header == patient_key(value).encode() == _member_hash(value).encode()


def test_coding_sets_the_header_on_coded_encounters_only(
    chain: dict[str, list[Model]],
) -> None:
    value = chain["encounters.coded.v1"][0]
    for topic in ("coding.by-patient.v1", "coding.review.v1", "coding.audits.v1"):
        (out,) = coding_outs([(topic, "k", value)])
        assert out.headers == {}


def test_remittance_names_the_encounter_of_each_posting_and_settlement(
    chain: dict[str, list[Model]],
) -> None:
    seen = 0
    for topic, model in (("remittance.posted.v1", RemittancePosting), (SETTLED, ClaimSettled)):
        for value in chain.get(topic, []):
            assert isinstance(value, model)
            out = remittance_out(topic, value.claim_id, value)
            assert out.key == value.claim_id
            assert value.encounter_id
            assert out.headers == {ENCOUNTER_HEADER: value.encounter_id.encode()}
            seen += 1
            # Without an encounter: no header, so the claims stage handles it as before.
            bare = value.model_copy(update={"encounter_id": None})
            assert remittance_out(topic, value.claim_id, bare).headers == {}
    assert seen >= len(chain["remittance.posted.v1"]) > 0


def test_remittance_sets_the_header_on_postings_and_settlements_only(
    chain: dict[str, list[Model]],
) -> None:
    denial = chain["remittance.denials.v1"][0]
    assert getattr(denial, "encounter_id", None)
    assert remittance_out("remittance.denials.v1", "k", denial).headers == {}


def test_the_stages_declare_their_re_key_hops() -> None:
    claims = {(r.source, r.target, r.header) for r in ClaimsStage.pass_through}
    assert claims == {
        (POSTED, BY_ENCOUNTER, ENCOUNTER_HEADER),
        (SETTLED, SETTLED_BY_ENCOUNTER, ENCOUNTER_HEADER),
    }
    # Validation forwards only when it re-keys at all (a partitioned history).
    assert ValidationStage.pass_through == ()
