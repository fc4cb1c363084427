"""A compact ConText (Harkema et al., J Biomed Inform 2009) for clinical notes.

ConText extends NegEx (Chapman et al. 2001): trigger terms found in a sentence modify the
concepts inside their scope. A trigger looks forward (``denies chest pain``), backward
(``pneumonia was ruled out``) or both ways; its scope runs to the end of the sentence or
to a termination term (``but``, ``however``, ...), whichever comes first. Pseudo-triggers
(``no change``, ``gram negative``) look like triggers but are not, and are consumed
first. The trigger lists below are taken from the published NegEx/ConText lexicons
(negation, historical, hypothetical, experiencer "other" = family) plus the uncertainty
terms coders must honour (ICD-10-CM guidelines II.H and IV.H), trimmed to the common ones.

Section headers act like triggers for the whole section: a line under ``Family history:``
is about relatives, one under ``Past medical history:`` is historical.

medspacy ships the same algorithm on spaCy; it pins spaCy < 3.8 and pulls a model, so this
module does the same job in a few hundred lines of plain Python. It is deliberately
conservative: a coder is not asked to bill a mention that
ConText doubts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

Modifier = Literal["negated", "historical", "hypothetical", "family", "uncertain"]
Direction = Literal["forward", "backward", "both"]

# (phrase, modifier, direction). Phrases are matched on lower-cased word tokens.
_TRIGGERS: list[tuple[str, Modifier, Direction]] = [
    # negated existence (NegEx "pre-negation" and "post-negation" lists)
    *(
        (p, "negated", "forward")
        for p in (
            "no",
            "not",
            "denies",
            "denied",
            "deny",
            "denying",
            "without",
            "negative for",
            "no evidence of",
            "no evidence for",
            "no sign of",
            "no signs of",
            "no symptoms of",
            "no complaints of",
            "free of",
            "absence of",
            "absent",
            "never had",
            "never developed",
            "rules out",
            "ruled out",
            "ruled out for",
            "fails to reveal",
            "did not reveal",
            "not demonstrate",
            "no history of",
            "no family history of",
            "no new",
            "resolved",
            "neither",
            "nor",
        )
    ),
    *(
        (p, "negated", "backward")
        for p in (
            "was ruled out",
            "is ruled out",
            "has been ruled out",
            "have been ruled out",
            "are ruled out",
            "were ruled out",
            "is negative",
            "was negative",
            "negative",
            "not present",
            "is absent",
            "was absent",
            "unlikely",
            "is unlikely",
            "was excluded",
            "has resolved",
            "resolved",
        )
    ),
    # historical
    *(
        (p, "historical", "forward")
        for p in (
            "history of",
            "hx of",
            "h/o",
            "past history of",
            "past medical history of",
            "previous",
            "previously",
            "prior",
            "remote",
            "status post",
            "s/p",
            "in the past",
            "years ago",
            "childhood",
        )
    ),
    *((p, "historical", "backward") for p in ("in the past", "years ago", "as a child")),
    # hypothetical
    *(
        (p, "hypothetical", "forward")
        for p in (
            "if",
            "return if",
            "call if",
            "should he develop",
            "should she develop",
            "should they develop",
            "should",
            "in case of",
            "watch for",
            "monitor for",
            "warning signs of",
            "precautions",
            "at risk for",
            "risk of",
            "to prevent",
            "prevention of",
            "screening for",
            "screen for",
        )
    ),
    # uncertain ("possible existence"): not coded outpatient (IV.H), coded inpatient (II.H)
    *(
        (p, "uncertain", "forward")
        for p in (
            "possible",
            "possibly",
            "probable",
            "probably",
            "suspected",
            "suspect",
            "suspicious for",
            "suspicion of",
            "questionable",
            "question of",
            "rule out",
            "r/o",
            "cannot rule out",
            "cannot be ruled out",
            "concern for",
            "concerning for",
            "differential diagnosis",
            "differential includes",
            "versus",
            "vs",
            "presumed",
            "likely",
            "consistent with",
            "compatible with",
            "evaluate for",
            "evaluation for",
            "work up for",
            "workup for",
        )
    ),
    *(
        (p, "uncertain", "backward")
        for p in ("is possible", "is suspected", "is likely", "is probable", "versus", "vs")
    ),
    # experiencer: somebody else (family history)
    *(
        (p, "family", "both")
        for p in (
            "family history",
            "family history of",
            "fh",
            "fhx",
            "mother",
            "father",
            "mom",
            "dad",
            "brother",
            "sister",
            "sibling",
            "siblings",
            "parent",
            "parents",
            "grandmother",
            "grandfather",
            "grandparent",
            "aunt",
            "uncle",
            "cousin",
            "son",
            "daughter",
            "maternal",
            "paternal",
        )
    ),
]

# Phrases that contain a trigger word but modify nothing (NegEx pseudo-triggers).
_PSEUDO = (
    "no increase",
    "no change",
    "no significant change",
    "no interval change",
    "no further",
    "not only",
    "not necessarily",
    "not certain if",
    "not certain whether",
    "without difficulty",
    "without any difficulty",
    "gram negative",
    "not drain",
    "history and physical",
    "history and examination",
    "social history",
    "family practice",
    "family medicine",
    "if needed",
    "as needed",
    "if necessary",
    "is stable",
    "no longer",
)

# Terms that end a trigger's scope (ConText termination terms).
_TERMINATORS = (
    "but",
    "however",
    "although",
    "though",
    "yet",
    "except",
    "aside from",
    "apart from",
    "which",
    "who",
    "presents",
    "presenting",
    "presented",
    "complains",
    "reports",
    "now",
    "currently",
    "today",
    "assessment",
    "diagnosis",
    "diagnosed",
    "secondary to",
    "due to",
    "cause of",
)

# Section headers that modify everything under them until the next header.
_SECTIONS: dict[str, Modifier | None] = {
    "family history": "family",
    "family hx": "family",
    "fh": "family",
    "fhx": "family",
    "past medical history": "historical",
    "past history": "historical",
    "pmh": "historical",
    "past surgical history": "historical",
    "psh": "historical",
    "surgical history": "historical",
    "allergies": "hypothetical",  # an allergy list is not a list of conditions to code
    "medications": "hypothetical",
    "plan": None,
    "assessment": None,
    "assessment and plan": None,
    "a/p": None,
    "impression": None,
    "diagnosis": None,
    "diagnoses": None,
    "discharge diagnosis": None,
    "discharge diagnoses": None,
    "final diagnosis": None,
    "hpi": None,
    "history of present illness": None,
    "chief complaint": None,
    "cc": None,
    "ros": None,
    "review of systems": None,
    "exam": None,
    "physical exam": None,
    "subjective": None,
    "objective": None,
    "social history": None,
    "problem list": None,
    "active problems": None,
}

WORD = re.compile(r"[a-z0-9]+(?:/[a-z0-9]+|-[0-9]+)?")
"""A word: h/o and s/p stay whole, and so does covid-19."""
_SENTENCE_END = re.compile(r"[.;!?\n]+(?:\s+|$)|\n")
_HEADER = re.compile(r"(?:^|(?<=[.!?;]\s))[ \t]*([A-Za-z][A-Za-z /&]{0,40}?)[ \t]*:", re.MULTILINE)


def words(text: str) -> list[tuple[str, int, int]]:
    """Lower-cased word tokens with their character offsets (h/o and s/p stay whole)."""
    return [(m.group(), m.start(), m.end()) for m in WORD.finditer(text.lower())]


def _phrases(items: Iterable[str]) -> dict[tuple[str, ...], str]:
    return {tuple(w for w, _, _ in words(p)): p for p in items}


@dataclass(frozen=True)
class _Lexicon:
    triggers: dict[tuple[str, ...], list[tuple[Modifier, Direction]]]
    pseudo: set[tuple[str, ...]]
    terminators: set[tuple[str, ...]]
    longest: int


def _lexicon() -> _Lexicon:
    triggers: dict[tuple[str, ...], list[tuple[Modifier, Direction]]] = {}
    for phrase, modifier, direction in _TRIGGERS:
        key = tuple(w for w, _, _ in words(phrase))
        triggers.setdefault(key, [])
        if (modifier, direction) not in triggers[key]:
            triggers[key].append((modifier, direction))
    pseudo = set(_phrases(_PSEUDO))
    terminators = set(_phrases(_TERMINATORS))
    longest = max(len(k) for k in [*triggers, *pseudo, *terminators])
    return _Lexicon(triggers, pseudo, terminators, longest)


_LEX = _lexicon()


@dataclass
class Sentence:
    """One sentence of a note: its text span, tokens and the modifier scopes found in it."""

    start: int
    end: int
    tokens: list[tuple[str, int, int]]  # (word, char start, char end), offsets in the note
    section: str | None = None
    section_modifier: Modifier | None = None
    scopes: list[tuple[Modifier, int, int, int, int]] = field(default_factory=list)
    # (modifier, scope first token, scope end token (exclusive), trigger first, trigger end)
    marked: set[int] = field(default_factory=set)
    # tokens that are ConText vocabulary or a section header, not part of any condition

    def modifiers(self, first: int, last: int) -> set[Modifier]:
        """Modifiers whose scope covers tokens first..last-1 (a concept mention)."""
        found: set[Modifier] = set()
        if self.section_modifier is not None:
            found.add(self.section_modifier)
        for modifier, lo, hi, t_lo, t_hi in self.scopes:
            if t_lo < last and first < t_hi:
                continue  # the trigger is part of the concept itself ("family history of")
            if lo < last and first < hi:
                found.add(modifier)
        return found


def sentences(text: str) -> list[Sentence]:
    """Split a note into sentences and find each trigger's scope (the ConText pass)."""
    headers: list[tuple[int, str, Modifier | None]] = []  # (header start, name, modifier)
    header_spans: list[tuple[int, int]] = []
    for m in _HEADER.finditer(text):
        name = " ".join(m.group(1).lower().split())
        if name in _SECTIONS:
            headers.append((m.start(1), name, _SECTIONS[name]))
            header_spans.append((m.start(1), m.end()))
    out: list[Sentence] = []
    pos = 0
    breaks: list[re.Match[str] | None] = [*_SENTENCE_END.finditer(text), None]
    for br in breaks:
        end = br.start() if br else len(text)
        chunk = text[pos:end]
        if chunk.strip():
            # The last header that starts before this sentence ends governs it.
            section, modifier = None, None
            for at, name, mod in headers:
                if at < end:
                    section, modifier = name, mod
            toks = [(w, s + pos, e + pos) for w, s, e in words(chunk)]
            sentence = Sentence(pos, end, toks, section, modifier)
            sentence.marked.update(
                i for i, (_, s, _) in enumerate(toks) if any(a <= s < b for a, b in header_spans)
            )
            _scopes(sentence)
            out.append(sentence)
        pos = br.end() if br else len(text)
    return out


