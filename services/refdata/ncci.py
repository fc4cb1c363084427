"""NCCI procedure-to-procedure (PTP) edits and Medically Unlikely Edits (MUE), read from
the CMS files in their official layouts.

- PTP: the quarterly tab-separated text files, one table per provider type
  (practitioner ``ccipra-v322r0-f1.txt`` … ``-f4``; outpatient hospital ``ccioprav…``).
  Columns: column 1 code, column 2 code, "in existence prior to 1996" (``*`` or blank),
  effective date, deletion date (``*`` = none), modifier indicator (0 not allowed, 1
  allowed, 9 not applicable), rationale. Notice and header lines are skipped; a row that
  does not parse (a file cut mid-row) is counted in ``skipped``, never guessed at. A
  deletion date is read as the last date of service the edit applies to.
- MUE: the quarterly CSV (``MCR_MUE_PractitionerServices_Eff_07-01-2026.csv``; outpatient
  hospital ``MCR_MUE_OutpatientHospitalServices_Eff_…``): a quoted AMA notice, a header
  row, then code, MUE value, adjudication indicator ("1 Line Edit", "2 Date of Service
  Edit: Policy", "3 Date of Service Edit: Clinical") and rationale. The effective date
  comes from the file name.

Nothing here is bundled: the files are loaded from the reference-data folder, and when
they are missing ``load_ncci`` says why, so the edits report themselves as off.
"""

from __future__ import annotations

import csv
import io
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal

Provider = Literal["practitioner", "hospital"]
ModifierIndicator = Literal["0", "1", "9"]

PROVIDERS: tuple[Provider, ...] = ("practitioner", "hospital")
_CODE = re.compile(r"[0-9A-Z]{5}")
_NO_DELETION = 99991231
_PTP_NAME = {
    "practitioner": re.compile(r"^ccipra-?v(\d+)r(\d+)\D.*\.txt$", re.I),
    "hospital": re.compile(r"^cciopra-?v(\d+)r(\d+)\D.*\.txt$", re.I),
}
_MUE_NAME = {
    "practitioner": re.compile(
        r"^MCR_MUE_PractitionerServices_Eff_(\d\d)-(\d\d)-(\d{4}).*\.csv$", re.I
    ),
    "hospital": re.compile(
        r"^MCR_MUE_OutpatientHospitalServices_Eff_(\d\d)-(\d\d)-(\d{4}).*\.csv$", re.I
    ),
}
MAI_TEXT = {
    1: "line edit",
    2: "date-of-service edit (policy)",
    3: "date-of-service edit (clinical)",
}


def _yyyymmdd(text: str) -> int | None:
    text = text.strip()
    if not re.fullmatch(r"\d{8}", text):
        return None
    try:
        date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None
    return int(text)


