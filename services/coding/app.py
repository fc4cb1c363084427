"""coding: encounters.collected.v1, coding.decisions.v1 -> encounters.coded.v1 + coding.review.

Held encounters, decisions and audits are keyed by encounter id, like the inputs. The
HCCs need every encounter of the member's year: the live service sends each coded
encounter on to ``coding.by-patient.v1`` keyed by patient, and completes its HCCs there,
with one risk-history store per partition of that topic that moves with the partition
(``pipeline/partitioned.py``). A stage built without that store (tests) publishes
directly, with the review store's own history.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import Counter, Gauge
from pydantic import ConfigDict, Field

from pipeline import metrics
from pipeline.models import (
    AuditResult,
    ClaimSettled,
    CodedEncounter,
    CoderDecision,
    Encounter,
    Model,
    utcnow,
)
from pipeline.partitioned import PartitionedStores
from pipeline.serde import registry
from pipeline.settings import Settings
from pipeline.settled import RetentionOptions, RetentionSweep
from pipeline.stage import (
    PATIENT_KEY_HEADER,
    Embed,
    Incoming,
    Out,
    Stage,
    make_out,
    run_stage,
)
from services.coding.audit import (
    AUDIT_MIN,
    AUDIT_SHARE,
    AUDIT_THRESHOLD,
    AUDIT_WINDOW,
    AuditPolicy,
    AuditStore,
)
from services.coding.domain import REVIEW_THRESHOLD, Coder
from services.coding.review import BY_PATIENT, CODED, Output, ReviewFlow, ReviewStore, member_key
from services.coding.risk_history import RiskHistory

log = logging.getLogger(__name__)

HELD = Gauge("claimflow_coding_held_encounters", "Encounters waiting for a coder's decision")
DECISIONS = Counter(
    "claimflow_coding_decisions_total", "Coder decisions applied, by action", ["action"]
)
AUDITS = Counter(
    "claimflow_coding_audits_total",
    "Coding audit records: queued, and audited by outcome (agree / corrected)",
    ["status"],
)
#: AUDITS' child per status, looked up once: ``labels()`` takes the metric's lock and
#: builds its key on every call (py-spy: 2.1% of coding's CPU, once per output record).
_AUDITS_BY_STATUS: dict[str, Counter] = {}
ACCURACY = Gauge(
    "claimflow_coding_audit_accuracy",
    "Share of audited codes the coder agreed with, over each category's recent audits",
    ["category"],
)
ACCURACY_BY_SOURCE = Gauge(
    "claimflow_coding_audit_accuracy_by_source",
    "Share of audited codes the coder agreed with, by how the code was assigned",
    ["source"],
)
WINDOW_CODES = Gauge(
    "claimflow_coding_audit_window_codes",
    "Scored codes in this instance's accuracy window of each category, by outcome (agree / "
    "corrected); summed over instances, the accuracy of every instance's audits",
    ["category", "outcome"],
)
WINDOW_CODES_BY_SOURCE = Gauge(
    "claimflow_coding_audit_window_codes_by_source",
    "Scored codes in this instance's accuracy window of each source, by outcome (agree / "
    "corrected); summed over instances, the accuracy of every instance's audits",
    ["source", "outcome"],
)
FAILING = Gauge(
    "claimflow_coding_failing_categories",
    "ICD-10-CM categories held for a coder because their audited accuracy is below threshold",
)
AUDIT_QUEUE = Gauge("claimflow_coding_audit_queue", "Encounters waiting for a coder's audit")


class CodingOptions(RetentionOptions):
    """``CLAIMFLOW_CODING__…``: how sure coding must be before it codes without a coder;
    how long an audited encounter is kept once its claims are settled
    (``SETTLED_RETENTION_DAYS`` 365, ``..._BY_PAYER``, ``RETENTION_SWEEP_S``)."""

    model_config = ConfigDict(frozen=True)

    review_threshold: float = Field(
        default=REVIEW_THRESHOLD,
        ge=0,
        le=1,
        description="Codes assigned from words below this confidence go to coder review.",
    )
    audit_share: float = Field(
        default=AUDIT_SHARE,
        ge=0,
        le=1,
        description="Share of automatically coded encounters sent to the audit queue.",
    )
    audit_threshold: float = Field(
        default=AUDIT_THRESHOLD,
        ge=0,
        le=1,
        description="Below this audited accuracy a code category is held for a coder.",
    )
    audit_min: int = Field(
        default=AUDIT_MIN, ge=1, description="Audited codes a category needs before it can fail."
    )
    audit_window: int = Field(
        default=AUDIT_WINDOW, ge=1, description="A category's accuracy counts its last N codes."
    )

    def audit_policy(self) -> AuditPolicy:
        return AuditPolicy(
            self.audit_share, self.audit_threshold, self.audit_min, self.audit_window
        )


class CodingSettings(Settings):
    """The shared settings plus the coding options."""

    coding: CodingOptions = CodingOptions()


class CodingStage(Stage):
    name = "coding"
    inputs: tuple[str, ...] = (
        "encounters.collected.v1",
        "coding.decisions.v1",
        "coding.audit-results.v1",
        "remittance.settled.v1",
    )
    # The collected encounter goes on unchanged in what coding writes: its bytes are reused.
    embeds = (
        Embed(BY_PATIENT, ("encounter",)),
        Embed(CODED, ("encounter",)),
        Embed("coding.review.v1", ("coded", "encounter")),
    )

    def __init__(
        self,
        coder: Coder,
        store: ReviewStore,
        audits: AuditStore | None = None,
        risk: PartitionedStores[RiskHistory] | None = None,
        *,
        retention_sweep_s: float = 3600.0,
    ) -> None:
        # Without an audit store (tests of the review alone): nothing is sampled.
        self.audits = audits or AuditStore(":memory:", AuditPolicy(share=0))
        # Retention: an audited encounter is pruned once its claims are settled and past
        # their window (remittance.settled.v1; pipeline/settled.py).
        self.retention = RetentionSweep(
            self.audits.prune_settled, self.audits.checkpoint, every_s=retention_sweep_s
        )
        self.flow = ReviewFlow(coder, store, self.audits, by_patient=risk is not None)
        self.store = store
        self.risk = risk
        if risk is not None:
            self.inputs = (*CodingStage.inputs, BY_PATIENT)
            self.reread = (BY_PATIENT,)  # its own records, re-keyed: not decoded again
        self._gauges()

    def partitioned_stores(self) -> list[PartitionedStores[RiskHistory]]:
        return [self.risk] if self.risk is not None else []

    def handle(self, msg: Incoming) -> Iterable[Out]:
        value = msg.value
        # The two inputs of every encounter first: a pydantic model's isinstance is quick
        # when true and ~0.16 us when false (ABCMeta), and an encounter went through four
        # false ones before.
        if isinstance(value, Encounter):
            # The savepoints around its writes only: most encounters write nothing here.
            outs = self.flow.encounter(value, now=utcnow(), atomic=self._atomic)
        elif isinstance(value, CodedEncounter):  # coding.by-patient.v1: the member's HCCs
            assert self.risk is not None
            history = self.risk.get(msg.partition)
            return _outs(self.flow.risk(value, history, atomic=history.atomic), read=msg)
        elif isinstance(value, ClaimSettled):
            with self.audits.atomic():
                self.audits.settle(value)
            self._prune()
            return []
        elif isinstance(value, CoderDecision):
            with self._atomic():
                outs = self.flow.decision(value)
                if outs:
                    DECISIONS.labels(value.action).inc()
        else:
            assert isinstance(value, AuditResult)
            with self._atomic():
                outs = self.flow.audit_result(value)
        for topic, _, out in outs:
            if topic == "coding.audits.v1":
                status = getattr(out, "status", "queued")
                child = _AUDITS_BY_STATUS.get(status)
                if child is None:
                    child = _AUDITS_BY_STATUS[status] = AUDITS.labels(status)
                child.inc()
        return _outs(outs)

    @contextmanager
    def _atomic(self) -> Iterator[None]:
        """One input's writes to the review and audit stores, or none of them."""
        with self.store.atomic(), self.audits.atomic():
            yield

    def on_idle(self) -> Iterable[Out]:
        if self._prune():
            self.on_batch_done()  # between batches: nothing else is in the transaction
        return []

    def _prune(self) -> int:
        """Prune the audited encounters past their window, when a sweep is due."""
        pruned = self.retention.sweep()
        if pruned:
            metrics.OUTCOMES.labels(self.name, "retention_pruned").inc(pruned)
        return pruned

    def on_batch_done(self) -> None:
        self.store.commit()
        self.audits.commit()
        self.retention.committed()
        self._gauges()

    def _gauges(self) -> None:
        HELD.set(self.store.held_count())
        AUDIT_QUEUE.set(self.audits.queued_count())
        export_accuracy(self.audits)
        FAILING.set(len(self.audits.failing()))

    def close(self) -> None:
        self.store.close()
        self.audits.close()
        self.flow.coder.close()


