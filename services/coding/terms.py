"""Text to ICD-10-CM: an index of the tabular's titles and inclusion terms, matched by words.

No alphabetic index ships in a package (SOURCES.md), so the index is built from what
simple-icd-10-cm carries for every billable code: its title, its inclusion terms and its
"includes" notes. Each term becomes a set of *required* word stems and a set of
*optional* ones, following the tabular's own conventions:

- words in parentheses or brackets are nonessential modifiers ("Essential (primary)
  hypertension"): optional;
- a comma part that says the default ("unspecified", "site not specified", "NOS",
  "without ...", "initial encounter") is optional, and so is "without ..." anywhere;
- filler words that name the default (unspecified, primary, mellitus, stage, ...) are
  optional everywhere.

A mention matches a term when every required stem of the term is in the mention's words
and close together; the most specific term wins (most required stems), and a term whose
words are all used by a more specific one is dropped (T2DM with CKD -> E11.22, not E11.9 as
well). Confidence is the share of the mention's words the term explains, times a base for
the kind of term (a title is surer than an inclusion term). The synonym list is small and
curated: common clinical abbreviations (HTN, T2DM, CKD, NSTEMI, COPD, UTI, ...), never
answers for particular cases.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from simple_icd_10_cm import simple_icd_10_cm as _tabular

from services.coding.context import WORD

BASE_TITLE = 0.95
BASE_INCLUSION = 0.92
"""Confidence of a full match on a code's title, and on an inclusion term or includes note."""

# Abbreviations and phrasings clinicians write, spelled the way the tabular words them.
# Applied to mention text only, whole words, before tokenising.
SYNONYMS: dict[str, str] = {
    "htn": "hypertension",
    "t2dm": "type 2 diabetes mellitus",
    "t2d": "type 2 diabetes mellitus",
    "dm2": "type 2 diabetes mellitus",
    "dmii": "type 2 diabetes mellitus",
    "dm ii": "type 2 diabetes mellitus",
    "dm 2": "type 2 diabetes mellitus",
    "t1dm": "type 1 diabetes mellitus",
    "dm1": "type 1 diabetes mellitus",
    "type ii": "type 2",
    "type i": "type 1",
    "iddm": "type 1 diabetes mellitus",
    "niddm": "type 2 diabetes mellitus",
    "dm": "diabetes mellitus",
    "ckd": "chronic kidney disease",
    "esrd": "end stage renal disease",
    "aki": "acute kidney injury",
    "nstemi": "non st elevation myocardial infarction",
    "stemi": "st elevation myocardial infarction",
    "ami": "acute myocardial infarction",
    "mi": "myocardial infarction",
    "heart attack": "myocardial infarction",
    "copd": "chronic obstructive pulmonary disease",
    "uti": "urinary tract infection",
    "chf": "congestive heart failure",
    "hfref": "systolic heart failure",
    "hfpef": "diastolic heart failure",
    "afib": "atrial fibrillation",
    "a fib": "atrial fibrillation",
    "a-fib": "atrial fibrillation",
    "cva": "stroke",
    "pvd": "peripheral vascular disease",
    "dka": "diabetic ketoacidosis",
    "lbp": "low back pain",
    "djd": "osteoarthritis",
    "ibs": "irritable bowel syndrome",
    "adhd": "attention-deficit hyperactivity disorder",
    "ptsd": "post-traumatic stress disorder",
    "cad": "atherosclerotic heart disease of native coronary artery",
    "gerd": "gastro esophageal reflux disease",
    "hld": "hyperlipidemia",
    "osa": "obstructive sleep apnea",
    "pna": "pneumonia",
    "community acquired pneumonia": "pneumonia",
    "community-acquired pneumonia": "pneumonia",
    "sob": "shortness of breath",
    "dvt": "deep vein thrombosis",
    "bph": "benign prostatic hyperplasia",
    "oa": "osteoarthritis",
    "uri": "upper respiratory infection",
    "tia": "transient cerebral ischemic attack",
    "mdd": "major depressive disorder",
    "gad": "generalized anxiety disorder",
    "hypoxic": "hypoxia",
    "hypoxemic": "hypoxia",
    "hypoxemia": "hypoxia",
    "w/": "with",
    "w/o": "without",
    "rt": "right",
    "lt": "left",
    "bilat": "bilateral",
    "covid": "covid-19",
    "covid19": "covid-19",
}

