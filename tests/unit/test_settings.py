"""Settings come from the environment once; Kafka security reaches every client config."""

from __future__ import annotations

import pytest

from pipeline.kafka import consumer_config, producer_config
from pipeline.settings import Settings


def test_defaults_are_plaintext_and_need_no_cluster_until_asked() -> None:
    s = Settings()
    assert producer_config("h:9092", s)["security.protocol"] == "PLAINTEXT"
    with pytest.raises(SystemExit, match="CLAIMFLOW_BOOTSTRAP_SERVERS"):
        Settings(bootstrap_servers=None).require_bootstrap()


def test_sasl_ssl_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker-1:9093")
    monkeypatch.setenv("CLAIMFLOW_KAFKA__PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("CLAIMFLOW_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("CLAIMFLOW_KAFKA__SASL_USERNAME", "claims")
    monkeypatch.setenv("CLAIMFLOW_KAFKA__SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("CLAIMFLOW_KAFKA__SSL_CA_LOCATION", "/etc/kafka/ca.pem")
    s = Settings()
    assert s.require_bootstrap() == "broker-1:9093"
    assert "s3cret" not in repr(s)  # the password never shows in logs or reprs
    for conf in (
        producer_config(s.require_bootstrap(), s),
        consumer_config(s.require_bootstrap(), "g", s),
    ):
        assert conf["security.protocol"] == "SASL_SSL"
        assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
        assert conf["sasl.password"] == "s3cret"
        assert conf["ssl.ca.location"] == "/etc/kafka/ca.pem"


def test_sasl_without_credentials_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAIMFLOW_KAFKA__PROTOCOL", "SASL_PLAINTEXT")
    with pytest.raises(SystemExit, match="SASL_USERNAME"):
        producer_config("h:9092", Settings())


def _service_settings() -> list[type[Settings]]:
    from services.claims.settings import ClaimsSettings
    from services.coding.app import CodingSettings
    from services.console.app import ConsoleSettings
    from services.intake.settings import GatewaySettings, IntakeSettings
    from services.remittance.app import RemittanceSettings
    from services.validation.app import ValidationSettings
    from sim.payer_app import PayerSimSettings

    return [
        ClaimsSettings,
        CodingSettings,
        ConsoleSettings,
        GatewaySettings,
        IntakeSettings,
        RemittanceSettings,
        ValidationSettings,
        PayerSimSettings,
    ]


@pytest.mark.parametrize("cls", _service_settings(), ids=lambda c: c.__name__)
def test_every_service_builds_its_settings_one_way(
    cls: type[Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same prefix, nesting and freezing as the shared base; the shared values as given,
    the service's own from the environment."""
    assert cls.model_config["env_prefix"] == "CLAIMFLOW_"
    assert cls.model_config["env_nested_delimiter"] == "__"
    assert cls.model_config["frozen"] is True
    monkeypatch.setenv("CLAIMFLOW_TOPIC_PREFIX", "env.")
    built = cls.from_base(Settings(topic_prefix="given.", batch_size=7))
    assert isinstance(built, cls)
    assert (built.topic_prefix, built.batch_size) == ("given.", 7)
    assert cls.from_base(built) is built
    assert cls.from_base(None).topic_prefix == "env."
    with pytest.raises(ValueError):
        built.topic_prefix = "x"  # type: ignore[misc]


def _moved() -> list[tuple[type[Settings], str, str, str, str, object]]:
    """(settings, old variable, new variable, section, option, a value) of every stage option
    that moved under its stage."""
    from services.claims.settings import ClaimsSettings
    from services.intake.settings import IntakeSettings
    from services.validation.app import ValidationSettings

    return [
        (ValidationSettings, "CLAIMFLOW_RULE_PACK", "CLAIMFLOW_VALIDATION__RULE_PACK",
         "validation", "rule_pack", "2026.12.1"),
        (IntakeSettings, "CLAIMFLOW_REPEAT_WINDOW_DAYS", "CLAIMFLOW_INTAKE__REPEAT_WINDOW_DAYS",
         "intake", "repeat_window_days", 2.5),
        (ClaimsSettings, "CLAIMFLOW_SENDER_ID", "CLAIMFLOW_CLAIMS__SENDER_ID",
         "claims", "sender_id", "ACMEBILLING"),
        (ClaimsSettings, "CLAIMFLOW_RECEIVER_ID", "CLAIMFLOW_CLAIMS__RECEIVER_ID",
         "claims", "receiver_id", "PAYERGATE"),
    ]  # fmt: skip


@pytest.mark.parametrize("moved", _moved(), ids=lambda m: m[1])
def test_a_stage_option_has_its_stage_variable_and_keeps_its_old_one(
    moved: tuple[type[Settings], str, str, str, str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    cls, old, new, section, option, value = moved
    assert option not in cls.model_fields and option not in Settings.model_fields
    default = getattr(getattr(cls(), section), option)
    assert default != value

    def read() -> object:
        return getattr(getattr(cls.from_base(Settings()), section), option)

    monkeypatch.setenv(new, str(value))
    assert read() == value
    monkeypatch.delenv(new)
    monkeypatch.setenv(old, str(value))  # the documented alias
    assert read() == value
    monkeypatch.setenv(new, str(default))  # the stage's own variable wins over the old one
    assert read() == default
    monkeypatch.delenv(new)
    # A value given in code wins over the environment; the section's other options stay.
    options = type(getattr(cls(), section))
    given = cls(**{section: options(**{option: default})})
    assert getattr(getattr(given, section), option) == default


def test_an_old_variable_fills_only_its_option(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.claims.settings import ClaimsSettings

    monkeypatch.setenv("CLAIMFLOW_SENDER_ID", "ACMEBILLING")
    monkeypatch.setenv("CLAIMFLOW_CLAIMS__USAGE", "T")
    claims = ClaimsSettings.from_base(Settings()).claims
    assert (claims.sender_id, claims.receiver_id, claims.usage) == (
        "ACMEBILLING",
        "CLEARINGHOUSE",
        "T",
    )
    monkeypatch.setenv("CLAIMFLOW_SENDER_ID", "X")  # too short for ISA06: said at start-up
    from services.claims.billing import ClaimWriter

    writer = ClaimWriter.from_settings(ClaimsSettings(), None)
    with pytest.raises(Exception, match="CLAIMFLOW_CLAIMS__SENDER_ID"):
        writer.check()


def test_gateway_settings_take_the_stage_shape_and_the_old_names_as_aliases(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``CLAIMFLOW_GATEWAY__<NAME>`` like every stage's own options; the flat names of
    earlier versions (``CLAIMFLOW_GATEWAY_<NAME>``) still work, and the new name wins."""
    from pydantic import ValidationError

    from services.intake.settings import GatewaySettings

    monkeypatch.setenv("CLAIMFLOW_GATEWAY__HTTP_PORT", "8080")
    monkeypatch.setenv("CLAIMFLOW_GATEWAY__MLLP_ALLOWED_FACILITIES", '["SUMMIT"]')
    monkeypatch.setenv("CLAIMFLOW_GATEWAY_MLLP_PORT", "2575")  # an old name
    monkeypatch.setenv("CLAIMFLOW_GATEWAY_AUTH", "false")
    monkeypatch.setenv("CLAIMFLOW_GATEWAY_MLLP_ALLOWED_NETWORKS", '["10.20.0.0/16"]')
    monkeypatch.setenv("CLAIMFLOW_GATEWAY_HTTP_PORT", "9999")  # both: the new name wins
    gw = GatewaySettings().gateway
    assert (gw.http_port, gw.mllp_port, gw.auth) == (8080, 2575, False)
    assert gw.mllp_allowed_facilities == ["SUMMIT"]
    assert gw.mllp_allowed_networks == ["10.20.0.0/16"]
    assert gw.max_body_bytes == 10 * 1024 * 1024  # the rest at their defaults
    # from_base (what `claimflow service intake-gateway` does) reads them the same way.
    assert GatewaySettings.from_base(Settings()).gateway == gw
    # Validation names the setting, in either spelling.
    monkeypatch.setenv("CLAIMFLOW_GATEWAY_MLLP_TLS_CERT", "/etc/mllp/cert.pem")
    with pytest.raises(ValidationError, match="CLAIMFLOW_GATEWAY__MLLP_TLS_KEY"):
        GatewaySettings()
    monkeypatch.delenv("CLAIMFLOW_GATEWAY_MLLP_TLS_CERT")
    monkeypatch.setenv("CLAIMFLOW_GATEWAY_MLLP_ALLOWED_NETWORKS", "10.20.0.0/16")
    with pytest.raises(ValueError, match="CLAIMFLOW_GATEWAY_MLLP_ALLOWED_NETWORKS: a JSON list"):
        GatewaySettings()
    monkeypatch.setenv("CLAIMFLOW_GATEWAY__MLLP_ALLOWED_NETWORKS", '["not-a-network"]')
    with pytest.raises(ValidationError, match="not-a-network"):
        GatewaySettings()
