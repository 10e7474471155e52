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

import fcntl
import hashlib
import itertools
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

from bridge.config import GitSettings, Target
from bridge.errors import GitError, HistoryRewritten, LocalCloneBroken, PushRejected
from bridge.faults import checkpoint
from bridge.formats.objects import PLAIN_PATH, REGULAR_FILE, blob_id, c_quote, quote_path
from bridge.formats.paths import check_repo_path
from bridge.publishing.signing import Signer
from bridge.publishing.transport import (
    BASE_CONFIG,
    LOCAL_TIMEOUT,
    REMOTE_CONFIG,
    REMOTE_TIMEOUT,
    GitResult,
    Transport,
    base_env,
    run_git,
)

log = logging.getLogger("bridge.publishing")

# A lock file older than this process was left by a crash; so was one older
# than STALE_LOCK_SECONDS (no git step of ours takes that long, and we hold
# the clone's inter-process lock while we look).
_PROCESS_STARTED = time.time()
STALE_LOCK_SECONDS = 600.0
LOCK_TIMEOUT = 120.0
_NEEDS_RECLONE = "bridge-needs-reclone"
# Scratch ref that `git fast-import` writes a batch of commits to; the branch
# then moves to its tip (compare-and-swap) and the ref is deleted in one step.
_IMPORT_REF = "refs/bridge/import"
_EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
_NO_AUTO_GC = ("-c", "gc.auto=0", "-c", "maintenance.auto=false")
_OID = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")
_INVALID_PATH = re.compile(r"invalid path '(.*)'")
# Signs in git's stderr that the local clone, not the remote, is the problem.
_LOCAL_DAMAGE = re.compile(
    r"bad object|corrupt|unable to read(?! askpass)|did not send all necessary objects|missing object"
    r"|loose object|packfile|not a git repository|cannot lock ref|unable to create .*\.lock"
    r"|index-pack failed|invalid sha1 pointer|bad sha1|broken link",
    re.IGNORECASE,
)


# --- paths -------------------------------------------------------------------


def clone_dir_name(target: Target) -> str:
    """Readable and unique: the tail of the sanitized target key plus a short hash."""
    digest = hashlib.sha256(target.key.encode()).hexdigest()[:12]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", target.key.replace("://", "-"))
    readable = readable[-60:].lstrip(".-") or "target"
    return f"{readable}-{digest}"


# --- one lock per clone, shared by the TargetRepos of one process --------------

_LOCKS_GUARD = threading.Lock()
_HELD: dict[str, list[int]] = {}  # lock path -> [fd, users]


def _acquire_clone_lock(lock_path: Path, timeout: float, namespace: str) -> None:
    # flock excludes other processes (a `status` next to `run` would otherwise
    # reset the branch between run's commit and push). Inside one process the
    # lock is shared: flock on two fds of one process would deadlock.
    key = str(lock_path)
    with _LOCKS_GUARD:
        held = _HELD.get(key)
        if held is not None:
            held[1] += 1
            return
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise LocalCloneBroken(
                        f"target {namespace}: the local clone is in use by another bridge "
                        f"process for more than {timeout:g}s ({lock_path})",
                        hint="run one bridge per workdir, or wait for the other to finish",
                    ) from None
                time.sleep(0.05)
        _HELD[key] = [fd, 1]


def _release_clone_lock(lock_path: Path) -> None:
    key = str(lock_path)
    with _LOCKS_GUARD:
        held = _HELD.get(key)
        if held is None:
            return
        held[1] -= 1
        if held[1] == 0:
            del _HELD[key]
            os.close(held[0])  # closing the fd releases the flock


# --- the repo ------------------------------------------------------------------


