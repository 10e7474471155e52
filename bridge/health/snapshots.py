"""The observation store on disk, so that what the pushed sources said outlives the process.

Owns `health-observations.json` in the bridge's workdir, beside the road: the
ObservationStore's latest word per consumer object, written by `run` after
each cycle when it changed, read back by `run` at start (Flux tells again
only at its next interval, ten minutes by default) and by `status` from a
shell, which cannot receive webhooks itself and says how old the word is.

The file holds names, paths, commit shas and short reasons, never a token or
a body: created 0600 and replaced atomically (bridge.health.road), bounded
(MAX_FILE_BYTES, at most the store's own object cap). It is read as outside
input: every field checked, a damaged file ignored (the sources tell again),
never trusted in part.

Must not decide health nor read git.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bridge.health.applications import SHA, parse_timestamp
from bridge.health.assessing import iso
from bridge.health.folders import Scope
from bridge.health.metrics import SOURCES
from bridge.health.observations import MAX_OBJECTS
from bridge.health.road import replace_atomically
from bridge.health.rules import STATUSES, Observation
from bridge.untrusted import UntrustedInput, parse_json

log = logging.getLogger("bridge.health")

FILE_NAME = "health-observations.json"
SCHEMA_VERSION = 1
MAX_FILE_BYTES = 32 * 1024 * 1024  # 20,000 objects of ~1 KB, with room
_LIMITS = {"object": 600, "reason": 600, "repo": 1024, "branch": 255, "path": 1024}


@dataclass(frozen=True)
class Snapshot:
    saved_at: datetime | None
    observations: tuple[Observation, ...]


def encode(observations: Iterable[Observation], saved_at: datetime | None) -> bytes:
    doc = {
        "schema": SCHEMA_VERSION,
        "savedAt": iso(saved_at),
        "observations": [_encode_one(o) for o in observations][:MAX_OBJECTS],
    }
    return (json.dumps(doc, separators=(",", ":"), sort_keys=True) + "\n").encode()


def _encode_one(o: Observation) -> dict[str, Any]:
    scope = None
    if o.scope is not None:
        scope = {"repo": o.scope.repo, "branch": o.scope.branch, "path": o.scope.path}
    return {
        "source": o.source,
        "object": o.object,
        "scope": scope,
        "applied": o.applied,
        "status": o.status,
        "at": iso(o.at),
        "since": iso(o.since),
        "reason": o.reason,
        "healthChecked": o.health_checked,
    }


class SnapshotFile:
    """Writes the snapshot when its content changed; reads it back, checked."""

    def __init__(self, workdir: Path) -> None:
        self.path = Path(workdir) / FILE_NAME
        self._written: bytes | None = None  # observations last written, without the time

    def save(self, observations: Iterable[Observation], now: datetime) -> bool:
        kept = sorted(observations, key=lambda o: o.key)
        body = encode(kept, None)  # compared without the time it was saved
        if body == self._written:
            return False
        replace_atomically(self.path, encode(kept, now))
        self._written = body
        return True

    def load(self) -> Snapshot:
        """The snapshot, or an empty one when there is none or it is damaged."""
        try:
            with self.path.open("rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return Snapshot(None, ())
        except OSError as e:
            log.warning("health observations: cannot read %s (%s)", self.path, e.strerror)
            return Snapshot(None, ())
        try:
            return decode(parse_json(data, source=str(self.path), max_bytes=MAX_FILE_BYTES))
        except UntrustedInput as e:
            log.warning("health observations: %s; ignored, the sources tell again", e)
            return Snapshot(None, ())


def decode(doc: Any) -> Snapshot:
    where = "health observations file"
    if not isinstance(doc, Mapping) or doc.get("schema") != SCHEMA_VERSION:
        raise UntrustedInput(f"{where}: unknown schema")
    items = doc.get("observations")
    if not isinstance(items, list) or len(items) > MAX_OBJECTS:
        raise UntrustedInput(f"{where}: `observations` is not a list of at most {MAX_OBJECTS}")
    saved = parse_timestamp(doc.get("savedAt"), field="savedAt", source=where)
    return Snapshot(saved, tuple(_decode_one(item, where) for item in items))


def _text(node: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> str | None:
    value = node.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or len(value) > _LIMITS.get(key, 64):
        raise UntrustedInput(f"{where}: `{key}` is not a string of at most {_LIMITS.get(key, 64)}")
    return value


def _decode_one(item: Any, where: str) -> Observation:
    if not isinstance(item, Mapping):
        raise UntrustedInput(f"{where}: an observation is not an object")
    source = _text(item, "source", where, required=True)
    status = _text(item, "status", where, required=True)
    if source not in SOURCES or status not in STATUSES:
        raise UntrustedInput(f"{where}: unknown source or status")
    applied = _text(item, "applied", where)
    if applied is not None and not SHA.match(applied):
        raise UntrustedInput(f"{where}: `applied` is not a commit sha")
    scope = item.get("scope")
    parsed_scope = None
    if scope is not None:
        if not isinstance(scope, Mapping):
            raise UntrustedInput(f"{where}: `scope` is not an object")
        parsed_scope = Scope(
            repo=_text(scope, "repo", where),
            branch=_text(scope, "branch", where),
            path=_text(scope, "path", where),
        )
    at = parse_timestamp(item.get("at"), field="at", source=where)
    if at is None:
        raise UntrustedInput(f"{where}: an observation without `at`")
    checked = item.get("healthChecked", True)
    if not isinstance(checked, bool):
        raise UntrustedInput(f"{where}: `healthChecked` is not a boolean")
    return Observation(
        source=source,
        object=_text(item, "object", where, required=True) or "",
        scope=parsed_scope,
        applied=applied,
        status=status,  # checked against STATUSES above
        at=at,
        since=parse_timestamp(item.get("since"), field="since", source=where),
        reason=_text(item, "reason", where) or "",
        health_checked=checked,
    )
