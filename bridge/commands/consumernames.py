"""The names the bridge gives the GitOps consumers' objects (Argo CD, Flux):
their namespaces, the part-of label, DNS-label names and a target resolved to
its cluster. Shared by `bootstrap` (which writes those objects) and the health
read-back (which finds them by these names), so neither imports the other.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import PurePosixPath

from bridge.config import Target

ARGOCD_NAMESPACE = "argocd"
FLUX_NAMESPACE = "flux-system"
PART_OF = "langsmith-gitops-bridge"


@dataclass(frozen=True)
class ResolvedTarget:
    """A configured target with its cluster name decided (config, else --cluster)."""

    target: Target
    index: int
    cluster: str

    @property
    def namespace(self) -> str:
        return self.target.namespace

    @property
    def ns_dir(self) -> str:
        """`<path>/<cluster>/<namespace>` inside the repo, no leading or trailing slash."""
        return str(PurePosixPath(self.target.path or ".", self.cluster, self.namespace))

    @property
    def object_name(self) -> str:
        """Name of the objects made for this target (a DNS label, at most 63 chars)."""
        return dns_name("langsmith", self.cluster, self.namespace)

    @property
    def file_stem(self) -> str:
        return dns_name(self.cluster, self.namespace)


def dns_name(*parts: str, limit: int = 63) -> str:
    """Parts joined by '-'; over `limit`, cut and suffixed with a short hash so it stays unique."""
    name = "-".join(p for p in parts if p)
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return name[: limit - len(digest) - 1].rstrip("-") + "-" + digest


def flux_deployment_name(cluster: str, namespace: str, folder: str) -> str:
    """The per-deployment Kustomization's name (bridge.commands.healthreading
    routes events of one without annotations by it)."""
    return dns_name("langsmith", cluster, namespace, folder)
