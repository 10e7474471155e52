"""Commit statuses on the forge as a health source (`forge-status`, SPEC §8 source 4).

Flux's commit-status providers (`github`, `gitlab`, `gitea`) and Argo CD
notifications' `github` service write a status on the commit the consumer
synced. A bridge in pull-request mode already holds a token for the forge,
so it can read them on its own commits: no inbound port, no Argo CD token.

Owns:

- which contexts are read (`parse_context`): Flux's
  `kustomization/<name>/<provider uid prefix>` (notification-controller's
  commit-status id, lower-cased; HelmReleases and sources are not the
  bridge's) and Argo CD notifications' `continuous-delivery/<app>` (the
  catalog's label) or `argocd/<app>`. Any other context (CI, check runs) is
  somebody else's and ignored;
- what a status means (`status_observation`): success -> healthy, applied at
  that commit; failure -> degraded (applied when the failure is a health
  check's, as Flux sends HealthCheckFailed after applying, or Argo CD's
  "health degraded"; a build or sync failure applied nothing); error ->
  degraded, nothing applied; pending -> progressing;
- which commits to ask (`commits_to_ask`): from the branch head back along
  first parents, down to the oldest commit of a deployment not yet known
  healthy, never more than `limit`; when every deployment is healthy, the
  head alone, once per `idle_every`;
- `ForgeStatusReader`: one target's reading, recorded in the
  ObservationStore; a forge that fails makes this source unreachable for
  that target only, and says why.

Forge answers are hostile: the forge client bounds and parses them
(bridge.forges); here every value is checked again, cut, and a bad status
fails only itself. Must not import git, the forges or the config: the
wiring (bridge/commands/readback.py) hands in a `read(sha)` function and the
commits.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from bridge.errors import BridgeError
from bridge.health.folders import Scope
from bridge.health.observations import ObservationStore
from bridge.health.rules import Observation, Status

log = logging.getLogger("bridge.health")

SOURCE = "forge-status"
FLUX_OBJECT_NAMESPACE = "flux-system"  # where `bootstrap --for flux` puts Kustomizations
ARGOCD_OBJECT_NAMESPACE = "argocd"  # where `bootstrap --for argocd` puts Applications
MAX_COMMITS = 4  # per target and cycle
MAX_STATUSES = 200  # per commit: a forge (or someone with write access) may send thousands
MAX_CONTEXT = 300
MAX_REASON = 200
IDLE_EVERY = timedelta(minutes=5)

# Kubernetes object names: DNS subdomain (253), lower case.
_NAME = r"[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?"
_FLUX = re.compile(rf"^kustomization/(?P<name>{_NAME})/(?P<uid>[0-9a-f]{{1,36}})$")
_ARGOCD = re.compile(rf"^(?:continuous-delivery|argocd)/(?P<name>{_NAME})$")
_SHA = re.compile(r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


class StatusLike(Protocol):
    """A commit status as the forge clients parse it (bridge.forges.CommitStatus)."""

    @property
    def context(self) -> str: ...

    @property
    def state(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def updated_at(self) -> datetime | None: ...


def parse_context(context: object) -> tuple[str, str] | None:
    """("flux" | "argocd", the consumer object `namespace/name`), or None for a
    context that is not a consumer's."""
    if not isinstance(context, str) or len(context) > MAX_CONTEXT:
        return None
    text = context.strip()
    flux = _FLUX.match(text)
    if flux:
        return "flux", f"{FLUX_OBJECT_NAMESPACE}/{flux['name']}"
    argo = _ARGOCD.match(text)
    if argo:
        return "argocd", f"{ARGOCD_OBJECT_NAMESPACE}/{argo['name']}"
    return None


def _clean(text: object, limit: int) -> str:
    value = _CONTROL.sub(" ", text if isinstance(text, str) else "")
    value = value.strip()
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _applied_then_failed(kind: str, description: str) -> bool:
    """A failure after the commit was applied: Flux's health check failed (it
    checks health after applying), Argo CD's health degraded. Flux words its
    description from the event's reason, split into words."""
    squeezed = re.sub(r"[^a-z]", "", description.lower())
    if kind == "flux":
        return "healthcheck" in squeezed
    return "sync" not in squeezed  # Argo CD: a sync failure applied nothing


def status_observation(
    status: StatusLike, sha: str, *, branch: str | None, now: datetime
) -> Observation | None:
    """The Observation one status on commit `sha` makes, or None for a status
    that is not a consumer's (or says nothing usable)."""
    parsed = parse_context(getattr(status, "context", None))
    if parsed is None or not _SHA.match(sha):
        return None
    kind, obj = parsed
    state = str(getattr(status, "state", "")).lower()
    description = _clean(getattr(status, "description", ""), MAX_REASON)
    applied: str | None = None
    verdict: Status
    if state == "success":
        verdict, applied = "healthy", sha
    elif state == "failure":
        verdict = "degraded"
        applied = sha if _applied_then_failed(kind, description) else None
    elif state == "error":
        verdict = "degraded"
    elif state == "pending":
        verdict = "progressing"
    else:
        return None
    at = getattr(status, "updated_at", None)
    if not isinstance(at, datetime) or at.tzinfo is None or at > now:
        # Undated, naive or in the future: a future time would make every
        # later word look like a replay (ObservationStore drops older ones).
        at = now
    label = f"{kind} commit status {state} on {sha[:12]}"
    return Observation(
        source=SOURCE,
        object=obj,
        # The status names no folder: the wiring's routes (the names
        # `bootstrap` gives) do, as for Flux events.
        scope=Scope(repo=None, branch=branch, path=None),
        applied=applied,
        status=verdict,
        at=at,
        since=at,
        reason=f"{label}: {description}" if description else label,
    )