# Stems that mean the same thing in the tabular's words.
_CANON = {"renal": "kidney", "cardiac": "heart", "ischaemic": "ischemic", "pts": "patient"}

_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "by",
        "due",
        "for",
        "from",
        "had",
        "has",
        "have",
        "he",
        "her",
        "his",
        "in",
        "into",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "she",
        "that",
        "the",
        "their",
        "this",
        "to",
        "was",
        "were",
        "which",
        "with",
        "without",
        "who",
        "patient",
        "pt",
        "also",
        "any",
        "not",
        "no",
    ]
)
# Words that name the default: never required, so "diabetes" meets "diabetes mellitus".
_FILLER = frozenset(
    [
        "unspecified",
        "unspec",
        "nos",
        "specified",
        "mellitus",
        "stage",
        "primary",
        "unilateral",
        "uncomplicated",
        "organism",
        "site",
        "classified",
        "elsewhere",
    ]
)
# A comma part that names the default: "unspecified ear", "site not specified", "without
# complications", "initial encounter". "stage 3 unspecified" is not one: stage 3 is said.
_DEFAULT_PART = re.compile(
    r"^(?:without\b|not\b|uncomplicated$|nos$|initial encounter|unspecified\b|"
    r"[^0-9]*\bunspecified$|.*\bnot specified\b|.*\bnot elsewhere classified\b)"
)
# Fillers that only say "nothing more specific was documented"; the others (primary,
# unilateral, ...) are defaults too, but a term that needs fewer of them reads closer.
_NEUTRAL_FILLER = frozenset(["unspecified", "unspec", "nos"])
_NEGATORS = frozenset(["not", "without", "no"])
_PARENS = re.compile(r"\([^)]*\)|\[[^\]]*\]")
_SYN = re.compile(
    r"(?<![a-z0-9])("
    + "|".join(re.escape(k) for k in sorted(SYNONYMS, key=len, reverse=True))
    + r")(?![a-z0-9]|-[0-9])"
)
_SEMANTIC_TAG = re.compile(r"\s*\((?:disorder|finding|situation|morphologic abnormality)\)\s*$")
_SUFFIXES = ("ically", "ical", "ious", "ies", "ity", "ive", "ion", "ic", "ia", "es", "ed", "ing")


