"""Argo CD Applications as the health rules read them, parsed from outside JSON.

Owns the shape: `parse_application` takes one Application (from the API's
list, its stream, or the notifications template's body) and keeps only what
the rules need, checking every type on the way; `parse_stream_line` takes one
line of `GET /api/v1/stream/applications`. Anything malformed is an
UntrustedInput naming the field, never a KeyError or TypeError.

Pure: no I/O, no clock. Must not decide health (bridge.health.rules does).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bridge.health.folders import Scope, normal_branch, normal_path, normal_repo
from bridge.untrusted import UntrustedInput, parse_json

SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")  # SHA-1 or SHA-256 object names
MAX_TEXT = 512  # characters of a message or reason kept (they end up in `status`)
MAX_ITEMS = 256  # conditions, sources, history entries looked at per Application
STREAM_TYPES = ("ADDED", "MODIFIED", "DELETED")


@dataclass(frozen=True)
class AppSource:
    repo_url: str
    path: str | None
    target_revision: str | None

    def scope(self) -> Scope | None:
        """The folder this source applies, or None when it names none the bridge
        writes (no path: a Helm chart; `HEAD` or no targetRevision: the branch
        is not said, and guessing it could credit another target's branch)."""
        branch = normal_branch(self.target_revision)
        if self.path is None or branch is None:
            return None
        return Scope(repo=normal_repo(self.repo_url), branch=branch, path=normal_path(self.path))


@dataclass(frozen=True)
class Application:
    name: str
    namespace: str
    sources: tuple[AppSource, ...]
    sync_status: str | None = None  # Synced, OutOfSync, Unknown
    sync_revisions: tuple[str | None, ...] = ()  # per source, as `sources`
    health_status: str | None = None
    health_since: datetime | None = None
    health_message: str = ""
    operation_phase: str | None = None
    operation_started: datetime | None = None
    operation_finished: datetime | None = None
    operation_revisions: tuple[str | None, ...] = ()
    reconciled_at: datetime | None = None
    conditions: tuple[tuple[str, str], ...] = ()  # (type, message)
    last_deployed: tuple[str | None, ...] = ()  # history's last revision(s), per source

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def parse_timestamp(value: Any, *, field: str, source: str) -> datetime | None:
    """RFC 3339 (`2024-03-05T07:33:04Z`, fractions and offsets too) -> aware UTC."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 40:
        raise UntrustedInput(f"{source}: `{field}` is not a timestamp")
    try:
        when = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise UntrustedInput(f"{source}: `{field}` is not an RFC 3339 timestamp") from None
    if when.tzinfo is None:
        raise UntrustedInput(f"{source}: `{field}` has no time zone")
    return when.astimezone(UTC)


def _obj(value: Any, field: str, source: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UntrustedInput(f"{source}: `{field}` is not an object")
    return value


def _list(value: Any, field: str, source: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise UntrustedInput(f"{source}: `{field}` is not a list")
    return value[:MAX_ITEMS]


def _str(value: Any, field: str, source: str, *, limit: int = MAX_TEXT) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise UntrustedInput(f"{source}: `{field}` is not a string")
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _sha(value: Any, field: str, source: str) -> str | None:
    """A commit sha, lower case; None for anything else (`rev1`, a tag, empty):
    a revision that is not a commit cannot be compared with the bridge's."""
    text = _str(value, field, source, limit=128)
    if text is None:
        return None
    text = text.strip().lower()
    return text if SHA.match(text) else None


def parse_application(raw: Any, *, source: str = "Argo CD") -> Application:
    """The parts of an Application (JSON, already parsed) that health needs."""
    app = _obj(raw, "application", source)
    meta = _obj(app.get("metadata"), "metadata", source)
    name = _str(meta.get("name"), "metadata.name", source, limit=253)
    if not name:
        raise UntrustedInput(f"{source}: an Application without `metadata.name`")
    where = f"{source}: Application {name!r}"
    namespace = _str(meta.get("namespace"), "metadata.namespace", where, limit=63) or ""
    spec = _obj(app.get("spec"), "spec", where)
    sources = _sources(spec, where)
    status = _obj(app.get("status"), "status", where)
    sync = _obj(status.get("sync"), "status.sync", where)
    health = _obj(status.get("health"), "status.health", where)
    op = _obj(status.get("operationState"), "status.operationState", where)
    result = _obj(op.get("syncResult"), "status.operationState.syncResult", where)
    return Application(
        name=name,
        namespace=namespace,
        sources=sources,
        sync_status=_str(sync.get("status"), "status.sync.status", where, limit=32),
        sync_revisions=_revisions(sync, "status.sync", len(sources), where),
        health_status=_str(health.get("status"), "status.health.status", where, limit=32),
        health_since=parse_timestamp(
            health.get("lastTransitionTime"), field="status.health.lastTransitionTime", source=where
        ),
        health_message=_str(health.get("message"), "status.health.message", where) or "",
        operation_phase=_str(op.get("phase"), "status.operationState.phase", where, limit=32),
        operation_started=parse_timestamp(
            op.get("startedAt"), field="status.operationState.startedAt", source=where
        ),
        operation_finished=parse_timestamp(
            op.get("finishedAt"), field="status.operationState.finishedAt", source=where
        ),
        operation_revisions=_revisions(
            result, "status.operationState.syncResult", len(sources), where
        ),
        reconciled_at=parse_timestamp(
            status.get("reconciledAt"), field="status.reconciledAt", source=where
        ),
        conditions=_conditions(status, where),
        last_deployed=_last_deployed(status, len(sources), where),
    )


def _sources(spec: Mapping[str, Any], where: str) -> tuple[AppSource, ...]:
    # `source` (one) or `sources` (several, Argo CD >= 2.6); a revision list
    # (`revisions`) then runs parallel to `sources`.
    raw: list[Any] = []
    if spec.get("sources"):
        raw = _list(spec.get("sources"), "spec.sources", where)
    elif spec.get("source") is not None:
        raw = [spec.get("source")]
    out = []
    for index, item in enumerate(raw):
        field = f"spec.sources[{index}]" if spec.get("sources") else "spec.source"
        node = _obj(item, field, where)
        out.append(
            AppSource(
                repo_url=_str(node.get("repoURL"), f"{field}.repoURL", where) or "",
                path=_str(node.get("path"), f"{field}.path", where),
                target_revision=_str(
                    node.get("targetRevision"), f"{field}.targetRevision", where, limit=255
                ),
            )
        )
    return tuple(out)


def _revisions(
    node: Mapping[str, Any], field: str, count: int, where: str
) -> tuple[str | None, ...]:
    if count > 1 or node.get("revisions"):
        listed = _list(node.get("revisions"), f"{field}.revisions", where)
        return tuple(_sha(r, f"{field}.revisions[]", where) for r in listed)
    return (_sha(node.get("revision"), f"{field}.revision", where),)


def _conditions(status: Mapping[str, Any], where: str) -> tuple[tuple[str, str], ...]:
    out = []
    for index, item in enumerate(_list(status.get("conditions"), "status.conditions", where)):
        node = _obj(item, f"status.conditions[{index}]", where)
        kind = _str(node.get("type"), f"status.conditions[{index}].type", where, limit=64) or ""
        message = _str(node.get("message"), f"status.conditions[{index}].message", where) or ""
        out.append((kind, message))
    return tuple(out)


def _last_deployed(status: Mapping[str, Any], count: int, where: str) -> tuple[str | None, ...]:
    history = status.get("history")
    if not isinstance(history, list) or not history:
        _list(history, "status.history", where)  # a non-list is malformed; empty is fine
        return ()
    # The last entry is the newest; only it is read, however long the list.
    last = _obj(history[-1], "status.history[-1]", where)
    return _revisions(last, "status.history[-1]", count, where)


@dataclass(frozen=True)
class StreamEvent:
    kind: str  # ADDED, MODIFIED, DELETED
    application: Application


class StreamError(Exception):
    """The stream said `{"error": …}`: the server gave up on this connection."""


def parse_stream_line(line: bytes, *, max_bytes: int) -> StreamEvent:
    """One NDJSON line of the application stream; UntrustedInput or StreamError."""
    doc = parse_json(line, source="Argo CD stream", max_bytes=max_bytes)
    if not isinstance(doc, Mapping):
        raise UntrustedInput("Argo CD stream: a line that is not a JSON object")
    if doc.get("error") is not None:
        error = _obj(doc.get("error"), "error", "Argo CD stream")
        message = _str(error.get("message"), "error.message", "Argo CD stream") or ""
        code = error.get("http_code")
        raise StreamError(f"HTTP {code}: {message}" if isinstance(code, int) else message)
    result = _obj(doc.get("result"), "result", "Argo CD stream")
    kind = result.get("type")
    if kind not in STREAM_TYPES:
        raise UntrustedInput(
            f"Argo CD stream: event type {str(kind)[:32]!r} is not one of {STREAM_TYPES}"
        )
    return StreamEvent(
        str(kind), parse_application(result.get("application"), source="Argo CD stream")
    )
