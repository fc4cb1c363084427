"""The runner's fast build of a consumed record (``stage.incoming``) gives what the
dataclass's own ``Incoming(...)`` gives: the judge, field by field, for every field; and
the same for the record it forwards (``stage.make_out`` against ``Out(...)``)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from pipeline.stage import Incoming, Out, incoming, make_out

CASES: list[tuple[Any, ...]] = [
    ("encounters.collected.v1", "enc-1", object(), b"\x02ab", {}, 0, 7, 1_700_000_000_000),
    ("encounters.coded.v1", None, None, b"", {"h": b"v"}, 2, 0, 0, ("a.v1", 1, 3)),
    ("x", "k", {"nested": [1]}, b"raw", {"a": b"", "b": b"\x00"}, 5, 2**40, -1, None),
]


def _same_instance(fast: Any, judge: Any, cls: type) -> None:
    """The fast builder's object is the dataclass's: its type, equal, and each field the
    very object the dataclass holds (a field added to ``cls`` must be built too)."""
    assert type(fast) is cls
    assert fast == judge
    for f in dataclasses.fields(cls):
        assert getattr(fast, f.name) is getattr(judge, f.name), f.name


@pytest.mark.parametrize("args", CASES)
def test_incoming_equals_the_dataclass(args: tuple[Any, ...]) -> None:
    fast, judge = incoming(*args), Incoming(*args)
    _same_instance(fast, judge, Incoming)
    assert vars(fast) == vars(judge)
    assert list(vars(fast)) == list(vars(judge))  # same order: same repr and asdict


def test_incoming_stays_frozen_and_replaceable() -> None:
    fast = incoming(*CASES[0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.key = "other"  # type: ignore[misc]
    topic, _key, *rest = CASES[0]
    assert dataclasses.replace(fast, key="k2") == Incoming(topic, "k2", *rest)
    assert repr(fast) == repr(Incoming(*CASES[0]))


OUT_CASES: list[tuple[Any, ...]] = [
    ("validation.by-patient.v1", "patient-1", None, {"h": b"v"}, b"\xc3\x01raw"),
    ("claims.postings-by-encounter.v1", "", None, {}, b""),
    ("x", "k", object(), {"a": b"", "b": b"\x00"}, None),
]


@pytest.mark.parametrize("args", OUT_CASES)
def test_out_equals_the_dataclass(args: tuple[Any, ...]) -> None:
    fast, judge = make_out(*args), Out(*args)
    _same_instance(fast, judge, Out)
    assert list(vars(fast)) == list(vars(judge))
    assert repr(fast) == repr(judge)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.key = "other"  # type: ignore[misc]
