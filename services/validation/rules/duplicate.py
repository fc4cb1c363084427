"""Duplicate claims across the stream: the same services billed twice under two encounters."""

from __future__ import annotations

from services.validation.engine import NONE, Context, Hit, Hits, rule


@rule(
    "CF-DUP-001",
    "error",
    "A claim for the same patient, providers, dates of service and line codes as an earlier "
    "billed encounter is a duplicate and would be denied.",
    category="duplicate",
    per_claim=False,  # the encounter is the duplicate, not one of its claims
    fix_hint="If it is the same visit, drop this encounter; if it was a second visit, mark "
    "the repeated lines (76, 77, 91) or correct the date.",
)
def duplicate_claim(ctx: Context) -> Hits:
    if ctx.history is None:
        return NONE
    original = ctx.history.earlier_duplicate(ctx.coded)
    if original is not None:
        return (
            Hit(
                "encounter_id",
                f"This encounter duplicates encounter {original}, already billed: same "
                "patient, providers, dates of service and line codes.",
            ),
        )
    return NONE
