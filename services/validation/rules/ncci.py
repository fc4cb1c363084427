"""NCCI procedure-to-procedure edits: a column 2 code billed with its column 1 code on the
same date of service is denied unless the modifier indicator allows a bypass modifier.

Modifier indicator 0: never paid together, whatever the modifiers. 1: paid together when
a PTP-associated modifier (59, XE, XS, XP, XU; 25 on an E/M code of the pair) is on
either line. 9: the edit was deleted retroactively and never applies. Practitioner tables
check professional claims, hospital tables outpatient claims; inpatient claims have none.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterator
from datetime import date

from pipeline.models import ServiceLine
from services.refdata.codesets import normalize_code
from services.refdata.ncci import Provider, PtpEdit
from services.validation.engine import NONE, Context, Hit, Hits, rule
from services.validation.rules._util import where

BYPASS_MODIFIERS = frozenset({"59", "XE", "XS", "XP", "XU"})
EM_MODIFIER = "25"
PROVIDER: dict[str, Provider] = {"professional": "practitioner", "outpatient": "hospital"}


def is_em(code: str) -> bool:
    """True for an evaluation and management CPT code (99202-99499)."""
    return code.isdigit() and "99202" <= code <= "99499"


def bypassed(col1: ServiceLine, code1: str, col2: ServiceLine, code2: str, edit: PtpEdit) -> bool:
    """True when the edit allows modifiers (indicator 1) and one of the lines carries one.

    ``code1`` and ``code2`` are the lines' codes as the edit was found by (normalized): an
    E/M code is told by them, not by the codes as billed (`` 99213`` is 99213)."""
    if edit.modifier_indicator != "1":
        return False
    if BYPASS_MODIFIERS & {*col1.modifiers, *col2.modifiers}:
        return True
    return (EM_MODIFIER in col1.modifiers and is_em(code1)) or (
        EM_MODIFIER in col2.modifiers and is_em(code2)
    )


def ptp_table(ctx: Context) -> bool:
    """A PTP table is loaded for the claim's provider (else CF-NCCI-000 says the edit is off)."""
    return PROVIDER[ctx.setting] in ctx.codesets.ncci.ptp


def _off_reason(ctx: Context, capability: str) -> str:
    return ctx.codesets.notes.get(capability, "the table is not loaded")


@rule(
    "CF-NCCI-000",
    "info",
    "When no NCCI PTP table is loaded the edit is off, and every verdict says so rather "
    "than passing line pairs silently.",
    category="config",
    settings=("professional", "outpatient"),
    fix_hint="Put the CMS NCCI PTP files (ccipra-v*-f*.txt) in CLAIMFLOW_REFDATA_DIR.",
)
def ptp_off(ctx: Context) -> Hits:
    provider = PROVIDER[ctx.setting]
    if provider in ctx.codesets.ncci.ptp:
        return NONE
    capability = "ncci_ptp" if provider == "practitioner" else "ncci_ptp_hospital"
    return _ptp_off(provider, _off_reason(ctx, capability))


@functools.lru_cache(maxsize=64)
def _ptp_off(provider: str, reason: str) -> Hits:
    """CF-NCCI-000's hit, kept: without the table every claim of the provider has it."""
    return (
        Hit(
            "lines",
            f"NCCI procedure-to-procedure edits are OFF for this claim ({provider} table not "
            f"loaded: {reason}); line pairs were not checked.",
        ),
    )


@rule(
    "CF-NCCI-001",
    "error",
    "NCCI PTP: a column 2 code billed with its column 1 code on the same date is denied, "
    "unless the edit allows a modifier (indicator 1) and 59, XE, XS, XP, XU (or 25 on the "
    "E/M code) shows the services were distinct.",
    category="ncci",
    settings=("professional", "outpatient"),
    needs=ptp_table,
)
def ptp(ctx: Context) -> Iterator[Hit]:
    table = ctx.codesets.ncci.ptp.get(PROVIDER[ctx.setting])
    if table is None:
        return
    by_day: dict[date, list[tuple[int, ServiceLine, str]]] = defaultdict(list)
    for i, line in enumerate(ctx.coded.lines):
        if line.code is not None:
            by_day[line.service_date].append((i, line, normalize_code(line.code)))
    for day, lines in by_day.items():
        if len(lines) < 2:
            continue
        for _, col1, code1 in lines:
            for j, col2, code2 in lines:
                if code1 == code2:
                    continue
                edit = table.edit(code1, code2, day)
                if (
                    edit is None
                    or edit.modifier_indicator == "9"
                    or bypassed(col1, code1, col2, code2, edit)
                ):
                    continue
                yield _ptp_hit(j, col1, col2, edit, day)


def _ptp_hit(j: int, col1: ServiceLine, col2: ServiceLine, edit: PtpEdit, day: date) -> Hit:
    if edit.modifier_indicator == "0":
        allowed = "modifier indicator 0: no modifier lets both be paid"
        fix = f"Remove line {col2.line_number}: {edit.column2} is never paid with {edit.column1}."
    else:
        allowed = "modifier indicator 1: a modifier may show the services were distinct"
        fix = (
            f"If {edit.column2} was a distinct service (another session, site or lesion), add "
            f"XE, XS, XP, XU or 59 to line {col2.line_number}"
            + (" (or 25 on the E/M line)" if is_em(edit.column1) or is_em(edit.column2) else "")
            + "; otherwise remove the line."
        )
    rationale = f"; rationale: {edit.rationale}" if edit.rationale else ""
    return Hit(
        f"lines[{j}].code",
        f"{where(col2.line_number, col2.code)} is an NCCI column 2 code of {edit.column1} on "
        f"line {col1.line_number}, billed the same day ({day}); it is denied ({allowed}"
        f"{rationale}).",
        col2.line_number,
        fix,
    )
