"""The branch publisher: a plan made real as commits on the target's branch
(one per deployment change, signed when signing is on) and one push, never
forced (SPEC §6). The default `Publisher` of bridge.reconcile.plans; the
pull-request publisher (bridge.publishing.pullrequest) is the other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bridge.faults import checkpoint, crash_soon
from bridge.publishing.repo import TargetRepo
from bridge.reconcile.plans import Plan, Published, TreeView


class RepoView:
    """A `TreeView` of a target's clone at the head its last sync found."""

    def __init__(self, repo: TargetRepo, head: str | None) -> None:
        self._repo = repo
        self._head = head

    @property
    def head(self) -> str | None:
        return self._head

    def ls_tree(self, prefix: str) -> Mapping[str, str]:
        return self._repo.ls_tree(prefix)

    def read_blob(self, blob: str) -> bytes:
        return self._repo.read_blob(blob)

    def read_blobs(
        self, blobs: Sequence[str], *, max_bytes: int | None = None, missing_ok: bool = False
    ) -> dict[str, bytes]:
        return self._repo.read_blobs(blobs, max_bytes=max_bytes, missing_ok=missing_ok)

    def preload_blobs(self, blobs: Sequence[str], *, max_bytes: int | None = None) -> None:
        self._repo.preload_blobs(blobs, max_bytes=max_bytes)

    def blob_sizes(self, entries: Sequence[str], *, missing_ok: bool = False) -> dict[str, int]:
        return self._repo.blob_sizes(entries, missing_ok=missing_ok)

    def last_commit_for(self, path: str) -> tuple[str, str, str, str] | None:
        return self._repo.last_commit_for(path)


class BranchPublisher:
    """Commits straight to the target's branch and pushes (SPEC §6)."""

    def __init__(self, repo: TargetRepo) -> None:
        self.repo = repo

    def open(self) -> TreeView:
        """Fetch; unpushed commits of a crashed cycle are dropped (the remote is the truth)."""
        return RepoView(self.repo, self.repo.sync())

    def publish(self, plan: Plan) -> Published:
        """One commit per change, then one push; PushRejected when someone pushed first."""
        if not plan.changes:
            return Published(shas=[], pushed=False)  # nothing to commit, nothing to tidy
        if self.repo.signer.enabled:
            self.repo.check_signing()  # an unusable key means no commit at all
        checkpoint("before-commit")
        shas = self.repo.commit_all(
            [(change.info.message(), change.write, change.delete) for change in plan.changes]
        )
        checkpoint("before-push")
        crash_soon("during-push", 0.05)
        pushed = self.repo.push()
        checkpoint("after-push")
        return Published(shas=shas, pushed=pushed)

    def close(self) -> None:
        self.repo.close()
