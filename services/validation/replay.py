"""Replay after a rule change: re-validate coded encounters with another rule pack and say
which outcomes changed, by rule. Plain domain code; ``services/validation/app.py`` reads
and writes the topics.

- The state before the replay is the latest verdict per encounter on
  ``encounters.validated.v1`` (``latest``).
- Each encounter is re-validated once, from its latest coded record (``Revalidator``);
  a verdict whose event id is already the latest on the topic (same coded record, same
  pack) is not published again, so running the same replay twice changes nothing.
- ``diff`` lists the encounters whose outcome changed and, for each, the rules whose hits
  appeared, disappeared or changed severity; ``ReplayReport.text`` groups them by rule.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.models import CodedEncounter, ValidatedEncounter
from services.refdata.codesets import CodeSets
from services.validation.duplicates import DuplicateStore
from services.validation.engine import RulePack, run


@dataclass(frozen=True)
class Summary:
    """What the diff needs of a verdict: its id, outcome, pack and deciding hits."""

    event_id: str
    outcome: str
    pack: str
    rules: frozenset[tuple[str, str]]
    """(rule id, severity) of every error and warning hit."""

    @classmethod
    def of(cls, verdict: ValidatedEncounter) -> Summary:
        rules = frozenset((e.rule_id, e.severity) for e in verdict.edits if e.severity != "info")
        return cls(verdict.event_id, verdict.outcome, verdict.rule_pack_version, rules)


def latest(verdicts: Iterable[ValidatedEncounter]) -> dict[str, Summary]:
    """The latest verdict per encounter, reading the topic in order (later wins)."""
    out: dict[str, Summary] = {}
    for verdict in verdicts:
        out[verdict.encounter_id] = Summary.of(verdict)
    return out


@dataclass(frozen=True)
class Change:
    """An encounter whose outcome changed, and the rules that changed it."""

    encounter_id: str
    before: Summary | None
    after: Summary

    def rules(self) -> dict[str, str]:
        """Rule id -> how its hits changed: "added error", "removed warning", "warning -> error"."""
        before = _by_rule(self.before.rules if self.before else frozenset())
        after = _by_rule(self.after.rules)
        out: dict[str, str] = {}
        for rule_id in sorted(before.keys() | after.keys()):
            was, now = before.get(rule_id), after.get(rule_id)
            if was == now:
                continue
            if was is None:
                out[rule_id] = f"added {now}"
            elif now is None:
                out[rule_id] = f"removed {was}"
            else:
                out[rule_id] = f"{was} -> {now}"
        return out


def _by_rule(rules: frozenset[tuple[str, str]]) -> dict[str, str]:
    worst: dict[str, str] = {}
    for rule_id, severity in rules:
        if worst.get(rule_id) != "error":
            worst[rule_id] = severity
    return worst


def diff(before: Mapping[str, Summary], after: Mapping[str, Summary]) -> list[Change]:
    """Encounters re-validated whose outcome differs from their latest verdict before."""
    changes = []
    for encounter_id in sorted(after):
        was, now = before.get(encounter_id), after[encounter_id]
        if was is None or was.outcome != now.outcome:
            changes.append(Change(encounter_id, was, now))
    return changes


class Revalidator:
    """Re-validates coded encounters with one pack, against the topic's latest verdicts."""

    def __init__(
        self,
        pack: RulePack,
        codesets: CodeSets,
        before: Mapping[str, Summary],
        *,
        history: DuplicateStore | None = None,
        validated_at: datetime | None = None,
    ) -> None:
        self.pack = pack
        self.codesets = codesets
        self.before = before
        self.history = history
        self.validated_at = validated_at or datetime.now(UTC)
        self.after: dict[str, Summary] = {}
        self.published = 0
        self.already_published = 0

    def verdict(self, coded: CodedEncounter) -> ValidatedEncounter | None:
        """The new verdict to publish, or None when it is already the latest on the topic."""
        verdict = run(
            coded, self.codesets, self.pack, validated_at=self.validated_at, history=self.history
        )
        if self.history is not None:
            self.history.record(coded, verdict.outcome)
        self.after[coded.encounter_id] = Summary.of(verdict)
        known = self.before.get(coded.encounter_id)
        if known is not None and known.event_id == verdict.event_id:
            self.already_published += 1
            return None
        self.published += 1
        return verdict


@dataclass
class ReplayReport:
    """What a replay did, and the outcome changes by rule."""

    pack: str
    since: str
    coded_records: int = 0
    encounters: int = 0
    published: int = 0
    already_published: int = 0
    undecodable: int = 0
    verdicts_before: int = 0
    changes: list[Change] = field(default_factory=list)
    dry_run: bool = False

    def by_rule(self) -> dict[str, list[Change]]:
        """Changed encounters under each rule that changed them (one may be under several)."""
        groups: dict[str, list[Change]] = defaultdict(list)
        for change in self.changes:
            rules = change.rules() or {"(no earlier verdict)": ""}
            for rule_id in rules:
                groups[rule_id].append(change)
        return dict(sorted(groups.items()))

    def text(self) -> str:
        """The diff report for people: counts, then changed encounters grouped by rule."""
        lines = [
            f"replay of validation with rule pack {self.pack}, from {self.since}"
            + (" (dry run: nothing published)" if self.dry_run else ""),
            f"  coded records read {self.coded_records}; encounters re-validated "
            f"{self.encounters}; verdicts published {self.published}; already published "
            f"{self.already_published}; undecodable {self.undecodable}",
            f"  outcome changed for {len(self.changes)} encounter(s)",
        ]
        for rule_id, changes in self.by_rule().items():
            lines.append(f"  {rule_id}: {len(changes)} encounter(s)")
            for change in changes:
                was = change.before.outcome if change.before else "none"
                how = change.rules().get(rule_id, "")
                pack = change.before.pack if change.before else "-"
                lines.append(
                    f"    {change.encounter_id}  {was} -> {change.after.outcome}"
                    f"  ({how}; was pack {pack})"
                )
        return "\n".join(lines)

    def summary(self) -> dict[str, Any]:
        """One JSON-able line: counts and, per rule, the encounters whose outcome changed."""
        return {
            "rule_pack": self.pack,
            "from": self.since,
            "coded_records": self.coded_records,
            "encounters": self.encounters,
            "published": self.published,
            "already_published": self.already_published,
            "undecodable": self.undecodable,
            "changed": len(self.changes),
            "by_rule": {
                rule_id: [c.encounter_id for c in changes]
                for rule_id, changes in self.by_rule().items()
            },
        }
