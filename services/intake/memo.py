"""A bounded memo of what the parsing libraries made of inputs they have already seen.

fhir.resources and hl7apy are deterministic: the same element (a FHIR CodeableConcept, an
HL7 field) in the same context gives the same result every time. EHR feeds repeat most of
their elements (code systems, codes, payers, facilities, clinicians), and both libraries
spend most of intake's time building Python objects element by element, so remembering
their results is most of the speed. Only successful results are kept: anything that fails
is parsed again by the library the ordinary way, which gives the error.

The memo is per process and bounded (least recently used out). Entries hold message
content (codes, names) for as long as they stay in it, never on disk or in a log.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from contextlib import suppress
from typing import Any, Generic, TypeVar

V = TypeVar("V")


class Memo(Generic[V]):
    """A least-recently-used map with at most ``size`` entries."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[Hashable, V] = OrderedDict()

    def get(self, key: Hashable) -> V | None:
        """The value for key, or None; a hit becomes the most recently used."""
        value = self._data.get(key)
        if value is not None:
            # KeyError: evicted meanwhile by another thread; the value is still valid.
            with suppress(KeyError):
                self._data.move_to_end(key)
        return value

    def put(self, key: Hashable, value: V) -> None:
        """Remember a value, dropping the least recently used entry beyond ``size``."""
        self._data[key] = value
        while len(self._data) > self.size:
            try:
                self._data.popitem(last=False)
            except KeyError:
                break

    def clear(self) -> None:
        """Forget everything."""
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


# --- decoded JSON kept as it was sent ---------------------------------------------------
#
# A part of a message kept with what was made of it is found again by comparing the part
# with a copy of the JSON it was made from: ``==`` runs in C, but JSON values that compare
# equal in Python are not always the same JSON (1, 1.0, true, 1.50 and 1.5), so the copy's
# non-string values are checked again, each by its exact type and repr.

Leaf = tuple[tuple[Any, ...], type, str]  # where in the copy, the exact type, the repr


class _TooLarge(Exception):
    pass


def json_copy(value: Any, max_len: int, max_leaves: int) -> tuple[Any, list[Leaf]] | None:
    """A copy of decoded JSON (its objects and lists; values are immutable) and its
    non-string values; None when a string is longer than ``max_len`` or there are more
    than ``max_leaves`` non-string values (not worth keeping)."""
    leaves: list[Leaf] = []

    def copy(item: Any, path: tuple[Any, ...]) -> Any:
        kind = type(item)
        if kind is str:
            if len(item) > max_len:
                raise _TooLarge
            return item
        if kind is dict:
            return {k: copy(v, (*path, k)) for k, v in item.items()}
        if kind is list:
            return [copy(v, (*path, i)) for i, v in enumerate(item)]
        leaves.append((path, kind, repr(item)))
        if len(leaves) > max_leaves:
            raise _TooLarge
        return item

    try:
        return copy(value, ()), leaves
    except (_TooLarge, RecursionError):
        return None


def same_json(data: Any, copied: Any, leaves: list[Leaf]) -> bool:
    """Whether decoded JSON is exactly the JSON ``json_copy`` copied (with its leaves)."""
    try:
        if data != copied:
            return False
    except RecursionError:
        return False
    for path, kind, text in leaves:
        value = data
        for step in path:
            value = value[step]
        if type(value) is not kind or repr(value) != text:
            return False
    return True
