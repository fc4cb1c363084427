"""Excludes1 ("NOT CODED HERE"): two diagnoses the ICD-10-CM tabular says never go
together on one claim.

The notes sit on a code or any of its ancestors (category, block, chapter); the excluded
codes are the ones in the notes' parentheses: single codes (E11.A), categories (E10.-)
and ranges (O10-O11, P70.0-P70.2). The tabular is simple_icd_10_cm's (April 2026).
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Iterable, Iterator

from services.refdata.codesets import dotted, normalize_code
from services.validation.engine import NONE, Context, Hit, rule

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import simple_icd_10_cm as icd

_CODE = r"[A-Z][0-9][0-9A-Z](?:\.[0-9A-Z]{1,4})?"
# A trailing ".-" or "-" means "and every code under it"; "-" before a code is a range.
_REF = re.compile(rf"({_CODE})(?:\.?-(?![A-Z0-9]))?(?:\s*-\s*({_CODE})(?:\.?-)?)?")
_PARENS = re.compile(r"\(([^()]*)\)")


def _refs(text: str) -> Iterator[tuple[str, str]]:
    """(low, high) code prefixes a note names in parentheses."""
    for group in _PARENS.findall(text):
        for item in group.split(","):
            m = _REF.fullmatch(item.strip())  # "T36-T50 with fifth character 5": skipped
            if m:
                low = m.group(1).replace(".", "")
                yield low, (m.group(2) or m.group(1)).replace(".", "")


def _in(code: str, low: str, high: str) -> bool:
    return code[: len(low)] >= low and code[: len(high)] <= high


@functools.lru_cache(maxsize=32768)
def excluded_by(code: str) -> tuple[tuple[str, str, str], ...]:
    """(low, high, note) ranges the code's Excludes1 notes (and its ancestors') exclude."""
    dotted_code = dotted(code)
    if not icd.is_valid_item(dotted_code):
        return ()
    found: list[tuple[str, str, str]] = []
    for node in [dotted_code, *icd.get_ancestors(dotted_code)]:
        for note in icd.get_excludes1(node):
            for low, high in _refs(note):
                if not _in(code, low, high):  # a note never excludes the code it sits on
                    found.append((low, high, note))
    return tuple(found)


@functools.lru_cache(maxsize=65536)
def excludes(code: str, other: str) -> bool:
    """Whether one of ``code``'s Excludes1 ranges (``excluded_by``) takes in ``other``."""
    return any(_in(other, low, high) for low, high, _ in excluded_by(code))


@functools.lru_cache(maxsize=65536)
def any_pair(codes: tuple[str, ...]) -> bool:
    """Whether two of the codes are in an Excludes1 relation (``excludes``)."""
    return any(excludes(a, b) for a in codes for b in codes if a != b)


@rule(
    "CF-DX-003",
    "error",
    "Two diagnoses in an Excludes1 relation (NOT CODED HERE) cannot be reported together.",
    category="excludes1",
    fix_hint="Keep the code the documentation supports and remove the other; both may stay "
    "only when the two conditions are unrelated, with documentation that says so.",
)
def excludes1_pairs(ctx: Context) -> Iterable[Hit]:
    codes = [normalize_code(d.code) for d in ctx.coded.diagnoses]
    # Most claims have no such pair: found so by one kept answer for the claim's codes, not
    # by each of a code's ranges against every other code (3.6 -> 1.5 us per encounter of
    # the stage benchmark's office visits, the costliest rule but one).
    if not any_pair(tuple(codes)):
        return NONE
    return _pairs(codes)


def _pairs(codes: list[str]) -> Iterator[Hit]:
    """The hits of ``excludes1_pairs``: each pair once, with the note that excludes it."""
    reported: set[frozenset[str]] = set()
    for i, code in enumerate(codes):
        for low, high, note in excluded_by(code):
            for j, other in enumerate(codes):
                if j == i or other == code or not _in(other, low, high):
                    continue
                pair = frozenset((code, other))
                if pair in reported:
                    continue
                reported.add(pair)
                yield Hit(
                    f"diagnoses[{max(i, j)}].code",
                    f"Diagnoses {min(i, j) + 1} and {max(i, j) + 1} ({dotted(codes[min(i, j)])} "
                    f"and {dotted(codes[max(i, j)])}) exclude each other: {dotted(code)} "
                    f"Excludes1 {note}.",
                )
