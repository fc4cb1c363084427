"""ICD-10-CM tabular conventions a coder applies to a set of codes, read from the tabular.

- Excludes1 ("NOT CODED HERE"): two codes that must not be reported together. The notes
  sit on a code or any of its ancestors; the excluded codes are the ones in parentheses.
- Use additional code: a note that *requires* a second code. Most such notes are
  conditional ("if applicable", "such as", "any"); the ones that name a dimension of the
  condition itself (its stage, type, severity or site: "use additional code to identify
  stage of chronic kidney disease (N18.1-N18.6)") are not, and their absence is an error.
- Code first: an etiology/manifestation pair; the code named in the note goes first.

Code references are read from the notes' parentheses: single codes (E11.A), categories
(E08.-), and ranges (O10-O11, N18.1-N18.6).
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import simple_icd_10_cm as icd

_CODE = r"[A-Z][0-9][0-9A-Z](?:\.[0-9A-Z]{0,4})?"
_ITEM = re.compile(rf"({_CODE})\.?-?(?:\s*-\s*({_CODE})\.?-?)?")
_PARENS = re.compile(r"\(([^()]*)\)")
_FROM = re.compile(r"\bfrom (?:category )?([A-Z][0-9][0-9A-Z])\b")
_REQUIRED_DIMENSION = re.compile(
    r"^(?:external cause )?codes?\b.{0,30}?\bto (?:identify|specify) (?:the )?"
    r"(?:stage|type|severity|site)\b",
    re.IGNORECASE,
)
_CONDITIONAL = re.compile(
    r"if applicable|where applicable|if known|if present|if desired|such as|\bany\b|"
    r"when specified",
    re.IGNORECASE,
)
_STARTS_INSTRUCTION = re.compile(r"^(?:external cause )?(?:additional )?codes?\b", re.IGNORECASE)


@dataclass(frozen=True)
class CodeRange:
    """Codes from ``low`` to ``high`` by prefix: E08 covers E08 and every code under it."""

    low: str
    high: str

    def __contains__(self, code: object) -> bool:
        if not isinstance(code, str):
            return False
        return code[: len(self.low)] >= self.low and code[: len(self.high)] <= self.high

    def __str__(self) -> str:
        if self.low == self.high:
            return _dotted(self.low)
        return f"{_dotted(self.low)}-{_dotted(self.high)}"


@dataclass(frozen=True)
class Instruction:
    """One tabular note: its text, the codes it names, and the code it is written on."""

    text: str
    codes: tuple[CodeRange, ...]
    on: str


def _dotted(code: str) -> str:
    return f"{code[:3]}.{code[3:]}" if len(code) > 3 else code


def code_refs(text: str) -> tuple[CodeRange, ...]:
    """The codes a note names in parentheses (and "from I12"), as prefix ranges."""
    found: list[CodeRange] = []
    for group in _PARENS.findall(text):
        for item in group.split(","):
            m = _ITEM.fullmatch(item.strip())
            if m is None:
                m = _ITEM.match(item.strip())  # "T36-T50 with fifth character 5": the range
            if m is None:
                continue
            low = m.group(1).replace(".", "")
            high = (m.group(2) or m.group(1)).replace(".", "")
            found.append(CodeRange(low, high))
    found.extend(CodeRange(c, c) for c in _FROM.findall(text))
    return tuple(found)


def _lineage(code: str) -> list[str]:
    """The code and its ancestors up to (not including) the chapter, nearest first."""
    if not icd.is_valid_item(code):
        return []
    return [code, *(a for a in icd.get_ancestors(code) if not icd.is_chapter(a))]


def _instructions(raw: str) -> list[str]:
    """A node's multi-line note split into instructions (a line starting "code ...")."""
    out: list[str] = []
    for line in raw.splitlines():
        line = line.strip()
        if not line:
            continue
        if not out or _STARTS_INSTRUCTION.match(line):
            out.append(line)
        else:
            out[-1] = f"{out[-1]} {line}"
    return out


@functools.lru_cache(maxsize=16384)
def excludes1(code: str) -> tuple[Instruction, ...]:
    """Excludes1 notes that apply to a code (its own and its ancestors')."""
    notes: list[Instruction] = []
    for node in _lineage(code):
        for text in icd.get_excludes1(node):
            refs = tuple(r for r in code_refs(text) if code not in r)
            if refs:
                notes.append(Instruction(text, refs, node))
    return tuple(notes)


