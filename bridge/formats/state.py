"""The bridge's record of what it committed, kept in the repo beside the manifests.

One file per deployment folder, `STATE_FILE`, canonical JSON under a name that
neither Argo CD (reads *.yaml, *.yml, *.json) nor Flux (builds YAML) applies.
It records the input digest that produced the folder, the revision and image,
the keyed digests of every encrypted secret, the bridge's escrow of generated
passwords (encrypted under the bridge key) and the git blob id of every other
file in the folder. A restart or a second replica reads it back and does
nothing when nothing changed; a file whose blob id differs was edited by
someone else (drift).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from bridge.untrusted import UntrustedInput, parse_json

STATE_FILE = ".gitops-bridge.state"
SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class SecretRecord:
    """A sealed Secret file: keyed digest of its plaintext and what it was sealed for."""

    digest: str
    sealed_for: str


@dataclass(frozen=True, slots=True)
class DeploymentState:
    deployment_id: str
    deployment_name: str
    namespace: str
    cluster: str
    listener_id: str
    revision_id: str | None
    image: str | None
    input_digest: str
    bridge_version: str
    files: Mapping[str, str] = field(default_factory=dict)  # file name -> git blob id
    secrets: Mapping[str, SecretRecord] = field(default_factory=dict)
    escrow: Mapping[str, str] = field(default_factory=dict)  # name -> bridge-key ciphertext
    # Derived once, when the state is made; a state is kept by blob id across
    # cycles, so these answer every later cycle's questions without a copy.
    # `files` without the state file itself: what the folder's other entries
    # should be, so that an unchanged deployment's drift check is one comparison
    # of two dicts (a view of `files` itself unless a hand-made file lists it).
    folder_files: Mapping[str, str] = field(init=False, repr=False, compare=False)
    # What the Secrets were sealed for (`sealedFor` of each), as a set.
    sealings: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Slots, not cached properties: 10,000 states each grew an instance
        # dict for two cached values (~10 MB, issue 24).
        files = self.files
        if STATE_FILE in files:
            files = {k: v for k, v in files.items() if k != STATE_FILE}
        object.__setattr__(self, "folder_files", MappingProxyType(files))
        sealings = frozenset(rec.sealed_for for rec in self.secrets.values())
        object.__setattr__(self, "sealings", _shared_sealings(sealings))

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "bridgeVersion": self.bridge_version,
            "cluster": self.cluster,
            "deployment": {
                "id": self.deployment_id,
                "image": self.image,
                "name": self.deployment_name,
                "namespace": self.namespace,
                "revisionId": self.revision_id,
            },
            "escrow": dict(sorted(self.escrow.items())),
            "files": dict(sorted(self.files.items())),
            "inputDigest": self.input_digest,
            "listenerId": self.listener_id,
            "secrets": {
                name: {"digest": rec.digest, "sealedFor": rec.sealed_for}
                for name, rec in sorted(self.secrets.items())
            },
        }
        return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=True) + "\n").encode()

    @classmethod
    def from_bytes_or_none(cls, data: bytes | None) -> DeploymentState | None:
        """`from_bytes`, or None for no file or one that does not parse: for readers
        that show what git holds (audit, health) and leave a bad file out, since the
        cycle is what reports it."""
        if data is None:
            return None
        try:
            return cls.from_bytes(data)
        except ValueError:
            return None

    @classmethod
    def from_bytes(cls, data: bytes) -> DeploymentState:
        """Parse a state file; UntrustedInput (a ValueError) naming the field when it
        is not one we can trust. Anyone who can push may have written it: every
        field is checked for type and shape, so that nothing in it can name a path
        outside its folder, forge a commit trailer or nest deep enough to crash."""
        # No depth walk (a third of the time): every value kept is type-checked below.
        doc = parse_json(data, source="state file", max_bytes=MAX_STATE_BYTES, max_depth=None)
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_VERSION:
            raise UntrustedInput("state file has an unknown schema")
        dep = _mapping(doc, "deployment")
        secrets = {
            _file_name("secrets", name): SecretRecord(
                digest=_text(rec, "digest", _DIGEST, where=f"secrets.{name}.digest"),
                sealed_for=_text(rec, "sealedFor", _LINE, where=f"secrets.{name}.sealedFor"),
            )
            for name, rec in _mapping(doc, "secrets", optional=True).items()
        }
        # The file map is most of a state file: one pass when all is well, and
        # the checks that name the culprit only when not.
        files: dict[str, str] = _mapping(doc, "files", optional=True)
        if not all(type(b) is str and _FILE.match(n) and _OID.match(b) for n, b in files.items()):
            for name, blob in files.items():
                _blob_id(_file_name("files", name), blob)
        # The same few file names in every folder: one string each, not one per
        # state (~5 MB over 10,000 states held between cycles).
        files = {sys.intern(name): blob for name, blob in files.items()}
        escrow = {
            _file_name("escrow", name): _value(f"escrow.{name}", token, _LINE)
            for name, token in _mapping(doc, "escrow", optional=True).items()
        }
        return cls(
            deployment_id=_text(dep, "id", _ID, where="deployment.id"),
            deployment_name=_text(dep, "name", _NAME, where="deployment.name"),
            namespace=_text(dep, "namespace", _NAME, where="deployment.namespace", empty=True),
            cluster=_text(doc, "cluster", _LINE),
            listener_id=_text(doc, "listenerId", _ID),
            revision_id=_text(dep, "revisionId", _ID, where="deployment.revisionId", null=True),
            image=_text(dep, "image", _LINE, where="deployment.image", null=True),
            input_digest=_text(doc, "inputDigest", _DIGEST),
            bridge_version=_text(doc, "bridgeVersion", _LINE),
            files=files,
            secrets=secrets,
            escrow=escrow,
        )


# What each field of a state file may hold. Ids and names end up in commit
# trailers and log lines, file names in repo paths: no control character, no
# path separator, nothing git or a checkout treats specially.
MAX_STATE_BYTES = 1024 * 1024  # a state file is ~2 KB; one per secret adds ~200 bytes
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
_DIGEST = re.compile(r"^[a-z0-9-]{1,32}:[0-9a-f]{16,128}$")
_LINE = re.compile(r"^[^\x00-\x1f\x7f]{1,4096}$")
# One path component: what the renderer names files (kustomization.yaml,
# secret-env.yaml, ...); never "", ".", "..", ".git", a "/" or a "\\".
_FILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$")
_OID = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")


# Every state of a fleet sealed for the same recipients holds the same set:
# one object for all (216 bytes each, ~2 MB at 10,000). Bounded: a change of
# recipients leaves the old sets to go.
_SEALINGS: dict[frozenset[str], frozenset[str]] = {}


def _shared_sealings(sealings: frozenset[str]) -> frozenset[str]:
    if len(_SEALINGS) > 64:
        _SEALINGS.clear()
    return _SEALINGS.setdefault(sealings, sealings)


def _mapping(doc: Any, key: str, *, optional: bool = False) -> dict[str, Any]:
    value = doc.get(key) if isinstance(doc, dict) else None
    if value is None and optional:
        return {}
    if not isinstance(value, dict):
        raise UntrustedInput(f"state file: {key!r} is {_kind(value)}; allowed: a mapping")
    return value


def _text(
    doc: Any,
    key: str,
    shape: re.Pattern[str],
    *,
    where: str | None = None,
    null: bool = False,
    empty: bool = False,
) -> Any:
    value = doc.get(key) if type(doc) is dict else None
    if type(value) is str and shape.match(value):
        return value  # the common case first: one state file per deployment is read
    if type(doc) is not dict:
        raise UntrustedInput(f"state file: {where or key!r} is inside {_kind(doc)}, not a mapping")
    if value is None and null:
        return None
    if value == "" and empty:
        return ""
    return _value(where or key, value, shape)


def _value(where: str, value: Any, shape: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not shape.match(value):
        shown = repr(value)[:80] if isinstance(value, str) else _kind(value)
        raise UntrustedInput(f"state file: {where!r} is {shown}; not what the bridge writes there")
    return value


def _file_name(where: str, name: str) -> str:
    if not _FILE.match(name):
        raise UntrustedInput(
            f"state file: {where} names {name[:80]!r}, which is not a safe file name "
            "(one path component of letters, digits, '.', '_' and '-')"
        )
    return name


def _blob_id(name: str, blob: Any) -> str:
    return _value(f"files.{name}", blob, _OID)


def _kind(value: Any) -> str:
    return "missing" if value is None else type(value).__name__
