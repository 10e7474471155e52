"""Where rendered roots are validated before they are committed: a scratch
folder on tmpfs when it has room (else the system temp dir), written root by
root while the reconciler renders on (`ValidationRun`), and cleaned up even
after a killed bridge (`remove_stale_scratch`). The roots hold no plaintext
secret (they are what gets committed, sealed already).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.config import Settings
from bridge.validation import checkcache

if TYPE_CHECKING:
    from bridge.validation.objects import RootCheck

log = logging.getLogger("bridge.validation")


class Validator:
    """Builds and schema-checks rendered roots in a scratch dir before they are committed.

    The scratch dir is on tmpfs (`/dev/shm`) when that exists, is writable and
    has room to spare, else in the system temp dir. Measured for 1,000 roots
    (16 MB): written in 0.17 s on tmpfs against 1.3-3.2 s in /tmp on ext4
    (writeback of the dirty pages), removed in 56 against 170 ms. Either way
    the dir is mkdtemp's (mode 0700); the roots hold no plaintext secret
    (they are what gets committed, sealed already)."""

    TMPFS = Path("/dev/shm")  # noqa: S108 - only ever the parent of a mkdtemp dir

    class _NoRoom(Exception):
        """Writing to tmpfs failed (full since it was measured): use the temp dir."""

    def __init__(self, settings: Settings) -> None:
        from bridge.validation import libkustomize
        from bridge.validation.folders import find_schema_dir

        self.settings = settings
        libkustomize.wanted()  # a mistyped BRIDGE_KUSTOMIZE stops the bridge at start
        # Compiled schema checks outlive the process beside the clones: a
        # `run --once` that changes one deployment then loads them (~5 ms a
        # kind) instead of importing jsonschema (~0.16 s).
        checkcache.configure(settings.git.workdir / "checks")
        self.schema_dir, origin = find_schema_dir(settings.render.schema_dir)
        log.debug("custom resources are checked against %s (%s)", self.schema_dir, origin)

    def __call__(self, roots: dict[str, dict[str, bytes]]) -> dict[str, list[str]]:
        parent = self.scratch_parent(roots)
        remove_stale_scratch(Path(parent or tempfile.gettempdir()))
        try:
            return self._check_in(parent, roots)
        except Validator._NoRoom as e:
            log.warning("validation scratch dir on %s failed (%s); using the temp dir", parent, e)
            return self._check_in(None, roots)

    def _check_in(
        self, parent: str | None, roots: dict[str, dict[str, bytes]]
    ) -> dict[str, list[str]]:
        from bridge.validation.roots import check_roots

        try:
            scratch = tempfile.TemporaryDirectory(prefix=_scratch_prefix(), dir=parent)
        except OSError as e:
            if parent is None:
                raise
            raise Validator._NoRoom(e.strerror or str(e)) from e
        with scratch as tmp:
            base = Path(tmp)
            try:
                for folder, files in roots.items():
                    _write_root(base, folder, files)
            except OSError as e:
                if parent is None:
                    raise
                raise Validator._NoRoom(e.strerror or str(e)) from e
            checked = check_roots(
                base,
                sorted(roots),
                kubernetes_version=self.settings.render.kubernetes_version,
                schema_dir=self.schema_dir,
            )
        report_unchecked(checked.values())
        return {folder: checked[folder].problems for folder in sorted(roots)}

    def begin(self, expected: int) -> ValidationRun:
        """A run fed root by root as the reconciler renders them (`expected`: at
        most how many), so that their builds overlap the rendering of the rest."""
        return ValidationRun(self, expected)

    @classmethod
    def scratch_parent(
        cls, roots: Mapping[str, Mapping[str, bytes]], *, expected: int = 0
    ) -> str | None:
        """TMPFS if it is a writable directory with room for the roots (or for
        `expected` roots of a typical size), else None (the system temp dir)."""
        try:
            if not cls.TMPFS.is_dir() or not os.access(cls.TMPFS, os.W_OK | os.X_OK):
                return None
            fs = os.statvfs(cls.TMPFS)
        except OSError:
            return None
        if expected:
            page = fs.f_frsize or fs.f_bsize or 4096
            fits = cls._fits(expected * cls.TYPICAL_ROOT_BYTES // page, expected * 10, expected, fs)
        else:
            fits = cls.has_room(roots, fs)
        return str(cls.TMPFS) if fits else None

    # A rendered root: ~8 files of 0.2-4 KB, each held in whole pages by tmpfs.
    TYPICAL_ROOT_BYTES = 40 * 1024

    @classmethod
    def has_room(cls, roots: Mapping[str, Mapping[str, bytes]], fs: os.statvfs_result) -> bool:
        """Whether the roots take at most half of the free space and inodes of `fs`:
        a container's /dev/shm is often 64 MB, and others use it too."""
        page = fs.f_frsize or fs.f_bsize or 4096
        # tmpfs keeps each file in whole pages.
        pages = sum(-(-len(data) // page) for f in roots.values() for data in f.values())
        return cls._fits(pages, sum(len(f) for f in roots.values()), len(roots), fs)

    @staticmethod
    def _fits(pages: int, files: int, folders: int, fs: os.statvfs_result) -> bool:
        if fs.f_flag & os.ST_RDONLY:
            return False
        # A page more per folder for the folders themselves and the parent
        # kustomizations of the aggregate builds.
        if 2 * (pages + folders + 16) > fs.f_bavail:
            return False
        # f_files == 0: no inode limit (tmpfs mounted with nr_inodes=0).
        return fs.f_files == 0 or 2 * (files + 2 * folders + 16) <= fs.f_favail


def _write_root(base: Path, folder: str, files: Mapping[str, bytes]) -> None:
    root = base / folder
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / name).write_bytes(data)


class ValidationRun:
    """Roots validated as they are rendered: each is written to a scratch dir and
    handed to a RootChecker at once, which sends it to the validation workers
    (Kustomize's library) while the reconciler renders the next. If writing
    fails (tmpfs filled up since it was measured), `results()` validates all
    the roots the Validator's way instead, in the system temp dir if need be."""

    def __init__(self, validator: Validator, expected: int) -> None:
        self._validator = validator
        self._expected = max(1, expected)
        self._roots: dict[str, dict[str, bytes]] = {}
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self._checker: Any = None  # validation.RootChecker, imported lazily
        self._broken = False

    def add(self, folder: str, files: dict[str, bytes]) -> None:
        self._roots[folder] = files
        if self._broken:
            return
        try:
            if self._scratch is None:
                self._open()
            assert self._scratch is not None
            _write_root(Path(self._scratch.name), folder, files)
        except OSError as e:
            log.warning("validation scratch dir failed (%s); validating after rendering", e)
            self._broken = True
            return
        self._checker.add([folder])

    def _open(self) -> None:
        from bridge.validation.roots import RootChecker

        parent = Validator.scratch_parent({}, expected=self._expected)
        remove_stale_scratch(Path(parent or tempfile.gettempdir()))
        # ignore_cleanup_errors: a scratch dir that cannot be removed must not fail the
        # cycle (a later bridge's remove_stale_scratch takes it once this process is gone).
        self._scratch = tempfile.TemporaryDirectory(
            prefix=_scratch_prefix(), dir=parent, ignore_cleanup_errors=True
        )
        self._checker = RootChecker(
            Path(self._scratch.name),
            kubernetes_version=self._validator.settings.render.kubernetes_version,
            schema_dir=self._validator.schema_dir,
        )

    def flush(self) -> None:
        """Every root is added: the last ones start building now."""
        if self._checker is not None and not self._broken:
            self._checker.flush()

    def results(self) -> dict[str, list[str]]:
        """folder -> its errors (empty: it builds and every object validates)."""
        if not self._roots:
            return {}
        if self._broken or self._checker is None:
            self.close()
            return self._validator(self._roots)
        found = self._checker.results()
        report_unchecked(found.values())
        return {folder: found[folder].problems for folder in sorted(self._roots)}

    def close(self) -> None:
        checker, self._checker = self._checker, None
        if checker is not None:
            checker.close()  # its builds read the scratch dir: they end first
        scratch, self._scratch = self._scratch, None
        if scratch is not None:
            scratch.cleanup()


_UNCHECKED_SAID: set[str] = set()


_UNCHECKED_GUARD = threading.Lock()


def report_unchecked(checks: Iterable[RootCheck]) -> None:
    """Warn about each custom resource kind no schema could check, once per process.

    Such objects are committed (a missing schema is no reason to hold a
    deployment back), but never as if they had been checked; once, because the
    same kinds come back every cycle and a warning every poll would be noise."""
    counts: dict[str, int] = {}
    for check in checks:
        for why, count in check.unchecked_kinds.items():
            counts[why] = counts.get(why, 0) + count
    with _UNCHECKED_GUARD:
        new = sorted(set(counts) - _UNCHECKED_SAID)
        _UNCHECKED_SAID.update(new)
    for why in new:
        log.warning(
            "not schema-checked: %s (%d objects in this cycle); set render.schemaDir to a "
            "folder made by `gitops-bridge schemas import CRD_FILE... --out DIR` "
            "(said once per kind)",
            why,
            counts[why],
        )


_SCRATCH = "gitops-bridge-validate-"


def _process_tag(pid: int) -> str | None:
    """pid and kernel start time of a live process ("1234.5678"), or None. The
    start time tells a restarted container's pid 1 from the one that died."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return f"{pid}.{fields[19]}" if len(fields) > 19 else None


def _scratch_prefix() -> str:
    tag = _process_tag(os.getpid())
    return f"{_SCRATCH}{tag}-" if tag else _SCRATCH


def remove_stale_scratch(parent: Path) -> None:
    """Delete validation scratch dirs of processes that are gone. A killed bridge
    leaves its roots behind (16 MB per 1,000 deployments), and on /dev/shm they
    are memory charged to the pod until it is deleted, crash after crash."""
    if not Path("/proc/self/stat").exists():
        return  # no way to tell a live owner from a dead one
    try:
        entries = list(parent.glob(f"{_SCRATCH}*"))
    except OSError:
        return
    for entry in entries:
        owner = entry.name[len(_SCRATCH) :].split("-", 1)[0]
        pid, _, started = owner.partition(".")
        if not pid.isdigit() or not started.isdigit():
            continue  # not named by this version: cannot tell whose it is
        if _process_tag(int(pid)) == owner:
            continue  # its process is alive (this one, or a `diff` beside `run`)
        log.warning("removing %s, left by a validation that was killed", entry)
        shutil.rmtree(entry, ignore_errors=True)
