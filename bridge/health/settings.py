"""Settings of the health read-back (`health:` in bridge.yaml, SPEC §4 and §8).

Owns the three optional sources' settings and their validation: every error is
a ConfigError naming the key, the value and what is allowed, worded as
bridge/config/ words its own. Secrets (the Argo CD token, the Flux webhook
secret, the Argo CD notifications token) are read from environment variables
or a file whose *names* the config gives, and are held only as `Redacted`.

Must not import bridge.config (bridge/config/sections.py imports this), nor
touch the network: a token file is read here only to check it, and again by
the Argo CD client before each connection, so a rotated token is picked up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from bridge.errors import ConfigError
from bridge.redaction import Redacted

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# A shared secret shorter than this is guessable offline from one signed body.
MIN_SECRET_CHARS = 16
MAX_TOKEN_FILE_BYTES = 64 * 1024  # a JWT is a few KB; anything bigger is not a token

# The key tree in bridge/config/schema.py's leaf format (kind, default): it is
# SCHEMA["health"] there, so unknown keys and BRIDGE_HEALTH_* env overrides
# work as for every other key.
SCHEMA: dict[str, Any] = {
    "argocd": {
        "url": ("str", None),
        "tokenEnv": ("str", None),
        "tokenFile": ("path", None),
        "caFile": ("path", None),
        "appNamespace": ("str", None),
        "mode": ("str", "poll"),
    },
    "flux": {"webhookSecretEnv": ("str", None)},
    "argocdNotifications": {"tokenEnv": ("str", None)},
    "forgeStatuses": ("bool", False),
}


@dataclass(frozen=True)
class ArgoCDSettings:
    """The Argo CD API server, read with a token of `applications, get` only."""

    url: str
    token_env: str | None = None
    token_file: Path | None = None
    # From `token_env` at load; None when the token is in `token_file`.
    token: Redacted | None = None
    ca_file: Path | None = None
    app_namespace: str | None = None
    mode: Literal["poll", "stream"] = "poll"


@dataclass(frozen=True)
class FluxSettings:
    """`POST /hooks/flux`: events of a notification-controller `generic-hmac` Provider."""

    webhook_secret_env: str
    webhook_secret: Redacted


@dataclass(frozen=True)
class ArgoCDNotificationsSettings:
    """`POST /hooks/argocd`: Argo CD notifications' webhook with a bearer token."""

    token_env: str
    token: Redacted


@dataclass(frozen=True)
class HealthSettings:
    argocd: ArgoCDSettings | None = None
    flux: FluxSettings | None = None
    argocd_notifications: ArgoCDNotificationsSettings | None = None
    # Commit statuses on the forge of pull-request targets (their forge token).
    # Opt-in: the token may lack the read permission, and each read spends the
    # forge's rate limit that the pull requests need.
    forge_statuses: bool = False

    @property
    def enabled(self) -> bool:
        return any((self.argocd, self.flux, self.argocd_notifications, self.forge_statuses))