def _scopes(sentence: Sentence) -> None:
    """Mark trigger scopes in one sentence; longest phrases win, pseudo-triggers first."""
    toks = [t[0] for t in sentence.tokens]
    n = len(toks)
    kind: list[tuple[str, int, list[tuple[Modifier, Direction]]]] = []  # (kind, end, mods)
    i = 0
    while i < n:
        hit: tuple[str, int, list[tuple[Modifier, Direction]]] | None = None
        for size in range(min(_LEX.longest, n - i), 0, -1):
            key = tuple(toks[i : i + size])
            if key in _LEX.pseudo:
                hit = ("pseudo", i + size, [])
            elif key in _LEX.terminators:
                hit = ("stop", i + size, [])
            elif key in _LEX.triggers:
                hit = ("trigger", i + size, _LEX.triggers[key])
            if hit:
                break
        if hit is None:
            kind.append(("word", i + 1, []))
            i += 1
            continue
        kind.append((hit[0], hit[1], hit[2]))
        kind.extend(("inside", i, []) for _ in range(i + 1, hit[1]))
        sentence.marked.update(range(i, hit[1]))
        i = hit[1]
    stops = [j for j, (k, _, _) in enumerate(kind) if k == "stop"]
    for j, (k, end, mods) in enumerate(kind):
        if k != "trigger":
            continue
        for modifier, direction in mods:
            if direction in ("forward", "both"):
                hi = min([s for s in stops if s >= end] or [n])
                sentence.scopes.append((modifier, end, hi, j, end))
            if direction in ("backward", "both"):
                lo = max([s + 1 for s in stops if s < j] or [0])
                sentence.scopes.append((modifier, lo, j, j, end))
