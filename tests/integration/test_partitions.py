"""``CLAIMFLOW_PARTITIONS``: the partition count a deployment creates its topics with
(`claimflow run` uses 1 on the embedded broker), and a stage that keeps state by partition
refusing to start on topics of another count (claims' control numbers are owned by
partition: a count it did not start with would lose acknowledgments silently)."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from pipeline.kafka import client_config, ensure_topics
from pipeline.serde import registry
from pipeline.settings import Settings
from pipeline.stage import Runner
from services.claims.adapters import Router
from services.claims.app import ClaimsStage, encounter_partitions
from services.claims.settings import ClaimsSettings

pytestmark = pytest.mark.broker


def counts(bootstrap: str, settings: Settings, names: list[str]) -> dict[str, int]:
    meta = AdminClient(client_config(bootstrap, settings)).list_topics(timeout=10).topics
    return {n: len(meta[settings.topic(n)].partitions) for n in names}


def test_every_topic_is_created_with_the_deployments_count(bootstrap: str, prefix: str) -> None:
    settings = Settings(topic_prefix=prefix, group_prefix=prefix.rstrip("."), partitions=1)
    names = list(registry().topics)
    ensure_topics(bootstrap, settings, registry())
    assert set(counts(bootstrap, settings, names).values()) == {1}
    assert encounter_partitions(settings) == 1
    assert encounter_partitions() == registry().topics["encounters.validated.v1"].partitions


def test_a_stage_keeping_state_by_partition_stops_on_another_count(
    bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    base = Settings(topic_prefix=prefix, group_prefix=prefix.rstrip("."))
    ensure_topics(bootstrap, base, registry())  # topics.yaml's count
    made = registry().topics["encounters.validated.v1"].partitions
    settings = ClaimsSettings(
        topic_prefix=prefix,
        group_prefix=prefix.rstrip("."),
        partitions=made + 1,
        state_dir=tmp_path,
    )
    runner = Runner(ClaimsStage(settings, None, Router({}, {})), settings, bootstrap)
    with pytest.raises(
        ValueError, match=f"has {made} partitions, this deployment expects {made + 1}"
    ):
        runner.run()
    # the changelog made before it stopped followed its source topic, as before
    meta = AdminClient(client_config(bootstrap, settings)).list_topics(timeout=10).topics
    made_logs = [t for t in meta if t.startswith(settings.topic("claims.")) and "changelog" in t]
    assert made_logs and {len(meta[t].partitions) for t in made_logs} == {made}
