"""Pushing a clone's branch: only when it is ahead, never forced (the server
refuses anything but a fast-forward), a rejection told apart from a refusal.
"""

from __future__ import annotations

import logging

from bridge.errors import GitError, PushRejected
from bridge.publishing.clone import Clone
from bridge.publishing.transport import (
    REMOTE_CONFIG,
    REMOTE_TIMEOUT,
)

log = logging.getLogger("bridge.publishing")


class Pusher:
    """Pushes one clone's local branch to its remote."""

    def __init__(self, clone: Clone) -> None:
        self.clone = clone

    def push(self) -> bool:
        """Push the local branch if it is ahead; never forced. False: nothing to push."""
        self.clone.ensure()
        local = self.clone.local_head()
        if local is None:
            return False
        remote = self.clone.rev(self.clone.tracking_ref)
        if remote == local:
            return False
        if remote is not None:
            ahead = self.clone.must("rev-list", "rev-list", "--count", f"{remote}..{local}")
            if ahead.decode().strip() == "0":
                return False
        # No leading "+" and no --force: the server refuses anything but a fast-forward.
        result = self.clone.git(
            "push",
            "--porcelain",
            "--no-recurse-submodules",
            "origin",
            f"{self.clone.local_ref}:{self.clone.local_ref}",
            env=self.clone.transport.remote_env(),
            timeout=REMOTE_TIMEOUT,
            config=REMOTE_CONFIG,
        )
        status = _porcelain_status(result.stdout.decode("utf-8", "replace"), self.clone.local_ref)
        if status is None:
            raise self.clone.transport.failure("push to", result.stderr)
        flag, summary = status
        if flag == "!":
            raise self._rejected(summary, result.stderr)
        if result.returncode != 0:
            raise self.clone.transport.failure("push to", result.stderr)
        # git already moved the tracking ref; make sure even for odd remotes.
        self.clone.must("update the tracking ref", "update-ref", self.clone.tracking_ref, local)
        self.clone.ref_snapshot = None
        self.clone.maintain()
        return True

    def _rejected(self, summary: str, stderr: str) -> GitError:
        where = (
            f"target {self.clone.ns}: push of {self.clone.branch} to {self.clone.transport.display_url} was "
            f"refused: {self.clone.transport.clean(summary)}"
        )
        low = summary.lower()
        if summary.startswith("[rejected]") or "lock" in low or "failed to update ref" in low:
            return PushRejected(
                where,
                hint="someone else pushed first; the bridge fetches, re-renders on the new head "
                "and retries (it never force-pushes)",
            )
        return GitError(
            where + (f" ({self.clone.transport.clean(stderr)})" if stderr.strip() else ""),
            hint=f"a hook or branch protection on the server refused the bridge's commit; allow "
            f"the bridge's identity to push to {self.clone.branch} (the bridge never force-pushes)",
        )


def _porcelain_status(stdout: str, ref: str) -> tuple[str, str] | None:
    """(flag, summary) of `ref` in `git push --porcelain` output, or None."""
    for line in stdout.splitlines():
        if len(line) < 2 or line[1] != "\t":
            continue
        flag, refs, *rest = line.split("\t")
        src, _, dst = refs.partition(":")
        if dst == ref or src == ref:
            return flag, rest[0] if rest else ""
    return None
