"""Building `Settings` section by section from the merged raw config: every
value checked, every error naming the key, the value and what is allowed
(ConfigError, exit 2). Secrets are read from the environment variables whose
names the file gives, and held only as `Redacted`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from bridge.config.publishing import check_pull_targets, publish_settings
from bridge.config.reader import _check_unknown, _env_secret, _get, _Reader, _value
from bridge.config.schema import _TARGET_KEYS, env_name
from bridge.config.settings import (
    DNS_LABEL,
    UUID,
    ControlPlaneSettings,
    GatewaySettings,
    GitSettings,
    HttpsSettings,
    PolicySettings,
    RenderSettings,
    SecretKeyRef,
    SecretsSettings,
    Settings,
    SigningSettings,
    SshSettings,
    Target,
)
from bridge.errors import ConfigError
from bridge.health.settings import HealthSettings, health_settings
from bridge.redaction import Redacted

# --- the key tree ----------------------------------------------------------
# Each leaf: (kind, default). Kinds: str, int, float, bool, strlist, path, any.


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


def build(
    reader: _Reader,
    *,
    require_api_key: bool,
    require_bridge_key: bool,
    require_health_secrets: bool | None = None,
) -> Settings:
    """Settings from the merged raw config, every key validated.
    `require_health_secrets` (default: as `require_api_key`): whether the
    environment variables the `health:` keys name must be set."""
    # In this order, so that of several bad keys the same one is reported first.
    control_plane = _control_plane(reader, require_api_key=require_api_key)
    git_ssh = _ssh(reader, "git.ssh", reader.raw.get("git", {}) or {})
    git_https = _https(reader, "git.https", (reader.raw.get("git") or {}).get("https") or {})
    targets = _targets(reader, git_ssh, git_https)
    git = _git(reader, git_ssh, git_https)
    policy = _policy(reader)
    secrets = _secrets(reader, require_bridge_key=require_bridge_key)
    render = _render(reader)
    health = _health(
        reader, require_api_key if require_health_secrets is None else require_health_secrets
    )
    if health.forge_statuses and not any(t.publish.mode == "pull-request" for t in targets):
        # Only a pull-request target has a forge token to read them with.
        raise ConfigError(
            f"{reader.source}: key `health.forgeStatuses` is true, but no target has "
            "`publish.mode: pull-request`",
            hint="commit statuses are read with a pull-request target's forge token; "
            "set `health.forgeStatuses: false` or use pull-request mode",
        )
    return Settings(
        control_plane=control_plane,
        targets=targets,
        git=git,
        policy=policy,
        secrets=secrets,
        render=render,
        health=health,
        source=reader.source,
    )


def _health(reader: _Reader, require_secrets: bool) -> HealthSettings:
    """`health:` (SPEC §4): checked by bridge.health.settings, which words its
    errors as this package does and holds its secrets only as `Redacted`."""
    return health_settings(
        reader.raw.get("health"),
        env=reader.env,
        source=reader.source,
        require_secrets=require_secrets,
    )


def _git(reader: _Reader, git_ssh: SshSettings, git_https: HttpsSettings) -> GitSettings:
    def v(path: str) -> Any:
        return _value(reader, path)

    signing = _signing(reader)
    retries = v("git.pushRetries")
    if not 0 <= retries <= 50:
        raise reader.error("git.pushRetries", retries, "an integer between 0 and 50")
    email = v("git.authorEmail")
    if "@" not in email or "\n" in email or "<" in email or ">" in email:
        raise reader.error("git.authorEmail", email, "an email address")
    name = v("git.authorName")
    if not name or "\n" in name or "<" in name or ">" in name:
        raise reader.error("git.authorName", name, "a non-empty name without <, > or newlines")
    return GitSettings(
        author_name=name,
        author_email=email,
        workdir=v("git.workdir"),
        signing=signing,
        ssh=git_ssh,
        https=git_https,
        push_retries=retries,
    )


def _signing(reader: _Reader) -> SigningSettings | None:
    def v(path: str) -> Any:
        return _value(reader, path)

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
    return signing


def _policy(reader: _Reader) -> PolicySettings:
    def v(path: str) -> Any:
        return _value(reader, path)

    return PolicySettings(
        allowed_registries=v("policy.allowedRegistries"),
        require_digest=v("policy.requireDigest"),
        max_replicas=_positive(reader, "policy.maxReplicas", v("policy.maxReplicas")),
        max_cpu=_positive(reader, "policy.maxCpu", v("policy.maxCpu")),
        max_memory_mb=_positive(reader, "policy.maxMemoryMb", v("policy.maxMemoryMb")),
        mass_delete_fraction=_mass_delete_fraction(reader),
        mass_delete_min=_mass_delete_min(reader),
    )


def _secrets(reader: _Reader, *, require_bridge_key: bool) -> SecretsSettings:
    def v(path: str) -> Any:
        return _value(reader, path)

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
    return SecretsSettings(
        provider=provider,
        age_recipients=tuple(recipients),
        sealed_cert_file=cert,
        sealed_scope=scope,
        bridge_key_env=key_env,
        bridge_key=bridge_key,
    )


def _render(reader: _Reader) -> RenderSettings:
    def v(path: str) -> Any:
        return _value(reader, path)

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
    return RenderSettings(
        api_key_secret=_secret_ref(reader, "render.apiKeySecret"),
        license_key_secret=_secret_ref(reader, "render.licenseKeySecret"),
        postgres_secret_name=pg_name,
        gateway=gateway,
        n_jobs_per_worker=n_jobs,
        kubernetes_version=kube_version,
        schema_dir=schema_dir,
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
                publish=publish_settings(reader, where, item, repo=repo, branch=branch),
            )
        )
    check_pull_targets(reader, out)
    return tuple(out)
