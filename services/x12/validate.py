"""Validate X12 text with pyx12 and return its findings as plain messages.

pyx12 reports problems three ways: the error-handler tree (which we read through its JSON
visitor), ``logging`` records on the ``pyx12`` logger, and exceptions for input it cannot
walk at all. This module gathers all three so that "no messages" really means "valid".

pyx12 parses its XML maps again for every document, which is ~97% of the time it takes
to check one claim (~0.6 s of ~0.65 s here). The maps are never mutated by a walk (the
walker keeps its own counters), so they are loaded once per process and reused.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyx12.errors
import pyx12.map_if
import pyx12.params
import pyx12.x12n_document

_LOCK = threading.Lock()  # the handler is attached to a process-wide logger
_PARAMS = pyx12.params.params()
_load_map_file = pyx12.map_if.load_map_file


@functools.cache
def _cached_map(map_file: str, map_path: str | None) -> Any:
    """One parsed pyx12 map per file, for the life of the process."""
    return _load_map_file(map_file, _PARAMS, map_path)


def _load_cached(map_file: str, param: Any, map_path: str | None = None) -> Any:
    return _cached_map(map_file, map_path)


@contextmanager
def _maps_cached() -> Iterator[None]:
    """Let x12n_document reuse parsed maps while we hold the lock."""
    pyx12.map_if.load_map_file = _load_cached
    try:
        yield
    finally:
        pyx12.map_if.load_map_file = _load_map_file


class _Collect(logging.Handler):
    """Keeps pyx12's own ERROR records: some problems are only ever logged."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _json_errors(doc: dict[str, Any]) -> list[str]:
    """Flatten pyx12's JSON error tree into one message per error."""
    out: list[str] = []

    def add(where: str, errors: list[dict[str, Any]]) -> None:
        for err in errors:
            value = err.get("err_val")
            suffix = f" ({value})" if value else ""
            out.append(f"{where}: {err.get('err_cde')} {err.get('err_str')}{suffix}")

    for isa in doc.get("interchanges", []):
        add(f"ISA line {isa.get('cur_line')}", isa.get("errors", []))
        for gs in isa.get("groups", []):
            add(f"GS line {gs.get('cur_line')}", gs.get("errors", []))
            for st in gs.get("transactions", []):
                add(f"ST line {st.get('cur_line')}", st.get("errors", []))
                for seg in st.get("segments", []):
                    where = f"{seg.get('seg_id')} line {seg.get('cur_line')}"
                    add(where, seg.get("errors", []))
                    for ele in seg.get("elements", []):
                        add(f"{where} {ele.get('name')}", ele.get("errors", []))
    return out


def validate_x12(text: str, *, cache_maps: bool = True) -> list[str]:
    """Run pyx12 over ``text``; return its error messages (an empty list means valid).

    ``cache_maps=False`` parses pyx12's maps afresh, as pyx12 itself does (tests compare).
    """
    return validate_with_ack(text, cache_maps=cache_maps)[0]


def validate_with_ack(text: str, *, cache_maps: bool = True) -> tuple[list[str], str]:
    """``validate_x12``, and the 999 pyx12 writes for a 5010 document ('' when it wrote none).

    The 999 accepts or rejects each transaction set with pyx12's own IK3/IK4 findings; its
    envelope (control numbers, time) is pyx12's, so a caller that needs it deterministic
    keeps the AK1..AK9 body and writes its own envelope (the payer simulator does).
    """
    if not text.lstrip().startswith("ISA"):
        return ["not an X12 interchange: the text must begin with an ISA segment"], ""
    fd_ack = io.StringIO()  # pyx12 builds a 999 for 5010 837s
    fd_json = io.StringIO()
    collect = _Collect()
    logger = logging.getLogger("pyx12")
    with _LOCK, _maps_cached() if cache_maps else _nothing():
        logger.addHandler(collect)
        try:
            ok = pyx12.x12n_document.x12n_document(
                _PARAMS, io.StringIO(text), fd_ack, None, None, fd_json
            )
        except (pyx12.errors.X12Error, pyx12.errors.EngineError) as exc:
            return [*collect.messages, f"pyx12 could not process the document: {exc}"], ""
        except Exception as exc:  # pyx12 raises bare errors on badly malformed input
            return [*collect.messages, f"pyx12 failed: {type(exc).__name__}: {exc}"], ""
        finally:
            logger.removeHandler(collect)

    messages: list[str] = []
    raw = fd_json.getvalue()
    if raw:
        try:
            messages = _json_errors(json.loads(raw))
        except ValueError:
            messages = ["pyx12 wrote an unreadable JSON error report"]
    # Logged errors that the JSON tree did not carry (unreadable input, walker failures).
    logged = [m for m in collect.messages if not any(_same(m, j) for j in messages)]
    messages.extend(logged)
    if not ok and not messages:
        messages.append("pyx12 rejected the document without saying why")
    return messages, fd_ack.getvalue()


def _same(logged: str, reported: str) -> bool:
    """Whether a logged line repeats an error already taken from the JSON tree."""
    # Logged lines look like "Line:23 ELE:1 - text (value)"; the JSON message holds the text.
    text = logged.split(" - ", 1)[-1]
    return text in reported


@contextmanager
def _nothing() -> Iterator[None]:
    yield
