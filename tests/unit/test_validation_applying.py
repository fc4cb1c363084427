"""``RulePack.applying`` (the rules that apply, worked out once per setting and span of
dates) against ``Rule.applies`` asked of every rule: the same rules in the same order, for
every pack, setting and day around each rule's first and last day."""

from __future__ import annotations

import random
from datetime import date, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

import services.validation.rules  # noqa: F401 - registers every rule and pack
from services.validation.engine import PACKS, REGISTRY, Rule, RulePack


def judged(pack: RulePack, setting: str, on: date) -> tuple[Rule, ...]:
    ctx: Any = SimpleNamespace(setting=setting, on=on)
    return tuple(r for r in pack.rules if r.applies(ctx))


def days_to_ask(pack: RulePack) -> list[date]:
    edges = [date.min, date.max, date(2015, 10, 1), date(2026, 11, 20)]
    for r in pack.rules:
        edges += [d for d in (r.effective_from, r.effective_to) if d is not None]
    days = {d + timedelta(days=k) for d in edges for k in (-1, 0, 1) if date.min < d < date.max}
    days |= {date.min, date.max}
    rng = random.Random(11)
    days |= {date(2010, 1, 1) + timedelta(days=rng.randrange(9000)) for _ in range(300)}
    return sorted(days)


SETTINGS = ("professional", "outpatient", "inpatient", "", "ambulatory")


@pytest.mark.parametrize("pack_id", sorted(PACKS))
def test_applying_is_applies_of_every_rule(pack_id: str) -> None:
    pack = PACKS[pack_id]
    days = days_to_ask(pack)
    assert any(r.effective_to or r.effective_from for r in pack.rules) or pack_id < "2026.11.2"
    for on in days:
        for setting in SETTINGS:
            ctx: Any = SimpleNamespace(setting=setting, on=on)
            assert pack.applying(ctx) == judged(pack, setting, on), (setting, on)
            assert pack.applying(ctx) == judged(pack, setting, on)  # the kept answer too


def test_rules_open_to_the_last_day_and_from_the_first(monkeypatch: pytest.MonkeyPatch) -> None:
    base = REGISTRY["CF-REQ-001"]
    made = {
        "T-MAX": Rule("T-MAX", "info", "t", "", None, base.check, effective_to=date.max),
        "T-MIN": Rule("T-MIN", "info", "t", "", None, base.check, effective_from=date.min),
        "T-SPAN": Rule(
            "T-SPAN",
            "info",
            "t",
            "",
            None,
            base.check,
            effective_from=date(2024, 4, 1),
            effective_to=date(2024, 9, 30),
            settings=frozenset({"inpatient"}),
        ),
    }
    for rule_id, r in made.items():
        monkeypatch.setitem(REGISTRY, rule_id, r)
    pack = RulePack("test.applying", ("CF-REQ-001", *made), "a test pack")
    for on in days_to_ask(pack):
        for setting in SETTINGS:
            ctx: Any = SimpleNamespace(setting=setting, on=on)
            assert pack.applying(ctx) == judged(pack, setting, on), (setting, on)
    inside: Any = SimpleNamespace(setting="inpatient", on=date(2024, 9, 30))
    after: Any = SimpleNamespace(setting="inpatient", on=date(2024, 10, 1))
    assert made["T-SPAN"] in pack.applying(inside)
    assert made["T-SPAN"] not in pack.applying(after)


def test_unknown_settings_are_answered_but_not_all_kept() -> None:
    pack = PACKS[sorted(PACKS)[-1]].derive("test.many-settings")
    on = date(2026, 11, 20)
    for n in range(600):
        ctx: Any = SimpleNamespace(setting=f"s{n}", on=on)
        assert pack.applying(ctx) == judged(pack, f"s{n}", on)
    assert len(pack._applying) <= 256
