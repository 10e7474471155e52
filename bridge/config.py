"""Typed settings: `bridge.yaml` plus `BRIDGE_*` environment overrides (SPEC §4).

Loaded and validated once. Every error names the key, the value and what is
allowed, and is a ConfigError (exit 2). Secrets (the control-plane API key, the
bridge key, HTTPS git passwords) are read from environment variables whose
*names* the file gives, and are held only as `Redacted`.

Env overrides: every key has an env name made of its path in UPPER_SNAKE,
e.g. `controlPlane.pollInterval` -> `BRIDGE_CONTROL_PLANE_POLL_INTERVAL`,
`secrets.sops.ageRecipients` -> `BRIDGE_SECRETS_SOPS_AGE_RECIPIENTS`. Values
are parsed as YAML, so lists and numbers work (`[a, b]`, `15`); a list may also
be comma-separated. `BRIDGE_TARGETS` takes the whole target list as YAML/JSON.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from bridge.errors import ConfigError
from bridge.redaction import Redacted

DEFAULT_CONFIG_FILE = "bridge.yaml"
ENV_PREFIX = "BRIDGE_"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Matched whole (fullmatch): `$` would also accept a trailing newline, which an
# env var can carry and which would then go into URLs and headers.
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclass(frozen=True)
class ControlPlaneSettings:
    url: str
    api_key_env: str
    api_key: Redacted
    listener_id: str
    tenant_id: str | None = None
    poll_interval: float = 15.0
    timeout: float = 10.0  # seconds per request: a deadline from connect to the last byte
    # Seconds of one cycle's control-plane requests (listing, deletion confirmations):
    # 50,000 records are 500 pages, ~100 s at 0.2 s a page over a WAN.
    cycle_timeout: float = 300.0
    # MiB of one answer, counted while it streams in. JSON's worst shape per byte
    # ({} objects) parses to ~50 MB per MiB, and two pages are in flight (the
    # read-ahead): 8 MiB peaked at ~400 MB over the bridge's own, under the 1 GiB
    # pod with 10,000 deployments (16 MiB: ~800 MB). An honest page is ~0.1-1 MiB.
    max_response_mb: int = 8
    max_deployments: int = 50_000  # records of one listing, every listener's counted


@dataclass(frozen=True)
class SshSettings:
    key_file: Path | None = None
    known_hosts_file: Path | None = None


@dataclass(frozen=True)
class HttpsSettings:
    username_env: str | None = None
    password_env: str | None = None
    username: str | None = None
    password: Redacted | None = None


@dataclass(frozen=True)
class Target:
    namespace: str
    repo: str
    branch: str = "main"
    path: str = ""
    cluster: str | None = None
    ssh: SshSettings = field(default_factory=SshSettings)
    https: HttpsSettings = field(default_factory=HttpsSettings)

    @property
    def key(self) -> str:
        """Stable identity of a target (used for workdir names and sharding)."""
        return f"{self.repo}#{self.branch}:{self.path}:{self.namespace}"


@dataclass(frozen=True)
class SigningSettings:
    format: Literal["ssh", "openpgp"]
    key_file: Path | None = None
    key: str | None = None
    gnupg_home: Path | None = None


@dataclass(frozen=True)
class GitSettings:
    author_name: str = "LangSmith GitOps Bridge"
    author_email: str = "gitops-bridge@example.com"
    workdir: Path = field(default_factory=lambda: Path("~/.cache/gitops-bridge").expanduser())
    signing: SigningSettings | None = None
    ssh: SshSettings = field(default_factory=SshSettings)
    https: HttpsSettings = field(default_factory=HttpsSettings)
    push_retries: int = 5


@dataclass(frozen=True)
class PolicySettings:
    allowed_registries: tuple[str, ...] | None = None
    require_digest: bool = False
    max_replicas: int | None = None
    max_cpu: float | None = None
    max_memory_mb: int | None = None
    # The mass-delete guard holds a cycle's deletions of a target when they are
    # more than this fraction of its deployments AND at least `mass_delete_min`
    # of them: a team with one or two agents per namespace can still delete one.
    mass_delete_fraction: float = 0.5
    mass_delete_min: int = 3


@dataclass(frozen=True)
class SecretsSettings:
    provider: Literal["sops", "sealed-secrets", "none"] = "none"
    age_recipients: tuple[str, ...] = ()
    sealed_cert_file: Path | None = None
    sealed_scope: Literal["strict", "namespace-wide", "cluster-wide"] = "strict"
    # The bridge key keys the digests recorded beside encrypted files (HMAC) and
    # the bridge's own escrow of generated passwords; it never leaves the bridge.
    bridge_key_env: str = "GITOPS_BRIDGE_KEY"
    bridge_key: Redacted | None = None


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str


@dataclass(frozen=True)
class GatewaySettings:
    name: str
    namespace: str
    hostname: str
    section_name: str | None = None
    path_prefix: str = "/"


@dataclass(frozen=True)
class RenderSettings:
    """What the rendered manifests reference in the cluster (never values)."""

    api_key_secret: SecretKeyRef = SecretKeyRef("langsmith-api-key", "api_key")
    license_key_secret: SecretKeyRef = SecretKeyRef("langsmith-license-key", "license_key")
    # With secrets provider `none`, Postgres credentials come from a Secret the
    # operator creates; `{name}` is the deployment's folder name.
    postgres_secret_name: str = "{name}-postgres"  # noqa: S105 - a name, not a value
    gateway: GatewaySettings | None = None
    n_jobs_per_worker: int = 10
    kubernetes_version: str = "1.33"
    # JSON Schemas of custom resources (`gitops-bridge schemas import`); None:
    # the fallbacks of bridge.validation.folders.find_schema_dir. Out of repr: the input
    # digest in every state file includes repr(RenderSettings), and where the
    # schemas are changes what is checked, not what is rendered (a new field in
    # the repr would rewrite every state file once, a commit per deployment).
    schema_dir: Path | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Settings:
    control_plane: ControlPlaneSettings
    targets: tuple[Target, ...]
    git: GitSettings = field(default_factory=GitSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    secrets: SecretsSettings = field(default_factory=SecretsSettings)
    render: RenderSettings = field(default_factory=RenderSettings)
    source: str = "<defaults>"

    def target_for(self, namespace: str) -> Target | None:
        for target in self.targets:
            if target.namespace == namespace:
                return target
        return None


# --- the key tree ----------------------------------------------------------
# Each leaf: (kind, default). Kinds: str, int, float, bool, strlist, path, any.

_SSH_KEYS = {"keyFile": ("path", None), "knownHostsFile": ("path", None)}
_HTTPS_KEYS = {"usernameEnv": ("str", None), "passwordEnv": ("str", None)}
_TARGET_KEYS: dict[str, Any] = {
    "namespace": ("str", None),
    "repo": ("str", None),
    "branch": ("str", "main"),
    "path": ("str", ""),
    "cluster": ("str", None),
    "ssh": _SSH_KEYS,
    "https": _HTTPS_KEYS,
}
SCHEMA: dict[str, Any] = {
    "controlPlane": {
        "url": ("str", "https://api.host.langchain.com"),
        "apiKeyEnv": ("str", "LANGSMITH_API_KEY"),
        "tenantId": ("str", None),
        "listenerId": ("str", None),
        "pollInterval": ("float", 15.0),
        "timeout": ("float", 10.0),
        "cycleTimeout": ("float", 300.0),
        "maxResponseMb": ("int", 8),
        "maxDeployments": ("int", 50_000),
    },
    "targets": ("targets", None),
    "git": {
        "authorName": ("str", "LangSmith GitOps Bridge"),
        "authorEmail": ("str", "gitops-bridge@example.com"),
        "workdir": ("path", "~/.cache/gitops-bridge"),
        "pushRetries": ("int", 5),
        "signing": {
            "format": ("str", None),
            "keyFile": ("path", None),
            "key": ("str", None),
            "gnupgHome": ("path", None),
        },
        "ssh": _SSH_KEYS,
        "https": _HTTPS_KEYS,
    },
    "policy": {
        "allowedRegistries": ("strlist", None),
        "requireDigest": ("bool", False),
        "maxReplicas": ("int", None),
        "maxCpu": ("float", None),
        "maxMemoryMb": ("int", None),
        "massDelete": {"fraction": ("float", 0.5), "min": ("int", 3)},
    },
    "secrets": {
        "provider": ("str", "none"),
        "bridgeKeyEnv": ("str", "GITOPS_BRIDGE_KEY"),
        "sops": {"ageRecipients": ("strlist", None)},
        "sealedSecrets": {"certFile": ("path", None), "scope": ("str", "strict")},
    },
    "render": {
        "apiKeySecret": {"name": ("str", "langsmith-api-key"), "key": ("str", "api_key")},
        "licenseKeySecret": {
            "name": ("str", "langsmith-license-key"),
            "key": ("str", "license_key"),
        },
        "postgresSecretName": ("str", "{name}-postgres"),
        "nJobsPerWorker": ("int", 10),
        "kubernetesVersion": ("str", "1.33"),
        "schemaDir": ("path", None),
        "gateway": {
            "name": ("str", None),
            "namespace": ("str", None),
            "hostname": ("str", None),
            "sectionName": ("str", None),
            "pathPrefix": ("str", "/"),
        },
    },
}


def env_name(path: str) -> str:
    """`controlPlane.pollInterval` -> `BRIDGE_CONTROL_PLANE_POLL_INTERVAL`."""
    parts = [re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", p).upper() for p in path.split(".")]
    return ENV_PREFIX + "_".join(parts)


def _leaf_paths(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, sub in tree.items():
        path = f"{prefix}{key}"
        if isinstance(sub, Mapping):
            out.extend(_leaf_paths(sub, path + "."))
        else:
            out.append(path)
    return out


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _Reader:
    """Reads typed values out of the merged raw config, naming keys in errors."""

    def __init__(self, raw: Mapping[str, Any], source: str, env: Mapping[str, str]) -> None:
        self.raw = raw
        self.source = source
        self.env = env

    def error(self, path: str, value: Any, allowed: str) -> ConfigError:
        return ConfigError(
            f"{self.source}: key `{path}` has value {_describe(value)}; allowed: {allowed}",
            hint=f"set it in the file or with {env_name(path)}",
        )

    def convert(self, path: str, kind: str, value: Any) -> Any:
        if value is None:
            return None
        if kind == "str":
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise self.error(path, value, "a string")
            return str(value)
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.error(path, value, "an integer")
            return value
        if kind == "float":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.error(path, value, "a number")
            return float(value)
        if kind == "bool":
            if not isinstance(value, bool):
                raise self.error(path, value, "true or false")
            return value
        if kind == "path":
            if not isinstance(value, str) or not value:
                raise self.error(path, value, "a file path")
            return Path(value).expanduser()
        if kind == "strlist":
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise self.error(path, value, "a list of non-empty strings")
            return tuple(value)
        raise AssertionError(kind)


def _parse_env_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _merge_env(raw: dict[str, Any], env: Mapping[str, str], schema: Mapping[str, Any]) -> None:
    for path in _leaf_paths(schema):
        name = env_name(path)
        if name not in env:
            continue
        kind = _lookup(schema, path)[0]
        value: Any = env[name]
        if kind in ("str", "path"):
            value = value  # keep strings as typed: "0123" must stay "0123"
        else:
            value = _parse_env_value(value)
        node = raw
        parts = path.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value


def _lookup(schema: Mapping[str, Any], path: str) -> Any:
    node: Any = schema
    for part in path.split("."):
        node = node[part]
    return node


def _check_unknown(raw: Any, schema: Mapping[str, Any], prefix: str, source: str) -> None:
    if not isinstance(raw, Mapping):
        return
    for key, value in raw.items():
        path = f"{prefix}{key}"
        if key not in schema:
            allowed = ", ".join(f"`{prefix}{k}`" for k in schema)
            raise ConfigError(f"{source}: unknown key `{path}`; allowed here: {allowed}")
        sub = schema[key]
        if isinstance(sub, Mapping):
            if value is not None and not isinstance(value, Mapping):
                raise ConfigError(
                    f"{source}: key `{path}` has value {_describe(value)}; allowed: a mapping"
                )
            _check_unknown(value, sub, path + ".", source)


def _get(raw: Mapping[str, Any], path: str) -> Any:
    node: Any = raw
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def load_settings(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    require_api_key: bool = True,
    require_bridge_key: bool = True,
) -> Settings:
    """Settings from a YAML file (optional) and the environment; ConfigError on anything wrong."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    source = "<environment>"
    if path is None and env.get("BRIDGE_CONFIG"):
        path = env["BRIDGE_CONFIG"]
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = DEFAULT_CONFIG_FILE
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(
                f"cannot read config file {source}: {e.strerror or e}",
                hint="pass an existing file with --config or BRIDGE_CONFIG",
            ) from e
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"{source}: not valid YAML{where}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: the top level must be a mapping of keys")
        raw = loaded
    _check_unknown(raw, SCHEMA, "", source)
    _merge_env(raw, env, SCHEMA)
    if "BRIDGE_TARGETS" in env:
        raw["targets"] = _parse_env_value(env["BRIDGE_TARGETS"])
    return _build(
        _Reader(raw, source, env),
        require_api_key=require_api_key,
        require_bridge_key=require_bridge_key,
    )


