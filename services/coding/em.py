"""Office and outpatient E/M level from the documentation (AMA CPT 2021 E/M guidelines).

Since 2021 an office visit's level is chosen by medical decision making (MDM) or by the
total time the practitioner spent on the date of the encounter, whichever the
documentation supports better. The level families and the minimum total times (CPT 2024
wording, "must be met or exceeded"):

| MDM             | new patient   | established   |
|-----------------|---------------|---------------|
| straightforward | 99202, 15 min | 99212, 10 min |
| low             | 99203, 30 min | 99213, 20 min |
| moderate        | 99204, 45 min | 99214, 30 min |
| high            | 99205, 60 min | 99215, 40 min |

99211 has no MDM or time level and is never checked. New or established is taken from
the billed code's family: the EHR knows whether the patient was seen in the last three
years, the note does not. The note states the time or the MDM level in words
("Total time: 32 minutes", "MDM: moderate"); computing MDM from its elements (problems,
data, risk) is a coder's judgment and is not attempted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Family = Literal["new", "established"]
MdmLevel = Literal["straightforward", "low", "moderate", "high"]

NEW = ("99202", "99203", "99204", "99205")
ESTABLISHED = ("99212", "99213", "99214", "99215")
MDM_LEVELS: tuple[MdmLevel, ...] = ("straightforward", "low", "moderate", "high")
MINUTES: dict[Family, tuple[int, int, int, int]] = {
    "new": (15, 30, 45, 60),
    "established": (10, 20, 30, 40),
}

_TIME = re.compile(
    r"\b(?:total\s+(?:[a-z-]+\s+){0,6}?time|time\s+spent|spent)\b[^0-9\n.]{0,40}?"
    r"(\d{1,3})\s*(?:minutes|mins?)\b",
    re.IGNORECASE,
)
_MDM = re.compile(
    r"\b(?:mdm|medical\s+decision[- ]making)\b[^a-z\n]{0,3}(?:\s*(?:is|was|of|level|:|-))*\s*"
    r"(straightforward|low|moderate|high)\b",
    re.IGNORECASE,
)


def family_of(code: str) -> Family | None:
    """Which office E/M family a CPT code belongs to (None for anything else, 99211 too)."""
    if code in NEW:
        return "new"
    if code in ESTABLISHED:
        return "established"
    return None


@dataclass(frozen=True)
class Documented:
    """What the note states about the visit: total minutes and the MDM level."""

    minutes: int | None = None
    mdm: MdmLevel | None = None

    def __bool__(self) -> bool:
        return self.minutes is not None or self.mdm is not None

    def describe(self) -> str:
        """The documentation in words, for review reasons."""
        parts = []
        if self.minutes is not None:
            parts.append(f"total time {self.minutes} min")
        if self.mdm is not None:
            parts.append(f"MDM {self.mdm}")
        return "; ".join(parts) or "no time or MDM documented"


def documented(note: str | None) -> Documented:
    """Total time and MDM level stated in a note, if any (the last statement wins)."""
    if not note:
        return Documented()
    times = _TIME.findall(note)
    levels = _MDM.findall(note)
    minutes = int(times[-1]) if times else None
    mdm: MdmLevel | None = None
    if levels:
        word = levels[-1].lower()
        mdm = next(level for level in MDM_LEVELS if level == word)
    return Documented(minutes, mdm)


@dataclass(frozen=True)
class Supported:
    """The level the documentation supports and what it rests on."""

    code: str | None
    basis: str


def supported(family: Family, doc: Documented) -> Supported:
    """The highest level that time or MDM supports for the family (None: below the lowest)."""
    codes = NEW if family == "new" else ESTABLISHED
    by_time = -1
    if doc.minutes is not None:
        for i, minimum in enumerate(MINUTES[family]):
            if doc.minutes >= minimum:
                by_time = i
    by_mdm = MDM_LEVELS.index(doc.mdm) if doc.mdm is not None else -1
    best = max(by_time, by_mdm)
    if best < 0:
        return Supported(None, doc.describe())
    basis = "time" if by_time >= by_mdm else "MDM"
    return Supported(codes[best], f"{basis} ({doc.describe()})")


def check(billed: str, note: str | None) -> tuple[Supported | None, str | None]:
    """Compare a billed office E/M code with the note: (supported level, problem or None)."""
    family = family_of(billed)
    doc = documented(note)
    if family is None or not doc:
        return None, None
    level = supported(family, doc)
    if level.code is None:
        return level, (
            f"billed {billed} but the documentation ({doc.describe()}) does not reach the "
            f"lowest {family}-patient level ({(NEW if family == 'new' else ESTABLISHED)[0]})"
        )
    if level.code == billed:
        return level, None
    direction = "higher" if billed > level.code else "lower"
    return level, (
        f"billed {billed} is {direction} than the {level.code} the documentation supports by "
        f"{level.basis}; the billed code was kept: a coder confirms it, or the provider "
        "corrects the charge"
    )
