"""The payer simulator: answers the 837s on claims.submitted.v1 with 999, 277CA and 835 files
on payer.inbound.v1.

It stands in for the payers' side of the clearinghouse so the pipeline runs end to end.
Each claim event names the interchange that delivered it (``interchange_control_number``),
which is stored once on claims.interchanges.v1 (a claim check; claim events written before
it carry the text themselves). The simulator reads both topics into its state store (they
are partitioned apart, so either may come first) and answers an interchange once it and
every claim it lists are in, the way a payer's front end answers a file:

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
import json
import logging
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from pipeline.errors import InputError
from pipeline.models import Interchange, PayerFile, SubmittedClaim, event_id, utcnow
from pipeline.settings import Settings
from pipeline.stage import Incoming, Out, Stage, run_stage
from pipeline.state import BatchStore
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


_KEEP_INTERCHANGES = 4096  # their claims come within seconds; older ones are dropped
_KEEP_WAITING = 8192  # waiting claims also kept as objects (see ``InterchangeStore.wait``)


class InterchangeStore(BatchStore):
    """The interchanges read from claims.interchanges.v1, and the claims of each read so far:
    an interchange is answered once all the claims it lists are in, as a payer answers a file."""

    def __init__(self, path: Path | str = ":memory:") -> None:
        super().__init__(
            path,
            """
            CREATE TABLE IF NOT EXISTS interchanges (
                icn TEXT PRIMARY KEY, x12 TEXT NOT NULL, claim_ids TEXT NOT NULL,
                answered INTEGER NOT NULL DEFAULT 0, seq INTEGER NOT NULL
            );
            CREATE TABLE IF NOT EXISTS waiting (
                event_id TEXT PRIMARY KEY, icn TEXT NOT NULL, claim TEXT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS waiting_by_icn ON waiting (icn);
            -- MAX(seq) and the pruning below on every interchange: without it each scanned
            -- every row kept, 837 text included (30 ms each once 4,096 are kept)
            CREATE INDEX IF NOT EXISTS interchanges_by_seq ON interchanges (seq);
            """,
        )
        #: event id -> (the JSON stored for a waiting claim, the claim it was written from)
        self._kept: OrderedDict[str, tuple[str, SubmittedClaim]] = OrderedDict()

    def put(self, interchange: Interchange) -> None:
        with self.atomic():
            self.db.execute(
                "INSERT OR IGNORE INTO interchanges (icn, x12, claim_ids, seq) VALUES (?, ?, ?,"
                " (SELECT COALESCE(MAX(seq), 0) + 1 FROM interchanges))",
                (
                    interchange.interchange_control_number,
                    interchange.x12,
                    json.dumps(interchange.claim_ids),
                ),
            )
            self.db.execute(
                "DELETE FROM interchanges WHERE seq <= (SELECT MAX(seq) FROM interchanges) - ?",
                (_KEEP_INTERCHANGES,),
            )

    def answered(self, icn: str) -> str | None:
        """The text of interchange ``icn`` once answered (a claim event read again), else None."""
        row = self.db.execute(
            "SELECT x12 FROM interchanges WHERE icn = ? AND answered = 1", (icn,)
        ).fetchone()
        return row[0] if row else None

    def wait(self, claim: SubmittedClaim) -> None:
        """Keep a claim until its interchange is complete. The claim is stored as JSON (for a
        restart) and kept as the object too, under the exact text stored: reading the claim
        back takes the object when the row still holds that text (most claims wait a batch
        or two), else reads the text, as after a restart."""
        text = claim.model_dump_json()
        with self.atomic():
            self.db.execute(
                "INSERT OR IGNORE INTO waiting (event_id, icn, claim) VALUES (?, ?, ?)",
                (claim.event_id, claim.interchange_control_number, text),
            )
        kept = self._kept
        if claim.event_id not in kept:  # the row keeps the first one's text (OR IGNORE)
            kept[claim.event_id] = (text, claim)
            if len(kept) > _KEEP_WAITING:
                kept.popitem(last=False)

    def _read_waiting(self, event: str, text: str) -> SubmittedClaim:
        """A waiting claim from its stored text: the object it was written from when kept."""
        kept = self._kept.pop(event, None)
        if kept is not None and kept[0] == text:
            return kept[1]
        return SubmittedClaim.model_validate_json(text)

    def take_complete(self, icn: str) -> list[SubmittedClaim]:
        """The claims of interchange ``icn`` with its text, once it and every claim it lists
        are in (then it is marked answered); else nothing, and they keep waiting."""
        row = self.db.execute(
            "SELECT x12, claim_ids FROM interchanges WHERE icn = ? AND answered = 0", (icn,)
        ).fetchone()
        if row is None:
            return []
        x12, listed = row[0], set(json.loads(row[1]))
        rows = self.db.execute(
            "SELECT event_id, claim FROM waiting WHERE icn = ? ORDER BY event_id", (icn,)
        ).fetchall()
        claims = [self._read_waiting(event, text) for event, text in rows]
        if not listed <= {c.claim_id for c in claims}:
            for claim, (_, text) in zip(claims, rows, strict=True):  # they wait on
                self._kept[claim.event_id] = (text, claim)
            return []
        with self.atomic():
            self.db.execute("DELETE FROM waiting WHERE icn = ?", (icn,))
            self.db.execute("UPDATE interchanges SET answered = 1 WHERE icn = ?", (icn,))
        return [c.model_copy(update={"x12": x12}) for c in claims]

    def waiting(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM waiting").fetchone()[0])


class PayerSimStage(Stage):
    name = "payer-sim"
    inputs = ("claims.interchanges.v1", "claims.submitted.v1")
    batch_mode = True
    dead_letters = False

    def __init__(
        self, options: PayerSimOptions | None = None, store: InterchangeStore | None = None
    ) -> None:
        self.options = options or PayerSimOptions()
        self.policy = self.options.policy()
        self.store = store or InterchangeStore()
        self._acks: OrderedDict[tuple[str, str], Acknowledgment] = OrderedDict()

    def on_batch_done(self) -> None:
        self.store.commit()

    def close(self) -> None:
        self.store.close()

    def _ours(self, adapter: str | None) -> bool:
        """Delivered by an adapter the simulator answers for (no header: answered too)."""
        return adapter is None or adapter in self.options.answer_adapters

    def _claims_to_answer(self, msgs: list[Incoming]) -> list[SubmittedClaim]:
        """The claims to answer now, each with its interchange's text: those that carry it
        (written before the claim check), and those of each interchange that is complete."""
        ready: list[SubmittedClaim] = []
        touched: dict[str, None] = {}
        for msg in msgs:
            if msg.topic == "claims.interchanges.v1":
                if self._ours(msg.value.adapter):
                    self.store.put(msg.value)
                    touched[msg.value.interchange_control_number] = None
                continue
            header = msg.headers.get(ADAPTER_HEADER)
            if not self._ours(header.decode() if header is not None else None):
                continue  # a real payer's claim: not ours to answer
            claim: SubmittedClaim = msg.value
            icn = claim.interchange_control_number
            again = None if claim.x12 is not None else self.store.answered(icn)
            if claim.x12 is not None or again is not None:
                ready.append(claim if again is None else claim.model_copy(update={"x12": again}))
                continue
            self.store.wait(claim)
            touched[icn] = None
        for icn in touched:
            ready += self.store.take_complete(icn)
        return ready

    def handle_batch(self, msgs: list[Incoming]) -> Iterable[Out]:
        interchanges: dict[tuple[str, str], dict[str, SubmittedClaim]] = defaultdict(dict)
        for claim in self._claims_to_answer(msgs):
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
        x12 = claims[0].x12 or ""
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
    store = InterchangeStore(sim_settings.state_dir / "payer-sim-interchanges.sqlite3")
    run_stage(PayerSimStage(sim_settings.payer_sim, store), sim_settings)
