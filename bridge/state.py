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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

STATE_FILE = ".gitops-bridge.state"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class SecretRecord:
    """A sealed Secret file: keyed digest of its plaintext and what it was sealed for."""

    digest: str
    sealed_for: str


@dataclass(frozen=True)
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
    def from_bytes(cls, data: bytes) -> DeploymentState:
        """Parse a state file; ValueError when it is not one we can trust."""
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"state file is not valid JSON: {e}") from None
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_VERSION:
            raise ValueError("state file has an unknown schema")
        try:
            dep = doc["deployment"]
            secrets = {
                str(name): SecretRecord(digest=str(rec["digest"]), sealed_for=str(rec["sealedFor"]))
                for name, rec in (doc.get("secrets") or {}).items()
            }
            return cls(
                deployment_id=str(dep["id"]),
                deployment_name=str(dep["name"]),
                namespace=str(dep["namespace"]),
                cluster=str(doc["cluster"]),
                listener_id=str(doc["listenerId"]),
                revision_id=dep.get("revisionId"),
                image=dep.get("image"),
                input_digest=str(doc["inputDigest"]),
                bridge_version=str(doc["bridgeVersion"]),
                files={str(k): str(v) for k, v in (doc.get("files") or {}).items()},
                secrets=secrets,
                escrow={str(k): str(v) for k, v in (doc.get("escrow") or {}).items()},
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"state file is missing a field: {e}") from None
