"""The values a schema marks as patient data (``"phi": true``), read from decoded records:
what the log and metric checks search for, for every topic."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from typing import Any


def _leaves(datum: Any) -> Iterator[Any]:
    if isinstance(datum, dict):
        for value in datum.values():
            yield from _leaves(value)
    elif isinstance(datum, list):
        for value in datum:
            yield from _leaves(value)
    elif datum is not None:
        yield datum


def marked_values(schema: Any, datum: Any, marked: bool = False) -> Iterator[Any]:
    """Every leaf value of ``datum`` that sits in a field marked phi (or under one)."""
    if marked:
        yield from _leaves(datum)
        return
    if isinstance(schema, list):  # a union: follow the branch the datum's shape fits
        for branch in schema:
            if isinstance(branch, dict):
                kind = branch.get("type")
                if (kind == "record" and isinstance(datum, dict)) or (
                    kind in ("array", "map") and isinstance(datum, list | dict)
                ):
                    yield from marked_values(branch, datum)
                    return
        return
    if not isinstance(schema, dict):
        return
    kind = schema.get("type")
    if isinstance(kind, dict | list):
        yield from marked_values(kind, datum)
    elif kind == "record" and isinstance(datum, dict):
        for field in schema["fields"]:
            yield from marked_values(
                field["type"], datum.get(field["name"]), field.get("phi") is True
            )
    elif kind == "array" and isinstance(datum, list):
        for item in datum:
            yield from marked_values(schema["items"], item)
    elif kind == "map" and isinstance(datum, dict):
        for item in datum.values():
            yield from marked_values(schema["values"], item)


def searchable(values: Iterator[Any]) -> set[str]:
    """The forms a log line or metric could show: text as is and upper-cased (X12 and
    names on claims are upper case), dates as ISO and CCYYMMDD, the start of long text.
    Short or purely numeric values (a ZIP code) would match metric numbers by chance."""
    found: set[str] = set()
    for value in values:
        if isinstance(value, datetime | date):
            found |= {value.isoformat()[:10], value.strftime("%Y%m%d")}
        elif isinstance(value, str):
            text = value.strip()[:40]
            if len(text) >= 4 and not (text.isdigit() and len(text) < 8):
                found |= {text, text.upper()}
    return found
