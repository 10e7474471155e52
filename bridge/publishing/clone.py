"""The clone of one target: path, lock, running git, head, repair (bridge.publishing).

Every other part of the writer (reading, writing, syncing, pushing) works
through one `Clone`; credentials exist only in the environment of the git
processes it starts (bridge.publishing.transport).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from bridge.config import GitSettings, Target
from bridge.errors import LocalCloneBroken
from bridge.privatefiles import write_private
from bridge.publishing.transport import (
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

# In a clone: its mtime is when temp objects were last looked for (any process).
_SWEPT = "bridge-objects-swept"
# In a clone: the config's (inode, size, mtime) when its remote was last found
# to be the target's repo, and a digest of that repo (any process).
_REMOTE_CHECKED = "bridge-remote-checked"

LOCK_TIMEOUT = 120.0

_NEEDS_RECLONE = "bridge-needs-reclone"

_OID = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")


def clone_dir_name(target: Target) -> str:
    """Readable and unique: the tail of the sanitized target key plus a short hash."""
    digest = hashlib.sha256(target.key.encode()).hexdigest()[:12]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", target.key.replace("://", "-"))
    readable = readable[-60:].lstrip(".-") or "target"
    return f"{readable}-{digest}"


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


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _note(path: Path, data: bytes) -> None:
    """A marker for the next process, never written through a planted link; if it
    cannot be written, the next process looks again: only time is lost."""
    with contextlib.suppress(OSError):
        write_private(path, data)


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


class Clone:
    """One target's persistent bare clone under `git.workdir`: where it is, the lock
    that keeps other bridge processes out while this one works in it, running
    git there, the branch head and tree listing as last seen, and repair (a clone
    found damaged is moved aside and made afresh from the remote)."""

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
        self.env = base_env()
        self._lock_path = self.workdir / (self.path.name + ".lock")
        self._lock_timeout = lock_timeout
        self._locked = False
        self.ready = False
        # The local branch head as we last set or read it, valid while we hold
        # the clone lock (nothing else moves refs then); None = ask git.
        self._head: str | None = None
        self._head_known = False
        # When temp objects were last looked for (time.time()); None: not yet.
        self._objects_swept: float | None = None
        # The whole tree listing of one commit: keyed by the commit id, so it is
        # never stale, and it survives release() for the next cycle of a kept clone.
        self.listing: tuple[str, dict[str, str]] | None = None
        # Refs as diagnose() just read them, for the sync() that follows it.
        self.ref_snapshot: dict[str, str] | None = None
        # (inode, size, mtime) of the clone's config when its remote was last
        # found right: an unchanged file needs no `git config` call next cycle.
        self._config_checked: tuple[int, int, int] | None = None
        # What the readers and writers of this clone forget when it is replaced
        # (a cat-file process on the old objects, an index of the old tree).
        self.on_replace: list[Callable[[], None]] = []

    @property
    def ns(self) -> str:
        return self.target.namespace

    def git(
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
            env=self.env if env is None else env,
            input=input,
            config=config,
            **kwargs,
        )

    def must(self, action: str, *args: str, **kwargs: object) -> bytes:
        """Run a local git step; a failure means the clone is damaged."""
        result = self.git(*args, **kwargs)  # type: ignore[arg-type]
        if result.returncode != 0:
            raise self.broken(action, result.stderr)
        return result.stdout

    def broken(self, action: str, stderr: str, *, mark: bool = True) -> LocalCloneBroken:
        self.forget_head()
        if mark:
            # The next sync() moves this clone aside and makes a fresh one.
            try:
                (self.path / _NEEDS_RECLONE).write_text(f"{action}: {stderr[-500:]}\n")
            except OSError:
                pass
        return LocalCloneBroken(
            f"target {self.ns}: {action} failed in the local clone {self.path}: "
            f"{self.transport.clean(stderr) or 'no output'}",
            hint="the next cycle re-creates the clone from the remote; if this repeats, "
            "check free disk space and permissions of git.workdir",
        )

    def rev(self, ref: str) -> str | None:
        result = self.git("rev-parse", "-q", "--verify", "--end-of-options", ref)
        if result.returncode != 0:
            return None
        return result.stdout.decode().strip() or None

    def local_head(self) -> str | None:
        if not self._head_known:
            self.set_head(self.rev(self.local_ref))
        return self._head

    def set_head(self, head: str | None) -> None:
        self._head, self._head_known = head, True
        self.ref_snapshot = None  # refs moved since _diagnose() read them

    def forget_head(self) -> None:
        self._head, self._head_known = None, False

    def ensure(self) -> None:
        if self.ready:
            return
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LocalCloneBroken(
                f"target {self.ns}: cannot create the workdir {self.workdir}: {e.strerror}",
                hint="set git.workdir to a writable folder",
            ) from e
        if not self._locked:
            _acquire_clone_lock(self._lock_path, self._lock_timeout, self.ns)
            self._locked = True
        if not self.path.exists():
            self._create()
        else:
            self._remove_stale_files()
            problem = self.diagnose()
            if problem is not None:
                self.replace(problem)
        self.ready = True

    def diagnose(self) -> str | None:
        """Why the clone at self.path is unusable, or None."""
        marker = self.path / _NEEDS_RECLONE
        if marker.exists():
            try:
                why = marker.read_text(errors="replace").strip()[:300]
            except OSError:
                why = "unknown"
            return f"an earlier step found it damaged ({why})"
        # for-each-ref fails on a non-repository and on refs to missing objects.
        refs = self.git("for-each-ref", "--format=%(refname) %(objectname) %(objecttype)")
        if refs.returncode != 0:
            return f"it is not a usable repository ({self.transport.clean(refs.stderr)})"
        self.ref_snapshot = {
            name: oid
            for name, oid, _kind in (line.split(" ") for line in refs.stdout.decode().splitlines())
        }
        signature = self._config_signature()
        if signature is not None and self._config_checked is None:
            self._config_checked = self._remote_checked_before()
        if signature is None or signature != self._config_checked:
            url = self.git("config", "--get", "remote.origin.url")
            current = url.stdout.decode().strip()
            if url.returncode != 0 or current != self.target.repo:
                self._config_checked = None
                return f"its remote is {current or 'unset'!r}, not the target's repo"
            self._config_checked = signature
            if signature is not None:
                _note(self.path / _REMOTE_CHECKED, self._remote_record(signature).encode())
        try:  # git's own format for a symbolic HEAD; saves a process per cycle
            head = (self.path / "HEAD").read_text().strip()
        except OSError:
            head = ""
        if head != f"ref: {self.local_ref}":
            self.must("point HEAD at the branch", "symbolic-ref", "HEAD", self.local_ref)
        return None

    def _remote_record(self, signature: tuple[int, int, int]) -> str:
        repo = hashlib.sha256(self.target.repo.encode()).hexdigest()
        ino, size, mtime = signature
        return f"{ino} {size} {mtime} {repo}\n"

    def _remote_checked_before(self) -> tuple[int, int, int] | None:
        """The config signature an earlier process found the remote right in
        (a `git config` process a target saved for each `run --once`); the
        record names the target's repo too, so a changed `repo` is checked."""
        try:
            text = (self.path / _REMOTE_CHECKED).read_text(encoding="ascii")
            ino, size, mtime, _repo = text.split(" ")
            signature = int(ino), int(size), int(mtime)
        except (OSError, ValueError):
            return None
        return signature if text == self._remote_record(signature) else None

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
            result = run_git(step, git_dir=None if i == 0 else tmp, env=self.env)
            if result.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                raise LocalCloneBroken(
                    f"target {self.ns}: cannot create a clone in {self.workdir}: "
                    f"{self.transport.clean(result.stderr)}",
                    hint="check free disk space and permissions of git.workdir",
                )
        try:
            os.rename(tmp, self.path)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise LocalCloneBroken(
                f"target {self.ns}: cannot create the clone {self.path}: {e.strerror}",
                hint="check permissions of git.workdir",
            ) from e

    def replace(self, problem: str) -> None:
        """Move an unusable clone aside (kept once, for forensics) and start fresh."""
        for forget in self.on_replace:
            forget()
        self.forget_head()
        self.ref_snapshot = None
        aside = self.path.with_name(self.path.name + ".broken")
        log.warning(
            "target %s: local clone %s is unusable (%s); moving it to %s and cloning again",
            self.ns,
            self.path,
            problem,
            aside,
            extra={"target": self.ns},
        )
        try:
            shutil.rmtree(aside, ignore_errors=True)
            os.rename(self.path, aside)
        except OSError as e:
            raise LocalCloneBroken(
                f"target {self.ns}: the local clone {self.path} is unusable ({problem}) and "
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
        # Half-written packs of a killed fetch or fast-import: one folder of a
        # few files, looked at every open, so that the run after a crash
        # leaves none (README "Crash").
        candidates.extend(self.path.glob("objects/pack/tmp_*"))
        # Half-written loose objects: harmless to git, but disk that nothing
        # else ever frees. Looking costs a scan of up to 256 folders (~6 ms a
        # clone: a tenth of an unchanged cycle at 10,000 deployments over 10
        # targets, and 60 ms of CPU in each `run --once` process over 10
        # targets), so it is done at most once per STALE_LOCK_SECONDS a clone,
        # across processes: the marker file's mtime says when it was last done.
        swept = self._objects_swept
        if swept is None:
            swept = self._objects_swept = _mtime(self.path / _SWEPT)
        if swept is None or not 0 <= now - swept < STALE_LOCK_SECONDS:
            self._objects_swept = now
            candidates.extend(self.path.glob("objects/??/tmp_obj_*"))
            _note(self.path / _SWEPT, b"")
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
                    self.ns,
                    item,
                    extra={"target": self.ns},
                )
                if item.is_dir() and not item.is_symlink():
                    shutil.rmtree(item, ignore_errors=True)
                else:
                    item.unlink(missing_ok=True)

    def gc_due(self) -> bool:
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

    def maintain(self) -> None:
        """`git gc --auto` after a push: what was just published is safe, and a cycle
        that wrote is the one that added packs and loose objects. Usually a no-op
        (~3 ms); a repack when git's thresholds are passed. A failure is logged,
        not raised: the cycle's work is done and the next cycle tries again."""
        result = self.git("gc", "--auto", "--quiet", config=("-c", "gc.autoDetach=false"))
        if result.returncode != 0:
            log.warning(
                "target %s: git gc --auto failed in %s: %s",
                self.ns,
                self.path,
                self.transport.clean(result.stderr)[-300:],
                extra={"target": self.ns},
            )

    def release(self) -> None:
        """Let other processes in: nothing of the head or refs is trusted after."""
        self.forget_head()  # another process may move refs once the lock is released
        self.ref_snapshot = None
        self.transport.close()
        if self._locked:
            _release_clone_lock(self._lock_path)
            self._locked = False
        self.ready = False
