"""The latest word of each source on each consumer object; duplicates and replays dropped.

Owns deduplication (SPEC §8): Flux repeats "Reconciliation finished" every
interval, Argo CD notifications fire "deployed" more than once, and nothing
time-based is signed, so a captured body can be posted again at any time.
Each object keeps one Observation; a new one is

- `stale` when the source dated it before the one kept (a replay, or a
  retry that lost a race): dropped, whatever it says;
- `duplicate` when it says what the kept one says (commit, status, reason):
  dropped, and `since` does not move;
- `new` otherwise: kept, and `since` is when this status began.

An observation that names no applied commit (a Flux build failure: the
cluster still runs the last one) carries the last known one forward.
Objects no deployment claims yet are kept too (a Kustomization bootstrapped
before its first deployment): bounded by `max_objects`, oldest dropped first.

Thread-safe: webhooks arrive on handler threads, the Argo CD stream on its own.
In memory only: after a restart the sources tell it all again (the API at
once, Flux at its next interval); what must survive restarts is the road.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Literal

from bridge.health.rules import Observation

Recorded = Literal["new", "duplicate", "stale"]
MAX_OBJECTS = 20_000  # ten times the per-deployment series cap of /metrics


def _now() -> datetime:
    return datetime.now(UTC)


class ObservationStore:
    def __init__(
        self, *, max_objects: int = MAX_OBJECTS, clock: Callable[[], datetime] = _now
    ) -> None:
        self._max = max_objects
        self._clock = clock
        self._kept: dict[tuple[str, str], Observation] = {}
        self._checked: set[tuple[str, str]] = set()  # Flux objects seen running health checks
        self._lock = threading.Lock()

    def record(self, observation: Observation) -> Recorded:
        with self._lock:
            key = observation.key
            kept = self._kept.get(key)
            if kept is not None and observation.at < kept.at:
                return "stale"
            if observation.health_checked and observation.source == "flux":
                self._checked.add(key)
            obs = self._complete(observation, kept)
            if kept is not None and _same(obs, kept):
                # The latest time it was said orders what comes next; `since` stays.
                self._kept[key] = replace(kept, at=obs.at)
                return "duplicate"
            self._kept.pop(key, None)  # re-inserted last: dict order is age order
            self._kept[key] = obs
            while len(self._kept) > self._max:
                oldest = next(iter(self._kept))
                del self._kept[oldest]
                self._checked.discard(oldest)
            return "new"

    def _complete(self, obs: Observation, kept: Observation | None) -> Observation:
        if kept is not None and obs.applied is None:
            obs = replace(obs, applied=kept.applied)
        if obs.scope is None and kept is not None:
            obs = replace(obs, scope=kept.scope)
        if obs.source == "flux" and obs.key in self._checked and obs.status == "unknown":
            # "Reconciliation finished" of an object seen running health checks:
            # with spec.wait, Ready means the checks passed.
            obs = replace(
                obs, status="healthy", reason="reconciled with health checks", health_checked=True
            )
        if obs.since is None:
            same_status = kept is not None and kept.status == obs.status
            since = kept.since if same_status and kept is not None else None
            obs = replace(obs, since=since or obs.at or self._clock())
        return obs

    def forget(self, source: str, keep: Iterable[str]) -> int:
        """Drop `source`'s objects not in `keep` (an Application that left the
        API's listing, or a DELETED stream event); how many were dropped."""
        wanted = set(keep)
        with self._lock:
            gone = [k for k in self._kept if k[0] == source and k[1] not in wanted]
            for key in gone:
                del self._kept[key]
            return len(gone)

    def drop(self, source: str, app_key: str) -> int:
        """Drop one object of `source` (with its per-source `#i` parts): an
        Application the stream says was DELETED."""
        with self._lock:
            gone = [
                k
                for k in self._kept
                if k[0] == source and (k[1] == app_key or k[1].startswith(app_key + "#"))
            ]
            for key in gone:
                del self._kept[key]
            return len(gone)

    def snapshot(self) -> list[Observation]:
        with self._lock:
            return list(self._kept.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._kept)


def _same(a: Observation, b: Observation) -> bool:
    # The time is left out on purpose: a repeat differs only in when it was sent.
    return (a.applied, a.status, a.reason, a.scope) == (b.applied, b.status, b.reason, b.scope)
