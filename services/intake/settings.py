"""Settings of the intake stage and of the intake gateway (environment, prefix CLAIMFLOW_)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

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
        description="Bearer token HTTP clients must send. Unset (and no token file): one is "
        "generated once and kept in gateway.json in the state folder (owner-only).",
    )
    gateway_token_file: Path | None = Field(
        default=None,
        description="A file holding the bearer token (a mounted secret), when "
        "CLAIMFLOW_GATEWAY_TOKEN is not set. Configured but unreadable or empty: the gateway "
        "does not start.",
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
        default=300.0, gt=0, description="A connection silent this long is closed."
    )
    gateway_message_deadline_s: float = Field(
        default=60.0,
        gt=0,
        description="A message (an MLLP frame, an HTTP request's head and body) must arrive "
        "whole within this many seconds of its first byte, else the connection is closed.",
    )
    gateway_http_max_connections: int = Field(default=128, ge=1)
    gateway_http_max_connections_per_address: int = Field(default=32, ge=1)
    gateway_mllp_max_connections: int = Field(default=64, ge=1)
    gateway_mllp_max_connections_per_address: int = Field(default=8, ge=1)
    gateway_buffer_budget_bytes: int = Field(
        default=128 * 1024 * 1024,
        ge=1024 * 1024,
        description="Bytes all connections together may hold while messages arrive; past it a "
        "message is answered 503 / AE (retry) and its connection closed.",
    )
    gateway_mllp_tls_cert: Path | None = Field(
        default=None, description="PEM certificate chain: MLLP over TLS (1.2+) when set."
    )
    gateway_mllp_tls_key: Path | None = Field(default=None, description="PEM private key.")
    gateway_mllp_tls_client_ca: Path | None = Field(
        default=None,
        description="PEM CA bundle: senders must present a certificate it signed (mutual TLS).",
    )
    gateway_mllp_allowed_networks: list[str] = Field(
        default_factory=list,
        description="Addresses or CIDR networks that may connect to MLLP; empty: any.",
    )
    gateway_mllp_allowed_facilities: list[str] = Field(
        default_factory=list,
        description="Sending facilities (MSH-4, else MSH-3) accepted over MLLP; empty: any. "
        "Another one is answered AR.",
    )

    @field_validator("gateway_mllp_allowed_networks")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        for value in values:
            ipaddress.ip_network(value.strip(), strict=False)  # ValueError names the value
        return values

    @model_validator(mode="after")
    def _tls_pair(self) -> GatewaySettings:
        if (self.gateway_mllp_tls_cert is None) != (self.gateway_mllp_tls_key is None):
            raise ValueError(
                "set both CLAIMFLOW_GATEWAY_MLLP_TLS_CERT and CLAIMFLOW_GATEWAY_MLLP_TLS_KEY"
            )
        if self.gateway_mllp_tls_client_ca is not None and self.gateway_mllp_tls_cert is None:
            raise ValueError("CLAIMFLOW_GATEWAY_MLLP_TLS_CLIENT_CA needs the certificate and key")
        return self
