"""The payer simulator: answers claims.submitted.v1 with 835s on payer.inbound.v1.

It stands in for the payers' side of the clearinghouse so the pipeline can be run end to
end: one 835 per payer and payee for each batch of claims it reads.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Iterable

from pipeline.errors import InputError
from pipeline.models import PayerFile, SubmittedClaim, event_id, utcnow
from pipeline.settings import Settings
from pipeline.stage import Incoming, Out, Stage, run_stage
from services.remittance.era import read_segments
from services.remittance.payer_sim import adjudicate

log = logging.getLogger(__name__)


def billing_provider(x12: str) -> tuple[str, str]:
    """NPI and name of the billing provider (loop 2010AA, NM1*85) of an 837."""
    for seg in read_segments(x12):
        if seg.id == "NM1" and seg.el(1) == "85":
            return seg.el(9), seg.el(3)
    raise InputError("x12.NM1*85", "the 837 has no billing provider")


class PayerSimStage(Stage):
    name = "payer-sim"
    inputs = ("claims.submitted.v1",)
    batch_mode = True
    dead_letters = False

    def handle_batch(self, msgs: list[Incoming]) -> Iterable[Out]:
        groups: dict[tuple[str, str, str], dict[str, SubmittedClaim]] = defaultdict(dict)
        for msg in msgs:
            claim: SubmittedClaim = msg.value
            try:
                npi, name = billing_provider(claim.x12)
            except InputError:
                log.exception("payer simulator cannot read a claim", extra={"offset": msg.offset})
                continue
            groups[(claim.payer_id, npi, name)][claim.claim_id] = claim
        outs = []
        for (payer_id, npi, name), by_id in groups.items():
            claims = [by_id[k] for k in sorted(by_id)]
            outs += self._answer(payer_id, npi, name, claims)
        return outs

    def _answer(
        self, payer_id: str, npi: str, name: str, claims: list[SubmittedClaim]
    ) -> list[Out]:
        digest = hashlib.sha256("\x1f".join(c.claim_id for c in claims).encode()).hexdigest()
        trace = f"{int(digest[:12], 16) % 10**12:012d}"
        try:
            text = adjudicate(
                claims,
                payer_id=payer_id,
                payer_name=claims[0].payer_name,
                payee_npi=npi,
                payee_name=name,
                trace_number=trace,
                paid_date=max(c.submitted_at.date() for c in claims),
            )
        except InputError:
            if len(claims) == 1:
                log.exception("payer simulator rejected a claim")
                return []
            return [out for c in claims for out in self._answer(payer_id, npi, name, [c])]
        file = PayerFile(
            event_id=event_id(payer_id, trace, "835"),
            payer_id=payer_id,
            file_id=trace,
            kind="835",
            body=text.encode("ascii"),
            received_at=utcnow(),
        )
        return [Out("payer.inbound.v1", f"{payer_id}:{trace}", file)]


def main(settings: Settings | None = None) -> None:
    run_stage(PayerSimStage(), settings or Settings())
