"""Flux notification-controller events, parsed from a verified webhook body.

Owns the Event shape a `generic-hmac` Provider posts (fields in the order
notification-controller writes them): `involvedObject {kind, namespace, name,
uid, apiVersion, resourceVersion}`, `severity`, `timestamp`, `message`,
`reason`, `metadata` (strings only, prefixes already stripped by Flux),
`reportingController`, `reportingInstance`; and Flux's revision strings,
`main@sha1:<40 hex>` and the older `main/<sha>`.

Pure. Must never see an unverified body: bridge.health.webhooks checks the
signature first and only then calls `parse_flux_event`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bridge.health.applications import MAX_TEXT, parse_timestamp
from bridge.untrusted import UntrustedInput

SEVERITIES = ("info", "error", "trace")
MAX_METADATA = 64  # keys; Flux sends a handful (revision, originRevision, token, ...)
_NEW_FORM = re.compile(r"^(?:(?P<ref>.+)@)?(?P<algo>sha1|sha256):(?P<hex>[0-9a-f]+)$")
_OLD_FORM = re.compile(r"^(?P<ref>.+)/(?P<hex>[0-9a-f]{40})$")
_LENGTH = {"sha1": 40, "sha256": 64}


@dataclass(frozen=True)
class FluxEvent:
    kind: str  # involvedObject.kind: Kustomization, GitRepository, ...
    namespace: str
    name: str
    severity: str
    timestamp: datetime
    reason: str
    message: str
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def revision(self) -> str | None:
        return self.metadata.get("revision")


def parse_revision(text: str | None) -> tuple[str | None, str] | None:
    """(`ref` or None, commit sha) of a Flux revision, or None for one that names
    no commit (an OCI digest, a bucket checksum, a tag alone).

    `main@sha1:<40 hex>` (Flux >= 2.0), `refs/heads/main@sha1:…`, `sha1:…`
    (a commit checkout), and the older `main/<40 hex>` that Flux still parses.
    """
    if not text or len(text) > 512:
        return None
    value = text.strip()
    new = _NEW_FORM.match(value)
    if new:
        if len(new["hex"]) != _LENGTH[new["algo"]]:
            return None
        return new["ref"], new["hex"]
    old = _OLD_FORM.match(value)
    if old:
        return old["ref"], old["hex"]
    return None


def _text(doc: Mapping[str, Any], key: str, *, required: bool, limit: int = MAX_TEXT) -> str:
    value = doc.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise UntrustedInput(f"Flux event: `{key}` is missing or not a string")
    return value if len(value) <= limit else value[: limit - 1] + "…"


def parse_flux_event(doc: Any) -> FluxEvent:
    """A FluxEvent from a parsed body; UntrustedInput naming the field otherwise."""
    if not isinstance(doc, Mapping):
        raise UntrustedInput("Flux event: the body is not a JSON object")
    involved = doc.get("involvedObject")
    if not isinstance(involved, Mapping):
        raise UntrustedInput("Flux event: `involvedObject` is missing or not an object")
    kind = _text(involved, "kind", required=True, limit=64)
    name = _text(involved, "name", required=True, limit=253)
    namespace = _text(involved, "namespace", required=False, limit=63)
    severity = _text(doc, "severity", required=True, limit=16)
    if severity not in SEVERITIES:
        raise UntrustedInput(f"Flux event: `severity` {severity!r} is not one of {SEVERITIES}")
    timestamp = parse_timestamp(doc.get("timestamp"), field="timestamp", source="Flux event")
    if timestamp is None:
        raise UntrustedInput("Flux event: `timestamp` is missing")
    raw_meta = doc.get("metadata")
    if raw_meta is None:
        raw_meta = {}
    if not isinstance(raw_meta, Mapping) or len(raw_meta) > MAX_METADATA:
        raise UntrustedInput(
            f"Flux event: `metadata` is not an object of at most {MAX_METADATA} keys"
        )
    metadata: dict[str, str] = {}
    for key, value in raw_meta.items():
        if not isinstance(value, str):
            raise UntrustedInput(f"Flux event: metadata `{str(key)[:64]}` is not a string")
        metadata[str(key)[:128]] = value[:MAX_TEXT]
    return FluxEvent(
        kind=kind,
        namespace=namespace,
        name=name,
        severity=severity,
        timestamp=timestamp,
        reason=_text(doc, "reason", required=False, limit=128),
        message=_text(doc, "message", required=False),
        metadata=metadata,
    )
