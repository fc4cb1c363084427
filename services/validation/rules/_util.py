"""Small helpers the rule modules share."""

from __future__ import annotations


def blank(value: str | None) -> bool:
    """True for None, an empty string or only spaces."""
    return value is None or not str(value).strip()


def one_line(text: str) -> str:
    """A multi-line tabular note as one sentence: 'head: item; item; item'."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " ".join(lines[:1] + ["; ".join(lines[1:])]).strip()


def where(line_number: int, code: str | None) -> str:
    """How a message names a service line: 'Line 2 (83036)', or 'Line 1' without a code."""
    return f"Line {line_number} ({code})" if code else f"Line {line_number}"