@functools.lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A crude, consistent stem: diabetes/diabetic -> diabet, hypoxia/hypoxic -> hypox."""
    word = _CANON.get(word, word)
    if len(word) <= 4 or not word.isalpha():
        return word
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            word = word[: -len(suffix)]
            break
    else:
        if word.endswith("s") and not word.endswith(("us", "ss", "is")):
            word = word[:-1]
    if word.endswith("e") and len(word) > 4:
        word = word[:-1]
    return word


_FILLER_STEMS = frozenset(stem(w) for w in _FILLER)
_NEUTRAL_STEMS = frozenset(stem(w) for w in _NEUTRAL_FILLER)


def normalize(text: str) -> str:
    """Lower case, SNOMED semantic tags dropped, abbreviations spelled out."""
    text = _SEMANTIC_TAG.sub("", text.lower())
    return _SYN.sub(lambda m: SYNONYMS[m.group(1)], text)


def is_stop(word: str) -> bool:
    """A word that carries no meaning for matching (of, the, with, ...)."""
    return word in _STOP


def content(words: Iterable[str]) -> list[str]:
    """Stems of the words that carry meaning (no stop words)."""
    return [stem(w) for w in words if w not in _STOP]


def stems_of(text: str) -> set[str]:
    """The meaningful stems of a free text (abbreviations spelled out, fillers dropped)."""
    return set(content(WORD.findall(normalize(text)))) - _FILLER_STEMS


@dataclass(frozen=True)
class Term:
    """One indexed term of a billable code."""

    code: str  # no dot
    text: str
    required: frozenset[str]
    optional: frozenset[str]
    base: float
    defaults: int = 0  # default words (primary, unilateral...) the term left implicit


def _term(code: str, text: str, base: float) -> Term | None:
    """Split a tabular term into required and optional stems."""
    lower = text.lower()
    optional: set[str] = set()
    for m in _PARENS.finditer(lower):
        optional.update(content(WORD.findall(m.group())))
    lower = _PARENS.sub(" ", lower)
    required: set[str] = set()
    for n, part in enumerate(lower.split(",")):
        part = part.strip()
        head, _, tail = part.partition(" without ")
        # "Laceration without foreign body of right hand": the site after the clause's
        # last "of" is still required; "without complications" is all optional.
        clause, of, site = tail.rpartition(" of ")
        if of and clause and " of " not in clause and len(site.split()) <= 3:
            head = f"{head} {site}"
            tail = clause
        optional.update(content(WORD.findall(tail)))
        words = content(WORD.findall(head))
        if n > 0 and _DEFAULT_PART.match(head):
            optional.update(words)
        else:
            required.update(words)
    optional.update(w for w in required if w in _FILLER_STEMS)
    defaults = len(required & _FILLER_STEMS - _NEUTRAL_STEMS)
    required -= _FILLER_STEMS
    if not required:
        return None
    return Term(code, text, frozenset(required), frozenset(optional - required), base, defaults)


@dataclass(frozen=True)
class Hit:
    """A term found in text: which words it used and how sure the match is."""

    term: Term
    first: int  # first word position of the required words
    last: int  # one past the last
    used: frozenset[int]  # word positions the term explains
    confidence: float

    @property
    def code(self) -> str:
        return self.term.code


class TermIndex:
    """Every billable ICD-10-CM code's terms, looked up by their rarest required stem."""

    def __init__(self, terms: list[Term]) -> None:
        df: dict[str, int] = defaultdict(int)
        for t in terms:
            for w in t.required:
                df[w] += 1
        self.by_key: dict[str, list[Term]] = defaultdict(list)
        self.by_code: dict[str, list[Term]] = defaultdict(list)
        for t in terms:
            key = min(t.required, key=lambda w: (df[w], w))
            self.by_key[key].append(t)
            self.by_code[t.code].append(t)
        self.size = len(terms)

    def words_of(self, code: str) -> set[str]:
        """Every stem the code's title and inclusion terms use (empty for a header)."""
        words: set[str] = set()
        for t in self.by_code.get(code, ()):
            words |= t.required | t.optional
        return words

    @classmethod
    def from_tabular(cls) -> TermIndex:
        """Build from simple-icd-10-cm's April 2026 tabular (about a second)."""
        terms: list[Term] = []
        for node in _walk(_tabular._chapter_list):  # the package's parsed tree: 20x faster
            if node.children or node.type in ("chapter", "section"):
                continue
            code = node.name.replace(".", "")
            for text, base in (
                (node.description, BASE_TITLE),
                *((t, BASE_TITLE) for t in _either(node.description)),
                *((t, BASE_INCLUSION) for t in node.inclusion_term),
                *((t, BASE_INCLUSION) for t in node.includes),
            ):
                term = _term(code, text, base)
                if term is not None:
                    terms.append(term)
        return cls(terms)

    def find(self, words: list[str], *, window: int = 3) -> list[Hit]:
        """Terms found in a run of words (one sentence), most specific first, no repeats."""
        stems = [stem(w) if w not in _STOP else "" for w in words]
        negated = _negated(words)
        where: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(stems):
            if s and i not in negated:  # "without aura" cannot satisfy a term needing aura
                where[s].append(i)
        hits: list[Hit] = []
        for key in list(where):
            for term in self.by_key.get(key, ()):
                if not term.required <= where.keys():
                    continue
                hit = _place(term, stems, where, window)
                if hit is not None:
                    hits.append(hit)
        said = {s for s in stems if s}
        hits.sort(
            key=lambda h: (
                -len(h.term.required),
                -h.confidence,
                -len(h.used),
                # qualifiers the term names that the text does not ("without aura")
                len(h.term.optional - said - _NEUTRAL_STEMS),
                h.term.defaults,
                h.first,
                h.code,
            )
        )
        chosen: list[Hit] = []
        covered: set[int] = set()
        for hit in hits:
            if hit.used - covered and not any(_same_concept(hit, c) for c in chosen):
                chosen.append(hit)
                covered |= hit.used
        return sorted(chosen, key=lambda h: h.first)

    def match(self, text: str) -> list[Hit]:
        """Best terms for a whole phrase (a condition's display text), best first."""
        words = WORD.findall(normalize(text))
        total = sum(1 for w in words if w not in _STOP)
        found = self.find(words, window=len(words))
        # Every word of the phrase must be explained by the terms found, not only the
        # words near each term: "viral sinusitis" is not explained by "sinusitis NOS".
        used = set().union(*(h.used for h in found)) if found else set()
        share = len(used) / max(total, len(used), 1)
        hits = [replace(h, confidence=round(h.term.base * share, 3)) for h in found]
        return sorted(hits, key=lambda h: (-h.confidence, -len(h.term.required)))

    def partial(self, text: str, limit: int = 3) -> list[tuple[str, float]]:
        """Closest codes when nothing matches fully: (code, share of required words found)."""
        stems = set(content(WORD.findall(normalize(text))))
        scored: dict[str, float] = {}
        for key in stems:
            for term in self.by_key.get(key, ()):
                share = len(term.required & stems) / len(term.required)
                explained = len((term.required | term.optional) & stems) / max(1, len(stems))
                score = round(0.6 * share * explained, 3)
                if score > scored.get(term.code, 0.0):
                    scored[term.code] = score
        best = sorted(scored.items(), key=lambda kv: (-kv[1], kv[0]))
        return best[:limit]


