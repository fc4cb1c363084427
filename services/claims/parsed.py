"""Models kept by the text a store wrote them as, so that reading one back soon after
does not parse and validate it again (content-addressed: a text always parses to the
model kept under it). The text is the model's JSON, or any form ``parse`` reads."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


class Parsed(Generic[M]):
    """The last ``most`` models of one type, by their text: JSON, unless ``parse`` (which
    reads the text into the model) says otherwise."""

    def __init__(self, model: type[M], most: int, parse: Callable[[str], M] | None = None) -> None:
        self.model = model
        self.most = most
        self.parse = parse or model.model_validate_json
        self._by_text: OrderedDict[str, M] = OrderedDict()

    def get(self, text: str) -> M:
        """The model of ``text``: the one kept under it, else parsed (and kept)."""
        value = self._by_text.get(text)
        if value is None:
            value = self.parse(text)
        self.keep(text, value)
        return value

    def keep(self, text: str, value: M) -> None:
        """``value``, just written as ``text`` (the form ``parse`` reads)."""
        self._by_text[text] = value
        self._by_text.move_to_end(text)
        while len(self._by_text) > self.most:
            self._by_text.popitem(last=False)
