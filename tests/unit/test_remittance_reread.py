"""Remittance reads back the claim payments and payments it split (``Stage.reread``): the
runner hands it the record it wrote instead of decoding the bytes again, when the bytes are
exactly those this process wrote. That is the same input only if the record decoded from
those bytes is the record written, down to how every value prints: here on every record of
``remittance.claim-payments.v1`` (CLP loops, and PLB adjustments applied to claims) and
``remittance.payer-payments.v1`` the 835 fixtures, the public sample 835 and the payer
simulator's 835s for both EHR mixes give, and by what remittance then publishes from the
written or the decoded records, byte for byte.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import sim_corpus
from shared_data import SHARED_DATA
from test_remittance_split import CLAIMS, Partitioned, payer_files

from pipeline.models import Model, PayerFile, event_id
from pipeline.serde import registry
from services.remittance.app import RemittanceStage
from services.remittance.ledger import Ledger
from services.remittance.split import CLAIM_PAYMENTS, PAYER_PAYMENTS

REG = registry()
INTERNAL = (CLAIM_PAYMENTS, PAYER_PAYMENTS)
_NOW_FIELDS = {"posted_at", "queued_at", "detected_at", "settled_at"}
AT = datetime(2026, 3, 25, tzinfo=UTC)


def files() -> list[PayerFile]:
    out = payer_files()
    bodies = [t.encode() for mix in sim_corpus.MIXES for t in sim_corpus.payer_835s(mix)]
    sample = SHARED_DATA / "x12" / "835_mult_loops.txt"
    if sample.is_file():
        bodies.append(sample.read_bytes())
    for n, body in enumerate(bodies):
        out.append(PayerFile(event_id=event_id("sim", str(n)), payer_id="SIM", file_id=f"S{n}",
                             kind="835", body=body, received_at=AT))  # fmt: skip
    return out


class Decoding(Partitioned):
    """The live layout, the internal records going through their Avro bytes (decoded, as
    any instance that did not write them reads them), each one kept as written."""

    def __init__(self, folder: Path, seed: int) -> None:
        super().__init__(folder, seed)
        self.written: list[tuple[str, Model]] = []

    def send(self, topic: str, key: str, value: Model) -> None:
        if topic in INTERNAL:
            self.written.append((topic, value))
            value = REG.decode(topic, REG.encode(topic, value))
        super().send(topic, key, value)


def run(run: Partitioned) -> Partitioned:
    for claim in CLAIMS:
        run.send("claims.submitted.v1", claim.claim_id, claim)
    for file in files():
        run.send("payer.inbound.v1", f"{file.payer_id}:{file.file_id}", file)
    run.drain()
    run.sweep()
    return run


def published(run: Partitioned) -> list[tuple[str, str, bytes]]:
    out = []
    for o in run.outputs:
        now = {k: AT for k in _NOW_FIELDS if hasattr(o.value, k)}  # the clock's, not the input's
        value = o.value.model_copy(update=now)
        out.append((o.topic, o.key, REG.encode(o.topic, value)))
    return sorted(out)


def test_a_record_read_back_is_the_record_written(tmp_path: Path) -> None:
    written = run(Decoding(tmp_path, seed=5)).written
    kinds = {(topic, getattr(value, "kind", None)) for topic, value in written}
    assert kinds == {(CLAIM_PAYMENTS, "payment"), (CLAIM_PAYMENTS, "plb"), (PAYER_PAYMENTS, None)}
    assert len(written) > 300
    for topic, value in written:
        raw = REG.encode(topic, value)
        decoded = REG.decode(topic, raw)
        assert decoded == value
        assert repr(decoded) == repr(value)  # value types too (a Decimal's exponent, tz)
        assert decoded.model_dump_json() == value.model_dump_json()
        assert REG.encode(topic, decoded) == raw


def test_remittance_publishes_the_same_from_the_records_written_or_decoded(
    tmp_path: Path,
) -> None:
    kept = run(Partitioned(tmp_path / "kept", seed=5))
    decoded = run(Decoding(tmp_path / "decoded", seed=5))
    assert published(kept) == published(decoded)
    assert {o.topic for o in kept.outputs} >= {"remittance.posted.v1", "remittance.denials.v1"}


def test_only_the_partitioned_stage_reads_back() -> None:
    assert RemittanceStage(Ledger(":memory:")).reread == ()  # one process: no internal hop
