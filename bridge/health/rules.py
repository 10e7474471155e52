"""Health rules: what a consumer object's state means, as peers learned it.

Owns the mapping from an Argo CD Application, a Flux event or a Flux
Kustomization's conditions to an `Observation`: which commit the consumer
applied, and a status in the bridge's four words (healthy, progressing,
degraded, unknown). The traps it encodes (../shared/reference/consumers):

- Argo CD computes sync and health in separate loops: health is trusted only
  once `reconciledAt >= operationState.finishedAt`; before that it is Unknown.
- `ComparisonError` / `InvalidSpecError` (and `SyncError`) conditions, and a
  sync operation that Failed or Errored, are failures whatever health says.
- `Suspended` is still progressing (a paused rollout is not done); so is
  `Missing` (applied resources not there yet).
- Flux: `Healthy` and health events exist only with `spec.wait: true` or
  health checks; without them, Ready means "applied" and health is unknown.

Pure: no I/O, no clock (callers pass `now`). Must not decide whether a
deployment is synced: that needs git (bridge.health.syncing).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from bridge.health.applications import Application
from bridge.health.fluxevents import FluxEvent, parse_revision
from bridge.health.folders import Scope, normal_branch, normal_path

Status = Literal["healthy", "progressing", "degraded", "unknown"]
Sync = Literal["synced", "out-of-date", "unknown"]
STATUSES: tuple[Status, ...] = ("healthy", "progressing", "degraded", "unknown")
SYNCS: tuple[Sync, ...] = ("synced", "out-of-date", "unknown")

ARGOCD_FAILED_CONDITIONS = ("ComparisonError", "InvalidSpecError", "SyncError")
ARGOCD_HEALTH: Mapping[str, Status] = {
    "Healthy": "healthy",
    "Progressing": "progressing",
    "Suspended": "progressing",
    "Missing": "progressing",
    "Degraded": "degraded",
    "Unknown": "unknown",
}
# Flux event reasons (the Ready condition's reason when the event was sent).
FLUX_FAILED = (
    "HealthCheckFailed",
    "ReconciliationFailed",
    "BuildFailed",
    "ArtifactFailed",
    "PruneFailed",
)
FLUX_WAITING = ("DependencyNotReady", "Progressing", "ProgressingWithRetry")
# After these failures the new revision was applied (health is checked after
# apply): the cluster runs it, unhealthy. After the others it was not.
FLUX_APPLIED_THEN_FAILED = ("HealthCheckFailed",)


@dataclass(frozen=True)
class Observation:
    """What one source said about one consumer object, at one time."""

    source: str  # "argocd", "argocd-notifications", "flux"
    object: str  # "<namespace>/<name>" of the Application or Kustomization
    # None: the source does not say which folder; the assessment then looks
    # the object up in the routes the wiring knows (Flux Kustomizations).
    scope: Scope | None
    applied: str | None  # the commit sha the consumer applied; None: not known
    status: Status
    at: datetime  # when the source says this was so (orders replays)
    since: datetime | None = None  # when `status` began, where the source says
    reason: str = ""  # short, for `status`: a condition, an event reason
    # Flux only: the object is known to run health checks (`spec.wait`).
    health_checked: bool = True

    @property
    def key(self) -> tuple[str, str]:
        return (self.source, self.object)


# --- Argo CD -------------------------------------------------------------------


def argocd_status(app: Application) -> tuple[Status, str]:
    """The app's status and why, with the traps above applied in their order."""
    for kind, message in app.conditions:
        if kind in ARGOCD_FAILED_CONDITIONS:
            return "degraded", f"{kind}: {message}" if message else kind
    phase = app.operation_phase
    if phase in ("Failed", "Error"):
        return "degraded", f"sync operation {phase}"
    if phase in ("Running", "Terminating"):
        return "progressing", f"sync operation {phase}"
    finished = app.operation_finished
    if finished is not None and (app.reconciled_at is None or app.reconciled_at < finished):
        # Health was computed before the sync that finished last: it describes
        # the objects as they were. Kargo learned this in seven bug reports.
        return "unknown", "health not yet reconciled since the last sync finished"
    status = ARGOCD_HEALTH.get(app.health_status or "Unknown", "unknown")
    reason = f"Argo CD health {app.health_status or 'Unknown'}"
    return status, f"{reason}: {app.health_message}" if app.health_message else reason


