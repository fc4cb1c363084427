"""The master data a deployment configures, loaded once at start-up.

Three files, each named by a setting, each optional: provider profiles
(``CLAIMFLOW_PROVIDER_DIRECTORY``, ``providers.py``), the payer registry
(``CLAIMFLOW_PAYER_REGISTRY``, ``payers.py``) and the chargemaster with contracted rates, as
the hospital publishes it (``CLAIMFLOW_CHARGEMASTER``, the CMS price-transparency file,
``chargemaster.py``). The claims stage also reads the IPPS wage index table from
``CLAIMFLOW_REFDATA_DIR`` (``wage_index.py``): a hospital profile's CBSA prices its Medicare
stays. A file that cannot be read stops the process with the setting, file,
row and field; a stage that needs none of them loads nothing. Changing a file takes a
restart: the stages commit offsets only after their output is acknowledged, so a restart
re-reads what was in flight and nothing is lost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Protocol, TypeVar

from services.refdata.chargemaster import Chargemaster, load_chargemaster
from services.refdata.masterfile import MasterDataError
from services.refdata.payers import EMPTY_REGISTRY, PayerRegistry
from services.refdata.providers import EMPTY_DIRECTORY, ProviderDirectory
from services.refdata.wage_index import WageIndexTable

T = TypeVar("T")
D = TypeVar("D")


class MasterDataSettings(Protocol):
    provider_directory: Path | None
    payer_registry: Path | None
    chargemaster: Path | None
    refdata_dir: Path | None


@dataclass(frozen=True)
class MasterData:
    providers: ProviderDirectory = EMPTY_DIRECTORY
    payers: PayerRegistry = EMPTY_REGISTRY
    chargemaster: Chargemaster | None = None
    wage_index: WageIndexTable | None = None

    def wage_index_of(self, billing_npi: str, discharge: date) -> tuple[str, Decimal] | None:
        """(CBSA, wage index) of a hospital for a discharge: its profile's CBSA in the
        IPPS table of the discharge's fiscal year; None when either is missing."""
        cbsa = self.providers.cbsa.get(billing_npi)
        if cbsa is None or self.wage_index is None:
            return None
        found = self.wage_index.index(cbsa, discharge)
        return (cbsa, found.value) if found is not None else None

    def describe(self) -> str:
        """One line for the start-up log: what is configured, what is off."""
        cdm = self.chargemaster
        return "; ".join(
            [
                f"provider profiles {len(set(p.npi for p in self.providers.billing.values()))}",
                f"payers {len(self.payers.payers)}" if self.payers else "no payer registry",
                f"chargemaster {cdm.source} ({len(cdm)} items)" if cdm else "no chargemaster",
                f"wage index FY{', FY'.join(map(str, self.wage_index.years()))}"
                if self.wage_index
                else "no wage index",
            ]
        )


def load_master_data(settings: MasterDataSettings, *, wage_index: bool = False) -> MasterData:
    """Read the configured files; a broken one raises SystemExit naming setting, file, field.
    ``wage_index``: also the IPPS wage index tables of the reference data folder."""
    return MasterData(
        providers=_load("CLAIMFLOW_PROVIDER_DIRECTORY", settings.provider_directory,
                        ProviderDirectory.load, EMPTY_DIRECTORY),
        payers=_load("CLAIMFLOW_PAYER_REGISTRY", settings.payer_registry,
                     PayerRegistry.load, EMPTY_REGISTRY),
        chargemaster=_load("CLAIMFLOW_CHARGEMASTER", settings.chargemaster,
                           load_chargemaster, None),
        wage_index=_load("CLAIMFLOW_REFDATA_DIR", settings.refdata_dir,
                         WageIndexTable.load, None) if wage_index else None,
    )  # fmt: skip


def _load(setting: str, path: Path | None, loader: Callable[[Path], T], default: D) -> T | D:
    if path is None:
        return default
    try:
        return loader(Path(path))
    except MasterDataError as exc:
        raise SystemExit(f"{setting} ({path}) cannot be used: {exc}") from None
