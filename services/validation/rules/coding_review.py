"""Open coder review: coding asked a person to confirm something."""

from __future__ import annotations

from collections.abc import Iterator

from services.validation.engine import Context, Hit, review_reasons, rule


@rule(
    "CF-REV-001",
    "warning",
    "Coding asked a coder to confirm something that is still open.",
    category="coding_review",
    fix_hint="Have a coder confirm or correct the code in the review queue.",
    needs=review_reasons,
)
def open_review(ctx: Context) -> Iterator[Hit]:
    for i, reason in enumerate(ctx.coded.review_reasons):
        yield Hit(f"review_reasons[{i}]", f"Awaiting coder review: {reason}")
