"""Forge API clients: GitHub, GitLab, Gitea/Forgejo pull requests, behind one protocol.

What the pull-request publisher uses, and all it needs:

- `open_forge(kind, repo_url=..., api_url=..., tokens=..., hosts=...)` -> `Forge`
- `token_source(kind, auth, ...)` -> a `TokenSource` (env or file token, or a
  GitHub App) whose tokens are handed to `on_secret` (the log scrubber);
- `ForgeHosts`: the per-host write budget and rate-limit state, one per process,
  whose `quotas()` feed `/metrics`;
- the models (`PullRequest`, `PullLookup`, `NewPull`, `Opened`, `Review`,
  `CommitStatus`, `Quota`) and errors (`ForgeError` and its kinds);
- `bridge.forges.texts`: the pure title/body maker with its state marker.

This package talks HTTP to forges and nothing else: it never imports git,
the publisher, the reconciler or the renderer, and reads no config file.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from bridge.errors import ConfigError
from bridge.forges.auth import (
    GitHubAppToken,
    OnSecret,
    StaticToken,
    TokenSource,
    load_app_key,
    secret_from_file,
    token_from_env,
)
from bridge.forges.errors import (
    ForgeAnswerInvalid,
    ForgeError,
    ForgeRateLimited,
    ForgeRefused,
    ForgeRejected,
    ForgeUnavailable,
)
from bridge.forges.forge import Forge, ForgeClient
from bridge.forges.gitea import GiteaForge
from bridge.forges.github import GitHubForge, graphql_url
from bridge.forges.gitlab import GitLabForge
from bridge.forges.http import DEADLINE, AuthStyle, ForgeHttp
from bridge.forges.limits import Clock, ForgeHosts, SystemClock, WriteBudget
from bridge.forges.models import (
    FORGES,
    CommitStatus,
    ForgeKind,
    MergeMethod,
    NewPull,
    Opened,
    PullLookup,
    PullRequest,
    PullState,
    Quota,
    Review,
    ReviewState,
    StatusState,
)

__all__ = [
    "FORGES",
    "Clock",
    "CommitStatus",
    "Forge",
    "ForgeAnswerInvalid",
    "ForgeError",
    "ForgeHosts",
    "ForgeKind",
    "ForgeRateLimited",
    "ForgeRefused",
    "ForgeRejected",
    "ForgeUnavailable",
    "GitHubAppToken",
    "MergeMethod",
    "NewPull",
    "Opened",
    "PullLookup",
    "PullRequest",
    "PullState",
    "Quota",
    "Review",
    "ReviewState",
    "StaticToken",
    "StatusState",
    "SystemClock",
    "TokenSource",
    "WriteBudget",
    "default_api_url",
    "open_forge",
    "repo_slug",
    "token_source",
]

_AUTH = {
    "github": AuthStyle("Authorization", "Bearer "),
    "gitlab": AuthStyle("PRIVATE-TOKEN", ""),
    "gitea": AuthStyle("Authorization", "token "),
}
_API_SUFFIX = {"github": "/api/v3", "gitlab": "/api/v4", "gitea": "/api/v1"}
_GIT_USER = {"github": "x-access-token", "gitlab": "oauth2", "gitea": "oauth2"}


def _host_and_path(repo_url: str) -> tuple[str, str, str]:
    """(scheme, host[:port], path) of https://, ssh:// or scp-like `git@host:path` URLs."""
    if "://" not in repo_url and ":" in repo_url:
        user_host, _, path = repo_url.partition(":")
        return "https", user_host.rpartition("@")[2], "/" + path.lstrip("/")
    parts = urlsplit(repo_url)
    host = parts.hostname or ""
    if parts.port and parts.scheme in ("http", "https"):
        host = f"{host}:{parts.port}"
    scheme = "http" if parts.scheme == "http" else "https"
    return scheme, host, parts.path


def default_api_url(kind: ForgeKind, repo_url: str) -> str:
    """The forge's API for a repository URL: api.github.com for github.com,
    else https://HOST/api/v3 (GitHub Enterprise), /api/v4 (GitLab), /api/v1 (Gitea)."""
    scheme, host, _ = _host_and_path(repo_url)
    if not host:
        raise ConfigError(f"cannot tell the forge's host from the repo URL {repo_url!r}")
    if kind == "github" and host.lower() == "github.com":
        return "https://api.github.com"
    return f"{scheme}://{host}{_API_SUFFIX[kind]}"


