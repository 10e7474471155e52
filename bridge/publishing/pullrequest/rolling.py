"""One pull request's turn in a cycle: the rolling pull request of its head
branch brought to what the plan wants (SPEC §6a).

    nothing to propose     close the open pull request with a comment, delete
                           the head branch (only where it still is as seen)
    rejected in review     the last pull request was closed unmerged for this
                           very desired state: nothing is reopened
    open, the bridge's     merge the base in if it moved, commit what the head
                           does not carry yet, push (never forced), update
                           title and body when what they describe changed
    merged or closed       the next change starts a new head from the base
    someone else pushed    stop updating: say so once (body and comment), report
                           it; resume when the branch is the bridge's again; a
                           new desired state closes it and starts anew

The forge is asked (bridge.publishing.pullrequest.pulls) and the branch is
read every cycle: a restart or a second replica finds the same pull request
and adopts it. A push that loses a race raises PushRejected, so the cycle
fetches and plans again, like push mode.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from bridge.forges import PullLookup, PullRequest, PullState
from bridge.forges.texts import PullTexts, marker_of
from bridge.publishing.pullrequest.branches import Commit, HeadBranches
from bridge.publishing.pullrequest.describing import (
    held_nothing_comment,
    nothing_comment,
    paused_comment,
    paused_of,
    superseded_comment,
)
from bridge.publishing.pullrequest.merging import merge_base_into_head
from bridge.publishing.pullrequest.ownership import Layout, first_foreign
from bridge.publishing.pullrequest.proposal import Commit as NewCommit
from bridge.publishing.pullrequest.pulls import PullDesk
from bridge.publishing.pushing import Pusher
from bridge.publishing.writing import CommitWriter
from bridge.reconcile.outcomes import PullReport
from bridge.reconcile.outcomes import PullState as ReportState

log = logging.getLogger("bridge.publishing")

Paused = tuple[str, str]  # (sha, author) of the commit by someone else


@dataclass
class Goal:
    """What one pull request should propose this cycle. `texts(paused)` are its
    title and body (None: nothing to propose); `commits(head tree)` are the
    commits that take a head there, with each change's position among them."""

    kind: Literal["changes", "held-deletions"]
    branch: str
    layout: Layout | None
    texts: Callable[[Paused | None], PullTexts] | None
    commits: Callable[[dict[str, str]], tuple[list[NewCommit], list[int | None]]]
    deployments: list[str]


@dataclass
class Rolled:
    report: PullReport
    shas: list[str | None]  # per change of the goal
    pushed: bool = False
    merged: PullRequest | None = None  # the last pull request, when it was merged


