"""`gitops-bridge status`: what is wanted, what is committed, what is pushed, what failed.

Wanted revisions come from the control plane; committed ones from the state
files at the remote head of each target; the last error from the last
`run` cycle's `status.json` in the workdir; sync, health and lead time from
the health sources (bridge.commands.healthstatus). Reads only; writes nothing
but the bridge's own local clone cache.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from bridge.config import Settings, Target
from bridge.formats.state import MAX_STATE_BYTES, STATE_FILE, DeploymentState
from bridge.observability.display import escape, table


def collect_status(settings: Settings, health: Any = None) -> list[dict[str, Any]]:
    """One row per deployment. `health`: the sources' word
    (healthstatus.StatusHealth.gather); None: gathered here."""
    from bridge.commands.healthstatus import StatusHealth
    from bridge.commands.pullstatus import pulls_of
    from bridge.commands.statusfile import read_status
    from bridge.controlplane.client import ControlPlaneClient

    if health is None:
        health = StatusHealth.gather(settings)

    with ControlPlaneClient.from_settings(settings.control_plane) as client:
        listing = client.list_listener_deployments()
    last = read_status(settings)
    last_errors = {
        o["deployment_id"]: o.get("error")
        for o in last.get("outcomes", [])
        if isinstance(o, dict) and o.get("deployment_id")
    }
    held_ids = {h["id"] for t in held_deletions(last) for h in t["heldDeletions"]}
    pulls = pulls_of(last)
    rows: list[dict[str, Any]] = []
    for target in settings.targets:
        rows += _target_rows(
            settings,
            target,
            listing,
            last_errors,
            held_ids,
            health,
            pulls.get(target.namespace, []),
        )
    seen = {row["id"] for row in rows}
    namespaces = set(listing.listener.namespaces)
    for dep in listing.deployments:
        if dep.id not in seen:
            unmanaged = (
                f"namespace {dep.namespace!r} is not one of the listener's namespaces"
                if dep.namespace not in namespaces
                else f"no target configured for namespace {dep.namespace!r} (add a target)"
            )
            rows.append(
                _row(
                    dep.id,
                    dep.name,
                    dep.namespace,
                    wanted=dep.revision_id,
                    last_error=last_errors.get(dep.id) or unmanaged,
                )
                | health.fields(None, None)
            )
    for error in listing.invalid:
        rows.append(
            _row(error.deployment_id, error.deployment_name, None, last_error=str(error))
            | health.fields(None, None)
        )
    return sorted(rows, key=lambda r: (r["namespace"] or "", r["name"] or "", r["id"]))


def _row(
    dep_id: str,
    name: str | None,
    namespace: str | None,
    *,
    wanted: str | None = None,
    last_error: str | None = None,
) -> dict[str, Any]:
    """A row of a deployment the bridge does not commit (unmanaged or unparsed)."""
    return {
        "id": dep_id,
        "name": name,
        "namespace": namespace,
        "repo": None,
        "folder": None,
        "wantedRevision": wanted,
        "committedRevision": None,
        "commit": None,
        "pushed": False,
        "inControlPlane": True,
        "lastError": last_error,
        "deletionHeld": False,
        "pullRequest": None,
    }


def _committed(repo: Any, ns_dir: str) -> dict[str, tuple[str, DeploymentState]]:
    """Deployment id -> (folder, state) of the state files under `ns_dir` at the head.

    Bounded: a state file is anyone's to push; one that is too large, not a
    file or not what the bridge writes is not a committed deployment."""
    tree = repo.ls_tree(ns_dir + "/")
    states = {p: b for p, b in tree.items() if PurePosixPath(p).name == STATE_FILE}
    read = repo.read_blobs(list(states.values()), max_bytes=MAX_STATE_BYTES)
    committed: dict[str, tuple[str, DeploymentState]] = {}
    for path, blob in states.items():
        try:
            state = DeploymentState.from_bytes(read[blob])
        except (KeyError, ValueError):
            continue
        committed[state.deployment_id] = (str(PurePosixPath(path).parent), state)
    return committed


def _target_rows(
    settings: Settings,
    target: Target,
    listing: Any,
    last_errors: dict[str, Any],
    held_ids: set[str],
    health: Any,
    pulls: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """One row per deployment the control plane lists for the target or its repo holds."""
    from bridge.commands.forging import pull_forge, use_forge_credentials
    from bridge.commands.pullstatus import add_pull_states
    from bridge.publishing.repo import TargetRepo

    cluster = target.cluster or listing.listener.compute_id
    ns_dir = str(PurePosixPath(target.path or ".", cluster, target.namespace)).removeprefix("./")
    wanted = {d.id: d for d in listing.deployments}
    rows = []
    repo = TargetRepo(target, settings.git)
    forge = pull_forge(target)
    if forge is not None:
        use_forge_credentials(repo, forge, target)
    try:
        repo.sync()
        committed = _committed(repo, ns_dir)
        assessed = health.assess(target, repo)
        ids = {d.id for d in listing.deployments if d.namespace == target.namespace}
        for dep_id in sorted(ids | set(committed)):
            dep = wanted.get(dep_id)
            folder, state = committed.get(dep_id, ("", None))
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
                    "pushed": state is not None and dep is not None and committed_rev == wanted_rev,
                    "inControlPlane": dep is not None,
                    "lastError": last_errors.get(dep_id),
                    "deletionHeld": dep_id in held_ids,
                    "pullRequest": None,  # pull-request targets: set below
                }
                | health.fields(committed_rev, assessed.get(dep_id), target.namespace)
            )
        add_pull_states(rows, target, pulls, repo)
    finally:
        repo.close()
        if forge is not None:
            forge.close()
    return rows


def held_deletions(last: dict[str, Any]) -> list[dict[str, Any]]:
    """Per target of the last `run` cycle: the deletions the mass-delete guard holds
    and what it said about approval files (`status.json`, written by `run`)."""
    out = []
    for t in last.get("targets", []):
        if not isinstance(t, dict):
            continue
        held = t.get("heldDeletions") or []
        notes = t.get("approvalNotes") or []
        if held or notes:
            out.append(
                {
                    "namespace": t.get("namespace"),
                    "repo": t.get("repo"),
                    "branch": t.get("branch"),
                    "heldDeletions": [h for h in held if isinstance(h, dict) and "id" in h],
                    "approvalNotes": [str(n) for n in notes],
                }
            )
    return out


def format_held(targets: list[dict[str, Any]]) -> str:
    """Lines for `status` (table): held deletions by name and id, approval problems.
    Names, ids and notes come from outside (the control plane, approval files):
    every line is escaped."""
    lines = []
    for t in targets:
        held = t["heldDeletions"]
        if held:
            which = ", ".join(f"{h.get('name')} ({h['id']})" for h in held)
            lines.append(
                f"target {t['namespace']}: {len(held)} deletion(s) held by the mass-delete "
                f"guard: {which}; approve them in .gitops-bridge/approve-delete of the "
                f"namespace folder on branch {t['branch']}, or run once with --allow-mass-delete"
            )
        lines.extend(f"target {t['namespace']}: {note}" for note in t["approvalNotes"])
    return "\n".join(escape(line) for line in lines)


def format_status_table(rows: list[dict[str, Any]], *, health: bool = False) -> str:
    """The table; with `health`, sync, health, since when and lead time too
    (and a note per row where one is due: per namespace, unreachable, why);
    a pull-request column only where a target is in pull-request mode."""
    from bridge.commands.healthstatus import lead_time
    from bridge.commands.pullstatus import describe

    review = any(r.get("pullRequest") for r in rows)
    headers = ["NAMESPACE", "NAME", "WANTED", "COMMITTED", "COMMIT", "PUSHED"]
    if review:
        headers.append("PULL REQUEST")
    if health:
        headers += ["SYNC", "HEALTH", "SINCE", "LEAD TIME"]
    headers.append("LAST ERROR" if not health else "LAST ERROR / HEALTH NOTE")

    def cells(r: dict[str, Any]) -> list[Any]:
        out = [
            r["namespace"] or "-",
            r["name"] or "-",
            (r["wantedRevision"] or "-")[:8],
            (r["committedRevision"] or "-")[:8],
            (r["commit"] or "-")[:12],
            "yes" if r["pushed"] else "no",
        ]
        if review:
            out.append(escape(describe(r.get("pullRequest")))[:160])
        note = r["lastError"] or ""
        if health:
            h = r["health"]
            out += [h["sync"], h["status"], h["since"] or "-", lead_time(r["leadTimeSeconds"])]
            note = note or r.get("healthNote") or ""
        # Escaped before it is cut: the 120 are characters as shown.
        return [*out, escape(note)[:120]]

    return table(headers, (cells(r) for r in rows))
