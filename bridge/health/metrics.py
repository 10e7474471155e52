"""Prometheus metrics of the health read-back, on the bridge's own registry.

Owns the series `/metrics` adds for SPEC §8 and deploy/ alerts on:

- `gitops_bridge_revision_stage_seconds{target, stage}`: histogram of seconds
  from a revision's creation in the control plane to its commit, merge
  (pull-request mode), sync and healthy stages (observed once per revision: the road store says when first);
- `gitops_bridge_health_deployments{target, sync, status}`: deployments by state;
- `gitops_bridge_health_source_up{source}`: 1 when the last read of a polled
  source worked; `..._last_event_timestamp_seconds{source}` for every source;
- `gitops_bridge_health_webhook_requests_total{source, outcome}`;
- per deployment, only while something is wrong or pending (the rule's
  "degraded", "not synced within N minutes of its commit"):
  `gitops_bridge_deployment_degraded{target, deployment}` and
  `gitops_bridge_deployment_waiting_since_timestamp_seconds{target, deployment,
  stage}` (the commit's time, while stage `sync` or `healthy` is not reached).

Label values are bounded as in bridge/observability/metrics.py: targets and sources come
from the config, stages, states and outcomes from fixed sets, and
per-deployment series are capped at MAX_DEPLOYMENT_SERIES (the rest counted
in `gitops_bridge_health_deployments_unlabelled`). Must not compute health.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bridge.health.road import Road, Stage
from bridge.health.rules import STATUSES, SYNCS, Status, Sync

MAX_DEPLOYMENT_SERIES = 2000  # as bridge/observability/metrics.py
SOURCES = ("argocd", "argocd-notifications", "flux")
TIMED_STAGES = ("commit", "merge", "sync", "healthy")
# The road store's stage names -> the histogram's `stage` label.
ROAD_STAGES: dict[Stage, str] = {
    "committed": "commit",
    "merged": "merge",
    "synced": "sync",
    "healthy": "healthy",
}
WEBHOOK_OUTCOMES = (
    "accepted",
    "duplicate",
    "stale",
    "ignored",
    "unauthorized",
    "too_large",
    "malformed",
)
# From a minute to a day: a revision reaching the cluster in seconds is rare
# (poll intervals), one taking more than a day is an incident of its own.
STAGE_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400)


@dataclass(frozen=True)
class DeploymentState:
    """One deployment's row for `update`: the wiring builds it from an assessment."""

    target: str
    deployment: str  # "<namespace>/<name>", as gitops_bridge_deployment_failing
    sync: Sync
    status: Status
    committed_at: datetime | None = None  # of the commit carrying its revision
    # False when no configured source can see this deployment (no waiting
    # series then: an alert for what nobody is asked to watch is noise).
    covered: bool = True


