"""What `status` shows of the health read-back (SPEC §8), from a shell, without a running bridge.

Owns the `health`, `leadTimeSeconds` and `healthNote` of each status row, the
`healthSources` list, and the lines under the table:

- the Argo CD API is asked here and now when its token is at hand (the
  truth, not the last run's word); the pushed sources (Flux events, Argo CD
  notifications) reach only a running bridge, so their word comes from the
  snapshot `run` keeps in the workdir, with its age;
- a source that cannot be read is said to be unreachable, and the
  deployments it would speak for show `unknown`, never a guess from old data;
- health of a Kustomization or Application that applies a whole namespace
  folder is said to be per namespace;
- lead time (revision created -> healthy) comes from the road `run` keeps.

Reads only: the road and the snapshot are never written here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.commands.healthreading import Assessed, StateCache, assess_target
from bridge.config import Settings, Target
from bridge.errors import BridgeError
from bridge.health.assessing import UNKNOWN, iso
from bridge.health.observations import ObservationStore
from bridge.health.road import FILE_NAME, RoadStore
from bridge.health.snapshots import SnapshotFile
from bridge.publishing.lineage import CloneLineage

ARGOCD = "argocd"


def _now() -> datetime:
    return datetime.now(UTC)


def unknown_fields(note: str | None) -> dict[str, Any]:
    return {"health": UNKNOWN.to_json(), "leadTimeSeconds": None, "healthNote": note}


def lead_time(seconds: float | None) -> str:
    """`4m12s`, `1h03m`, `2d04h`: what the table shows of `leadTimeSeconds`."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


