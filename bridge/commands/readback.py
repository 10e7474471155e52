"""The health read-back of a running bridge (SPEC §8): sources, assessment, road, metrics.

Owns what `run` does for health, built from `health:` in the settings:

- the sources: the Argo CD API polled once per cycle (or its stream followed
  in a thread), and `POST /hooks/flux` / `POST /hooks/argocd` on the
  `--listen` server, each only when configured (`routes()`, through the
  bounded server: the body capped before it is read, the signature or token
  checked before it is parsed, bridge.health.webhooks);
- after each cycle (`after_cycle`): the road's `committed`/`pushed` stages
  from the cycle's commits; per owned target, every deployment folder and the
  commit that last changed it from the target's clone, assessed against what
  the sources said; `synced`/`healthy` marked, the control plane asked for the
  `created_at` of new revisions; /metrics updated; the road and the
  observations saved beside the status file (`status` reads both).

Health is read-back only. Whatever fails here — a source, git, the disk, a
bug — is logged once per change of the failure and leaves the loop and its
commits alone: `after_cycle` never raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from bridge.commands.healthreading import Assessed, StateCache, assess_target
from bridge.config import Settings, Target
from bridge.errors import BridgeError
from bridge.health.forgestatus import SOURCE as FORGE_SOURCE
from bridge.health.metrics import DeploymentState, HealthMetrics
from bridge.health.observations import ObservationStore
from bridge.health.road import RoadStore
from bridge.health.roadkeeping import RoadKeeper
from bridge.health.snapshots import SnapshotFile
from bridge.health.sources import WebhookRoute, webhook_routes
from bridge.observability.serving import Request, Response, Route
from bridge.publishing.clone import Clone
from bridge.publishing.lineage import CloneLineage
from bridge.reconcile.outcomes import CycleReport

log = logging.getLogger("bridge.health")

MAX_LOOKUPS = 20  # `created_at` lookups per cycle; the rest wait for the next
CreatedAt = Callable[[str, str], datetime | None]


def _now() -> datetime:
    return datetime.now(UTC)


def serve_hook(hook: WebhookRoute) -> Route:
    """A webhook as a route of the `--listen` server: the server refuses a body
    over `max_body` (413) before reading it; the hook does the rest."""

    def handler(request: Request) -> Response:
        result = hook.handle(request.headers, request.body)
        return Response(result.status, (result.message + "\n").encode(), headers=result.headers)

    return Route(hook.method, hook.path, handler, max_body=hook.max_body)


def _merges(report: CycleReport) -> dict[str, datetime]:
    """target key -> when its latest merged pull request of changes was merged
    (pull-request mode; the publisher reports the last one every cycle)."""
    found: dict[str, datetime] = {}
    for result in report.targets:
        times = [
            p.merged_at
            for p in result.pulls or ()
            if p.kind == "changes" and p.state == "merged" and p.merged_at is not None
        ]
        if times:
            found[result.target.key] = datetime.fromtimestamp(max(times), UTC)
    return found


def _settled(item: Assessed) -> bool:
    return item.health.sync == "synced" and item.health.status == "healthy"


class ReadBack:
    def __init__(
        self,
        settings: Settings,
        *,
        registry: Any = None,
        created_at: CreatedAt | None = None,
        clock: Callable[[], datetime] = _now,
        transport: Any = None,
        forge_hosts: Any = None,
        forges: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.health = settings.health
        self._clock = clock
        self._created_at = created_at
        self.store = ObservationStore(clock=clock)
        self.metrics = HealthMetrics(registry) if registry is not None else None
        workdir = settings.git.workdir
        self.keeper = RoadKeeper(RoadStore.open(workdir), self.metrics, clock=clock)
        self.snapshots = SnapshotFile(workdir)
        self._states = StateCache()
        self._clones: dict[str, tuple[Clone, CloneLineage]] = {}
        self._said: dict[str, str] = {}  # what was last logged per subject
        self._merged: dict[str, datetime] = {}  # target key -> its last merged pull request
        self.poller: Any = None
        self.streamer: Any = None
        if self.health.argocd is not None:
            from bridge.health.argocd import ArgoCDClient
            from bridge.health.sources import ArgoCDPoller, ArgoCDStreamer

            client = ArgoCDClient.from_settings(self.health.argocd, transport=transport)
            if self.health.argocd.mode == "stream":
                self.streamer = ArgoCDStreamer(client, self.store, self.metrics, clock=clock)
            else:
                self.poller = ArgoCDPoller(client, self.store, self.metrics, clock=clock)
        self.forge_statuses: Any = None
        if self.health.forge_statuses:
            from bridge.commands.forgereading import ForgeStatuses

            self.forge_statuses = ForgeStatuses(
                settings, self.store, hosts=forge_hosts, forges=forges, clock=clock
            )
        # What the pushed sources said before a restart counts until they say more.
        for observation in self.snapshots.load().observations:
            self.store.record(observation)

    def routes(self) -> list[Route]:
        """`POST /hooks/flux` and `POST /hooks/argocd`, for the sources configured."""
        return [serve_hook(h) for h in webhook_routes(self.health, self.store, self.metrics)]

    def start(self) -> None:
        if self.streamer is not None:
            self.streamer.start()

    def stop(self) -> None:
        if self.streamer is not None:
            self.streamer.stop()
        elif self.poller is not None:
            self.poller.client.close()
        if self.forge_statuses is not None:
            self.forge_statuses.close()
        self._save()

    # -- after a cycle -----------------------------------------------------------------

    def after_cycle(self, report: CycleReport) -> None:
        """Read health back for the targets of the cycle; never raises."""
        try:
            if self.poller is not None:
                self.poller.poll()
                self._say("argocd", self.poller.last_error, "Argo CD API")
            elif self.streamer is not None:
                self._say("argocd", self.streamer.last_error, "Argo CD stream")
            self._record_commits(report)
            if self.forge_statuses is not None:
                self.forge_statuses.new_cycle()
            self._merged = _merges(report)
            states: list[DeploymentState] = []
            current: dict[str, tuple[str, str]] = {}  # deployment -> (target, revision)
            for result in report.targets:
                for item in self._target(result.target):
                    states.append(self._account(result.target, item, current))
            self._look_up_created(current)
            if self.metrics is not None:
                self.metrics.update(states)
                if self.forge_statuses is not None:
                    ok = self.forge_statuses.reachable()
                    when = self._clock().timestamp() if ok else None
                    self.metrics.source_read(FORGE_SOURCE, ok, when)
        except Exception as e:  # health must never stop the loop
            self._say("cycle", f"{type(e).__name__}: {e}", "health read-back", exc=e)
        self._save()

    def _record_commits(self, report: CycleReport) -> None:
        pushed = {t.target.namespace: t.pushed for t in report.targets}
        for o in report.outcomes:
            if o.action == "deployed" and o.commit and o.revision_id:
                self.keeper.committed(
                    o.target, o.deployment_id, o.revision_id, pushed=pushed.get(o.target, False)
                )

    def _target(self, target: Target) -> list[Assessed]:
        """One target's deployments, assessed; [] (and said once) when git fails."""
        clone, lineage = self._clone(target)
        try:
            clone.ensure()
            self._read_forge(target, lineage)
            found = assess_target(target, lineage, self.store.snapshot(), self._states)
            if self.forge_statuses is not None and self.forge_statuses.has(target):
                self.forge_statuses.assessed(
                    target,
                    [a.folder.commit for a in found if not _settled(a)],
                )
        except (BridgeError, OSError, ValueError) as e:
            self._say(f"git:{target.key}", str(e), f"target {target.namespace}: reading git")
            return []
        finally:
            clone.release()
        problems, lineage.problems[:] = list(lineage.problems), []
        self._say(
            f"git:{target.key}",
            "; ".join(dict.fromkeys(problems))[:500] or None,
            f"target {target.namespace}: reading git",
        )
        return found

    def _read_forge(self, target: Target, lineage: CloneLineage) -> None:
        """Commit statuses of a pull-request target, into the store (said once when failing)."""
        if self.forge_statuses is None or not self.forge_statuses.has(target):
            return
        problem = self.forge_statuses.read(target, lineage)
        self._say(
            f"forge:{target.key}", problem, f"target {target.namespace}: forge commit statuses"
        )

    def _clone(self, target: Target) -> tuple[Clone, CloneLineage]:
        # A Clone of our own on the target's cache (the cycle's is released by
        # now): read only, under the same lock, with answers cached across cycles.
        if target.key not in self._clones:
            clone = Clone(target, self.settings.git)
            self._clones[target.key] = (clone, CloneLineage(clone))
        return self._clones[target.key]

    def _account(
        self, target: Target, item: Assessed, current: dict[str, tuple[str, str]]
    ) -> DeploymentState:
        """The road's marks for one assessed deployment; its /metrics state."""
        folder, change, health = item.folder, item.change, item.health
        revision = folder.revision_id
        if revision is not None:
            current[folder.deployment_id] = (target.namespace, revision)
            if change is not None and change.revision_id == revision:
                self.keeper.adopt(
                    target.namespace, folder.deployment_id, revision, change.committed_at
                )
            merged_at = self._merged.get(target.key)
            if merged_at is not None:
                self.keeper.merged(target.namespace, folder.deployment_id, revision, merged_at)
            self.keeper.assessed(
                target.namespace,
                folder.deployment_id,
                revision,
                health,
                change.committed_at if change else None,
            )
        return DeploymentState(
            target=target.namespace,
            # As gitops_bridge_deployment_failing names it: namespace/folder.
            deployment=f"{target.namespace}/{PurePosixPath(folder.folder).name}",
            sync=health.sync,
            status=health.status,
            committed_at=change.committed_at if change else None,
            covered=health.source is not None,
        )

    def _look_up_created(self, current: Mapping[str, tuple[str, str]]) -> None:
        """The control plane's `created_at` of revisions whose road lacks it."""
        if self._created_at is None:
            return
        asked = 0
        for dep, (target, revision) in sorted(current.items()):
            if asked >= MAX_LOOKUPS:
                return
            if not self.keeper.wants_created(dep, revision):
                continue
            asked += 1
            try:
                when = self._created_at(dep, revision)
            except BridgeError as e:
                self._say("created", str(e), "control plane: revision created_at")
                when = None
            self.keeper.created(target, dep, revision, when)

    # -- saving and saying ----------------------------------------------------------------

    def _save(self) -> None:
        try:
            self.keeper.road.save()
            self.snapshots.save(self.store.snapshot(), self._clock())
            self._say("disk", None, "health files")
        except OSError as e:
            self._say("disk", f"{e.strerror or e} ({e.filename})", "health files")

    def _say(
        self, subject: str, problem: str | None, what: str, *, exc: Exception | None = None
    ) -> None:
        """Log a problem once per change of its text, and once when it is over."""
        last = self._said.get(subject)
        if problem == last:
            return
        if problem is None:
            self._said.pop(subject, None)
            log.info("%s: works again", what)
            return
        self._said[subject] = problem
        log.warning("%s: %s; health is unknown where it depends on it", what, problem, exc_info=exc)
