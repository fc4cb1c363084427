"""Settings of the claims service: ``CLAIMFLOW_CLAIMS__…`` on top of the shared ones.

Routing is by payer id, with ``*`` for every other payer, e.g.::

    CLAIMFLOW_CLAIMS__ROUTES='{"MEDICARE_B": "filedrop", "*": "simulator"}'
    CLAIMFLOW_CLAIMS__ADAPTERS='{"filedrop": {"directory": "/srv/sftp/out"}}'

A route names an adapter; ``ADAPTERS`` configures it by that name (``kind`` picks the
adapter kind when the name is not one: ``{"acme": {"kind": "http", "url": "https://…"}}``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import ConfigDict, Field

from pipeline.settings import Settings
from pipeline.settled import RetentionOptions
from services.claims.delivery import RetryPolicy
from services.claims.domain import DEFAULT_DRG_BASE_RATE


class ClaimsOptions(RetentionOptions):
    """What the claims service decides beyond the shared settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    routes: dict[str, str] = Field(
        default_factory=lambda: {"*": "simulator"},
        description="payer id -> adapter name; '*' for every payer without its own route",
    )
    adapters: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="adapter name -> its options (and 'kind')"
    )
    max_claims_per_interchange: int = Field(
        default=25,
        ge=1,
        le=5000,
        description="claims of one payer per 837; every claim event carries its interchange, "
        "so this also bounds the size of a claims.submitted.v1 record",
    )
    delivery_attempts: int = Field(default=4, ge=1, le=20)
    backoff_initial_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=8.0, ge=0)
    drg_base_rate: Decimal = Field(default=DEFAULT_DRG_BASE_RATE, gt=0)
    control_number_block: int = Field(
        default=0, ge=0, le=9, description="a different block per claims instance (0-9)"
    )
    usage: Literal["P", "T"] = Field(default="P", description="ISA15: production or test")
    sender_id: str = Field(
        default="CLAIMFLOW",
        description="ISA06 / GS02 of the 837s we send (the old CLAIMFLOW_SENDER_ID still works)",
    )
    receiver_id: str = Field(
        default="CLEARINGHOUSE",
        description="ISA08 / GS03 of the 837s (the old CLAIMFLOW_RECEIVER_ID still works)",
    )

    def retry_policy(self) -> RetryPolicy:
        """The delivery retry policy these options describe."""
        return RetryPolicy(
            attempts=self.delivery_attempts,
            initial_s=self.backoff_initial_s,
            max_s=self.backoff_max_s,
        )


class ClaimsSettings(Settings):
    """The shared settings plus ``claims`` (``CLAIMFLOW_CLAIMS__…``)."""

    aliases = {
        "CLAIMFLOW_SENDER_ID": "claims.sender_id",
        "CLAIMFLOW_RECEIVER_ID": "claims.receiver_id",
    }
    claims: ClaimsOptions = ClaimsOptions()
