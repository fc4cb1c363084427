"""Medicare Physician Fee Schedule, priced from the official CMS files.

Reads the files CMS publishes for each release, unchanged: ``PPRRVU{year}_{release}.csv``
(relative value units, status codes, conversion factor), ``GPCI{year}.csv`` (geographic
practice cost indices by locality) and, when present, ``{yy}LOCCO.csv`` (the counties in
each locality). Columns are found by their header text, not by position.

The non-facility amount is the CMS formula::

    [(work RVU x PW GPCI) + (non-facility PE RVU x PE GPCI) + (MP RVU x MP GPCI)] x CF

times units, rounded to cents once at the end. For codes CMS flags "NA" in the
non-facility setting the file already carries the facility PE RVU in the non-facility
column, which is what CMS pays there.

Locality: a state with one locality (most are statewide) uses it; a state with several
uses its "rest of state" locality, because the ZIP-to-locality file is not loaded yet and
the postal code alone cannot place a county. Payment modifiers other than 26/TC/53 (50,
51, 80, ...) are not applied; the rates of the loaded year are used for every date.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path

PAYABLE_STATUS = frozenset({"A", "R", "T"})
"""PPRRVU status codes paid under the fee schedule: active, restricted, paid if alone."""

SPLIT_MODIFIERS = ("26", "TC", "53")
"""Modifiers with their own PPRRVU rows (professional, technical, discontinued)."""

_STATE_ALIASES = {"GU": "HI"}  # GPCI2025: locality "HAWAII, GUAM" is filed under HI.
_MONTHS = {
    m: i
    for i, m in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1
    )
}
_CENT = Decimal("0.01")


@dataclass(frozen=True)
class RvuRow:
    """One PPRRVU row: a code, optionally with a modifier, and its relative values."""

    code: str
    modifier: str
    status: str
    work: Decimal
    pe_nonfacility: Decimal
    nonfacility_na: bool
    pe_facility: Decimal
    facility_na: bool
    mp: Decimal
    not_used_for_medicare: bool
    conversion_factor: Decimal


@dataclass(frozen=True)
class Locality:
    """One Medicare payment locality with its three GPCIs."""

    mac: str
    number: str
    state: str
    name: str
    pw: Decimal
    pe: Decimal
    mp: Decimal
    area: str | None = None
    counties: str | None = None

    @property
    def rest_of_state(self) -> bool:
        """True for the catch-all locality of a state with several localities."""
        text = f"{self.area or ''} {self.name}".upper()
        return "REST OF" in text


def _read_rows(path: Path) -> list[list[str]]:
    """All CSV rows, decoded as UTF-8 (with or without BOM) or, failing that, Windows-1252."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")
    return list(csv.reader(text.splitlines()))


def _dec(value: str) -> Decimal:
    """A decimal from a CSV cell; blank means zero."""
    value = value.strip()
    if not value:
        return Decimal(0)
    try:
        return Decimal(value)
    except InvalidOperation as exc:
        raise ValueError(f"not a number: {value!r}") from exc


def _norm(text: str) -> str:
    return " ".join(text.upper().split())


def _find_columns(header: Sequence[str], wanted: dict[str, str], path: Path) -> dict[str, int]:
    """Map each wanted key to the column whose normalised header contains its text."""
    names = [_norm(h) for h in header]
    found: dict[str, int] = {}
    for key, text in wanted.items():
        hits = [i for i, name in enumerate(names) if text in name]
        if not hits:
            raise ValueError(
                f"{path.name}: no column headed {text!r}; is this the official CMS layout? "
                f"Headers seen: {[n for n in names if n]}"
            )
        found[key] = hits[0]
    return found


_PPRRVU_COLUMNS = {
    "code": "HCPCS",
    "mod": "MOD",
    "status": "STATUS CODE",
    "not_used": "NOT USED FOR MEDICARE PAYMENT",
    "work": "WORK RVU",
    "pe_nf": "NON-FAC PE RVU",
    "nf_na": "NON-FAC NA INDICATOR",
    "pe_f": "FACILITY PE RVU",
    "f_na": "FACILITY NA INDICATOR",
    "mp": "MP RVU",
    "cf": "CONV FACTOR",
}


def _pprrvu_header(rows: list[list[str]], path: Path) -> tuple[int, list[str]]:
    """The index of the 'HCPCS' header row and the column names stacked over four rows."""
    for i, row in enumerate(rows):
        if row and row[0].strip().upper() == "HCPCS":
            width = max(len(r) for r in rows[max(0, i - 3) : i + 1])
            names = []
            for col in range(width):
                parts = [r[col].strip() for r in rows[max(0, i - 3) : i + 1] if col < len(r)]
                names.append(" ".join(p for p in parts if p))
            # The first two columns are single words; stacking would only add noise.
            names[0], names[1] = "HCPCS", "MOD"
            return i, names
    raise ValueError(f"{path.name}: no header row starting with 'HCPCS'; not a PPRRVU file?")