def _value(reader: _Reader, path: str) -> Any:
    kind, default = _lookup(SCHEMA, path)
    value = reader.convert(path, kind, _get(reader.raw, path))
    if value is not None:
        return value
    if kind == "path" and default:
        return Path(default).expanduser()
    return default


def _env_secret(reader: _Reader, key_path: str, env_var: str, *, required: bool) -> Redacted | None:
    if not ENV_NAME.match(env_var):
        raise reader.error(key_path, env_var, "an environment variable name")
    value = reader.env.get(env_var)
    if not value:
        if required:
            raise ConfigError(
                f"{reader.source}: the environment variable {env_var} named by `{key_path}` "
                "is not set or empty",
                hint=f"export {env_var}=<value> before starting the bridge",
            )
        return None
    return Redacted(value)


def _check_repo_url(reader: _Reader, key: str, repo: str) -> None:
    """A target's repo URL: a scheme git speaks, and no password in it for any
    scheme. A password in a URL would reach the clone's config, the status file
    and `audit`; the error never shows it (nor anything else in the user info)."""
    try:
        parts = urlsplit(repo)
        password = parts.password
    except ValueError:
        raise ConfigError(
            f"{reader.source}: key `{key}` is not a URL ({_without_userinfo(repo)}); allowed: "
            "a file://, https:// or ssh:// URL",
            hint=f"set it in the file or with {env_name(key)}",
        ) from None
    if password is not None:
        raise ConfigError(
            f"{reader.source}: key `{key}` has a password in the URL "
            f"({_without_userinfo(repo)}); allowed: a URL without a password",
            hint="https: put the credentials in environment variables named by "
            "git.https.usernameEnv and git.https.passwordEnv; ssh: use a deploy key "
            "(git.ssh.keyFile); then change the password, it has been in the config",
        )
    if parts.scheme not in ("file", "https", "http", "ssh"):
        raise reader.error(
            key,
            _without_userinfo(repo),
            "a file://, https:// or ssh:// URL (scp-like paths: use ssh://)",
        )


