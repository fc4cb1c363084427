"""The master data a deployment configures, loaded once at start-up.

Three files, each named by a setting, each optional: provider profiles
(``CLAIMFLOW_PROVIDER_DIRECTORY``, ``providers.py``), the payer registry
(``CLAIMFLOW_PAYER_REGISTRY``, ``payers.py``) and the chargemaster with contracted rates, as
the hospital publishes it (``CLAIMFLOW_CHARGEMASTER``, the CMS price-transparency file,
``chargemaster.py``). A file that cannot be read stops the process with the setting, file,
row and field; a stage that needs none of them loads nothing. Changing a file takes a
restart: the stages commit offsets only after their output is acknowledged, so a restart
re-reads what was in flight and nothing is lost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from services.refdata.chargemaster import Chargemaster, load_chargemaster
from services.refdata.masterfile import MasterDataError
from services.refdata.payers import EMPTY_REGISTRY, PayerRegistry
from services.refdata.providers import EMPTY_DIRECTORY, ProviderDirectory

T = TypeVar("T")
D = TypeVar("D")


class MasterDataSettings(Protocol):
    provider_directory: Path | None
    payer_registry: Path | None
    chargemaster: Path | None


@dataclass(frozen=True)
class MasterData:
    providers: ProviderDirectory = EMPTY_DIRECTORY
    payers: PayerRegistry = EMPTY_REGISTRY
    chargemaster: Chargemaster | None = None

    def describe(self) -> str:
        """One line for the start-up log: what is configured, what is off."""
        cdm = self.chargemaster
        return "; ".join(
            [
                f"provider profiles {len(set(p.npi for p in self.providers.billing.values()))}",
                f"payers {len(self.payers.payers)}" if self.payers else "no payer registry",
                f"chargemaster {cdm.source} ({len(cdm)} items)" if cdm else "no chargemaster",
            ]
        )


def load_master_data(settings: MasterDataSettings) -> MasterData:
    """Read the configured files; a broken one raises SystemExit naming setting, file, field."""
    return MasterData(
        providers=_load("CLAIMFLOW_PROVIDER_DIRECTORY", settings.provider_directory,
                        ProviderDirectory.load, EMPTY_DIRECTORY),
        payers=_load("CLAIMFLOW_PAYER_REGISTRY", settings.payer_registry,
                     PayerRegistry.load, EMPTY_REGISTRY),
        chargemaster=_load("CLAIMFLOW_CHARGEMASTER", settings.chargemaster,
                           load_chargemaster, None),
    )  # fmt: skip


def _load(setting: str, path: Path | None, loader: Callable[[Path], T], default: D) -> T | D:
    if path is None:
        return default
    try:
        return loader(Path(path))
    except MasterDataError as exc:
        raise SystemExit(f"{setting} ({path}) cannot be used: {exc}") from None
