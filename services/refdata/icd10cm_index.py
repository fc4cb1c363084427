"""The ICD-10-CM Alphabetic Index and Table of Neoplasms, from the official CMS XML files.

No package ships them, so the product reads the CMS release files from the reference folder
(``CLAIMFLOW_REFDATA_DIR``), like the other CMS files: ``icd10cm_index_YYYY.xml`` (the Index
to Diseases and Injuries) and ``icd10cm_neoplasm_YYYY.xml`` (the Table of Neoplasms); the
newest year present is used. Without them coding uses its compact, cited rule tables
(``services/coding/guidelines.py``) and says so in its capabilities.

Index XML: ``letter/mainTerm`` with a ``title`` (nonessential modifiers in ``nemod`` inside
it), ``code``, ``see`` / ``seeAlso`` and nested ``term level="n"`` subterms of the same shape.
Neoplasm XML: the same terms, each with ``cell col="2".."7"`` (malignant primary, malignant
secondary, carcinoma in situ, benign, uncertain behavior, unspecified behavior).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

_SPACE = re.compile(r"\s+")
NEOPLASM_COLUMNS = (
    "malignant_primary",
    "malignant_secondary",
    "in_situ",
    "benign",
    "uncertain",
    "unspecified",
)


def key(title: str) -> str:
    """A title as looked up: lower case, single spaces, nonessential words dropped."""
    return _SPACE.sub(" ", re.sub(r"\([^)]*\)", " ", title)).strip(" ,").lower()


@dataclass(frozen=True)
class Entry:
    """One index term: its path of titles from the main term, its code and references."""

    path: tuple[str, ...]  # as printed, nonessential modifiers removed
    code: str | None  # dotted, as printed in the index
    see: str | None = None
    see_also: str | None = None
    cells: tuple[str | None, ...] = ()  # Table of Neoplasms columns, when from the table

    def text(self) -> str:
        return " > ".join(self.path)


def _title(node: ET.Element) -> str:
    title = node.find("title")
    if title is None:
        return ""
    # nemod children are nonessential modifiers: kept out of the lookup key.
    return _SPACE.sub(" ", title.text or "").strip()


class AlphabeticIndex:
    """Index terms by their path of lower-cased titles: ("diabetes, diabetic", "type 2", ...)."""

    def __init__(self, entries: list[Entry], source: str) -> None:
        self.source = source
        self.by_path: dict[tuple[str, ...], Entry] = {}
        self.children: dict[tuple[str, ...], list[Entry]] = {}
        self.main_terms: dict[str, tuple[str, ...]] = {}
        for e in entries:
            k = tuple(key(p) for p in e.path)
            self.by_path.setdefault(k, e)
            self.children.setdefault(k[:-1], []).append(e)
            if len(k) == 1:
                for name in k[0].split(", "):
                    self.main_terms.setdefault(name, k)

    def __len__(self) -> int:
        return len(self.by_path)

    @classmethod
    def parse(cls, source: Path | str) -> AlphabeticIndex:
        """Every term of an index or neoplasm XML file."""
        root = ET.parse(source).getroot()
        entries: list[Entry] = []

        def walk(node: ET.Element, path: tuple[str, ...]) -> None:
            title = _title(node)
            if not title:
                return
            here = (*path, title)
            cells = tuple(
                (c.text or "").strip() or None
                for c in sorted(node.findall("cell"), key=lambda c: int(c.get("col", "0")))
                if c.get("col", "1") != "1"
            )
            entries.append(
                Entry(
                    here,
                    (node.findtext("code") or "").strip() or None,
                    (node.findtext("see") or "").strip() or None,
                    (node.findtext("seeAlso") or "").strip() or None,
                    cells,
                )
            )
            for child in node.findall("term"):
                walk(child, here)

        for main in root.iter("mainTerm"):
            walk(main, ())
        return cls(entries, str(source))

    @classmethod
    def load(cls, folder: Path | None, kind: str = "index") -> AlphabeticIndex | None:
        """The newest ``icd10cm_{kind}_YYYY.xml`` in the folder, or None."""
        if folder is None or not Path(folder).is_dir():
            return None
        found = sorted(Path(folder).glob(f"icd10cm[_-]{kind}[_-]*.xml"))
        return cls.parse(found[-1]) if found else None

    def main(self, term: str) -> tuple[str, ...] | None:
        """The main term's key for a word ("diabetes" -> ("diabetes, diabetic",))."""
        k = key(term)
        return (k,) if (k,) in self.by_path else self.main_terms.get(k)

    def lookup(self, *path: str) -> Entry | None:
        """The entry at a path of titles; the main term may be any of its comma names."""
        main = self.main(path[0]) if path else None
        if main is None:
            return None
        return self.by_path.get((*main, *(key(p) for p in path[1:])))

    def subterms(self, *path: str) -> list[Entry]:
        """The entries directly under a path."""
        main = self.main(path[0]) if path else None
        if main is None:
            return []
        return self.children.get((*main, *(key(p) for p in path[1:])), [])

    def neoplasm(self, site: str, column: str = "malignant_primary") -> str | None:
        """Table of Neoplasms: the code of a site in a column (this index must be the table)."""
        entry = self.lookup("neoplasm", site)
        if entry is None or not entry.cells:
            return None
        i = NEOPLASM_COLUMNS.index(column)
        return entry.cells[i] if i < len(entry.cells) else None
