"""The CAS adjustments posted are counted by group: one increment per group and posting
of the number of its adjustments, which must add up to what counting them one by one gave
(the dollars are still added one by one, the same float)."""

from __future__ import annotations

from collections import Counter

from prometheus_client import REGISTRY
from test_remittance_split import CLAIMS, OPTIONS, payer_files

from pipeline.models import RemittancePosting
from services.remittance.ledger import Ledger
from services.remittance.matching import GROUPS, Matcher

GROUP_LABELS = (*sorted(GROUPS), "other")


def _sample(name: str, group: str) -> float:
    return REGISTRY.get_sample_value(name, {"group": group}) or 0.0


def test_adjustments_are_counted_and_summed_by_group() -> None:
    counts = "claimflow_remittance_adjustments_total"
    dollars = "claimflow_remittance_adjusted_dollars_total"
    before = {g: (_sample(counts, g), _sample(dollars, g)) for g in GROUP_LABELS}
    matcher = Matcher(Ledger(":memory:"), options=OPTIONS)
    postings: list[RemittancePosting] = []
    for claim in CLAIMS:
        matcher.claim(claim)
    for file in payer_files():
        outs = matcher.payer_file(file)
        postings += [o.value for o in outs if isinstance(o.value, RemittancePosting)]
    expected_counts: Counter[str] = Counter()
    expected_dollars = {g: before[g][1] for g in GROUP_LABELS}
    for posting in postings:
        if posting.status == "reversed":
            continue
        for adj in posting.adjustments:
            group = adj.group if adj.group in GROUPS else "other"
            expected_counts[group] += 1
            if adj.amount > 0:
                expected_dollars[group] += float(adj.amount)
    assert sum(expected_counts.values()) > 10
    for group in GROUP_LABELS:
        assert _sample(counts, group) == before[group][0] + expected_counts[group], group
        assert _sample(dollars, group) == expected_dollars[group], group
