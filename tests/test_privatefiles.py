"""bridge.privatefiles: created 0600 whatever the umask; never through a planted link."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.privatefiles import create_private, narrow, write_private

pytestmark = pytest.mark.quick


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_write_private_replaces_a_wider_file(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "status.json"
    path.write_text("old")
    path.chmod(0o666)
    write_private(path, b"new")
    assert path.read_bytes() == b"new" and mode(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # no temporary left


def test_create_private_makes_or_narrows(tmp_path: Path, open_umask: None) -> None:
    made = tmp_path / "new.db"
    assert create_private(made) is True and mode(made) == 0o600
    old = tmp_path / "old.db"
    old.write_bytes(b"data")
    old.chmod(0o644)
    assert create_private(old) is False
    assert mode(old) == 0o600 and old.read_bytes() == b"data"


def test_narrow_never_follows_a_link(tmp_path: Path) -> None:
    other = tmp_path / "someone-elses"
    other.write_text("x")
    other.chmod(0o644)
    link = tmp_path / "db-wal"
    link.symlink_to(other)
    narrow(link)
    narrow(tmp_path / "missing")
    assert mode(other) == 0o644