def _without_userinfo(url: str) -> str:
    """A URL to show in an error: whatever stands before its last "@" in the
    authority (user and password) replaced by `****`."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    authority, slash, path = rest.partition("/")
    if "@" not in authority:
        return url
    return f"{scheme}{sep}****@{authority.rsplit('@', 1)[1]}{slash}{path}"


def _build(reader: _Reader, *, require_api_key: bool, require_bridge_key: bool) -> Settings:
    def v(path: str) -> Any:
        return _value(reader, path)

    control_plane = _control_plane(reader, require_api_key=require_api_key)

    git_ssh = _ssh(reader, "git.ssh", reader.raw.get("git", {}) or {})
    git_https = _https(reader, "git.https", (reader.raw.get("git") or {}).get("https") or {})
    targets = _targets(reader, git_ssh, git_https)

    signing = None
    fmt = v("git.signing.format")
    if fmt is not None:
        if fmt not in ("ssh", "openpgp"):
            raise reader.error("git.signing.format", fmt, "ssh or openpgp")
        key_file = v("git.signing.keyFile")
        key = v("git.signing.key")
        if fmt == "ssh" and key_file is None:
            raise reader.error("git.signing.keyFile", None, "the private key file for ssh signing")
        if fmt == "openpgp" and not key:
            raise reader.error("git.signing.key", None, "the OpenPGP key fingerprint or id")
        signing = SigningSettings(
            format=fmt, key_file=key_file, key=key, gnupg_home=v("git.signing.gnupgHome")
        )
    elif any(_get(reader.raw, f"git.signing.{k}") for k in ("keyFile", "key", "gnupgHome")):
        raise reader.error("git.signing.format", None, "ssh or openpgp when signing keys are set")
    retries = v("git.pushRetries")
    if not 0 <= retries <= 50:
        raise reader.error("git.pushRetries", retries, "an integer between 0 and 50")
    email = v("git.authorEmail")
    if "@" not in email or "\n" in email or "<" in email or ">" in email:
        raise reader.error("git.authorEmail", email, "an email address")
    name = v("git.authorName")
    if not name or "\n" in name or "<" in name or ">" in name:
        raise reader.error("git.authorName", name, "a non-empty name without <, > or newlines")
    git = GitSettings(
        author_name=name,
        author_email=email,
        workdir=v("git.workdir"),
        signing=signing,
        ssh=git_ssh,
        https=git_https,
        push_retries=retries,
    )

    policy = PolicySettings(
        allowed_registries=v("policy.allowedRegistries"),
        require_digest=v("policy.requireDigest"),
        max_replicas=_positive(reader, "policy.maxReplicas", v("policy.maxReplicas")),
        max_cpu=_positive(reader, "policy.maxCpu", v("policy.maxCpu")),
        max_memory_mb=_positive(reader, "policy.maxMemoryMb", v("policy.maxMemoryMb")),
        mass_delete_fraction=_mass_delete_fraction(reader),
        mass_delete_min=_mass_delete_min(reader),
    )

    provider = v("secrets.provider")
    if provider not in ("sops", "sealed-secrets", "none"):
        raise reader.error("secrets.provider", provider, "sops, sealed-secrets or none")
    recipients = v("secrets.sops.ageRecipients") or ()
    for r in recipients:
        if not re.match(r"^age1[0-9a-z]{58}$", r):
            raise reader.error("secrets.sops.ageRecipients", r, "age recipients (age1...)")
    if provider == "sops" and not recipients:
        raise reader.error(
            "secrets.sops.ageRecipients", None, "at least one age recipient for provider sops"
        )
    cert = v("secrets.sealedSecrets.certFile")
    if provider == "sealed-secrets" and cert is None:
        raise reader.error(
            "secrets.sealedSecrets.certFile", None, "the controller certificate (PEM) file"
        )
    scope = v("secrets.sealedSecrets.scope")
    if scope not in ("strict", "namespace-wide", "cluster-wide"):
        raise reader.error(
            "secrets.sealedSecrets.scope", scope, "strict, namespace-wide or cluster-wide"
        )
    key_env = v("secrets.bridgeKeyEnv")
    bridge_key = _env_secret(reader, "secrets.bridgeKeyEnv", key_env, required=False)
    if provider != "none" and bridge_key is None and require_bridge_key:
        raise ConfigError(
            f"{reader.source}: secrets provider {provider} needs the bridge key, but the "
            f"environment variable {key_env} (named by `secrets.bridgeKeyEnv`) is not set",
            hint="generate one with `python -c 'import secrets; print(secrets.token_hex(32))'` "
            "and keep it in a Secret; losing it re-encrypts every secret once",
        )
    if bridge_key is not None and len(bridge_key.reveal()) < 32:
        raise ConfigError(
            f"{reader.source}: the bridge key in {key_env} is too short "
            f"({len(bridge_key.reveal())} characters); allowed: 32 characters or more"
        )
    secrets = SecretsSettings(
        provider=provider,
        age_recipients=tuple(recipients),
        sealed_cert_file=cert,
        sealed_scope=scope,
        bridge_key_env=key_env,
        bridge_key=bridge_key,
    )

    gateway = None
    if _get(reader.raw, "render.gateway.name"):
        for key in ("namespace", "hostname"):
            if not v(f"render.gateway.{key}"):
                raise reader.error(f"render.gateway.{key}", None, "a value when a gateway is set")
        gateway = GatewaySettings(
            name=v("render.gateway.name"),
            namespace=v("render.gateway.namespace"),
            hostname=v("render.gateway.hostname"),
            section_name=v("render.gateway.sectionName"),
            path_prefix=v("render.gateway.pathPrefix"),
        )
    kube_version = v("render.kubernetesVersion")
    if not re.match(r"^1\.(2[5-9]|3[0-7])$", kube_version):
        raise reader.error("render.kubernetesVersion", kube_version, "1.25 ... 1.37")
    n_jobs = v("render.nJobsPerWorker")
    if not 1 <= n_jobs <= 1000:
        raise reader.error("render.nJobsPerWorker", n_jobs, "an integer between 1 and 1000")
    pg_name = v("render.postgresSecretName")
    if "{name}" not in pg_name and not DNS_LABEL.match(pg_name):
        raise reader.error("render.postgresSecretName", pg_name, "a DNS label, may use {name}")
    schema_dir = v("render.schemaDir")
    if schema_dir is not None and not schema_dir.is_dir():
        what = "does not exist" if not schema_dir.exists() else "is not a directory"
        raise reader.error(
            "render.schemaDir",
            str(schema_dir),
            f"an existing directory of JSON schemas ({schema_dir} {what}; "
            "make one with `gitops-bridge schemas import CRD_FILE... --out DIR`)",
        )
    render = RenderSettings(
        api_key_secret=_secret_ref(reader, "render.apiKeySecret"),
        license_key_secret=_secret_ref(reader, "render.licenseKeySecret"),
        postgres_secret_name=pg_name,
        gateway=gateway,
        n_jobs_per_worker=n_jobs,
        kubernetes_version=kube_version,
        schema_dir=schema_dir,
    )
    return Settings(
        control_plane=control_plane,
        targets=targets,
        git=git,
        policy=policy,
        secrets=secrets,
        render=render,
        source=reader.source,
    )


def _control_plane(reader: _Reader, *, require_api_key: bool) -> ControlPlaneSettings:
    def v(path: str) -> Any:
        return _value(reader, path)

    url = v("controlPlane.url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise reader.error("controlPlane.url", url, "an http:// or https:// URL")
    if parts.password is not None or parts.username is not None:
        raise reader.error("controlPlane.url", "<url with credentials>", "a URL without user info")
    listener_id = v("controlPlane.listenerId")
    if not listener_id or not UUID.fullmatch(listener_id):
        raise reader.error("controlPlane.listenerId", listener_id, "a listener UUID")
    tenant_id = v("controlPlane.tenantId")
    if tenant_id is not None and not UUID.fullmatch(tenant_id):
        raise reader.error("controlPlane.tenantId", tenant_id, "a workspace UUID or null")
    poll = v("controlPlane.pollInterval")
    if not 1 <= poll <= 86400:
        raise reader.error("controlPlane.pollInterval", poll, "seconds between 1 and 86400")
    timeout = v("controlPlane.timeout")
    if not 0 < timeout <= 600:
        raise reader.error("controlPlane.timeout", timeout, "seconds between 0 and 600")
    cycle_timeout = v("controlPlane.cycleTimeout")
    if not timeout <= cycle_timeout <= 86400:
        raise reader.error(
            "controlPlane.cycleTimeout",
            cycle_timeout,
            f"seconds from controlPlane.timeout ({timeout:g}) to 86400",
        )
    max_response_mb = v("controlPlane.maxResponseMb")
    if not 1 <= max_response_mb <= 512:
        raise reader.error(
            "controlPlane.maxResponseMb", max_response_mb, "an integer from 1 to 512 (MiB)"
        )
    max_deployments = v("controlPlane.maxDeployments")
    if not 1 <= max_deployments <= 1_000_000:
        raise reader.error(
            "controlPlane.maxDeployments", max_deployments, "an integer from 1 to 1000000"
        )
    api_key_env = v("controlPlane.apiKeyEnv")
    api_key = _env_secret(reader, "controlPlane.apiKeyEnv", api_key_env, required=require_api_key)
    control_plane = ControlPlaneSettings(
        url=url.rstrip("/"),
        api_key_env=api_key_env,
        api_key=api_key or Redacted(""),
        listener_id=listener_id.lower(),
        tenant_id=tenant_id,
        poll_interval=poll,
        timeout=timeout,
        cycle_timeout=cycle_timeout,
        max_response_mb=max_response_mb,
        max_deployments=max_deployments,
    )
    return control_plane


def _positive(reader: _Reader, path: str, value: Any) -> Any:
    if value is not None and value <= 0:
        raise reader.error(path, value, "a positive number or null")
    return value


def _mass_delete_fraction(reader: _Reader) -> float:
    path = "policy.massDelete.fraction"
    value = _value(reader, path)
    if not 0 < value <= 1:
        # The value as written (an integer 0 stays "0", not "0.0").
        shown = _get(reader.raw, path)
        raise reader.error(path, shown, "a number greater than 0 and at most 1 (e.g. 0.5)")
    return float(value)


def _mass_delete_min(reader: _Reader) -> int:
    path = "policy.massDelete.min"
    value = _value(reader, path)
    if value < 1:
        raise reader.error(path, value, "an integer of at least 1")
    return int(value)


def _secret_ref(reader: _Reader, path: str) -> SecretKeyRef:
    name = _value(reader, f"{path}.name")
    key = _value(reader, f"{path}.key")
    if not DNS_LABEL.match(name) and not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", name):
        raise reader.error(f"{path}.name", name, "a Kubernetes Secret name")
    if not re.match(r"^[-._a-zA-Z0-9]+$", key):
        raise reader.error(f"{path}.key", key, "a Secret key ([-._a-zA-Z0-9]+)")
    return SecretKeyRef(name, key)


def _ssh(reader: _Reader, prefix: str, node: Mapping[str, Any]) -> SshSettings:
    sub = node.get("ssh") or {}
    return SshSettings(
        key_file=reader.convert(f"{prefix}.keyFile", "path", sub.get("keyFile")),
        known_hosts_file=reader.convert(
            f"{prefix}.knownHostsFile", "path", sub.get("knownHostsFile")
        ),
    )


def _https(reader: _Reader, prefix: str, node: Mapping[str, Any]) -> HttpsSettings:
    username_env = reader.convert(f"{prefix}.usernameEnv", "str", node.get("usernameEnv"))
    password_env = reader.convert(f"{prefix}.passwordEnv", "str", node.get("passwordEnv"))
    username = None
    password = None
    if username_env:
        user = _env_secret(reader, f"{prefix}.usernameEnv", username_env, required=True)
        username = user.reveal() if user else None
    if password_env:
        password = _env_secret(reader, f"{prefix}.passwordEnv", password_env, required=True)
    return HttpsSettings(username_env, password_env, username, password)


def _targets(reader: _Reader, git_ssh: SshSettings, git_https: HttpsSettings) -> tuple[Target, ...]:
    raw_targets = reader.raw.get("targets")
    if raw_targets is None:
        raise reader.error("targets", None, "a list with one entry per namespace")
    if not isinstance(raw_targets, list) or not raw_targets:
        raise reader.error("targets", raw_targets, "a non-empty list of targets")
    seen: set[str] = set()
    out = []
    for i, item in enumerate(raw_targets):
        where = f"targets[{i}]"
        if not isinstance(item, Mapping):
            raise reader.error(where, item, "a mapping with namespace and repo")
        _check_unknown(item, _TARGET_KEYS, where + ".", reader.source)
        values: dict[str, Any] = {}
        for key, spec in _TARGET_KEYS.items():
            if isinstance(spec, Mapping):
                continue
            kind, default = spec
            value = reader.convert(f"{where}.{key}", kind, item.get(key))
            values[key] = default if value is None else value
        namespace = values["namespace"]
        if not namespace or not DNS_LABEL.match(namespace):
            raise reader.error(f"{where}.namespace", namespace, "a Kubernetes namespace name")
        if namespace in seen:
            raise reader.error(f"{where}.namespace", namespace, "each namespace at most once")
        seen.add(namespace)
        repo = values["repo"]
        if not repo:
            raise reader.error(f"{where}.repo", repo, "a file://, https:// or ssh:// URL")
        _check_repo_url(reader, f"{where}.repo", repo)
        branch = values["branch"]
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$", branch) or ".." in branch:
            raise reader.error(f"{where}.branch", branch, "a branch name")
        target_path = values["path"].strip("/")
        if target_path and (
            any(p in ("", ".", "..") for p in target_path.split("/")) or "\\" in target_path
        ):
            raise reader.error(f"{where}.path", values["path"], "a relative folder without ..")
        cluster = values["cluster"]
        if cluster is not None and not DNS_LABEL.match(cluster):
            raise reader.error(f"{where}.cluster", cluster, "a DNS-1123 label or null")
        ssh = _ssh(reader, where + ".ssh", item)
        https = _https(reader, where + ".https", item.get("https") or {})
        out.append(
            Target(
                namespace=namespace,
                repo=repo,
                branch=branch,
                path=target_path,
                cluster=cluster,
                ssh=SshSettings(
                    ssh.key_file or git_ssh.key_file,
                    ssh.known_hosts_file or git_ssh.known_hosts_file,
                ),
                https=https if https.password_env or https.username_env else git_https,
            )
        )
    return tuple(out)
