"""Forge clients of pull-request targets, made from settings: one `ForgeHosts`
per process (every client of a forge host shares its write budget and its
rate-limit waits) and one client per target. Tokens are read here, at
start-up, and handed to the log scrubber before any request is made: a
missing environment variable or an unreadable key file is a configuration
error (exit 2) before anything happens.

The forges' modules (httpx, cryptography's RSA for GitHub Apps, the pull-request
publisher: ~0.1 s to import) are imported only when a target is in
pull-request mode: a push-mode `run --once` never pays for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bridge.config import Settings, Target
from bridge.observability.logs import register_secret
from bridge.reconcile.plans import Publisher

if TYPE_CHECKING:
    from bridge.forges import Forge, ForgeHosts


def pull_request_targets(settings: Settings) -> list[Target]:
    return [
        t
        for t in settings.targets
        if t.publish.mode == "pull-request" and t.publish.pull_request is not None
    ]


def make_forge(target: Target, hosts: ForgeHosts, *, timeout: float = 10.0) -> Forge:
    """The forge client of a pull-request target (ConfigError for bad credentials)."""
    pull = target.publish.pull_request
    if pull is None:
        raise ValueError(f"target {target.namespace} is not in pull-request mode")
    from bridge.forges import open_forge, token_source

    auth = pull.auth
    # The env token was read with the settings (load_settings' env); hand it on.
    environ = {auth.token_env: auth.token.reveal()} if auth.token_env and auth.token else {}
    tokens = token_source(
        pull.forge,
        token_env=auth.token_env,
        token_file=auth.token_file,
        app_id=auth.app_id,
        installation_id=auth.installation_id,
        private_key_file=auth.private_key_file,
        environ=environ,
        clock=hosts.clock,
        on_secret=register_secret,
    )
    return open_forge(
        pull.forge,
        repo_url=target.repo,
        api_url=pull.api_url,
        tokens=tokens,
        hosts=hosts,
        timeout=timeout,
    )


def make_forges(
    settings: Settings, hosts: ForgeHosts | None = None
) -> tuple[ForgeHosts | None, dict[str, Forge]]:
    """Every pull-request target's client, by target key, and the hosts they
    share (None, and nothing imported, when no target is in pull-request mode)."""
    targets = pull_request_targets(settings)
    if not targets:
        return hosts, {}
    if hosts is None:
        from bridge.forges import ForgeHosts

        hosts = ForgeHosts()
    return hosts, {t.key: make_forge(t, hosts) for t in targets}


def make_publisher(
    settings: Settings,
    target: Target,
    forge: Forge | None,
    hosts: ForgeHosts | None,
    metrics: Any,
) -> Publisher:
    """The target's publisher: a pull-request publisher when it has a forge client
    (publish.mode: pull-request), else push mode's branch publisher."""
    from bridge.publishing.publisher import BranchPublisher
    from bridge.publishing.repo import TargetRepo

    repo = TargetRepo(target, settings.git)
    pull = target.publish.pull_request
    if forge is None or pull is None or hosts is None:
        return BranchPublisher(repo)
    from bridge.publishing.pullrequest import PullRequestPublisher

    ns = target.namespace
    return PullRequestPublisher(
        repo,
        forge,
        pull,
        clock=hosts.clock.monotonic,
        link=lambda dep_id: deployment_link(settings, dep_id),
        on_merged=(lambda p: metrics.pull_merged(ns, p.number)) if metrics is not None else None,
    )


def deployment_link(settings: Settings, deployment_id: str) -> str:
    """The deployment's address in the control plane's API (for pull request bodies)."""
    return f"{settings.control_plane.url}/v2/deployments/{deployment_id}"


def use_forge_credentials(repo: Any, forge: Forge, target: Target) -> None:
    """Git over HTTPS to a pull-request target authenticates with its forge's
    token (the askpass transport, never a URL), for `status` and `audit` too."""
    repo.clone.transport.use_credentials(
        forge.git_credentials, origin=f"publish.pullRequest.auth of target {target.namespace}"
    )


def pull_forge(target: Target) -> Forge | None:
    """A pull-request target's forge client for a read-only command (None: push mode)."""
    if target.publish.mode != "pull-request" or target.publish.pull_request is None:
        return None
    from bridge.forges import ForgeHosts

    return make_forge(target, ForgeHosts())
