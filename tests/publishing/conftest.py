"""Fixtures for the git writer: real bare remotes, real clones, settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.config import GitSettings, Target
from bridge.publishing import TargetRepo
from tests.gitservers import bare_remote

AUTHOR = "GitOps Bridge Test"
EMAIL = "bridge@test.invalid"


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    return bare_remote(tmp_path / "remotes" / "agents.git")


@pytest.fixture
def git_settings(tmp_path: Path) -> GitSettings:
    return GitSettings(author_name=AUTHOR, author_email=EMAIL, workdir=tmp_path / "workdir")


@pytest.fixture
def target(remote: Path) -> Target:
    return Target(namespace="agents", repo=remote.as_uri())


@pytest.fixture
def open_repo(target: Target, git_settings: GitSettings) -> Iterator[Callable[..., TargetRepo]]:
    """open_repo(target=..., settings=..., **kwargs) -> TargetRepo, closed at teardown."""
    opened: list[TargetRepo] = []

    def factory(
        target: Target = target, settings: GitSettings = git_settings, **kwargs: Any
    ) -> TargetRepo:
        repo = TargetRepo(target, settings, **kwargs)
        opened.append(repo)
        return repo

    yield factory
    for repo in opened:
        repo.close()
