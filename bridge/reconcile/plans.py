"""The values a cycle hands from stage to stage, and its two seams.

    publisher.open() -> TreeView        a read-only snapshot of the target's tree
    planning         -> Draft -> Plan   what to commit, one Change per deployment change
    guard            -> Decision        which deletions go ahead (bridge.reconcile.guard)
    publisher.publish(Plan) -> Published

`TreeView` is all that planning and the guard see of git: they read a tree
and blobs, and never write. `Publisher` is where a plan becomes real: a push
to the target's branch (bridge.publishing.publisher.BranchPublisher) or a
pull request (bridge.publishing.pullrequest.PullRequestPublisher); adding one
touches neither planning nor the guard.
Data and protocols only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bridge.config import Target
from bridge.formats.commits import CommitInfo
from bridge.reconcile.outcomes import Outcome, PullReport


class TreeView(Protocol):
    """A target's tree at one commit (`head`; None: the branch does not exist yet)."""

    @property
    def head(self) -> str | None: ...

    def ls_tree(self, prefix: str) -> Mapping[str, str]:
        """path -> blob id under `prefix` ("dir/" = a folder, else one exact path);
        read only (the same mapping is handed out while the head stays)."""
        ...

    def read_blob(self, blob: str) -> bytes: ...

    def read_blobs(
        self, blobs: Sequence[str], *, max_bytes: int | None = None, missing_ok: bool = False
    ) -> dict[str, bytes]:
        """Blob id -> bytes. With `max_bytes`, ids may come from anyone: each is
        sized first, and what is not a blob of at most `max_bytes` is left out,
        never read; `missing_ok`: an id the clone lacks is left out too."""
        ...

    def preload_blobs(self, blobs: Sequence[str], *, max_bytes: int | None = None) -> None:
        """Read blobs ahead of their use (a hint; each is handed out once)."""
        ...

    def blob_sizes(self, entries: Sequence[str], *, missing_ok: bool = False) -> dict[str, int]:
        """Blob id -> size of those of `entries` that are blobs; nothing is read."""
        ...

    def last_commit_for(self, path: str) -> tuple[str, str, str, str] | None:
        """(sha, author name, author email, subject) of the last commit touching path."""
        ...


@dataclass
class Change:
    """One commit: what it says and exactly what it writes, decided together."""

    info: CommitInfo
    write: dict[str, bytes]
    delete: list[str]
    outcome: Outcome


@dataclass
class Plan:
    """Everything one target's cycle decided, ready to publish."""

    target: Target
    head: str | None  # the commit the plan was made on
    outcomes: list[Outcome]
    changes: list[Change]
    # Deletions the mass-delete guard holds, as (id, name), and its notes.
    held: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Published:
    """What a publisher did with a plan."""

    shas: list[str | None]  # per change: its commit, None where the tree did not change
    pushed: bool
    # Pull-request mode: what each of the target's pull requests is now.
    pulls: list[PullReport] | None = None


class Publisher(Protocol):
    """Makes plans of one target real. Owns the target's clone and credentials."""

    def open(self) -> TreeView:
        """Bring the clone up to date; the tree to plan on. GitError when it cannot."""
        ...

    def publish(self, plan: Plan) -> Published:
        """Commit the plan's changes and publish them. PushRejected when the remote
        moved meanwhile: the cycle opens again and re-plans on the new head.
        Called for every plan, one without changes too (a pull request may have
        to be closed); a publisher with nothing to do returns at once."""
        ...

    def close(self) -> None: ...
