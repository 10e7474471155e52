"""The road of each revision, timed: created, committed, pushed, merged, synced, healthy.

Owns the first-seen time of each stage of each revision, kept across restarts
in one file in the bridge's workdir (Argo CD keeps only ten history entries,
Flux none, so the bridge is the only place the whole road is known). The lead
time of a revision is created (the control plane's `created_at`) -> healthy.

The file: JSON, created 0600 (it names deployments and their timing; nothing
secret, but nobody else's business), replaced atomically (write a temporary
file beside it, fsync, rename), bounded (the newest `max_revisions` of each
deployment, at most `max_deployments` deployments, the least recently moved
dropped first). A damaged file is set aside, never trusted in part, and the
road starts again: losing timings is better than refusing to start.

Must not decide when a stage is reached (the wiring tells it) nor read git.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from bridge.health.applications import parse_timestamp
from bridge.health.assessing import iso
from bridge.untrusted import UntrustedInput, parse_json

log = logging.getLogger("bridge.health")

Stage = Literal["created", "committed", "pushed", "merged", "synced", "healthy"]
STAGES: tuple[Stage, ...] = ("created", "committed", "pushed", "merged", "synced", "healthy")
FILE_NAME = "health-road.json"
SCHEMA_VERSION = 1
MAX_REVISIONS = 5
MAX_DEPLOYMENTS = 10_000
MAX_FILE_BYTES = 64 * 1024 * 1024  # ~10,000 x 5 revisions x 6 stages, with room
MAX_ID = 128


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Road:
    deployment_id: str
    revision_id: str
    times: Mapping[str, datetime]

    def seconds(self, stage: Stage, start: Stage = "created") -> float | None:
        """Seconds from `start` to `stage`, or None while either is unknown."""
        begin, end = self.times.get(start), self.times.get(stage)
        if begin is None or end is None:
            return None
        return max(0.0, (end - begin).total_seconds())

    @property
    def lead_time_seconds(self) -> float | None:
        """Revision created -> healthy (SPEC §8 `leadTimeSeconds`)."""
        return self.seconds("healthy")

    def to_json(self) -> dict[str, Any]:
        return {
            "revisionId": self.revision_id,
            **{stage: iso(self.times.get(stage)) for stage in STAGES},
            "leadTimeSeconds": self.lead_time_seconds,
        }


class RoadStore:
    def __init__(
        self,
        path: Path,
        *,
        max_revisions: int = MAX_REVISIONS,
        max_deployments: int = MAX_DEPLOYMENTS,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.path = path
        self._max_revisions = max_revisions
        self._max_deployments = max_deployments
        self._clock = clock
        # deployment -> revision -> stage -> time; dicts keep insertion order,
        # so the first deployment is the least recently moved one.
        self._roads: dict[str, dict[str, dict[str, datetime]]] = {}
        self._dirty = False
        self._lock = threading.Lock()

    @classmethod
    def open(cls, workdir: Path, *, read_only: bool = False, **kwargs: Any) -> RoadStore:
        """The store of `workdir` (the bridge's `git.workdir`), loaded if present.
        `read_only` (`status`, `audit`): a damaged file is ignored, not set aside."""
        store = cls(Path(workdir) / FILE_NAME, **kwargs)
        store.load(set_aside=not read_only)
        return store

    def load(self, *, set_aside: bool = True) -> None:
        try:
            with self.path.open("rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return
        except OSError as e:
            log.warning(
                "health road: cannot read %s (%s); timings start again", self.path, e.strerror
            )
            return
        try:
            roads = _decode(parse_json(data, source=str(self.path), max_bytes=MAX_FILE_BYTES))
        except UntrustedInput as e:
            if not set_aside:
                log.warning("health road: %s; its timings are not shown", e)
                return
            aside = self.path.with_name(self.path.name + ".damaged")
            log.warning("health road: %s; set aside as %s, timings start again", e, aside.name)
            try:
                os.replace(self.path, aside)
            except OSError:
                pass
            return
        with self._lock:
            self._roads = roads
            self._prune_locked()

    def mark(
        self, deployment_id: str, revision_id: str, stage: Stage, when: datetime | None = None
    ) -> bool:
        """Record that `stage` was reached; True the first time only (a restart,
        a repeated event or a second replica's word changes nothing)."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; one of {STAGES}")
        for value in (deployment_id, revision_id):
            if not isinstance(value, str) or not value or len(value) > MAX_ID:
                raise ValueError(
                    f"a deployment or revision id of 1 to {MAX_ID} characters, not {value!r}"
                )
        # Whole seconds, as the file keeps them: a restart reads back the same road.
        at = (when or self._clock()).astimezone(UTC).replace(microsecond=0)
        with self._lock:
            revisions = self._roads.pop(deployment_id, {})
            self._roads[deployment_id] = revisions  # now the most recently moved
            times = revisions.setdefault(revision_id, {})
            if stage in times:
                return False
            times[stage] = at
            self._dirty = True
            self._prune_locked()
            return True

    def road(self, deployment_id: str, revision_id: str) -> Road | None:
        with self._lock:
            times = self._roads.get(deployment_id, {}).get(revision_id)
            return Road(deployment_id, revision_id, dict(times)) if times is not None else None

    def roads(self, deployment_id: str) -> list[Road]:
        """Every kept revision of a deployment, oldest first (for `audit`)."""
        with self._lock:
            revisions = self._roads.get(deployment_id, {})
            found = [Road(deployment_id, r, dict(t)) for r, t in revisions.items()]
        return sorted(found, key=lambda road: _first(road.times))

    def forget(self, deployment_id: str) -> None:
        with self._lock:
            if self._roads.pop(deployment_id, None) is not None:
                self._dirty = True

    def save(self) -> bool:
        """Write the file if anything changed; True when written."""
        with self._lock:
            if not self._dirty:
                return False
            data = _encode(self._roads)
            self._dirty = False
        try:
            replace_atomically(self.path, data)
        except OSError:
            with self._lock:
                self._dirty = True  # try again at the next save
            raise
        return True

    def _prune_locked(self) -> None:
        for revisions in self._roads.values():
            while len(revisions) > self._max_revisions:
                oldest = min(revisions, key=lambda r: _first(revisions[r]))
                del revisions[oldest]
        while len(self._roads) > self._max_deployments:
            del self._roads[next(iter(self._roads))]


def _first(times: Mapping[str, datetime]) -> datetime:
    return min(times.values(), default=datetime.min.replace(tzinfo=UTC))


def _encode(roads: Mapping[str, Mapping[str, Mapping[str, datetime]]]) -> bytes:
    doc = {
        "schema": SCHEMA_VERSION,
        "deployments": {
            dep: {rev: {s: iso(t) for s, t in times.items()} for rev, times in revisions.items()}
            for dep, revisions in roads.items()
        },
    }
    return (json.dumps(doc, separators=(",", ":"), ensure_ascii=True) + "\n").encode()


def _decode(doc: Any) -> dict[str, dict[str, dict[str, datetime]]]:
    source = "health road file"
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_VERSION:
        raise UntrustedInput(f"{source}: unknown schema")
    deployments = doc.get("deployments")
    if not isinstance(deployments, dict):
        raise UntrustedInput(f"{source}: `deployments` is not an object")
    out: dict[str, dict[str, dict[str, datetime]]] = {}
    for dep, revisions in deployments.items():
        if not isinstance(revisions, dict) or len(dep) > MAX_ID:
            raise UntrustedInput(f"{source}: deployment {dep[:MAX_ID]!r} is malformed")
        out[dep] = {}
        for rev, times in revisions.items():
            if not isinstance(times, dict) or len(rev) > MAX_ID:
                raise UntrustedInput(f"{source}: revision {rev[:MAX_ID]!r} is malformed")
            parsed: dict[str, datetime] = {}
            for stage, value in times.items():
                if stage not in STAGES:
                    raise UntrustedInput(f"{source}: unknown stage {stage[:32]!r}")
                when = parse_timestamp(value, field=stage, source=source)
                if when is not None:
                    parsed[stage] = when
            out[dep][rev] = parsed
    return out


def replace_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file 0600 whatever the umask, before a byte is written.
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    except OSError:
        pass
    finally:
        os.close(dir_fd)