def parse_pprrvu(path: Path) -> dict[tuple[str, str], RvuRow]:
    """Rows of a PPRRVU file keyed by (code, modifier); modifier '' is the global row."""
    rows = _read_rows(path)
    start, header = _pprrvu_header(rows, path)
    # "MOD" and "MP RVU" both contain "MOD"/"MP": match the short ones exactly.
    cols = _find_columns(header, {k: v for k, v in _PPRRVU_COLUMNS.items() if k != "mod"}, path)
    cols["code"], cols["mod"] = 0, 1
    out: dict[tuple[str, str], RvuRow] = {}
    for row in rows[start + 1 :]:
        if len(row) <= max(cols.values()) or not row[cols["code"]].strip():
            continue
        code = row[cols["code"]].strip().upper()
        mod = row[cols["mod"]].strip().upper()
        out[(code, mod)] = RvuRow(
            code=code,
            modifier=mod,
            status=row[cols["status"]].strip().upper(),
            work=_dec(row[cols["work"]]),
            pe_nonfacility=_dec(row[cols["pe_nf"]]),
            nonfacility_na=row[cols["nf_na"]].strip().upper() == "NA",
            pe_facility=_dec(row[cols["pe_f"]]),
            facility_na=row[cols["f_na"]].strip().upper() == "NA",
            mp=_dec(row[cols["mp"]]),
            not_used_for_medicare=bool(row[cols["not_used"]].strip()),
            conversion_factor=_dec(row[cols["cf"]]),
        )
    if not out:
        raise ValueError(f"{path.name}: no code rows found")
    return out


def _header_index(rows: list[list[str]], marker: str, path: Path) -> int:
    for i, row in enumerate(rows):
        if any(marker in _norm(cell) for cell in row):
            return i
    raise ValueError(f"{path.name}: no header row with {marker!r}")


def parse_gpci(path: Path) -> list[Locality]:
    """Localities of a GPCI file (CMS PFS Addendum E layout)."""
    rows = _read_rows(path)
    h = _header_index(rows, "LOCALITY NUMBER", path)
    cols = _find_columns(
        rows[h],
        {
            "mac": "CONTRACTOR",
            "state": "STATE",
            "number": "LOCALITY NUMBER",
            "name": "LOCALITY NAME",
            "pw": "PW GPCI",
            "pe": "PE GPCI",
            "mp": "MP GPCI",
        },
        path,
    )
    out = []
    for row in rows[h + 1 :]:
        if len(row) <= max(cols.values()):
            continue
        state = row[cols["state"]].strip().upper()
        number = row[cols["number"]].strip()
        if not re.fullmatch(r"[A-Z]{2}", state) or not number.isdigit():
            continue
        out.append(
            Locality(
                mac=row[cols["mac"]].strip(),
                number=number.zfill(2),
                state=state,
                name=row[cols["name"]].strip(),
                pw=_dec(row[cols["pw"]]),
                pe=_dec(row[cols["pe"]]),
                mp=_dec(row[cols["mp"]]),
            )
        )
    if not out:
        raise ValueError(f"{path.name}: no locality rows found")
    return out


def parse_locco(path: Path) -> dict[tuple[int, int], tuple[str, str, str]]:
    """(MAC, locality) -> (state name, fee schedule area, counties) from a LOCCO file."""
    rows = _read_rows(path)
    h = _header_index(rows, "LOCALITY NUMBER", path)
    cols = _find_columns(
        rows[h],
        {
            "mac": "CONTRACTOR",
            "number": "LOCALITY NUMBER",
            "state": "STATE",
            "area": "FEE SCHEDULE AREA",
            "counties": "COUNTIES",
        },
        path,
    )
    out: dict[tuple[int, int], tuple[str, str, str]] = {}
    state = ""
    for row in rows[h + 1 :]:
        if len(row) <= max(cols.values()):
            continue
        mac, number = row[cols["mac"]].strip(), row[cols["number"]].strip()
        if not (mac.isdigit() and number.isdigit()):
            continue
        # The state is written on the first locality of each state only.
        state = row[cols["state"]].strip() or state
        key = (int(mac), int(number))
        out.setdefault(key, (state, row[cols["area"]].strip(), row[cols["counties"]].strip()))
    return out


def _pick(paths: Iterable[Path], pattern: str) -> list[tuple[tuple[int, int], Path]]:
    """Files matching pattern (groups: year, optional month), newest first."""
    found = []
    for path in paths:
        m = re.fullmatch(pattern, path.name, flags=re.IGNORECASE)
        if not m:
            continue
        year = int(m.group(1))
        year = year + 2000 if year < 100 else year
        month = _MONTHS.get((m.group(2) or "")[:3].upper(), 0) if m.lastindex == 2 else 0
        found.append(((year, month), path))
    return sorted(found, reverse=True)


