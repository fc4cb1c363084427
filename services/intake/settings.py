"""Settings of the intake stage and of the intake gateway (environment, prefix CLAIMFLOW_)."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from pipeline.settings import Settings
from pipeline.settled import RetentionOptions


class IntakeOptions(RetentionOptions):
    """``CLAIMFLOW_INTAKE__…``: how long repeats are known, when a hospital account is
    billed (``account.py``), how long its raw HL7 is kept once its bills are settled
    (``SETTLED_RETENTION_DAYS`` 365, ``..._BY_PAYER``, ``RETENTION_SWEEP_S``)."""

    model_config = ConfigDict(frozen=True)

    repeat_window_days: float = Field(
        default=30.0,
        gt=0,
        description="How long a source message is remembered, to drop a resend of it "
        "(CLAIMFLOW_INTAKE__REPEAT_WINDOW_DAYS; the old CLAIMFLOW_REPEAT_WINDOW_DAYS still "
        "works).",
    )
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

    aliases = {"CLAIMFLOW_REPEAT_WINDOW_DAYS": "intake.repeat_window_days"}
    intake: IntakeOptions = IntakeOptions()


class GatewayOptions(BaseModel):
    """``CLAIMFLOW_GATEWAY__…``: the intake gateway's listeners, authentication and bounds.
    The names of earlier versions, ``CLAIMFLOW_GATEWAY_<NAME>`` (one underscore), are read
    as aliases; the new name wins when both are set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=0, ge=0, description="0: a free port (see the log).")
    mllp_host: str = "127.0.0.1"
    mllp_port: int = Field(default=0, ge=0, description="0: a free port; MLLP's is 2575.")
    token: SecretStr | None = Field(
        default=None,
        description="Bearer token HTTP clients must send. Unset (and no token file): one is "
        "generated once and kept in gateway.json in the state folder (owner-only).",
    )
    token_file: Path | None = Field(
        default=None,
        description="A file holding the bearer token (a mounted secret), when "
        "CLAIMFLOW_GATEWAY__TOKEN is not set. Configured but unreadable or empty: the gateway "
        "does not start.",
    )
    auth: bool = Field(
        default=True, description="false turns HTTP authentication off (a trusted network)."
    )
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    delivery_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="How long a sender waits for the broker's acknowledgement before AE / 503.",
    )
    idle_timeout_s: float = Field(
        default=300.0, gt=0, description="A connection silent this long is closed."
    )
    message_deadline_s: float = Field(
        default=60.0,
        gt=0,
        description="A message (an MLLP frame, an HTTP request's head and body) must arrive "
        "whole within this many seconds of its first byte, else the connection is closed.",
    )
    http_max_connections: int = Field(default=128, ge=1)
    http_max_connections_per_address: int = Field(default=32, ge=1)
    http_evict_below_bytes_s: float = Field(
        default=500.0,
        ge=0,
        description="At an HTTP connection limit (in all or per address) a new connection "
        "takes the slot of the connection that has waited longest on a peer sending fewer "
        "bytes per second than this (a slowloris, an idle keep-alive), which is closed; "
        "0: never evict (the new connection gets 503).",
    )
    mllp_max_connections: int = Field(default=64, ge=1)
    mllp_max_connections_per_address: int = Field(default=8, ge=1)
    buffer_budget_bytes: int = Field(
        default=128 * 1024 * 1024,
        ge=1024 * 1024,
        description="Bytes all connections together may hold while messages arrive; past it a "
        "message is answered 503 / AE (retry) and its connection closed.",
    )
    mllp_tls_cert: Path | None = Field(
        default=None, description="PEM certificate chain: MLLP over TLS (1.2+) when set."
    )
    mllp_tls_key: Path | None = Field(default=None, description="PEM private key.")
    mllp_tls_client_ca: Path | None = Field(
        default=None,
        description="PEM CA bundle: senders must present a certificate it signed (mutual TLS).",
    )
    mllp_allowed_networks: list[str] = Field(
        default_factory=list,
        description="Addresses or CIDR networks that may connect to MLLP; empty: any.",
    )
    mllp_allowed_facilities: list[str] = Field(
        default_factory=list,
        description="Sending facilities (MSH-4, else MSH-3) accepted over MLLP; empty: any. "
        "Another one is answered AR.",
    )

    @field_validator("mllp_allowed_networks")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        for value in values:
            ipaddress.ip_network(value.strip(), strict=False)  # ValueError names the value
        return values

    @model_validator(mode="after")
    def _tls_pair(self) -> GatewayOptions:
        if (self.mllp_tls_cert is None) != (self.mllp_tls_key is None):
            raise ValueError(
                "set both CLAIMFLOW_GATEWAY__MLLP_TLS_CERT and CLAIMFLOW_GATEWAY__MLLP_TLS_KEY"
            )
        if self.mllp_tls_client_ca is not None and self.mllp_tls_cert is None:
            raise ValueError("CLAIMFLOW_GATEWAY__MLLP_TLS_CLIENT_CA needs the certificate and key")
        return self


LEGACY_PREFIX = "CLAIMFLOW_GATEWAY_"
"""The flat names of earlier versions: ``CLAIMFLOW_GATEWAY_HTTP_PORT`` for ``…__HTTP_PORT``."""


class _LegacyGatewayEnv(PydanticBaseSettingsSource):
    """``CLAIMFLOW_GATEWAY_<NAME>`` variables as ``gateway_<name>`` values (mapped into
    ``gateway`` by ``GatewaySettings``); list values are JSON, as for the new names."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # every value comes from __call__

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for variable, raw in os.environ.items():
            name = variable.upper().removeprefix(LEGACY_PREFIX).lower()  # __X: "_x", not one
            if variable.upper().startswith(LEGACY_PREFIX) and name in GatewayOptions.model_fields:
                found[f"gateway_{name}"] = raw
        return found


class GatewaySettings(Settings):
    """The intake gateway: HTTP (FHIR, HL7 v2) and MLLP listeners in front of intake.raw.v1;
    its own options under ``gateway`` (``CLAIMFLOW_GATEWAY__…``)."""

    gateway: GatewayOptions = GatewayOptions()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        legacy = _LegacyGatewayEnv(settings_cls)
        return init_settings, env_settings, legacy, dotenv_settings, file_secret_settings

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        """``gateway_<name>`` (the old variables, or keyword arguments) into ``gateway``;
        a value given under the new name wins."""
        if not isinstance(data, dict):
            return data
        old = {k: data[k] for k in list(data) if k.startswith("gateway_")}
        if not old:
            return data
        data = {k: v for k, v in data.items() if k not in old}
        given = data.get("gateway") or {}
        merged = given.model_dump() if isinstance(given, GatewayOptions) else dict(given)
        for key, value in old.items():
            name = key.removeprefix("gateway_")
            if name in merged:
                continue
            if name.startswith("mllp_allowed_") and isinstance(value, str):
                try:
                    value = json.loads(value)
                except ValueError:
                    raise ValueError(
                        f'{LEGACY_PREFIX}{name.upper()}: a JSON list, e.g. ["10.0.0.0/8"]'
                    ) from None
            merged[name] = value
        data["gateway"] = merged
        return data