def env_name(path: str) -> str:
    """`health.argocd.tokenEnv` -> `BRIDGE_HEALTH_ARGOCD_TOKEN_ENV` (as bridge/config/schema.py)."""
    parts = [re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", p).upper() for p in path.split(".")]
    return "BRIDGE_" + "_".join(parts)


def _describe(value: Any) -> str:
    text = repr(str(value) if isinstance(value, Path) else value)
    return text if len(text) <= 80 else text[:77] + "..."


class _Keys:
    """Reads `health.*` out of a raw mapping; every error names the key."""

    def __init__(self, source: str, env: Mapping[str, str], require_secrets: bool) -> None:
        self.source = source
        self.env = env
        self.require_secrets = require_secrets

    def error(self, path: str, value: Any, allowed: str) -> ConfigError:
        return ConfigError(
            f"{self.source}: key `{path}` has value {_describe(value)}; allowed: {allowed}",
            hint=f"set it in the file or with {env_name(path)}",
        )

    def section(self, raw: Any, path: str, keys: Mapping[str, Any]) -> Mapping[str, Any] | None:
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            raise self.error(path, raw, "a mapping")
        for key in raw:
            if key not in keys:
                allowed = ", ".join(f"`{path}.{k}`" for k in keys)
                raise ConfigError(
                    f"{self.source}: unknown key `{path}.{key}`; allowed here: {allowed}"
                )
        return raw

    def text(self, node: Mapping[str, Any], path: str) -> str | None:
        value = node.get(path.rsplit(".", 1)[1])
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.error(path, value, "a string")
        return str(value)

    def file(self, node: Mapping[str, Any], path: str, what: str) -> Path | None:
        value = node.get(path.rsplit(".", 1)[1])
        if value is None:
            return None
        if not isinstance(value, str | Path) or not str(value):
            raise self.error(path, value, "a file path")
        found = Path(value).expanduser()
        if not found.is_file():
            state = "does not exist" if not found.exists() else "is not a file"
            raise self.error(path, str(found), f"an existing file with {what} ({found} {state})")
        return found

    def secret(self, path: str, env_var: str | None, *, what: str) -> Redacted | None:
        if env_var is None:
            raise self.error(path, None, f"the name of the environment variable that holds {what}")
        if not ENV_NAME.match(env_var):
            raise self.error(path, env_var, "an environment variable name")
        value = self.env.get(env_var, "")
        if not value:
            if not self.require_secrets:
                return None
            raise ConfigError(
                f"{self.source}: the environment variable {env_var} named by `{path}` "
                "is not set or empty",
                hint=f"export {env_var}=<{what}> before starting the bridge",
            )
        return Redacted(value.strip())


def health_settings(
    raw: Any,
    *,
    env: Mapping[str, str],
    source: str = "<config>",
    require_secrets: bool = True,
) -> HealthSettings:
    """HealthSettings from the raw `health:` mapping (None: no read-back at all).

    `require_secrets=False` (commands that never start a source, e.g. `validate`)
    accepts an unset environment variable; everything else is checked alike.
    """
    keys = _Keys(source, env, require_secrets)
    node = keys.section(raw, "health", SCHEMA)
    if node is None:
        return HealthSettings()
    return HealthSettings(
        argocd=_argocd(keys, node.get("argocd")),
        flux=_flux(keys, node.get("flux")),
        argocd_notifications=_notifications(keys, node.get("argocdNotifications")),
        forge_statuses=_flag(keys, node.get("forgeStatuses"), "health.forgeStatuses"),
    )


def _flag(keys: _Keys, value: Any, path: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"  # from a BRIDGE_* environment override
    raise keys.error(path, value, "true or false")


def _argocd(keys: _Keys, raw: Any) -> ArgoCDSettings | None:
    node = keys.section(raw, "health.argocd", SCHEMA["argocd"])
    if node is None:
        return None
    url = keys.text(node, "health.argocd.url")
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise keys.error(
            "health.argocd.url", url, "the http:// or https:// URL of the Argo CD API server"
        )
    if parts.username is not None or parts.password is not None:
        raise keys.error("health.argocd.url", "<url with credentials>", "a URL without user info")
    if parts.query or parts.fragment:
        raise keys.error("health.argocd.url", url, "a URL without query or fragment")
    token_env = keys.text(node, "health.argocd.tokenEnv")
    token_file = keys.file(node, "health.argocd.tokenFile", "the Argo CD token")
    token = None
    if token_env is not None and token_file is not None:
        raise keys.error(
            "health.argocd.tokenFile",
            str(token_file),
            "null when `health.argocd.tokenEnv` is set (one of the two)",
        )
    if token_file is not None:
        read_token_file(token_file, key="health.argocd.tokenFile", source=keys.source)
    else:
        token = keys.secret("health.argocd.tokenEnv", token_env, what="an Argo CD API token")
    ca_file = keys.file(node, "health.argocd.caFile", "PEM certificates")
    namespace = keys.text(node, "health.argocd.appNamespace")
    if namespace is not None and not DNS_LABEL.match(namespace):
        raise keys.error(
            "health.argocd.appNamespace", namespace, "a Kubernetes namespace name or null"
        )
    mode = keys.text(node, "health.argocd.mode") or "poll"
    if mode not in ("poll", "stream"):
        raise keys.error("health.argocd.mode", mode, "poll or stream")
    return ArgoCDSettings(
        url=url.rstrip("/") if url else "",
        token_env=token_env,
        token_file=token_file,
        token=token,
        ca_file=ca_file,
        app_namespace=namespace,
        mode="stream" if mode == "stream" else "poll",
    )


def _flux(keys: _Keys, raw: Any) -> FluxSettings | None:
    node = keys.section(raw, "health.flux", SCHEMA["flux"])
    if node is None:
        return None
    path = "health.flux.webhookSecretEnv"
    env_var = keys.text(node, path)
    secret = keys.secret(path, env_var, what="the Flux webhook secret")
    _long_enough(keys, path, env_var, secret)
    return FluxSettings(webhook_secret_env=env_var or "", webhook_secret=secret or Redacted(""))


def _notifications(keys: _Keys, raw: Any) -> ArgoCDNotificationsSettings | None:
    node = keys.section(raw, "health.argocdNotifications", SCHEMA["argocdNotifications"])
    if node is None:
        return None
    path = "health.argocdNotifications.tokenEnv"
    env_var = keys.text(node, path)
    token = keys.secret(path, env_var, what="the Argo CD notifications bearer token")
    _long_enough(keys, path, env_var, token)
    return ArgoCDNotificationsSettings(token_env=env_var or "", token=token or Redacted(""))


def _long_enough(keys: _Keys, path: str, env_var: str | None, secret: Redacted | None) -> None:
    if secret is not None and len(secret.reveal()) < MIN_SECRET_CHARS:
        raise ConfigError(
            f"{keys.source}: the secret in {env_var} (named by `{path}`) has "
            f"{len(secret.reveal())} characters; allowed: {MIN_SECRET_CHARS} characters or more",
            hint="generate one with `openssl rand -hex 32` and give the same value to the "
            "sender's Secret",
        )


def read_token_file(
    path: Path, *, key: str = "health.argocd.tokenFile", source: str = "<config>"
) -> Redacted:
    """The token in `path`, stripped; ConfigError when it cannot be one."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_TOKEN_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError(
            f"{source}: cannot read the file {path} named by `{key}`: {e.strerror or e}"
        ) from None
    if len(data) > MAX_TOKEN_FILE_BYTES:
        raise ConfigError(f"{source}: the file {path} named by `{key}` is larger than a token")
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ConfigError(
            f"{source}: the file {path} named by `{key}` is not an ASCII token"
        ) from None
    if not text or any(c.isspace() for c in text):
        raise ConfigError(
            f"{source}: the file {path} named by `{key}` holds no token (empty, or several words)"
        )
    return Redacted(text)
