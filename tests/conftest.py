"""Shared fixtures. The embedded broker starts once per session, only for tests that
ask for it; every test gets its own topic prefix and consumer groups."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from shared_data import SHARED_DATA  # noqa: F401 - re-exported for tests

from pipeline.serde import VERIFY_DECODE_ENV, VERIFY_ENCODE_ENV, VERIFY_SPLICE_ENV

# Every record a stage writes with an input's bytes spliced in (``pipeline/serde.py``,
# ``Splicer``) is encoded field by field too and compared, in this process and in every
# service a test starts (they inherit the environment): a stage that changes a record it
# passes on fails loudly (``SpliceMismatch``) instead of sending the old bytes.
os.environ[VERIFY_SPLICE_ENV] = "1"
# Likewise every record read by a generated reader (``pipeline/avro_read.py``) is decoded
# by fastavro and the trusted build too and compared (``DecodeMismatch``).
os.environ[VERIFY_DECODE_ENV] = "1"
# ... and every record written by a generated writer (``pipeline/avro_write.py``) is written
# by fastavro too and compared (``EncodeMismatch``).
os.environ[VERIFY_ENCODE_ENV] = "1"


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    """A Kafka-compatible cluster: $KAFKA_BOOTSTRAP_SERVERS, or the embedded Tansu broker."""
    configured = os.environ.get("CLAIMFLOW_BOOTSTRAP_SERVERS") or os.environ.get(
        "KAFKA_BOOTSTRAP_SERVERS"
    )
    if configured:
        yield configured
        return
    from pipeline.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        yield broker.bootstrap


@pytest.fixture
def prefix() -> str:
    """A topic prefix unique to the test, so tests never see each other's records."""
    return f"t{uuid.uuid4().hex[:8]}."
