"""`audit` of pull-request targets (SPEC §6a): each revision's road from the
bridge's commit through its pull request, the reviewers who approved it and
the merge commit, to who merged it.

The base's history of a pull-request target holds, beside the bridge's own
commits: the forge's merge commits (merge method) or squash commits (squash
method), and the bridge's merges of the base into its head branch. None of
them is drift when the forge vouches for it: a merge or squash commit counts
only when the pull request it names (`#n` / `!n` in its message, a hint
from anyone who can push, never trusted by itself) is the bridge's (its head
branch is the configured one), merged, and its merge commit is exactly this
commit. Anything else on owned folders stays drift.

Asks the forge (the target's forge client, read-only calls) once per merge
commit; the answers were bounded and validated by the forge client.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bridge.config import Settings, Target
from bridge.forges import Forge, ForgeHosts, PullState, ReviewState
from bridge.publishing.history import CommitRecord, _git
from bridge.publishing.pullrequest.ownership import merge_subject

_NUMBER = re.compile(r"[#!]([0-9]{1,9})\b")
MAX_CANDIDATES = 3  # pull request numbers tried per merge commit


class Reviews:
    """The forge's word on one pull-request target's merge commits."""

    def __init__(self, target: Target, forge: Forge, *, bridge_email: str, git_dir: Path) -> None:
        pull = target.publish.pull_request
        if pull is None:
            raise ValueError(f"target {target.namespace} is not in pull-request mode")
        self.forge = forge
        self.head = pull.head_branch
        self.base = target.branch
        self.bridge_email = bridge_email
        self.git_dir = git_dir
        self._known: dict[str, dict[str, Any] | None] = {}

    def close(self) -> None:
        self.forge.close()

    def own_merge(self, rec: CommitRecord) -> bool:
        """The bridge's merge of the base into one of its head branches."""
        if len(rec.parents) != 2 or self.bridge_email not in (
            rec.author_email,
            rec.committer_email,
        ):
            return False
        subject = rec.message.split("\n", 1)[0]
        prefix = f"Merge branch '{self.base}' into "
        branch = subject.removeprefix(prefix)
        return (
            subject.startswith(prefix)
            and branch.startswith(self.head)
            and subject == merge_subject(self.base, branch)
        )

    def landing(self, rec: CommitRecord) -> dict[str, Any] | None:
        """The bridge's pull request that `rec` merged, as the forge says (or None)."""
        if rec.sha not in self._known:
            self._known[rec.sha] = self._ask(rec)
        return self._known[rec.sha]

    def carried(self, rec: CommitRecord) -> set[str]:
        """The commits a merge commit brought in (its second parent's side)."""
        if len(rec.parents) != 2:
            return set()
        out = _git(self.git_dir, "rev-list", f"{rec.parents[0]}..{rec.parents[1]}")
        return set(out.decode().split())

    def _ask(self, rec: CommitRecord) -> dict[str, Any] | None:
        numbers = list(dict.fromkeys(int(n) for n in _NUMBER.findall(rec.message[:4096])))
        for number in numbers[:MAX_CANDIDATES]:
            pull = self.forge.get_pull(number)
            if (
                pull.state is not PullState.MERGED
                or pull.merge_commit != rec.sha
                or not pull.head_branch.startswith(self.head)
                or pull.base_branch != self.base
            ):
                continue
            approvers = sorted(
                {r.user for r in self.forge.reviews(number) if r.state is ReviewState.APPROVED}
            )
            return {
                "pullRequest": pull.number,
                "url": pull.url,
                "headBranch": pull.head_branch,
                "approvedBy": approvers,
                "mergeCommit": rec.sha,
                "mergedBy": pull.merged_by,
                "mergedAt": pull.merged_at.isoformat() if pull.merged_at else None,
            }
        return None


def reviews_for(settings: Settings, target: Target, git_dir: Path) -> Reviews | None:
    """The forge's reviews of a pull-request target (None in push mode)."""
    from bridge.commands.forging import make_forge

    if target.publish.mode != "pull-request" or target.publish.pull_request is None:
        return None
    forge = make_forge(target, ForgeHosts())
    return Reviews(target, forge, bridge_email=settings.git.author_email, git_dir=git_dir)


def describe(review: dict[str, Any] | None) -> str:
    """For the Markdown report: PR, approvers, merged by."""
    if not review:
        return ""
    approved = ", ".join(review.get("approvedBy") or []) or "nobody"
    return (
        f"PR #{review.get('pullRequest')} approved by {approved}, merged by "
        f"{review.get('mergedBy') or '?'} in {str(review.get('mergeCommit'))[:12]}"
    )
