"""The chargemaster and contracted rates, read from the CMS Hospital Price Transparency file.

Hospitals publish their standard charges by law (45 CFR 180.50) in a machine-readable file
whose layout CMS defines (github.com/CMSgov/hospital-price-transparency): CSV "tall" (one
row per item and payer/plan), CSV "wide" (one row per item, one column group per
payer/plan), or JSON, versions 2.x and 3.x. This module reads any of them, as published,
into one table:

- an item: its description, its codes by type (``CDM`` the chargemaster number, ``RC`` the
  UB-04 revenue code, ``CPT``/``HCPCS``, ``MS-DRG``, ``NDC`` …), setting (inpatient,
  outpatient, both), gross charge and discounted cash price;
- per payer and plan: the negotiated dollar amount, percentage or algorithm, and the
  methodology (``fee schedule``, ``case rate``, ``per diem``, ``percent of total billed
  charges``, ``other``);
- modifier adjustments (v3: rows with a modifier and no code), per payer and plan.

A billing system keys a charge by its chargemaster number, so ``CDM`` codes are the charge
codes (``LOCAL`` codes too: the v2 examples label the hospital's own number that way). A
revenue code is written as four digits (``611`` in the file is ``0611``). A file that is not
one of these layouts, or a row that breaks the layout (a code without its type, an unknown
code type or methodology, a charge that is not a number), is refused with its file, row and
field (``MasterDataError``).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from services.refdata.masterfile import MasterDataError, read_json

CODE_TYPES = frozenset(
    {
        "CPT", "HCPCS", "ICD", "DRG", "MS-DRG", "R-DRG", "S-DRG", "APS-DRG", "AP-DRG", "APR-DRG",
        "TRIS-DRG", "APC", "NDC", "HIPPS", "LOCAL", "EAPG", "CDT", "RC", "CDM", "CMG",
        "MS-LTC-DRG",
    }
)  # fmt: skip
"""Code types of the v3.0 schema (``code_information.type``); v2 has the same list."""
METHODOLOGIES = frozenset(
    {"case rate", "fee schedule", "percent of total billed charges", "per diem", "other"}
)
SETTINGS = frozenset({"inpatient", "outpatient", "both"})
CHARGE_CODE_TYPES = ("CDM", "LOCAL")
_CENT = Decimal("0.01")


@dataclass(frozen=True)
class NegotiatedRate:
    """One payer/plan's standard charge for an item: dollars, a percentage, or an algorithm."""

    payer_name: str
    plan_name: str
    methodology: str
    dollar: Decimal | None = None
    percentage: Decimal | None = None
    algorithm: str | None = None
    notes: str | None = None

    def for_line(self, units: float, charge: Decimal) -> Decimal | None:
        """What this rate pays for a line of ``units`` billed at ``charge``; None if unknowable.

        Dollars are per unit for a fee schedule or a per diem (units are days on
        accommodation lines), once for a case rate; a percentage is of the billed charge.
        An algorithm alone cannot be priced here.
        """
        if self.dollar is not None:
            if self.methodology in ("fee schedule", "per diem"):
                return (self.dollar * Decimal(str(units))).quantize(_CENT, ROUND_HALF_UP)
            return self.dollar
        if self.percentage is not None:
            return (charge * self.percentage / 100).quantize(_CENT, ROUND_HALF_UP)
        return None


@dataclass(frozen=True)
class ChargeItem:
    """One item of the chargemaster in one setting, with every payer/plan's rate."""

    description: str
    codes: tuple[tuple[str, str], ...]
    """(type, code) as published, revenue codes as four digits."""
    setting: str
    gross_charge: Decimal | None
    discounted_cash: Decimal | None
    modifiers: tuple[str, ...] = ()
    rates: tuple[NegotiatedRate, ...] = ()
    where: str = ""
    """Where the item was first read (``row 7``, ``standard_charge_information[3]``)."""

    def code(self, *types: str) -> str | None:
        """The first code of one of these types."""
        for kind in types:
            for k, value in self.codes:
                if k == kind:
                    return value
        return None

    @property
    def charge_code(self) -> str | None:
        return self.code(*CHARGE_CODE_TYPES)

    @property
    def revenue_code(self) -> str | None:
        return self.code("RC")

    @property
    def hcpcs(self) -> tuple[str, str] | None:
        """(code, "CPT" or "HCPCS") when the item carries one."""
        for kind, value in self.codes:
            if kind in ("CPT", "HCPCS"):
                return value, kind
        return None

    def rate(self, payer_name: str, plan_name: str | None = None) -> NegotiatedRate | None:
        """The payer's rate (plan ``None``: the payer's only plan, or its first)."""
        payer = payer_name.casefold()
        plan = plan_name.casefold() if plan_name else None
        for r in self.rates:
            if r.payer_name.casefold() == payer and plan in (None, r.plan_name.casefold()):
                return r
        return None


