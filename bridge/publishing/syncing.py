"""Syncing a clone with its remote: fetch, check that the remote branch still
contains what was last fetched (a force-push stops the target), and point
the local branch at it. The remote is the truth: unpushed commits of a
crashed cycle are dropped and re-created from state by the next cycle.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from bridge.errors import HistoryRewritten, LocalCloneBroken
from bridge.publishing.clone import _NEEDS_RECLONE, _OID, Clone
from bridge.publishing.transport import (
    REMOTE_CONFIG,
    REMOTE_TIMEOUT,
)

log = logging.getLogger("bridge.publishing")

_NO_AUTO_GC = ("-c", "gc.auto=0", "-c", "maintenance.auto=false")

# Signs in git's stderr that the local clone, not the remote, is the problem.
_LOCAL_DAMAGE = re.compile(
    r"bad object|corrupt|unable to read(?! askpass)|did not send all necessary objects|missing object"
    r"|loose object|packfile|not a git repository|cannot lock ref|unable to create .*\.lock"
    r"|index-pack failed|invalid sha1 pointer|bad sha1|broken link",
    re.IGNORECASE,
)


class Syncer:
    """Brings one clone up to date with its remote branch."""

    def __init__(self, clone: Clone, *, before_fetch: Callable[[], None]) -> None:
        self.clone = clone
        # Run before every fetch: readers drop what they hold of older packs.
        self.before_fetch = before_fetch

    def sync(self) -> str | None:
        """Fetch the branch and point the local branch at it; the head, or None if
        the remote branch does not exist yet. Unpushed local commits are dropped."""
        self.clone.ensure()
        if (self.clone.path / _NEEDS_RECLONE).exists():  # damage found since _ensure() looked
            self.clone.replace(self.clone.diagnose() or "an earlier step found it damaged")
        try:
            return self._sync_once()
        except LocalCloneBroken as e:
            self.clone.replace(e.message)
        return self._sync_once()

    def _sync_once(self) -> str | None:
        self.before_fetch()  # a fresh cat-file sees the fetched packs for sure
        self.clone.forget_head()
        if self.clone.gc_due():
            self.clone.maintain()
        refs, self.clone.ref_snapshot = self.clone.ref_snapshot, None
        if refs is None:
            refs = self._refs(self.clone.tracking_ref, self.clone.local_ref)
        before = refs.get(self.clone.tracking_ref)
        fetched = self.clone.git(
            "fetch",
            "-q",
            "--no-tags",
            "--no-recurse-submodules",
            # `--refmap=`: no opportunistic update of the tracking ref. It moves
            # only below, once the new head is known to contain the old one, so
            # a refused rewrite is refused again on every cycle, not just once.
            "--refmap=",
            "origin",
            f"+{self.clone.local_ref}:{self.clone.fetched_ref}",
            env=self.clone.transport.remote_env(),
            timeout=REMOTE_TIMEOUT,
            # No automatic gc inside the fetch: it would run in the foreground of
            # the next cycle (13 s at 10,000 deployments after a cold cycle).
            # push() runs `gc --auto` once a cycle has published, and the
            # check above before a fetch when git's thresholds are passed.
            config=(*_NO_AUTO_GC, *REMOTE_CONFIG),
        )
        if fetched.returncode != 0:
            if "couldn't find remote ref" in fetched.stderr:
                self._remote_branch_absent(before)
                return None
            if _LOCAL_DAMAGE.search(fetched.stderr) and not _remote_said(fetched.stderr):
                raise self.clone.broken("fetch", fetched.stderr)
            raise self.clone.transport.failure("fetch from", fetched.stderr)
        head = self._fetch_head() or self.clone.rev(self.clone.fetched_ref)
        if head is None:
            raise self.clone.broken(
                "fetch", f"{self.clone.fetched_ref} missing after a successful fetch"
            )
        if before is not None and before != head and not self._is_ancestor(before, head):
            raise self._rewritten(before, head)
        if before != head or refs.get(self.clone.local_ref) != head:
            self.clone.must(
                "update the tracking ref and the local branch",
                "update-ref",
                "--stdin",
                input=(
                    f"start\nupdate {self.clone.tracking_ref} {head}\n"
                    f"update {self.clone.local_ref} {head}\ncommit\n"
                ).encode(),
            )
        self.clone.set_head(head)
        return head

    def _fetch_head(self) -> str | None:
        """The id the fetch just wrote, from its FETCH_HEAD file (saves a process);
        None when the file is not exactly one plain line for our branch."""
        try:
            lines = (self.clone.path / "FETCH_HEAD").read_text().splitlines()
        except (OSError, UnicodeDecodeError):
            return None
        if len(lines) != 1:
            return None
        oid, _, rest = lines[0].partition("\t")
        if not _OID.match(oid) or not rest.startswith(f"\tbranch '{self.clone.branch}' of "):
            return None
        return oid

    def _refs(self, *names: str) -> dict[str, str]:
        """ref name -> object id, of those of `names` that exist (one process)."""
        out = self.clone.must(
            "read refs", "for-each-ref", "--format=%(refname) %(objectname)", *names
        )
        found = dict(line.split(" ", 1) for line in out.decode().splitlines() if line)
        return {name: oid for name, oid in found.items() if name in names}

    def _rewritten(self, before: str, head: str) -> HistoryRewritten:
        # Following the new history would silently drop what we (or others) had
        # pushed; pushing ours back would need a force. Neither is the bridge's call.
        return HistoryRewritten(
            f"target {self.clone.ns}: branch {self.clone.branch} on {self.clone.transport.display_url} was "
            f"rewritten (force-pushed): it moved from {before} to {head}, which does not "
            f"contain {before[:12]}. The bridge stops for this target and will not rewrite "
            "history itself",
            hint=f"if the new history is intended, delete the local clone {self.clone.path} "
            "(in git.workdir, on every replica) and the next cycle adopts it; otherwise "
            f"restore the branch so that it contains {before[:12]} "
            f"(e.g. `git push --force origin {before}:{self.clone.local_ref}`)",
        )

    def _remote_branch_absent(self, before: str | None) -> None:
        if before is not None:
            log.warning(
                "target %s: branch %s no longer exists on %s; it will be created again",
                self.clone.ns,
                self.clone.branch,
                self.clone.transport.display_url,
                extra={"target": self.clone.ns},
            )
        for ref in (self.clone.fetched_ref, self.clone.tracking_ref, self.clone.local_ref):
            if self.clone.rev(ref) is not None:
                self.clone.must("drop a stale branch", "update-ref", "-d", ref)
        self.clone.set_head(None)

    def _is_ancestor(self, old: str, new: str) -> bool:
        return self.clone.git("merge-base", "--is-ancestor", old, new).returncode == 0


def _remote_said(stderr: str) -> bool:
    # "remote: ... corrupt" is the server's problem, not our clone's.
    return any(line.startswith("remote:") for line in stderr.splitlines()) and not any(
        _LOCAL_DAMAGE.search(line) for line in stderr.splitlines() if not line.startswith("remote:")
    )
