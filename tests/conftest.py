"""Shared fixtures. Everything here is real: processes, sockets, repos."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import sopstools
from tests.crds import build_schema_dir


@pytest.fixture(scope="session", autouse=True)
def every_sops_file_decrypts_with_the_real_sops() -> Iterator[None]:
    """The bridge writes SOPS's format itself: every file any test made it write
    must decrypt, MAC checked, with the real `sops` binary to its exact Secret."""
    with sopstools.recording():
        yield
    checked, problems = sopstools.check_recorded()
    assert not problems, (
        f"{len(problems)} of {checked} SOPS files fail `sops --decrypt`: {problems[:5]}"
    )


@pytest.fixture(scope="session")
def crd_schema_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """JSON schemas made by the real import from the hand-made CRDs in tests/crds:
    present in every checkout, unlike ../shared/schemas."""
    return build_schema_dir(tmp_path_factory.mktemp("crd-schemas"))


@pytest.fixture(autouse=True)
def collected_as_usual() -> Iterator[None]:
    """A `run` loop run in-process freezes what is alive between its cycles
    (bridge.commands.run.collect_between_cycles); later tests collect as usual."""
    yield
    gc.unfreeze()
