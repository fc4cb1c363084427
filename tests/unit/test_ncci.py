"""NCCI PTP and MUE loaders: the official CMS layouts, the excerpt files, and what is off."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from factories import CMS_DIR

from services.refdata.codesets import CodeSets
from services.refdata.ncci import MueTable, PtpTable, load_mue, load_ncci, load_ptp

PTP_EXCERPT = CMS_DIR / "ccipra-v322r0-f1.excerpt.txt"
MUE_EXCERPT = CMS_DIR / "MCR_MUE_PractitionerServices_Eff_07-01-2026.excerpt.csv"
requires_ncci = pytest.mark.skipif(
    not (PTP_EXCERPT.is_file() and MUE_EXCERPT.is_file()),
    reason=f"NCCI excerpts not found in {CMS_DIR}",
)

HEADER = (
    "CPT only copyright 2025 American Medical Association.  All rights reserved.\t\t\t\t\t\t\r\n"
    "Column1/Column2 Edits\t\t\t\t\t\t\r\n"
    "Column 1\tColumn 2\t*=in existence\tEffective\tDeletion\tModifier\tPTP Edit Rationale\r\n"
    "\t\tprior to 1996\tDate\tDate\t0=not allowed\t\r\n"
    "\t\t\t\t*=no data\t1=allowed\t\r\n"
    "\t\t\t\t\t9=not applicable\t\r\n"
)


@requires_ncci
def test_ptp_excerpt_loads_every_whole_row() -> None:
    table = load_ptp(CMS_DIR, "practitioner")
    assert table is not None and table.version == "32.2r0"
    data_rows = [
        ln for ln in PTP_EXCERPT.read_text(encoding="latin-1").splitlines() if ln[:1].isdigit()
    ]
    assert len(table) == len(data_rows) - table.skipped > 150
    # The excerpt's last row is cut inside the rationale: its edit fields are whole.
    last = table.edits("0001U", "81167")
    assert [(e.modifier_indicator, e.effective, e.deletion) for e in last] == [
        ("1", date(2019, 1, 1), None)
    ]


@requires_ncci
def test_ptp_dates_are_inclusive_and_indicator_kept() -> None:
    table = load_ptp(CMS_DIR, "practitioner")
    assert table is not None
    edit = table.edit("0001A", "36591", date(2023, 12, 31))
    assert edit is not None and edit.modifier_indicator == "0"
    assert "coding instruction" in edit.rationale
    assert table.edit("0001A", "36591", date(2024, 1, 1)) is None  # deleted after 2023-12-31
    assert table.edit("0001A", "36591", date(2021, 12, 31)) is None  # not yet in force
    assert table.edit("36591", "0001A", date(2023, 6, 1)) is None  # the order matters
    na = table.edit("0001A", "90473", date(2022, 1, 1))
    assert na is not None and na.modifier_indicator == "9"


def test_ptp_rows_cut_inside_an_edit_field_are_skipped_not_guessed() -> None:
    text = HEADER + (
        "11042\t97597\t\t20130101\t*\t1\tMutually exclusive procedures\r\n"
        "11042\t97598\t\t20130101\t*\t0\r\n"  # no rationale: the edit is still whole
        "11042\t9760\r\n"  # cut in column 2
        "11043\t97597\t\t2013010"  # cut in the effective date
    )
    table = PtpTable.parse(text.splitlines(keepends=True))
    assert len(table) == 2 and table.skipped == 2
    edit = table.edit("11042", "97598", date(2026, 1, 5))
    assert edit is not None and edit.modifier_indicator == "0" and edit.rationale == ""
    assert table.edit("11043", "97597", date(2026, 1, 5)) is None


def test_ptp_pair_with_two_periods_finds_the_one_in_force() -> None:
    text = HEADER + (
        "20610\t20604\t\t20150101\t20171231\t0\tMisuse of Column Two code with Column One code\r\n"
        "20610\t20604\t\t20200101\t*\t1\tMisuse of Column Two code with Column One code\r\n"
    )
    table = PtpTable.parse(text.splitlines())
    first = table.edit("20610", "20604", date(2016, 6, 1))
    second = table.edit("20610", "20604", date(2026, 6, 1))
    assert first is not None and first.modifier_indicator == "0"
    assert second is not None and second.modifier_indicator == "1"
    assert table.edit("20610", "20604", date(2019, 6, 1)) is None


@requires_ncci
def test_mue_excerpt_values_and_adjudication_indicators() -> None:
    table = load_mue(CMS_DIR, "practitioner")
    assert table is not None and table.effective == date(2026, 7, 1)
    assert len(table) == 44 and table.skipped == 0
    policy = table.get("0001U")
    clinical = table.get("0009U")
    assert policy is not None and (policy.value, policy.mai, policy.per_day) == (1, 2, True)
    assert clinical is not None and (clinical.value, clinical.mai) == (2, 3)
    assert clinical.rationale == "Nature of Analyte"


def test_mue_line_edit_rows_parse() -> None:
    text = (
        '"Current Procedural Terminology (CPT) codes ... All rights reserved.\n\nCPT is a '
        'registered trademark.",,,\r\n'
        '"HCPCS/\nCPT Code",Practitioner Services MUE Values,MUE Adjudication Indicator,'
        "MUE Rationale\r\n"
        "97110,6,1 Line Edit,Clinical: Data\r\n"
        "J3490,,1 Line Edit,Not a value\r\n"
    )
    table = MueTable.parse(text)
    edit = table.get("97110")
    assert edit is not None and (edit.value, edit.mai, edit.per_day) == (6, 1, False)
    assert table.get("J3490") is None and table.skipped == 1


def test_nothing_configured_is_reported_off_with_a_reason() -> None:
    edits = load_ncci(None)
    assert edits.capabilities() == {
        "ncci_ptp": False,
        "ncci_mue": False,
        "ncci_ptp_hospital": False,
        "ncci_mue_hospital": False,
    }
    assert "CLAIMFLOW_REFDATA_DIR" in edits.notes["ncci_ptp"]


def test_folder_without_the_files_says_which_file_is_missing(tmp_path: Path) -> None:
    edits = load_ncci(tmp_path)
    assert not any(edits.capabilities().values())
    assert "ccipra-v*-f*.txt" in edits.notes["ncci_ptp"]
    assert "MCR_MUE_PractitionerServices" in edits.notes["ncci_mue"]


def test_newest_ptp_version_wins_and_its_files_are_all_read(tmp_path: Path) -> None:
    (tmp_path / "ccipra-v321r0-f1.txt").write_text(HEADER + "11042\t97597\t\t20130101\t*\t0\tX\r\n")
    (tmp_path / "ccipra-v322r0-f1.txt").write_text(HEADER + "11042\t97597\t\t20130101\t*\t1\tX\r\n")
    (tmp_path / "ccipra-v322r0-f2.txt").write_text(HEADER + "27447\t20610\t\t20130101\t*\t1\tX\r\n")
    table = load_ptp(tmp_path, "practitioner")
    assert table is not None and table.version == "32.2r0" and len(table) == 2
    edit = table.edit("11042", "97597", date(2026, 1, 5))
    assert edit is not None and edit.modifier_indicator == "1"


@requires_ncci
def test_codesets_capabilities_name_the_ncci_tables() -> None:
    with CodeSets.load(CMS_DIR) as cs:
        caps = cs.capabilities()
        assert caps["ncci_ptp"] and caps["ncci_mue"]
        assert not caps["ncci_ptp_hospital"] and "ncci_ptp_hospital" in cs.notes
    with CodeSets.load(None) as bare:
        assert not bare.capabilities()["ncci_ptp"] and "ncci_mue" in bare.notes
