"""MS-DRG assignment with msdrg's grouper, and relative weights from the CMS table.

The grouper version follows the discharge date: each fiscal year has a base release in
October and a mid-year release in April (V40.0 Oct 2022, V40.1 Apr 2023, ... V43.1 Apr
2026, V44.0 Oct 2026); msdrg carries V40.0-V44.0. Relative weights are not in msdrg:
they come from the table CMS publishes with each IPPS final rule, in the layout the CMS
IPPS Pricer reads (``drgstable-{year}.csv``: DRG, effective date, weight, mean lengths
of stay, post-acute flags). A weight is only given for a discharge in the table's own
fiscal year: weights are recalibrated every year, and last year's would misprice.
"""

from __future__ import annotations

import csv
import re
import weakref
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msdrg

from services.refdata.codesets import fiscal_year

# FY2026 IPPS national rates, wage index 1.0, before DSH, IME and outliers: operating
# standardized amount $6,752.61 plus capital federal rate $524.15 (FY2026 IPPS final rule).
# A payer contract names its own rate: CLAIMFLOW_CLAIMS__DRG_BASE_RATE (claims, for the
# expected amount) and CLAIMFLOW_REMITTANCE__DRG_BASE_RATE (remittance, for 835s without one).
DEFAULT_DRG_BASE_RATE = Decimal("7276.76")

_VERSIONS = {2023: 400, 2024: 410, 2025: 420, 2026: 430, 2027: 440}
_MID_YEAR = {400, 410, 420, 430}  # releases that have an April update (+1)
_GROUPER_LAST = date(2027, 3, 31)  # V44.0 is the last release msdrg carries
_POA = frozenset("YNUW")
_ANSWERS_KEPT = 1024
"""Grouper answers kept (each stay's is asked again within its validation only)."""


def grouper_version(discharge: date) -> int | None:
    """The MS-DRG grouper release for a discharge date (431 = V43.1), None if uncovered."""
    base = _VERSIONS.get(fiscal_year(discharge))
    if base is None or discharge > _GROUPER_LAST:
        return None
    if base in _MID_YEAR and 4 <= discharge.month <= 9:
        return base + 1
    return base


def version_label(version: int) -> str:
    """431 -> 'MS-DRG V43.1'."""
    return f"MS-DRG V{version // 10}.{version % 10}"


@dataclass(frozen=True)
class DrgWeight:
    """One row of the CMS DRG table."""

    drg: str
    effective: date
    weight: float
    gmlos: float
    amlos: float
    description: str


class DrgWeights:
    """Relative weights by DRG for the fiscal years whose tables were loaded."""

    def __init__(self, tables: dict[int, dict[str, DrgWeight]], sources: list[Path]) -> None:
        self.tables = tables
        self.sources = sources

    @classmethod
    def load(cls, refdata_dir: Path | None) -> DrgWeights | None:
        """Every ``drgstable-{year}.csv`` in the folder; None when there is none."""
        if refdata_dir is None or not Path(refdata_dir).is_dir():
            return None
        files = sorted(
            p for p in Path(refdata_dir).iterdir() if re.fullmatch(r"drgstable-\d{4}\.csv", p.name)
        )
        tables: dict[int, dict[str, DrgWeight]] = {}
        for path in files:
            with path.open(newline="") as fh:
                for row in csv.DictReader(fh):
                    effective = datetime.strptime(row["effectiveDate"].strip(), "%Y%m%d").date()
                    drg = row["diagnosticRelatedGroup"].strip().zfill(3)
                    tables.setdefault(fiscal_year(effective), {})[drg] = DrgWeight(
                        drg,
                        effective,
                        float(row["weight"]),
                        float(row["geometricMeanLengthOfStay"] or 0),
                        float(row["arithmeticMeanLengthOfStay"] or 0),
                        row.get("description", "").strip(),
                    )
        return cls(tables, files) if tables else None

    def weight(self, drg: str, discharge: date) -> DrgWeight | None:
        """The weight in force for the discharge's fiscal year, if that year's table is here."""
        return self.tables.get(fiscal_year(discharge), {}).get(drg.zfill(3))

    def years(self) -> list[int]:
        """Fiscal years with a table."""
        return sorted(self.tables)


