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
