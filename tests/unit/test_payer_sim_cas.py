"""The 835's CAS segments: grouped by adjustment group, six reasons a segment, in order."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.remittance.era import CasAdjustment
from services.x12 import writer as edi
from sim.payer import _cas_segments


def reference(adjustments: list[CasAdjustment]) -> list[str]:
    """The segments as first written: one segment object per group and six triplets."""
    by_group: dict[str, list[CasAdjustment]] = {}
    for adj in adjustments:
        by_group.setdefault(adj.group, []).append(adj)
    out = []
    for group, adjs in by_group.items():
        for start in range(0, len(adjs), 6):
            triplets = [(a.reason, edi.amount(a.amount), "") for a in adjs[start : start + 6]]
            out.append(edi.seg("CAS", group, *(e for t in triplets for e in t)).render())
    return out


@pytest.mark.parametrize("n", [0, 1, 2, 5, 6, 7, 12, 13, 19])
def test_cas_segments_as_first_written(n: int) -> None:
    groups = ("CO", "PR", "OA")
    adjustments = [
        CasAdjustment(groups[i % 3 if i % 4 else 0], str(i + 1), Decimal(i * 7) / 4 - 3)
        for i in range(n)
    ]
    got = [s if isinstance(s, str) else s.render() for s in _cas_segments(adjustments)]
    assert got == reference(adjustments)
