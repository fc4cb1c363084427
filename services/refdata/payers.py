"""The payer registry: how each payer is billed electronically.

An EHR names a payer (an id of its own, a name, at best a NAIC code); a claim needs the
payer's electronic id (837 loop 2010BB NM109) and receiver (1000B, ISA08/GS03), the claim
filing indicator by claim type (SBR09: Medicare Part A ``MA`` on institutional claims, Part B
``MB`` on professional ones, often under two different payer ids), how long the payer accepts
claims (timely filing), whether it takes secondary claims electronically, and which
published contract (the chargemaster's payer and plan names) prices its claims. The registry
is the JSON file ``CLAIMFLOW_PAYER_REGISTRY`` names:

```json
{"payers": [
  {"payer_id": "04412", "name": "Medicare Part B", "aliases": ["MEDICARE_B", "Medicare"],
   "receiver_id": "04412", "receiver_name": "NOVITAS SOLUTIONS",
   "medicare": true, "timely_filing_days": 365, "secondary_electronic": true,
   "claim_types": {"professional": {"filing_indicator": "MB"},
                   "institutional": {"payer_id": "04411", "filing_indicator": "MA"}}},
  {"payer_id": "77027", "name": "State Medicaid", "timely_filing_days": 180,
   "claim_types": {"professional": {"filing_indicator": "MC"},
                   "institutional": {"filing_indicator": "MC"}},
   "contract": {"payer_name": "State Medicaid", "plan_name": "Medicaid"}}]}
```

A payer is found by its id, by the id it uses for a claim type, or by one of its aliases
(what the EHRs send, case-insensitive).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from services.refdata.masterfile import MasterDataError, pydantic_field, read_json

ClaimType = Literal["professional", "institutional"]
_FILING = "11 12 13 14 15 16 17 AM BL CH CI DS FI HM LM MA MB MC OF TV VA WC ZZ"
CLAIM_FILING_CODES = frozenset(_FILING.split(" "))
"""SBR09 claim filing indicator codes 005010X222A1 and 005010X223A2 allow."""
PLACEHOLDER_PAYER_IDS = frozenset(
    {"UNKNOWN", "PRIVATE", "NONE", "NA", "N/A", "TBD", "PAYER", "INSURANCE", "OTHER", "0"}
)
"""Payer ids that stand for "we do not know the payer" (intake writes the first two)."""
_ID = r"^[A-Za-z0-9][A-Za-z0-9 ._\-]{0,79}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClaimTypeRules(_Strict):
    """How one claim type is billed to the payer."""

    filing_indicator: str
    payer_id: str | None = Field(default=None, pattern=_ID)
    """The payer's id for this claim type when it differs (Medicare Part A vs Part B)."""

    @field_validator("filing_indicator")
    @classmethod
    def _filing(cls, value: str) -> str:
        if value not in CLAIM_FILING_CODES:
            raise ValueError(f"{value!r} is not an X12 claim filing indicator (SBR09)")
        return value


class Contract(_Strict):
    """The payer and plan as the chargemaster (price-transparency file) names them."""

    payer_name: str = Field(min_length=1)
    plan_name: str | None = None


class PayerEntry(_Strict):
    """One payer of the registry."""

    payer_id: str = Field(pattern=_ID)
    name: str = Field(min_length=1, max_length=60)
    aliases: list[str] = []
    receiver_id: str | None = Field(default=None, min_length=2, max_length=15)
    receiver_name: str | None = Field(default=None, max_length=60)
    submitter_id: str | None = Field(default=None, min_length=2, max_length=15)
    """Our id with this receiver (ISA06, GS02, 1000A NM109), when it assigned one."""
    claim_types: dict[ClaimType, ClaimTypeRules]
    timely_filing_days: int = Field(default=365, ge=1, le=3650)
    secondary_electronic: bool = True
    medicare: bool = False
    """Medicare pricing (fee schedule, MS-DRG) sets the expected payment without a contract."""
    contract: Contract | None = None

    @field_validator("payer_id")
    @classmethod
    def _not_placeholder(cls, value: str) -> str:
        if value.upper() in PLACEHOLDER_PAYER_IDS:
            raise ValueError(f"{value!r} is a placeholder, not a payer id")
        return value

    def billed_id(self, claim_type: ClaimType) -> str:
        """The payer id on a claim of this type (2010BB NM109)."""
        rules = self.claim_types.get(claim_type)
        return (rules.payer_id if rules else None) or self.payer_id

    def filing_indicator(self, claim_type: ClaimType) -> str | None:
        """SBR09 for a claim of this type; None when the payer takes no such claims."""
        rules = self.claim_types.get(claim_type)
        return rules.filing_indicator if rules else None


@dataclass(frozen=True)
class PayerRegistry:
    """Payers by id, by claim-type id and by alias."""

    payers: tuple[PayerEntry, ...] = ()
    _index: Mapping[str, PayerEntry] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, payers: list[PayerEntry], path: Path | str = "payer registry") -> PayerRegistry:
        index: dict[str, PayerEntry] = {}
        for i, p in enumerate(payers):
            keys = [p.payer_id, *(r.payer_id for r in p.claim_types.values() if r.payer_id),
                    *p.aliases]  # fmt: skip
            for key in keys:
                k = key.casefold()
                if k in index and index[k] is not p:
                    raise MasterDataError(path, f"payers[{i}]", "aliases",
                                          f"{key!r} already names {index[k].payer_id}")  # fmt: skip
                index[k] = p
        return cls(tuple(payers), index)

    def find(self, payer_id: str | None, payer_name: str | None = None) -> PayerEntry | None:
        """The payer an encounter's coverage names: by id, else by name."""
        for key in (payer_id, payer_name):
            if key and (found := self._index.get(key.casefold())) is not None:
                return found
        return None

    def __bool__(self) -> bool:
        return bool(self.payers)

    @classmethod
    def from_json(cls, data: Any, path: Path | str = "payer registry") -> PayerRegistry:
        if not isinstance(data, dict) or not isinstance(data.get("payers"), list):
            raise MasterDataError(path, "", "payers", 'the registry is {"payers": [...]}')
        entries = []
        for i, raw in enumerate(data["payers"]):
            try:
                entries.append(PayerEntry.model_validate(raw))
            except ValidationError as exc:
                name, reason = pydantic_field(exc)
                raise MasterDataError(path, f"payers[{i}]", name, reason) from None
        return cls.of(entries, path)

    @classmethod
    def load(cls, path: Path) -> PayerRegistry:
        """Read the JSON file a deployment configures (CLAIMFLOW_PAYER_REGISTRY)."""
        return cls.from_json(read_json(path, "payer registry"), path)


EMPTY_REGISTRY = PayerRegistry()


def is_placeholder(payer_id: str) -> bool:
    """Whether a payer id only says that the payer is not known."""
    return payer_id.strip().upper() in PLACEHOLDER_PAYER_IDS or not payer_id.strip()
