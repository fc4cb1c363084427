"""remittance: 835s (payer.inbound.v1) matched to claims (claims.submitted.v1), posted."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pipeline import metrics
from pipeline.errors import InputError
from pipeline.models import PayerFile, SubmittedClaim, utcnow
from pipeline.settings import Settings
from pipeline.stage import Incoming, Out, Stage, run_stage
from services.remittance.era import parse_835_transactions
from services.remittance.ledger import Ledger
from services.remittance.posting import post

log = logging.getLogger(__name__)


class RemittanceStage(Stage):
    name = "remittance"
    inputs = ("claims.submitted.v1", "payer.inbound.v1")

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def handle(self, msg: Incoming) -> Iterable[Out]:
        with self.ledger.atomic():
            if msg.topic == "claims.submitted.v1":
                return self._claim(msg.value)
            return self._payer_file(msg.value)

    def _claim(self, claim: SubmittedClaim) -> list[Out]:
        self.ledger.add_claim(claim)
        outs: list[Out] = []
        for record in self.ledger.take_pending(claim.claim_id):
            outs += self._payer_file(PayerFile.model_validate_json(record), only=claim.claim_id)
        return outs

    def _payer_file(self, file: PayerFile, only: str | None = None) -> list[Out]:
        if file.kind != "835":
            metrics.OUTCOMES.labels(self.name, f"ignored_{file.kind}").inc()
            return []
        try:
            text = file.body.decode("ascii")
        except UnicodeDecodeError as exc:
            raise InputError("body", f"an X12 file is ASCII; byte {exc.start} is not") from exc
        outs = []
        for remittance in parse_835_transactions(text):
            for payment in remittance.claims:
                claim_id = payment.patient_control_number
                if only is not None and claim_id != only:
                    continue
                claim = self.ledger.claim(claim_id)
                if claim is None:  # the 835 overtook its claim: post when the claim arrives
                    self.ledger.add_pending(claim_id, file.file_id, file.model_dump_json())
                    continue
                posting = post(
                    payment,
                    claim,
                    payer_id=file.payer_id,
                    file_id=file.file_id,
                    payment_trace=remittance.trace_number,
                    payment_date=remittance.payment_date,
                    posted_at=utcnow(),
                )
                if self.ledger.mark_posted(posting.event_id, claim_id):
                    metrics.OUTCOMES.labels(self.name, posting.status).inc()
                    outs.append(Out("remittance.posted.v1", claim_id, posting))
        return outs

    def on_batch_done(self) -> None:
        self.ledger.commit()

    def close(self) -> None:
        self.ledger.close()


def main(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    ledger = Ledger(settings.state_dir / "remittance-ledger.sqlite3")
    run_stage(RemittanceStage(ledger), settings)