def _to_date(value: int) -> date | None:
    if value == _NO_DELETION:
        return None
    return date(value // 10000, value // 100 % 100, value % 100)


@dataclass(frozen=True)
class PtpEdit:
    """One column 1 / column 2 pair with its dates, modifier indicator and rationale."""

    column1: str
    column2: str
    effective: date
    deletion: date | None
    modifier_indicator: ModifierIndicator
    rationale: str

    def active(self, on: date) -> bool:
        """True when the edit applies to a service on this date."""
        return self.effective <= on and (self.deletion is None or on <= self.deletion)


class PtpTable:
    """Column 1 code -> column 2 code -> packed rows; compact because the real tables are
    millions of rows. A packed row is ``((eff * 10**8 + deletion) * 10 + indicator) * 1000
    + rationale index``."""

    def __init__(self, provider: Provider, version: str, sources: list[Path]) -> None:
        self.provider = provider
        self.version = version
        self.sources = sources
        self.pairs: dict[str, dict[str, int | tuple[int, ...]]] = {}
        self.rationales: list[str] = []
        self._rationale_index: dict[str, int] = {}
        self.rows = 0
        self.skipped = 0
        self.not_applicable = 0

    def add_row(self, fields: list[str]) -> bool:
        """Add one data row (already split on tabs); False when it does not parse."""
        if len(fields) < 6:
            return False
        col1, col2 = fields[0].strip().upper(), fields[1].strip().upper()
        eff = _yyyymmdd(fields[3])
        deletion_text = fields[4].strip()
        deletion = _NO_DELETION if deletion_text == "*" else _yyyymmdd(deletion_text)
        indicator = fields[5].strip()
        if (
            not _CODE.fullmatch(col1)
            or not _CODE.fullmatch(col2)
            or eff is None
            or deletion is None
            or indicator not in ("0", "1", "9")
        ):
            return False
        rationale = fields[6].strip() if len(fields) > 6 else ""
        index = self._rationale_index.get(rationale)
        if index is None:
            index = self._rationale_index[rationale] = len(self.rationales)
            self.rationales.append(rationale)
        packed = ((eff * 10**8 + deletion) * 10 + int(indicator)) * 1000 + index
        inner = self.pairs.get(col1)
        if inner is None:
            inner = self.pairs[sys.intern(col1)] = {}
        col2 = sys.intern(col2)
        before = inner.get(col2)
        if before is None:
            inner[col2] = packed
        elif isinstance(before, tuple):
            inner[col2] = (*before, packed)
        else:
            inner[col2] = (before, packed)
        self.rows += 1
        if indicator == "9":
            self.not_applicable += 1
        return True

    def _unpack(self, col1: str, col2: str, packed: int) -> PtpEdit:
        rest, index = divmod(packed, 1000)
        rest, indicator = divmod(rest, 10)
        eff, deletion = divmod(rest, 10**8)
        return PtpEdit(
            col1,
            col2,
            _to_date(eff) or date.min,
            _to_date(deletion),
            str(indicator),  # type: ignore[arg-type]
            self.rationales[index],
        )

    def edits(self, col1: str, col2: str) -> list[PtpEdit]:
        """Every row for the pair, whatever its dates."""
        packed = self.pairs.get(col1, {}).get(col2)
        if packed is None:
            return []
        rows = packed if isinstance(packed, tuple) else (packed,)
        return [self._unpack(col1, col2, p) for p in rows]

    def edit(self, col1: str, col2: str, on: date) -> PtpEdit | None:
        """The edit for column 1 / column 2 in force on the date, if any."""
        inner = self.pairs.get(col1)
        if inner is None or col2 not in inner:
            return None
        for row in self.edits(col1, col2):
            if row.active(on):
                return row
        return None

    def __len__(self) -> int:
        return self.rows

    def describe(self) -> str:
        """Where the table came from, for logs and capability notes."""
        names = ", ".join(p.name for p in self.sources)
        return f"NCCI PTP {self.provider} v{self.version}: {self.rows} rows from {names}"

    @classmethod
    def parse(
        cls,
        lines: Iterable[str],
        *,
        provider: Provider = "practitioner",
        version: str = "",
        sources: list[Path] | None = None,
        table: PtpTable | None = None,
    ) -> PtpTable:
        """Read rows from text lines in the official tab-separated layout."""
        if table is None:
            table = cls(provider, version, sources or [])
        for line in lines:
            fields = line.rstrip("\r\n").split("\t")
            first = fields[0].strip()
            if not _CODE.fullmatch(first.upper()):
                continue  # the AMA notice, the title and the three header lines
            if not table.add_row(fields):
                table.skipped += 1
        return table


@dataclass(frozen=True)
class MueEdit:
    """The most units of a code one provider may bill for one patient: per line (MAI 1)
    or per date of service (MAI 2 policy, MAI 3 clinical)."""

    code: str
    value: int
    mai: int
    rationale: str

    @property
    def per_day(self) -> bool:
        """True for the date-of-service edits (MAI 2 and 3): units add up across lines."""
        return self.mai in (2, 3)


@dataclass
class MueTable:
    """MUE values by code, from one quarterly file."""

    provider: Provider
    effective: date | None
    sources: list[Path]
    values: dict[str, MueEdit] = field(default_factory=dict)
    skipped: int = 0

    def get(self, code: str) -> MueEdit | None:
        return self.values.get(code)

    def __len__(self) -> int:
        return len(self.values)

    def describe(self) -> str:
        """Where the table came from, for logs and capability notes."""
        names = ", ".join(p.name for p in self.sources)
        eff = f" effective {self.effective.isoformat()}" if self.effective else ""
        return f"MUE {self.provider}{eff}: {len(self.values)} codes from {names}"

    @classmethod
    def parse(
        cls,
        text: str,
        *,
        provider: Provider = "practitioner",
        effective: date | None = None,
        sources: list[Path] | None = None,
    ) -> MueTable:
        """Read the official CSV layout: notice, header row, then one row per code."""
        table = cls(provider, effective, sources or [])
        header_seen = False
        for row in csv.reader(io.StringIO(text.lstrip("\ufeff"))):
            if not row:
                continue
            first = row[0].strip().upper()
            if not header_seen:
                header_seen = first.startswith(("HCPCS", "CPT CODE"))
                continue
            code = first
            value = row[1].strip() if len(row) > 1 else ""
            mai = (row[2].strip()[:1]) if len(row) > 2 else ""
            if not _CODE.fullmatch(code) or not value.isdigit() or mai not in ("1", "2", "3"):
                table.skipped += 1
                continue
            rationale = row[3].strip() if len(row) > 3 else ""
            table.values[code] = MueEdit(code, int(value), int(mai), rationale)
        return table


@dataclass
class NcciEdits:
    """The PTP and MUE tables found, by provider type, and why the missing ones are off."""

    ptp: dict[Provider, PtpTable] = field(default_factory=dict)
    mue: dict[Provider, MueTable] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def capabilities(self) -> dict[str, bool]:
        """ncci_ptp / ncci_mue (practitioner) and their _hospital twins: loaded or not."""
        caps: dict[str, bool] = {}
        for provider in PROVIDERS:
            suffix = "" if provider == "practitioner" else "_hospital"
            caps[f"ncci_ptp{suffix}"] = provider in self.ptp
            caps[f"ncci_mue{suffix}"] = provider in self.mue
        return caps


def _version_key(match: re.Match[str]) -> tuple[int, int]:
    return int(match.group(1)), int(match.group(2))


def _ptp_files(folder: Path, provider: Provider) -> tuple[str, list[Path]]:
    """The newest version's files for a provider type (f1…f4), and that version."""
    found: dict[tuple[int, int], list[Path]] = {}
    for path in folder.iterdir():
        m = _PTP_NAME[provider].match(path.name)
        if m and path.is_file():
            found.setdefault(_version_key(m), []).append(path)
    if not found:
        return "", []
    newest = max(found)
    major, revision = newest
    version = f"{major // 10}.{major % 10}r{revision}" if major >= 10 else f"{major}r{revision}"
    return version, sorted(found[newest])


def _mue_file(folder: Path, provider: Provider) -> tuple[date | None, Path | None]:
    best: tuple[date, Path] | None = None
    for path in folder.iterdir():
        m = _MUE_NAME[provider].match(path.name)
        if m and path.is_file():
            eff = date(int(m.group(3)), int(m.group(1)), int(m.group(2)))
            if best is None or eff > best[0]:
                best = (eff, path)
    return (best[0], best[1]) if best else (None, None)


def _lines(path: Path) -> Iterator[str]:
    with path.open(encoding="latin-1", newline="") as handle:
        yield from handle


def load_ptp(folder: Path, provider: Provider) -> PtpTable | None:
    """The newest PTP table for a provider type in the folder, or None when absent."""
    version, paths = _ptp_files(folder, provider)
    if not paths:
        return None
    table = PtpTable(provider, version, paths)
    for path in paths:
        PtpTable.parse(_lines(path), table=table)
    return table


def load_mue(folder: Path, provider: Provider) -> MueTable | None:
    """The newest MUE table for a provider type in the folder, or None when absent."""
    effective, path = _mue_file(folder, provider)
    if path is None:
        return None
    text = path.read_text(encoding="latin-1")
    return MueTable.parse(text, provider=provider, effective=effective, sources=[path])


def load_ncci(refdata_dir: Path | None) -> NcciEdits:
    """Every NCCI table in the reference-data folder; the missing ones noted with a reason."""
    edits = NcciEdits()
    for provider in PROVIDERS:
        suffix = "" if provider == "practitioner" else "_hospital"
        ptp_key, mue_key = f"ncci_ptp{suffix}", f"ncci_mue{suffix}"
        if refdata_dir is None:
            off = "no reference-data folder configured (CLAIMFLOW_REFDATA_DIR)"
            edits.notes[ptp_key] = edits.notes[mue_key] = off
            continue
        ptp = load_ptp(refdata_dir, provider)
        if ptp is None or len(ptp) == 0:
            pattern = "ccipra-v*-f*.txt" if provider == "practitioner" else "cciopra-v*-f*.txt"
            edits.notes[ptp_key] = f"no NCCI PTP {provider} file ({pattern}) in {refdata_dir}"
        else:
            edits.ptp[provider] = ptp
        mue = load_mue(refdata_dir, provider)
        if mue is None or len(mue) == 0:
            name = (
                "PractitionerServices"
                if provider == "practitioner"
                else ("OutpatientHospitalServices")
            )
            edits.notes[mue_key] = (
                f"no MUE {provider} file (MCR_MUE_{name}_Eff_MM-DD-YYYY.csv) in {refdata_dir}"
            )
        else:
            edits.mue[provider] = mue
    return edits
