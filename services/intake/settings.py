"""Settings of the intake stage and of the intake gateway (environment, prefix CLAIMFLOW_)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from pipeline.settings import Settings


class IntakeOptions(BaseModel):
    """``CLAIMFLOW_INTAKE__…``: when a hospital account is billed (``account.py``)."""

    model_config = ConfigDict(frozen=True)

    bill_hold_hours: float = Field(
        default=0.0,
        ge=0,
        description="How long after discharge a hospital account waits for late charges "
        "before its final bill. 0: billed on discharge.",
    )
    late_charges: Literal["late_charge", "replacement"] = Field(
        default="late_charge",
        description="Charges after the final bill: a late-charge claim (xx5, the new charges "
        "only) or a replacement of the whole account (xx7).",
    )


class IntakeSettings(Settings):
    """The intake stage: how long repeats are known, when hospital accounts are billed."""

    repeat_window_days: float = Field(
        default=30.0,
        gt=0,
        description="How long a source message is remembered, to drop a resend of it.",
    )
    intake: IntakeOptions = IntakeOptions()


class GatewaySettings(Settings):
    """The intake gateway: HTTP (FHIR, HL7 v2) and MLLP listeners in front of intake.raw.v1."""

    gateway_http_host: str = "127.0.0.1"
    gateway_http_port: int = Field(default=0, ge=0, description="0: a free port (see the log).")
    gateway_mllp_host: str = "127.0.0.1"
    gateway_mllp_port: int = Field(default=0, ge=0, description="0: a free port; MLLP's is 2575.")
    gateway_token: SecretStr | None = Field(
        default=None,
        description="Bearer token HTTP clients must send. Unset: one is generated and written "
        "to gateway.json in the state folder (readable by its owner only).",
    )
    gateway_auth: bool = Field(
        default=True, description="false turns HTTP authentication off (a trusted network)."
    )
    gateway_max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    gateway_delivery_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="How long a sender waits for the broker's acknowledgement before AE / 503.",
    )
    gateway_idle_timeout_s: float = Field(
        default=300.0, gt=0, description="An MLLP connection silent this long is closed."
    )
