"""The bridge's head branches in a target's clone: fetched, read, deleted, and
worked on through the same writer and pusher as push mode.

A pull-request target keeps one local clone (the one push mode uses): its
`Syncer` fetches the base branch with the force-push protection of push
mode, and `HeadBranches` fetches every branch under the configured head
name in one round trip. A head branch is the bridge's scratch space, not a
history to protect: the forge may delete it after a merge, the bridge
deletes it to start anew once its pull request is merged or closed (only
while it still points where the bridge saw it), and nothing is ever pushed
to it but a fast-forward.

`BranchClone` is that clone working on another branch, so `CommitWriter`
and `Pusher` make and push head commits exactly as they make and push
commits in push mode: signing, no empty commits, compare-and-swap refs,
push without force.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from bridge.errors import GitError, PushRejected
from bridge.formats.objects import REGULAR_FILE
from bridge.publishing.clone import _OID, Clone
from bridge.publishing.reading import parse_ls_tree
from bridge.publishing.transport import REMOTE_CONFIG, REMOTE_TIMEOUT

# Commits of a head branch looked at for authorship: a head the bridge keeps
# holds a few per change; one with more than this is not the bridge's.
MAX_HEAD_COMMITS = 2000


class BranchClone(Clone):
    """Another branch of `base`'s local repository: the same directory, lock and
    transport, its own refs and cached head. Made by `HeadBranches.clone_for`."""

    def __init__(self, base: Clone, branch: str) -> None:
        # Deliberately not Clone.__init__: nothing here is created, only shared.
        self.base = base
        self.target = base.target
        self.settings = base.settings
        self.branch = branch
        self.local_ref = f"refs/heads/{branch}"
        self.tracking_ref = f"refs/remotes/origin/{branch}"
        self.fetched_ref = self.tracking_ref
        self.workdir = base.workdir
        self.path = base.path
        self.transport = base.transport
        self.env = base.env
        self.ready = False
        self._head: str | None = None
        self._head_known = False
        self.listing: tuple[str, dict[str, str]] | None = None
        self.ref_snapshot: dict[str, str] | None = None
        self._config_checked = None
        self.on_replace = []
        base.on_replace.append(self._replaced)

    def _replaced(self) -> None:
        self.forget_head()
        self.listing = None
        for forget in self.on_replace:
            forget()

    def ensure(self) -> None:
        self.base.ensure()

    def replace(self, problem: str) -> None:
        self.base.replace(problem)

    def release(self) -> None:
        self.forget_head()
        self.ref_snapshot = None


@dataclass(frozen=True)
class Commit:
    """One commit of a head branch, as much as deciding whose it is needs."""

    sha: str
    parents: tuple[str, ...]
    author: str  # "Name <email>"
    author_email: str
    committer_email: str
    message: str


class HeadBranches:
    """Every branch of one target whose name starts with `prefix` (the configured
    head branch): what the remote has, and the git steps on them."""

    def __init__(self, base: Clone, prefix: str) -> None:
        self.base = base
        self.prefix = prefix
        self.remote: dict[str, str] = {}  # branch -> sha, as the last fetch found them
        self._clones: dict[str, BranchClone] = {}

    def clone_for(self, branch: str) -> BranchClone:
        found = self._clones.get(branch)
        if found is None:
            found = self._clones[branch] = BranchClone(self.base, branch)
        return found

    # -- remote ---------------------------------------------------------------

    def fetch(self) -> dict[str, str]:
        """Fetch every remote branch under the prefix into its tracking ref, pruning
        tracking refs of branches gone from the remote; branch -> sha."""
        self.base.ensure()
        pattern = f"refs/heads/{self.prefix}*"
        result = self.base.git(
            "fetch",
            "-q",
            "--no-tags",
            "--no-recurse-submodules",
            "--prune",
            "--refmap=",
            "origin",
            # A tracking ref is ours to move: the head branch is no history the
            # bridge protects (the remote may delete or replace it).
            f"+{pattern}:refs/remotes/origin/{self.prefix}*",
            env=self.base.transport.remote_env(),
            timeout=REMOTE_TIMEOUT,
            config=("-c", "gc.auto=0", "-c", "maintenance.auto=false", *REMOTE_CONFIG),
        )
        if result.returncode != 0:
            raise self.base.transport.failure("fetch from", result.stderr)
        out = self.base.must(
            "read the head branches",
            "for-each-ref",
            "--format=%(refname) %(objectname)",
            f"refs/remotes/origin/{self.prefix}",
            f"refs/remotes/origin/{self.prefix}*",
        )
        found: dict[str, str] = {}
        strip = len("refs/remotes/origin/")
        for line in out.decode().splitlines():
            name, _, sha = line.partition(" ")
            if _OID.match(sha):
                found[name[strip:]] = sha
        self.remote = found
        return found

    def delete_remote(self, branch: str, expected: str) -> None:
        """Delete `branch` on the remote, only while it still points at `expected`
        (a lease: a push made meanwhile is never lost). A deletion is never an
        update: no commit of anyone is overwritten. PushRejected when it moved."""
        clone = self.clone_for(branch)
        ref = clone.local_ref
        result = self.base.git(
            "push",
            "--porcelain",
            "--no-recurse-submodules",
            # The lease makes the deletion a compare-and-swap on `expected`.
            f"--force-with-lease={ref}:{expected}",
            "origin",
            f":{ref}",
            env=self.base.transport.remote_env(),
            timeout=REMOTE_TIMEOUT,
            config=REMOTE_CONFIG,
        )
        stdout = result.stdout.decode("utf-8", "replace")
        if result.returncode != 0:
            if "[rejected]" in stdout or "stale info" in stdout or "stale info" in result.stderr:
                raise PushRejected(
                    f"target {self.base.ns}: branch {branch} on "
                    f"{self.base.transport.display_url} moved while the bridge was deleting it "
                    "to start anew",
                    hint="someone pushed to the bridge's head branch; the bridge looks again",
                )
            if "remote ref does not exist" not in result.stderr:
                raise self.base.transport.failure("delete a branch on", result.stderr)
        for name in (clone.tracking_ref, clone.local_ref):
            if self.base.rev(name) is not None:
                self.base.must("drop a deleted branch", "update-ref", "-d", name)
        clone.forget_head()
        self.remote.pop(branch, None)

    # -- local ------------------------------------------------------------------

    def start(self, branch: str, at: str) -> BranchClone:
        """Point the local head branch at `at` (the remote tip, or the base for a
        new head) before commits are made on it."""
        clone = self.clone_for(branch)
        self.base.must("start a head branch", "update-ref", clone.local_ref, at)
        clone.set_head(at)
        return clone

    def tree(self, commit: str) -> dict[str, str]:
        """path -> entry (as `TreeReader.ls_tree`) of the whole tree of `commit`."""
        return parse_ls_tree(
            self.base.must("ls-tree", "ls-tree", "-r", "-z", "--full-tree", commit)
        )

    def is_ancestor(self, old: str, new: str) -> bool:
        return self.base.git("merge-base", "--is-ancestor", old, new).returncode == 0

    def commits(self, since: str | None, until: str) -> list[Commit]:
        """The commits reachable from `until` and not from `since`, newest first
        (at most MAX_HEAD_COMMITS + 1: enough to tell there are too many)."""
        args = [
            "log",
            f"-n{MAX_HEAD_COMMITS + 1}",
            "--format=%H%x00%P%x00%an%x00%ae%x00%ce%x00%B%x1e",
        ]
        args += [until, *([f"^{since}"] if since else [])]
        out = self.base.must("log", *args).decode("utf-8", "replace")
        found = []
        for chunk in out.split("\x1e"):
            chunk = chunk.lstrip("\n")
            if not chunk:
                continue
            fields = chunk.split("\x00", 5)
            if len(fields) != 6 or not _OID.match(fields[0]):
                # A message holding our separators: whoever wrote it, not the bridge.
                found.append(Commit("?", (), "?", "", "", ""))
                continue
            sha, parents, name, email, committer, message = fields
            found.append(
                Commit(sha, tuple(parents.split()), f"{name} <{email}>", email, committer, message)
            )
        return found

    def merge_base(self, a: str, b: str) -> str | None:
        result = self.base.git("merge-base", a, b)
        out = result.stdout.decode().strip()
        return out if result.returncode == 0 and _OID.match(out) else None

    def write_blob(self, data: bytes) -> str:
        return (
            self.base.must("hash-object", "hash-object", "-w", "--stdin", input=data)
            .decode()
            .strip()
        )

    def make_tree(self, base_commit: str, entries: Iterable[tuple[str, str | None]]) -> str:
        """The tree of `base_commit` with `entries` (path -> listing entry, None to
        remove) put over it, built in a scratch index; its id."""
        index = self.base.path / "bridge-merge-index"
        env = {**self.base.env, "GIT_INDEX_FILE": str(index)}
        try:
            self.base.must("read-tree", "read-tree", base_commit, env=env)
            records: list[bytes] = []
            zero = "0" * 40
            for path, entry in entries:
                raw = path.encode("utf-8", "surrogateescape")
                if entry is None:
                    records.append(f"0 {zero}\t".encode() + raw)
                    continue
                mode, _, oid = entry.rpartition(" ")
                records.append(f"{mode or REGULAR_FILE} {oid}\t".encode() + raw)
            if records:
                self.base.must(
                    "update-index",
                    "update-index",
                    "-z",
                    "--index-info",
                    input=b"\0".join(records) + b"\0",
                    env=env,
                )
            return self.base.must("write-tree", "write-tree", env=env).decode().strip()
        finally:
            index.unlink(missing_ok=True)

    def release(self) -> None:
        for clone in self._clones.values():
            clone.release()


def check_branch_name(name: str) -> None:
    """A head branch name made from a folder name: refuse what git would refuse."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]*", name) or ".." in name:
        raise GitError(f"{name!r} is not a usable branch name")
