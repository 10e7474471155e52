"""Pure rendering: a control-plane Deployment in, a Kustomize root (file map) out.

No network, no git, no clock, no randomness. Secret *values* never become
bytes here: they leave as `SecretPlan`s, which `bridge.secrets` seals at the
edge. Imports neither httpx nor git.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bridge.config import RenderSettings
from bridge.models import Deployment, Listener
from bridge.redaction import Redacted


@dataclass(frozen=True)
class RenderContext:
    listener: Listener
    cluster: str
    settings: RenderSettings
    secrets_provider: str  # "sops" | "sealed-secrets" | "none"


@dataclass(frozen=True)
class SecretPlan:
    """A Secret the deployment needs, still in plaintext; sealed by bridge.secrets."""

    file: str  # file name inside the deployment folder, listed in kustomization.yaml
    name: str  # metadata.name of the Secret
    namespace: str
    data: Mapping[str, Redacted]  # becomes stringData
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RenderedDeployment:
    deployment: Deployment
    name: str  # the folder name (DNS-1123 label)
    folder: str  # "<cluster>/<namespace>/<name>", relative to the target path
    files: Mapping[str, bytes]  # every non-secret file of the folder, by file name
    secrets: tuple[SecretPlan, ...] = ()
