"""What of a target's tree a pull request may change, in which units, and whose
the commits of a head branch are.

Units: each deployment folder (`<ns_dir>/<folder>/`, whole), each file directly
in the namespace folder (the namespace kustomization), each file of
`<ns_dir>/.gitops-bridge/` (the held record, an operator's approval file), and
the target's README. Everything else of the repository is the base's: a head
branch never changes it, and a merge of the base into the head takes it.

A head branch is the bridge's while every commit on it that the base lacks
was made by the bridge: its own change commits (SPEC §6 subject and
trailers), its merges of the base, its approval commit of held deletions;
author and committer are the bridge's identity (`git.authorEmail`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from bridge.formats.approvals import APPROVAL_FOLDER
from bridge.formats.commits import parse
from bridge.formats.state import STATE_FILE
from bridge.publishing.pullrequest.branches import Commit

APPROVAL_SUBJECT = re.compile(r"^approve-delete\([a-z0-9-]+\): \d+ held deletions?$")
README = "README.md"


@dataclass(frozen=True)
class Layout:
    """Where one target's files are: its namespace folder and its README."""

    namespace: str
    ns_dir: str
    readme: str

    @classmethod
    def of(cls, path: str, cluster: str, namespace: str) -> Layout:
        ns_dir = str(PurePosixPath(path, cluster, namespace)) if path else f"{cluster}/{namespace}"
        readme = str(PurePosixPath(path, README)) if path else README
        return cls(namespace=namespace, ns_dir=ns_dir, readme=readme)

    @property
    def kustomization(self) -> str:
        return f"{self.ns_dir}/kustomization.yaml"

    def unit(self, path: str) -> str | None:
        """The unit `path` belongs to ("<ns_dir>/<folder>/" for a deployment folder,
        else the path itself), or None when the path is not the bridge's to propose."""
        if path == self.readme:
            return path
        prefix = self.ns_dir + "/"
        if not path.startswith(prefix):
            return None
        first, sep, rest = path[len(prefix) :].partition("/")
        if not sep:
            return path  # a file in the namespace folder
        if first == APPROVAL_FOLDER:
            return path if "/" not in rest else None
        return f"{prefix}{first}/"

    def unit_of_delete(self, path: str) -> str | None:
        """The unit a deletion removes: `<ns_dir>/<folder>` is the whole folder."""
        whole = path.rstrip("/") + "/"
        if self.unit(whole + STATE_FILE) == whole:
            return whole
        return self.unit(path)

    def is_shared(self, unit: str) -> bool:
        """The kustomization and the README: every deployment's commit may touch them."""
        return unit in (self.kustomization, self.readme)

    def folder(self, unit: str) -> str | None:
        """The deployment folder's name of a folder unit, else None."""
        if not unit.endswith("/"):
            return None
        return unit[len(self.ns_dir) + 1 : -1]

    def units(self, tree: Mapping[str, str]) -> dict[str, dict[str, str]]:
        """unit -> {path: entry} of the units a tree holds."""
        found: dict[str, dict[str, str]] = {}
        for path, entry in tree.items():
            unit = self.unit(path)
            if unit is not None:
                found.setdefault(unit, {})[path] = entry
        return found

    def deployment_folders(self, tree: Mapping[str, str]) -> list[str]:
        """The folders the namespace kustomization lists: those with a state file."""
        prefix = self.ns_dir + "/"
        return sorted(
            path[len(prefix) : -len(STATE_FILE) - 1]
            for path in tree
            if path.startswith(prefix)
            and path.endswith("/" + STATE_FILE)
            and path[len(prefix) :].count("/") == 1
        )


def merge_subject(base: str, head: str) -> str:
    return f"Merge branch '{base}' into {head}"


def merge_message(base: str, head: str) -> str:
    return (
        f"{merge_subject(base, head)}\n\n"
        f"Made by langsmith-gitops-bridge: {base} moved while this pull request was open.\n"
        "What the bridge proposes keeps the bridge's version; everything else is the base's.\n"
    )


def approval_message(namespace: str, count: int) -> str:
    noun = "deletion" if count == 1 else "deletions"
    return (
        f"approve-delete({namespace}): {count} held {noun}\n\n"
        "Made by langsmith-gitops-bridge. Merging the pull request that carries this commit\n"
        "approves the deletions it lists; the bridge makes them in a later cycle.\n"
    )


def first_foreign(commits: Iterable[Commit], *, email: str, base: str, head: str) -> Commit | None:
    """The oldest commit not made by the bridge, or None when every one was."""
    foreign = None
    for commit in commits:  # newest first
        if not _bridge_made(commit, email=email, base=base, head=head):
            foreign = commit
    return foreign


def _bridge_made(commit: Commit, *, email: str, base: str, head: str) -> bool:
    if commit.author_email != email or commit.committer_email != email:
        return False
    subject = commit.message.split("\n", 1)[0]
    if len(commit.parents) == 2:
        return subject == merge_subject(base, head)
    return parse(commit.message) is not None or bool(APPROVAL_SUBJECT.match(subject))
