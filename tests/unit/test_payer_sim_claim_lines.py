"""The 835's claim loops written as text (``_claim_lines``) are the segments' (``_claim_segments``).

``render_835`` writes each claim's CLP..LQ lines directly; the judge is the segment-by-segment
writer it replaced, kept as the fallback. On the decisions the simulator makes for both EHR
mixes' claims (837P and 837I, DRGs, denials, refused lines, reversals), and on variations of
them (dependents, names and ids that fold to nothing, many adjustments, ranges, remarks, empty
codes), the two write the same text; when a value from the 837 or the policy carries a
delimiter, the text path declines and the 835 fails with the judge's error, word for word.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest
import sim_corpus

from pipeline.errors import InputError
from services.remittance.era import CasAdjustment
from sim.payer import (
    ClaimDecision,
    _claim_lines,
    _claim_segments,
    _reversal,
    adjudicate_claim,
    render_835,
)


def judge(decision: ClaimDecision) -> list[str]:
    return [s if isinstance(s, str) else s.render() for s in _claim_segments(decision)]


def decisions() -> list[ClaimDecision]:
    out = []
    for mix in sim_corpus.MIXES:
        for claim in sim_corpus.submitted(mix):
            try:
                out.append(adjudicate_claim(claim))
            except InputError:
                continue
    return out


def variations(d: ClaimDecision, i: int) -> list[ClaimDecision]:
    claim = d.claim
    first = d.lines[0]
    many = tuple(
        CasAdjustment(("CO", "PR", "OA")[k % 3], str(k + 1), Decimal(k * 7) / 4 - 3)
        for k in range(i % 15)
    )
    lines = (
        replace(
            first,
            line=replace(
                first.line,
                modifiers=("25", "", "59")[: i % 4],
                revenue_code="0450" if i % 2 else None,
                units=Decimal("1.25") if i % 3 else Decimal("3"),
                service_end=date(2026, 3, 9) if i % 2 else first.line.service_date,
                line_control_number=("", "***", "ln-1 é")[i % 3] or None,
            ),
            adjustments=many,
            remark_codes=("M15", "", "N115")[: i % 4],
            allowed=Decimal(0) if i % 5 == 0 else first.allowed,
        ),
        *d.lines[1:],
    )
    return [
        _reversal(d),
        replace(d, lines=lines, remark_codes=("MA130", "", "N1", "N2", "N3", "N4", "N5")[: i % 8]),
        replace(
            d,
            claim=replace(
                claim,
                insured_last_name=("DOE", "", "~")[i % 3],
                insured_first_name=("JANE", "")[i % 2],
                member_id=("M1", "", "*", None)[i % 4],
                patient_last_name=("", "ÉLAN", None)[i % 3],
                patient_first_name=(None, "", "A:B")[i % 3],
                drg=("470", "", None)[i % 3],
            ),
            patient_responsibility=Decimal(0),
        ),
    ]


def test_claim_lines_as_the_segments_write_them() -> None:
    seen = 0
    for i, d in enumerate(decisions()):
        for case in (d, *variations(d, i)):
            assert _claim_lines(case) == judge(case)
            seen += 1
    assert seen > 400


def _bad(d: ClaimDecision, where: str, value: str) -> ClaimDecision:
    line = d.lines[-1]
    billed = line.line
    if where == "place_of_service":
        return replace(d, claim=replace(d.claim, place_of_service=value))
    if where == "frequency":
        return replace(d, claim=replace(d.claim, frequency=value))
    if where == "drg":
        return replace(d, claim=replace(d.claim, drg=value))
    if where == "remark":
        return replace(d, remark_codes=("MA130", value))
    if where == "code":
        return replace(d, lines=(*d.lines[:-1], replace(line, line=replace(billed, code=value))))
    if where == "modifier":
        bad = replace(billed, modifiers=(*billed.modifiers, value))
        return replace(d, lines=(*d.lines[:-1], replace(line, line=bad)))
    if where == "revenue_code":
        bad = replace(billed, revenue_code=value)
        return replace(d, lines=(*d.lines[:-1], replace(line, line=bad)))
    if where == "line_remark":
        return replace(d, lines=(*d.lines[:-1], replace(line, remark_codes=(value,))))
    if where == "carc":
        cas = (*line.adjustments, CasAdjustment("CO", value, Decimal("1")))
        return replace(d, lines=(*d.lines[:-1], replace(line, adjustments=cas)))
    if where == "status":
        return replace(d, status_code=value)
    assert where == "control_number"
    return replace(d, payer_claim_control_number=value)


WHERE = (
    "place_of_service",
    "frequency",
    "drg",
    "remark",
    "code",
    "modifier",
    "revenue_code",
    "line_remark",
    "carc",
    "status",
    "control_number",
)


def _error(call: object) -> tuple[str, str]:
    with pytest.raises(InputError) as caught:
        call()  # type: ignore[operator]
    return caught.value.field, caught.value.reason


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("delimiter", ["*", ":", "^", "~"])
def test_a_delimiter_fails_as_the_segments_fail(where: str, delimiter: str) -> None:
    for d in decisions()[:40:7]:
        bad = _bad(d, where, f"X{delimiter}1")
        assert _claim_lines(bad) is None
        expected = _error(lambda bad=bad: judge(bad))  # type: ignore[misc]

        def write(bad: ClaimDecision = bad) -> str:
            return render_835(
                [bad],
                payer_id="PAYERSIM",
                payer_name="PAYER SIMULATOR",
                payee_npi="1234567893",
                payee_name="CLINIC",
                trace_number="T1",
                paid_date=date(2026, 3, 20),
            )

        assert _error(write) == expected
