"""Typed settings (SPEC §4), loaded and validated once (bridge.config.loading):
frozen dataclasses, one per section of `bridge.yaml`. Secrets only as `Redacted`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bridge.health.settings import HealthSettings
from bridge.redaction import Redacted

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
    # ({} objects) parses to ~50 MB per MiB, and two pages are decoded at once at
    # most (pages read further ahead wait as bytes): 8 MiB peaked at ~400 MB over
    # the bridge's own, under the 1 GiB pod with 10,000 deployments (16 MiB:
    # ~800 MB). An honest page is ~0.1-1 MiB.
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
class ForgeAuthSettings:
    """Where the forge token comes from: names only (an env var, a file), never
    the token. A GitHub App: its id, installation and private key file."""

    token_env: str | None = None
    # The value of `token_env`, read at load like every env secret (never printed).
    token: Redacted | None = None
    token_file: Path | None = None
    app_id: str | None = None
    installation_id: str | None = None
    private_key_file: Path | None = None


@dataclass(frozen=True)
class PullRequestSettings:
    """`targets[].publish.pullRequest` (SPEC §6a)."""

    forge: Literal["github", "gitlab", "gitea"]
    auth: ForgeAuthSettings
    head_branch: str  # the bridge's own branch; default gitops-bridge/<branch>
    api_url: str | None = None  # None: the forge's default for the repo's host
    granularity: Literal["target", "deployment"] = "target"
    labels: tuple[str, ...] = ()
    reviewers: tuple[str, ...] = ()  # users; "team:<slug>" for a team
    assignees: tuple[str, ...] = ()
    draft: bool = False
    # The forge's native auto-merge with this method; None: a human merges.
    auto_merge: Literal["merge", "squash", "rebase"] | None = None


@dataclass(frozen=True)
class PublishSettings:
    """`targets[].publish`: push straight to the branch (the default), or propose
    every change in a pull request (SPEC §6a)."""

    mode: Literal["push", "pull-request"] = "push"
    pull_request: PullRequestSettings | None = None


@dataclass(frozen=True)
class Target:
    namespace: str
    repo: str
    branch: str = "main"
    path: str = ""
    cluster: str | None = None
    ssh: SshSettings = field(default_factory=SshSettings)
    https: HttpsSettings = field(default_factory=HttpsSettings)
    # Not in `key`: a target keeps its clone (and shard) when its mode changes.
    publish: PublishSettings = field(default_factory=PublishSettings)

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
    # Health read-back (`health:`); every source optional, none by default.
    health: HealthSettings = field(default_factory=HealthSettings)
    source: str = "<defaults>"

    def target_for(self, namespace: str) -> Target | None:
        for target in self.targets:
            if target.namespace == namespace:
                return target
        return None
