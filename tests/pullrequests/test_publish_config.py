"""`targets[].publish` is validated at start like every key: each error names
the key, the value and what is allowed; the token is read then, never shown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.config import load_settings
from bridge.errors import ConfigError
from tests.test_config import ENV, base, write

pytestmark = pytest.mark.quick

TOKEN = "ghp_" + "T0kenValue" * 4
REPO = "https://github.com/acme/prod-agents.git"


def doc(pull: dict[str, Any] | None = None, **publish: Any) -> dict[str, Any]:
    d = base()
    pr = {"forge": "github", "auth": {"tokenEnv": "GITHUB_TOKEN"}, **(pull or {})}
    d["targets"][0].update(
        repo=REPO, publish={"mode": "pull-request", "pullRequest": pr, **publish}
    )
    return d


def load(tmp_path: Path, d: dict[str, Any]) -> Any:
    return load_settings(write(tmp_path, d), env={**ENV, "GITHUB_TOKEN": TOKEN})


def test_defaults_and_the_token_read_at_load(tmp_path: Path) -> None:
    target = load(tmp_path, doc()).targets[0]
    pull = target.publish.pull_request
    assert target.publish.mode == "pull-request" and pull is not None
    assert pull.head_branch == "gitops-bridge/main" and pull.granularity == "target"
    assert pull.auto_merge is None and not pull.draft and pull.api_url is None
    assert pull.auth.token is not None and pull.auth.token.reveal() == TOKEN
    assert TOKEN not in repr(target)
    # Push mode stays the default.
    assert load(tmp_path, base()).targets[0].publish.mode == "push"


INVALID = [
    ("mode", doc(mode="merge-request"), "merge-request"),
    ("forge", doc({"forge": "bitbucket"}), "bitbucket"),
    ("granularity", doc({"granularity": "cluster"}), "cluster"),
    ("autoMerge.method", doc({"autoMerge": {"method": "fast-forward"}}), "fast-forward"),
    ("autoMerge.method", doc({"forge": "gitlab", "autoMerge": {"method": "rebase"}}), "rebase"),
    ("auth", doc({"auth": {"tokenEnv": "A", "tokenFile": "/x"}}), "tokenFile"),
    ("appId", doc({"forge": "gitea", "auth": {"appId": "1"}}), "1"),
    ("headBranch", doc({"headBranch": "bad..name"}), "bad..name"),
    ("headBranch", doc({"headBranch": "ma"}), "ma"),
    ("apiUrl", doc({"apiUrl": "ftp://example.com"}), "ftp://example.com"),
    ("reviewers", doc({"reviewers": ["team:"]}), "team:"),
]


@pytest.mark.parametrize(("key", "d", "shown"), INVALID, ids=[f"{i[0]}-{i[2]}" for i in INVALID])
def test_invalid_values_name_key_value_and_allowed(
    tmp_path: Path, key: str, d: dict[str, Any], shown: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, d)
    text = str(info.value)
    assert key in text and shown in text and "allowed" in text
    assert TOKEN not in text


def test_a_missing_token_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="GITHUB_TOKEN"):
        load_settings(write(tmp_path, doc()), env=ENV)


def test_a_file_repo_cannot_be_proposed_to(tmp_path: Path) -> None:
    d = doc()
    d["targets"][0]["repo"] = "file:///srv/git/agents.git"
    with pytest.raises(ConfigError, match=r"publish\.mode: push"):
        load(tmp_path, d)


def test_two_targets_never_share_a_head_branch(tmp_path: Path) -> None:
    d = doc()
    d["targets"].append({**d["targets"][0], "namespace": "staging"})
    with pytest.raises(ConfigError, match="head branch of its own"):
        load(tmp_path, d)
