"""Fuzzing the parsers of what payers send (835, 999, 277CA): arbitrary text and mutated
real documents never crash them; every refusal is an InputError naming where and why.
X12_FUZZ_EXAMPLES makes the run longer (the suite keeps it bounded)."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_payer_sim_front_end import files, incoming, interchange

from pipeline.errors import InputError
from services.claims.acks import parse_277ca, parse_999
from services.remittance.era import parse_835_transactions
from sim.payer_app import PayerSimOptions, PayerSimStage

EXAMPLES = int(os.environ.get("X12_FUZZ_EXAMPLES", "300"))
PARSERS: dict[str, Callable[[str], Any]] = {
    "835": parse_835_transactions,
    "999": parse_999,
    "277CA": parse_277ca,
}
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@cache
def documents() -> dict[str, str]:
    """A real 835, 999 and 277CA, as the payer simulator answers an 837 of 6 claims."""
    outs = list(
        PayerSimStage(PayerSimOptions(front_end_rejection_rate=0.3)).handle_batch(
            incoming(interchange(6, icn=777, prefix="Z"))
        )
    )
    return {kind: files(outs, kind)[0].body.decode() for kind in PARSERS}


def check(kind: str, text: str) -> None:
    try:
        PARSERS[kind](text)
    except InputError as exc:
        assert exc.field and exc.reason, exc  # names where, and says why
    # Anything else propagates and fails the test: a crash, not a refusal.


def test_the_seed_documents_parse() -> None:
    docs = documents()
    assert parse_835_transactions(docs["835"]) and parse_999(docs["999"])
    assert parse_277ca(docs["277CA"])


@pytest.mark.parametrize("kind", sorted(PARSERS))
@FUZZ
@given(text=st.text(max_size=400))
def test_arbitrary_text(kind: str, text: str) -> None:
    check(kind, text)


ELEMENT_VALUES = ["", "X", "-1", "99999999999", "ABC", "1.2.3", "20261399", ":", "^", "0"]


def mutate(
    text: str,
    data: st.DataObject,
    values: list[str] = ELEMENT_VALUES,
    blanks: tuple[str, ...] = (),
) -> str:
    """``text`` with 1-4 segments dropped, repeated, swapped, changed in one element,
    truncated or (given ``blanks``) replaced by one of them."""
    segments = text.split("~")
    ops = ["drop", "dup", "swap", "element", "truncate"] + (["blank"] if blanks else [])
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(segments) - 1))
        op = data.draw(st.sampled_from(ops))
        if op == "drop" and len(segments) > 1:
            segments.pop(i)
        elif op == "dup":
            segments.insert(i, segments[i])
        elif op == "swap":
            j = data.draw(st.integers(0, len(segments) - 1))
            segments[i], segments[j] = segments[j], segments[i]
        elif op == "element":
            parts = segments[i].split("*")
            k = data.draw(st.integers(0, len(parts) - 1))
            parts[k] = data.draw(st.sampled_from(values) | st.text(max_size=8))
            segments[i] = "*".join(parts)
        elif op == "truncate":
            segments[i] = segments[i][: data.draw(st.integers(0, len(segments[i])))]
        elif op == "blank":
            segments[i] = data.draw(st.sampled_from(blanks))
    return "~".join(segments)


@pytest.mark.parametrize("kind", sorted(PARSERS))
@FUZZ
@given(data=st.data())
def test_mutated_documents(kind: str, data: st.DataObject) -> None:
    check(kind, mutate(documents()[kind], data))