@functools.lru_cache(maxsize=16384)
def required_additional(code: str) -> tuple[Instruction, ...]:
    """ "Use additional code" notes on the code or its ancestors that are not optional."""
    notes: list[Instruction] = []
    for node in _lineage(code):
        for text in _instructions(icd.get_use_additional_code(node)):
            if _REQUIRED_DIMENSION.match(text) and not _CONDITIONAL.search(text):
                refs = code_refs(text)
                if refs:
                    notes.append(Instruction(text, refs, node))
    return tuple(notes)


@functools.lru_cache(maxsize=16384)
def code_first(code: str) -> tuple[Instruction, ...]:
    """ "Code first" notes on the code or its ancestors (the etiology named goes first)."""
    notes: list[Instruction] = []
    for node in _lineage(code):
        for text in _instructions(icd.get_code_first(node)):
            refs = code_refs(text)
            if refs:
                notes.append(Instruction(text, refs, node))
    return tuple(notes)


@dataclass(frozen=True)
class Conflict:
    """Two codes an Excludes1 note forbids together."""

    code: str
    excluded: str
    note: Instruction


def excludes1_conflicts(codes: Sequence[str]) -> list[Conflict]:
    """Pairs of the codes that an Excludes1 note forbids together (each pair once)."""
    return list(_excludes1_conflicts(tuple(codes)))


@functools.lru_cache(maxsize=16384)
def _excludes1_conflicts(codes: tuple[str, ...]) -> tuple[Conflict, ...]:
    # The same code lists come back encounter after encounter (a practice's usual
    # problems), and the pairwise check over every note was a tenth of coding's CPU.
    out: list[Conflict] = []
    seen: set[frozenset[str]] = set()
    for a in codes:
        for note in excludes1(_dotted(a)):
            for b in codes:
                if b == a or frozenset((a, b)) in seen:
                    continue
                if any(b in r for r in note.codes):
                    seen.add(frozenset((a, b)))
                    out.append(Conflict(a, b, note))
    return tuple(out)


def missing_additional(codes: Sequence[str]) -> list[tuple[str, Instruction]]:
    """Codes whose required "use additional code" has no matching code in the list."""
    out: list[tuple[str, Instruction]] = []
    for a in codes:
        for note in required_additional(_dotted(a)):
            if not any(b != a and any(b in r for r in note.codes) for b in codes):
                out.append((a, note))
    return out


def etiology_first(codes: Sequence[str]) -> list[str]:
    """The codes reordered so each code named in another's "code first" note precedes it.

    Only moves what a note requires, keeps every other relative order, and never loops
    (a code moves at most once ahead of each code naming it).
    """
    order = list(codes)
    for _ in range(len(order)):
        moved = False
        for i, a in enumerate(order):
            for note in code_first(_dotted(a)):
                for j in range(i + 1, len(order)):
                    b = order[j]
                    if any(b in r for r in note.codes):
                        order.insert(i, order.pop(j))
                        moved = True
                        break
                if moved:
                    break
            if moved:
                break
        if not moved:
            break
    return order


# Chapter 18 blocks name the body system their symptoms belong to; the chapters of the
# definitive diagnoses of that system (first letter of the code) follow from the words.
_SYSTEM_CHAPTERS = (
    ("circulatory", "I"),
    ("respiratory", "J"),
    ("digestive", "K"),
    ("skin", "L"),
    ("nervous", "G"),
    ("musculoskeletal", "M"),
    ("genitourinary", "N"),
    ("urine", "N"),
    ("cognition", "F"),
    ("speech", "FG"),
    ("general", "ABJ"),  # fever, malaise and the like beside an infection
)


@functools.lru_cache(maxsize=4096)
def symptom_chapters(code: str) -> frozenset[str]:
    """For a chapter 18 symptom code, the chapters whose diagnoses explain it (I.B.5)."""
    if not code.startswith("R"):
        return frozenset()
    dotted_code = _dotted(code)
    if not icd.is_valid_item(dotted_code):
        return frozenset()
    blocks = [a for a in icd.get_ancestors(dotted_code) if icd.is_block(a)]
    if not blocks:
        return frozenset()
    title = icd.get_description(blocks[-1]).lower()
    return frozenset(c for word, letters in _SYSTEM_CHAPTERS if word in title for c in letters)
