"""Master data: the CMS price-transparency chargemaster, provider profiles, the payer registry."""

from __future__ import annotations

import json
import warnings
from decimal import Decimal
from pathlib import Path

import pytest
from shared_data import SHARED_DATA, requires_shared

from services.refdata.chargemaster import load_chargemaster
from services.refdata.masterdata import load_master_data
from services.refdata.masterfile import MasterDataError
from services.refdata.payers import PayerRegistry, is_placeholder
from services.refdata.providers import ProviderDirectory

HPT = SHARED_DATA / "cms" / "hpt"
PUBLISHED = [
    "V3.0.0_Tall_CSV_Format_Example.csv",
    "V3.0.0_Wide_CSV_Format_Example.csv",
    "v3_json_format_example.json",
]


def _summary(path: Path) -> list[tuple]:
    cdm = load_chargemaster(path)
    return sorted(
        (
            i.description,
            i.codes,
            i.setting,
            i.gross_charge,
            tuple(
                sorted(
                    (r.payer_name, r.plan_name, r.methodology, r.dollar, r.percentage)
                    for r in i.rates
                )
            ),  # fmt: skip
        )
        for i in cdm.items
    )


@requires_shared
def test_the_three_published_v3_layouts_read_the_same_chargemaster() -> None:
    tall, wide, js = (_summary(HPT / name) for name in PUBLISHED)
    assert tall == wide == js
    assert len(tall) == 22


@requires_shared
@pytest.mark.parametrize("name", [*PUBLISHED, "V2.0.0_Tall_CSV_Format_Example.csv"])
def test_a_published_file_prices_by_code_drg_and_modifier(name: str) -> None:
    cdm = load_chargemaster(HPT / name)
    drg = cdm.for_drg("470")
    assert drg is not None and drg.setting == "inpatient"
    case = drg.rate("Platform Health Insurance", "PPO")
    assert case is not None and case.methodology == "case rate"
    assert case.for_line(1, Decimal("90000")) == case.dollar  # once, whatever the charge
    assert cdm.modifier_factor(["50"], "Platform Health Insurance", "PPO") == Decimal("150")
    assert cdm.modifier_factor(["62", "50"], "Region Health Insurance", "HMO") == Decimal("87")


@requires_shared
def test_v3_tall_rates_by_methodology() -> None:
    cdm = load_chargemaster(HPT / "V3.0.0_Tall_CSV_Format_Example.csv")
    mri = cdm.for_service("70551", "0611", "outpatient")  # RC 611 is written 0611
    assert mri is not None and mri.revenue_code == "0611" and mri.gross_charge == 1200
    assert mri.rate("Region Health Insurance", "HMO").for_line(2, Decimal(2400)) == 500
    er = cdm.for_service("99283", "0450", "outpatient")
    assert er.rate("Platform Health Insurance", "PPO").for_line(1, Decimal(4000)) == 3200  # 80%
    bed = cdm.for_service(None, "0120", "inpatient")  # revenue-code-only line
    per_diem = bed.rate("Region Health Insurance", "HMO")
    assert per_diem.methodology == "per diem" and per_diem.for_line(3, Decimal(15000)) == 4200
    algorithm_only = cdm.for_drg("786").rate("Platform Health Insurance", "PPO")
    assert algorithm_only.algorithm and algorithm_only.for_line(1, Decimal(1)) is None
    assert cdm.for_service("70551", None, "inpatient") is None  # an outpatient-only price


def _tall(tmp_path: Path, *rows: str, version: str = "3.0.0") -> Path:
    head = (
        "hospital_name,last_updated_on,version,location_name,hospital_address\n"
        f"Test Hospital,2026-01-01,{version},Main,1 Main St\n"
        "description,code | 1,code | 1 | type,code | 2,code | 2 | type,code | 3,code | 3 | type,"
        "setting,standard_charge | gross,standard_charge | discounted_cash,payer_name,plan_name,"
        "modifiers,standard_charge | negotiated_dollar,standard_charge | negotiated_percentage,"
        "standard_charge | negotiated_algorithm,standard_charge | methodology,"
        "additional_generic_notes\n"
    )
    path = tmp_path / "cdm.csv"
    path.write_text(head + "\n".join(rows) + "\n")
    return path


def test_charge_codes_map_to_revenue_code_hcpcs_and_price(tmp_path: Path) -> None:
    path = _tall(
        tmp_path,
        "CBC automated,30012345,CDM,300,RC,85025,CPT,outpatient,48,40,State Medicaid,Medicaid,,"
        "11.50,,,fee schedule,",
        "CBC automated,30012345,CDM,300,RC,85025,CPT,outpatient,48,40,Acme Health,PPO,,,60,,"
        "percent of total billed charges,",
        "Room semi-private,10000001,CDM,0120,RC,,,inpatient,2100,,,,,,,,,",
    )
    cdm = load_chargemaster(path)
    cbc = cdm.by_charge_code("30012345", "outpatient")
    assert (cbc.revenue_code, cbc.hcpcs, cbc.gross_charge) == ("0300", ("85025", "CPT"), 48)
    assert cbc.rate("state medicaid").dollar == Decimal("11.50")
    assert cbc.rate("Acme Health", "PPO").for_line(1, Decimal(48)) == Decimal("28.80")
    room = cdm.by_charge_code("10000001")
    assert room.hcpcs is None and room.rates == () and room.gross_charge == 2100
    assert cdm.by_charge_code("99999999") is None


