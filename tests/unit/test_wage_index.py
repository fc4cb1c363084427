"""The IPPS wage index in Medicare inpatient pricing: the table, the formula, the claim."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from test_claims_837i import inpatient, validated

from pipeline.settings import Settings
from services.claims.domain import build_claim, plan_claim
from services.refdata.drg import DEFAULT_DRG_BASE_RATE
from services.refdata.masterdata import MasterData, load_master_data
from services.refdata.masterfile import MasterDataError
from services.refdata.providers import ProviderDirectory
from services.refdata.wage_index import WageIndexTable, adjusted_rate, labor_share

# Rows of the FY2026 table as the CMS IPPS Pricer publishes it (cbsa-wage-index-2026.csv in
# DSACMS/MedicareClaimsPricerSource, ipps-pricer/ipps-pricer-application): Austin,
# Portland OR, and the District of Columbia's rural row, which has only an imputed floor.
HEADER = (
    "cbsa,size,effectiveDate,geographicWageIndex,reclassifiedWageIndex,imputedFloorWageIndex,name"
)
FY2026 = [
    '12420,,20251001,0.9229,0.8528,0.0000,"Austin-Round Rock-San Marcos, TX"',
    '38900,,20251001,1.1194,1.1194,0.0000,"Portland-Vancouver-Hillsboro, OR-WA"',
    "09,,20251001,0.0000,0.0000,1.2605,DISTRICT OF COLUMBIA",
]


def table(tmp_path: Path, rows: list[str] = FY2026, year: int = 2026) -> Path:
    (tmp_path / f"cbsa-wage-index-{year}.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    return tmp_path


def test_the_table_is_read_by_fiscal_year_of_discharge(tmp_path: Path) -> None:
    wages = WageIndexTable.load(table(tmp_path))
    assert wages is not None and wages.years() == [2026]
    found = wages.index("38900", date(2026, 3, 2))
    assert found is not None and found.value == Decimal("1.1194")
    assert found.name == "Portland-Vancouver-Hillsboro, OR-WA"
    dc = wages.index("09", date(2025, 10, 1))
    assert dc is not None and dc.value == Decimal("1.2605")  # the imputed floor
    assert wages.index("38900", date(2025, 9, 30)) is None  # FY2025: no table loaded
    assert wages.index("99999", date(2026, 3, 2)) is None
    assert WageIndexTable.load(None) is None
    assert WageIndexTable.load(tmp_path / "nothing") is None


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ("1242,,20251001,0.9229,0.8528,0.0000,Austin", "cbsa"),
        ("12420,,2025-10-01,0.9229,0.8528,0.0000,Austin", "effectiveDate"),
        ("12420,,20251001,high,0.8528,0.0000,Austin", "geographicWageIndex"),
        ("12420,,20251001,0.0000,0.0000,0.0000,Austin", "geographicWageIndex"),
    ],
)
def test_a_broken_row_names_file_row_and_field(tmp_path: Path, row: str, field: str) -> None:
    with pytest.raises(MasterDataError) as caught:
        WageIndexTable.load(table(tmp_path, [FY2026[0], row]))
    assert (caught.value.where, caught.value.field) == ("row 3", field)
    with pytest.raises(SystemExit, match="CLAIMFLOW_REFDATA_DIR"):
        load_master_data(Settings(refdata_dir=tmp_path), wage_index=True)


def test_labor_share_times_wage_index_plus_non_labor_share() -> None:
    """FY2026: operating $6,752.61 x (labor share x index + non-labor share), labor share
    66.0% above 1.0 and 62.0% at or below; capital $524.15 x index^0.6848 (the GAF)."""
    assert (labor_share(Decimal("1.1194")), labor_share(Decimal("1.0"))) == (
        Decimal("0.660"),
        Decimal("0.620"),
    )
    assert adjusted_rate(DEFAULT_DRG_BASE_RATE, Decimal("1")) == DEFAULT_DRG_BASE_RATE
    # Portland: 6752.61 x (0.66 x 1.1194 + 0.34) + 524.15 x 1.0803 = 7284.74 + 566.24
    assert adjusted_rate(DEFAULT_DRG_BASE_RATE, Decimal("1.1194")) == Decimal("7850.98")
    # Austin: 6752.61 x (0.62 x 0.9229 + 0.38) + 524.15 x 0.9465 = 6429.82 + 496.11
    assert adjusted_rate(DEFAULT_DRG_BASE_RATE, Decimal("0.9229")) == Decimal("6925.93")
    # A configured (contract) base rate is split and adjusted in the same proportions.
    assert adjusted_rate(Decimal("10000"), Decimal("1")) == Decimal("10000.00")
    assert adjusted_rate(Decimal("10000"), Decimal("1.1194")) > Decimal("10000")


def test_a_medicare_stay_is_priced_with_its_hospitals_wage_index(tmp_path: Path) -> None:
    stay = inpatient()
    npi = stay.encounter.billing_provider.npi
    wages = WageIndexTable.load(table(tmp_path))
    portland = MasterData(providers=ProviderDirectory(cbsa={npi: "38900"}), wage_index=wages)
    planned = plan_claim(validated(stay), master=portland)
    assert planned.expected == Decimal("8073.95")  # 1.0284 x 7850.98
    assert planned.expected_basis == (
        "ms_drg 343 weight 1.0284 x base 7850.98 (wage index 1.1194 CBSA 38900)"
    )
    claim = build_claim(validated(stay), sender_id="CLAIMFLOW", receiver_id="PAYER01",
                        master=portland)  # fmt: skip
    assert claim.expected_reimbursement == Decimal("8073.95")
    # No CBSA in the profile, or no table: wage index 1.0, as before.
    for master in (MasterData(wage_index=wages), MasterData(providers=portland.providers)):
        plain = plan_claim(validated(stay), master=master)
        assert plain.expected == Decimal("7483.42")  # 1.0284 x 7276.76
        assert "wage index" not in plain.expected_basis


def test_a_profile_names_its_cbsa_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    profile = {
        "keys": ["STCATH"],
        "npi": "1938472606",
        "name": "St. Catherine Medical Center",
        "entity": "organization",
        "cbsa": "12420",
    }
    directory = ProviderDirectory.from_json({"billing_providers": [profile]})
    assert directory.cbsa == {"1938472606": "12420"}
    assert ProviderDirectory.from_json(directory.to_json()).cbsa == directory.cbsa
    with pytest.raises(MasterDataError) as caught:
        ProviderDirectory.from_json({"billing_providers": [{**profile, "cbsa": 12420}]})
    assert (caught.value.where, caught.value.field) == ("billing_providers[0]", "cbsa")
    path = tmp_path / "providers.json"
    path.write_text(json.dumps({"billing_providers": [profile]}))
    assert ProviderDirectory.load(path).cbsa["1938472606"] == "12420"


def test_the_example_hospitals_name_their_cbsa() -> None:
    from sim.cli import EXAMPLE_MASTER_DATA
    from sim.ehr import HOSPITALS

    directory = ProviderDirectory.load(EXAMPLE_MASTER_DATA / "providers.json")
    assert {directory.cbsa.get(h.billing.npi) for h in HOSPITALS} == {
        "12420",  # Austin-Round Rock-San Marcos, TX
        "16984",  # Chicago-Naperville-Schaumburg, IL
        "12054",  # Atlanta-Sandy Springs-Roswell, GA
        "38900",  # Portland-Vancouver-Hillsboro, OR-WA
        "19740",  # Denver-Aurora-Centennial, CO
    }
