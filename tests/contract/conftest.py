"""The contract tests' corpus: the records the offline chain writes."""

from __future__ import annotations

import pytest

from bench.chain import offline_chain
from pipeline.models import Model


@pytest.fixture(scope="session")
def chain() -> dict[str, list[Model]]:
    """Every record the offline chain writes for 40 simulated encounters, by topic."""
    return offline_chain(40, seed=11)