@dataclass(frozen=True)
class ModifierAdjustment:
    """A v3 modifier row: how a payer/plan adjusts an item billed with these modifiers."""

    modifiers: tuple[str, ...]
    payer_name: str
    plan_name: str
    percentage: Decimal | None
    description: str


@dataclass
class Chargemaster:
    """The items of one price-transparency file, found by charge code, HCPCS, DRG or RC."""

    hospital_name: str
    version: str
    source: str
    items: list[ChargeItem] = field(default_factory=list)
    modifier_adjustments: list[ModifierAdjustment] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._by: dict[tuple[str, str], list[ChargeItem]] = {}
        for item in self.items:
            for kind, value in item.codes:
                key = ("CHARGE" if kind in CHARGE_CODE_TYPES else kind, value)
                self._by.setdefault(key, []).append(item)

    def __len__(self) -> int:
        return len(self.items)

    @staticmethod
    def _in_setting(items: Sequence[ChargeItem], setting: str | None) -> ChargeItem | None:
        if not items:
            return None
        wanted = "inpatient" if setting == "inpatient" else "outpatient"
        for item in items:
            if item.setting == wanted:
                return item
        for item in items:
            if item.setting == "both":
                return item
        return items[0] if setting is None else None

    def by_charge_code(self, code: str, setting: str | None = None) -> ChargeItem | None:
        """The item a charge (chargemaster) number names, in the encounter's setting."""
        items = self._by.get(("CHARGE", code.strip()), [])
        return self._in_setting(items, setting) or (items[0] if items else None)

    def for_service(
        self, code: str | None, revenue_code: str | None, setting: str | None
    ) -> ChargeItem | None:
        """The item for a billed line: by CPT/HCPCS (preferring the line's revenue code),
        else, for a revenue-code-only line, by revenue code."""
        if code:
            items = self._by.get(("CPT", code), []) + self._by.get(("HCPCS", code), [])
            # A professional line (no revenue code) is priced by the professional fee
            # schedule's item (no revenue code either), a facility line by its department's.
            same = [i for i in items if i.revenue_code == revenue_code]
            return self._in_setting(same or items, setting)
        if revenue_code:
            only_rc = [i for i in self._by.get(("RC", revenue_code), []) if i.hcpcs is None]
            return self._in_setting(only_rc, setting)
        return None

    def for_drg(self, drg: str) -> ChargeItem | None:
        """The inpatient MS-DRG item (its case rates)."""
        return self._in_setting(self._by.get(("MS-DRG", drg.zfill(3)), []), "inpatient")

    def modifier_factor(
        self, modifiers: Iterable[str], payer_name: str, plan_name: str | None
    ) -> Decimal | None:
        """The payer's percentage for exactly this set of payment modifiers, if published."""
        wanted = frozenset(m.upper() for m in modifiers)
        if not wanted:
            return None
        for adj in self.modifier_adjustments:
            if (
                frozenset(adj.modifiers) == wanted
                and adj.payer_name.casefold() == payer_name.casefold()
                and (plan_name is None or adj.plan_name.casefold() == plan_name.casefold())
                and adj.percentage is not None
            ):
                return adj.percentage
        return None


# --- reading ---------------------------------------------------------------------------------


def load_chargemaster(path: Path) -> Chargemaster:
    """Read a price-transparency file: JSON by its content, else CSV tall or wide."""
    path = Path(path)
    data = _read_bytes(path)
    if data[:64].lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        return _from_json(path, read_json(path, "chargemaster"))
    return _from_csv(path, data)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        reason = f"cannot read the chargemaster: {exc.strerror}"
        raise MasterDataError(path, "", "(file)", reason) from None


def _norm_header(name: str) -> str:
    return re.sub(r"\s*\|\s*", "|", name.strip()).lower()


