"""Shared fixtures. Everything here is real: processes, sockets, repos."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.crds import build_schema_dir


@pytest.fixture(scope="session")
def crd_schema_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """JSON schemas made by the real import from the hand-made CRDs in tests/crds:
    present in every checkout, unlike ../shared/schemas."""
    return build_schema_dir(tmp_path_factory.mktemp("crd-schemas"))
