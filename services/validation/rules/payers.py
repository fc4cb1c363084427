"""The payer: a real one, known to the payer registry, that takes this kind of claim."""

from __future__ import annotations

from services.refdata.payers import is_placeholder
from services.validation.engine import NONE, Context, Hit, Hits, rule

SELF_PAY = "09"
"""Claim filing indicator of a self-pay encounter: nothing to send to a payer."""


@rule(
    "CF-PAYER-001",
    "error",
    "A payer id that only says the payer is unknown (UNKNOWN, PRIVATE …) sends the claim "
    "nowhere: the clearinghouse rejects it.",
    category="payer",
    fix_hint="Look the payer up in the eligibility response or on the insurance card and "
    "send its electronic payer id.",
)
def placeholder_payer(ctx: Context) -> Hits:
    cov = ctx.coded.encounter.coverage
    if cov.payer_id.strip() and is_placeholder(cov.payer_id):
        return (
            Hit(
                "encounter.coverage.payer_id",
                f"The payer id {cov.payer_id!r} is a placeholder, not a payer's electronic id.",
            ),
        )
    return NONE


@rule(
    "CF-PAYER-002",
    "error",
    "With a payer registry configured, a claim goes only to a payer it knows: the registry "
    "gives the electronic payer id, the receiver and the claim filing indicator.",
    category="payer",
    fix_hint="Correct the payer id, or add the payer to the registry (CLAIMFLOW_PAYER_REGISTRY).",
)
def registered_payer(ctx: Context) -> Hits:
    cov = ctx.coded.encounter.coverage
    if not ctx.payers or cov.plan_type == SELF_PAY or is_placeholder(cov.payer_id):
        return NONE
    if ctx.payer is None:
        return (
            Hit(
                "encounter.coverage.payer_id",
                f"Payer {cov.payer_id!r} ({cov.payer_name}) is not in the payer registry.",
            ),
        )
    if ctx.payer.filing_indicator(ctx.claim_type) is None:
        return (
            Hit(
                "encounter.coverage.payer_id",
                f"Payer {ctx.payer.payer_id} takes no {ctx.claim_type} claims (the registry has "
                f"no claim filing indicator for them).",
            ),
        )
    return NONE
