"""The status file, `<workdir>/status.json`: the last cycle's results per
deployment and target, written by `run` (0600, atomically) and read by
`status`. Never a secret.
"""

from __future__ import annotations

import json
import time
from typing import Any

from bridge.config import Settings
from bridge.privatefiles import write_private
from bridge.reconcile.outcomes import CycleReport

STATUS_FILE = "status.json"


def write_status(settings: Settings, report: CycleReport, finished: float) -> None:
    """Keep the last cycle's results where `status` finds them (never secrets)."""
    from bridge.commands.pullstatus import pull_reports
    from bridge.faults import fault_point

    fault_point("write-status")
    workdir = settings.git.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    doc = {
        "finishedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(finished)),
        "outcomes": [
            # Shallow: every field is a scalar, and asdict's deep copy of 1,000
            # outcomes was most of this function.
            {k: v for k, v in vars(o).items() if k != "diff"}
            for o in sorted(report.outcomes, key=lambda o: (o.namespace, o.name, o.deployment_id))
        ],
        "targets": [
            {
                "namespace": t.target.namespace,
                "repo": t.target.repo,
                "branch": t.target.branch,
                "pushed": t.pushed,
                "commits": t.commits,
                "error": str(t.error) if t.error else None,
                # Deletions the mass-delete guard holds (null: not planned this cycle).
                "heldDeletions": None
                if t.held is None
                else [{"id": i, "name": n} for i, n in t.held],
                "approvalNotes": t.approval_notes,
                # Pull-request mode: the target's pull requests (null: push mode).
                "pullRequests": pull_reports(t.pulls),
            }
            for t in report.targets
        ],
        "warnings": report.warnings,
    }
    # Compact: json's C encoder does not indent, and the indenting one cost
    # ~25 ms per 1,000 deployments every cycle. `status` reads it for people.
    # Private (0600): it quotes errors, repo URLs and names, for `status` only.
    write_private(
        workdir / STATUS_FILE,
        (json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8"),
    )


def read_status(settings: Settings) -> dict[str, Any]:
    path = settings.git.workdir / STATUS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