def commits_to_ask(
    chain: Sequence[str], wanted: Iterable[str], *, limit: int = MAX_COMMITS
) -> list[str]:
    """Of the branch's first-parent `chain` (newest first), those to ask: down
    to the oldest `wanted` commit found in it, at most `limit`. A wanted commit
    not on the chain (older than the walk) leaves the first `limit`."""
    wanted_set = set(wanted)
    if not chain:
        return []
    if not wanted_set:
        return list(chain[:1])
    deepest = max((i for i, sha in enumerate(chain) if sha in wanted_set), default=len(chain))
    return list(chain[: min(deepest + 1, limit)])


@dataclass
class TargetReading:
    """What one target's reading left: for `status` and the logs."""

    error: str | None = None
    asked: list[str] = field(default_factory=list)
    recorded: int = 0
    ignored: int = 0  # statuses not a consumer's, or over the cap
    last_idle: datetime | None = None


ReadStatuses = Callable[[str], Sequence[StatusLike]]


class ForgeStatusReader:
    """Reads commit statuses of pull-request targets into the ObservationStore.

    `read_target` is called by the wiring once per cycle and target, with the
    commits `commits_to_ask` chose; a `BridgeError` from `read` (the forge
    refused, timed out, rate-limited) ends that target's reading and marks it
    unreachable; other targets are untouched. `calls_left` caps the commits
    asked across targets in one cycle (`new_cycle` resets it)."""

    def __init__(
        self,
        store: ObservationStore,
        *,
        per_cycle: int = 3 * MAX_COMMITS,
        idle_every: timedelta = IDLE_EVERY,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.per_cycle = per_cycle
        self.idle_every = idle_every
        self._clock = clock
        self.calls_left = per_cycle
        self.targets: dict[str, TargetReading] = {}

    def new_cycle(self) -> None:
        self.calls_left = self.per_cycle

    def due(self, target: str, *, idle: bool) -> bool:
        """Whether to ask at all: always while a deployment is not known healthy;
        when all are, once per `idle_every` (a later failure still shows)."""
        if not idle:
            return True
        last = self.targets.get(target, TargetReading()).last_idle
        return last is None or self._clock() - last >= self.idle_every

    def read_target(
        self,
        target: str,
        commits: Sequence[str],
        read: ReadStatuses,
        *,
        branch: str | None,
        idle: bool = False,
    ) -> TargetReading:
        """Ask `commits` (newest first) and record what the consumers said; the
        newest commit's word per object wins. Never raises a BridgeError."""
        reading = self.targets.setdefault(target, TargetReading())
        reading.asked, reading.recorded, reading.ignored = [], 0, 0
        if idle:
            reading.last_idle = self._clock()
        seen: set[str] = set()
        for sha in commits:
            if self.calls_left <= 0:
                break
            self.calls_left -= 1
            try:
                statuses = read(sha)
            except BridgeError as e:
                reading.error = _clean(str(e), 300) or type(e).__name__
                return reading
            except Exception as e:  # a bug in a client must not end the read-back
                reading.error = f"{type(e).__name__}: {_clean(str(e), 200)}"
                log.debug("forge statuses of %s", sha[:12], exc_info=e)
                return reading
            reading.asked.append(sha)
            self._record(sha, statuses, seen, reading, branch)
        reading.error = None
        return reading

    def _record(
        self,
        sha: str,
        statuses: Sequence[StatusLike],
        seen: set[str],
        reading: TargetReading,
        branch: str | None,
    ) -> None:
        now = self._clock()
        mine: dict[str, Observation] = {}
        for index, status in enumerate(statuses):
            if index >= MAX_STATUSES:
                reading.ignored += len(statuses) - index
                break
            try:
                obs = status_observation(status, sha, branch=branch, now=now)
            except (TypeError, ValueError, AttributeError):
                obs = None  # one bad status fails only itself
            if obs is None or obs.object in seen:
                reading.ignored += obs is None
                continue
            # Of several statuses of one context on one commit, the latest.
            kept = mine.get(obs.object)
            if kept is None or obs.at >= kept.at:
                mine[obs.object] = obs
        for obj, obs in mine.items():
            seen.add(obj)
            reading.recorded += self.store.record(obs) == "new"

    def unreachable(self) -> dict[str, str]:
        """target -> why, for the targets whose last reading failed."""
        return {t: r.error for t, r in self.targets.items() if r.error is not None}