def _money(value: Any, path: Path, where: str, name: str) -> Decimal | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = str(value).strip().replace(",", "").lstrip("$")
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise MasterDataError(path, where, name, f"not a number: {str(value)[:40]!r}") from None
    if not number.is_finite() or number < 0:
        raise MasterDataError(path, where, name, "must be a number of zero or more")
    return number


def _code(kind: str, value: str, path: Path, where: str, name: str) -> tuple[str, str]:
    kind = kind.strip().upper()
    value = value.strip()
    if kind not in CODE_TYPES:
        raise MasterDataError(
            path, where, f"{name}|type", f"code type {kind[:20]!r} is not one of the CMS code types"
        )
    if kind == "RC":
        if not re.fullmatch(r"[0-9]{3,4}", value):
            raise MasterDataError(path, where, name, "a revenue code is 3 or 4 digits")
        value = value.zfill(4)
    elif kind == "MS-DRG":
        if not re.fullmatch(r"[0-9]{1,3}", value):
            raise MasterDataError(path, where, name, "an MS-DRG is up to 3 digits")
        value = value.zfill(3)
    elif kind in ("CPT", "HCPCS"):
        value = value.upper()
    return kind, value


def _rate(
    raw: Mapping[str, Any], path: Path, where: str, names: Mapping[str, str]
) -> NegotiatedRate:
    """A payer/plan rate from already-located values; ``names`` are the fields as published."""
    methodology = str(raw.get("methodology") or "").strip().lower()
    dollar = _money(raw.get("dollar"), path, where, names["dollar"])
    pct = _money(raw.get("percentage"), path, where, names["percentage"])
    algorithm = str(raw.get("algorithm") or "").strip() or None
    if methodology not in METHODOLOGIES:
        shown = methodology[:40] or "(empty)"
        raise MasterDataError(
            path, where, names["methodology"],
            f"methodology {shown!r} is not one of: {', '.join(sorted(METHODOLOGIES))}",
        )  # fmt: skip
    if dollar is None and pct is None and algorithm is None:
        raise MasterDataError(
            path, where, names["dollar"],
            "a payer rate needs a negotiated dollar amount, percentage or algorithm",
        )  # fmt: skip
    return NegotiatedRate(
        payer_name=str(raw["payer_name"]).strip(),
        plan_name=str(raw.get("plan_name") or "").strip(),
        methodology=methodology,
        dollar=dollar,
        percentage=pct,
        algorithm=algorithm,
        notes=str(raw.get("notes") or "").strip() or None,
    )