class StatusHealth:
    """The sources' word for `status`, gathered once, then asked per target."""

    def __init__(self, settings: Settings, *, clock: Callable[[], datetime] = _now) -> None:
        self.settings = settings
        self.enabled = settings.health.enabled
        self._clock = clock
        self.sources: list[dict[str, Any]] = []
        self.store = ObservationStore(clock=clock)
        workdir = Path(settings.git.workdir)
        # Read only: a damaged file is left where it is, and nothing here saves it.
        exists = (workdir / FILE_NAME).is_file()
        self.road = RoadStore.open(workdir, read_only=True) if exists else None
        self._states = StateCache()
        self._argocd_down: str | None = None
        self._unread: dict[str, str] = {}  # target namespace -> why git said nothing

    @classmethod
    def gather(cls, settings: Settings, *, transport: Any = None) -> StatusHealth:
        view = cls(settings)
        if view.enabled:
            view._gather(transport)
        return view

    def _gather(self, transport: Any) -> None:
        health = self.settings.health
        snapshot = SnapshotFile(self.settings.git.workdir).load()
        asked = health.argocd is not None and (
            health.argocd.token is not None or health.argocd.token_file is not None
        )
        # The last run's word of each source still configured; Argo CD's only
        # when it cannot be asked here (it is, below, when its token is at hand).
        kept = {
            ARGOCD: health.argocd is not None and not asked,
            "flux": health.flux is not None,
            "argocd-notifications": health.argocd_notifications is not None,
            # Read by `run` on the forge; `status` shows the last run's word
            # rather than spend the pull requests' rate limit from a shell.
            "forge-status": health.forge_statuses,
        }
        for observation in snapshot.observations:
            if kept.get(observation.source, False):
                self.store.record(observation)
        as_of = iso(snapshot.saved_at)
        if health.argocd is not None:
            if asked:
                self._ask_argocd(transport)
            else:
                self.sources.append(
                    {
                        "source": ARGOCD,
                        "reachable": None,
                        "asOf": as_of,
                        "detail": f"{health.argocd.token_env} is not set here: the last "
                        "run's word is shown",
                    }
                )
        if health.forge_statuses:
            self.sources.append(
                {
                    "source": "forge-status",
                    "reachable": None,
                    "asOf": as_of,
                    "detail": "commit statuses read by a running bridge: the last run's word "
                    "is shown"
                    if as_of
                    else "no word kept yet: no `run` has read the forge",
                }
            )
        for name, configured in (
            ("flux", health.flux),
            ("argocd-notifications", health.argocd_notifications),
        ):
            if configured is not None:
                self.sources.append(
                    {
                        "source": name,
                        "reachable": None,
                        "asOf": as_of,
                        "detail": "pushed to a running bridge: the last run's word is shown"
                        if as_of
                        else "no word kept yet: no `run` has saved what it was sent",
                    }
                )

    def _ask_argocd(self, transport: Any) -> None:
        from bridge.health.argocd import ArgoCDClient, HealthSourceError
        from bridge.health.sources import record_listing

        assert self.settings.health.argocd is not None
        try:
            with ArgoCDClient.from_settings(self.settings.health.argocd, transport=transport) as c:
                listing = c.list_applications()
        except (HealthSourceError, BridgeError, OSError) as e:
            self._argocd_down = str(e)
            self.sources.append(
                {"source": ARGOCD, "reachable": False, "asOf": None, "detail": str(e)}
            )
            return
        now = self._clock()
        record_listing(listing, self.store, now=now)
        self.sources.append({"source": ARGOCD, "reachable": True, "asOf": iso(now), "detail": None})

    # -- per target -------------------------------------------------------------------

    def assess(self, target: Target, repo: Any) -> dict[str, Assessed]:
        """Deployment id -> its assessment, on a synced TargetRepo's clone. A
        target whose git cannot be read shows `unknown`, and says why, alone."""
        if not self.enabled:
            return {}
        lineage = CloneLineage(repo.clone)
        head = repo.clone.local_head()  # just synced: the remote's head
        try:
            found = assess_target(target, lineage, self.store.snapshot(), self._states, head=head)
        except (BridgeError, OSError, ValueError) as e:
            self._unread[target.namespace] = str(e)
            return {}
        if lineage.problems:
            self._unread[target.namespace] = "; ".join(dict.fromkeys(lineage.problems))[:300]
        return {a.folder.deployment_id: a for a in found}

    def fields(
        self, revision_id: str | None, assessed: Assessed | None, namespace: str | None = None
    ) -> dict[str, Any]:
        """`health`, `leadTimeSeconds` and `healthNote` of one row."""
        if not self.enabled:
            return unknown_fields("no health source is configured (`health:` in bridge.yaml)")
        if assessed is None:
            unread = self._unread.get(namespace or "")
            return unknown_fields(
                f"git could not be read for health: {unread}" if unread else "not in the branch yet"
            )
        health = assessed.health
        road = None
        if self.road is not None and revision_id:
            road = self.road.road(assessed.folder.deployment_id, revision_id)
        note = None
        if health.source is None:
            note = (
                f"Argo CD is unreachable ({self._argocd_down})"
                if self._argocd_down
                else "no health source reports it (is an Application or Kustomization "
                "applying its folder?)"
            )
        elif health.per_namespace:
            note = (
                "health is per namespace: one object applies the whole namespace folder "
                "(per deployment: bootstrap --layout applicationset / deployment)"
            )
        elif health.reason and health.status != "healthy":
            note = health.reason
        return {
            "health": health.to_json(),
            "leadTimeSeconds": road.lead_time_seconds if road is not None else None,
            "healthNote": note,
        }

    def notes(self) -> list[str]:
        """Lines under the table: each source that was not asked here and now,
        each target whose git did not answer every question."""
        out = []
        for s in self.sources:
            if s["reachable"] is False:
                out.append(f"health source {s['source']} is unreachable: {s['detail']}")
            elif s["reachable"] is None:
                when = f" (as of {s['asOf']})" if s["asOf"] else ""
                out.append(f"health source {s['source']}: {s['detail']}{when}")
        for namespace, why in sorted(self._unread.items()):
            out.append(f"target {namespace}: health read from git in part or not at all: {why}")
        return out