@pytest.mark.parametrize(
    ("row", "where", "field"),
    [
        ("Lab,300123,CDM,0300,RC,,,outpatient,abc,,,,,,,,,", "row 4", "standard_charge|gross"),
        ("Lab,300123,,0300,RC,,,outpatient,10,,,,,,,,,", "row 4", "code|1|type"),
        ("Lab,300123,CHARGE,0300,RC,,,outpatient,10,,,,,,,,,", "row 4", "code|1|type"),
        ("Lab,300123,CDM,03,RC,,,outpatient,10,,,,,,,,,", "row 4", "code|2"),
        ("Lab,300123,CDM,0300,RC,,,clinic,10,,,,,,,,,", "row 4", "setting"),
        ("Lab,300123,CDM,0300,RC,,,outpatient,10,,Acme,PPO,,5,,,capitation,", "row 4",
         "standard_charge|methodology"),
        ("Lab,300123,CDM,0300,RC,,,outpatient,10,,Acme,PPO,,,,,fee schedule,", "row 4",
         "standard_charge|negotiated_dollar"),
        ("Lab,300123,CDM,0300,RC,,,outpatient,10,,Acme,,,5,,,fee schedule,", "row 4",
         "plan_name"),
    ],
)  # fmt: skip
def test_a_broken_row_names_file_row_and_field(
    tmp_path: Path, row: str, where: str, field: str
) -> None:
    with pytest.raises(MasterDataError) as caught:
        load_chargemaster(_tall(tmp_path, row))
    assert (caught.value.where, caught.value.field) == (where, field)
    assert str(caught.value).startswith(f"cdm.csv, {where}, field {field!r}: ")


def test_a_file_that_is_not_a_price_transparency_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cdm.csv"
    path.write_text("code,price\n123,4\n5,6\n")
    with pytest.raises(MasterDataError, match=r"cdm.csv, row 2, field 'version'"):
        load_chargemaster(path)
    bad = tmp_path / "cdm.json"
    bad.write_text('{"version": "3.0.0", "standard_charge_information": [{"description": "x"}]}')
    with pytest.raises(MasterDataError, match=r"standard_charge_information\[0\], field 'code_inf"):
        load_chargemaster(bad)


# --- provider profiles -------------------------------------------------------------------

PROFILE = {
    "keys": ["RIVERSIDE", "http://ehr.example/org|RFM-1"],
    "npi": "1452839107",
    "name": "Riverside Family Medicine PC",
    "tax_id": "741852963",
    "taxonomy": "207Q00000X",
    "address": {"line1": "1200 Barton Springs Rd", "city": "Austin", "state": "TX",
                "postal_code": "787044956"},
    "pay_to": {"line1": "PO Box 4410", "city": "Austin", "state": "TX",
               "postal_code": "787650441"},
}  # fmt: skip


def test_a_profile_is_found_by_each_key_and_completes_what_the_ehr_left_out() -> None:
    from pipeline.models import Provider

    directory = ProviderDirectory.from_json({"billing_providers": [PROFILE]})
    for key in ("RIVERSIDE", "http://ehr.example/org|RFM-1", "1452839107"):
        assert directory.billing_for([key]).tax_id == "741852963"
    assert directory.pay_to["1452839107"].postal_code == "787650441"
    sent = Provider(npi="1452839107", name="Riverside FM")
    done = directory.complete(sent)
    assert (done.name, done.tax_id, done.address.postal_code) == (
        "Riverside FM", "741852963", "787044956",
    )  # fmt: skip
    other = Provider(npi="1234567893", name="Else")
    assert directory.complete(other, ["RIVERSIDE"]) is other  # another NPI: not that profile
    # What the EHR sent wins, and stays typed (a nested dict here broke serialization later).
    moved = sent.model_copy(update={"address": done.address.model_copy(update={"line1": "1 Main"})})
    done = directory.complete(moved)
    assert type(done.address) is type(moved.address) and done.address.line1 == "1 Main"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        done.model_dump()
    again = ProviderDirectory.from_json(directory.to_json())
    assert again == directory


@pytest.mark.parametrize(
    ("change", "field"),
    [({"npi": "145283910"}, "npi"), ({"tax_id": "74-1852963"}, "tax_id"),
     ({"fax": "1"}, "fax"), ({"pay_to": {"line1": "x"}}, "pay_to.city"), ({"keys": "A"}, "keys")],
)  # fmt: skip
def test_a_broken_profile_names_its_entry_and_field(
    tmp_path: Path, change: dict, field: str
) -> None:
    path = tmp_path / "providers.json"
    path.write_text(json.dumps({"billing_providers": [PROFILE, {**PROFILE, **change}]}))
    with pytest.raises(MasterDataError) as caught:
        ProviderDirectory.load(path)
    assert caught.value.where == "billing_providers[1]" and caught.value.field == field