def _read_csv_rows(path: Path, data: bytes) -> list[list[str]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # CMS templates are often saved from spreadsheets
    try:
        return list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise MasterDataError(path, "", "(file)", f"not a CSV file: {exc}") from None


_TALL = {
    "dollar": "standard_charge|negotiated_dollar",
    "percentage": "standard_charge|negotiated_percentage",
    "algorithm": "standard_charge|negotiated_algorithm",
    "methodology": "standard_charge|methodology",
}


def _from_csv(path: Path, data: bytes) -> Chargemaster:
    rows = _read_csv_rows(path, data)
    if len(rows) < 3:
        raise MasterDataError(
            path, "", "(file)",
            "a CMS price-transparency CSV has two rows of hospital data, then the header",
        )  # fmt: skip
    general = {_norm_header(k): v.strip() for k, v in zip(rows[0], rows[1], strict=False) if k}
    version = general.get("version", "")
    if not re.fullmatch(r"[23]\.\d+(\.\d+)?", version):
        raise MasterDataError(
            path, "row 2", "version",
            f"version {version[:20]!r}: expected a CMS template version 2.x or 3.x",
        )  # fmt: skip
    header = [_norm_header(h) for h in rows[2]]
    col = {h: i for i, h in enumerate(header) if h}
    for needed in ("description", "setting", "standard_charge|gross"):
        if needed not in col:
            raise MasterDataError(path, "row 3", needed, "column missing from the header")
    code_slots = sorted(int(m.group(1)) for h in header if (m := re.fullmatch(r"code\|(\d+)", h)))
    wide_plans: list[tuple[str, str]] = []
    for h in header:
        m = re.fullmatch(r"standard_charge\|(.+)\|(.+)\|methodology", h)
        if m:
            wide_plans.append((m.group(1), m.group(2)))
    tall = "payer_name" in col
    if not tall and not wide_plans and "standard_charge|negotiated_dollar" in col:
        raise MasterDataError(path, "row 3", "payer_name", "column missing from the header")
    original = {_norm_header(h): h.strip() for h in rows[2]}

    def cell(row: list[str], name: str) -> str:
        i = col.get(name)
        return row[i].strip() if i is not None and i < len(row) else ""

    grouped: dict[tuple[Any, ...], ChargeItem] = {}
    order: list[tuple[Any, ...]] = []
    rates: dict[tuple[Any, ...], list[NegotiatedRate]] = {}
    adjustments: list[ModifierAdjustment] = []
    for n, row in enumerate(rows[3:], start=4):
        if not any(c.strip() for c in row):
            continue
        where = f"row {n}"
        codes = []
        for slot in code_slots:
            value = cell(row, f"code|{slot}")
            kind = cell(row, f"code|{slot}|type")
            if value and not kind:
                raise MasterDataError(path, where, f"code|{slot}|type", "a code needs its type")
            if value:
                codes.append(_code(kind, value, path, where, f"code|{slot}"))
        description = cell(row, "description")
        if not description:
            raise MasterDataError(path, where, "description", "required")
        setting = cell(row, "setting").lower()
        if setting not in SETTINGS:
            raise MasterDataError(
                path, where, "setting", f"{setting[:20]!r} is not inpatient, outpatient or both"
            )
        modifiers = tuple(m.strip().upper() for m in cell(row, "modifiers").split("|") if m.strip())
        if tall:
            payer_rows = [
                {
                    "payer_name": cell(row, "payer_name"),
                    "plan_name": cell(row, "plan_name"),
                    **{k: cell(row, v) for k, v in _TALL.items()},
                    "notes": cell(row, "additional_generic_notes"),
                }
            ]
            names = dict(_TALL)
        else:
            payer_rows = []
            for payer, plan in wide_plans:
                base = f"standard_charge|{payer}|{plan}|"
                values = {
                    "dollar": cell(row, base + "negotiated_dollar"),
                    "percentage": cell(row, base + "negotiated_percentage"),
                    "algorithm": cell(row, base + "negotiated_algorithm"),
                    "methodology": cell(row, base + "methodology"),
                }
                if any(values.values()):
                    published = original.get(base + "methodology", f"|{payer}|{plan}").split("|")
                    payer_rows.append(
                        {
                            "payer_name": published[1].strip(),
                            "plan_name": published[2].strip(),
                            **values,
                            "notes": cell(row, f"additional_payer_notes|{payer}|{plan}"),
                        }
                    )
            names = {}
        if not codes:
            if not modifiers:
                raise MasterDataError(path, where, "code|1", "an item needs a code")
            for raw in payer_rows:
                if raw["payer_name"]:
                    adjustments.append(
                        ModifierAdjustment(
                            modifiers=modifiers,
                            payer_name=raw["payer_name"],
                            plan_name=raw["plan_name"],
                            percentage=_money(raw["percentage"], path, where, _TALL["percentage"]),
                            description=(raw["notes"] or description).strip(),
                        )
                    )
            continue
        gross = _money(cell(row, "standard_charge|gross"), path, where, "standard_charge|gross")
        cash = _money(
            cell(row, "standard_charge|discounted_cash"), path, where,
            "standard_charge|discounted_cash",
        )  # fmt: skip
        key = (description, tuple(codes), setting, modifiers, gross, cash)
        if key not in grouped:
            grouped[key] = ChargeItem(description, tuple(codes), setting, gross, cash, modifiers,
                                      where=where)  # fmt: skip
            order.append(key)
            rates[key] = []
        for raw in payer_rows:
            if not raw["payer_name"]:
                if any(raw[k] for k in ("dollar", "percentage", "algorithm")):
                    reason = "a negotiated rate needs a payer"
                    raise MasterDataError(path, where, "payer_name", reason)
                continue
            if tall and not raw["plan_name"]:
                raise MasterDataError(path, where, "plan_name", "a negotiated rate needs a plan")
            wide_names = names or {
                k: f"standard_charge|{raw['payer_name']}|{raw['plan_name']}|{v.split('|')[1]}"
                for k, v in _TALL.items()
            }
            rates[key].append(_rate(raw, path, where, wide_names))
    items = [replace(grouped[k], rates=tuple(rates[k])) for k in order]
    return Chargemaster(general.get("hospital_name", ""), version, path.name, items, adjustments)


_JSON_NAMES = {
    "dollar": "standard_charge_dollar",
    "percentage": "standard_charge_percentage",
    "algorithm": "standard_charge_algorithm",
    "methodology": "methodology",
}


def _from_json(path: Path, data: Any) -> Chargemaster:
    if not isinstance(data, dict):
        raise MasterDataError(path, "", "(file)", "a price-transparency JSON file is an object")
    version = str(data.get("version", ""))
    if not re.fullmatch(r"[23]\.\d+(\.\d+)?", version):
        raise MasterDataError(
            path, "", "version", f"{version[:20]!r}: expected a CMS schema version 2.x or 3.x"
        )
    entries = data.get("standard_charge_information")
    if not isinstance(entries, list):
        raise MasterDataError(path, "", "standard_charge_information", "required, a list")
    items: list[ChargeItem] = []
    for i, entry in enumerate(entries):
        where = f"standard_charge_information[{i}]"
        if not isinstance(entry, dict):
            raise MasterDataError(path, where, "(item)", "must be an object")
        description = str(entry.get("description") or "").strip()
        if not description:
            raise MasterDataError(path, where, "description", "required")
        infos = entry.get("code_information")
        if not isinstance(infos, list) or not infos:
            raise MasterDataError(path, where, "code_information", "required, at least one code")
        codes = []
        for j, info in enumerate(infos):
            name = f"code_information[{j}].code"
            if not isinstance(info, dict) or not str(info.get("code") or "").strip():
                raise MasterDataError(path, where, name, "required")
            codes.append(_code(str(info.get("type") or ""), str(info["code"]), path, where, name))
        charges = entry.get("standard_charges")
        if not isinstance(charges, list) or not charges:
            raise MasterDataError(path, where, "standard_charges", "required, at least one")
        for k, sc in enumerate(charges):
            at = f"{where}.standard_charges[{k}]"
            if not isinstance(sc, dict):
                raise MasterDataError(path, at, "(charge)", "must be an object")
            setting = str(sc.get("setting") or "").lower()
            if setting not in SETTINGS:
                raise MasterDataError(path, at, "setting", "must be inpatient, outpatient or both")
            payer_rates = []
            for p, payer in enumerate(sc.get("payers_information") or []):
                pat = f"{at}.payers_information[{p}]"
                if not isinstance(payer, dict) or not str(payer.get("payer_name") or "").strip():
                    raise MasterDataError(path, pat, "payer_name", "required")
                raw = {
                    "payer_name": payer["payer_name"],
                    "plan_name": payer.get("plan_name"),
                    **{k2: payer.get(v) for k2, v in _JSON_NAMES.items()},
                    "notes": payer.get("additional_payer_notes"),
                }
                payer_rates.append(_rate(raw, path, pat, _JSON_NAMES))
            items.append(
                ChargeItem(
                    description=description,
                    codes=tuple(codes),
                    setting=setting,
                    gross_charge=_money(sc.get("gross_charge"), path, at, "gross_charge"),
                    discounted_cash=_money(sc.get("discounted_cash"), path, at, "discounted_cash"),
                    modifiers=tuple(str(m).upper() for m in sc.get("modifier_code") or ()),
                    rates=tuple(payer_rates),
                    where=where,
                )
            )
    adjustments = []
    for i, mod in enumerate(data.get("modifier_information") or []):
        where = f"modifier_information[{i}]"
        if not isinstance(mod, dict) or not str(mod.get("code") or "").strip():
            raise MasterDataError(path, where, "code", "required")
        for payer in mod.get("modifier_payer_information") or []:
            text = str(payer.get("description") or "")
            pct = re.match(r"\s*(\d+(?:\.\d+)?)\s*%", text)
            adjustments.append(
                ModifierAdjustment(
                    modifiers=tuple(m.strip().upper() for m in str(mod["code"]).split("|")),
                    payer_name=str(payer.get("payer_name") or ""),
                    plan_name=str(payer.get("plan_name") or ""),
                    percentage=Decimal(pct.group(1)) if pct else None,
                    description=text,
                )
            )
    return Chargemaster(str(data.get("hospital_name", "")), version, path.name, items, adjustments)