def _outs(outs: Iterable[Output], read: Incoming | None = None) -> list[Out]:
    """The flow's outputs; a coded encounter with its patient key in a header, so that
    validation re-keys it by patient without decoding it (``pipeline/stage.py``). A coded
    encounter that is the by-patient record ``read``, unchanged (no other encounter of the
    member's year changed its HCCs), goes on as the bytes read (``_forwarded``)."""
    return [
        _out(
            topic,
            key,
            value,
            {PATIENT_KEY_HEADER: _patient_key(value)},
            _forwarded(value, read),
        )
        if topic == CODED
        else _out(topic, key, value, {}, None)
        for topic, key, value in outs
    ]


#: Coding makes two outputs a record: built as the runner builds the records it forwards
#: (``make_out``: the frozen dataclass's fields filled in, 0.26-0.29 us instead of 0.77-0.80;
#: tests/unit/test_coding_outs.py holds it to ``Out(...)``).
_out = make_out


def _forwarded(value: Model, read: Incoming | None) -> bytes | None:
    """The bytes of the by-patient record ``read`` when ``value`` is the very model read
    from them, which coding.by-patient.v1 shares with encounters.coded.v1: passed on as
    they are when the newest schema wrote them (``Registry.unchanged``, which checks them
    against the encoder in the test suite). None otherwise: the record is encoded."""
    if read is None or read.value is not value or read.topic != BY_PATIENT:
        return None
    return registry().unchanged(CODED, read.raw, value)


