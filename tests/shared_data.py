"""Where the public reference files for tests live: never copied into the repository.

Looked up once: ``$CLAIMFLOW_TEST_DATA`` if set, else a ``shared/data`` folder (with its
SOURCES.md) beside the checkout or any folder above it. Tests that need a file are
skipped, with the path they looked for, when it is not there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _find() -> Path:
    configured = os.environ.get("CLAIMFLOW_TEST_DATA")
    if configured:
        return Path(configured)
    for folder in (REPO, *REPO.parents):
        candidate = folder / "shared" / "data"
        if (candidate / "SOURCES.md").is_file():
            return candidate
    return REPO.parent / "shared" / "data"


SHARED_DATA = _find()
AVAILABLE = (SHARED_DATA / "SOURCES.md").is_file()

requires_shared = pytest.mark.skipif(
    not AVAILABLE,
    reason=f"public reference files not found at {SHARED_DATA} (set CLAIMFLOW_TEST_DATA)",
)


def shared_text(relative: str) -> str:
    """A shared file's text, or '' when the files are absent (the test is skipped then)."""
    path = SHARED_DATA / relative
    return path.read_text() if path.is_file() else ""