def repo_slug(kind: ForgeKind, repo_url: str, api_url: str) -> str:
    """ "owner/name" (GitLab: "group/sub/project") of a repository URL. A forge
    served under a path prefix (https://HOST/gitlab/api/v4) has it stripped."""
    _, _, path = _host_and_path(repo_url)
    prefix = urlsplit(api_url).path.rstrip("/")
    for suffix in (*_API_SUFFIX.values(), "/api"):
        if prefix.endswith(suffix):
            prefix = prefix[: -len(suffix)]
            break
    if prefix and path.startswith(prefix + "/"):
        path = path[len(prefix) :]
    slug = path.strip("/").removesuffix(".git").strip("/")
    parts = slug.split("/")
    if len(parts) < 2 or any(not p or p in (".", "..") for p in parts):
        raise ConfigError(f"cannot tell the repository's owner and name from {repo_url!r}")
    if kind != "gitlab" and len(parts) != 2:
        raise ConfigError(f"{repo_url!r} is not an owner/name repository URL for {kind}")
    return slug


def token_source(
    kind: ForgeKind,
    *,
    token_env: str | None = None,
    token_file: Path | None = None,
    app_id: str | None = None,
    installation_id: str | None = None,
    private_key_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    clock: Clock | None = None,
    on_secret: OnSecret | None = None,
) -> TokenSource:
    """The configured credentials: `tokenEnv`, `tokenFile`, or a GitHub App."""
    notify: OnSecret = on_secret or (lambda _: None)
    git_user = _GIT_USER[kind]
    if app_id or installation_id or private_key_file:
        if kind != "github":
            raise ConfigError(
                "GitHub App credentials (appId, installationId) are for forge: github"
            )
        if not (app_id and installation_id and private_key_file):
            raise ConfigError("a GitHub App needs appId, installationId and privateKeyFile")
        pem = secret_from_file(private_key_file, what="GitHub App private key")
        notify(pem)
        key = load_app_key(pem, origin=str(private_key_file))
        return GitHubAppToken(
            app_id=str(app_id),
            installation_id=str(installation_id),
            private_key=key,
            clock=clock,
            on_secret=notify,
        )
    if token_env and token_file:
        raise ConfigError("give the forge token as tokenEnv or tokenFile, not both")
    if token_env:
        value = token_from_env(token_env, environ=environ)
        return StaticToken(value, origin=f"${token_env}", git_username=git_user, on_secret=notify)
    if token_file:
        value = secret_from_file(token_file, what="forge token")
        return StaticToken(value, origin=str(token_file), git_username=git_user, on_secret=notify)
    raise ConfigError("publish.pullRequest.auth needs tokenEnv, tokenFile, or a GitHub App")


def open_forge(
    kind: ForgeKind,
    *,
    repo_url: str,
    tokens: TokenSource,
    hosts: ForgeHosts,
    api_url: str | None = None,
    transport: httpx.BaseTransport | None = None,
    timeout: float = 10.0,
    deadline: float = DEADLINE,
    max_wait: float = 120.0,
    jitter: Callable[[], float] = random.random,
) -> ForgeClient:
    """A client for the repository at `repo_url` on a `kind` forge. Writes share
    `hosts`' budget for the API's host with every other client made from it.
    `timeout`: per connect/read; `deadline`: for a whole exchange; `max_wait`: the
    longest a call sleeps for rate limits before it raises ForgeRateLimited."""
    if kind not in FORGES:
        raise ConfigError(f"unknown forge {kind!r}; one of {', '.join(FORGES)}")
    api = (api_url or default_api_url(kind, repo_url)).rstrip("/")
    slug = repo_slug(kind, repo_url, api)
    parts = urlsplit(api)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"publish.pullRequest.apiUrl {api!r} is not an http(s) URL")
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
    http = ForgeHttp(
        forge=kind,
        repo=slug,
        api_url=api,
        tokens=tokens,
        auth=_AUTH[kind],
        limiter=hosts.limiter(host),
        clock=hosts.clock,
        transport=transport,
        timeout=timeout,
        deadline=deadline,
        max_wait=max_wait,
        jitter=jitter,
        headers=headers if kind == "github" else None,
    )
    if kind == "github":
        client = GitHubForge(http, slug, graphql=graphql_url(api))
        if isinstance(tokens, GitHubAppToken):
            app = tokens
            tokens.bind(lambda jwt: client.exchange_app_token(app.installation_id, jwt))
        return client
    if kind == "gitlab":
        return GitLabForge(http, slug)
    return GiteaForge(http, slug)
