"""Which deployment folders a consumer object applies: repo, branch and path.

Owns the matching rule of SPEC §8: an Argo CD Application belongs to the
deployment whose folder is its source (`repoURL`, `path`, `targetRevision` =
the target's branch); a Flux Kustomization to the folders its path holds. A
source path that holds several deployment folders (one Application or
Kustomization per namespace) applies to each of them, and says so.

Labels never decide a match (`app.kubernetes.io/part-of` selects what to
read, `langsmith.com/deployment-id` lets people find one; nothing more): a
label is copied with the manifest it sits on, a source path is what the
consumer really applies. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

_SCP_LIKE = re.compile(r"^(?:[^@/\s]+@)?(?P<host>[^:/\s]+):(?P<path>[^/].*)$")


@dataclass(frozen=True)
class DeploymentFolder:
    """One deployment as the bridge wrote it: where, and in which commit."""

    deployment_id: str
    target: str  # the target's namespace: the bounded label of metrics
    repo: str  # the target's repo URL, as configured
    branch: str
    folder: str  # repo-relative, e.g. "team/prod/agents/support-bot"
    # The commit that carries the deployment's current revision (its state
    # file names it); None while nothing is committed yet.
    commit: str | None = None
    revision_id: str | None = None


@dataclass(frozen=True)
class Scope:
    """What a consumer object applies. `repo` None: the source does not say
    (Flux events name no repository); `branch` None: any branch; `path` None:
    not said either (a Flux event), so the object holds nothing until the
    wiring's routes name its path."""

    repo: str | None
    branch: str | None
    path: str | None

    def holds(self, folder: DeploymentFolder) -> bool:
        if self.path is None:
            return False
        if self.repo is not None and self.repo != normal_repo(folder.repo):
            return False
        if self.branch is not None and self.branch != folder.branch:
            return False
        inner = normal_path(folder.folder)
        return self.path == "" or inner == self.path or inner.startswith(self.path + "/")

    def exact(self, folder: DeploymentFolder) -> bool:
        """True when this object applies that one folder alone (per-deployment layout)."""
        return self.path is not None and self.path == normal_path(folder.folder)


def normal_repo(url: str) -> str:
    """`https://Git.Example.com/org/repo.git/` and `ssh://git@git.example.com/org/repo`
    -> `git.example.com/org/repo`. Host and path name a repository; scheme,
    user and `.git` do not (Argo CD normalises the same way), so an
    Application written with the https URL matches a target cloned over ssh."""
    text = url.strip()
    scp = _SCP_LIKE.match(text) if "://" not in text else None
    if scp:
        host, path = scp["host"], scp["path"]
    else:
        try:
            parts = urlsplit(text)
            host, path = parts.hostname or "", parts.path
        except ValueError:
            return text.lower()
    path = path.strip("/")
    if path.endswith(".git"):
        path = path[:-4]
    if not host:  # file:// remotes (tests, demos): the absolute path is the name
        return "/" + path.lower()
    return f"{host.lower()}/{path.lower()}"


def normal_path(path: str) -> str:
    """`./a//b/` -> `a/b`; `.` and `/` -> `` (the repo root)."""
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts)


def normal_branch(revision: str | None) -> str | None:
    """A `targetRevision` or Flux ref as a branch name: `refs/heads/main` -> `main`.
    None for what names no branch the bridge writes (`HEAD`, empty)."""
    if revision is None:
        return None
    text = revision.strip()
    if text.startswith("refs/heads/"):
        text = text[len("refs/heads/") :]
    if not text or text == "HEAD":
        return None
    return text


def folders_held(scope: Scope, folders: Iterable[DeploymentFolder]) -> list[DeploymentFolder]:
    return [f for f in folders if scope.holds(f)]