class Roller:
    """Rolls a target's pull requests, one head branch at a time."""

    def __init__(
        self,
        branches: HeadBranches,
        desk: PullDesk,
        writer_for: Callable[[str], CommitWriter],
        *,
        base: str,
        email: str,
        target: str,
    ) -> None:
        self.branches = branches
        self.desk = desk
        self.writer_for = writer_for
        self.base = base
        self.email = email
        self.target = target
        self._said: set[tuple[str, str]] = set()

    def roll(self, goal: Goal, base_sha: str) -> Rolled:
        remote = self.branches.remote.get(goal.branch)
        if goal.texts is None:
            return self._settle(goal, remote, base_sha)
        texts = goal.texts(None)
        lookup = self.desk.lookup(goal.branch, (base_sha, remote, texts.state))
        closed = lookup.last_closed
        merged = closed if closed is not None and closed.state is PullState.MERGED else None
        if lookup.open is None and _rejected(closed, texts.state):
            assert closed is not None
            return Rolled(self._report(goal, "rejected", closed), [], merged=merged)
        start = self._start(goal, remote, base_sha, lookup, texts)
        if isinstance(start, PullReport):
            return Rolled(start, [], merged=merged)
        sha, live = start
        clone = self.branches.start(goal.branch, sha)
        writer = self.writer_for(goal.branch)
        if live and not self.branches.is_ancestor(base_sha, sha):
            assert goal.layout is not None
            merge_base_into_head(
                self.branches,
                writer,
                goal.layout,
                base=self.base,
                base_sha=base_sha,
                head_branch=goal.branch,
                head_sha=sha,
            )
        commits, positions = goal.commits(self.branches.tree(clone.local_head() or sha))
        made = writer.commit_all(commits) if commits else []
        tip = clone.local_head()
        if tip is None or tip == base_sha:
            return Rolled(self._report(goal, "none"), [None] * len(positions), merged=merged)
        pushed = Pusher(clone).push()
        if pushed:
            self.desk.forget(goal.branch)
        # Not the open pull request when the start closed it (superseded).
        pull = self._publish_pull(goal, lookup.open if live else None, texts, tip)
        shas = [made[p] if p is not None else None for p in positions]
        return Rolled(self._report(goal, "open", pull), shas, pushed, merged)

    # -- steps ----------------------------------------------------------------------

    def _start(
        self,
        goal: Goal,
        remote: str | None,
        base_sha: str,
        lookup: PullLookup,
        texts: PullTexts,
    ) -> tuple[str, bool] | PullReport:
        """Where the head's commits go: (sha, live). Live: on the open (or never
        opened) head of the bridge's; else a new head from the base. A report
        instead when the bridge must not touch the branch."""
        if remote is None:
            return base_sha, False
        pull, closed = lookup.open, lookup.last_closed
        foreign = self._foreign(base_sha, remote, goal.branch)
        if pull is not None:
            if foreign is None:
                return remote, True
            if marker_of(pull.body) == texts.state:
                return self._pause(goal, pull, foreign)
            # A new desired state, and a branch the bridge cannot update: anew.
            self.desk.close(pull, superseded_comment(self.base))
            self.branches.delete_remote(goal.branch, remote)
            return base_sha, False
        if self._spent(goal.branch, remote, base_sha, closed):
            self.branches.delete_remote(goal.branch, remote)
            return base_sha, False
        if foreign is not None:
            return self._pause(goal, None, foreign)
        return remote, True  # pushed, but its pull request was never opened

    def _spent(self, branch: str, remote: str, base_sha: str, closed: PullRequest | None) -> bool:
        """Whether the head is what a merged or closed pull request left: merged
        into the base, or where that pull request saw it last (or beyond it by
        the bridge's own commits only)."""
        if self.branches.is_ancestor(remote, base_sha):
            return True
        if closed is None or not closed.head_sha:
            return False
        if remote == closed.head_sha:
            return True
        return self.branches.is_ancestor(closed.head_sha, remote) and (
            self._foreign(closed.head_sha, remote, branch) is None
        )

    def _settle(self, goal: Goal, remote: str | None, base_sha: str) -> Rolled:
        """Nothing to propose: close what is open, delete a spent head branch."""
        # Asked even without a head branch (the forge may have deleted it after the
        # merge): the last pull request is what `status` reports (cached lookups).
        lookup = self.desk.lookup(goal.branch, (base_sha, remote, None))
        pull = lookup.open
        foreign = self._foreign(base_sha, remote, goal.branch) if remote is not None else None
        if (
            remote is not None
            and foreign is not None
            and not self._spent(goal.branch, remote, base_sha, lookup.last_closed)
        ):
            # Commits by others: theirs to close; the bridge reports and waits.
            if pull is not None:
                return Rolled(self._pause_report(goal, pull, foreign), [])
            return Rolled(self._pause_report(goal, None, foreign), [])
        if pull is not None:
            why = nothing_comment(self.base) if goal.kind == "changes" else held_nothing_comment()
            self.desk.close(pull, why)
            log.info(
                "target %s: closed pull request #%d (%s): nothing to propose",
                self.target,
                pull.number,
                pull.url,
                extra={"target": self.target, "event": "pull-closed"},
            )
        if remote is not None:
            self.branches.delete_remote(goal.branch, remote)
        if pull is not None:
            return Rolled(self._report(goal, "closed", pull), [])
        closed = lookup.last_closed
        if closed is not None:
            state: ReportState = "merged" if closed.state is PullState.MERGED else "closed"
            return Rolled(self._report(goal, state, closed), [], merged=_if_merged(closed))
        return Rolled(self._report(goal, "none"), [])

    def _publish_pull(
        self, goal: Goal, pull: PullRequest | None, texts: PullTexts, tip: str
    ) -> PullRequest:
        """Open (or adopt) the pull request, update what it says, ask for auto-merge."""
        if pull is None:
            pull, created = self.desk.open(goal.branch, texts, tip)
            if created:
                log.info(
                    "target %s: opened pull request #%d (%s)",
                    self.target,
                    pull.number,
                    pull.url,
                    extra={"target": self.target, "event": "pull-opened"},
                )
        else:
            created = False
        if not created:
            pull = self.desk.update(_at(pull, tip), texts)
        pull = _at(pull, tip)
        self.desk.auto_merge(pull)
        return pull

    def _foreign(self, since: str, until: str, branch: str) -> Commit | None:
        commits = self.branches.commits(since, until)
        return first_foreign(commits, email=self.email, base=self.base, head=branch)

    def _pause(self, goal: Goal, pull: PullRequest | None, foreign: Commit) -> PullReport:
        """Stop updating: say so once on the pull request (its body's marker
        remembers it, so a restart or a replica does not say it again)."""
        if pull is not None and paused_of(pull.body) != foreign.sha and goal.texts is not None:
            paused = goal.texts((foreign.sha, foreign.author))
            self.desk.update(pull, paused)
            self.desk.comment(pull, paused_comment(foreign.sha, foreign.author, goal.branch))
        return self._pause_report(goal, pull, foreign)

    def _pause_report(self, goal: Goal, pull: PullRequest | None, foreign: Commit) -> PullReport:
        note = (
            f"commit {foreign.sha[:12]} on {goal.branch} was not made by the bridge "
            f"(author {foreign.author[:120]}); the bridge does not update the branch"
        )
        if (goal.branch, foreign.sha) not in self._said:
            self._said.add((goal.branch, foreign.sha))
            log.warning(
                "target %s: %s%s",
                self.target,
                note,
                f" or pull request #{pull.number} ({pull.url})" if pull is not None else "",
                extra={"target": self.target, "event": "pull-paused"},
            )
        report = self._report(goal, "paused", pull)
        report.note = note
        return report

    def _report(
        self, goal: Goal, state: ReportState, pull: PullRequest | None = None
    ) -> PullReport:
        return PullReport(
            kind=goal.kind,
            branch=goal.branch,
            state=state,
            number=pull.number if pull is not None else None,
            url=pull.url if pull is not None else None,
            created_at=pull.created_at.timestamp() if pull and pull.created_at else None,
            merge_commit=pull.merge_commit if pull is not None else None,
            merged_by=pull.merged_by if pull is not None else None,
            deployments=list(goal.deployments),
            merged_at=pull.merged_at.timestamp() if pull and pull.merged_at else None,
        )


def _rejected(closed: PullRequest | None, state: str) -> bool:
    """Closed unmerged by someone for exactly this desired state (the bridge's own
    closes carry no state marker: bridge.publishing.pullrequest.describing)."""
    return (
        closed is not None and closed.state is PullState.CLOSED and marker_of(closed.body) == state
    )


def _if_merged(pull: PullRequest) -> PullRequest | None:
    return pull if pull.state is PullState.MERGED else None


def _at(pull: PullRequest, tip: str) -> PullRequest:
    """The pull request with the head the bridge just pushed (a forge's answer
    from before the push still names the old one)."""
    import dataclasses

    return dataclasses.replace(pull, head_sha=tip)
