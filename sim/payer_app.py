"""The payer simulator: answers the 837s on claims.submitted.v1 with 999, 277CA and 835 files
on payer.inbound.v1.

It stands in for the payers' side of the clearinghouse so the pipeline runs end to end.
Every claim event carries the interchange that delivered it; claims of one interchange are
answered together, per interchange, the way a payer's front end does:

1. a 999 from pyx12's validation of the 837 (rejected: its claims go no further); a load
   test can check one interchange in N (``CLAIMFLOW_PAYER_SIM__VALIDATE_EVERY``);
2. a 277CA accepting each claim into adjudication, or rejecting a configurable share with
   real claim status codes (``CLAIMFLOW_PAYER_SIM__FRONT_END_REJECTION_RATE``, default 2%);
3. an 835 per payer and payee for the accepted claims of the batch.

Only claims the claims service routed to the simulator are answered (the
``claimflow-adapter`` header names the adapter; events without it are answered too).
Everything is deterministic: a replayed batch answers with the same files.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict, defaultdict
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

from pipeline.errors import InputError
from pipeline.models import PayerFile, SubmittedClaim, event_id, utcnow
from pipeline.settings import Settings
from pipeline.stage import Incoming, Out, Stage, run_stage
from services.x12.reader import read_segments
from sim.payer import (
    DEFAULT_CLAIM_DENIALS,
    DEFAULT_FRONT_END_REJECTIONS,
    Acknowledgment,
    AdjudicationPolicy,
    Claim837,
    Denial,
    FrontEndDecision,
    FrontEndRejection,
    acknowledge_999,
    adjudicate,
    front_end_rejection,
    read_837_claim,
    render_277ca,
)

log = logging.getLogger(__name__)

ADAPTER_HEADER = "claimflow-adapter"  # set by the claims service on every claim event
_ACK_CACHE = 512  # interchanges whose 999 is remembered (their claims may span batches)


class DenialOption(BaseModel):
    """A claim denial in the mix: CARC, claim RARC (MOA), line RARC (LQ), relative weight."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    carc: str
    claim_rarc: str | None = None
    line_rarc: str | None = None
    weight: float = Field(default=1.0, gt=0)