# --- payer registry ----------------------------------------------------------------------

REGISTRY = {
    "payers": [
        {
            "payer_id": "04412",
            "name": "Medicare Part B",
            "aliases": ["MEDICARE_B", "Medicare"],
            "receiver_id": "04412",
            "medicare": True,
            "claim_types": {
                "professional": {"filing_indicator": "MB"},
                "institutional": {"payer_id": "04411", "filing_indicator": "MA"},
            },
        },
        {
            "payer_id": "77027",
            "name": "State Medicaid",
            "timely_filing_days": 180,
            "secondary_electronic": False,
            "claim_types": {"professional": {"filing_indicator": "MC"}},
            "contract": {"payer_name": "State Medicaid", "plan_name": "Medicaid"},
        },
    ]
}


def test_payers_are_found_by_id_claim_type_id_and_alias() -> None:
    reg = PayerRegistry.from_json(REGISTRY)
    medicare = reg.find("medicare_b")
    assert medicare is reg.find("04411") is reg.find(None, "Medicare")
    assert (medicare.billed_id("institutional"), medicare.filing_indicator("institutional")) == (
        "04411", "MA",
    )  # fmt: skip
    assert (medicare.billed_id("professional"), medicare.filing_indicator("professional")) == (
        "04412", "MB",
    )  # fmt: skip
    medicaid = reg.find("77027")
    assert medicaid.timely_filing_days == 180 and not medicaid.secondary_electronic
    assert medicaid.filing_indicator("institutional") is None
    assert reg.find("60054") is None
    assert is_placeholder("UNKNOWN") and is_placeholder("private") and not is_placeholder("77027")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"payer_id": "UNKNOWN"}, "payer_id"),
        ({"claim_types": {"professional": {"filing_indicator": "XX"}}},
         "claim_types.professional.filing_indicator"),
        ({"timely_filing_days": 0}, "timely_filing_days"),
        ({"aliases": ["Medicare"]}, "aliases"),
    ],
)  # fmt: skip
def test_a_broken_payer_names_its_entry_and_field(tmp_path: Path, change: dict, field: str) -> None:
    data = {"payers": [REGISTRY["payers"][0], {**REGISTRY["payers"][1], **change}]}
    path = tmp_path / "payers.json"
    path.write_text(json.dumps(data))
    with pytest.raises(MasterDataError) as caught:
        PayerRegistry.load(path)
    assert caught.value.where == "payers[1]" and caught.value.field == field


def test_a_malformed_file_stops_start_up_with_setting_file_row_and_field(tmp_path: Path) -> None:
    from pipeline.settings import Settings

    path = _tall(tmp_path, "Lab,300123,CDM,0300,RC,,,outpatient,1O,,,,,,,,,")
    with pytest.raises(SystemExit) as caught:
        load_master_data(Settings(chargemaster=path))
    assert str(caught.value) == (
        f"CLAIMFLOW_CHARGEMASTER ({path}) cannot be used: cdm.csv, row 4, field "
        "'standard_charge|gross': not a number: '1O'"
    )
    broken = tmp_path / "payers.json"
    broken.write_text('{"payers": [')
    with pytest.raises(SystemExit, match=r"CLAIMFLOW_PAYER_REGISTRY .*line 1 column 13"):
        load_master_data(Settings(payer_registry=broken))


def test_the_example_master_data_covers_what_the_simulator_sends() -> None:
    """`make run` and `make demo` bill through examples/masterdata: it must know the
    simulator's practices, hospitals and payers, and price through real contracts."""
    from pipeline.settings import Settings
    from sim.cli import EXAMPLE_MASTER_DATA
    from sim.ehr import HOSPITALS, MEDIGAP, PAYERS, PRACTICES, provider_directory

    master = load_master_data(
        Settings(
            provider_directory=EXAMPLE_MASTER_DATA / "providers.json",
            payer_registry=EXAMPLE_MASTER_DATA / "payers.json",
            chargemaster=EXAMPLE_MASTER_DATA / "chargemaster.csv",
        )
    )
    for org in (*PRACTICES, *HOSPITALS):
        assert master.providers.billing_for([org.key]) == org.billing
    for hospital in HOSPITALS:  # its ED physicians' group bills their 837Ps
        group = master.providers.billing_for([hospital.group_key])
        assert group is not None and group == hospital.physician_group
    assert master.providers.providers == provider_directory().providers
    for payer in (*PAYERS, MEDIGAP):  # and the supplement some Medicare patients have
        assert master.payers.find(payer.payer_id) is not None, payer.payer_id
    medicare = master.payers.find("MEDICARE_B")
    assert medicare.billed_id("institutional") == "MEDICARE_A"
    cdm = master.chargemaster
    for entry in master.payers.payers:
        if entry.contract is not None:
            visit = cdm.for_service("99213", None, "professional")
            assert visit.rate(entry.contract.payer_name, entry.contract.plan_name) is not None
