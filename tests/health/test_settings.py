"""`health:` settings: each source optional, every error names key, value and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.errors import ConfigError
from bridge.health.settings import (
    HealthSettings,
    env_name,
    health_settings,
)

pytestmark = pytest.mark.quick

ENV = {
    "ARGOCD_TOKEN": "argocd-token-value",
    "FLUX_WEBHOOK_TOKEN": "f" * 40,
    "ARGOCD_NOTIFY_TOKEN": "n" * 32,
}


def load(raw: Any, env: dict[str, str] | None = None, **kw: Any) -> HealthSettings:
    return health_settings(raw, env=ENV if env is None else env, source="bridge.yaml", **kw)


def test_absent_means_no_read_back() -> None:
    assert load(None) == HealthSettings()
    assert not load(None).enabled
    assert not load({}).enabled


def test_the_spec_example_loads_with_secrets_redacted() -> None:
    settings = load(
        {
            "argocd": {
                "url": "https://argocd.example.com/",
                "tokenEnv": "ARGOCD_TOKEN",
                "caFile": None,
                "appNamespace": None,
                "mode": "poll",
            },
            "flux": {"webhookSecretEnv": "FLUX_WEBHOOK_TOKEN"},
            "argocdNotifications": {"tokenEnv": "ARGOCD_NOTIFY_TOKEN"},
        }
    )
    assert settings.argocd is not None and settings.flux and settings.argocd_notifications
    assert settings.argocd.url == "https://argocd.example.com"
    assert settings.argocd.mode == "poll"
    assert settings.argocd.token is not None
    assert settings.argocd.token.reveal() == "argocd-token-value"
    assert settings.flux.webhook_secret.reveal() == "f" * 40
    shown = repr(settings) + str(settings)
    for secret in ENV.values():
        assert secret not in shown


def test_token_file_and_ca_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("eyJhbGciOi.jwt.value\n")
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = load(
        {
            "argocd": {
                "url": "https://argocd.internal:8443",
                "tokenFile": str(token),
                "caFile": str(ca),
                "appNamespace": "argocd",
                "mode": "stream",
            }
        }
    )
    assert settings.argocd is not None
    assert settings.argocd.token is None and settings.argocd.token_file == token
    assert settings.argocd.ca_file == ca and settings.argocd.mode == "stream"


@pytest.mark.parametrize(
    ("raw", "key", "value", "allowed"),
    [
        (
            {"argocd": {"url": "ftp://x", "tokenEnv": "ARGOCD_TOKEN"}},
            "health.argocd.url",
            "'ftp://x'",
            "http:// or https://",
        ),
        (
            {"argocd": {"tokenEnv": "ARGOCD_TOKEN"}},
            "health.argocd.url",
            "None",
            "http:// or https://",
        ),
        (
            {"argocd": {"url": "https://a:b@argocd", "tokenEnv": "ARGOCD_TOKEN"}},
            "health.argocd.url",
            "'<url with credentials>'",
            "without user info",
        ),
        (
            {"argocd": {"url": "https://argocd", "tokenEnv": "ARGOCD_TOKEN", "mode": "push"}},
            "health.argocd.mode",
            "'push'",
            "poll or stream",
        ),
        (
            {
                "argocd": {
                    "url": "https://argocd",
                    "tokenEnv": "ARGOCD_TOKEN",
                    "appNamespace": "Argo CD",
                }
            },
            "health.argocd.appNamespace",
            "'Argo CD'",
            "namespace",
        ),
        (
            {"argocd": {"url": "https://argocd"}},
            "health.argocd.tokenEnv",
            "None",
            "environment variable",
        ),
        (
            {"argocd": {"url": "https://argocd", "tokenEnv": "not a name"}},
            "health.argocd.tokenEnv",
            "'not a name'",
            "environment variable name",
        ),
        (
            {
                "argocd": {
                    "url": "https://argocd",
                    "tokenEnv": "ARGOCD_TOKEN",
                    "caFile": "/nonexistent/ca.pem",
                }
            },
            "health.argocd.caFile",
            "'/nonexistent/ca.pem'",
            "an existing file",
        ),
        (
            {"flux": {"webhookSecretEnv": 12}},
            "health.flux.webhookSecretEnv",
            "'12'",
            "environment variable name",
        ),
        ({"flux": "FLUX_WEBHOOK_TOKEN"}, "health.flux", "'FLUX_WEBHOOK_TOKEN'", "a mapping"),
    ],
)
def test_errors_name_key_value_and_what_is_allowed(
    raw: Any, key: str, value: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(raw)
    text = str(caught.value)
    assert text.startswith(f"bridge.yaml: key `{key}` has value {value}; allowed: "), text
    assert allowed in text
    assert env_name(key) in text  # the hint names the env override, as bridge/config.py does


def test_unknown_keys_are_named_with_what_is_allowed() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown key `health.argocd.token`; allowed here: `health.argocd.url`"
    ):
        load({"argocd": {"url": "https://argocd", "token": "inline!"}})
    with pytest.raises(ConfigError, match=r"unknown key `health.prometheus`"):
        load({"prometheus": {}})


def test_both_token_sources_is_an_error(tmp_path: Path) -> None:
    token = tmp_path / "t"
    token.write_text("x" * 20)
    with pytest.raises(ConfigError, match=r"`health.argocd.tokenFile`.*one of the two"):
        load(
            {
                "argocd": {
                    "url": "https://argocd",
                    "tokenEnv": "ARGOCD_TOKEN",
                    "tokenFile": str(token),
                }
            }
        )


@pytest.mark.parametrize("content", ["", "two words\n", "\xff\xfe"])
def test_a_token_file_without_a_token_is_refused(tmp_path: Path, content: str) -> None:
    token = tmp_path / "t"
    token.write_bytes(content.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"health.argocd.tokenFile"):
        load({"argocd": {"url": "https://argocd", "tokenFile": str(token)}})


def test_unset_secret_names_the_variable_and_short_secrets_are_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"FLUX_WEBHOOK_TOKEN named by `health.flux.webhookSecretEnv` is not set"
    ):
        load({"flux": {"webhookSecretEnv": "FLUX_WEBHOOK_TOKEN"}}, env={})
    with pytest.raises(
        ConfigError, match=r"has 5 characters; allowed: 16 characters or more"
    ) as caught:
        load({"argocdNotifications": {"tokenEnv": "T"}}, env={"T": "short"})
    assert "short" not in str(caught.value)
    # Commands that start no source may run without the secrets.
    relaxed = load(
        {"flux": {"webhookSecretEnv": "FLUX_WEBHOOK_TOKEN"}}, env={}, require_secrets=False
    )
    assert relaxed.flux is not None and not relaxed.flux.webhook_secret


def test_schema_is_in_the_config_leaf_format() -> None:
    from bridge.health.settings import SCHEMA

    def leaves(tree: dict[str, Any]) -> list[tuple[str, Any]]:
        out = []
        for key, sub in tree.items():
            out += (
                [(f"{key}.{k}", v) for k, v in leaves(sub)]
                if isinstance(sub, dict)
                else [(key, sub)]
            )
        return out

    for path, leaf in leaves(SCHEMA):
        assert isinstance(leaf, tuple) and leaf[0] in ("str", "path", "bool"), path
    assert (
        env_name("health.argocdNotifications.tokenEnv")
        == "BRIDGE_HEALTH_ARGOCD_NOTIFICATIONS_TOKEN_ENV"
    )


@pytest.mark.parametrize(
    ("raw", "expected"), [(True, True), (False, False), ("true", True), (None, False)]
)
def test_forge_statuses_is_a_switch(raw: Any, expected: bool) -> None:
    settings = load({"forgeStatuses": raw})
    assert settings.forge_statuses is expected and settings.enabled is expected


@pytest.mark.parametrize("raw", ["yes", 1, [], {"on": True}])
def test_forge_statuses_refuses_anything_else(raw: Any) -> None:
    with pytest.raises(ConfigError, match=r"health\.forgeStatuses.*true or false"):
        load({"forgeStatuses": raw})


def test_forge_statuses_needs_a_pull_request_target(tmp_path: Path) -> None:
    """Checked at start with every key: only a pull-request target has a forge token."""
    from bridge.config import load_settings
    from bridge.formats.canonical_yaml import dumps

    config = tmp_path / "bridge.yaml"
    config.write_text(
        dumps(
            {
                "controlPlane": {
                    "url": "https://api.example.com",
                    "apiKeyEnv": "KEY",
                    "listenerId": "11111111-2222-3333-4444-555555555555",
                },
                "targets": [{"namespace": "agents", "repo": "https://git.example.com/a/b.git"}],
                "git": {"workdir": str(tmp_path / "work")},
                "health": {"forgeStatuses": True},
            }
        )
    )
    with pytest.raises(ConfigError, match=r"forgeStatuses.*pull-request"):
        load_settings(config, env={"KEY": "k" * 20}, require_bridge_key=False)
