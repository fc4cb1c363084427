"""Reading back a record a stage wrote (``Stage.reread``): the runner hands the stage the model
it wrote instead of decoding the bytes again. That is the same input only if the model
decoded from those bytes is the model written, down to how every value prints; here on
every coded encounter of the offline chain as coding writes it to coding.by-patient.v1, and
by the risk step's output over both (the records coding then publishes), byte for byte.
"""

from __future__ import annotations

from bench.chain import NOW
from pipeline.models import CodedEncounter, Model
from pipeline.serde import registry
from services.coding.app import CodingStage
from services.coding.domain import Coder
from services.coding.review import BY_PATIENT, ReviewFlow, ReviewStore, without_note
from services.coding.risk_history import RiskHistory

REG = registry()


def test_a_coded_encounter_read_back_is_the_one_written(chain: dict[str, list[Model]]) -> None:
    for coded in chain["encounters.coded.v1"]:
        assert isinstance(coded, CodedEncounter)
        written = without_note(coded)
        raw = REG.encode(BY_PATIENT, written)
        decoded = REG.decode(BY_PATIENT, raw)
        assert decoded == written
        assert decoded.model_dump_json() == written.model_dump_json()
        assert repr(decoded) == repr(written)  # value types too (a Decimal's exponent, tz)
        assert REG.encode(BY_PATIENT, decoded) == raw


def test_the_risk_step_publishes_the_same_bytes_from_the_model_written_or_decoded(
    chain: dict[str, list[Model]],
) -> None:
    coder = Coder.load(None)
    try:
        store_a, store_b = ReviewStore(":memory:"), ReviewStore(":memory:")
        flow_a = ReviewFlow(coder, store_a, by_patient=True)
        flow_b = ReviewFlow(coder, store_b, by_patient=True)
        history_a, history_b = RiskHistory(":memory:"), RiskHistory(":memory:")
        for enc in chain["encounters.collected.v1"]:
            written = without_note(coder.code(enc, coded_at=NOW))
            decoded = REG.decode(BY_PATIENT, REG.encode(BY_PATIENT, written))
            ((topic, key, a),) = flow_a.risk(written, history_a)
            ((_, key_b, b),) = flow_b.risk(decoded, history_b)
            assert key == key_b
            assert REG.encode(topic, a) == REG.encode(topic, b)
    finally:
        coder.close()


def test_coding_reads_back_only_its_by_patient_topic() -> None:
    assert CodingStage.reread == ()  # one process, no by-patient hop: nothing read back
