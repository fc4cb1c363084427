"""The X12 reader's own split gives what pyx12's reader gives, segment for segment, and
every refusal is pyx12's: on real documents (the payer simulator's 835, 999 and 277CA,
claimflow's 837s, the 835 fixtures), on mutations of them and on arbitrary text."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_payer_sim_front_end import interchange
from test_x12_fuzz import documents, mutate

from pipeline.errors import InputError
from services.x12 import reader
from services.x12.reader import read_segments

FIXTURES = Path(__file__).parent.parent / "fixtures" / "835"
EXAMPLES = int(os.environ.get("X12_FUZZ_EXAMPLES", "100"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def pyx12_segments(text: str, *, field: str | None = None) -> Iterator[reader.Segment]:
    """The reference: every segment read by pyx12's X12Reader."""

    def read() -> Iterator[reader.Segment]:
        yield from reader._read_pyx12(reader._check_isa(text))

    if field is None:
        yield from read()
        return
    try:
        yield from read()
    except InputError as exc:
        raise InputError(field, f"not a readable X12 interchange: {exc}") from exc


def outcome(read: Callable[..., Iterator[reader.Segment]], text: str) -> Any:
    try:
        return ("read", list(read(text, field="body")))
    except InputError as exc:
        return ("refused", exc.field, exc.reason)


def same(text: str) -> None:
    assert outcome(read_segments, text) == outcome(pyx12_segments, text)


def real_documents() -> dict[str, str]:
    docs = dict(documents())
    docs["837P"] = interchange(6, icn=778, prefix="Y")[0].x12
    for path in sorted(FIXTURES.glob("*.835")):
        docs[path.name] = path.read_bytes().decode("latin-1")
    return docs


@pytest.mark.parametrize("name", sorted(real_documents()))
def test_real_documents_are_split_here_and_read_as_pyx12_reads_them(name: str) -> None:
    text = real_documents()[name]
    assert reader._split(reader._check_isa(text)) is not None  # the fast path is taken
    same(text)


def test_a_document_with_newlines_between_segments_reads_the_same() -> None:
    text = documents()["835"].replace("~", "~\r\n")
    assert reader._split(text) is not None
    same(text)


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t.replace("00501", "00601", 1),  # a version pyx12 does not know
        lambda t: t.replace("~GS", "~   ~GS", 1),  # a blank segment
        lambda t: t.replace("~GS", "~IEA*1*000000001~GS", 1),  # a trailer without header
        lambda t: t[:50] + t[50:106].replace("*", "", 1) + "*" + t[106:],  # ISA elements
        lambda t: t.replace("~ST", "~~ST", 1),  # an empty segment ends the reading
        lambda t: t.replace("~GS", "~ GS", 1),  # a leading space
        lambda t: t.rsplit("~", 2)[0],  # no terminator after the last segment
    ],
)
def test_what_pyx12_refuses_or_bends_is_read_as_pyx12_does(change: Callable[[str], str]) -> None:
    for text in documents().values():
        same(change(text))


@FUZZ
@given(text=st.text(max_size=400))
def test_arbitrary_text(text: str) -> None:
    same(text)


@FUZZ
@given(data=st.data(), kind=st.sampled_from(["835", "999", "277CA"]))
def test_mutated_documents(data: st.DataObject, kind: str) -> None:
    values = ["", "X", ":", "^", " ", "\r\n", "ISA", "IEA", "GE", "SE"]
    same(mutate(documents()[kind], data, values, blanks=("", " ", "\r\n", " SE*1*1")))


@pytest.mark.parametrize("name", sorted(real_documents()))
def test_one_elements_components_are_those_of_all_of_them(name: str) -> None:
    """``comps`` splits the one element asked for (``components`` splits them all): the
    same components, before and after ``components`` was asked, and for a segment pyx12
    read."""
    text = reader._check_isa(real_documents()[name])
    for seg, judge in zip(reader._split(text) or [], reader._read_pyx12(text), strict=True):
        for pos in range(-1, len(seg.elements) + 3):
            whole = judge.components[pos - 1] if 0 < pos <= len(judge.elements) else ()
            assert seg.comps(pos) == whole
            assert judge.comps(pos) == whole
        for pos in range(-1, len(seg.elements) + 3):
            seg.components  # noqa: B018 - now split, all of them
            assert seg.comps(pos) == (
                seg.components[pos - 1] if 0 < pos <= len(seg.elements) else ()
            )