class FeeSchedule:
    """Medicare PFS rates for one release: RVUs, GPCIs and the conversion factor."""

    def __init__(
        self,
        rows: dict[tuple[str, str], RvuRow],
        localities: list[Locality],
        *,
        year: int,
        release: str,
        sources: tuple[Path, ...] = (),
    ) -> None:
        self.rows = rows
        self.localities = localities
        self.year = year
        self.release = release
        self.sources = sources
        self._codes = frozenset(code for code, _ in rows)
        self._by_state: dict[str, list[Locality]] = {}
        for loc in localities:
            self._by_state.setdefault(loc.state, []).append(loc)
        cfs = {r.conversion_factor for r in rows.values() if r.conversion_factor}
        self.conversion_factor = max(cfs) if cfs else Decimal(0)

    @classmethod
    def load(cls, cms_dir: Path) -> FeeSchedule:
        """Load the newest PPRRVU, its year's GPCI and (optional) LOCCO file from cms_dir."""
        cms_dir = Path(cms_dir)
        if not cms_dir.is_dir():
            raise FileNotFoundError(f"fee schedule folder {cms_dir} does not exist")
        files = list(cms_dir.iterdir())
        rvus = _pick(files, r"PPRRVU(\d{4}|\d{2})_?([A-Za-z]{3})?[^/]*\.csv")
        if not rvus:
            raise FileNotFoundError(
                f"no PPRRVU*.csv in {cms_dir}: download the Physician Fee Schedule RVU file "
                "from CMS (e.g. PPRRVU2025_Oct.csv) into that folder"
            )
        (year, month), rvu_path = rvus[0]
        gpcis = _pick(files, r"GPCI(\d{4})[^/]*\.csv")
        gpci = next((p for (y, _), p in gpcis if y == year), gpcis[0][1] if gpcis else None)
        if gpci is None:
            raise FileNotFoundError(
                f"no GPCI*.csv in {cms_dir}: the fee schedule needs the GPCI file of the "
                f"{year} release (e.g. GPCI{year}.csv)"
            )
        localities = parse_gpci(gpci)
        sources: tuple[Path, ...] = (rvu_path, gpci)
        loccos = _pick(files, r"(\d{2})LOCCO[^/]*\.csv")
        locco = next((p for (y, _), p in loccos if y == year), None)
        if locco is not None:
            areas = parse_locco(locco)
            localities = [
                _with_area(loc, areas.get((int(loc.mac), int(loc.number)))) for loc in localities
            ]
            sources += (locco,)
        release = next((k.title() for k, v in _MONTHS.items() if v == month), "")
        return cls(parse_pprrvu(rvu_path), localities, year=year, release=release, sources=sources)

    def known(self, code: str) -> bool:
        """True when the code has any row in the RVU file, payable or not."""
        return code.strip().upper() in self._codes

    def status(self, code: str) -> str | None:
        """The PPRRVU status code of the global row, or None for a code not in the file."""
        row = self.rows.get((code.strip().upper(), ""))
        return row.status if row else None

    def locality(self, state: str | None, postal_code: str | None = None) -> Locality | None:
        """The payment locality for a state: its only one, else its rest-of-state locality."""
        if not state:
            return None
        state = state.strip().upper()
        locs = self._by_state.get(_STATE_ALIASES.get(state, state), [])
        if len(locs) == 1:
            return locs[0]
        rest = [loc for loc in locs if loc.rest_of_state]
        return rest[0] if rest else None

    def row_for(self, code: str, modifiers: Sequence[str] = ()) -> RvuRow | None:
        """The RVU row that prices code with modifiers: a 26/TC/53 row when billed, else global."""
        code = code.strip().upper()
        mods = [m.strip().upper() for m in modifiers]
        for mod in SPLIT_MODIFIERS:
            if mod in mods:
                # A split modifier on a code without that split has no Medicare rate.
                return self.rows.get((code, mod))
        return self.rows.get((code, ""))

    def allowed(
        self,
        code: str,
        modifiers: Sequence[str],
        units: float,
        state: str | None,
        postal_code: str | None,
        *,
        facility: bool = False,
    ) -> Decimal | None:
        """Medicare allowed amount for the line, or None when the schedule has no rate for it."""
        row = self.row_for(code, modifiers)
        if row is None or row.status not in PAYABLE_STATUS or row.not_used_for_medicare:
            return None
        if facility and row.facility_na:
            return None
        loc = self.locality(state, postal_code)
        if loc is None or units <= 0:
            return None
        pe = row.pe_facility if facility else row.pe_nonfacility
        rvus = row.work * loc.pw + pe * loc.pe + row.mp * loc.mp
        if row.work + pe + row.mp == 0:
            return None  # contractor-priced: no RVU-based rate to expect
        amount = rvus * row.conversion_factor * Decimal(str(units))
        return amount.quantize(_CENT, rounding=ROUND_HALF_UP)


def _with_area(loc: Locality, area: tuple[str, str, str] | None) -> Locality:
    if area is None:
        return loc
    return Locality(
        mac=loc.mac,
        number=loc.number,
        state=loc.state,
        name=loc.name,
        pw=loc.pw,
        pe=loc.pe,
        mp=loc.mp,
        area=area[1],
        counties=area[2],
    )
