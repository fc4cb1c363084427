"""Service lines: charges, units and modifiers."""

from __future__ import annotations

import re

from services.validation.engine import Context, Hit, Hits, rule
from services.validation.rules._util import where
from services.x12.guides import MAX_MODIFIERS

_MODIFIER = re.compile(r"[A-Z0-9]{2}")


@rule(
    "CF-LINE-001",
    "error",
    "Every billed line must carry a positive charge.",
    category="general",
    fix_hint="Bill the practice's fee-schedule charge for the service.",
)
def charges(ctx: Context) -> Hits:
    return [
        Hit(
            f"lines[{i}].charge",
            f"{where(line.line_number, line.code)} has a charge of {line.charge}; it must "
            "be more than zero.",
            line.line_number,
        )
        for i, line in enumerate(ctx.coded.lines)
        if line.charge <= 0
    ]


@rule(
    "CF-LINE-002",
    "error",
    "Every billed line must bill a positive number of units.",
    category="general",
    fix_hint="Bill the units documented (at least 1).",
)
def units(ctx: Context) -> Hits:
    return [
        Hit(
            f"lines[{i}].units",
            f"{where(line.line_number, line.code)} bills {line.units:g} units; it must "
            "be more than zero.",
            line.line_number,
        )
        for i, line in enumerate(ctx.coded.lines)
        if line.units <= 0
    ]


@rule(
    "CF-LINE-004",
    "error",
    "Modifiers are 2 characters, at most 4 per line.",
    category="general",
    fix_hint="Keep the 4 modifiers that matter for payment (pricing modifiers first).",
)
def modifiers(ctx: Context) -> Hits:
    hits: list[Hit] = []
    for i, line in enumerate(ctx.coded.lines):
        mods = line.modifiers
        if len(mods) <= MAX_MODIFIERS and all([_MODIFIER.fullmatch(m) for m in mods]):
            continue  # the usual line (most have no modifier): nothing to name
        w = where(line.line_number, line.code)
        if len(mods) > MAX_MODIFIERS:
            hits.append(
                Hit(
                    f"lines[{i}].modifiers",
                    f"{w} has {len(mods)} modifiers; a claim line holds {MAX_MODIFIERS}.",
                    line.line_number,
                )
            )
        hits += [
            Hit(
                f"lines[{i}].modifiers[{j}]",
                f"{w} has modifier {mod!r}; modifiers are 2 letters or digits.",
                line.line_number,
            )
            for j, mod in enumerate(mods)
            if not _MODIFIER.fullmatch(mod)
        ]
    return hits
