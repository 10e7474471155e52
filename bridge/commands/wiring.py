"""Builds a `Reconciler` from settings with the real collaborators: the control
plane client, one branch publisher (a target's clone) per target, Kustomize
validation, metrics and progress. Used by `run`, `diff`, `rekey`, `demo`.
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
) -> tuple[Reconciler, Callable[[], None]]:
    """A reconciler with the real collaborators, and a function that closes them.
    `sleep` (retry and backoff waits) is injected so tests need no real time."""
    from bridge.controlplane.client import ControlPlaneClient
    from bridge.publishing.repo import TargetRepo

    client = ControlPlaneClient.from_settings(
        settings.control_plane,
        transport=transport,
        on_response=metrics.control_plane_request if metrics is not None else None,
        sleep=sleep,
    )

    def list_deployments() -> tuple[Listener, Sequence[Deployment], Sequence[DeploymentError]]:
        listing = client.list_listener_deployments()
        return listing.listener, listing.deployments, listing.invalid

    # One writer per target for the reconciler's life: the cycle closes it after
    # each turn (lock released), and the next cycle reuses what it knows by
    # commit id (the tree listing), so a target whose head did not move costs
    # no `ls-tree`.
    publishers: dict[str, Publisher] = {}

    def open_publisher(target: Target) -> Publisher:
        from bridge.publishing.publisher import BranchPublisher

        publisher = publishers.get(target.key)
        if publisher is None:
            publisher = publishers[target.key] = BranchPublisher(TargetRepo(target, settings.git))
        return publisher

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
    return reconciler, client.close
