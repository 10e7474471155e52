"""The forge side of one target's pull requests: find, open or adopt, update,
close with a comment, ask for auto-merge. Every call goes through the forge
client (bounded answers, the host's write budget, retry-after honoured).

Stateless by design: a pull request is found through the forge by its head
branch, every time it matters; nothing of it is kept across restarts. Within
one process a lookup is reused while nothing it depends on moved (the base,
the head, the desired state) for at most `RECHECK` seconds, so a quiet target
costs the forge no request on most cycles: a merge moves the base and a push
moves the head, so both are seen at once; a pull request closed by hand is
seen within `RECHECK` seconds.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from bridge.config import PullRequestSettings
from bridge.forges import Forge, ForgeRejected, MergeMethod, NewPull, PullLookup, PullRequest
from bridge.forges.texts import PullTexts, marker_of
from bridge.publishing.pullrequest.describing import closed_body, paused_of

log = logging.getLogger("bridge.publishing")

RECHECK = 120.0  # seconds a lookup is trusted while nothing it depends on moved
LookupKey = tuple[str | None, str | None, str | None]


class PullDesk:
    """One target's pull requests on its forge."""

    def __init__(
        self,
        forge: Forge,
        settings: PullRequestSettings,
        *,
        base: str,
        target: str,
        clock: Callable[[], float],
    ) -> None:
        self.forge = forge
        self.settings = settings
        self.base = base
        self.target = target
        self.clock = clock
        self._lookups: dict[str, tuple[LookupKey, float, PullLookup]] = {}
        self._auto_merged: set[tuple[int, str]] = set()  # (number, head sha) asked for
        self._warned: set[tuple[str, ...]] = set()

    # -- reading ----------------------------------------------------------------

    def lookup(self, branch: str, key: LookupKey) -> PullLookup:
        known = self._lookups.get(branch)
        now = self.clock()
        if known is not None and known[0] == key and now - known[1] < RECHECK:
            return known[2]
        found = self.forge.find_pull(branch, self.base)
        self._lookups[branch] = (key, now, found)
        return found

    def forget(self, branch: str) -> None:
        self._lookups.pop(branch, None)

    # -- writing ----------------------------------------------------------------

    def open(self, branch: str, texts: PullTexts, head_sha: str) -> tuple[PullRequest, bool]:
        """Open the pull request of `branch`, or adopt the one the forge says exists
        (another replica, or a restart, opened it first); (pull, created)."""
        self.forget(branch)
        s = self.settings
        opened = self.forge.open_pull(
            NewPull(
                head=branch,
                base=self.base,
                title=texts.title,
                body=texts.body,
                draft=s.draft,
                labels=s.labels,
                assignees=s.assignees,
                reviewers=s.reviewers,
            )
        )
        if opened.not_applied and self._once("not-applied", *opened.not_applied):
            log.warning(
                "target %s: %s did not take %s on pull request #%d (unknown label, user or "
                "team, or one who may not review); the pull request is open without them",
                self.target,
                self.forge.kind,
                ", ".join(sorted(opened.not_applied)),
                opened.pull.number,
                extra={"target": self.target},
            )
        return dataclasses.replace(opened.pull, head_sha=head_sha), opened.created

    def update(self, pull: PullRequest, texts: PullTexts) -> PullRequest:
        """Title and body, only when what they describe changed (the hidden markers)."""
        if marker_of(pull.body) == texts.state and paused_of(pull.body) == paused_of(texts.body):
            return pull
        self.forget(pull.head_branch)
        updated = self.forge.update_pull(pull.number, title=texts.title, body=texts.body)
        return dataclasses.replace(updated, head_sha=pull.head_sha or updated.head_sha)

    def close(self, pull: PullRequest, comment: str) -> None:
        """Close a pull request the bridge no longer wants open: its state marker
        first (so it never reads as rejected by a reviewer), then the comment
        saying why, then the close."""
        self.forget(pull.head_branch)
        body = closed_body(pull.body)
        if body != pull.body:
            self.forge.update_pull(pull.number, body=body)
        self.forge.close_pull(pull.number, comment=comment)

    def comment(self, pull: PullRequest, text: str) -> None:
        self.forge.comment(pull.number, text)

    def auto_merge(self, pull: PullRequest) -> None:
        """Ask for the forge's native auto-merge, once per head commit. A refusal is
        logged and asked again on the next cycle (GitLab refuses until a pipeline
        exists)."""
        method = self.settings.auto_merge
        if method is None or (pull.number, pull.head_sha) in self._auto_merged:
            return
        try:
            self.forge.enable_auto_merge(pull, MergeMethod(method))
        except ForgeRejected as e:
            if self._once("auto-merge", str(pull.number), pull.head_sha):
                log.warning(
                    "target %s: %s; asked again next cycle",
                    self.target,
                    e,
                    extra={"target": self.target},
                )
            return
        self._auto_merged.add((pull.number, pull.head_sha))

    def _once(self, *key: str) -> bool:
        if key in self._warned:
            return False
        self._warned.add(key)
        return True
