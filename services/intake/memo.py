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
from typing import Generic, TypeVar

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
