"""What a cycle did: per deployment an `Outcome`, per target a `TargetResult`,
and the `CycleReport` that `run`, `status`, `/metrics` and the exit code read.
Data only: nothing here decides or writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from bridge.config import Target
from bridge.errors import BridgeError, DeploymentError

Action = Literal[
    "unchanged", "deployed", "restored", "rekeyed", "deleted", "failed", "refused", "would-change"
]


@dataclass
class Outcome:
    target: str
    namespace: str
    deployment_id: str
    name: str
    action: Action
    revision_id: str | None = None
    commit: str | None = None
    error: str | None = None
    diff: str = ""


PullState = Literal["open", "paused", "rejected", "merged", "closed", "none"]


@dataclass
class PullReport:
    """A pull request of a target in pull-request mode, as the last cycle left it:
    `open` (proposing `deployments`), `paused` (someone else pushed to its branch),
    `rejected` (closed unmerged for this very desired state), `merged`, or
    `closed` (by the bridge: nothing to propose)."""

    kind: Literal["changes", "held-deletions"]
    branch: str
    state: PullState
    number: int | None = None
    url: str | None = None
    created_at: float | None = None  # epoch seconds, for the age of the oldest open one
    merge_commit: str | None = None
    merged_by: str | None = None
    deployments: list[str] = field(default_factory=list)  # ids it proposes
    note: str = ""
    merged_at: float | None = None  # epoch seconds, as the forge says: the road's `merged`


@dataclass
class TargetResult:
    target: Target
    pushed: bool = False
    commits: int = 0
    head: str | None = None
    error: BridgeError | None = None
    # Deletions the mass-delete guard holds, as (id, name); None: not planned.
    held: list[tuple[str, str]] | None = None
    approval_notes: list[str] = field(default_factory=list)
    # Pull-request mode: the target's pull requests (None: push mode, or not published).
    pulls: list[PullReport] | None = None


@dataclass
class CycleReport:
    outcomes: list[Outcome] = field(default_factory=list)
    targets: list[TargetResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.action in ("failed", "refused")]

    def exit_code(self) -> int:
        codes = [t.error.exit_code for t in self.targets if t.error is not None]
        if any(c == 4 for c in codes):
            return 4
        if codes or self.failed:
            return 1
        return 0


def invalid_as_failed(errors: Iterable[DeploymentError]) -> list[Outcome]:
    """Records the control plane sent but we could not parse: failed, never deleted."""
    return [
        Outcome(
            target="-",
            namespace="-",
            deployment_id=e.deployment_id,
            name=e.deployment_name,
            action="failed",
            error=str(e),
        )
        for e in errors
    ]
