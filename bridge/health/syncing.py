"""Synced-ness across later commits: did the consumer apply this deployment's commit?

Owns the rule of SPEC §8: a deployment is synced when the consumer's applied
revision is the commit that carries the deployment's revision, or a later
commit in which the deployment's folder is unchanged. Exact-sha matching
would report "out of date" whenever another deployment's commit moves HEAD,
which in a busy repo is always.

Git is read through `TreeReader`, a protocol the caller implements (the
bridge's own clone in bridge/publishing; a real-git one in the tests), so this
module imports no git and stays pure.
"""

from __future__ import annotations

from typing import Protocol

from bridge.health.rules import Sync


class TreeReader(Protocol):
    """Read-only questions to a local clone. Implementations answer from what
    the clone holds: a commit it does not have (not fetched yet, or one the
    bridge never wrote) is `has_commit() == False`, never an exception."""

    def has_commit(self, sha: str) -> bool: ...

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """True when `ancestor` is `descendant` or one of its ancestors."""
        ...

    def folder_tree(self, sha: str, folder: str) -> str | None:
        """The tree id of `folder` at commit `sha`; None when it does not exist there."""
        ...


def sync_state(commit: str | None, applied: str | None, folder: str, reader: TreeReader) -> Sync:
    """synced, out-of-date or unknown, for the deployment whose current
    revision is carried by `commit`, when the consumer reports `applied`."""
    if commit is None or applied is None:
        return "unknown"
    commit, applied = commit.lower(), applied.lower()
    if commit == applied:
        return "synced"
    if not reader.has_commit(applied):
        # Not in the clone: a commit pushed after our last fetch, or one on
        # another branch. Unknown until a fetch says more; never "synced".
        return "unknown"
    if not reader.has_commit(commit):
        return "unknown"
    if not reader.is_ancestor(commit, applied):
        # The consumer runs an older commit (or one off our history): whatever
        # the folder held there is not what this revision committed.
        return "out-of-date"
    mine = reader.folder_tree(commit, folder)
    theirs = reader.folder_tree(applied, folder)
    # Equal trees: nothing in the folder changed between the two commits
    # (or it changed and changed back: the bytes applied are ours all the same).
    return "synced" if mine is not None and mine == theirs else "out-of-date"


class Questions:
    """A TreeReader that answers nothing: it records what `sync_state` asks,
    so that a reader over a real clone can answer all of it in a few batched
    git processes instead of one process per question and deployment.

    Its provisional answers lead `sync_state` down its longest path (every
    commit present, every ancestry true), so each question the real answers
    could lead to is asked here; a second pass over the real reader then asks
    only questions recorded here.
    """

    def __init__(self) -> None:
        self.commits: set[str] = set()
        self.ancestry: set[tuple[str, str]] = set()
        self.trees: set[tuple[str, str]] = set()

    def has_commit(self, sha: str) -> bool:
        self.commits.add(sha)
        return True

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        self.ancestry.add((ancestor, descendant))
        return True

    def folder_tree(self, sha: str, folder: str) -> str | None:
        self.trees.add((sha, folder))
        return None

    def __len__(self) -> int:
        return len(self.commits) + len(self.ancestry) + len(self.trees)