_AND = re.compile(r"\b([A-Za-z-]+) and ([A-Za-z-]+)(?=$|,)")


def _either(title: str) -> list[str]:
    """Guideline I.A.14: "and" in a title means "and/or" ("Dizziness and giddiness").

    Only the simple case is expanded: "and" joining the last two words of a comma part
    ("...of bronchus and lung" -> "...of bronchus", "...of lung").
    """
    m = _AND.search(title)
    if m is None or " and " in title[m.end() :]:
        return []
    first, second = m.group(1), m.group(2)
    return [
        title[: m.start()] + first + title[m.end() :],
        title[: m.start()] + second + title[m.end() :],
    ]


def _negated(words: list[str]) -> set[int]:
    """Positions of the words a "not", "without" or "no" qualifies, up to the next stop word."""
    out: set[int] = set()
    for i, w in enumerate(words):
        if w in _NEGATORS:
            for j in range(i + 1, min(len(words), i + 6)):
                if words[j] in _STOP:
                    break
                out.add(j)
    return out


def _same_concept(a: Hit, b: Hit) -> bool:
    """True when a's required words are all inside b's (a is a less specific reading)."""
    return a.term.required <= b.term.required and a.used <= b.used


def _place(term: Term, stems: list[str], where: dict[str, list[int]], window: int) -> Hit | None:
    """Where a term sits in the words: the tightest run holding its required stems."""
    anchor_word = min(term.required, key=lambda w: len(where[w]))
    best: tuple[int, int, frozenset[int]] | None = None
    for anchor in where[anchor_word]:
        used = {anchor}
        for w in term.required:
            if w != anchor_word:
                used.add(min(where[w], key=lambda p: abs(p - anchor)))
        lo, hi = min(used), max(used) + 1
        if best is None or hi - lo < best[1] - best[0]:
            best = (lo, hi, frozenset(used))
    assert best is not None
    lo, hi, run = best
    span_content = [i for i in range(lo, hi) if stems[i]]
    if len(span_content) - len(run) > window:
        return None  # the words are scattered over the sentence: not one mention
    # Optional words right next to the run count as explained ("Essential hypertension").
    explained = set(run)
    reach = max(3, window)  # a whole phrase (match) may explain any of its words
    for i in range(max(0, lo - reach), min(len(stems), hi + reach)):
        if stems[i] and (stems[i] in term.optional or stems[i] in term.required):
            explained.add(i)
    inside = [i for i in span_content if i not in explained]
    confidence = term.base * (len(run) / (len(run) + len(inside)))
    return Hit(term, lo, hi, frozenset(explained), round(confidence, 3))


def _walk(nodes: Iterable[Any]) -> Iterator[Any]:
    for node in nodes:
        yield node
        yield from _walk(node.children)


@functools.cache
def default_index() -> TermIndex:
    """The index over the packaged tabular, built once per process."""
    return TermIndex.from_tabular()
