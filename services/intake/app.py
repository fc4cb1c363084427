"""intake: raw EHR messages (intake.raw.v1) -> normalised encounters (encounters.collected.v1)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pipeline.models import RawMessage
from pipeline.serde import MAGIC, Registry
from pipeline.settings import Settings
from pipeline.stage import Incoming, Out, Stage, run_stage
from services.intake.domain import parse_raw


class IntakeStage(Stage):
    name = "intake"
    inputs = ("intake.raw.v1",)

    def decode(self, reg: Registry, topic: str, raw: bytes, headers: dict[str, bytes]) -> Any:
        # EHRs may send our RawMessage envelope, or the bare bytes with a content-type header.
        if raw[:2] == MAGIC:
            return reg.decode(topic, raw)
        return None

    def handle(self, msg: Incoming) -> Iterable[Out]:
        raw: RawMessage | None = msg.value
        if raw is None:
            content_type = msg.headers.get("content-type", b"").decode() or None
            source_id = msg.key or f"{msg.topic}:{msg.partition}:{msg.offset}"
            body = msg.raw
            received_at = datetime.fromtimestamp(msg.timestamp_ms / 1000, UTC)
        else:
            content_type, source_id = raw.content_type, raw.source_id
            body, received_at = raw.body, raw.received_at
        result = parse_raw(body, content_type, source_id=source_id, received_at=received_at)
        return [Out("encounters.collected.v1", e.encounter_id, e) for e in result.encounters]


def main(settings: Settings | None = None) -> None:
    run_stage(IntakeStage(), settings or Settings())
