"""Changelog restore against the real embedded broker: a partition's store rebuilt from
its changelog up to a marker (not the end offset, which Tansu reports low), a store that
is current reads only what was written elsewhere since, and markers are never applied."""

from __future__ import annotations

from pathlib import Path

import pytest
from unit.factories import coded, encounter

from pipeline.changelog import Restorer, changelog_topic, ensure_changelog
from pipeline.kafka import ensure_topics, make_producer
from pipeline.serde import registry
from pipeline.settings import Settings
from services.validation.app import BY_PATIENT
from services.validation.duplicates import DuplicateStore

pytestmark = pytest.mark.broker
TOPIC = changelog_topic("validation", DuplicateStore.NAME)


def write(producer: object, settings: Settings, partition: int, first: int, count: int) -> None:
    """``count`` encounters recorded by some other instance, on its changelog partition."""
    store = DuplicateStore(":memory:", changelog=True)
    for n in range(first, first + count):
        store.record(coded(encounter(encounter_id=f"ENC-{n}")), "clean")
    for key, value in store.take_changes():
        producer.produce(  # type: ignore[attr-defined]
            settings.topic(TOPIC), key=key.encode(), value=value, partition=partition
        )
    assert producer.flush(30) == 0  # type: ignore[attr-defined]


def rows(store: DuplicateStore) -> list[str]:
    return [r[0] for r in store.db.execute("SELECT encounter_id FROM seen ORDER BY 1")]


def test_a_partition_is_restored_to_the_marker_then_caught_up(
    bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    settings = Settings(topic_prefix=prefix, group_prefix=prefix.rstrip("."))
    ensure_topics(bootstrap, settings, registry())
    partitions = ensure_changelog(bootstrap, settings, BY_PATIENT, TOPIC)
    assert partitions == registry().topics[BY_PATIENT].partitions
    producer = make_producer(bootstrap, settings)
    write(producer, settings, partition=1, first=0, count=300)
    write(producer, settings, partition=0, first=1000, count=5)  # another partition's state
    restorer = Restorer(bootstrap, settings, producer)
    try:
        store = DuplicateStore(tmp_path / "p1.sqlite3", changelog=True)
        first = restorer.restore(store, TOPIC, 1)
        assert (first.start, first.applied) == (0, 300)
        assert rows(store) == sorted(f"ENC-{n}" for n in range(300))
        assert store.take_changes() == []  # what a restore writes is not logged again
        assert store.position() == 301  # 300 changes and the marker

        write(producer, settings, partition=1, first=300, count=7)
        again = restorer.restore(store, TOPIC, 1)
        assert (again.start, again.applied) == (301, 7)  # from after the first marker
        assert len(rows(store)) == 307

        store.close()
        reopened = DuplicateStore(tmp_path / "p1.sqlite3", changelog=True)
        assert restorer.restore(reopened, TOPIC, 1).applied == 0  # current: nothing to read
        assert len(rows(reopened)) == 307
        reopened.close()
        # A new instance, empty folder: every change, and none of the three markers.
        fresh = DuplicateStore(tmp_path / "fresh-p1.sqlite3", changelog=True)
        assert restorer.restore(fresh, TOPIC, 1).applied == 307
        assert rows(fresh) == rows(DuplicateStore(tmp_path / "p1.sqlite3"))
        fresh.close()
    finally:
        restorer.close()
