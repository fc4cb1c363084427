"""Settings: one pydantic-settings class per service, all deriving from ``Settings``.

Environment variables use the prefix ``CLAIMFLOW_`` and ``__`` for nesting; settings are
frozen, secrets are ``SecretStr``. ``Settings`` holds only what every process shares (the
cluster, topics, metrics, state, reference files); a service adds its own options as one
nested model (``CLAIMFLOW_CODING__…``, ``CLAIMFLOW_CLAIMS__…``) on its subclass and builds
it with ``ServiceSettings.from_base(shared)``. The environment is read once at start-up;
objects are passed down from there.

A service option that had a flat variable before it moved under its service keeps that
name as an alias: the subclass maps it in ``aliases`` (old variable -> ``section.option``),
and the old variable is read when the new one (``CLAIMFLOW_<SECTION>__<OPTION>``) is not
set; a value given in code wins over both. The service's README documents each alias.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, Self

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class TopicSpecLike(Protocol):
    """What ``Settings.partitions_of`` reads of a topic's spec (pipeline/serde.py TopicSpec)."""

    @property
    def partitions(self) -> int: ...


class KafkaSecurity(BaseModel):
    """TLS and SASL for every Kafka client (``CLAIMFLOW_KAFKA__…``). Defaults: plaintext."""

    model_config = ConfigDict(frozen=True)

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None
    ssl_endpoint_identification: bool = True

    def client_config(self) -> dict[str, Any]:
        """librdkafka properties; secrets are only revealed here, at client creation."""
        conf: dict[str, Any] = {"security.protocol": self.protocol}
        if self.protocol.startswith("SASL"):
            if not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
                raise SystemExit(
                    f"Kafka security protocol {self.protocol} needs "
                    "CLAIMFLOW_KAFKA__SASL_MECHANISM, "
                    "CLAIMFLOW_KAFKA__SASL_USERNAME and CLAIMFLOW_KAFKA__SASL_PASSWORD."
                )
            conf |= {
                "sasl.mechanism": self.sasl_mechanism,
                "sasl.username": self.sasl_username,
                "sasl.password": self.sasl_password.get_secret_value(),
            }
        if self.protocol.endswith("SSL"):
            for key, value in (
                ("ssl.ca.location", self.ssl_ca_location),
                ("ssl.certificate.location", self.ssl_certificate_location),
                ("ssl.key.location", self.ssl_key_location),
            ):
                if value is not None:
                    conf[key] = str(value)
            if self.ssl_key_password is not None:
                conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
            if not self.ssl_endpoint_identification:
                conf["ssl.endpoint.identification.algorithm"] = "none"
        return conf


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CLAIMFLOW_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CLAIMFLOW_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"),
        description="Kafka cluster to use. Unset: `claimflow run` starts the embedded broker.",
    )
    kafka: KafkaSecurity = KafkaSecurity()
    topic_prefix: str = Field(default="", description="Prepended to every topic name.")
    group_prefix: str = Field(default="claimflow", description="Consumer group id prefix.")
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=0, description="0: pick a free port.")
    log_level: str = "INFO"
    refdata_dir: Path | None = Field(
        default=None,
        description="Folder with the official CMS files (PPRRVU, GPCI, LOCCO, HCPCS...). "
        "Unset: the edits that need them are off, and the service says so at start-up.",
    )
    provider_directory: Path | None = Field(
        default=None,
        description="Provider profiles (JSON): billing provider NPI, EIN, taxonomy, ZIP+4 and "
        "pay-to address by facility id, FHIR Organization identifier or NPI; practitioners by "
        "NPI. Unset: claims carry what the EHR sent, and say what is missing.",
    )
    payer_registry: Path | None = Field(
        default=None,
        description="Payer registry (JSON): electronic payer and receiver ids, claim filing "
        "indicator by claim type, timely filing days, contracts. Unset: the EHR's payer ids "
        "and plan types are billed as sent, timely filing is the rule pack's.",
    )
    chargemaster: Path | None = Field(
        default=None,
        description="The hospital's CMS price-transparency file (CSV tall or wide, v2/v3, or "
        "JSON): charge codes, revenue codes, prices, contracted rates. Unset: charge codes "
        "cannot be priced and no contract sets an expected payment.",
    )
    state_dir: Path = Field(default=Path(".claimflow/state"))
    keep_runs: int = Field(
        default=10,
        ge=1,
        description="`claimflow run`/`demo` keep this many run folders (logs and state, which "
        "hold PHI) under .claimflow/runs and delete older ones at start.",
    )
    max_message_bytes: int = Field(
        default=12 * 1024 * 1024,
        ge=1_000_000,
        description="Largest record a producer sends (librdkafka message.max.bytes) and every "
        "topic is created to take (max.message.bytes): one limit end to end. The intake "
        "gateway's body limit stays below it, leaving room for a dead letter's envelope.",
    )
    min_free_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="Free space the state volume must keep: below it a stage stops taking "
        "input (and the intake gateway answers 503 / AE) until space returns, before a "
        "write fails. 0: no floor (a failed write still stops input, see pipeline/stage.py).",
    )
    partitions: int = Field(
        default=0,
        ge=0,
        description="Partitions of each topic claimflow creates (a changelog takes its source "
        "topic's). 0: schemas/topics.yaml's. `claimflow run` and `demo` on the embedded broker "
        "use 1: they run one instance of each service, and every partition a consumer fetches "
        "and a producer writes costs the broker CPU and latency (see pipeline/broker.py). "
        "Topics that exist keep their count, and a stage that keeps state by partition stops "
        "with an error when its input's count is not this one.",
    )
    batch_size: int = Field(default=500, ge=1)
    poll_timeout_s: float = Field(
        default=0.0,
        ge=0,
        description="How long a stage waits for more records to fill a batch beyond those that "
        "have arrived. 0: a batch is what has arrived, so batches are small when traffic is "
        "light and grow by themselves under load (bench pipeline, same-run pairs: at 200/s p99 "
        "publish->submitted 291-397 -> 203-213 ms against 10 ms, for ~0.4 ms more stage CPU "
        "per encounter; at maximum rate no change).",
    )
    linger_ms: int = Field(default=5, ge=0)
    stage_linger_ms: int = Field(
        default=1000,
        ge=0,
        description="linger.ms of a stage runner's producer. The runner flushes at the end of "
        "every batch, and a flush sends what is queued at once (librdkafka ignores linger "
        "while flushing): a long linger only keeps a batch's records from going out in "
        "several requests while the batch is still being produced. bench pipeline at maximum "
        "rate, 1000 against 5 (5 runs against 6, interleaved): librdkafka's threads spent "
        "0.085 against 0.116 ms of CPU per encounter over the five stages (claims 0.025 "
        "against 0.034, remittance 0.021 against 0.038; the Python thread's share of "
        "remittance's CPU 0.93 against 0.88); p99 publish->submitted at 200/s 121-315 ms "
        "against 105-508, within the runs' noise.",
    )
    fetch_wait_max_ms: int = Field(
        default=20,
        ge=0,
        description="Longest a consumer's fetch waits for data. Tansu answers a waiting fetch "
        "late (measured: a record waited 32 ms at the median with 100 ms, 9 ms with 20 ms), "
        "and that is paid at every hop; Apache Kafka answers as soon as data arrives.",
    )
    session_timeout_ms: int = Field(default=6000, ge=1000)

    aliases: ClassVar[dict[str, str]] = {}
    """Old flat variable -> ``section.option`` it stands for (a service's own options)."""

    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, data: Any) -> Any:
        """The options whose new variable is not set, from their old flat variable."""
        if not cls.aliases or not isinstance(data, dict):
            return data
        environ = {k.upper(): v for k, v in os.environ.items()}
        for old, path in cls.aliases.items():
            value = environ.get(old.upper())
            if value is None:
                continue
            section, option = path.split(".")
            current = data.get(section)
            if current is None:
                data[section] = {option: value}
            elif isinstance(current, dict):
                current.setdefault(option, value)
            elif isinstance(current, BaseModel) and option not in current.model_fields_set:
                given = current.model_dump(exclude_unset=True)
                data[section] = type(current).model_validate({**given, option: value})
        return data

    @classmethod
    def from_base(cls, base: Settings | None = None) -> Self:
        """A service's settings: its own options (``CLAIMFLOW_<STAGE>__…``) read from the
        environment here, the shared ones as ``base`` has them (``claimflow service`` reads
        those once at start-up; a test passes its own). ``base`` of this class is returned."""
        if isinstance(base, cls):
            return base
        own = cls()
        if base is None:
            return own
        return own.model_copy(update={name: getattr(base, name) for name in Settings.model_fields})

    def partitions_of(self, spec: TopicSpecLike) -> int:
        """The partition count ``spec``'s topic is created with in this deployment."""
        return self.partitions or spec.partitions

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def require_bootstrap(self) -> str:
        if not self.bootstrap_servers:
            raise SystemExit(
                "No Kafka cluster configured: set CLAIMFLOW_BOOTSTRAP_SERVERS (or "
                "KAFKA_BOOTSTRAP_SERVERS), or use `claimflow run`, which starts the embedded "
                "broker."
            )
        return self.bootstrap_servers
