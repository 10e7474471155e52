"""One reconcile cycle over every owned target: list, then per target the
stages (bridge.reconcile.stages): plan, guard, publish.

The cycle is the only place that knows about all the parts, and it does
little itself: it opens every target's publisher ahead in a few threads while
the listing is on its way, reads the listing once, runs each target's stages
in turn, and keeps one failure inside the target it happened in.

Guarantees kept here and in the stages:
- A listing that failed or was incomplete changes nothing (the client raises;
  anything unexpected while reading it is a ControlPlaneError too).
- An unchanged deployment costs one digest comparison: no render, no write.
- A deployment that cannot be reconciled (malformed, policy, secrets,
  validation, or an exception nobody expected) is reported by name and id and
  keeps its last good commit; the others go on. A target likewise.
- Deletions only from a complete listing, of deployments the control plane
  confirms are gone, and behind the mass-delete guard (bridge.reconcile.guard).
- A rejected push: fetch, re-plan on the new head, retry with backoff; never force.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import PurePosixPath

from bridge.config import Settings, Target
from bridge.errors import BridgeError, unexpected
from bridge.formats.state import MAX_STATE_BYTES
from bridge.reconcile.existing import is_state_of
from bridge.reconcile.listing import ListDeployments, Listing, read_listing, unmanaged_messages
from bridge.reconcile.notices import Notices
from bridge.reconcile.outcomes import CycleReport, Outcome, TargetResult, invalid_as_failed
from bridge.reconcile.planning import Planner, Validate
from bridge.reconcile.plans import Publisher, TreeView
from bridge.reconcile.stages import Begun, Started, TargetStages

log = logging.getLogger("bridge.reconcile")

SYNC_THREADS = 4  # targets fetched at the same time
_Opened = tuple[Publisher, Future[TreeView]] | BridgeError


def shard_owns(target: Target, shard: tuple[int, int] | None) -> bool:
    """Whether replica I of N owns a target: a stable hash, no coordination."""
    if shard is None:
        return True
    index, count = shard
    digest = hashlib.sha256(target.key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count == index


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        *,
        list_deployments: ListDeployments,
        open_publisher: Callable[[Target], Publisher],
        allow_mass_delete: bool = False,
        dry_run: bool = False,
        force_reseal: bool = False,
        shard: tuple[int, int] | None = None,
        validate: Validate | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        on_event: Callable[[str, Mapping[str, object]], None] | None = None,
        confirm_gone: Callable[[Sequence[str]], Collection[str]] | None = None,
    ) -> None:
        self.settings = settings
        self.list_deployments = list_deployments
        self.open_publisher = open_publisher
        self.shard = shard
        self.on_event = on_event or (lambda _name, _data: None)
        self.notices = Notices(self.on_event)
        self.planner = Planner(
            settings,
            validate=validate,
            notices=self.notices,
            on_event=self.on_event,
            force_reseal=force_reseal,
        )
        self.stages = TargetStages(
            settings,
            self.planner,
            self.notices,
            on_event=self.on_event,
            confirm_gone=confirm_gone,
            allow_mass_delete=allow_mass_delete,
            dry_run=dry_run,
            sleep=sleep,
            rng=rng or random.Random(),  # noqa: S311 - backoff jitter, not security
        )
        # target key -> the head whose state files were last read ahead.
        self._preloaded: dict[str, str] = {}

    @property
    def sleep(self) -> Callable[[float], None]:
        """How backoff waits (injected, so that tests need no real time)."""
        return self.stages.sleep

    @sleep.setter
    def sleep(self, sleep: Callable[[float], None]) -> None:
        self.stages.sleep = sleep

    def run_cycle(self) -> CycleReport:
        """One cycle over every owned target. Raises ControlPlaneError if listing fails."""
        self.planner.begin_cycle()
        try:
            return self._run_cycle()
        finally:
            self.planner.end_cycle()

    def _run_cycle(self) -> CycleReport:
        owned = [t for t in self.settings.targets if shard_owns(t, self.shard)]
        # Every target's first open (a fetch: a network round trip to its remote)
        # runs ahead in a few threads, started before the listing so that the
        # two wait on their servers at the same time; targets are then planned
        # and published one at a time. A fetch changes nothing in the remote, so
        # one made for a cycle whose listing fails costs nothing but the trip.
        with ThreadPoolExecutor(
            max_workers=max(1, min(SYNC_THREADS, len(owned))), thread_name_prefix="sync"
        ) as pool:
            opened: dict[str, _Opened] = {}
            for target in owned:
                opened[target.key] = self._open(pool, target)
            try:
                return self._cycle_on(owned, opened)
            finally:
                # Left over only if the cycle was cut short: release those clones.
                for entry in opened.values():
                    if not isinstance(entry, BridgeError):
                        wait([entry[1]])  # its error, if any, is moot now
                        entry[0].close()

    def _open(self, pool: ThreadPoolExecutor, target: Target) -> _Opened:
        try:
            publisher = self.open_publisher(target)
        except BridgeError as e:
            return e
        except Exception as e:  # one target's bug must not stop the others
            return unexpected(e, f"target {target.namespace}: opening its clone", where="target")
        return publisher, pool.submit(self._open_and_preload, publisher, target)

    def _open_and_preload(self, publisher: Publisher, target: Target) -> TreeView:
        """The first open of a target, then (still in the sync thread) the state
        files of its namespace folder that this process has not read yet: a
        restarted bridge reads them while the listing is on its way instead of
        after it. Only `<path>/<cluster>/<namespace>/<folder>/` state files: the
        cluster comes with the listing, the rest is the target's own; another
        target's folders in the same repo are not this target's to read. Any
        failure here is left to the cycle, which reads them again and names it."""
        view = publisher.open()
        # The same head has the same tree, whose state files were read ahead (or
        # left to the cycle) last time: looking through its listing again cost
        # ~90,000 entries a cycle at 10,000 deployments (30 % of a warm cycle
        # in py-spy, on the sync threads), for nothing.
        if view.head is not None and self._preloaded.get(target.key) != view.head:
            self._preloaded[target.key] = view.head
            try:
                prefix = f"{PurePosixPath(target.path)}/" if target.path else ""
                view.preload_blobs(
                    [
                        blob
                        for path, blob in view.ls_tree(prefix).items()
                        if not self.planner.existing.knows(blob)
                        and is_state_of(path[len(prefix) :], target.namespace)
                    ],
                    max_bytes=MAX_STATE_BYTES,
                )
            except (BridgeError, ValueError, OSError) as e:
                log.debug("reading state files ahead failed (%s); read in the cycle", e)
        return view

    def _cycle_on(self, owned: list[Target], opened: dict[str, _Opened]) -> CycleReport:
        listing = read_listing(self.list_deployments, self.on_event)
        report = CycleReport(outcomes=invalid_as_failed(listing.invalid))
        unmanaged = unmanaged_messages(listing.listener, listing.by_namespace, self.settings)
        report.warnings.extend(unmanaged)
        # Once per change of the set, not every cycle.
        if self.notices.changed(("listener", "unmanaged"), tuple(unmanaged)):
            for message in unmanaged:
                log.warning("%s", message, extra={"event": "unmanaged"})
        # A target with a few changes is begun (drafted, its roots building) and
        # held while the next target is begun, so that their builds run back to
        # back; then it is started. Each target's publish (commits, then a push:
        # a round trip to its remote) runs on one thread while the next target
        # is planned here.
        outcomes: list[list[Outcome]] = []
        held: tuple[int, Begun] | None = None
        waiting: tuple[int, Started] | None = None

        def finish_waiting() -> None:
            nonlocal waiting
            if waiting is not None:
                (index, before), waiting = waiting, None
                outcomes[index] = self._finish(before)

        def start(index: int, begun: Begun) -> None:
            nonlocal waiting
            started = self._start(begun, publishing)
            finish_waiting()
            if isinstance(started, Started):
                waiting = (index, started)
            else:
                outcomes[index] = started

        def start_held() -> None:
            nonlocal held
            if held is not None:
                (index, begun), held = held, None
                start(index, begun)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="publish") as publishing:
            try:
                for target in owned:
                    result = TargetResult(target=target)
                    report.targets.append(result)
                    outcomes.append([])
                    index = len(outcomes) - 1
                    begun = self._begin(target, listing, result, opened.pop(target.key))
                    start_held()
                    if not isinstance(begun, Begun):
                        outcomes[index] = begun
                    elif self.stages.holds(begun):
                        held = (index, begun)
                    else:
                        start(index, begun)
                    # Not kept while the next target renders: a cold target's
                    # draft holds all of its rendered files (~16 MB a 1,000).
                    del begun
                start_held()
                finish_waiting()
            finally:
                if held is not None:  # the cycle was cut short: drop the held target
                    self._drop(held[1])
                if waiting is not None:  # the cycle was cut short: let that publish end
                    wait([waiting[1].published])
                    waiting[1].publisher.close()
        for each in outcomes:
            report.outcomes.extend(each)
        return report

    def _begin(
        self, target: Target, listing: Listing, result: TargetResult, entry: _Opened
    ) -> list[Outcome] | Begun:
        """One target opened and drafted, its roots building; or its outcomes when
        that is all. A failure is recorded in `result`, never raised."""
        if isinstance(entry, BridgeError):
            return self._failed(target, result, entry)
        publisher, first_open = entry
        begun: list[Outcome] | Begun = []
        try:
            self.planner.next_target()
            begun = self.stages.begin(publisher, target, listing, result, first_open)
        except Exception as e:
            begun = self._failed(target, result, e)
        finally:
            if not isinstance(begun, Begun):
                publisher.close()
                self.planner.end_target(target.key)
        return begun

    def _start(self, begun: Begun, publishing: ThreadPoolExecutor) -> list[Outcome] | Started:
        """A begun target planned and its publish started, or its outcomes when
        that is all; a failure is recorded in `result`, never raised."""
        started: list[Outcome] | Started = []
        try:
            started = self.stages.start(begun, publishing)
        except Exception as e:
            started = self._failed(begun.target, begun.result, e)
        finally:
            if not isinstance(started, Started):
                begun.publisher.close()
                # A held target was started after the next one was begun.
                self.planner.end_target(begun.target.key, last=not self.stages.holds(begun))
        return started

    def _drop(self, begun: Begun) -> None:
        """A begun target the cycle will not start (it was cut short)."""
        try:
            self.planner.abandon(begun.draft)
        finally:
            begun.publisher.close()

    def _finish(self, started: Started) -> list[Outcome]:
        """The outcomes of a target whose publish was started."""
        try:
            return self.stages.finish(started)
        except Exception as e:
            return self._failed(started.target, started.result, e)
        finally:
            started.publisher.close()

    def _failed(self, target: Target, result: TargetResult, error: Exception) -> list[Outcome]:
        """A target's failure, recorded in `result`; no outcomes."""
        ns = target.namespace
        if isinstance(error, BridgeError):
            result.error = error
            log.error("target %s: %s", ns, error, extra={"target": ns})
        else:
            # Isolation: whatever one target's tree or remote holds, the other
            # targets are reconciled (a crash loop would block every team).
            result.error = self.notices.internal(error, f"target {ns}", target.key, target=ns)
        return []
