"""``writer.line`` writes what ``seg(...).render()`` writes, and refuses what it refuses;
``writer.early`` makes a document's ``render`` write (or refuse) what it does of the
segment; ``writer.quantity`` writes a whole number of units as the rounding does; dates and
times are written as strftime writes them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from functools import partial
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
    # In a document, after a segment rendered and before one refused: refused where it was.
    around = [edi.seg("LX", "1"), None, edi.seg("REF", "6R", "A~B")]
    for document in (around[:2], around):
        built = [s or edi.seg(segment_id, *elements) for s in document]
        early = [s or edi.early(segment_id, *elements) for s in document]
        assert outcome(partial(edi.render, early)) == outcome(partial(edi.render, built))


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


@pytest.mark.parametrize("units", [1.0, 2.0, 3.0, 1e14, 999_999_999_999_999.0, 1e15, 1e16, 0.0])
def test_whole_units(units: float) -> None:
    assert edi.quantity(units) == edi.rounded_quantity(units)


def written(units: Any, write: Any) -> Any:
    try:
        return ("text", write(units))
    except ArithmeticError as exc:
        return ("refused", type(exc).__name__)


@settings(max_examples=500, deadline=None, database=None)
@given(
    st.one_of(
        st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12),
        st.integers(min_value=-(10**6), max_value=10**15).map(float),
        st.decimals(allow_nan=False, allow_infinity=False, places=4, max_value=10**9),
    )
)
def test_any_units(units: Any) -> None:
    assert written(units, edi.quantity) == written(units, edi.rounded_quantity)


@settings(max_examples=500, deadline=None, database=None)
@given(
    st.datetimes(
        min_value=datetime(1, 1, 1),
        timezones=st.one_of(st.none(), st.just(UTC), st.just(timezone(timedelta(hours=-5)))),
    )
)
def test_stamps_are_strftime(created: datetime) -> None:
    """An interchange's dates and times are written as strftime writes them."""
    assert edi.ccyymmdd(created) == created.strftime("%Y%m%d")
    assert edi.hhmm(created) == created.strftime("%H%M")


@pytest.mark.parametrize("year", [1, 99, 999, 1000, 2026, 9999])
def test_short_and_long_years(year: int) -> None:
    created = datetime(year, 3, 4, 5, 6, tzinfo=UTC)
    assert edi.ccyymmdd(created) == created.strftime("%Y%m%d")
    envelope = edi.Envelope("CLAIMFLOW", "CH01", 7, created, "HC", "005010X222A1")
    isa, gs, *_ = edi.interchange(envelope, [[edi.seg("ST", "837", "0001")]])
    assert isa.split("*")[9:11] == [created.strftime("%y%m%d"), created.strftime("%H%M")]
    assert gs.split("*")[4:6] == [created.strftime("%Y%m%d"), created.strftime("%H%M")]


def test_d8_writes_what_strftime_writes() -> None:
    days = [date(1, 1, 1), date(999, 12, 31), date(1000, 1, 1), date(1969, 7, 20)]
    days += [date(1900, 1, 1) + timedelta(days=n) for n in range(0, 60000, 7)]
    for day in days * 2:  # written, then kept
        assert edi.d8(day) == day.strftime("%Y%m%d")
    # A time is a date too: written by its own day, never kept for an equal time elsewhere.
    late = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
    early_east = datetime(2026, 3, 2, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    assert late == early_east
    assert (edi.d8(late), edi.d8(early_east)) == ("20260301", "20260302")
