"""Provider profiles: who bills, with what tax id, taxonomy, address and pay-to address.

An EHR names a facility or an organisation and, at best, an NPI; a claim needs the billing
provider's EIN, NUCC taxonomy, ZIP+4 street address and, when payments go elsewhere, a
pay-to address (837 loop 2010AB). A billing system keeps those in its provider master;
this is that table, read from the JSON file ``CLAIMFLOW_PROVIDER_DIRECTORY`` names:

```json
{"billing_providers": [
   {"keys": ["RIVERSIDE", "http://ehr.example/org|RFM-1"],
    "npi": "1452839107", "name": "Riverside Family Medicine PC", "entity": "organization",
    "tax_id": "741852963", "taxonomy": "207Q00000X",
    "address": {"line1": "…", "city": "Austin", "state": "TX", "postal_code": "787041234"},
    "pay_to": {"line1": "PO Box 1", "city": "Austin", "state": "TX", "postal_code": "787110001"},
    "cbsa": "12420",
    "facility": {"name": "…", "npi": "…", "address": {…}}}],
 "providers": [{"npi": "…", "name": "Okafor, Daniel", "entity": "person", "taxonomy": "…"}]}
```

A profile is found by any of its ``keys`` (what each format sends: the HL7 facility id of
PV1-3.4 or MSH-4, a FHIR Organization identifier as ``system|value``, a bare identifier
value) and by its NPI. A hospital's ``cbsa`` (core-based statistical area, or the 2-digit
state code of a rural one) picks its IPPS wage index (``wage_index.py``). The older
layout, ``{"billing": {id: Provider}, "facilities": {id: Facility}, "providers": [...]}``,
is read too.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline.models import Address, Facility, Provider
from services.refdata.masterfile import MasterDataError, pydantic_field, read_json

_PROFILE_FIELDS = frozenset(Provider.model_fields) | {"keys", "pay_to", "facility", "cbsa"}


@dataclass(frozen=True)
class ProviderDirectory:
    """Billing providers and facilities by key, practitioners by NPI, pay-to by billing NPI."""

    billing: Mapping[str, Provider] = field(default_factory=dict)
    facilities: Mapping[str, Facility] = field(default_factory=dict)
    providers: Mapping[str, Provider] = field(default_factory=dict)
    pay_to: Mapping[str, Address] = field(default_factory=dict)
    """The pay-to address (837 2010AB) by billing provider NPI, when it is not the billing one."""
    cbsa: Mapping[str, str] = field(default_factory=dict)
    """A hospital's CBSA (its IPPS wage index area) by billing provider NPI."""

    @functools.cached_property
    def _by_npi(self) -> dict[str, Provider]:
        return {p.npi: p for p in self.billing.values()}

    def billing_for(self, keys: Iterable[str | None]) -> Provider | None:
        """The billing profile of the first key that names one (a key, or its NPI)."""
        for key in keys:
            if key and (found := self.billing.get(key) or self._by_npi.get(key)):
                return found
        return None

    def complete(self, provider: Provider, keys: Iterable[str | None] = ()) -> Provider:
        """A billing provider as an EHR sent it, completed from its profile.

        The profile is found by the keys, else by the provider's NPI; what the EHR sent wins
        where it sent something (it knows the visit), the profile fills what it left out.
        """
        profile = self.billing_for([*keys, provider.npi])
        if profile is None or profile.npi != provider.npi:
            return provider
        # Validated again, not model_copy(update=...): that would leave the sent nested
        # fields (the address) as plain dicts where the model holds an Address.
        merged = profile.model_dump(exclude_none=True) | provider.model_dump(exclude_none=True)
        return Provider.model_validate(merged)

    @classmethod
    def from_json(cls, data: Any, path: Path | str = "provider directory") -> ProviderDirectory:
        """Read either layout (see the module docstring); errors name the entry and field."""
        if not isinstance(data, dict):
            raise MasterDataError(path, "", "(file)", "a provider directory is a JSON object")
        billing: dict[str, Provider] = {}
        facilities: dict[str, Facility] = {}
        pay_to: dict[str, Address] = {}
        cbsa: dict[str, str] = {}
        practitioners: dict[str, Provider] = {}

        def build(model: Any, value: Any, where: str, prefix: str = "") -> Any:
            try:
                return model.model_validate(value)
            except ValidationError as exc:
                name, reason = pydantic_field(exc)
                raise MasterDataError(path, where, prefix + name, reason) from None

        for i, entry in enumerate(_list(data, "billing_providers", path)):
            where = f"billing_providers[{i}]"
            if not isinstance(entry, dict):
                raise MasterDataError(path, where, "(entry)", "must be an object")
            unknown = sorted(set(entry) - _PROFILE_FIELDS)
            if unknown:
                raise MasterDataError(path, where, unknown[0], "not a provider profile field")
            keys = entry.get("keys", [])
            if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
                raise MasterDataError(path, where, "keys", "must be a list of non-empty strings")
            provider = build(Provider, {k: v for k, v in entry.items()
                                        if k in Provider.model_fields}, where)  # fmt: skip
            for key in keys or [provider.npi]:
                known = billing.get(key)
                if known is not None and known != provider:
                    raise MasterDataError(path, where, "keys", f"{key!r} names two profiles")
                billing[key] = provider
            if entry.get("facility") is not None:
                facility = build(Facility, entry["facility"], where, "facility.")
                for key in keys:
                    facilities[key] = facility
            if entry.get("pay_to") is not None:
                pay_to[provider.npi] = build(Address, entry["pay_to"], where, "pay_to.")
            if entry.get("cbsa") is not None:
                area = entry["cbsa"]
                if not isinstance(area, str) or not re.fullmatch(r"[0-9]{2}|[0-9]{5}", area):
                    raise MasterDataError(
                        path, where, "cbsa", "must be a 5-digit CBSA or a 2-digit state code"
                    )
                cbsa[provider.npi] = area
        legacy_billing = data.get("billing", {})
        legacy_facilities = data.get("facilities", {})
        for name, table in (("billing", legacy_billing), ("facilities", legacy_facilities)):
            if not isinstance(table, dict):
                raise MasterDataError(path, "", name, "must be an object keyed by facility id")
        for key, value in legacy_billing.items():
            billing.setdefault(key, build(Provider, value, f"billing[{key!r}]"))
        for key, value in legacy_facilities.items():
            facilities.setdefault(key, build(Facility, value, f"facilities[{key!r}]"))
        for i, value in enumerate(_list(data, "providers", path)):
            p = build(Provider, value, f"providers[{i}]")
            practitioners[p.npi] = p
        return cls(
            billing=billing,
            facilities=facilities,
            providers=practitioners,
            pay_to=pay_to,
            cbsa=cbsa,
        )

    @classmethod
    def load(cls, path: Path) -> ProviderDirectory:
        """Read the JSON file a deployment configures (CLAIMFLOW_PROVIDER_DIRECTORY)."""
        return cls.from_json(read_json(path, "provider directory"), path)

    def to_json(self) -> dict[str, Any]:
        """The JSON form ``from_json`` reads (profiles grouped by billing provider)."""
        groups: dict[str, list[str]] = {}
        for key, provider in self.billing.items():
            groups.setdefault(provider.npi, []).append(key)
        by_npi = {p.npi: p for p in self.billing.values()}
        profiles = []
        for npi, keys in groups.items():
            entry: dict[str, Any] = {"keys": keys, **by_npi[npi].model_dump(mode="json")}
            facility = next((self.facilities[k] for k in keys if k in self.facilities), None)
            if facility is not None:
                entry["facility"] = facility.model_dump(mode="json")
            if npi in self.pay_to:
                entry["pay_to"] = self.pay_to[npi].model_dump(mode="json")
            if npi in self.cbsa:
                entry["cbsa"] = self.cbsa[npi]
            profiles.append(entry)
        grouped = {k for keys in groups.values() for k in keys}
        return {
            "billing_providers": profiles,
            "facilities": {
                k: v.model_dump(mode="json") for k, v in self.facilities.items() if k not in grouped
            },
            "providers": [v.model_dump(mode="json") for v in self.providers.values()],
        }


def _list(data: Mapping[str, Any], name: str, path: Path | str) -> list[Any]:
    value = data.get(name, [])
    if not isinstance(value, list):
        raise MasterDataError(path, "", name, "must be a list")
    return value


EMPTY_DIRECTORY = ProviderDirectory()
