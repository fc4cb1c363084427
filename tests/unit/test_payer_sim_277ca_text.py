"""The 277CA's lines joined as text when no value carries a delimiter, as segments otherwise.

``render_277ca`` writes each line by joining its values when none of those read from the 837,
the claims or the policy carries a delimiter. The judge is the same function writing every
line through ``edi.line`` (the segment writer): on the simulators' interchanges as the claims
stage batches them (both EHR mixes, several billing providers, 837P and 837I), with claims
accepted and rejected with every kind of status (an empty entity too), the two write the same
277CA; and with a delimiter in a claim id, a billing provider, a submitter, a payer id or a
status, both fail with the same error (or, where the 837 read it as a separator, write the
same file).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
import sim_corpus

from pipeline.errors import InputError
from services.x12 import writer as edi
from sim import payer
from sim.payer import (
    DEFAULT_FRONT_END_REJECTIONS,
    FrontEndDecision,
    FrontEndRejection,
    read_837_claim,
    render_277ca,
)

CREATED = datetime(2026, 3, 4, 9, 30, tzinfo=UTC)
REJECTIONS = (None, *DEFAULT_FRONT_END_REJECTIONS, FrontEndRejection("A3", "", ""), None)


def cases() -> list[tuple[str, list[FrontEndDecision]]]:
    out = []
    for mix in sim_corpus.MIXES:
        template = sim_corpus.submitted(mix)[0]
        for i, (x12, ids) in enumerate(sim_corpus.interchanges(mix, 7)):
            decisions = [
                FrontEndDecision(
                    template.model_copy(update={"claim_id": cid}),
                    read_837_claim(x12, cid),
                    REJECTIONS[(i + k) % len(REJECTIONS)],
                )
                for k, cid in enumerate(ids)
            ]
            out.append((x12, decisions))
    return out


def write(x12: str, decisions: list[FrontEndDecision], payer_id: str = "PAYERSIM") -> str:
    return render_277ca(
        x12, decisions, payer_id=payer_id, payer_name="Payer Simulator", created=CREATED
    )


def judge(
    monkeypatch: pytest.MonkeyPatch, x12: str, decisions: list[FrontEndDecision], **kw: str
) -> str:
    with monkeypatch.context() as m:
        m.setattr(payer, "_clean_line", edi.line)
        m.setattr(payer, "_clean_comp", edi.comp)
        return write(x12, decisions, **kw)


def test_the_277ca_as_the_segments_write_it(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = 0
    for x12, decisions in cases():
        assert write(x12, decisions) == judge(monkeypatch, x12, decisions)
        seen += len(decisions)
    assert seen > 200


def _outcome(call: object) -> tuple[str, ...]:
    """The 277CA written, or the error's field and reason."""
    try:
        return ("277CA", call())  # type: ignore[operator]
    except InputError as exc:
        return ("error", exc.field, exc.reason)


def _bad(
    x12: str, decisions: list[FrontEndDecision], where: str, value: str
) -> tuple[str, list[FrontEndDecision], dict[str, str]]:
    d = decisions[-1]
    rest = decisions[:-1]
    if where == "claim_id":
        return x12, [*rest, replace(d, parsed=replace(d.parsed, claim_id=value))], {}
    if where == "billing_name":
        return x12, [*rest, replace(d, parsed=replace(d.parsed, billing_name=value))], {}
    if where == "billing_npi":
        return x12, [*rest, replace(d, parsed=replace(d.parsed, billing_npi=value))], {}
    if where == "status":
        return x12, [*rest, replace(d, rejection=FrontEndRejection("A7", value, "IL"))], {}
    if where == "entity":
        return x12, [*rest, replace(d, rejection=FrontEndRejection("A7", "164", value))], {}
    if where == "submitter":
        return x12.replace("NM1*41*2*CLAIMFLOW*", f"NM1*41*2*{value}*", 1), decisions, {}
    assert where == "payer_id"
    return x12, decisions, {"payer_id": value}


@pytest.mark.parametrize(
    "where",
    ["claim_id", "billing_name", "billing_npi", "status", "entity", "submitter", "payer_id"],
)
@pytest.mark.parametrize("delimiter", ["*", ":", "^", "~"])
def test_a_delimiter_fails_as_the_segments_fail(
    monkeypatch: pytest.MonkeyPatch, where: str, delimiter: str
) -> None:
    failed = 0
    for x12, decisions in cases()[:12:3]:
        bad_x12, bad, kw = _bad(x12, decisions, where, f"X{delimiter}1")
        expected = _outcome(lambda: judge(monkeypatch, bad_x12, bad, **kw))  # noqa: B023
        assert _outcome(lambda: write(bad_x12, bad, **kw)) == expected  # noqa: B023
        # In the 837 a '*' or '~' splits the name (elements shift): nothing to refuse there.
        failed += expected[0] == "error"
    assert failed or (where == "submitter" and delimiter in "*~")
