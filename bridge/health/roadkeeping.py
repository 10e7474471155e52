"""When each stage of a revision's road was reached, decided from what the wiring saw.

Owns the rules that turn a cycle's commits, the control plane's `created_at`
and each assessment into marks on the RoadStore (bridge.health.road), and
the histograms of /metrics (bridge.health.metrics) observed once per stage:

- a road starts when the bridge commits a revision (`committed`, and `pushed`
  when the push went through). A revision found in git without a road (the
  bridge crashed before it saved the road, or another replica committed it)
  is adopted when its commit is younger than `adopt_window`; an older one was
  committed before the road was kept, and timing its later stages from today
  would report a lead time of weeks that never was;
- `created` is the control plane's time of the revision, looked up by the
  wiring for started roads (a stage reached before it is known is observed
  in the histograms once it is);
- `synced` and `healthy` are marked when an assessment says so for the
  revision that the folder carries, no earlier than its commit: `healthy` at
  the time the source says health began, when that lies between the commit
  and now (a Flux event's or Argo CD's transition time), else now; `synced`
  no later than `healthy`;
- `merged` (pull-request mode) when the base branch carries the revision
  and the publisher reports its pull request merged (`merged()`), at the
  forge's merge time held between the commit and now.

Must not read git or talk to a server. The clock is injected.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from bridge.health.assessing import DeploymentHealth
from bridge.health.metrics import HealthMetrics
from bridge.health.road import Road, RoadStore, Stage

ADOPT_WINDOW = timedelta(hours=1)
MERGE_SKEW = timedelta(minutes=10)  # forge clock behind ours, tolerated
MAX_LOOKUP_ATTEMPTS = 3  # per revision, per process: a control plane that never answers


def _now() -> datetime:
    return datetime.now(UTC)


class RoadKeeper:
    def __init__(
        self,
        road: RoadStore,
        metrics: HealthMetrics | None = None,
        *,
        clock: Callable[[], datetime] = _now,
        adopt_window: timedelta = ADOPT_WINDOW,
    ) -> None:
        self.road = road
        self.metrics = metrics
        self._clock = clock
        self._adopt_window = adopt_window
        self._lookups: dict[tuple[str, str], int] = {}  # failed `created` lookups

    # -- stages told by the wiring --------------------------------------------------

    def committed(self, target: str, deployment_id: str, revision_id: str, *, pushed: bool) -> None:
        """The bridge committed the revision this cycle (and pushed it, or not)."""
        now = self._clock()
        self._mark(target, deployment_id, revision_id, "committed", now)
        if pushed:
            self._mark(target, deployment_id, revision_id, "pushed", now)

    def adopt(
        self, target: str, deployment_id: str, revision_id: str, committed_at: datetime
    ) -> None:
        """A revision git carries on the branch (so pushed) that has no road yet."""
        if self.road.road(deployment_id, revision_id) is not None:
            return
        now = self._clock()
        if now - committed_at > self._adopt_window:
            return
        self._mark(target, deployment_id, revision_id, "committed", committed_at)
        self._mark(target, deployment_id, revision_id, "pushed", now)

    def merged(self, target: str, deployment_id: str, revision_id: str, when: datetime) -> None:
        """Pull-request mode: the base branch carries the revision, and the
        forge says a pull request of the target was merged at `when`. A merge
        from before the revision was committed (less the forge's clock skew)
        is an earlier pull request's, not this one's; a forge clock ahead of
        ours is held to now, one behind to the commit."""
        road = self.road.road(deployment_id, revision_id)
        if road is None or "committed" not in road.times or "merged" in road.times:
            return
        committed = road.times["committed"]
        if when < committed - MERGE_SKEW:
            return
        at = min(max(when, committed), self._clock())
        self._mark(target, deployment_id, revision_id, "merged", at)

    def created(
        self, target: str, deployment_id: str, revision_id: str, when: datetime | None
    ) -> None:
        """The control plane's `created_at` of the revision; None: the lookup failed."""
        key = (deployment_id, revision_id)
        if when is None:
            self._lookups[key] = self._lookups.get(key, 0) + 1
            return
        self._lookups.pop(key, None)
        if not self._mark(target, deployment_id, revision_id, "created", when):
            return
        # Stages reached before the start was known are timed now, once.
        road = self.road.road(deployment_id, revision_id)
        if self.metrics is not None and road is not None:
            for stage in ("committed", "synced", "healthy"):
                if stage in road.times:
                    self.metrics.road_stage_reached(target, stage, road)

    def wants_created(self, deployment_id: str, revision_id: str) -> bool:
        """Whether the revision's road is started, lacks `created`, and its
        lookups have not given up."""
        if self._lookups.get((deployment_id, revision_id), 0) >= MAX_LOOKUP_ATTEMPTS:
            return False
        road = self.road.road(deployment_id, revision_id)
        return road is not None and "committed" in road.times and "created" not in road.times

    def assessed(
        self,
        target: str,
        deployment_id: str,
        revision_id: str,
        health: DeploymentHealth,
        committed_at: datetime | None,
    ) -> None:
        """Mark `synced` / `healthy` for the revision the folder carries."""
        road = self.road.road(deployment_id, revision_id)
        if road is None or "committed" not in road.times or health.sync != "synced":
            return
        now = self._clock()
        floor = max(t for t in (committed_at, road.times["committed"]) if t is not None)
        healthy_at = None
        if health.status == "healthy":
            since = health.since
            healthy_at = since if since is not None and floor <= since <= now else now
        synced_at = min(now, healthy_at) if healthy_at is not None else now
        if "synced" in road.times:
            synced_at = road.times["synced"]
        self._mark(target, deployment_id, revision_id, "synced", max(synced_at, floor))
        if healthy_at is not None:
            self._mark(target, deployment_id, revision_id, "healthy", max(healthy_at, synced_at))

    # -- reading ----------------------------------------------------------------------

    def current(self, deployment_id: str, revision_id: str | None) -> Road | None:
        return self.road.road(deployment_id, revision_id) if revision_id else None

    def _started(self, deployment_id: str, revision_id: str) -> bool:
        road = self.road.road(deployment_id, revision_id)
        return road is not None and "committed" in road.times

    def _mark(
        self, target: str, deployment_id: str, revision_id: str, stage: Stage, when: datetime
    ) -> bool:
        if not self.road.mark(deployment_id, revision_id, stage, when):
            return False
        road = self.road.road(deployment_id, revision_id)
        if self.metrics is not None and road is not None:
            self.metrics.road_stage_reached(target, stage, road)
        return True
