"""Builds a `Reconciler` from settings with the real collaborators: the control
plane client, one publisher per target (a branch publisher over the target's
clone, or in pull-request mode a pull-request publisher with its forge
client), Kustomize validation, metrics and progress. Used by `run`, `diff`,
`rekey`, `demo`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bridge.config import Settings, Target
from bridge.errors import DeploymentError
from bridge.models import Deployment, Listener
from bridge.reconcile.cycle import Reconciler
from bridge.reconcile.plans import Publisher
from bridge.validation.scratch import Validator


def make_reconciler(
    settings: Settings,
    *,
    allow_mass_delete: bool = False,
    dry_run: bool = False,
    force_reseal: bool = False,
    shard: tuple[int, int] | None = None,
    metrics: Any = None,
    validate: bool = True,
    transport: Any = None,
    progress: Any = None,
    sleep: Callable[[float], None] = time.sleep,
    client: Any = None,
    forge_hosts: Any = None,
) -> tuple[Reconciler, Callable[[], None]]:
    """A reconciler with the real collaborators, and a function that closes them.
    `sleep` (retry and backoff waits) is injected so tests need no real time;
    `forge_hosts` (a ForgeHosts) so that they need no real rate-limit waits.
    `client`: a control-plane client made by `make_client` and shared with
    others (the health read-back asks it for revisions); its owner closes it."""
    from bridge.commands.forging import make_forges, make_publisher

    # Forge clients first: their credentials are read now, so a missing token is
    # a configuration error before anything is fetched or listed.
    hosts, forges = make_forges(settings, forge_hosts)
    if metrics is not None and forges:
        metrics.watch_forges(hosts)

    owned = client is None
    if client is None:
        client = make_client(settings, metrics=metrics, transport=transport, sleep=sleep)

    def list_deployments() -> tuple[Listener, Sequence[Deployment], Sequence[DeploymentError]]:
        listing = client.list_listener_deployments()
        return listing.listener, listing.deployments, listing.invalid

    # One writer per target for the reconciler's life: the cycle closes it after
    # each turn (lock released), and the next cycle reuses what it knows by
    # commit id (the tree listing), so a target whose head did not move costs
    # no `ls-tree`.
    publishers: dict[str, Publisher] = {}

    def open_publisher(target: Target) -> Publisher:
        publisher = publishers.get(target.key)
        if publisher is None:
            publisher = publishers[target.key] = make_publisher(
                settings, target, forges.get(target.key), hosts, metrics
            )
        return publisher

    on_event = _events(progress, metrics)

    reconciler = Reconciler(
        settings,
        list_deployments=list_deployments,
        open_publisher=open_publisher,
        allow_mass_delete=allow_mass_delete,
        dry_run=dry_run,
        force_reseal=force_reseal,
        shard=shard,
        validate=Validator(settings) if validate else None,
        sleep=sleep,
        on_event=on_event,
        confirm_gone=client.confirm_gone,
    )

    def close() -> None:
        if owned:
            client.close()
        for forge in forges.values():
            forge.close()

    return reconciler, close


def _events(progress: Any, metrics: Any) -> Callable[[str, Mapping[str, object]], None]:
    """The cycle's events, to the progress display and the metrics."""

    def on_event(name: str, data: Mapping[str, object]) -> None:
        if progress is not None:
            progress.on_event(name, data)
        if metrics is None:
            return
        if name == "commit":
            metrics.commit(str(data["target"]), str(data["kind"]))
        elif name == "push":
            metrics.push(str(data["target"]), str(data["outcome"]))
        elif name == "internal-error":
            metrics.internal_error(str(data["where"]))

    return on_event


def make_client(
    settings: Settings,
    *,
    metrics: Any = None,
    transport: Any = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """The control-plane client of a reconciler (bridge.controlplane.client)."""
    from bridge.controlplane.client import ControlPlaneClient

    return ControlPlaneClient.from_settings(
        settings.control_plane,
        transport=transport,
        on_response=metrics.control_plane_request if metrics is not None else None,
        sleep=sleep,
    )
