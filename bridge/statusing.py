"""`gitops-bridge status`: what is wanted, what is committed, what is pushed, what failed.

Wanted revisions come from the control plane; committed ones from the state
files at the remote head of each target; the last error from the last
`run` cycle's `status.json` in the workdir. Reads only; writes nothing but
the bridge's own local clone cache.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from bridge.config import Settings
from bridge.state import STATE_FILE, DeploymentState


def collect_status(settings: Settings) -> list[dict[str, Any]]:
    from bridge.controlplane.client import ControlPlaneClient
    from bridge.publishing.repo import TargetRepo
    from bridge.running import read_status

    with ControlPlaneClient.from_settings(settings.control_plane) as client:
        listing = client.list_listener_deployments()
    last = read_status(settings)
    last_errors = {
        o["deployment_id"]: o.get("error")
        for o in last.get("outcomes", [])
        if isinstance(o, dict) and o.get("deployment_id")
    }
    rows: list[dict[str, Any]] = []
    wanted = {d.id: d for d in listing.deployments}
    seen: set[str] = set()
    for target in settings.targets:
        cluster = target.cluster or listing.listener.compute_id
        ns_dir = str(PurePosixPath(target.path or ".", cluster, target.namespace))
        ns_dir = ns_dir.removeprefix("./")
        repo = TargetRepo(target, settings.git)
        try:
            repo.sync()
            tree = repo.ls_tree(ns_dir + "/")
            committed: dict[str, tuple[str, DeploymentState]] = {}
            for path, blob in tree.items():
                if PurePosixPath(path).name != STATE_FILE:
                    continue
                try:
                    state = DeploymentState.from_bytes(repo.read_blob(blob))
                except ValueError:
                    continue
                committed[state.deployment_id] = (str(PurePosixPath(path).parent), state)
            ids = sorted(
                {d.id for d in listing.deployments if d.namespace == target.namespace}
                | set(committed)
            )
            for dep_id in ids:
                seen.add(dep_id)
                dep = wanted.get(dep_id)
                folder, state = committed.get(dep_id, ("", None))  # type: ignore[assignment]
                commit = repo.last_commit_for(folder) if folder else None
                wanted_rev = dep.revision_id if dep is not None else None
                committed_rev = state.revision_id if state is not None else None
                rows.append(
                    {
                        "id": dep_id,
                        "name": dep.name
                        if dep is not None
                        else (state.deployment_name if state else ""),
                        "namespace": target.namespace,
                        "repo": target.repo,
                        "folder": folder or None,
                        "wantedRevision": wanted_rev,
                        "committedRevision": committed_rev,
                        "commit": commit[0] if commit else None,
                        "pushed": state is not None
                        and dep is not None
                        and committed_rev == wanted_rev,
                        "inControlPlane": dep is not None,
                        "lastError": last_errors.get(dep_id),
                    }
                )
        finally:
            repo.close()
    for dep in listing.deployments:
        if dep.id not in seen:
            rows.append(
                {
                    "id": dep.id,
                    "name": dep.name,
                    "namespace": dep.namespace,
                    "repo": None,
                    "folder": None,
                    "wantedRevision": dep.revision_id,
                    "committedRevision": None,
                    "commit": None,
                    "pushed": False,
                    "inControlPlane": True,
                    "lastError": last_errors.get(dep.id)
                    or f"no target configured for namespace {dep.namespace!r}",
                }
            )
    for error in listing.invalid:
        rows.append(
            {
                "id": error.deployment_id,
                "name": error.deployment_name,
                "namespace": None,
                "repo": None,
                "folder": None,
                "wantedRevision": None,
                "committedRevision": None,
                "commit": None,
                "pushed": False,
                "inControlPlane": True,
                "lastError": str(error),
            }
        )
    return sorted(rows, key=lambda r: (r["namespace"] or "", r["name"] or "", r["id"]))


def format_status_table(rows: list[dict[str, Any]]) -> str:
    headers = ["NAMESPACE", "NAME", "WANTED", "COMMITTED", "COMMIT", "PUSHED", "LAST ERROR"]
    table = [headers]
    for r in rows:
        table.append(
            [
                r["namespace"] or "-",
                r["name"] or "-",
                (r["wantedRevision"] or "-")[:8],
                (r["committedRevision"] or "-")[:8],
                (r["commit"] or "-")[:12],
                "yes" if r["pushed"] else "no",
                (r["lastError"] or "")[:120],
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table
    )
