"""The IPPS wage index: what a hospital's area does to its Medicare inpatient rate.

Medicare pays an inpatient stay the MS-DRG relative weight times the federal rates, the
labor-related part of the operating rate scaled by the wage index of the hospital's area
(CBSA) and the capital rate by the geographic adjustment factor (FY2026 IPPS final rule,
and the CMS IPPS Pricer that applies it):

    operating = standardized amount x (labor share x wage index + (1 - labor share))
    capital   = capital federal rate x wage index ** 0.6848
    labor share = 66.0% when the wage index is above 1.0, else 62.0% (FY2026)

The wage index by CBSA comes from the table CMS publishes with each IPPS final rule, in
the layout the CMS IPPS Pricer reads (``cbsa-wage-index-{year}.csv``: cbsa, size,
effectiveDate, geographicWageIndex, reclassifiedWageIndex, imputedFloorWageIndex, name),
from the folder ``CLAIMFLOW_REFDATA_DIR`` names; the hospital's CBSA from its provider
profile (``cbsa``). The geographic wage index is used (a hospital's MGCRB reclassification
is in the provider-specific file, which is not loaded); where CMS publishes none (a state
without rural areas) the imputed floor. DSH, IME, outliers and transfers are not priced.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from services.refdata.codesets import fiscal_year
from services.refdata.masterfile import MasterDataError

# FY2026 IPPS national rates (final rule): the operating standardized amount and the
# capital federal rate, whose sum is DEFAULT_DRG_BASE_RATE (services/refdata/drg.py).
OPERATING_RATE = Decimal("6752.61")
CAPITAL_RATE = Decimal("524.15")
LABOR_SHARE_ABOVE_ONE = Decimal("0.660")
LABOR_SHARE_AT_MOST_ONE = Decimal("0.620")
CAPITAL_GAF_EXPONENT = 0.6848
_OPERATING_SHARE = OPERATING_RATE / (OPERATING_RATE + CAPITAL_RATE)
_CENT = Decimal("0.01")
_FILE = re.compile(r"cbsa-wage-index-\d{4}\.csv")


@dataclass(frozen=True)
class WageIndex:
    """One CBSA's wage index for one fiscal year."""

    cbsa: str
    value: Decimal
    effective: date
    name: str


class WageIndexTable:
    """Wage indexes by CBSA for the fiscal years whose tables were loaded."""

    def __init__(self, tables: dict[int, dict[str, WageIndex]], sources: list[Path]) -> None:
        self.tables = tables
        self.sources = sources

    @classmethod
    def load(cls, refdata_dir: Path | None) -> WageIndexTable | None:
        """Every ``cbsa-wage-index-{year}.csv`` in the folder; None when there is none.
        A row that cannot be read raises MasterDataError naming the file, row and field."""
        if refdata_dir is None or not Path(refdata_dir).is_dir():
            return None
        files = sorted(p for p in Path(refdata_dir).iterdir() if _FILE.fullmatch(p.name))
        tables: dict[int, dict[str, WageIndex]] = {}
        for path in files:
            with path.open(newline="", encoding="utf-8", errors="replace") as fh:
                for n, row in enumerate(csv.DictReader(fh), start=2):
                    found = _row(row, path, n)
                    tables.setdefault(fiscal_year(found.effective), {})[found.cbsa] = found
        return cls(tables, files) if tables else None

    def index(self, cbsa: str, discharge: date) -> WageIndex | None:
        """The wage index of the CBSA in the discharge's fiscal year, if that table is here."""
        return self.tables.get(fiscal_year(discharge), {}).get(cbsa.strip())

    def years(self) -> list[int]:
        """Fiscal years with a table."""
        return sorted(self.tables)


def _row(row: dict[str, str], path: Path, n: int) -> WageIndex:
    where = f"row {n}"
    cbsa = (row.get("cbsa") or "").strip()
    if not re.fullmatch(r"[0-9]{2}|[0-9]{5}", cbsa):
        raise MasterDataError(path, where, "cbsa", "must be a 5-digit CBSA or 2-digit state code")
    try:
        effective = datetime.strptime((row.get("effectiveDate") or "").strip(), "%Y%m%d").date()
    except ValueError:
        raise MasterDataError(path, where, "effectiveDate", "must be a date YYYYMMDD") from None
    values = {}
    for name in ("geographicWageIndex", "imputedFloorWageIndex"):
        try:
            values[name] = Decimal((row.get(name) or "0").strip() or "0")
        except ArithmeticError:
            raise MasterDataError(path, where, name, "must be a number") from None
        if not values[name].is_finite() or values[name] < 0:
            raise MasterDataError(path, where, name, "must be a number of 0 or more")
    value = values["geographicWageIndex"] or values["imputedFloorWageIndex"]
    if value <= 0:
        raise MasterDataError(path, where, "geographicWageIndex", "no wage index for the CBSA")
    return WageIndex(cbsa, value, effective, (row.get("name") or "").strip())


def labor_share(wage_index: Decimal) -> Decimal:
    """The labor-related share of the operating rate (FY2026): 66.0% above 1.0, else 62.0%."""
    return LABOR_SHARE_ABOVE_ONE if wage_index > 1 else LABOR_SHARE_AT_MOST_ONE


def adjusted_rate(base_rate: Decimal, wage_index: Decimal) -> Decimal:
    """The base rate (operating + capital) for a hospital in an area with this wage index.

    The base rate splits into operating and capital in the national rates' proportion, so
    the default (FY2026 $6,752.61 + $524.15) gives the IPPS figures exactly and a configured
    rate is adjusted the same way."""
    operating = base_rate * _OPERATING_SHARE
    capital = base_rate - operating
    share = labor_share(wage_index)
    gaf = Decimal(str(round(float(wage_index) ** CAPITAL_GAF_EXPONENT, 4)))
    adjusted = operating * (share * wage_index + (1 - share)) + capital * gaf
    return adjusted.quantize(_CENT, rounding=ROUND_HALF_UP)
