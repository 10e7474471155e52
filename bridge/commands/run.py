"""`gitops-bridge run`: the poll loop, with clean shutdown on SIGTERM/SIGINT,
health and metrics served with `--listen`, and the last cycle's results kept
in the status file for `status`. No input ends the loop: a failure stays in
the deployment, target or cycle it belongs to (bridge.reconcile), and whole
cycles that fail back off.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import select
import signal
import time
from collections.abc import Mapping
from types import FrameType
from typing import Any

from bridge.commands.statusfile import write_status
from bridge.commands.wiring import make_client, make_reconciler
from bridge.config import Settings
from bridge.errors import ConfigError, ControlPlaneError, unexpected
from bridge.reconcile.cycle import Reconciler
from bridge.reconcile.outcomes import CycleReport

log = logging.getLogger("bridge.run")


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


def summarize(report: CycleReport) -> str:
    counts: dict[str, int] = {}
    for o in report.outcomes:
        counts[o.action] = counts.get(o.action, 0) + 1
    parts = [f"{n} {action}" for action, n in sorted(counts.items())]
    pushed = sum(1 for t in report.targets if t.pushed)
    return f"cycle: {', '.join(parts) or 'no deployments'}; {pushed} target(s) pushed"


class Stopper:
    """SIGTERM/SIGINT: the current cycle finishes, then the loop exits cleanly.

    The handler takes no lock. It runs in the main thread between two bytecodes,
    possibly while that thread holds one: `threading.Event.set()` there
    deadlocked against the `Event.wait()` it had interrupted (seen: a pod that
    never stopped until SIGKILL), and logging takes the scrub filter's lock. It
    only sets a flag and writes a byte to a pipe, both safe in a handler;
    `wait()` sleeps in select() on that pipe, which the byte wakes."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.signal = signum
        try:
            os.write(self._write, b"\0")
        except OSError:
            pass  # the pipe is full: a byte is waiting already

    def is_set(self) -> bool:
        return self.signal is not None

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds or until a signal came; whether one came."""
        if self.signal is None:
            select.select([self._read], [], [], timeout)
        return self.signal is not None

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        for fd in (self._read, self._write):
            os.close(fd)


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
    client = make_client(settings, metrics=metrics)
    from bridge.commands.forging import pull_request_targets

    # One per process: the pull requests and the health read-back's commit
    # statuses wait on the same rate-limit blocks and spend the same quota.
    # Both are of pull-request targets: without one, no forge is imported.
    forge_hosts = None
    if pull_request_targets(settings):
        from bridge.forges import ForgeHosts

        forge_hosts = ForgeHosts()
    readback = read_back(settings, metrics, client, forge_hosts)
    server = None
    if listen:
        from bridge.observability.serving import start_server

        assert metrics is not None
        hooks = readback.routes() if readback is not None else []
        server = start_server(listen, health, metrics.registry, routes=hooks)
        log.info("serving /healthz, /readyz and /metrics on %s", server.address)
        for hook in hooks:
            log.info("health: %s %s on %s", hook.method, hook.path, server.address)
    stopper = Stopper()
    stopper.install()
    from bridge.observability.progress import Progress

    reconciler, close = make_reconciler(
        settings,
        allow_mass_delete=allow_mass_delete,
        shard=shard,
        metrics=metrics,
        progress=Progress.for_terminal(quiet=quiet, log_format=log_format),
        client=client,
        forge_hosts=forge_hosts,
    )
    cycle = _Cycle(settings, reconciler, health, metrics, readback)
    if readback is not None:
        readback.start()
    try:
        while True:
            code = cycle.run()
            if once:
                if cycle.control_plane_error is not None:
                    raise cycle.control_plane_error
                return code
            spent = collect_between_cycles()
            if stopper.is_set() or stopper.wait(max(0.0, cycle.next_wait() - spent)):
                assert stopper.signal is not None
                log.info("received %s; exiting", signal.Signals(stopper.signal).name)
                return 0
    finally:
        stopper.restore()
        if server is not None:
            server.stop()
        if readback is not None:
            readback.stop()
        close()
        client.close()


def collect_between_cycles() -> float:
    """Python's full garbage collection, run between cycles rather than in them;
    the seconds it took (they count toward the wait for the next poll).

    Everything alive after a cycle (the last listing, state files, remembered
    digests: millions of objects at 10,000 deployments) is frozen, so that the
    collections the next cycle triggers only walk what that cycle allocates.
    Measured at 10,000 deployments: every other unchanged cycle ran a full
    collection of 0.16-0.20 s, and a 100-change cycle spent 0.29 s in the
    collector. What is frozen is unfrozen and collected here once the cycle is
    over, so cyclic garbage lives at most one cycle longer."""
    started = time.monotonic()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return time.monotonic() - started


def read_back(settings: Settings, metrics: Any, client: Any, forge_hosts: Any = None) -> Any:
    """The health read-back (bridge.commands.readback), or None without a
    `health:` source: its modules are not even imported then."""
    if not settings.health.enabled:
        return None
    from bridge.commands.readback import ReadBack

    return ReadBack(
        settings,
        registry=metrics.registry if metrics is not None else None,
        created_at=client.revision_created_at,
        forge_hosts=forge_hosts,
    )


class _Cycle:
    """One cycle of the loop and what it tells the next: the exit code, the
    error last logged (logged again only when it changes), the backoff."""

    def __init__(
        self,
        settings: Settings,
        reconciler: Reconciler,
        health: Any,
        metrics: Any,
        readback: Any = None,
    ) -> None:
        self.settings = settings
        self.reconciler = reconciler
        self.health = health
        self.metrics = metrics
        self.readback = readback  # health read-back: after each cycle, never raises
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
        if self.readback is not None:
            self.readback.after_cycle(report)
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
