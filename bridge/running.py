"""Wiring for the long-running commands: `run`, `diff`, `status`, `rekey`.

Builds a `Reconciler` from settings with the real collaborators (control
plane client, git writer, kustomize validation), runs the poll loop with
clean shutdown on SIGTERM/SIGINT, serves health and metrics, and keeps the
last cycle's per-deployment results in `<workdir>/status.json` for `status`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from bridge.config import Settings, Target
from bridge.errors import ConfigError, ControlPlaneError, DeploymentError, unexpected
from bridge.models import Deployment, Listener
from bridge.privatefiles import write_private
from bridge.reconcile.cycle import Reconciler
from bridge.reconcile.outcomes import CycleReport
from bridge.reconcile.plans import Publisher

if TYPE_CHECKING:
    from bridge.validation.objects import RootCheck

log = logging.getLogger("bridge.run")
STATUS_FILE = "status.json"


def parse_shard(value: str | None, env: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """`I/N` from --shard or BRIDGE_SHARD; also `<name>-<ordinal>` with BRIDGE_SHARD_COUNT
    (a StatefulSet pod name), so N replicas split targets with no coordination."""
    env = os.environ if env is None else env
    value = value or env.get("BRIDGE_SHARD")
    if not value:
        return None
    m = re.fullmatch(r"(\d+)/(\d+)", value.strip())
    if m:
        index, count = int(m.group(1)), int(m.group(2))
    else:
        ordinal = re.fullmatch(r".*?-(\d+)", value.strip())
        count_text = env.get("BRIDGE_SHARD_COUNT", "")
        if not ordinal or not count_text.isdigit():
            raise ConfigError(
                f"--shard/BRIDGE_SHARD has value {value!r}; allowed: I/N (e.g. 0/3), or a "
                "StatefulSet pod name like bridge-2 together with BRIDGE_SHARD_COUNT"
            )
        index, count = int(ordinal.group(1)), int(count_text)
    if count < 1 or not 0 <= index < count:
        raise ConfigError(
            f"--shard has value {value!r}; allowed: I/N with 0 <= I < N (e.g. 0/3, 1/3, 2/3)"
        )
    return index, count


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


def make_reconciler(
    settings: Settings,
    *,
    allow_mass_delete: bool = False,
    dry_run: bool = False,
    force_reseal: bool = False,
    shard: tuple[int, int] | None = None,
    metrics: Any = None,
    validate: bool = True,
    transport: Any = None,
    progress: Any = None,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Reconciler, Callable[[], None]]:
    """A reconciler with the real collaborators, and a function that closes them.
    `sleep` (retry and backoff waits) is injected so tests need no real time."""
    from bridge.controlplane.client import ControlPlaneClient
    from bridge.publishing.repo import TargetRepo

    client = ControlPlaneClient.from_settings(
        settings.control_plane,
        transport=transport,
        on_response=metrics.control_plane_request if metrics is not None else None,
        sleep=sleep,
    )

    def list_deployments() -> tuple[Listener, Sequence[Deployment], Sequence[DeploymentError]]:
        listing = client.list_listener_deployments()
        return listing.listener, listing.deployments, listing.invalid

    # One writer per target for the reconciler's life: the cycle closes it after
    # each turn (lock released), and the next cycle reuses what it knows by
    # commit id (the tree listing), so a target whose head did not move costs
    # no `ls-tree`.
    publishers: dict[str, Publisher] = {}

    def open_publisher(target: Target) -> Publisher:
        from bridge.publishing.publisher import BranchPublisher

        publisher = publishers.get(target.key)
        if publisher is None:
            publisher = publishers[target.key] = BranchPublisher(TargetRepo(target, settings.git))
        return publisher

    def on_event(name: str, data: Mapping[str, object]) -> None:
        if progress is not None:
            progress.on_event(name, data)
        if metrics is None:
            return
        if name == "commit":
            metrics.commit(str(data["target"]), str(data["kind"]))
        elif name == "push":
            metrics.push(str(data["target"]), str(data["outcome"]))
        elif name == "internal-error":
            metrics.internal_error(str(data["where"]))

    reconciler = Reconciler(
        settings,
        list_deployments=list_deployments,
        open_publisher=open_publisher,
        allow_mass_delete=allow_mass_delete,
        dry_run=dry_run,
        force_reseal=force_reseal,
        shard=shard,
        validate=Validator(settings) if validate else None,
        sleep=sleep,
        on_event=on_event,
        confirm_gone=client.confirm_gone,
    )
    return reconciler, client.close


def write_status(settings: Settings, report: CycleReport, finished: float) -> None:
    """Keep the last cycle's results where `status` finds them (never secrets)."""
    from bridge.faults import fault_point

    fault_point("write-status")
    workdir = settings.git.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    doc = {
        "finishedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(finished)),
        "outcomes": [
            # Shallow: every field is a scalar, and asdict's deep copy of 1,000
            # outcomes was most of this function.
            {k: v for k, v in vars(o).items() if k != "diff"}
            for o in sorted(report.outcomes, key=lambda o: (o.namespace, o.name, o.deployment_id))
        ],
        "targets": [
            {
                "namespace": t.target.namespace,
                "repo": t.target.repo,
                "branch": t.target.branch,
                "pushed": t.pushed,
                "commits": t.commits,
                "error": str(t.error) if t.error else None,
                # Deletions the mass-delete guard holds (null: not planned this cycle).
                "heldDeletions": None
                if t.held is None
                else [{"id": i, "name": n} for i, n in t.held],
                "approvalNotes": t.approval_notes,
            }
            for t in report.targets
        ],
        "warnings": report.warnings,
    }
    # Compact: json's C encoder does not indent, and the indenting one cost
    # ~25 ms per 1,000 deployments every cycle. `status` reads it for people.
    # Private (0600): it quotes errors, repo URLs and names, for `status` only.
    write_private(
        workdir / STATUS_FILE,
        (json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8"),
    )


def read_status(settings: Settings) -> dict[str, Any]:
    path = settings.git.workdir / STATUS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def summarize(report: CycleReport) -> str:
    counts: dict[str, int] = {}
    for o in report.outcomes:
        counts[o.action] = counts.get(o.action, 0) + 1
    parts = [f"{n} {action}" for action, n in sorted(counts.items())]
    pushed = sum(1 for t in report.targets if t.pushed)
    return f"cycle: {', '.join(parts) or 'no deployments'}; {pushed} target(s) pushed"


class Stopper:
    """SIGTERM/SIGINT finish the current step, then the loop exits cleanly."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; finishing the current step", signal.Signals(signum).name)
        self.event.set()

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# Unexpected failures of whole cycles back off: 2, 4, 8 ... poll intervals, at most this.
MAX_BACKOFF = 300.0


def run_loop(
    settings: Settings,
    *,
    once: bool,
    listen: str | None,
    shard: tuple[int, int] | None,
    allow_mass_delete: bool,
    quiet: bool = False,
    log_format: str = "text",
) -> int:
    """`gitops-bridge run`: returns the exit code (SPEC §3). No input ends the
    loop: a failure is contained in the deployment, target or cycle it belongs
    to, logged once per change, and the next cycle tries again."""
    from bridge.observability.metrics import Health, Metrics

    # Only a served registry is read: without --listen (a CronJob's `--once`)
    # nothing would ever see it, and prometheus_client costs ~60 ms to import.
    metrics = Metrics() if listen else None
    health = Health(poll_interval=settings.control_plane.poll_interval)
    server = None
    if listen:
        from bridge.observability.serving import start_server

        assert metrics is not None
        server = start_server(listen, health, metrics.registry)
        log.info("serving /healthz, /readyz and /metrics on %s", server.address)
    stopper = Stopper()
    stopper.install()
    from bridge.observability.progress import Progress

    reconciler, close = make_reconciler(
        settings,
        allow_mass_delete=allow_mass_delete,
        shard=shard,
        metrics=metrics,
        progress=Progress.for_terminal(quiet=quiet, log_format=log_format),
    )
    cycle = _Cycle(settings, reconciler, health, metrics)
    try:
        while True:
            code = cycle.run()
            if once:
                if cycle.control_plane_error is not None:
                    raise cycle.control_plane_error
                return code
            if stopper.event.is_set() or stopper.event.wait(cycle.next_wait()):
                return 0
    finally:
        stopper.restore()
        close()
        if server is not None:
            server.stop()


class _Cycle:
    """One cycle of the loop and what it tells the next: the exit code, the
    error last logged (logged again only when it changes), the backoff."""

    def __init__(
        self, settings: Settings, reconciler: Reconciler, health: Any, metrics: Any
    ) -> None:
        self.settings = settings
        self.reconciler = reconciler
        self.health = health
        self.metrics = metrics
        self.control_plane_error: ControlPlaneError | None = None
        self._last_error_text: str | None = None
        self._failures = 0  # unexpected failures of whole cycles in a row

    def run(self) -> int:
        started = time.time()
        self.control_plane_error = None
        try:
            report = self.reconciler.run_cycle()
            finished = time.time()
            if self.metrics is not None:
                self.metrics.observe_cycle(finished - started)
                self.metrics.record_report(report)
            write_status(self.settings, report, finished)
        except ControlPlaneError as e:
            return self._control_plane_failed(e, started)
        except Exception as e:
            return self._cycle_failed(e)
        self._last_error_text = None
        self._failures = 0
        if any(t.error for t in report.targets):
            self.health.cycle_failed(finished, "git: some targets failed")
        else:
            self.health.cycle_succeeded(finished)
        # The cycle's own duration, as /metrics observes it: what a
        # CronJob's log or a benchmark reads without a scrape.
        log.info(
            "%s",
            summarize(report),
            extra={"event": "cycle", "seconds": round(finished - started, 3)},
        )
        return report.exit_code()

    def _control_plane_failed(self, e: ControlPlaneError, started: float) -> int:
        # Logged once per change of the error; the client logged retries at debug level.
        text = str(e)
        if text != self._last_error_text:
            log.error("control plane: %s; nothing changed this cycle", e)
        else:
            log.warning("control plane still failing; nothing changed this cycle")
        self._last_error_text = text
        self._failures = 0
        self.health.cycle_failed(time.time(), "control plane: " + type(e).__name__)
        if self.metrics is not None:
            self.metrics.observe_cycle(time.time() - started)
        self.control_plane_error = e
        return e.exit_code

    def _cycle_failed(self, e: Exception) -> int:
        """Anything else: a bug, a full disk under the status file. Logged with its
        frames once per change, counted, and the loop backs off and goes on."""
        internal = unexpected(e, "the cycle", where="cycle")
        self._failures += 1
        wait = self.next_wait()
        if internal.message != self._last_error_text:
            log.error("%s; next cycle in %gs", internal, wait, exc_info=e)
        else:
            log.warning("the cycle failed again (%s); next cycle in %gs", type(e).__name__, wait)
        self._last_error_text = internal.message
        if self.metrics is not None:
            self.metrics.internal_error("cycle")
        self.health.cycle_failed(time.time(), f"unexpected {type(e).__name__}")
        return internal.exit_code

    def next_wait(self) -> float:
        """The poll interval; after unexpected failures of whole cycles in a row,
        2, 4, 8 ... times it, at most MAX_BACKOFF (or the interval, if longer)."""
        interval = self.settings.control_plane.poll_interval
        if self._failures == 0:
            return interval
        return min(interval * 2.0**self._failures, max(MAX_BACKOFF, interval))
