"""``writer.line`` writes what ``seg(...).render()`` writes, and refuses what it refuses."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import InputError
from services.x12 import writer as edi

VALUES = st.one_of(
    st.sampled_from(["", "", "A", "12.5", "HC", "*", ":", "^", "~", "X~Y", "A:B"]),
    st.text(alphabet="AB1 *:^~", max_size=4),
)
ELEMENTS = st.one_of(VALUES, st.lists(VALUES, max_size=3).map(lambda p: edi.comp(*p)))


def outcome(make: Any) -> Any:
    try:
        return ("text", make())
    except InputError as exc:
        return ("refused", exc.field, exc.reason)


def same(segment_id: str, *elements: edi.Element) -> None:
    expected = outcome(lambda: edi.seg(segment_id, *elements).render())
    assert outcome(lambda: edi.line(segment_id, *elements)) == expected


@pytest.mark.parametrize(
    "elements",
    [
        (),
        ("",),
        ("", ""),
        ("A", "", ""),
        ("A", "", "B"),
        ("1", "2*3"),
        ("~",),
        (edi.comp("HC", "99213", "", ""), "125", ""),
        (edi.comp("", ""), ""),
        (edi.comp("A:B"),),
    ],
)
def test_edge_cases(elements: tuple[edi.Element, ...]) -> None:
    same("CLP", *elements)


def test_isa_separators_are_allowed_where_render_allows_them() -> None:
    elements = ["00", " " * 10, "00", " " * 10, "ZZ", "A".ljust(15), "ZZ", "B".ljust(15)]
    elements += ["260101", "1200", "^", "00501", "000000001", "0", "P", ":"]
    same("ISA", *elements)
    same("ISA", *elements[:-1], "~")


@settings(max_examples=500, deadline=None, database=None)
@given(st.sampled_from(["CAS", "ISA", "NM1"]), st.lists(ELEMENTS, max_size=18))
def test_any_elements(segment_id: str, elements: list[edi.Element]) -> None:
    same(segment_id, *elements)
