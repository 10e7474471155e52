"""TargetRepo: the one writer that owns git for one target (SPEC §5-6).

A persistent, worktree-less (bare) clone per target under `git.workdir`,
fetched every cycle, written only with plumbing and pushed without force:
a cycle's commits go through one `git fast-import` stream (signed ones through
a temporary index and `commit-tree`), and the branch moves by compare-and-swap
`update-ref`.
Crash recovery is "the remote is the truth": `sync()` points the local branch
at the remote one, so unpushed commits of a crashed cycle are dropped and
re-created from state by the next cycle.
A remote branch that no longer contains the head last fetched (a force-push)
stops the target with `HistoryRewritten`, every cycle, until an operator
deletes the clone: the bridge neither follows a rewrite nor undoes one.

Why plumbing instead of GitPython's index: measured with
`python -m tests.publishing.bench_commit [ROOT]` on this 2-core machine (median
of 5, other test suites running at the same time), 10,000 files in 1,000 folders:

                                    TargetRepo        GitPython index.add + index.commit
                                  tmpfs    ext4          tmpfs     ext4
    commit changing 3 files        28 ms   43 ms         615 ms    623 ms
    first commit of 10,000 files  332 ms  848 ms        15.4 s    15.7 s
    ls_tree of 10,000 files        31 ms   35 ms           -         -
    1,000 x read_blob              14 ms   19 ms           -         -

A batch through `commit_all` (fast-import) costs ~1 ms per commit on top of
one process; the figures below are for `commit` (one at a time, and signed).
The 3-file commit reuses the instance's index (no `read-tree` of 10k entries:
that alone is ~36 ms); blobs go in through one `fast-import` (10k blobs: 0.4 s,
no temp file per blob; `hash-object --stdin-paths` over temp files took 1.1 s
on tmpfs and 4-6 s on ext4). GitPython's index code also cannot sign commits
(toolchain-notes §6); commit-tree can. Never imports httpx, rendering or
controlplane.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from bridge.config import GitSettings, Target
from bridge.publishing.clone import LOCK_TIMEOUT, STALE_LOCK_SECONDS, Clone, clone_dir_name
from bridge.publishing.pushing import Pusher
from bridge.publishing.reading import TreeReader
from bridge.publishing.signing import Signer
from bridge.publishing.syncing import Syncer
from bridge.publishing.transport import Transport
from bridge.publishing.writing import CommitWriter

__all__ = ["LOCK_TIMEOUT", "STALE_LOCK_SECONDS", "TargetRepo", "clone_dir_name"]


class TargetRepo:
    """One target's clone and everything done with it, in four parts over one
    `Clone`: syncing it with the remote, reading its tree, writing commits,
    pushing. The publishers (bridge.publishing.publisher) use it; nothing else
    in the bridge runs git on a target's clone."""

    def __init__(
        self, target: Target, git_settings: GitSettings, *, lock_timeout: float = LOCK_TIMEOUT
    ) -> None:
        self.clone = Clone(target, git_settings, lock_timeout=lock_timeout)
        self.signer = Signer(git_settings.signing, target=target.namespace)
        self.reader = TreeReader(self.clone)
        self.writer = CommitWriter(self.clone, self.signer)
        self.syncer = Syncer(self.clone, before_fetch=self.reader.close_catfile)
        self.pusher = Pusher(self.clone)
        self.clone.on_replace.append(self.reader.close_catfile)

    @property
    def target(self) -> Target:
        return self.clone.target

    @property
    def path(self) -> Path:
        return self.clone.path

    @property
    def branch(self) -> str:
        return self.clone.branch

    @property
    def local_ref(self) -> str:
        return self.clone.local_ref

    @property
    def transport(self) -> Transport:
        return self.clone.transport

    def __enter__(self) -> TargetRepo:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- syncing ---------------------------------------------------------------------

    def sync(self) -> str | None:
        """Fetch the branch and point the local branch at it; the head, or None if
        the remote branch does not exist yet. Unpushed local commits are dropped."""
        return self.syncer.sync()

    # -- reading ---------------------------------------------------------------------

    def ls_tree(self, prefix: str) -> Mapping[str, str]:
        return self.reader.ls_tree(prefix)

    def read_blob(self, blob_id: str) -> bytes:
        return self.reader.read_blob(blob_id)

    def read_blobs(
        self, blob_ids: Sequence[str], *, max_bytes: int | None = None, missing_ok: bool = False
    ) -> dict[str, bytes]:
        return self.reader.read_blobs(blob_ids, max_bytes=max_bytes, missing_ok=missing_ok)

    def preload_blobs(self, blob_ids: Sequence[str], *, max_bytes: int | None = None) -> None:
        self.reader.preload_blobs(blob_ids, max_bytes=max_bytes)

    def blob_sizes(self, entries: Sequence[str], *, missing_ok: bool = False) -> dict[str, int]:
        return self.reader.blob_sizes(entries, missing_ok=missing_ok)

    def last_commit_for(self, path: str) -> tuple[str, str, str, str] | None:
        return self.reader.last_commit_for(path)

    def landed_by(self, sha: str) -> str | None:
        return self.reader.landed_by(sha)

    # -- writing ---------------------------------------------------------------------

    def check_signing(self) -> None:
        self.writer.check_signing()

    def commit(
        self, message: str, *, write: Mapping[str, bytes], delete: Iterable[str] = ()
    ) -> str | None:
        return self.writer.commit(message, write=write, delete=delete)

    def commit_all(
        self, commits: Sequence[tuple[str, Mapping[str, bytes], Iterable[str]]]
    ) -> list[str | None]:
        return self.writer.commit_all(commits)

    # -- pushing ---------------------------------------------------------------------

    def push(self) -> bool:
        """Push the local branch if it is ahead; never forced. False: nothing to push."""
        return self.pusher.push()

    def close(self) -> None:
        self.reader.close()
        self.writer.close()
        self.clone.release()
