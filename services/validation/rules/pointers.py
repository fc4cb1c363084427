"""Diagnosis pointers and how many diagnoses a claim form holds."""

from __future__ import annotations

from services.refdata.ub04 import claim_diagnoses, line_claim_type
from services.validation.engine import NONE, Context, Hit, Hits, rule
from services.validation.rules._util import where
from services.x12.guides import MAX_DX_POINTERS, MAX_PROFESSIONAL_DIAGNOSES


@rule(
    "CF-LINE-003",
    "error",
    "Each line points at 1 to 4 of the claim's diagnoses, to say why the service was done.",
    category="pointers",
    fix_hint="Point the line at the diagnoses that justify it, most relevant first.",
)
def pointers(ctx: Context) -> Hits:
    n = len(claim_diagnoses(ctx.coded))
    hits: list[Hit] = []
    for i, line in enumerate(ctx.coded.lines):
        if line_claim_type(line, ctx.setting) != "professional":
            continue  # an 837I line (SV2) points at no diagnosis
        bad = [p for p in line.dx_pointers if not 1 <= p <= n]
        if line.dx_pointers and len(line.dx_pointers) <= MAX_DX_POINTERS and not bad:
            continue  # the usual line: nothing to name
        field = f"lines[{i}].dx_pointers"
        w = where(line.line_number, line.code)
        if not line.dx_pointers:
            hits.append(Hit(field, f"{w} points at no diagnosis.", line.line_number))
        if len(line.dx_pointers) > MAX_DX_POINTERS:
            hits.append(
                Hit(
                    field,
                    f"{w} points at {len(line.dx_pointers)} diagnoses; a claim line holds "
                    f"{MAX_DX_POINTERS}.",
                    line.line_number,
                )
            )
        if bad:
            hits.append(
                Hit(
                    field,
                    f"{w} points at diagnosis {', '.join(map(str, bad))}, but the claim has "
                    f"{n} {'diagnosis' if n == 1 else 'diagnoses'}.",
                    line.line_number,
                )
            )
    return hits


@rule(
    "CF-DX-004",
    "error",
    "A professional claim holds at most 12 diagnoses (837P HI, CMS-1500 box 21 A-L).",
    category="pointers",
    settings=("professional",),
    fix_hint="Keep the 12 diagnoses the lines point at (split the claim if more are needed).",
)
def diagnosis_count(ctx: Context) -> Hits:
    if len(ctx.coded.diagnoses) <= MAX_PROFESSIONAL_DIAGNOSES:
        return NONE  # no more than the form holds, counted without the side diagnoses
    n = len(claim_diagnoses(ctx.coded))
    if n > MAX_PROFESSIONAL_DIAGNOSES:
        return (
            Hit(
                f"diagnoses[{MAX_PROFESSIONAL_DIAGNOSES}]",
                f"The claim lists {n} diagnoses; a professional claim holds "
                f"{MAX_PROFESSIONAL_DIAGNOSES}, so diagnoses {MAX_PROFESSIONAL_DIAGNOSES + 1} "
                f"to {n} would be dropped.",
            ),
        )
    return NONE