class HealthMetrics:
    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        r = registry
        self.stage_seconds = Histogram(
            "gitops_bridge_revision_stage_seconds",
            "Seconds from a revision's creation in the control plane to a stage of its road "
            "(commit, sync, healthy), observed once per revision.",
            ["target", "stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.deployments = Gauge(
            "gitops_bridge_health_deployments",
            "Deployments per target by sync (synced, out-of-date, unknown) and health status "
            "(healthy, progressing, degraded, unknown).",
            ["target", "sync", "status"],
            registry=r,
        )
        self.source_up = Gauge(
            "gitops_bridge_health_source_up",
            "1 when the last read of a polled health source (the Argo CD API) worked, else 0.",
            ["source"],
            registry=r,
        )
        self.last_event = Gauge(
            "gitops_bridge_health_source_last_event_timestamp_seconds",
            "Unix time a health source last told the bridge something (a read or a webhook).",
            ["source"],
            registry=r,
        )
        self.webhook_requests = Counter(
            "gitops_bridge_health_webhook_requests_total",
            "Webhook requests by source and outcome (accepted, duplicate, stale, ignored, "
            "unauthorized, too_large, malformed).",
            ["source", "outcome"],
            registry=r,
        )
        self.degraded = Gauge(
            "gitops_bridge_deployment_degraded",
            "1 while the deployment's health source reports it degraded.",
            ["target", "deployment"],
            registry=r,
        )
        self.waiting = Gauge(
            "gitops_bridge_deployment_waiting_since_timestamp_seconds",
            "Unix time of the commit carrying the deployment's revision, while that revision "
            "has not reached `stage` (sync, healthy).",
            ["target", "deployment", "stage"],
            registry=r,
        )
        self.unlabelled = Gauge(
            "gitops_bridge_health_deployments_unlabelled",
            f"Degraded or waiting deployments beyond the first {MAX_DEPLOYMENT_SERIES} series.",
            registry=r,
        )
        self._lock = threading.Lock()
        self._state_keys: set[tuple[str, str, str]] = set()
        self._degraded: set[tuple[str, str]] = set()
        self._waiting: set[tuple[str, str, str]] = set()

    # -- sources ----------------------------------------------------------------

    def source_read(self, source: str, ok: bool, when: float | None = None) -> None:
        """A polled read of `source` worked (or not); `when`: Unix time, if it did."""
        self.source_up.labels(source=source).set(1 if ok else 0)
        if ok and when is not None:
            self.last_event.labels(source=source).set(when)

    def webhook_request(self, source: str, outcome: str, when: float | None = None) -> None:
        self.webhook_requests.labels(source=source, outcome=outcome).inc()
        if outcome in ("accepted", "duplicate") and when is not None:
            self.last_event.labels(source=source).set(when)

    # -- the road ---------------------------------------------------------------

    def stage_reached(self, target: str, stage: str, seconds: float | None) -> None:
        """Observe once, when the road store says a stage was reached the first time."""
        if stage in TIMED_STAGES and seconds is not None:
            self.stage_seconds.labels(target=target, stage=stage).observe(seconds)

    def road_stage_reached(self, target: str, stage: Stage, road: Road) -> None:
        """`stage_reached` for a RoadStore stage (`committed`, `synced`, `healthy`),
        timed from the revision's creation; other stages are not histogrammed."""
        label = ROAD_STAGES.get(stage)
        if label is not None:
            self.stage_reached(target, label, road.seconds(stage))

    # -- per deployment ---------------------------------------------------------

    def update(self, states: Iterable[DeploymentState]) -> None:
        """Replace the per-target counts and per-deployment series with `states`."""
        with self._lock:
            counts: dict[tuple[str, str, str], int] = {}
            degraded: set[tuple[str, str]] = set()
            waiting: dict[tuple[str, str, str], float] = {}
            targets: set[str] = set()
            for s in states:
                targets.add(s.target)
                key = (s.target, s.sync, s.status)
                counts[key] = counts.get(key, 0) + 1
                if s.status == "degraded":
                    degraded.add((s.target, s.deployment))
                if s.covered and s.committed_at is not None:
                    stage = (
                        "sync"
                        if s.sync != "synced"
                        else "healthy"
                        if s.status != "healthy"
                        else None
                    )
                    if stage is not None:
                        waiting[(s.target, s.deployment, stage)] = s.committed_at.timestamp()
            self._set_counts(counts, targets)
            extra = self._set_degraded(degraded) + self._set_waiting(waiting)
            self.unlabelled.set(extra)

    def _set_counts(self, counts: dict[tuple[str, str, str], int], targets: set[str]) -> None:
        # Every (sync, status) pair of a target is written, zeros too, so a
        # dashboard's stacked series never stop at the last non-zero value.
        for target in targets:
            for sync in SYNCS:
                for status in STATUSES:
                    counts.setdefault((target, sync, status), 0)
        for key in self._state_keys - set(counts):
            self.deployments.labels(*key).set(0)
        for key, n in counts.items():
            self.deployments.labels(*key).set(n)
        self._state_keys |= set(counts)

    def _set_degraded(self, degraded: set[tuple[str, str]]) -> int:
        labelled = set(sorted(degraded)[:MAX_DEPLOYMENT_SERIES])
        for gone in self._degraded - labelled:
            self.degraded.remove(*gone)
        for series in labelled:
            self.degraded.labels(*series).set(1)
        self._degraded = labelled
        return len(degraded) - len(labelled)

    def _set_waiting(self, waiting: dict[tuple[str, str, str], float]) -> int:
        labelled = sorted(waiting)[:MAX_DEPLOYMENT_SERIES]
        for gone in self._waiting - set(labelled):
            self.waiting.remove(*gone)
        for series in labelled:
            self.waiting.labels(*series).set(waiting[series])
        self._waiting = set(labelled)
        return len(waiting) - len(labelled)
