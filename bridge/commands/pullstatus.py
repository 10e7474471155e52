"""What `status` says about pull-request targets (SPEC §6a): per deployment,
pending in pull request #n (URL), paused, rejected in review, or merged at
commit X. The pull requests come from the last `run` cycle (`status.json`,
which `run` writes from each target's `PullReport`s); "merged at" comes from
the base branch itself: the commit of its first-parent line that brought the
deployment's last commit in (the merge commit, or the squash commit).

Reads only. Every value from a forge was bounded by the forge clients; the
table escapes it again like every other cell.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from bridge.config import Target
from bridge.reconcile.outcomes import PullReport

MAX_PULLS = 200  # per target in status.json: a target has a handful
_WAITING = {"open": "pending", "paused": "paused", "rejected": "rejected"}


def pull_reports(pulls: list[PullReport] | None) -> list[dict[str, Any]] | None:
    """A target's pull requests as `status.json` keeps them (None: push mode)."""
    if pulls is None:
        return None
    return [asdict(p) for p in pulls[:MAX_PULLS]]


def pulls_of(last: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Target namespace -> its pull requests, from the last cycle's status file."""
    found: dict[str, list[dict[str, Any]]] = {}
    for t in last.get("targets", []):
        if isinstance(t, dict) and isinstance(t.get("pullRequests"), list):
            found[str(t.get("namespace"))] = [
                p for p in t["pullRequests"][:MAX_PULLS] if isinstance(p, dict)
            ]
    return found


def add_pull_states(
    rows: list[dict[str, Any]], target: Target, pulls: list[dict[str, Any]], repo: Any
) -> None:
    """Set each row's `pullRequest` for a pull-request target (in place)."""
    if target.publish.mode != "pull-request":
        return
    waiting: dict[str, dict[str, Any]] = {}
    for pull in pulls:
        state = _WAITING.get(str(pull.get("state")))
        ids = pull.get("deployments")
        if state is None or not isinstance(ids, list):
            continue
        for dep_id in ids:
            waiting.setdefault(
                str(dep_id),
                {
                    "state": state,
                    "number": pull.get("number"),
                    "url": pull.get("url"),
                    "kind": pull.get("kind"),
                    "note": pull.get("note") or "",
                },
            )
    for row in rows:
        found = waiting.get(row["id"])
        if found is None and row["pushed"] and row["commit"]:
            landed = repo.landed_by(row["commit"])
            if landed is not None:
                found = {"state": "merged", "commit": landed}
        row["pullRequest"] = found


def describe(pull: dict[str, Any] | None) -> str:
    """One table cell: what became of the deployment's change in review."""
    if not pull:
        return "-"
    where = f"PR #{pull.get('number')} ({pull.get('url')})"
    state = pull.get("state")
    if state == "merged":
        return f"merged at commit {str(pull.get('commit'))[:12]}"
    if state == "pending":
        return f"pending in {where}"
    if state == "rejected":
        return f"rejected in review: {where}"
    if state == "paused":
        return f"paused (someone else pushed to its branch): {where}"
    return str(state)
