"""coding: encounters.collected.v1, coding.decisions.v1 -> encounters.coded.v1 + coding.review."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from prometheus_client import Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field

from pipeline.models import CoderDecision, Encounter, utcnow
from pipeline.settings import Settings
from pipeline.stage import Incoming, Out, Stage, run_stage
from services.coding.domain import REVIEW_THRESHOLD, Coder
from services.coding.review import ReviewFlow, ReviewStore

log = logging.getLogger(__name__)

HELD = Gauge("claimflow_coding_held_encounters", "Encounters waiting for a coder's decision")
DECISIONS = Counter(
    "claimflow_coding_decisions_total", "Coder decisions applied, by action", ["action"]
)


class CodingOptions(BaseModel):
    """``CLAIMFLOW_CODING__…``: how sure coding must be before it codes without a coder."""

    model_config = ConfigDict(frozen=True)

    review_threshold: float = Field(
        default=REVIEW_THRESHOLD,
        ge=0,
        le=1,
        description="Codes assigned from words below this confidence go to coder review.",
    )


class CodingSettings(Settings):
    """The shared settings plus the coding options."""

    coding: CodingOptions = CodingOptions()


def coding_settings(settings: Settings | None) -> CodingSettings:
    """The coding settings: the given shared ones plus CLAIMFLOW_CODING__… options."""
    if isinstance(settings, CodingSettings):
        return settings
    if settings is None:
        return CodingSettings()
    shared = {name: getattr(settings, name) for name in Settings.model_fields}
    return CodingSettings().model_copy(update=shared)


class CodingStage(Stage):
    name = "coding"
    inputs = ("encounters.collected.v1", "coding.decisions.v1")

    def __init__(self, coder: Coder, store: ReviewStore) -> None:
        self.flow = ReviewFlow(coder, store)
        self.store = store
        HELD.set(store.held_count())

    def handle(self, msg: Incoming) -> Iterable[Out]:
        with self.store.atomic():
            if isinstance(msg.value, CoderDecision):
                outs = self.flow.decision(msg.value)
                if outs:
                    DECISIONS.labels(msg.value.action).inc()
            else:
                assert isinstance(msg.value, Encounter)
                outs = self.flow.encounter(msg.value, now=utcnow())
        return [Out(topic, key, value) for topic, key, value in outs]

    def on_batch_done(self) -> None:
        self.store.commit()
        HELD.set(self.store.held_count())

    def close(self) -> None:
        self.store.close()
        self.flow.coder.close()


def main(settings: Settings | None = None) -> None:
    config = coding_settings(settings)
    coder = Coder.load(config.refdata_dir, threshold=config.coding.review_threshold)
    coder.index  # noqa: B018 - build the text index now, not on the first SNOMED diagnosis
    log.info("code sets", extra={"capabilities": coder.capabilities()})
    store = ReviewStore(config.state_dir / "coding-review.sqlite3")
    run_stage(CodingStage(coder, store), config)
