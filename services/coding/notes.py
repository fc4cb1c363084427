"""Conditions in a clinical note: ICD-10-CM terms found per sentence, with their ConText.

Each sentence of the note is searched for tabular terms (``terms.TermIndex.find``) and each
term found is checked against the sentence's ConText scopes (``context``): a mention that
is negated, historical, hypothetical or about a relative is never a current condition.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.coding.context import Modifier, sentences
from services.coding.terms import TermIndex, is_stop, normalize

ASSESSMENT_SECTIONS = frozenset(
    {
        "assessment",
        "assessment and plan",
        "a/p",
        "impression",
        "diagnosis",
        "diagnoses",
        "discharge diagnosis",
        "discharge diagnoses",
        "final diagnosis",
        "problem list",
        "active problems",
    }
)


@dataclass(frozen=True)
class Mention:
    """A condition named in the note."""

    code: str  # ICD-10-CM, no dot
    text: str  # the words of the note (abbreviations spelled out)
    required: frozenset[str]  # the stems the matched tabular term required
    confidence: float
    modifiers: frozenset[Modifier]
    section: str | None
    position: int  # character offset in the normalised note, for ordering

    @property
    def current(self) -> bool:
        """A mention of the patient's own condition now, stated without doubt."""
        return not self.modifiers

    @property
    def in_assessment(self) -> bool:
        """Written under an assessment / diagnosis heading."""
        return self.section in ASSESSMENT_SECTIONS


def mentions(note: str, index: TermIndex) -> list[Mention]:
    """Every condition the note names, in note order, with its ConText modifiers."""
    text = normalize(note)
    out: list[Mention] = []
    for sentence in sentences(text):
        words = [t[0] for t in sentence.tokens]
        hits = index.find(words)
        used = set().union(*(h.used for h in hits)) if hits else set()
        for hit in hits:
            start = sentence.tokens[hit.first][1]
            end = sentence.tokens[hit.last - 1][2]
            confidence = hit.confidence
            before = hit.first - 1
            if before >= 0 and before not in used and before not in sentence.marked:
                word = words[before]
                if not is_stop(word) and word.isalpha():
                    # An unexplained qualifier right before the term ("viral sinusitis"
                    # read as sinusitis NOS): the term does not say all the note says.
                    n = len(hit.term.required)
                    confidence = round(confidence * n / (n + 1), 3)
            modifiers = set(sentence.modifiers(hit.first, hit.last))
            # A history code names its own history ("family history of diabetes" is
            # Z83.3, a current fact): its section or trigger does not make it one.
            if "history" in hit.term.required:
                modifiers -= {"family", "historical"}
            out.append(
                Mention(
                    code=hit.code,
                    text=text[start:end],
                    required=hit.term.required,
                    confidence=confidence,
                    modifiers=frozenset(modifiers),
                    section=sentence.section,
                    position=start,
                )
            )
    return out