class TargetRepo:
    """One target's clone; read through `bridge.publishing.publisher.RepoView`."""

    def __init__(
        self, target: Target, git_settings: GitSettings, *, lock_timeout: float = LOCK_TIMEOUT
    ) -> None:
        self.target = target
        self.settings = git_settings
        self.branch = target.branch
        self.local_ref = f"refs/heads/{target.branch}"
        self.tracking_ref = f"refs/remotes/origin/{target.branch}"
        # Where a fetch lands before its head is checked against the tracking ref.
        self.fetched_ref = f"refs/bridge/fetched/{target.branch}"
        self.workdir = git_settings.workdir
        self.path = self.workdir / clone_dir_name(target)
        self.transport = Transport(target, git_settings)  # ConfigError for bad ssh settings
        self.signer = Signer(git_settings.signing, target=target.namespace)
        self._env = base_env()
        self._lock_path = self.workdir / (self.path.name + ".lock")
        self._lock_timeout = lock_timeout
        self._locked = False
        self._ready = False
        self._signing_checked = False
        self._catfile: subprocess.Popen[bytes] | None = None
        # One index file per instance, kept between commits: it already holds the
        # tree of the last commit, so the next commit skips `read-tree` of the
        # whole repo (36 of 61 ms on 10k files).
        self._index = self.path / f"bridge-index-{os.getpid()}-{id(self):x}"
        self._index_tree: str | None = None
        # The local branch head as we last set or read it, valid while we hold
        # the clone lock (nothing else moves refs then); None = ask git.
        self._head: str | None = None
        self._head_known = False
        # The whole tree listing of one commit: keyed by the commit id, so it is
        # never stale, and it survives close() for the next cycle of a kept instance.
        self._listing: tuple[str, dict[str, str]] | None = None
        # Blobs read ahead by preload_blobs(), each handed out once by read_blobs().
        # Content-addressed: a blob id names the same bytes forever.
        self._preloaded: dict[str, bytes] = {}
        # Refs as _diagnose() just read them, for the sync() that follows it.
        self._ref_snapshot: dict[str, str] | None = None
        # (inode, size, mtime) of the clone's config when its remote was last
        # found right: an unchanged file needs no `git config` call next cycle.
        self._config_checked: tuple[int, int, int] | None = None

    # -- context manager ---------------------------------------------------------

    def __enter__(self) -> TargetRepo:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- running git -------------------------------------------------------------

    @property
    def _ns(self) -> str:
        return self.target.namespace

    def _git(
        self,
        *args: str,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        config: tuple[str, ...] | list[str] = (),
        timeout: float | None = None,
    ) -> GitResult:
        kwargs = {} if timeout is None else {"timeout": timeout}
        return run_git(
            args,
            git_dir=self.path,
            env=self._env if env is None else env,
            input=input,
            config=config,
            **kwargs,
        )

    def _must(self, action: str, *args: str, **kwargs: object) -> bytes:
        """Run a local git step; a failure means the clone is damaged."""
        result = self._git(*args, **kwargs)  # type: ignore[arg-type]
        if result.returncode != 0:
            raise self._broken(action, result.stderr)
        return result.stdout

    def _broken(self, action: str, stderr: str, *, mark: bool = True) -> LocalCloneBroken:
        self._forget_head()
        if mark:
            # The next sync() moves this clone aside and makes a fresh one.
            try:
                (self.path / _NEEDS_RECLONE).write_text(f"{action}: {stderr[-500:]}\n")
            except OSError:
                pass
        return LocalCloneBroken(
            f"target {self._ns}: {action} failed in the local clone {self.path}: "
            f"{self.transport.clean(stderr) or 'no output'}",
            hint="the next cycle re-creates the clone from the remote; if this repeats, "
            "check free disk space and permissions of git.workdir",
        )

    def _rev(self, ref: str) -> str | None:
        result = self._git("rev-parse", "-q", "--verify", "--end-of-options", ref)
        if result.returncode != 0:
            return None
        return result.stdout.decode().strip() or None

    def _local_head(self) -> str | None:
        if not self._head_known:
            self._set_head(self._rev(self.local_ref))
        return self._head

    def _set_head(self, head: str | None) -> None:
        self._head, self._head_known = head, True
        self._ref_snapshot = None  # refs moved since _diagnose() read them

    def _forget_head(self) -> None:
        self._head, self._head_known = None, False

    # -- the clone: create, check, repair ------------------------------------------

    def _ensure(self) -> None:
        if self._ready:
            return
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LocalCloneBroken(
                f"target {self._ns}: cannot create the workdir {self.workdir}: {e.strerror}",
                hint="set git.workdir to a writable folder",
            ) from e
        if not self._locked:
            _acquire_clone_lock(self._lock_path, self._lock_timeout, self._ns)
            self._locked = True
        if not self.path.exists():
            self._create()
        else:
            self._remove_stale_files()
            problem = self._diagnose()
            if problem is not None:
                self._replace(problem)
        self._ready = True

    def _diagnose(self) -> str | None:
        """Why the clone at self.path is unusable, or None."""
        marker = self.path / _NEEDS_RECLONE
        if marker.exists():
            try:
                why = marker.read_text(errors="replace").strip()[:300]
            except OSError:
                why = "unknown"
            return f"an earlier step found it damaged ({why})"
        # for-each-ref fails on a non-repository and on refs to missing objects.
        refs = self._git("for-each-ref", "--format=%(refname) %(objectname) %(objecttype)")
        if refs.returncode != 0:
            return f"it is not a usable repository ({self.transport.clean(refs.stderr)})"
        self._ref_snapshot = {
            name: oid
            for name, oid, _kind in (line.split(" ") for line in refs.stdout.decode().splitlines())
        }
        signature = self._config_signature()
        if signature is None or signature != self._config_checked:
            url = self._git("config", "--get", "remote.origin.url")
            current = url.stdout.decode().strip()
            if url.returncode != 0 or current != self.target.repo:
                self._config_checked = None
                return f"its remote is {current or 'unset'!r}, not the target's repo"
            self._config_checked = signature
        try:  # git's own format for a symbolic HEAD; saves a process per cycle
            head = (self.path / "HEAD").read_text().strip()
        except OSError:
            head = ""
        if head != f"ref: {self.local_ref}":
            self._must("point HEAD at the branch", "symbolic-ref", "HEAD", self.local_ref)
        return None

    def _config_signature(self) -> tuple[int, int, int] | None:
        try:
            st = (self.path / "config").stat()
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def _create(self) -> None:
        """A fresh bare repo with origin = the target repo; made beside, then renamed in."""
        for leftover in self.workdir.glob(f"{self.path.name}.new-*"):
            shutil.rmtree(leftover, ignore_errors=True)  # a crash during an earlier create
        tmp = self.path.with_name(f"{self.path.name}.new-{os.getpid()}")
        steps: list[tuple[str, ...]] = [
            ("init", "-q", "--bare", "--template=", f"--initial-branch={self.branch}", str(tmp)),
            ("config", "remote.origin.url", self.target.repo),
            ("config", "remote.origin.fetch", f"+{self.local_ref}:{self.tracking_ref}"),
            ("config", "gc.autoDetach", "false"),
            ("config", "core.logAllRefUpdates", "false"),
            # The clone is a cache of the remote: objects nothing refers to (commits
            # of a lost push race or a crashed cycle) are pruned by the auto gc that
            # fetch runs after an hour, not git's two weeks, which could keep
            # thousands loose and trigger a full gc on every fetch meanwhile.
            ("config", "gc.pruneExpire", "1.hour.ago"),
        ]
        for i, step in enumerate(steps):
            result = run_git(step, git_dir=None if i == 0 else tmp, env=self._env)
            if result.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                raise LocalCloneBroken(
                    f"target {self._ns}: cannot create a clone in {self.workdir}: "
                    f"{self.transport.clean(result.stderr)}",
                    hint="check free disk space and permissions of git.workdir",
                )
        try:
            os.rename(tmp, self.path)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise LocalCloneBroken(
                f"target {self._ns}: cannot create the clone {self.path}: {e.strerror}",
                hint="check permissions of git.workdir",
            ) from e

    def _replace(self, problem: str) -> None:
        """Move an unusable clone aside (kept once, for forensics) and start fresh."""
        self._close_catfile()
        self._index_tree = None
        self._forget_head()
        self._ref_snapshot = None
        aside = self.path.with_name(self.path.name + ".broken")
        log.warning(
            "target %s: local clone %s is unusable (%s); moving it to %s and cloning again",
            self._ns,
            self.path,
            problem,
            aside,
            extra={"target": self._ns},
        )
        try:
            shutil.rmtree(aside, ignore_errors=True)
            os.rename(self.path, aside)
        except OSError as e:
            raise LocalCloneBroken(
                f"target {self._ns}: the local clone {self.path} is unusable ({problem}) and "
                f"cannot be moved aside: {e.strerror}",
                hint=f"delete {self.path} by hand; the bridge clones it again",
            ) from e
        self._create()

    def _remove_stale_files(self) -> None:
        """Locks and temp files left by a crashed process (we hold the clone lock)."""
        now = time.time()
        candidates: list[Path] = []
        for pattern in ("*.lock", "bridge-index-*", "bridge-marks-*"):
            candidates.extend(self.path.glob(pattern))
        for sub in ("refs", "logs", "objects/info", "objects/pack"):
            base = self.path / sub
            if base.is_dir():
                candidates.extend(base.rglob("*.lock"))
        # Half-written packs and loose objects of a killed fetch or fast-import:
        # harmless to git, but disk that nothing else ever frees.
        candidates.extend(self.path.glob("objects/pack/tmp_*"))
        candidates.extend(self.path.glob("objects/??/tmp_obj_*"))
        for item in candidates:
            try:
                mtime = item.lstat().st_mtime
            except OSError:
                continue
            # Our own temp files of another (crashed) process; not this process's.
            own_temp = item.name.startswith("bridge-") and f"-{os.getpid()}-" not in item.name
            if own_temp or mtime < _PROCESS_STARTED or now - mtime > STALE_LOCK_SECONDS:
                log.warning(
                    "target %s: removing %s left by a crashed git process",
                    self._ns,
                    item,
                    extra={"target": self._ns},
                )
                if item.is_dir() and not item.is_symlink():
                    shutil.rmtree(item, ignore_errors=True)
                else:
                    item.unlink(missing_ok=True)

    # -- sync ---------------------------------------------------------------------

    def sync(self) -> str | None:
        """Fetch the branch and point the local branch at it; the head, or None if
        the remote branch does not exist yet. Unpushed local commits are dropped."""
        self._ensure()
        if (self.path / _NEEDS_RECLONE).exists():  # damage found since _ensure() looked
            self._replace(self._diagnose() or "an earlier step found it damaged")
        try:
            return self._sync_once()
        except LocalCloneBroken as e:
            self._replace(e.message)
        return self._sync_once()

    def _sync_once(self) -> str | None:
        self._close_catfile()  # a fresh cat-file sees the fetched packs for sure
        self._forget_head()
        if self._gc_due():
            self._maintain()
        refs, self._ref_snapshot = self._ref_snapshot, None
        if refs is None:
            refs = self._refs(self.tracking_ref, self.local_ref)
        before = refs.get(self.tracking_ref)
        fetched = self._git(
            "fetch",
            "-q",
            "--no-tags",
            "--no-recurse-submodules",
            # `--refmap=`: no opportunistic update of the tracking ref. It moves
            # only below, once the new head is known to contain the old one, so
            # a refused rewrite is refused again on every cycle, not just once.
            "--refmap=",
            "origin",
            f"+{self.local_ref}:{self.fetched_ref}",
            env=self.transport.remote_env(),
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
                raise self._broken("fetch", fetched.stderr)
            raise self.transport.failure("fetch from", fetched.stderr)
        head = self._fetch_head() or self._rev(self.fetched_ref)
        if head is None:
            raise self._broken("fetch", f"{self.fetched_ref} missing after a successful fetch")
        if before is not None and before != head and not self._is_ancestor(before, head):
            raise self._rewritten(before, head)
        if before != head or refs.get(self.local_ref) != head:
            self._must(
                "update the tracking ref and the local branch",
                "update-ref",
                "--stdin",
                input=(
                    f"start\nupdate {self.tracking_ref} {head}\n"
                    f"update {self.local_ref} {head}\ncommit\n"
                ).encode(),
            )
        self._set_head(head)
        return head

    def _fetch_head(self) -> str | None:
        """The id the fetch just wrote, from its FETCH_HEAD file (saves a process);
        None when the file is not exactly one plain line for our branch."""
        try:
            lines = (self.path / "FETCH_HEAD").read_text().splitlines()
        except (OSError, UnicodeDecodeError):
            return None
        if len(lines) != 1:
            return None
        oid, _, rest = lines[0].partition("\t")
        if not _OID.match(oid) or not rest.startswith(f"\tbranch '{self.branch}' of "):
            return None
        return oid

    def _refs(self, *names: str) -> dict[str, str]:
        """ref name -> object id, of those of `names` that exist (one process)."""
        out = self._must("read refs", "for-each-ref", "--format=%(refname) %(objectname)", *names)
        found = dict(line.split(" ", 1) for line in out.decode().splitlines() if line)
        return {name: oid for name, oid in found.items() if name in names}

    def _rewritten(self, before: str, head: str) -> HistoryRewritten:
        # Following the new history would silently drop what we (or others) had
        # pushed; pushing ours back would need a force. Neither is the bridge's call.
        return HistoryRewritten(
            f"target {self._ns}: branch {self.branch} on {self.transport.display_url} was "
            f"rewritten (force-pushed): it moved from {before} to {head}, which does not "
            f"contain {before[:12]}. The bridge stops for this target and will not rewrite "
            "history itself",
            hint=f"if the new history is intended, delete the local clone {self.path} "
            "(in git.workdir, on every replica) and the next cycle adopts it; otherwise "
            f"restore the branch so that it contains {before[:12]} "
            f"(e.g. `git push --force origin {before}:{self.local_ref}`)",
        )

    def _remote_branch_absent(self, before: str | None) -> None:
        if before is not None:
            log.warning(
                "target %s: branch %s no longer exists on %s; it will be created again",
                self._ns,
                self.branch,
                self.transport.display_url,
                extra={"target": self._ns},
            )
        for ref in (self.fetched_ref, self.tracking_ref, self.local_ref):
            if self._rev(ref) is not None:
                self._must("drop a stale branch", "update-ref", "-d", ref)
        self._set_head(None)

    def _is_ancestor(self, old: str, new: str) -> bool:
        return self._git("merge-base", "--is-ancestor", old, new).returncode == 0

    # -- reading --------------------------------------------------------------------

    def ls_tree(self, prefix: str) -> dict[str, str]:
        """path -> entry id at HEAD under `prefix` ("dir/" = folder, else one exact
        path): a regular file's blob id, "<mode> <id>" for an executable, a symlink
        or a gitlink (objects.entry_id), so that no kind of entry looks like a file."""
        self._ensure()
        head = self._local_head()
        if head is None:
            return {}
        if self._listing is None or self._listing[0] != head:
            self._listing = None  # never a stale listing, even if ls-tree fails
            out = self._must("ls-tree", "ls-tree", "-r", "-z", "--full-tree", head)
            entries: dict[str, str] = {}
            for record in out.split(b"\0"):
                if not record:
                    continue
                meta, _, raw_path = record.partition(b"\t")
                mode, _kind, oid = meta.decode().split(" ")
                # objects.entry_id, inlined: this loop runs once per file of the repo.
                entries[raw_path.decode("utf-8", "surrogateescape")] = (
                    oid if mode == REGULAR_FILE else f"{mode} {oid}"
                )
            self._listing = (head, entries)
        listing = self._listing[1]
        if not prefix:
            return dict(listing)
        if not prefix.endswith("/"):
            return {prefix: listing[prefix]} if prefix in listing else {}
        return {path: oid for path, oid in listing.items() if path.startswith(prefix)}

    def read_blob(self, blob_id: str) -> bytes:
        """The bytes of one blob, through one long-lived `git cat-file --batch`."""
        return self.read_blobs([blob_id])[blob_id]

    def preload_blobs(self, blob_ids: Sequence[str], *, max_bytes: int | None = None) -> None:
        """Read blobs ahead of their use (from the thread that synced the clone,
        while the cycle waits on the control plane); read_blobs hands each out once."""
        if blob_ids:
            self._preloaded.update(self.read_blobs(blob_ids, max_bytes=max_bytes))

    def blob_sizes(self, entries: Sequence[str], *, missing_ok: bool = False) -> dict[str, int]:
        """Blob id -> size, of those of `entries` (listing entries or ids) that are
        blobs in the clone; the rest (not an id, another kind of object, a
        symlink's or gitlink's entry) are left out. One `cat-file --batch-check`;
        nothing is read. An id the clone lacks means damage (a listing's entries
        exist: the fetch checked), LocalCloneBroken, unless `missing_ok` (an id
        from a file's content, which may name anything): then it is left out."""
        ids = [e for e in dict.fromkeys(entries) if _OID.match(e)]
        if not ids:
            return {}
        self._ensure()
        result = self._git(
            "cat-file", "--batch-check", input="".join(f"{i}\n" for i in ids).encode()
        )
        if result.returncode != 0:
            raise self._broken("cat-file --batch-check", result.stderr)
        sizes: dict[str, int] = {}
        for line in result.stdout.decode().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] == "blob":
                sizes[parts[0]] = int(parts[2])
            elif len(parts) == 2 and parts[1] == "missing" and not missing_ok:
                raise self._broken(
                    "cat-file --batch-check", f"object {parts[0]} is missing; {result.stderr}"
                )
        return sizes

    def read_blobs(
        self, blob_ids: Sequence[str], *, max_bytes: int | None = None, missing_ok: bool = False
    ) -> dict[str, bytes]:
        """Blob id -> bytes, through one long-lived `git cat-file --batch`. With many
        ids a thread writes the requests while this one reads the answers: no round
        trip per blob (a restarted bridge reads 10,000 state files back).

        With `max_bytes` the ids may come from anyone (a state file, a listing
        entry that is not a file): each is first sized by blob_sizes(), and only
        blobs of at most `max_bytes` are read; the rest are left out of the result
        and never read (blob_sizes() tells the caller why); `missing_ok` as there."""
        ids = list(dict.fromkeys(blob_ids))
        ahead = {oid: self._preloaded.pop(oid) for oid in ids if oid in self._preloaded}
        if max_bytes is not None:
            ahead = {oid: data for oid, data in ahead.items() if len(data) <= max_bytes}
            rest = [oid for oid in ids if oid not in ahead]
            sizes = self.blob_sizes(rest, missing_ok=missing_ok) if rest else {}
            ids = [oid for oid in rest if sizes.get(oid, max_bytes + 1) <= max_bytes]
            return {**ahead, **self.read_blobs(ids)} if ids else ahead
        if ahead:
            ids = [oid for oid in ids if oid not in ahead]
            return {**ahead, **self.read_blobs(ids)} if ids else ahead
        for oid in ids:
            if not _OID.match(oid):
                raise ValueError(f"not a blob id: {oid!r}")
        self._ensure()
        for attempt in range(2):
            proc = self._start_catfile()
            assert proc.stdin is not None and proc.stdout is not None
            request = "".join(f"{oid}\n" for oid in ids).encode()
            writer = None
            if len(ids) > 1:
                writer = threading.Thread(target=_feed, args=(proc.stdin, request), daemon=True)
            answers: list[tuple[str, str, bytes]] = []
            try:
                if writer is None:
                    proc.stdin.write(request)
                    proc.stdin.flush()
                else:
                    writer.start()
                for _blob_id in ids:
                    header = proc.stdout.readline()
                    if not header:
                        raise BrokenPipeError
                    parts = header.decode().split()
                    if len(parts) == 2 and parts[1] == "missing":
                        answers.append((parts[0], "missing", b""))
                        continue
                    if len(parts) != 3:
                        self._close_catfile()
                        raise self._broken("read_blob", f"unexpected cat-file output {header!r}")
                    answers.append(
                        (parts[0], parts[1], _read_exact(proc.stdout, int(parts[2]) + 1)[:-1])
                    )
            except (BrokenPipeError, OSError, ValueError) as e:
                self._close_catfile()
                if attempt:
                    raise self._broken("read_blob", f"cat-file failed: {e!r}") from e
                continue
            finally:
                if writer is not None:
                    writer.join()
            out: dict[str, bytes] = {}
            for wanted, (oid, kind, data) in zip(ids, answers, strict=True):
                if kind == "missing":
                    raise self._broken("read_blob", f"object {wanted} is missing")
                if oid != wanted:
                    self._close_catfile()
                    raise self._broken("read_blob", f"cat-file answered {oid} for {wanted}")
                if kind != "blob":
                    raise ValueError(f"{wanted} is a {kind}, not a blob")
                out[wanted] = data
            return out
        raise AssertionError("unreachable")  # pragma: no cover

    def _start_catfile(self) -> subprocess.Popen[bytes]:
        if self._catfile is None or self._catfile.poll() is not None:
            self._close_catfile()
            self._catfile = subprocess.Popen(
                ["git", *BASE_CONFIG, f"--git-dir={self.path}", "cat-file", "--batch"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=self._env,
                start_new_session=True,
            )
        return self._catfile

    def _close_catfile(self) -> None:
        proc, self._catfile = self._catfile, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def last_commit_for(self, path: str) -> tuple[str, str, str, str] | None:
        """(sha, author name, author email, subject) of the last commit touching path."""
        self._ensure()
        head = self._local_head()
        if head is None:
            return None
        args = ["log", "-1", "--format=%H%x00%an%x00%ae%x00%s", head]
        clean = path.strip("/")
        if clean:
            args += ["--", clean]
        out = self._must("log", *args).decode("utf-8", "replace").rstrip("\n")
        if not out:
            return None
        sha, name, email, subject = out.split("\0", 3)
        return sha, name, email, subject

    # -- writing --------------------------------------------------------------------

    def check_signing(self) -> None:
        """SigningError unless the configured signing key can sign now; no-op unsigned."""
        self.signer.check()
        self._signing_checked = True

    def commit(
        self, message: str, *, write: Mapping[str, bytes], delete: Iterable[str] = ()
    ) -> str | None:
        """One commit on the local branch: `delete` (files or whole folders) first,
        then `write`. None when the tree would not change (no empty commits)."""
        writes = {check_repo_path(p): bytes(data) for p, data in write.items()}
        deletes = sorted({check_repo_path(p, folder=True, listed=True) for p in delete})
        if not message.strip():
            raise ValueError("empty commit message")
        self._ensure()
        if self.signer.enabled and not self._signing_checked:
            self.check_signing()
        parent = self._local_head()
        if parent is None and not writes:
            return None
        parent_tree = None
        if parent is not None:
            out = self._must("read the parent tree", "rev-parse", f"{parent}^{{tree}}")
            parent_tree = out.decode().strip()
        tree = self._build_tree(parent, parent_tree, writes, deletes)
        checkpoint("writing-files")
        if tree == parent_tree:
            return None
        sha = self._commit_tree(tree, parent, message)
        # Compare-and-swap: fails if anything moved the branch since we read it.
        old = parent or ""
        moved = self._git("update-ref", "-m", "gitops-bridge commit", self.local_ref, sha, old)
        if moved.returncode != 0:
            raise self._broken("update-ref", moved.stderr, mark=False)
        self._advance_listing(parent, sha, [(message, writes, deletes)])
        self._set_head(sha)
        return sha

    def commit_all(
        self, commits: Sequence[tuple[str, Mapping[str, bytes], Iterable[str]]]
    ) -> list[str | None]:
        """Several commits in order, each as `commit(message, write=, delete=)` would
        make it; the sha of each, None where it would not change the tree.

        Unsigned, they go through one `git fast-import` stream and one ref update:
        ~1 ms per commit instead of ~20 ms for the 7 git processes of `commit()`
        (a cold cycle of 1,000 deployments makes 1,000 commits). fast-import
        cannot sign, so signed commits take the per-commit path."""
        todo = [
            (
                message,
                {check_repo_path(p): bytes(data) for p, data in write.items()},
                sorted({check_repo_path(p, folder=True, listed=True) for p in delete}),
            )
            for message, write, delete in commits
        ]
        if any(not message.strip() for message, _w, _d in todo):
            raise ValueError("empty commit message")
        if not todo or self.signer.enabled:
            return self._commit_singly(todo)
        # One commit too: fast-import reads no whole tree into an index, so it
        # writes over and deletes any entry a tree can hold (`commit()` starts
        # with `read-tree`, which refuses some names anyone can push).
        self._ensure()
        parent = self._local_head()
        shas = self._fast_import(parent, todo)
        empty = self._empty_commits(parent, shas)
        out: list[str | None] = list(shas)
        if empty:
            # A commit that would not change the tree (the caller plans only real
            # changes, so this is rare) changed nothing for the ones after it
            # either: import again without it. What fast-import wrote first is
            # unreachable and pruned by gc.
            keep = [i for i in range(len(todo)) if i not in empty]
            if not keep:
                return [None] * len(todo)
            shas = self._fast_import(parent, [todo[i] for i in keep])
            if self._empty_commits(parent, shas):
                raise self._broken("fast-import", "a commit changed nothing on a second import")
            out = [None] * len(todo)
            for i, sha in zip(keep, shas, strict=True):
                out[i] = sha
        checkpoint("writing-files")
        moved = self._git(
            "update-ref",
            "--stdin",
            input=(
                f"start\nupdate {self.local_ref} {shas[-1]} {parent or '0' * 40}\n"
                f"delete {_IMPORT_REF}\ncommit\n"
            ).encode(),
        )
        if moved.returncode != 0:
            raise self._broken("update-ref", moved.stderr, mark=False)
        self._advance_listing(parent, shas[-1], todo)
        self._set_head(shas[-1])
        self._index_tree = None  # the index holds an older tree now
        return out

    def _advance_listing(
        self,
        parent: str | None,
        head: str,
        commits: Sequence[tuple[str, dict[str, bytes], list[str]]],
    ) -> None:
        """The tree listing of `head` from the parent's and what the commits did,
        so the next ls_tree() needs no `ls-tree` (a cold cycle's 1,000 folders)."""
        if parent is None:
            listing: dict[str, str] = {}
        elif self._listing is not None and self._listing[0] == parent:
            listing = dict(self._listing[1])
        else:
            self._listing = None
            return
        for _message, write, delete in commits:
            for path in delete:
                listing.pop(path, None)
                inside = path + "/"
                for gone in [p for p in listing if p.startswith(inside)]:
                    del listing[gone]
            for path, data in write.items():
                listing[path] = blob_id(data)
        self._listing = (head, listing)

    def _commit_singly(
        self, commits: Sequence[tuple[str, dict[str, bytes], list[str]]]
    ) -> list[str | None]:
        out: list[str | None] = []
        for index, (message, write, delete) in enumerate(commits):
            if index:
                checkpoint("between-commits")
            out.append(self.commit(message, write=write, delete=delete))
        return out

    def _fast_import(
        self, parent: str | None, commits: list[tuple[str, dict[str, bytes], list[str]]]
    ) -> list[str]:
        """Write the commits on _IMPORT_REF; their shas."""
        s = self.settings
        author = f"{s.author_name} <{s.author_email}> now".encode()
        marks = self._marks_file
        proc = subprocess.Popen(
            [
                "git",
                *BASE_CONFIG,
                f"--git-dir={self.path}",
                "fast-import",
                "--quiet",
                "--done",
                "--force",  # _IMPORT_REF is ours and scratch; the branch moves by CAS below
                "--date-format=now",
                f"--export-marks={marks}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self._env,
            start_new_session=True,
        )
        assert proc.stdin is not None
        # stderr is read at the end: fast-import writes to it only when it fails.
        try:
            # Start the scratch ref afresh (a crashed run may have left it behind);
            # the first commit's parent is the branch head, named explicitly.
            proc.stdin.write(b"reset %s\n\n" % _IMPORT_REF.encode())
            for index, (message, write, delete) in enumerate(commits):
                if index:
                    # The first commits are in fast-import's unfinished pack, the
                    # branch has not moved: a crash here leaves a temp pack only.
                    checkpoint("between-commits")
                text = (message if message.endswith("\n") else message + "\n").encode()
                chunk = bytearray(b"commit %s\nmark :%d\n" % (_IMPORT_REF.encode(), index + 1))
                chunk += b"author %s\ncommitter %s\n" % (author, author)
                chunk += b"data %d\n%s\n" % (len(text), text)
                if index == 0 and parent is not None:
                    chunk += b"from %s\n" % parent.encode()
                for path in delete:
                    chunk += b"D %s\n" % _quote(path)
                for path, data in write.items():
                    chunk += b"M 100644 inline %s\ndata %d\n" % (_quote(path), len(data))
                    chunk += data
                    chunk += b"\n"
                proc.stdin.write(chunk)
            _out, err = proc.communicate(b"done\n", timeout=LOCAL_TIMEOUT)
            stderr = err.decode("utf-8", "replace")
            returncode = proc.returncode
        except (BrokenPipeError, OSError) as e:
            proc.kill()
            _out, err = proc.communicate()
            marks.unlink(missing_ok=True)
            raise self._broken("fast-import", f"{e!r}: {err.decode('utf-8', 'replace')}") from e
        except BaseException:
            proc.kill()
            proc.communicate()
            marks.unlink(missing_ok=True)
            raise
        if returncode != 0:
            marks.unlink(missing_ok=True)
            raise self._broken("fast-import", stderr)
        return self._take_marks(marks, len(commits), "commit")

    def _empty_commits(self, parent: str | None, shas: list[str]) -> set[int]:
        """The positions of the commits of a chain (`shas`, on `parent`) whose tree
        is their parent's: no empty commits are published (one process)."""
        listed = self._must(
            "list the new trees",
            "rev-list",
            "--no-commit-header",
            "--format=%T",
            "-n",
            str(len(shas) + (parent is not None)),
            shas[-1],
        )
        trees = listed.decode().split()[::-1]  # oldest first; parent's tree first if any
        if parent is None:
            trees = [_EMPTY_TREE, *trees]  # a root commit must not be empty either
        if len(trees) != len(shas) + 1:
            raise self._broken("fast-import", f"{len(trees)} trees for {len(shas)} commits")
        return {i for i, (a, b) in enumerate(itertools.pairwise(trees)) if a == b}

    def _build_tree(
        self,
        parent: str | None,
        parent_tree: str | None,
        writes: dict[str, bytes],
        deletes: list[str],
    ) -> str:
        index = self._index
        env = {**self._env, "GIT_INDEX_FILE": str(index)}
        reuse = parent_tree is not None and parent_tree == self._index_tree and index.exists()
        self._index_tree = None  # unknown until write-tree succeeds
        try:
            if not reuse:
                index.unlink(missing_ok=True)
                if parent is not None:
                    self._read_tree(parent, env)
                else:
                    self._must("read-tree", "read-tree", "--empty", env=env)
            records: list[bytes] = []
            if deletes:
                listed = self._must("ls-files", "ls-files", "-z", "--", *deletes, env=env)
                zero = "0" * len(parent or "0" * 40)
                # mode 0 in --index-info removes the entry (the same as --force-remove)
                records += [f"0 {zero}\t".encode() + p for p in listed.split(b"\0") if p]
            if writes:
                paths = list(writes)
                oids = self._hash_blobs([writes[p] for p in paths])
                records += [
                    f"100644 {oid}\t{p}".encode() for p, oid in zip(paths, oids, strict=True)
                ]
            if records:
                self._must(
                    "update-index",
                    "update-index",
                    "-z",
                    "--index-info",
                    input=b"\0".join(records) + b"\0",
                    env=env,
                )
            tree = self._must("write-tree", "write-tree", env=env).decode().strip()
        except BaseException:
            index.unlink(missing_ok=True)
            raise
        self._index_tree = tree
        return tree

    def _read_tree(self, parent: str, env: Mapping[str, str]) -> None:
        """`read-tree` of the parent into the index. git refuses an index entry
        named ".", ".." or ".git", which anyone can push with plumbing: that is the
        branch's problem, not the clone's (cloning again would find it again)."""
        result = self._git("read-tree", parent, env=env)
        if result.returncode == 0:
            return
        bad = _INVALID_PATH.search(result.stderr)
        if bad is None:
            raise self._broken("read-tree", result.stderr)
        raise GitError(
            f"target {self._ns}: branch {self.branch} holds an entry named "
            f"{quote_path(bad.group(1))}, which git refuses in an index; signed commits are "
            "made through one, so none can be made until it is removed",
            hint="remove that entry with a commit of your own (made with `git fast-import` "
            "or `git mktree`: a checkout refuses it too)",
        )

    def _hash_blobs(self, contents: list[bytes]) -> list[str]:
        if len(contents) == 1:
            out = self._must("hash-object", "hash-object", "-w", "--stdin", input=contents[0])
            return [out.decode().strip()]
        # Many blobs: one fast-import process writes them all (as one pack, or as
        # loose objects below fastimport.unpackLimit) with no temp file per blob;
        # 10k blobs take 0.4 s where hash-object per file takes ~20 s.
        stream = bytearray()
        for mark, data in enumerate(contents, 1):
            stream += b"blob\nmark :%d\ndata %d\n" % (mark, len(data))
            stream += data
            stream += b"\n"
        stream += b"done\n"
        marks = self._marks_file
        try:
            self._must(
                "fast-import",
                "fast-import",
                "--quiet",
                "--done",
                f"--export-marks={marks}",
                input=bytes(stream),
            )
        except BaseException:
            marks.unlink(missing_ok=True)
            raise
        return self._take_marks(marks, len(contents), "blob")

    @property
    def _marks_file(self) -> Path:
        """Where fast-import exports the ids of its marks (one file per instance)."""
        return self.path / f"bridge-marks-{os.getpid()}-{id(self):x}"

    def _take_marks(self, marks: Path, count: int, what: str) -> list[str]:
        """The object ids of marks :1 to :count from fast-import's marks file,
        which is removed."""
        try:
            text = marks.read_text()
        except OSError as e:
            raise self._broken("fast-import", f"cannot read the marks file: {e}") from e
        finally:
            marks.unlink(missing_ok=True)
        by_mark = dict(line.split(" ", 1) for line in text.splitlines() if line)
        try:
            return [by_mark[f":{mark}"] for mark in range(1, count + 1)]
        except KeyError as e:
            raise self._broken("fast-import", f"no object id for {what} {e}") from e

    def _commit_tree(self, tree: str, parent: str | None, message: str) -> str:
        config, flags = self.signer.commit_tree_args()
        s = self.settings
        env = {
            **self._env,
            **self.signer.env(),
            "GIT_AUTHOR_NAME": s.author_name,
            "GIT_AUTHOR_EMAIL": s.author_email,
            "GIT_COMMITTER_NAME": s.author_name,
            "GIT_COMMITTER_EMAIL": s.author_email,
        }
        args = ["commit-tree", tree, *(["-p", parent] if parent else []), *flags, "-F", "-"]
        text = message if message.endswith("\n") else message + "\n"
        result = self._git(*args, input=text.encode(), env=env, config=config)
        if result.returncode != 0:
            if self.signer.enabled:
                raise self.signer.failure(
                    f"git could not sign: {self.transport.clean(result.stderr)}"
                )
            raise self._broken("commit-tree", result.stderr, mark=False)
        sha = result.stdout.decode().strip()
        if self.signer.enabled:
            raw = self._must("read the new commit", "cat-file", "commit", sha)
            if b"\ngpgsig " not in raw.split(b"\n\n", 1)[0]:
                raise self.signer.failure("git made a commit without a signature")
        return sha

    # -- push -----------------------------------------------------------------------

    def push(self) -> bool:
        """Push the local branch if it is ahead; never forced. False: nothing to push."""
        self._ensure()
        local = self._local_head()
        if local is None:
            return False
        remote = self._rev(self.tracking_ref)
        if remote == local:
            return False
        if remote is not None:
            ahead = self._must("rev-list", "rev-list", "--count", f"{remote}..{local}")
            if ahead.decode().strip() == "0":
                return False
        # No leading "+" and no --force: the server refuses anything but a fast-forward.
        result = self._git(
            "push",
            "--porcelain",
            "--no-recurse-submodules",
            "origin",
            f"{self.local_ref}:{self.local_ref}",
            env=self.transport.remote_env(),
            timeout=REMOTE_TIMEOUT,
            config=REMOTE_CONFIG,
        )
        status = _porcelain_status(result.stdout.decode("utf-8", "replace"), self.local_ref)
        if status is None:
            raise self.transport.failure("push to", result.stderr)
        flag, summary = status
        if flag == "!":
            raise self._rejected(summary, result.stderr)
        if result.returncode != 0:
            raise self.transport.failure("push to", result.stderr)
        # git already moved the tracking ref; make sure even for odd remotes.
        self._must("update the tracking ref", "update-ref", self.tracking_ref, local)
        self._ref_snapshot = None
        self._maintain()
        return True

    def _gc_due(self) -> bool:
        """git's own `gc --auto` test with its default thresholds, without starting
        git: more than 6,700 loose objects (estimated from objects/17) or more than
        50 packs. Objects of failed pushes and crashed cycles are pruned even when
        no push follows for a long time."""
        try:
            loose = sum(1 for e in os.scandir(self.path / "objects" / "17") if len(e.name) >= 38)
        except OSError:
            loose = 0
        try:
            packs = sum(
                1 for e in os.scandir(self.path / "objects" / "pack") if e.name.endswith(".pack")
            )
        except OSError:
            packs = 0
        return loose > (6700 + 255) // 256 or packs > 50

    def _maintain(self) -> None:
        """`git gc --auto` after a push: what was just published is safe, and a cycle
        that wrote is the one that added packs and loose objects. Usually a no-op
        (~3 ms); a repack when git's thresholds are passed. A failure is logged,
        not raised: the cycle's work is done and the next cycle tries again."""
        result = self._git("gc", "--auto", "--quiet", config=("-c", "gc.autoDetach=false"))
        if result.returncode != 0:
            log.warning(
                "target %s: git gc --auto failed in %s: %s",
                self._ns,
                self.path,
                self.transport.clean(result.stderr)[-300:],
                extra={"target": self._ns},
            )

    def _rejected(self, summary: str, stderr: str) -> GitError:
        where = (
            f"target {self._ns}: push of {self.branch} to {self.transport.display_url} was "
            f"refused: {self.transport.clean(summary)}"
        )
        low = summary.lower()
        if summary.startswith("[rejected]") or "lock" in low or "failed to update ref" in low:
            return PushRejected(
                where,
                hint="someone else pushed first; the bridge fetches, re-renders on the new head "
                "and retries (it never force-pushes)",
            )
        return GitError(
            where + (f" ({self.transport.clean(stderr)})" if stderr.strip() else ""),
            hint=f"a hook or branch protection on the server refused the bridge's commit; allow "
            f"the bridge's identity to push to {self.branch} (the bridge never force-pushes)",
        )

    # -- end --------------------------------------------------------------------------

    def close(self) -> None:
        self._close_catfile()
        self._index.unlink(missing_ok=True)
        self._index_tree = None
        self._forget_head()  # another process may move refs once the lock is released
        self._ref_snapshot = None
        self._preloaded.clear()  # read ahead for this cycle only
        self.transport.close()
        if self._locked:
            _release_clone_lock(self._lock_path)
            self._locked = False
        self._ready = False


def _quote(path: str) -> bytes:
    """A path for a fast-import `M`/`D` line: C-style quoted, so that no name (a
    newline, a backslash, a leading quote: a path to delete is whatever someone
    pushed) can be misread or end the line."""
    raw = path.encode("utf-8", "surrogateescape")
    return b'"' + (raw if PLAIN_PATH.match(raw) else c_quote(raw)) + b'"'


def _feed(stream: IO[bytes], data: bytes) -> None:
    """Write requests to a child (from a thread, while its answers are read)."""
    try:
        stream.write(data)
        stream.flush()
    except (OSError, ValueError):  # ValueError: the reader closed the pipe meanwhile
        pass  # the child died or was stopped: its reader sees that


def _read_exact(stream: IO[bytes], size: int) -> bytes:
    chunks = []
    left = size
    while left > 0:
        chunk = stream.read(left)
        if not chunk:
            raise BrokenPipeError("cat-file ended early")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _porcelain_status(stdout: str, ref: str) -> tuple[str, str] | None:
    """(flag, summary) of `ref` in `git push --porcelain` output, or None."""
    for line in stdout.splitlines():
        if len(line) < 2 or line[1] != "\t":
            continue
        flag, refs, *rest = line.split("\t")
        src, _, dst = refs.partition(":")
        if dst == ref or src == ref:
            return flag, rest[0] if rest else ""
    return None


def _remote_said(stderr: str) -> bool:
    # "remote: ... corrupt" is the server's problem, not our clone's.
    return any(line.startswith("remote:") for line in stderr.splitlines()) and not any(
        _LOCAL_DAMAGE.search(line) for line in stderr.splitlines() if not line.startswith("remote:")
    )
