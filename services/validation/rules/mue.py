"""Medically Unlikely Edits: the most units of a code one provider bills one patient.

MAI 1 is a line edit (each line's units). MAI 2 (policy) and MAI 3 (clinical) are
date-of-service edits: the units of the code on all lines of the same day add up. MAI 2
denials are final; MAI 3 ones may be appealed with records. Values come from the CMS
file of the quarter loaded (its effective date is in the capability note).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterator
from datetime import date

from services.refdata.codesets import normalize_code
from services.refdata.ncci import MAI_TEXT, Provider
from services.validation.engine import NONE, Context, Hit, Hits, rule
from services.validation.rules._util import where

PROVIDER: dict[str, Provider] = {"professional": "practitioner", "outpatient": "hospital"}


def mue_table(ctx: Context) -> bool:
    """An MUE table is loaded for the claim's provider (else CF-MUE-000 says the edit is off)."""
    return PROVIDER[ctx.setting] in ctx.codesets.ncci.mue


@rule(
    "CF-MUE-000",
    "info",
    "When no MUE table is loaded the edit is off, and every verdict says so rather than "
    "passing units silently.",
    category="config",
    settings=("professional", "outpatient"),
    fix_hint="Put the CMS MUE file (MCR_MUE_PractitionerServices_Eff_*.csv) in "
    "CLAIMFLOW_REFDATA_DIR.",
)
def mue_off(ctx: Context) -> Hits:
    provider = PROVIDER[ctx.setting]
    if provider in ctx.codesets.ncci.mue:
        return NONE
    capability = "ncci_mue" if provider == "practitioner" else "ncci_mue_hospital"
    return _mue_off(provider, ctx.codesets.notes.get(capability, "the table is not loaded"))


@functools.lru_cache(maxsize=64)
def _mue_off(provider: str, reason: str) -> Hits:
    """CF-MUE-000's hit, kept: without the table every claim of the provider has it."""
    return (
        Hit(
            "lines",
            f"Medically Unlikely Edits are OFF for this claim ({provider} table not loaded: "
            f"{reason}); units were not checked.",
        ),
    )


@rule(
    "CF-MUE-001",
    "error",
    "MUE line edit (MAI 1): a line may not bill more units of a code than its MUE value.",
    category="mue",
    settings=("professional", "outpatient"),
    fix_hint="Bill the units documented; if more were truly given, split them onto separate "
    "lines with the modifier that says why (76, 77, 91, anatomic) - each line is checked "
    "alone.",
    needs=mue_table,
)
def line_edit(ctx: Context) -> Iterator[Hit]:
    table = ctx.codesets.ncci.mue.get(PROVIDER[ctx.setting])
    if table is None:
        return
    for i, line in enumerate(ctx.coded.lines):
        if line.code is None:
            continue
        edit = table.get(normalize_code(line.code))
        if edit is not None and edit.mai == 1 and line.units > edit.value:
            yield Hit(
                f"lines[{i}].units",
                f"{where(line.line_number, line.code)} bills {line.units:g} units; the MUE for "
                f"{edit.code} is {edit.value} per line (MAI 1, {MAI_TEXT[1]}).",
                line.line_number,
            )


@rule(
    "CF-MUE-002",
    "error",
    "MUE date-of-service edit (MAI 2 policy, MAI 3 clinical): the units of a code on all "
    "lines of one day may not exceed its MUE value.",
    category="mue",
    settings=("professional", "outpatient"),
    needs=mue_table,
)
def date_of_service_edit(ctx: Context) -> Iterator[Hit]:
    table = ctx.codesets.ncci.mue.get(PROVIDER[ctx.setting])
    if table is None:
        return
    groups: dict[tuple[str, date], list[int]] = defaultdict(list)
    for i, line in enumerate(ctx.coded.lines):
        if line.code is not None:
            groups[(normalize_code(line.code), line.service_date)].append(i)
    for (code, day), indexes in groups.items():
        edit = table.get(code)
        if edit is None or not edit.per_day:
            continue
        lines = [ctx.coded.lines[i] for i in indexes]
        total = sum(line.units for line in lines)
        if total <= edit.value:
            continue
        first = lines[0]
        numbers = ", ".join(str(line.line_number) for line in lines)
        if edit.mai == 2:
            fix = (
                f"Bill at most {edit.value} units of {code} for {day}; a MAI 2 denial cannot "
                "be appealed."
            )
        else:
            fix = (
                f"Bill at most {edit.value} units of {code} for {day}, or bill the units "
                "documented and be ready to appeal with the medical record (MAI 3)."
            )
        yield Hit(
            f"lines[{indexes[0]}].units",
            f"{where(first.line_number, first.code)}: {total:g} units of {code} on {day} "
            f"(line{'s' if len(lines) > 1 else ''} {numbers}); the MUE is {edit.value} per "
            f"day (MAI {edit.mai}, {MAI_TEXT[edit.mai]}).",
            first.line_number,
            fix,
        )
