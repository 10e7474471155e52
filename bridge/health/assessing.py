"""Per deployment: its sync and health, from what the sources said and what git holds.

Owns the combination that `status`, `/metrics` and `audit` show (SPEC §8):
`health: {sync, status, since, commit, source}` per deployment. For each
deployment folder it takes the observations whose scope holds the folder
(the most specific path first: a per-deployment Application or Kustomization
over a per-namespace one; among equals, the latest word), asks
bridge.health.syncing whether the applied commit carries the deployment's
revision, and says when the answer is per namespace.

Pure apart from the injected TreeReader. Must not fetch, poll or write.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bridge.health.folders import DeploymentFolder, Scope, normal_path
from bridge.health.rules import Observation, Status, Sync
from bridge.health.syncing import TreeReader, sync_state


@dataclass(frozen=True)
class DeploymentHealth:
    sync: Sync
    status: Status
    since: datetime | None = None
    commit: str | None = None  # the commit the consumer applied
    source: str | None = None  # e.g. "argocd argocd/agents-support-bot"
    per_namespace: bool = False  # the source's object holds the whole namespace
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        """The `health` object of `status --output json` (SPEC §8)."""
        return {
            "sync": self.sync,
            "status": self.status,
            "since": iso(self.since),
            "commit": self.commit,
            "source": self.source,
        }


UNKNOWN = DeploymentHealth(sync="unknown", status="unknown", reason="no health source reports it")


def iso(when: datetime | None) -> str | None:
    if when is None:
        return None
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def resolve_scope(obs: Observation, routes: Mapping[str, str]) -> Scope | None:
    """The observation's scope, or the path the wiring knows for its object
    (Flux events do not carry the Kustomization's path)."""
    if obs.scope is not None and obs.scope.path is not None:
        return obs.scope
    path = routes.get(obs.object)
    if path is None:
        return None
    branch = obs.scope.branch if obs.scope is not None else None
    return Scope(repo=None, branch=branch, path=normal_path(path))


def assess(
    folder: DeploymentFolder,
    observations: Iterable[Observation],
    reader: TreeReader,
    *,
    routes: Mapping[str, str] | None = None,
) -> DeploymentHealth:
    """The health of one deployment. `routes`: Kustomization `ns/name` -> path."""
    best: tuple[tuple[int, datetime, bool], Observation, Scope] | None = None
    for obs in observations:
        scope = resolve_scope(obs, routes or {})
        if scope is None or not scope.holds(folder):
            continue
        # At the same path and time, the API's word over a notification's: it
        # is the whole Application, read now, and makes the choice stable.
        rank = (len(scope.path or ""), obs.at, obs.source == "argocd")
        if best is None or rank > best[0]:
            best = (rank, obs, scope)
    if best is None:
        return UNKNOWN
    _, obs, scope = best
    sync = sync_state(folder.commit, obs.applied, folder.folder, reader)
    return DeploymentHealth(
        sync=sync,
        status=obs.status,
        since=obs.since,
        commit=obs.applied,
        source=f"{obs.source} {obs.object}",
        per_namespace=not scope.exact(folder),
        reason=obs.reason,
    )


def assess_all(
    folders: Iterable[DeploymentFolder],
    observations: Iterable[Observation],
    reader: TreeReader,
    *,
    routes: Mapping[str, str] | None = None,
) -> dict[str, DeploymentHealth]:
    """`assess` for every folder, keyed by deployment id."""
    kept = list(observations)
    return {f.deployment_id: assess(f, kept, reader, routes=routes) for f in folders}
