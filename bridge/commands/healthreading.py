"""One target's deployments, assessed: the health read-back's reading of a clone.

Owns what `run` (after each cycle) and `status` (from a shell) both need for a
target: its deployment folders and the state files in them at the branch as
the remote has it, the commit that last changed each folder
(bridge.publishing.lineage), and each deployment's `health: {sync, status,
since, commit, source}` from the observations (bridge.health.assessing, in
two passes: the first records the git questions, one batch answers them).

Also the routes: Kustomization `namespace/name` -> path for the objects
`bootstrap --for flux` made before it annotated their paths, and Application
`argocd/name` -> path as `bootstrap --for argocd` names them (commit statuses
on the forge name only the object).

Reads only. Must not poll a source or write anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from bridge.commands.consumernames import (
    ARGOCD_NAMESPACE,
    FLUX_NAMESPACE,
    dns_name,
    flux_deployment_name,
)
from bridge.config import Target
from bridge.formats.state import MAX_STATE_BYTES, DeploymentState
from bridge.health.assessing import DeploymentHealth, assess_all
from bridge.health.folders import DeploymentFolder
from bridge.health.rules import Observation
from bridge.health.syncing import Questions
from bridge.publishing.clone import Clone
from bridge.publishing.lineage import CloneLineage, FolderChange
from bridge.publishing.reading import TreeReader
from bridge.reconcile.existing import is_state_of

MAX_STATES = 50_000  # parsed state files kept by blob id across cycles


@dataclass(frozen=True)
class Assessed:
    """One deployment of a target: where git has it, and what the sources say."""

    folder: DeploymentFolder
    name: str
    change: FolderChange | None  # the last commit that changed its folder
    health: DeploymentHealth


class StateCache:
    """Parsed state files by blob id: a blob never changes, so a cycle reads
    only the state files whose folder changed since the last."""

    def __init__(self, limit: int = MAX_STATES) -> None:
        self._limit = limit
        self._states: dict[str, DeploymentState | None] = {}

    def read(self, clone: Clone, blobs: Iterable[str]) -> dict[str, DeploymentState]:
        wanted = list(dict.fromkeys(blobs))
        missing = [b for b in wanted if b not in self._states]
        if missing:
            reader = TreeReader(clone)
            try:
                data = reader.read_blobs(missing, max_bytes=MAX_STATE_BYTES, missing_ok=True)
            finally:
                reader.close()
            for blob in missing:
                if len(self._states) >= self._limit:
                    del self._states[next(iter(self._states))]
                # Anyone who can push may have written it: one that does not
                # parse is no deployment of ours (the cycle reports it).
                self._states[blob] = DeploymentState.from_bytes_or_none(data.get(blob))
        return {b: s for b in wanted if (s := self._states.get(b)) is not None}


def deployment_folders(
    target: Target, lineage: CloneLineage, head: str, states: StateCache
) -> list[tuple[DeploymentFolder, str]]:
    """(folder, deployment name) of every deployment of the target at `head`,
    from its state files; the commit is not filled in yet."""
    prefix = f"{PurePosixPath(target.path)}/" if target.path.strip("/") else ""
    files = {
        path: blob
        for path, blob in lineage.state_files(head, prefix).items()
        if path.startswith(prefix) and is_state_of(path[len(prefix) :], target.namespace)
    }
    parsed = states.read(lineage.clone, files.values())
    out = []
    for path, blob in sorted(files.items()):
        state = parsed.get(blob)
        if state is None or state.namespace != target.namespace:
            continue
        folder = str(PurePosixPath(path).parent)
        out.append(
            (
                DeploymentFolder(
                    deployment_id=state.deployment_id,
                    target=target.namespace,
                    repo=target.repo,
                    branch=target.branch,
                    folder=folder,
                    revision_id=state.revision_id,
                ),
                state.deployment_name,
            )
        )
    return out


def assess_target(
    target: Target,
    lineage: CloneLineage,
    observations: Iterable[Observation],
    states: StateCache,
    *,
    head: str | None = None,
) -> list[Assessed]:
    """Every deployment of the target at the branch's head (the tracking ref
    unless `head` is given), assessed. The clone must be open (`ensure()`d)."""
    head = head or lineage.head()
    if head is None:
        return []
    found = deployment_folders(target, lineage, head, states)
    by_ns: dict[str, list[str]] = {}
    for folder, _name in found:
        by_ns.setdefault(str(PurePosixPath(folder.folder).parent), []).append(folder.folder)
    changes: dict[str, FolderChange] = {}
    for ns_dir, inside in by_ns.items():
        changes.update(lineage.folder_changes(head, ns_dir, inside))
    folders = [
        replace(f, commit=change.sha if (change := changes.get(f.folder)) else None)
        for f, _ in found
    ]
    kept = list(observations)
    routes = {**flux_routes(target, by_ns), **argocd_routes(target, by_ns)}
    questions = Questions()
    assess_all(folders, kept, questions, routes=routes)
    lineage.answer(questions)
    health = assess_all(folders, kept, lineage, routes=routes)
    names = {f.deployment_id: name for f, name in found}
    return [
        Assessed(f, names[f.deployment_id], changes.get(f.folder), health[f.deployment_id])
        for f in folders
    ]


def flux_routes(target: Target, ns_dirs: Mapping[str, list[str]]) -> dict[str, str]:
    """Kustomization `flux-system/<name>` -> path, for each namespace folder of
    the target, as `bootstrap --for flux` names them (per namespace, and per
    deployment folder): an event of a Kustomization that carries no
    `gitops-bridge-path` annotation still finds its folder."""
    routes: dict[str, str] = {}
    for ns_dir, folders in ns_dirs.items():
        cluster = PurePosixPath(ns_dir).parent.name
        routes[f"{FLUX_NAMESPACE}/{dns_name('langsmith', cluster, target.namespace)}"] = ns_dir
        for folder in folders:
            name = flux_deployment_name(cluster, target.namespace, PurePosixPath(folder).name)
            routes[f"{FLUX_NAMESPACE}/{name}"] = folder
    return routes


def argocd_routes(target: Target, ns_dirs: Mapping[str, list[str]]) -> dict[str, str]:
    """Application `argocd/<name>` -> path, as `bootstrap --for argocd` names them
    (the per-namespace Application, and the ApplicationSet's per folder): an
    Argo CD notifications commit status names only the Application."""
    routes: dict[str, str] = {}
    for ns_dir, folders in ns_dirs.items():
        cluster = PurePosixPath(ns_dir).parent.name
        routes[f"{ARGOCD_NAMESPACE}/{dns_name('langsmith', cluster, target.namespace)}"] = ns_dir
        for folder in folders:
            name = f"{cluster}-{target.namespace}-{PurePosixPath(folder).name}"
            routes[f"{ARGOCD_NAMESPACE}/{name}"] = folder
    return routes