@dataclass(frozen=True)
class Grouped:
    """What the grouper decided for one stay."""

    drg: str
    description: str | None
    mdc: str | None
    version: int
    return_code: str
    severity: str
    weight: float | None
    hacs: tuple[Hac, ...] = ()
    """Secondary diagnoses not present on admission that meet a HAC category's criteria."""
    poa_unreadable: tuple[str, ...] = ()
    """Diagnoses the HAC logic reads whose POA indicator is missing or not one (the grouper's
    POA_NOT_RECOGNIZED)."""


@dataclass(frozen=True)
class Hac:
    """A hospital-acquired condition the grouper found (POA N or U on a HAC code)."""

    code: str
    category: str  # HAC01 ... HAC14
    description: str


class Grouper:
    """msdrg's MS-DRG grouper, opened once and closed with its owner."""

    def __init__(self, weights: DrgWeights | None = None) -> None:
        self.weights = weights
        self._grouper = msdrg.MsdrgGrouper()
        self._finalizer = weakref.finalize(self, self._grouper.close)
        self._answers: dict[tuple[Any, ...], Grouped | None] = {}

    def close(self) -> None:
        """Release the native grouper."""
        self._finalizer()

    def group(
        self,
        *,
        discharge: date,
        age: int,
        sex: str,
        discharge_status: str | None,
        principal: tuple[str, str | None],
        secondary: list[tuple[str, str | None]],
        procedures: list[str],
    ) -> Grouped | None:
        """The MS-DRG of a stay (codes without dots, POA Y/N/U/W/1); None if no release.

        The answer depends on these arguments only, and validation asks about each stay
        twice (its HAC and its POA edits): the last answers are kept."""
        key = (
            discharge,
            age,
            sex,
            discharge_status,
            principal,
            tuple(secondary),
            tuple(procedures),
        )
        answers = self._answers
        if key in answers:
            return answers[key]
        if len(answers) >= _ANSWERS_KEPT:
            answers.clear()
        grouped = answers[key] = self._group(
            discharge, age, sex, discharge_status, principal, secondary, procedures
        )
        return grouped

    def _group(
        self,
        discharge: date,
        age: int,
        sex: str,
        discharge_status: str | None,
        principal: tuple[str, str | None],
        secondary: list[tuple[str, str | None]],
        procedures: list[str],
    ) -> Grouped | None:
        """``group`` without the kept answers: the grouper asked."""
        version = grouper_version(discharge)
        if version is None:
            return None
        claim: Any = {
            "version": version,
            "age": max(0, min(age, 124)),
            "sex": {"M": 0, "F": 1}.get(sex, 2),
            "discharge_status": _status(discharge_status),
            "hospital_status": "NOT_EXEMPT",
            "pdx": _dx(*principal),
            "sdx": [_dx(c, p) for c, p in secondary],
            "procedures": [{"code": p} for p in procedures],
        }
        result = self._grouper.group(claim)
        drg_number = result.get("final_drg")
        drg = f"{drg_number:03d}" if drg_number is not None else "999"
        weight = self.weights.weight(drg, discharge) if self.weights else None
        mdc = result.get("final_mdc")
        hacs = tuple(
            Hac(str(d.get("code")), str(h.get("hac_list")), str(h.get("description") or ""))
            for d in result.get("sdx_output") or []
            for h in d.get("hacs") or []
            if h.get("hac_status") == "HAC_CRITERIA_MET"
            and re.fullmatch(r"HAC\d\d", str(h.get("hac_list")))
        )
        unreadable = tuple(
            str(d.get("code"))
            for d in [result.get("pdx_output") or {}, *(result.get("sdx_output") or [])]
            if d.get("poa_error") == "POA_NOT_RECOGNIZED"
        )
        return Grouped(
            drg=drg,
            description=result.get("final_drg_description"),
            mdc=f"{mdc:02d}" if mdc is not None else None,
            version=version,
            return_code=str(result.get("return_code") or ""),
            severity=str(result.get("final_severity") or ""),
            weight=weight.weight if weight else None,
            hacs=hacs,
            poa_unreadable=unreadable,
        )


def _dx(code: str, poa: str | None) -> dict[str, str]:
    out = {"code": code}
    if poa and poa.upper() in _POA:  # "1" (exempt) and blanks are sent as no indicator
        out["poa"] = poa.upper()
    return out


def _status(value: str | None) -> int:
    """UB-04 patient discharge status as the grouper wants it (01 home when unknown)."""
    try:
        return int(value) if value else 1
    except ValueError:
        return 1
