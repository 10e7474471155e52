"""The pure core: a control-plane Deployment in, the files of a Kustomize root out.

No network, no git, no clock, no randomness: the same inputs give the same
bytes. Secrets leave this package as `SecretPlan`s; a provider in
`bridge.secrets` turns them into ciphertext.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.config import RenderSettings
from bridge.models import Listener


@dataclass(frozen=True)
class RenderContext:
    """Everything besides the deployment that shapes its manifests."""

    listener: Listener
    cluster: str
    settings: RenderSettings
    secrets_provider: str = "none"  # sops | sealed-secrets | none


__all__ = ["RenderContext"]