class RejectionOption(BaseModel):
    """A 277CA rejection in the mix: STC category, status code, entity, relative weight."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    category: str = Field(pattern=r"^A[3-8]$")
    status: str
    entity: str = ""
    weight: float = Field(default=1.0, gt=0)


class PayerSimOptions(BaseModel):
    """How the simulated payer behaves (``CLAIMFLOW_PAYER_SIM__…``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    claim_denial_rate: float = Field(default=0.05, ge=0, le=1)
    line_denial_rate: float = Field(default=0.06, ge=0, le=1)
    claim_denials: list[DenialOption] = Field(
        default_factory=lambda: [
            DenialOption(carc=d.carc, claim_rarc=d.claim_rarc, line_rarc=d.line_rarc)
            for d in DEFAULT_CLAIM_DENIALS
        ]
    )
    front_end_rejection_rate: float = Field(default=0.02, ge=0, le=1)
    front_end_rejections: list[RejectionOption] = Field(
        default_factory=lambda: [
            RejectionOption(category=r.category, status=r.status, entity=r.entity, weight=r.weight)
            for r in DEFAULT_FRONT_END_REJECTIONS
        ]
    )
    validate_every: int = Field(
        default=1,
        ge=1,
        description="check 1 in N interchanges with pyx12 before the 999; the rest are "
        "accepted unchecked (load tests: pyx12 costs more per claim than the pipeline)",
    )
    answer_adapters: list[str] = Field(
        default_factory=lambda: ["simulator"],
        description="claims delivered by these adapters are answered; others are a real payer's",
    )

    def policy(self) -> AdjudicationPolicy:
        """The adjudication policy these options describe."""
        return AdjudicationPolicy(
            claim_denial_rate=self.claim_denial_rate,
            line_denial_rate=self.line_denial_rate,
            claim_denials=tuple(
                Denial(d.carc, d.claim_rarc, d.line_rarc, d.weight) for d in self.claim_denials
            ),
            front_end_rejection_rate=self.front_end_rejection_rate,
            front_end_rejections=tuple(
                FrontEndRejection(r.category, r.status, r.entity, r.weight)
                for r in self.front_end_rejections
            ),
        )


class PayerSimSettings(Settings):
    """The shared settings plus ``payer_sim``."""

    payer_sim: PayerSimOptions = PayerSimOptions()


def billing_provider(x12: str) -> tuple[str, str]:
    """NPI and name of the first billing provider (loop 2010AA, NM1*85) of an 837."""
    for seg in read_segments(x12):
        if seg.id == "NM1" and seg.el(1) == "85":
            return seg.el(9), seg.el(3)
    raise InputError("x12.NM1*85", "the 837 has no billing provider")


def _file(payer_id: str, file_id: str, kind: str, text: str) -> Out:
    file = PayerFile(
        event_id=event_id(payer_id, file_id, kind),
        payer_id=payer_id,
        file_id=file_id,
        kind=kind,  # type: ignore[arg-type]
        body=text.encode("ascii"),
        received_at=utcnow(),
    )
    return Out("payer.inbound.v1", f"{payer_id}:{file_id}", file)


class PayerSimStage(Stage):
    name = "payer-sim"
    inputs = ("claims.submitted.v1",)
    batch_mode = True
    dead_letters = False

    def __init__(self, options: PayerSimOptions | None = None) -> None:
        self.options = options or PayerSimOptions()
        self.policy = self.options.policy()
        self._acks: OrderedDict[tuple[str, str], Acknowledgment] = OrderedDict()

    def handle_batch(self, msgs: list[Incoming]) -> Iterable[Out]:
        interchanges: dict[tuple[str, str], dict[str, SubmittedClaim]] = defaultdict(dict)
        for msg in msgs:
            adapter = msg.headers.get(ADAPTER_HEADER)
            if adapter is not None and adapter.decode() not in self.options.answer_adapters:
                continue  # a real payer's claim: not ours to answer
            claim: SubmittedClaim = msg.value
            interchanges[(claim.payer_id, claim.interchange_control_number)][claim.event_id] = claim
        outs: list[Out] = []
        accepted: list[tuple[SubmittedClaim, Claim837]] = []
        for (payer_id, icn), by_event in interchanges.items():
            claims = [by_event[k] for k in sorted(by_event)]
            try:
                outs += self._front_end(payer_id, icn, claims, accepted)
            except InputError:
                log.exception("payer simulator cannot read an interchange", extra={"icn": icn})
        payees: dict[tuple[str, str, str], dict[str, SubmittedClaim]] = defaultdict(dict)
        for claim, parsed in accepted:
            key = (claim.payer_id, parsed.billing_npi or "", parsed.billing_name or "")
            payees[key][claim.event_id] = claim
        for (payer_id, npi, name), by_event in payees.items():
            outs += self._answer(payer_id, npi, name, [by_event[k] for k in sorted(by_event)])
        return outs

    def _front_end(
        self,
        payer_id: str,
        icn: str,
        claims: list[SubmittedClaim],
        accepted: list[tuple[SubmittedClaim, Claim837]],
    ) -> list[Out]:
        """The 999 and 277CA for the claims of one interchange; accepted claims go on."""
        x12 = claims[0].x12
        created = max(c.submitted_at for c in claims)
        ack = self._acks.get((payer_id, icn))
        if ack is None:
            validate = not icn.isdigit() or int(icn) % self.options.validate_every == 0
            ack = acknowledge_999(x12, payer_id=payer_id, created=created, validate=validate)
            self._acks[(payer_id, icn)] = ack
            while len(self._acks) > _ACK_CACHE:
                self._acks.popitem(last=False)
        outs = [_file(payer_id, f"999.{icn}", "999", ack.text)]
        if not ack.accepted:
            log.info("999 rejects an interchange", extra={"icn": icn, "errors": ack.errors[:3]})
            return outs
        decisions = []
        for claim in claims:
            try:
                parsed = read_837_claim(x12, claim.claim_id)
            except InputError:
                log.exception("payer simulator cannot read a claim", extra={"icn": icn})
                continue
            rejection = front_end_rejection(payer_id, claim.event_id, self.policy)
            decisions.append(FrontEndDecision(claim, parsed, rejection))
        if not decisions:
            return outs
        text = render_277ca(
            x12, decisions, payer_id=payer_id, payer_name=claims[0].payer_name, created=created
        )
        ids = "\x1f".join(d.claim.event_id for d in decisions)
        digest = hashlib.sha256(ids.encode()).hexdigest()[:8]
        outs.append(_file(payer_id, f"277CA.{icn}.{digest}", "277CA", text))
        accepted += [(d.claim, d.parsed) for d in decisions if d.accepted]
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
                policy=self.policy,
            )
        except InputError:
            if len(claims) == 1:
                log.exception("payer simulator rejected a claim")
                return []
            return [out for c in claims for out in self._answer(payer_id, npi, name, [c])]
        return [_file(payer_id, trace, "835", text)]


def main(settings: Settings | None = None) -> None:
    sim_settings = PayerSimSettings.from_base(settings or Settings())
    run_stage(PayerSimStage(sim_settings.payer_sim), sim_settings)
