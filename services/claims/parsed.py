"""How the claims stage's stores keep the models they need back (a billed verdict, a
payer's posting), and those models kept parsed.

A model is stored as the Avro single-object encoding of its topic's schema (which names
the schema version it was written with) in base64 (``avro_text``): the very bytes the stage
received when it stores what it received, so nothing is written again, and a third to a
half of its JSON once escaped in a changelog record. Older versions stored its JSON, which
``read_text`` still reads (a JSON object starts with ``{``, which base64 never does),
whether from a file of that version or restored from its changelog records.

``Parsed`` keeps models by the text a store wrote them as, so that reading one back soon
after does not parse it again (content-addressed: a text always reads as the model kept
under it). ``STORE_PAGE_SIZE``: the page size of the stores' files.
"""

from __future__ import annotations

from base64 import b64decode, b64encode
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from pydantic import BaseModel

from pipeline.serde import registry

M = TypeVar("M", bound=BaseModel)


def avro_text(topic: str, value: BaseModel, encoded: bytes | None = None) -> str:
    """``value`` as a store keeps it: its Avro record of ``topic`` in base64. ``encoded``:
    the record ``value`` was decoded from (what the stage received), used as it is; bytes
    that are not a record of ``topic`` are not used (``value`` is encoded instead)."""
    reg = registry()
    if encoded is None or not reg.known_writer(topic, encoded):
        encoded = reg.encode(topic, value)  # type: ignore[arg-type]
    return b64encode(encoded).decode("ascii")


def read_text(topic: str, model: type[M], text: str) -> M:
    """The model ``avro_text`` wrote, or the JSON an older version stored."""
    if text.startswith("{"):
        return model.model_validate_json(text)
    value = registry().decode(topic, b64decode(text, validate=True))
    if not isinstance(value, model):
        raise TypeError(f"a stored {model.__name__} decoded as {type(value).__name__}")
    return value


class Parsed(Generic[M]):
    """The last ``most`` models of one type, by their text: JSON, unless ``parse`` (which
    reads the text into the model) says otherwise."""

    def __init__(self, model: type[M], most: int, parse: Callable[[str], M] | None = None) -> None:
        self.model = model
        self.most = most
        self.parse = parse or model.model_validate_json
        self._by_text: OrderedDict[str, M] = OrderedDict()

    @classmethod
    def of_topic(cls, topic: str, model: type[M], most: int) -> Parsed[M]:
        """Models of ``topic`` kept as ``avro_text`` wrote them (or as older JSON)."""
        return cls(model, most, lambda text: read_text(topic, model, text))

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


STORE_PAGE_SIZE = 2048
"""The page size of a claims store file when it is created (SQLite's default is 4096). Its
indexes are keyed by random ids (claim, encounter and event ids): once an index has more
leaf pages than a batch inserts keys, each insert dirties a leaf page of its own, and every
dirtied page is written whole to the write-ahead log at the commit. Pages half as large
write half those bytes, so a batch's cost stays nearer a fresh store's as history grows
(1 KB pages cost more CPU: rows such as a billed verdict then spill over several pages).
A file that exists keeps the page size it was created with (``BatchStore``)."""