def argocd_applied(app: Application, index: int) -> str | None:
    """The commit source `index` of the app has applied. Synced: the compared
    revision (live equals git there, even with no sync since: a later commit
    that left the folder alone). Otherwise: what the last successful sync
    applied, which history records."""

    def at(revisions: tuple[str | None, ...]) -> str | None:
        return revisions[index] if index < len(revisions) else None

    if app.sync_status == "Synced" and at(app.sync_revisions):
        return at(app.sync_revisions)
    if app.operation_phase == "Succeeded" and at(app.operation_revisions):
        return at(app.operation_revisions)
    return at(app.last_deployed)


def argocd_observations(app: Application, *, source: str, now: datetime) -> list[Observation]:
    """One Observation per git source of the app that names a folder and a branch."""
    status, reason = argocd_status(app)
    at = app.reconciled_at or app.operation_finished or now
    since = app.health_since if reason.startswith("Argo CD health") else None
    out = []
    scoped = [(i, s.scope()) for i, s in enumerate(app.sources)]
    for index, scope in scoped:
        if scope is None:
            continue
        suffix = f"#{index}" if len(app.sources) > 1 else ""
        out.append(
            Observation(
                source=source,
                object=app.key + suffix,
                scope=scope,
                applied=argocd_applied(app, index),
                status=status,
                at=at,
                since=since,
                reason=reason,
            )
        )
    return out


# --- Flux ------------------------------------------------------------------------


def flux_event_observation(
    event: FluxEvent, *, path: str | None = None, health_checked: bool = False
) -> Observation | None:
    """The Observation a Kustomization's event makes, or None for one that says
    nothing about health (another kind, a trace, an unknown info reason).

    `path`: the Kustomization's `spec.path` when known (events do not carry
    it); `health_checked`: whether it runs health checks, when known.
    """
    if event.kind != "Kustomization" or event.severity == "trace":
        return None
    parsed = parse_revision(event.revision)
    ref, sha = parsed if parsed else (None, None)
    scope = Scope(repo=None, branch=normal_branch(ref), path=normal_path(path) if path else path)
    applied: str | None = None
    checked = health_checked
    reason = event.reason or event.severity
    if event.severity == "error":
        status: Status = "degraded"
        if event.reason in FLUX_APPLIED_THEN_FAILED:
            applied, checked = sha, True
    elif event.reason == "ReconciliationSucceeded":
        applied = sha
        status = "healthy" if health_checked else "unknown"
        if not health_checked:
            reason = "applied; Flux reports health only with spec.wait: true"
    elif event.message.startswith("Health check passed"):
        applied, checked, status = sha, True, "healthy"
        reason = "health check passed"
    elif event.message.startswith("Health checks canceled"):
        status = "progressing"
    elif event.reason in FLUX_WAITING:
        # "Progressing" with a change set: applied, health checks not done yet.
        applied = sha if event.reason == "Progressing" else None
        status = "progressing"
    else:
        return None
    return Observation(
        source="flux",
        object=event.key,
        scope=scope,
        applied=applied,
        status=status,
        at=event.timestamp,
        reason=f"{reason}: {event.message}" if event.severity == "error" else reason,
        health_checked=checked,
    )


def flux_conditions_status(conditions: Iterable[Mapping[str, Any]]) -> tuple[Status, str]:
    """A Kustomization's status from its `status.conditions` (Ready, Healthy,
    Reconciling, Stalled), for readers that see the object (forge statuses,
    a status dump) rather than its events."""
    by_type = {
        str(c.get("type")): c for c in conditions if isinstance(c, Mapping) and c.get("type")
    }
    ready, healthy = by_type.get("Ready"), by_type.get("Healthy")
    if _is(by_type.get("Stalled"), "True"):
        return "degraded", f"Stalled: {_reason(by_type['Stalled'])}"
    if ready is None:
        return "unknown", "no Ready condition yet"
    reason = _reason(ready)
    if _is(ready, "False"):
        if reason in FLUX_WAITING:
            return "progressing", reason
        return "degraded", reason
    if _is(ready, "Unknown") or _is(by_type.get("Reconciling"), "True"):
        return "progressing", reason or "reconciling"
    if healthy is None:
        return "unknown", "applied; Flux reports health only with spec.wait: true"
    if _is(healthy, "True"):
        return "healthy", _reason(healthy) or "Healthy"
    if _is(healthy, "False"):
        return "degraded", _reason(healthy) or "HealthCheckFailed"
    return "progressing", _reason(healthy) or "health checks running"


def _is(condition: Mapping[str, Any] | None, value: str) -> bool:
    return condition is not None and condition.get("status") == value


def _reason(condition: Mapping[str, Any]) -> str:
    reason = condition.get("reason")
    return reason[:128] if isinstance(reason, str) else ""
