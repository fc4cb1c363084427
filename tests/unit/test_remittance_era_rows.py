"""An 835 read from its element lists (``era._read_rows``) is the one read from its segments.

``read_835`` reads an interchange without defects from the X12 reader's element lists and
anything else from its segments (``read_835(..., fast=False)``, the judge): the corpus's
835s (the fixtures, the public sample 835, the simulator's 835s of both mixes) and mutations
of them (segments dropped, repeated, swapped, truncated, an element changed: the defects,
warnings and refusals of the segment reader) give the same ``Read835`` (equal, and the same
repr: the same types), or the same refusal, naming the same field for the same reason.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_remittance_split_json import corpus_files
from test_x12_fuzz import ELEMENT_VALUES, FUZZ, mutate

from pipeline.errors import InputError
from services.remittance import era
from services.remittance.era import read_835

#: What an 835's elements hold, and what a payer gets wrong in them.
VALUES = [
    *ELEMENT_VALUES,
    " ",
    "1E5",
    "NaN",
    "1e999999",
    "HC",
    "HC:",
    ":99213",
    "22",
    "25",
    "4",
    "PR",
    "CO",
    "ZZ",
    "405",
    "472",
    "232",
    "B6",
    "6R",
    "HE",
    "F8",
]


def outcome(data: bytes | str, *, fast: bool) -> Any:
    try:
        read = read_835(data, fast=fast)
    except InputError as exc:
        return ("refused", exc.field, exc.reason)
    return ("read", read, repr(read))


def same(data: bytes | str) -> None:
    assert outcome(data, fast=True) == outcome(data, fast=False)


@pytest.fixture(scope="module")
def bodies() -> list[bytes]:
    return [f.body for f in corpus_files()]


def test_the_corpus_reads_the_same(bodies: list[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    rows = era._read_rows
    read_from_rows: list[int] = []

    def counted(*args: Any) -> Any:
        found = rows(*args)
        read_from_rows.append(1)
        return found

    monkeypatch.setattr(era, "_read_rows", counted)
    for body in bodies:
        same(body)
    # Not a comparison of the judge with itself: most of the corpus is read from rows.
    assert len(read_from_rows) > len(bodies) // 2


def test_the_judge_sees_a_wrong_read(bodies: list[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    svc_row = era._svc_row

    def wrong(*args: Any) -> dict[str, Any]:
        return svc_row(*args) | {"revenue_code": "X"}

    monkeypatch.setattr(era, "_svc_row", wrong)
    with pytest.raises(AssertionError):
        for body in bodies:
            same(body)


@FUZZ
@given(data=st.data())
def test_mutated_835s_read_the_same(bodies: list[bytes], data: st.DataObject) -> None:
    body = data.draw(st.sampled_from(bodies)).decode("latin-1")
    same(mutate(body, data, VALUES))
