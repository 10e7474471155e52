"""Fixtures for the examples/ and `gitops-bridge bootstrap` tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.examples.support import SCHEMA_DIR


@pytest.fixture
def schema_dir() -> Path:
    if not SCHEMA_DIR.is_dir():
        pytest.skip(f"CRD schemas not found at {SCHEMA_DIR} (../shared/schemas beside the repo)")
    return SCHEMA_DIR
