"""What points at an Agent Server from outside its pods: KEDA ScaledObjects,
the Gateway API HTTPRoute, PodDisruptionBudgets. Pure, like the rest of the
renderer; each function takes the deployment's renderer for names, labels and
sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from bridge.models import Deployment
from bridge.rendering import RenderContext
from bridge.rendering.templates import WAVE_EDGE, template


@dataclass(frozen=True)
class Sizes:
    replicas_min: int
    replicas_max: int
    cpu: float
    cpu_limit: float
    memory_mb: int
    memory_limit_mb: int


class _Renderer(Protocol):
    """What the edge objects need of a deployment's renderer (rendering._Renderer)."""

    dep: Deployment
    ctx: RenderContext
    name: str
    own_postgres: bool
    d: dict[str, Any]

    @property
    def queue(self) -> str: ...

    def app_sizes(self, queue: bool) -> Sizes: ...

    def metadata(
        self, name: str, component: str | None, wave: str, extra: dict[str, str] | None = None
    ) -> dict[str, Any]: ...

    def selector(self, component: str) -> dict[str, str]: ...


def scaled_object(
    r: _Renderer, name: str, target: str, component: str, sizes: Sizes, queue: bool
) -> dict[str, Any]:
    a = r.d["autoscaling"]
    obj = template("overlays/components/autoscaling/scaledobject.yaml", "ScaledObject")
    obj["metadata"] = r.metadata(name, component, WAVE_EDGE)
    spec = obj["spec"]
    spec["scaleTargetRef"]["name"] = target
    spec["minReplicaCount"] = sizes.replicas_min
    spec["maxReplicaCount"] = sizes.replicas_max
    spec["pollingInterval"] = int(a["pollingInterval"])
    spec["cooldownPeriod"] = int(a["cooldownPeriod"])
    spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"][
        "stabilizationWindowSeconds"
    ] = int(a["scaleDownStabilizationSeconds"])
    triggers: list[dict[str, Any]] = [
        {
            "type": "cpu",
            "metricType": "Utilization",
            "metadata": {"value": str(a["cpuUtilization"])},
        }
    ]
    if queue:
        jobs = str(r.ctx.settings.n_jobs_per_worker)
        triggers.append(
            {
                "type": "postgresql",
                "metadata": {
                    "connectionFromEnv": "POSTGRES_URI"
                    if r.own_postgres
                    else "POSTGRES_URI_CUSTOM",
                    "query": str(a["pendingRunsQuery"]),
                    "targetQueryValue": jobs,
                    "activationTargetQueryValue": jobs,
                },
            }
        )
    else:
        triggers.append(
            {
                "type": "memory",
                "metricType": "Utilization",
                "metadata": {"value": str(a["memoryUtilization"])},
            }
        )
    spec["triggers"] = triggers
    return obj


def autoscaling(r: _Renderer) -> list[dict[str, Any]]:
    out = []
    app = r.app_sizes(False)
    if app.replicas_max > app.replicas_min:
        out.append(scaled_object(r, r.name, r.name, "agent-server", app, False))
    queue = r.app_sizes(True)
    if queue.replicas_max > queue.replicas_min:
        out.append(scaled_object(r, r.queue, r.queue, "queue-worker", queue, True))
    return out


def httproute(r: _Renderer) -> dict[str, Any] | None:
    gw = r.ctx.settings.gateway
    if gw is None:
        return None
    obj = template("overlays/components/httproute/httproute.yaml", "HTTPRoute")
    obj["metadata"] = r.metadata(r.name, "agent-server", WAVE_EDGE)
    parent: dict[str, Any] = {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "name": gw.name,
        "namespace": gw.namespace,
    }
    if gw.section_name:
        parent["sectionName"] = gw.section_name
    host, path = gw.hostname.replace("{name}", r.name), gw.path_prefix or "/"
    if r.dep.custom_url:
        host, path = _split_url(r.dep.custom_url, host, path)
    spec = obj["spec"]
    spec["parentRefs"] = [parent]
    spec["hostnames"] = [host]
    rule = spec["rules"][0]
    rule["matches"] = [{"path": {"type": "PathPrefix", "value": path}}]
    rule["backendRefs"][0]["name"] = r.name
    return obj


def pdbs(r: _Renderer) -> list[dict[str, Any]]:
    out = []
    for component, name, sizes in (
        ("agent-server", r.name, r.app_sizes(False)),
        ("queue-worker", r.queue, r.app_sizes(True)),
    ):
        if sizes.replicas_min > 1:
            obj = template("overlays/components/pdb/pdb.yaml", "PodDisruptionBudget")
            obj["metadata"] = r.metadata(name, component, WAVE_EDGE)
            obj["spec"]["selector"] = {"matchLabels": r.selector(component)}
            out.append(obj)
    return out


def _split_url(url: str, default_host: str, default_path: str) -> tuple[str, str]:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url if "://" in url else f"https://{url}")
    except ValueError:
        return default_host, default_path
    host = (parts.hostname or default_host).lower()
    path = parts.path or default_path
    return host, path