def _patient_key(coded: Model) -> bytes:
    assert isinstance(coded, CodedEncounter)
    return member_key(coded.encounter).encode()


def export_accuracy(audits: AuditStore) -> None:
    """This instance's audit accuracy as metrics. Each instance scores the audits of its own
    partitions, so its rate covers its share only; the counts of its window (agreed and
    corrected codes) are what sums across instances (``deploy/prometheus/rules.yml``)."""
    for column, rate, counts in (
        ("category", ACCURACY, WINDOW_CODES),
        ("source", ACCURACY_BY_SOURCE, WINDOW_CODES_BY_SOURCE),
    ):
        for a in audits.accuracy(column):
            rate.labels(a.key).set(a.rate)
            counts.labels(a.key, "agree").set(a.agreed)
            counts.labels(a.key, "corrected").set(a.audited - a.agreed)


def partitioned_risk(state_dir: Path) -> PartitionedStores[RiskHistory]:
    """The live service's risk history: one store per partition of the by-patient topic,
    under ``<state_dir>/risk-history/``."""
    return PartitionedStores(
        RiskHistory.NAME,
        BY_PATIENT,
        Path(state_dir) / RiskHistory.NAME,
        lambda path: RiskHistory(path, changelog=True),
    )


def main(settings: Settings | None = None) -> None:
    config = CodingSettings.from_base(settings)
    coder = Coder.load(config.refdata_dir, threshold=config.coding.review_threshold)
    coder.index  # noqa: B018 - build the text index now, not on the first SNOMED diagnosis
    log.info("code sets", extra={"capabilities": coder.capabilities()})
    store = ReviewStore(config.state_dir / "coding-review.sqlite3")
    audits = AuditStore(
        config.state_dir / "coding-audit.sqlite3",
        config.coding.audit_policy(),
        config.coding.retention_policy(),
    )
    stage = CodingStage(
        coder,
        store,
        audits,
        partitioned_risk(config.state_dir),
        retention_sweep_s=config.coding.retention_sweep_s,
    )
    run_stage(stage, config)
