"""A 999 or 277CA read from its element lists (``acks._ack_rows``) is the one read from its
segments.

``read_ack`` reads a file whose answers can be read from the X12 reader's element lists and
anything else from its segments (``read_ack(..., fast=False)``: ``answered_interchanges``,
``parse_999`` and ``parse_277ca``, the judge). The payer simulator's 999s and 277CAs for
both mixes (claims batched as the claims stage batches them, a quarter rejected by the front
end, and a 999 rejecting an 837 pyx12 refuses), the public samples, and mutations of them
(segments dropped, repeated, swapped, truncated, an element changed) give the same control
numbers, the same rejections and payer claim numbers through ``rejections``, or the same
refusal, naming the same field for the same reason.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

import pytest
import sim_corpus
from hypothesis import given
from hypothesis import strategies as st
from shared_data import SHARED_DATA, requires_shared
from test_x12_fuzz import ELEMENT_VALUES, FUZZ, mutate

from pipeline.errors import InputError
from pipeline.models import PayerFile
from pipeline.stage import Incoming
from services.claims import acks
from services.claims.acks import RejectionContext, read_ack, rejections
from services.claims.domain import submitted_claim, write_interchange
from sim.payer import acknowledge_999
from sim.payer_app import PayerSimOptions, PayerSimStage

#: What a 999's and a 277CA's elements hold, and what a payer gets wrong in them.
VALUES = [
    *ELEMENT_VALUES,
    " ",
    "2",
    "21",
    "PT",
    "20",
    "1K",
    "U",
    "WQ",
    "A2:20",
    "A3:21",
    "A7:164:IL",
    "A3",
    "::",
    "277",
    "999",
    "R",
    "A",
    "E",
    "HL",
    "SE",
    "ST",
    "TRN",
    "STC",
    "REF",
    "SVC",
    "AK1",
    "AK2",
    "IK3",
    "IK4",
    "IK5",
    "AK9",
    "100000001",
    "1000000011234",
]
X12 = SHARED_DATA / "x12"
AT = datetime(2026, 11, 20, tzinfo=UTC)


def _file(n: int, kind: str, body: bytes) -> PayerFile:
    return PayerFile(
        event_id=f"e{n}",
        payer_id="P1",
        file_id=f"f{n}",
        kind=kind,  # type: ignore[arg-type]
        body=body,
        received_at=AT,
    )


@functools.cache
def simulated() -> tuple[tuple[str, bytes], ...]:
    """(kind, body): the payer simulator's 999s and 277CAs for both mixes' claims, batched
    as the claims stage sends them (up to 25 claims of a payer and claim type a file), and
    one claim a file."""
    stage = PayerSimStage(
        PayerSimOptions(front_end_rejection_rate=0.25, validate_every=1_000_000_000)
    )
    out: list[tuple[str, bytes]] = []
    for mix in sim_corpus.MIXES:
        for number, (_, planned) in enumerate(sim_corpus.planned_groups(mix), start=1):
            for n in range(0, len(planned), 25):
                batch = planned[n : n + 25]
                icn = number * 1000 + n
                x12 = write_interchange(
                    batch, sender_id="CLAIMFLOW", receiver_id="PAYERSIM", control_number=icn
                )
                msgs = [
                    Incoming(
                        "claims.submitted.v1",
                        p.claim.claim_id,
                        submitted_claim(p, icn, x12),
                        b"",
                        {"claimflow-adapter": b"simulator"},
                        0,
                        i,
                        0,
                    )
                    for i, p in enumerate(batch)
                ]
                out += [
                    (o.value.kind, o.value.body)  # type: ignore[union-attr]
                    for o in stage.handle_batch(msgs)
                    if o.value.kind in ("999", "277CA")  # type: ignore[union-attr]
                ]
        alone = [
            Incoming(
                "claims.submitted.v1",
                c.claim_id,
                c,
                b"",
                {"claimflow-adapter": b"simulator"},
                0,
                i,
                0,
            )
            for i, c in enumerate(sim_corpus.submitted(mix))
        ]
        out += [
            (o.value.kind, o.value.body)  # type: ignore[union-attr]
            for o in stage.handle_batch(alone)
            if o.value.kind in ("999", "277CA")  # type: ignore[union-attr]
        ]
    return tuple(out)


@functools.cache
def corpus() -> tuple[tuple[str, bytes], ...]:
    """The simulated files, a 999 rejecting an 837 pyx12 refuses, the public samples."""
    files = list(simulated())
    _, planned = sim_corpus.planned_groups("office")[0]
    x12 = write_interchange(
        planned[:2], sender_id="CLAIMFLOW", receiver_id="PAYERSIM", control_number=7001
    )
    broken = x12.replace("HI*ABK:", "HI*ABX:", 1)
    files.append(("999", acknowledge_999(broken, payer_id="P1", created=AT).text.encode()))
    for kind, name in (
        ("999", "x12_999_accepted.txt"),
        ("999", "x12_999_rejected.txt"),
        ("999", "834_ls_le_ls_5010.999.txt"),
        ("277CA", "x12_277CA_accepted.txt"),
        ("277CA", "x12_277CA_rejected.txt"),
    ):
        path = X12 / name
        if path.is_file():
            files.append((kind, path.read_bytes()))
    return tuple(files)


def outcome(kind: str, body: bytes, *, fast: bool) -> Any:
    """What the stage makes of the file: the interchanges it answers and the claims it
    rejects (with the payer claim numbers and groups not found), or the refusal."""
    file = _file(0, kind, body)
    ack = read_ack(file, fast=fast)
    numbers = ack.numbers if ack is not None else ()
    ctx = RejectionContext(
        lambda group: [(f"CLM-{group}", "ENC-1")] if group != "28" else [],
        lambda claim: f"ENC-{claim}",
        AT,
    )
    try:
        found = rejections(file, ctx, ack)
    except InputError as exc:
        return (numbers, "refused", exc.field, exc.reason)
    return (numbers, found, ctx.payer_claim_numbers, ctx.unknown_groups)


def same(kind: str, body: bytes) -> None:
    assert outcome(kind, body, fast=True) == outcome(kind, body, fast=False)


def test_the_corpus_reads_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = acks._ack_rows
    read_from_rows: list[int] = []

    def counted(*args: Any) -> Any:
        found = rows(*args)
        read_from_rows.append(found is not None)
        return found

    monkeypatch.setattr(acks, "_ack_rows", counted)
    files = corpus()
    kinds = {kind for kind, _ in simulated()}
    assert kinds == {"999", "277CA"} and len(simulated()) > 300
    rejected = 0
    for kind, body in files:
        same(kind, body)
        found = outcome(kind, body, fast=True)
        rejected += found[1] != "refused" and bool(found[1])
    assert rejected > 10  # rejections of both kinds are compared, not only acceptances
    # Not a comparison of the judge with itself: the simulator's files are read from rows.
    assert sum(read_from_rows) >= len(simulated())


def test_the_judge_sees_a_wrong_read(monkeypatch: pytest.MonkeyPatch) -> None:
    close = acks._close_claim

    def wrong(claim_id: str, *args: Any) -> None:
        close(claim_id + "X", *args)

    monkeypatch.setattr(acks, "_close_claim", wrong)
    with pytest.raises(AssertionError):
        for kind, body in corpus():
            same(kind, body)


@requires_shared
def test_a_file_the_parsers_refuse_is_refused_as_they_refuse_it() -> None:
    """No AK1, an IK5 without its AK2, a 999 sent as a 277CA, no ST: the segments' refusal."""
    rejected = (X12 / "x12_999_rejected.txt").read_text()
    ak1 = rejected.index("AK1")
    ak1_end = rejected.index("~", ak1) + 1
    for kind, text in (
        ("999", rejected[:ak1] + rejected[ak1_end:]),
        ("999", rejected.replace("AK2", "XK2", 1)),
        ("277CA", rejected),
        ("277CA", rejected.replace("ST*", "XT*")),
        ("999", "ISA*not x12"),
    ):
        assert outcome(kind, text.encode(), fast=True)[1] == "refused"
        same(kind, text.encode())


@FUZZ
@given(data=st.data())
def test_mutated_acknowledgments_read_the_same(data: st.DataObject) -> None:
    kind, body = data.draw(st.sampled_from(corpus()))
    text = mutate(body.decode("latin-1"), data, VALUES)
    same(kind, text.encode())
