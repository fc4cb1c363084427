"""intake: raw EHR messages (intake.raw.v1) -> normalised encounters (encounters.collected.v1)."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pipeline import metrics
from pipeline.errors import InputError
from pipeline.models import Encounter, RawMessage
from pipeline.serde import MAGIC, Registry
from pipeline.settings import Settings
from pipeline.stage import Incoming, Out, Stage, run_stage
from services.intake.account import AccountBook, AccountStore, hl7_parser, split_held
from services.intake.domain import parse_raw
from services.intake.seen import SeenMessages
from services.intake.settings import IntakeSettings
from services.refdata.masterdata import load_master_data

log = logging.getLogger(__name__)
PRUNE_EVERY_S = 3600.0


def body_digest(body: bytes) -> str:
    """What tells a resend from a corrected message under the same source id."""
    return hashlib.sha256(body).hexdigest()[:32]


class IntakeStage(Stage):
    name = "intake"
    inputs = ("intake.raw.v1",)

    def __init__(self, settings: IntakeSettings) -> None:
        self.master = load_master_data(settings)
        log.info("master data: %s", self.master.describe())
        self.directory = self.master.providers
        self.accounts = AccountStore(settings.state_dir / "intake-accounts.sqlite")
        self.book = AccountBook(
            self.accounts,
            hl7_parser(self.directory, self.master.chargemaster),
            bill_hold_s=settings.intake.bill_hold_hours * 3600,
            late_charges=settings.intake.late_charges,
        )
        self.seen = SeenMessages(settings.state_dir / "intake-seen.sqlite")
        self.window_s = settings.intake.repeat_window_days * 86400
        self._pruned_at = 0.0

    def decode(self, reg: Registry, topic: str, raw: bytes, headers: dict[str, bytes]) -> Any:
        # EHRs may send our RawMessage envelope, or the bare bytes with a content-type header.
        if raw[:2] == MAGIC:
            return reg.decode(topic, raw)
        return None

    def handle(self, msg: Incoming) -> Iterable[Out]:
        raw: RawMessage | None = msg.value
        if raw is None:
            content_type = msg.headers.get("content-type", b"").decode("utf-8", "replace") or None
            source_id = msg.key or f"{msg.topic}:{msg.partition}:{msg.offset}"
            body = msg.raw
            received_at = datetime.fromtimestamp(msg.timestamp_ms / 1000, UTC)
            source_system = None
        else:
            content_type, source_id = raw.content_type, raw.source_id
            body, received_at, source_system = raw.body, raw.received_at, raw.source_system
        digest = body_digest(body)
        if self.seen.seen(source_id, digest):
            metrics.OUTCOMES.labels(self.name, "repeat_dropped").inc()
            log.info("repeated source message dropped", extra={"offset": msg.offset})
            return []
        held, rest = split_held(self.book, body, content_type)
        encounters: list[Encounter] = []
        if held:
            with self.accounts.atomic():  # a message that breaks its account changes nothing
                encounters += self.book.receive(held, received_at, source_id)
            metrics.OUTCOMES.labels(self.name, "read_hl7v2").inc()
        if rest is not None:
            result = parse_raw(
                rest,
                content_type,
                source_id=source_id,
                received_at=received_at,
                source_system=source_system,
                directory=self.directory,
                chargemaster=self.master.chargemaster,
            )
            if not held:
                metrics.OUTCOMES.labels(self.name, f"read_{result.source_format}").inc()
            encounters += result.encounters
        self.seen.add(source_id, digest)  # only once read: a rejected message may be resent
        return [Out("encounters.collected.v1", e.encounter_id, e) for e in encounters]

    def on_batch_done(self) -> None:
        self.seen.commit()
        self.accounts.commit()

    def on_idle(self) -> Iterable[Out]:
        now = time.time()
        if now - self._pruned_at > PRUNE_EVERY_S:
            self._pruned_at = now
            self.seen.prune(now - self.window_s)
        if self.book.bill_hold_s <= 0:
            return []
        try:
            with self.accounts.atomic():
                due = self.book.due(datetime.now(UTC))
        except InputError as exc:
            # An account that no longer reads (the chargemaster changed) stays unbilled.
            log.error("a held account cannot be billed: %s: %s", exc.field, exc.reason)
            return []
        return [Out("encounters.collected.v1", e.encounter_id, e) for e in due]

    def close(self) -> None:
        self.seen.close()
        self.accounts.close()


def main(settings: Settings | None = None) -> None:
    # `claimflow service` reads the environment into the base Settings; this class reads
    # the same environment, plus intake's own variables.
    intake = settings if isinstance(settings, IntakeSettings) else IntakeSettings()
    run_stage(IntakeStage(intake), intake)
