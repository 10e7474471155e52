"""The forge-neutral model of a pull request, as the publisher sees it.

GitHub pull requests, GitLab merge requests and Gitea/Forgejo pull requests
all become these frozen values; each client parses its own forge's JSON into
them (and only there), so nothing above `bridge.forges` reads a forge's raw
answer. Every string here came from outside: it is bounded and free of
control characters (see `clean`), never trusted for anything but display and
comparison.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

ForgeKind = Literal["github", "gitlab", "gitea"]
FORGES: tuple[ForgeKind, ...] = ("github", "gitlab", "gitea")


class PullState(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"  # closed without merging: rejected in review, or closed by the bridge
    MERGED = "merged"


class ReviewState(enum.StrEnum):
    APPROVED = "approved"
    CHANGES_REQUESTED = "changes_requested"
    COMMENTED = "commented"
    DISMISSED = "dismissed"
    PENDING = "pending"


class MergeMethod(enum.StrEnum):
    MERGE = "merge"
    SQUASH = "squash"
    REBASE = "rebase"


class StatusState(enum.StrEnum):
    SUCCESS = "success"
    PENDING = "pending"
    FAILURE = "failure"
    ERROR = "error"


@dataclass(frozen=True)
class PullRequest:
    """One pull (merge) request. `number` is what the forge shows users (GitLab's
    `iid`); `forge_id` is the id the forge's other APIs need (GitHub's GraphQL
    `node_id`, GitLab's global `id`, Gitea's `id`)."""

    number: int
    url: str
    state: PullState
    title: str
    body: str
    head_branch: str
    head_sha: str
    base_branch: str
    draft: bool = False
    author: str | None = None
    created_at: datetime | None = None
    closed_at: datetime | None = None
    merged_at: datetime | None = None
    merged_by: str | None = None
    # The commit the merge put on the base (merge or squash commit); only when merged.
    merge_commit: str | None = None
    labels: tuple[str, ...] = ()
    forge_id: str = ""

    @property
    def is_open(self) -> bool:
        return self.state is PullState.OPEN


@dataclass(frozen=True)
class PullLookup:
    """What the forge knows about a head branch: its open pull request, and the
    most recent one that is merged or closed (None when there is none)."""

    open: PullRequest | None
    last_closed: PullRequest | None


@dataclass(frozen=True)
class NewPull:
    """A pull request to open. Labels, assignees and reviewers are names as the
    config gives them (`team:<slug>` for a team of reviewers)."""

    head: str
    base: str
    title: str
    body: str
    draft: bool = False
    labels: Sequence[str] = ()
    assignees: Sequence[str] = ()
    reviewers: Sequence[str] = ()


@dataclass(frozen=True)
class Opened:
    """The outcome of `Forge.open_pull`: the pull request, whether this call created
    it (False: it existed and was adopted), and the names the forge did not
    take (unknown labels, users or teams), for a warning."""

    pull: PullRequest
    created: bool
    not_applied: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Review:
    """An approval or review: GitHub reviews, GitLab approvals, Gitea reviews."""

    user: str
    state: ReviewState
    submitted_at: datetime | None = None
    commit: str | None = None  # the head commit the review was given on, when the forge says


@dataclass(frozen=True)
class CommitStatus:
    """One status or check on a commit (`context`: its name, e.g. `argocd/app`)."""

    context: str
    state: StatusState
    description: str = ""
    target_url: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class Quota:
    """The rate-limit view of one forge host, for `/metrics`: the primary quota as
    the forge last reported it (None until it did) and our own write budget."""

    host: str
    remaining: int | None
    limit: int | None
    reset_at: float | None  # epoch seconds
    writes_last_minute: int
    writes_last_hour: int
    blocked_until: float | None  # epoch seconds; set while the forge told us to wait


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def clean(value: str, limit: int, *, multiline: bool = False) -> str:
    """A string from a forge made safe to keep, log and compare: control and
    bidirectional-override characters become spaces (but newlines, when
    `multiline`), and it is cut at `limit`."""
    if multiline:
        text = "\n".join(_CONTROL.sub(" ", line) for line in value.splitlines())
    else:
        text = _CONTROL.sub(" ", value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
