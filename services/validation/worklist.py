"""The correction work queue: encounters whose latest verdict is rejected, with the edits
to fix. Only the encounter id identifies an encounter here; hit messages (which may quote
dates of service or birth) are left out unless asked for."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipeline.models import ValidatedEncounter
from services.validation.engine import REGISTRY


@dataclass(frozen=True)
class QueueEntry:
    """One encounter to correct: its latest verdict's pack, time and deciding edits."""

    encounter_id: str
    rule_pack: str
    validated_at: datetime
    edits: tuple[dict[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "encounter_id": self.encounter_id,
            "rule_pack": self.rule_pack,
            "validated_at": self.validated_at.isoformat(),
            "edits": list(self.edits),
        }


@dataclass
class WorkQueue:
    """Latest verdict per encounter wins; the rejected ones form the queue."""

    messages: bool = False
    latest: dict[str, QueueEntry | None] = field(default_factory=dict)
    verdicts: int = 0

    def add(self, verdict: ValidatedEncounter) -> None:
        """Take a verdict read in topic order (a later one replaces an earlier one)."""
        self.verdicts += 1
        if verdict.outcome != "rejected":
            self.latest[verdict.encounter_id] = None
            return
        edits = []
        for e in verdict.edits:
            if e.severity == "info":
                continue
            rule = REGISTRY.get(e.rule_id)
            item: dict[str, Any] = {
                "rule_id": e.rule_id,
                "severity": e.severity,
                "category": e.category,
                "line": e.line,
                "field": e.field,
                "why": rule.explanation if rule else None,
                "fix_hint": e.fix_hint,
            }
            if self.messages:
                item["message"] = e.message
            edits.append(item)
        self.latest[verdict.encounter_id] = QueueEntry(
            verdict.encounter_id, verdict.rule_pack_version, verdict.validated_at, tuple(edits)
        )

    def rejected(self) -> list[QueueEntry]:
        """The queue, oldest verdict first."""
        entries = [e for e in self.latest.values() if e is not None]
        return sorted(entries, key=lambda e: (e.validated_at, e.encounter_id))

    def text(self) -> str:
        """The queue for people: one block per encounter, one line per edit."""
        entries = self.rejected()
        lines = [
            f"{len(entries)} encounter(s) to correct ({len(self.latest)} encounters, "
            f"{self.verdicts} verdicts read)"
        ]
        for entry in entries:
            when = f"{entry.validated_at:%Y-%m-%d %H:%M}"
            lines.append(f"{entry.encounter_id}  (pack {entry.rule_pack}, {when})")
            for e in entry.edits:
                where = f" line {e['line']}" if e["line"] is not None else ""
                lines.append(f"  {e['severity']:<7} {e['rule_id']:<12}{where} {e['field'] or ''}")
                if self.messages and e.get("message"):
                    lines.append(f"          {e['message']}")
                if e["fix_hint"]:
                    lines.append(f"          fix: {e['fix_hint']}")
        return "\n".join(lines)
