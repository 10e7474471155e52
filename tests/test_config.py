"""Configuration (SPEC §4): typed, validated at load; every error names the key,
the value and what is allowed, exits 2, and never shows the API key."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import RenderSettings, load_settings
from bridge.errors import ConfigError

pytestmark = pytest.mark.quick  # needs nothing beside the checkout: run in a fresh clone

API_KEY = "lsv2_pt_" + secrets.token_hex(16)  # made at run time, never a real key
ENV = {"LANGSMITH_API_KEY": API_KEY, "GITOPS_BRIDGE_KEY": "k" * 64}
LISTENER = "6f9619ff-8b86-d011-b42d-00c04fc964ff"


def base() -> dict[str, Any]:
    return {
        "controlPlane": {"url": "https://api.host.langchain.com", "listenerId": LISTENER},
        "targets": [{"namespace": "agents", "repo": "file:///srv/git/agents.git"}],
    }


def write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_defaults_and_types(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, base()), env=ENV)
    assert s.control_plane.poll_interval == 15 and s.control_plane.timeout == 10
    assert s.control_plane.api_key.reveal() == API_KEY
    assert API_KEY not in repr(s) and API_KEY not in str(s.control_plane)
    assert s.targets[0].branch == "main" and s.targets[0].path == ""
    assert s.secrets.provider == "none"


def test_control_plane_bounds_have_defaults_and_env_overrides(tmp_path: Path) -> None:
    cp = load_settings(write(tmp_path, base()), env=ENV).control_plane
    assert (cp.timeout, cp.cycle_timeout, cp.max_response_mb, cp.max_deployments) == (
        10,
        300,
        8,
        50_000,
    )
    env = {
        **ENV,
        "BRIDGE_CONTROL_PLANE_CYCLE_TIMEOUT": "60",
        "BRIDGE_CONTROL_PLANE_MAX_RESPONSE_MB": "16",
        "BRIDGE_CONTROL_PLANE_MAX_DEPLOYMENTS": "200000",
    }
    cp = load_settings(write(tmp_path, base()), env=env).control_plane
    assert (cp.cycle_timeout, cp.max_response_mb, cp.max_deployments) == (60, 16, 200_000)


def test_env_overrides(tmp_path: Path) -> None:
    env = {
        **ENV,
        "BRIDGE_CONTROL_PLANE_POLL_INTERVAL": "30",
        "BRIDGE_SECRETS_PROVIDER": "sops",
        "BRIDGE_SECRETS_SOPS_AGE_RECIPIENTS": "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq",
        "BRIDGE_TARGETS": '[{"namespace": "x", "repo": "file:///r.git", "branch": "prod"}]',
    }
    s = load_settings(write(tmp_path, base()), env=env)
    assert s.control_plane.poll_interval == 30
    assert s.secrets.provider == "sops" and len(s.secrets.age_recipients) == 1
    assert [(t.namespace, t.branch) for t in s.targets] == [("x", "prod")]


INVALID = [
    ("controlPlane.url", {"controlPlane": {"url": "ftp://x"}}, "ftp://x"),
    ("controlPlane.listenerId", {"controlPlane": {"listenerId": "nope"}}, "nope"),
    ("controlPlane.pollInterval", {"controlPlane": {"pollInterval": 0}}, "0"),
    ("controlPlane.timeout", {"controlPlane": {"timeout": "soon"}}, "soon"),
    ("controlPlane.cycleTimeout", {"controlPlane": {"cycleTimeout": 0}}, "0"),
    ("controlPlane.cycleTimeout", {"controlPlane": {"timeout": 30, "cycleTimeout": 20}}, "20"),
    ("controlPlane.maxResponseMb", {"controlPlane": {"maxResponseMb": 0}}, "0"),
    ("controlPlane.maxResponseMb", {"controlPlane": {"maxResponseMb": 1.5}}, "1.5"),
    ("controlPlane.maxResponseMb", {"controlPlane": {"maxResponseMb": 4096}}, "4096"),
    ("controlPlane.maxDeployments", {"controlPlane": {"maxDeployments": 0}}, "0"),
    ("controlPlane.maxDeployments", {"controlPlane": {"maxDeployments": "many"}}, "many"),
    (
        "controlPlane.listenerId",
        {"controlPlane": {"listenerId": LISTENER + "\n"}},
        repr(LISTENER + "\n"),
    ),
    ("targets", {"targets": []}, "allowed"),
    ("targets[0].namespace", {"targets": [{"namespace": "../x", "repo": "file:///r"}]}, "../x"),
    ("git.authorEmail", {"git": {"authorEmail": "not an email"}}, "not an email"),
    ("git.signing.format", {"git": {"signing": {"format": "pgp"}}}, "pgp"),
    ("secrets.provider", {"secrets": {"provider": "vault"}}, "vault"),
    ("render.nJobsPerWorker", {"render": {"nJobsPerWorker": 0}}, "0"),
    ("render.schemaDir", {"render": {"schemaDir": "/nonexistent/schemas"}}, "/nonexistent/schemas"),
    ("bogusKey", {"bogusKey": 1}, "unknown key"),
]


def merge(doc: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(doc.get(k), dict):
            merge(doc[k], v)
        else:
            doc[k] = v
    return doc


@pytest.mark.parametrize(("key", "patch", "shown"), INVALID, ids=[i[0] for i in INVALID])
def test_every_invalid_value_names_key_value_and_allowed(
    tmp_path: Path, key: str, patch: dict[str, Any], shown: str
) -> None:
    path = write(tmp_path, merge(base(), patch))
    with pytest.raises(ConfigError) as info:
        load_settings(path, env=ENV)
    text = str(info.value)
    assert f"`{key}`" in text or key.split(".")[0] in text
    assert shown in text
    assert "allowed" in text
    assert API_KEY not in text


def test_render_schema_dir_must_be_an_existing_directory(tmp_path: Path) -> None:
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    doc = merge(base(), {"render": {"schemaDir": str(schemas)}})
    assert load_settings(write(tmp_path, doc), env=ENV).render.schema_dir == schemas
    assert load_settings(write(tmp_path, base()), env=ENV).render.schema_dir is None
    env = {**ENV, "BRIDGE_RENDER_SCHEMA_DIR": str(schemas)}
    assert load_settings(write(tmp_path, base()), env=env).render.schema_dir == schemas
    a_file = tmp_path / "bridge.yaml"
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, base()), env={**ENV, "BRIDGE_RENDER_SCHEMA_DIR": str(a_file)})
    assert "`render.schemaDir` has value '" in str(info.value)  # shortened past 80 chars
    assert f"{a_file} is not a directory" in str(info.value)  # the whole path, always
    assert "gitops-bridge schemas import" in str(info.value)
    assert "BRIDGE_RENDER_SCHEMA_DIR" in str(info.value)
    # Every state file's input digest holds repr(RenderSettings): where the schemas
    # are must not change it (that would re-commit every deployment once).
    assert repr(RenderSettings(schema_dir=schemas)) == repr(RenderSettings())


def test_missing_api_key_names_the_env_var(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="LANGSMITH_API_KEY"):
        load_settings(write(tmp_path, base()), env={})


def test_cli_exits_2_and_never_prints_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, merge(base(), {"controlPlane": {"pollInterval": -5}}))
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "deployments", "--config", str(path)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **ENV},
        check=False,
    )
    assert done.returncode == 2
    assert "controlPlane.pollInterval" in done.stderr and "-5" in done.stderr
    assert API_KEY not in done.stdout + done.stderr


# --- policy.massDelete (issue #17) ---------------------------------------------


def test_mass_delete_guard_defaults_and_env_overrides(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, base()), env=ENV)
    assert (s.policy.mass_delete_fraction, s.policy.mass_delete_min) == (0.5, 3)
    env = {
        **ENV,
        "BRIDGE_POLICY_MASS_DELETE_FRACTION": "1",
        "BRIDGE_POLICY_MASS_DELETE_MIN": "10",
    }
    s = load_settings(write(tmp_path, base()), env=env)
    assert (s.policy.mass_delete_fraction, s.policy.mass_delete_min) == (1.0, 10)
    doc = merge(base(), {"policy": {"massDelete": {"fraction": 0.25, "min": 1}}})
    s = load_settings(write(tmp_path, doc), env=ENV)
    assert (s.policy.mass_delete_fraction, s.policy.mass_delete_min) == (0.25, 1)


MASS_DELETE_INVALID = [
    ("policy.massDelete.fraction", 0, "0"),
    ("policy.massDelete.fraction", -0.5, "-0.5"),
    ("policy.massDelete.fraction", 1.5, "1.5"),
    ("policy.massDelete.fraction", "half", "'half'"),
    ("policy.massDelete.fraction", True, "True"),
    ("policy.massDelete.min", 0, "0"),
    ("policy.massDelete.min", -3, "-3"),
    ("policy.massDelete.min", 2.5, "2.5"),
    ("policy.massDelete.min", "three", "'three'"),
]


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    MASS_DELETE_INVALID,
    ids=[f"{k}={v!r}" for k, v, _ in MASS_DELETE_INVALID],
)
def test_mass_delete_keys_are_validated(tmp_path: Path, key: str, value: Any, shown: str) -> None:
    leaf = key.rsplit(".", 1)[1]
    path = write(tmp_path, merge(base(), {"policy": {"massDelete": {leaf: value}}}))
    with pytest.raises(ConfigError) as info:
        load_settings(path, env=ENV)
    text = str(info.value)
    assert f"`{key}` has value {shown};" in text
    assert "allowed: " in text
    assert ("a number" if leaf == "fraction" else "an integer") in text
    assert info.value.exit_code == 2


def test_mass_delete_env_value_is_validated_and_the_cli_exits_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "deployments", "--config", str(write(tmp_path, base()))],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **ENV, "BRIDGE_POLICY_MASS_DELETE_FRACTION": "2"},
        check=False,
    )
    assert done.returncode == 2
    assert "`policy.massDelete.fraction` has value 2" in done.stderr
    assert "BRIDGE_POLICY_MASS_DELETE_FRACTION" in done.stderr
    assert "at most 1" in done.stderr
    assert API_KEY not in done.stdout + done.stderr


# --- a password in a repo URL (issue #20) ----------------------------------------

URL_PASSWORD = "Pw-" + secrets.token_hex(8)
PASSWORD_URLS = [
    f"https://bot:{URL_PASSWORD}@git.example.com/agents.git",
    f"http://bot:{URL_PASSWORD}@127.0.0.1:8080/agents.git",
    f"ssh://git:{URL_PASSWORD}@git.example.com:2222/agents.git",
    f"file://me:{URL_PASSWORD}@/srv/git/agents.git",
    f"ftp://me:{URL_PASSWORD}@git.example.com/agents.git",  # a bad scheme: still not shown
    f"me:{URL_PASSWORD}@git.example.com:agents.git",  # scp-like: still not shown
]


@pytest.mark.parametrize("url", PASSWORD_URLS, ids=lambda u: u.split(":", 1)[0])
def test_a_password_in_a_repo_url_is_refused_for_every_scheme_and_never_shown(
    tmp_path: Path, url: str
) -> None:
    doc = merge(base(), {"targets": [{"namespace": "agents", "repo": url}]})
    for env in (ENV, {**ENV, "BRIDGE_TARGETS": f'[{{"namespace": "x", "repo": "{url}"}}]'}):
        with pytest.raises(ConfigError) as info:
            load_settings(write(tmp_path, doc), env=env)
        text = str(info.value)
        assert "repo" in text and URL_PASSWORD not in text
        if "@git.example.com/" in url or url.startswith(("ssh", "file", "http")):
            assert "password" in text


def test_a_user_without_password_in_a_repo_url_is_accepted(tmp_path: Path) -> None:
    url = "ssh://git@git.example.com:2222/agents.git"
    doc = merge(base(), {"targets": [{"namespace": "agents", "repo": url}]})
    assert load_settings(write(tmp_path, doc), env=ENV).targets[0].repo == url
