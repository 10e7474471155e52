"""Render one Agent Server deployment as a self-contained Kustomize root.

`render_deployment` is pure: Deployment + RenderContext (+ the generated
Postgres password, when the bridge holds one) in, file name -> bytes out, plus
the Secrets as plans for a provider to encrypt. It raises `InvalidDeployment`
naming the deployment and the field for anything a cluster would reject or
that would be unsafe to write; the caller keeps every other deployment going.

What a revision touches: the image, revision id and env live only in
`agent-server.yaml` and `queue-worker.yaml`; Postgres and Redis files depend
only on their own sizes and the names, so a new revision never restarts them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

from bridge.formats import canonical_yaml
from bridge.models import Deployment, FrozenDict, ResourceSpec, SecretPlan, thaw
from bridge.redaction import Redacted
from bridge.rendering import RenderContext, edges
from bridge.rendering.checks import check_deployment
from bridge.rendering.edges import Sizes
from bridge.rendering.templates import (
    SYNC_WAVE,
    WAVE_APP,
    WAVE_DATA,
    WAVE_SECRETS,
    defaults,
    template,
    templates_digest,
)

MANAGED_BY = "langsmith-gitops-bridge"
DEPLOYMENT_ID_LABEL = "langsmith.com/deployment-id"
REVISION_ANNOTATION = "langsmith.com/revision-id"

ENV_FILE = "secret-env.yaml"
POSTGRES_FILE = "secret-postgres.yaml"


@dataclass(frozen=True)
class Rendered:
    files: dict[str, bytes]  # plain manifests + kustomization.yaml
    secrets: tuple[SecretPlan, ...] = field(default_factory=tuple)


# --- entry points ---------------------------------------------------------------


def input_fingerprint(dep: Deployment, ctx: RenderContext) -> bytes:
    """Every input of the render except secret values, as stable bytes.

    The reconciler keys this (with keyed digests of the secret values) to decide
    whether a deployment changed, without rendering it. The bytes are those of
    `json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)` for

        {"deployment": {...}, "listener": {...}, "cluster": ..., "provider": ...,
         "settings": repr(ctx.settings), "templates": templates_digest()}

    (digests stored in every repo depend on them: never change the spelling).
    It runs for every listed deployment on every cycle, so the part that only
    depends on the context is encoded once per context, not per deployment.
    """
    deployment = {
        "id": dep.id,
        "name": dep.name,
        "namespace": dep.namespace,
        "image": dep.image_uri,
        "revision": dep.revision_id,
        "customUrl": dep.custom_url,
        "secretNames": sorted(s.name for s in dep.secrets),
        "secretReferences": sorted(
            (r.name, r.secret_name, r.secret_key) for r in dep.secret_references
        ),
        "resourceSpec": _spec_json(dep.resource_spec),
    }
    head, tail = _context_json(ctx)
    return (head + _fingerprint_json(deployment) + tail).encode()


def _fingerprint_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


_last_context: tuple[RenderContext, tuple[str, str]] | None = None


def _context_json(ctx: RenderContext) -> tuple[str, str]:
    """The fingerprint's text before and after the deployment's part (keys sorted:
    cluster, deployment, listener, provider, settings, templates)."""
    global _last_context
    last = _last_context
    if last is not None and last[0] is ctx:  # a frozen context: one per target and cycle
        return last[1]
    head = '{"cluster":' + _fingerprint_json(ctx.cluster) + ',"deployment":'
    tail = (
        ',"listener":'
        + _fingerprint_json({"id": ctx.listener.id, "namespaces": sorted(ctx.listener.namespaces)})
        + ',"provider":'
        + _fingerprint_json(ctx.secrets_provider)
        + ',"settings":'
        + _fingerprint_json(repr(ctx.settings))
        + ',"templates":'
        + _fingerprint_json(templates_digest())
        + "}"
    )
    _last_context = (ctx, (head, tail))
    return head, tail


def render_deployment(
    dep: Deployment,
    ctx: RenderContext,
    *,
    name: str,
    postgres_password: Redacted | None = None,
) -> Rendered:
    """The files of `<cluster>/<namespace>/<name>/` for one deployment."""
    check_deployment(dep, ctx, name)
    r = _Renderer(dep, ctx, name, postgres_password)
    return r.render()


def render_namespace_kustomization(folders: list[str]) -> bytes:
    """`<cluster>/<namespace>/kustomization.yaml`: every deployment folder, sorted."""
    return canonical_yaml.dump_bytes(
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": sorted(folders),
        }
    )


# --- validation of the input ------------------------------------------------------


# --- rendering ----------------------------------------------------------------------


def cpu_quantity(cores: float) -> str:
    milli = round(cores * 1000)
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def memory_quantity(mb: int) -> str:
    return f"{int(mb)}Mi"


_PLAIN = frozenset({str, int, float, bool, type(None)})


# Every field of the spec, by name: the model has slots (10,000 deployments'
# specs held as instance dicts were ~12 MB), so `vars()` is not there to ask.
_SPEC_FIELDS = tuple(sorted(f.name for f in fields(ResourceSpec)))


def _spec_json(spec: ResourceSpec) -> dict[str, Any]:
    return {k: _json_field(getattr(spec, k)) for k in _SPEC_FIELDS}


def _json_field(value: Any) -> Any:
    # Type tests first: isinstance against the FrozenDict ABC costs ~2 us, and
    # this runs for ~40 fields of every listed deployment on every cycle.
    kind = type(value)
    if kind in _PLAIN:
        return value
    if not value and (kind is tuple or kind is FrozenDict):
        return [] if kind is tuple else {}
    return thaw(value) if isinstance(value, FrozenDict | tuple) else value


class _Renderer:
    def __init__(
        self, dep: Deployment, ctx: RenderContext, name: str, password: Redacted | None
    ) -> None:
        self.dep = dep
        self.ctx = ctx
        self.name = name
        self.ns = dep.namespace or ""
        self.spec = dep.resource_spec
        self.password = password
        self.d = defaults()
        user_env = {s.name for s in dep.secrets}
        # Bring-your-own data stores (self-hosted): the control plane provisions
        # none when these are set, and neither do we.
        self.own_postgres = "POSTGRES_URI_CUSTOM" not in user_env
        self.own_redis = "REDIS_URI_CUSTOM" not in user_env
        self.postgres_secret = ctx.settings.postgres_secret_name.format(name=name)

    # names
    @property
    def queue(self) -> str:
        return f"{self.name}-queue"

    @property
    def postgres(self) -> str:
        return f"{self.name}-postgres"

    @property
    def redis(self) -> str:
        return f"{self.name}-redis"

    def render(self) -> Rendered:
        files: dict[str, list[dict[str, Any]]] = {
            "agent-server.yaml": [self._agent_server(), self._service("agent-server", self.name)],
            "queue-worker.yaml": [self._queue_worker()],
        }
        if self.own_postgres:
            files["postgres.yaml"] = [self._postgres(), self._service("postgres", self.postgres)]
        if self.own_redis:
            files["redis.yaml"] = [self._redis(), self._service("redis", self.redis)]
        scaled = edges.autoscaling(self)
        if scaled:
            files["autoscaling.yaml"] = scaled
        route = edges.httproute(self)
        if route is not None:
            files["httproute.yaml"] = [route]
        pdbs = edges.pdbs(self)
        if pdbs:
            files["pdb.yaml"] = pdbs
        secrets = self._secret_plans()
        resources = sorted([*files, *(p.file for p in secrets)])
        out = {
            fname: canonical_yaml.dumps_all(docs).encode() for fname, docs in sorted(files.items())
        }
        out["kustomization.yaml"] = canonical_yaml.dump_bytes(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": resources,
            }
        )
        return Rendered(files=out, secrets=tuple(secrets))

    # -- metadata
    def labels(self, component: str | None = None) -> dict[str, str]:
        labels = {str(k): str(v) for k, v in self.spec.labels.items()}
        labels.update(
            {
                "app.kubernetes.io/managed-by": MANAGED_BY,
                "app.kubernetes.io/instance": self.name,
                "app.kubernetes.io/part-of": "langsmith-agent-server",
                DEPLOYMENT_ID_LABEL: self.dep.id,
            }
        )
        if component is not None:
            labels["app.kubernetes.io/name"] = component
        return labels

    def selector(self, component: str) -> dict[str, str]:
        return {"app.kubernetes.io/instance": self.name, "app.kubernetes.io/name": component}

    def metadata(
        self, name: str, component: str | None, wave: str, extra: dict[str, str] | None = None
    ) -> dict[str, Any]:
        annotations = {str(k): str(v) for k, v in self.spec.annotations.items()}
        annotations[SYNC_WAVE] = wave
        annotations.update(extra or {})
        return {
            "name": name,
            "namespace": self.ns,
            "labels": self.labels(component),
            "annotations": annotations,
        }

    def pod_metadata(self, component: str) -> dict[str, Any]:
        meta: dict[str, Any] = {"labels": {**self.labels(component), **self.selector(component)}}
        if self.spec.annotations:
            meta["annotations"] = {str(k): str(v) for k, v in self.spec.annotations.items()}
        return meta

    # -- sizes
    def app_sizes(self, queue: bool) -> Sizes:
        s, d = self.spec, self.d["agentServer"]
        factor = float(d["limitFactor"])
        cpu = s.cpu if s.cpu is not None else float(d["cpu"])
        mem = s.memory_mb if s.memory_mb is not None else int(d["memoryMb"])
        cpu_limit = s.cpu_limit if s.cpu_limit is not None else cpu * factor
        mem_limit = s.memory_limit_mb if s.memory_limit_mb is not None else int(mem * factor)
        lo = s.min_scale if s.min_scale is not None else int(d["replicas"])
        hi = s.max_scale if s.max_scale is not None else max(lo, int(d["replicas"]))
        if not queue:
            return Sizes(lo, hi, cpu, cpu_limit, mem, mem_limit)
        qcpu = s.queue_cpu if s.queue_cpu is not None else cpu
        qmem = s.queue_memory_mb if s.queue_memory_mb is not None else mem
        return Sizes(
            s.queue_min_scale if s.queue_min_scale is not None else lo,
            s.queue_max_scale if s.queue_max_scale is not None else max(hi, s.queue_min_scale or 0),
            qcpu,
            s.queue_cpu_limit if s.queue_cpu_limit is not None else qcpu * factor,
            qmem,
            s.queue_memory_limit_mb if s.queue_memory_limit_mb is not None else int(qmem * factor),
        )

    @staticmethod
    def resources(cpu: float, cpu_limit: float, mem: int, mem_limit: int) -> dict[str, Any]:
        return {
            "requests": {"cpu": cpu_quantity(cpu), "memory": memory_quantity(mem)},
            "limits": {"cpu": cpu_quantity(cpu_limit), "memory": memory_quantity(mem_limit)},
        }

    # -- env
    def platform_env(self, queue: bool) -> list[dict[str, Any]]:
        rs = self.ctx.settings
        user = {s.name for s in self.dep.secrets}
        env: list[dict[str, Any]] = [{"name": "PORT", "value": "8000"}]
        if self.own_postgres:
            for var in ("POSTGRES_URI", "DATABASE_URI"):
                env.append(
                    {
                        "name": var,
                        "valueFrom": {"secretKeyRef": {"name": self.postgres_secret, "key": var}},
                    }
                )
        if self.own_redis:
            env.append({"name": "REDIS_URI", "value": f"redis://{self.redis}:6379"})
        if "LANGSMITH_API_KEY" not in user:
            env.append(
                {
                    "name": "LANGSMITH_API_KEY",
                    "valueFrom": {
                        "secretKeyRef": {
                            "name": rs.api_key_secret.name,
                            "key": rs.api_key_secret.key,
                        }
                    },
                }
            )
        env.append(
            {
                "name": "LANGGRAPH_CLOUD_LICENSE_KEY",
                "valueFrom": {
                    "secretKeyRef": {
                        "name": rs.license_key_secret.name,
                        "key": rs.license_key_secret.key,
                        # Hybrid deployments license through LangSmith; only
                        # self-hosted needs the key, so its absence is not fatal.
                        "optional": True,
                    }
                },
            }
        )
        env.extend(
            [
                {"name": "LANGSMITH_DEPLOYMENT_NAME", "value": self.dep.name},
                {"name": "LANGSMITH_HOST_PROJECT_ID", "value": self.dep.id},
                {"name": "LANGSMITH_HOST_PROJECT_NAME", "value": self.dep.name},
                {"name": "LANGSMITH_HOST_REVISION_ID", "value": self.dep.revision_id or ""},
                # With separate queue workers the API server runs no background
                # jobs (as the standalone chart does).
                {"name": "N_JOBS_PER_WORKER", "value": str(rs.n_jobs_per_worker if queue else 0)},
            ]
        )
        for ref in sorted(self.dep.secret_references, key=lambda r: r.name):
            env.append(
                {
                    "name": ref.name,
                    "valueFrom": {"secretKeyRef": {"name": ref.secret_name, "key": ref.secret_key}},
                }
            )
        return env

    def pod_extras(self, pod: dict[str, Any], container: dict[str, Any]) -> None:
        s = self.spec
        if s.service_account_name:
            pod["serviceAccountName"] = s.service_account_name
        else:
            # The Agent Server does not talk to the Kubernetes API.
            pod["automountServiceAccountToken"] = False
        if s.image_pull_secrets:
            pod["imagePullSecrets"] = [{"name": n} for n in s.image_pull_secrets]
        if s.volumes:
            pod["volumes"] = [thaw(v) for v in s.volumes]
        if s.volume_mounts:
            container["volumeMounts"] = [thaw(v) for v in s.volume_mounts]
        if s.init_containers:
            pod["initContainers"] = [thaw(c) for c in s.init_containers]
        if s.sidecars:
            pod["containers"].extend(thaw(c) for c in s.sidecars)
        if self.dep.secrets:
            container["envFrom"] = [{"secretRef": {"name": f"{self.name}-env"}}]

    # -- workloads
    def _app(self, rel: str, component: str, name: str, queue: bool) -> dict[str, Any]:
        obj = template(rel, "Deployment")
        sizes = self.app_sizes(queue)
        obj["metadata"] = self.metadata(
            name,
            component,
            WAVE_APP,
            {REVISION_ANNOTATION: self.dep.revision_id} if self.dep.revision_id else None,
        )
        spec = obj["spec"]
        if sizes.replicas_max > sizes.replicas_min:
            # KEDA's HPA owns the replica count; a value here would fight it on every sync.
            spec.pop("replicas", None)
        else:
            spec["replicas"] = sizes.replicas_min
        spec["selector"] = {"matchLabels": self.selector(component)}
        tpl = spec["template"]
        tpl["metadata"] = self.pod_metadata(component)
        pod = tpl["spec"]
        container = pod["containers"][0]
        container["image"] = self.dep.image_uri
        container["env"] = self.platform_env(queue)
        container["resources"] = self.resources(
            sizes.cpu, sizes.cpu_limit, sizes.memory_mb, sizes.memory_limit_mb
        )
        self.pod_extras(pod, container)
        return obj

    def _agent_server(self) -> dict[str, Any]:
        return self._app("base/agent-server/deployment.yaml", "agent-server", self.name, False)

    def _queue_worker(self) -> dict[str, Any]:
        return self._app("base/queue-worker/deployment.yaml", "queue-worker", self.queue, True)

    def _service(self, component: str, name: str) -> dict[str, Any]:
        obj = template(f"base/{component}/service.yaml", "Service")
        wave = WAVE_APP if component == "agent-server" else WAVE_DATA
        obj["metadata"] = self.metadata(name, component, wave)
        obj["spec"]["selector"] = self.selector(component)
        return obj

    def _postgres(self) -> dict[str, Any]:
        s, d = self.spec, self.d["postgres"]
        obj = template("base/postgres/statefulset.yaml", "StatefulSet")
        obj["metadata"] = self.metadata(self.postgres, "postgres", WAVE_DATA)
        spec = obj["spec"]
        spec["serviceName"] = self.postgres
        spec["selector"] = {"matchLabels": self.selector("postgres")}
        spec["template"]["metadata"] = self.pod_metadata("postgres")
        container = spec["template"]["spec"]["containers"][0]
        max_conn = s.db_max_connections or int(d["maxConnections"])
        container["args"] = ["postgres", "-c", f"max_connections={max_conn}"]
        for env in container["env"]:
            if env["name"] == "POSTGRES_PASSWORD":
                env["valueFrom"]["secretKeyRef"]["name"] = self.postgres_secret
        cpu = s.db_cpu if s.db_cpu is not None else float(d["cpu"])
        mem = s.db_memory_mb if s.db_memory_mb is not None else int(d["memoryMb"])
        factor = float(d["limitFactor"])
        container["resources"] = self.resources(
            cpu,
            s.db_cpu_limit if s.db_cpu_limit is not None else cpu * factor,
            mem,
            s.db_memory_limit_mb if s.db_memory_limit_mb is not None else int(mem * factor),
        )
        claim = spec["volumeClaimTemplates"][0]
        claim["metadata"]["labels"] = self.labels("postgres")
        storage = s.db_storage_gi or int(d["storageGi"])
        claim["spec"]["resources"]["requests"]["storage"] = f"{storage}Gi"
        return obj

    def _redis(self) -> dict[str, Any]:
        s, d = self.spec, self.d["redis"]
        obj = template("base/redis/deployment.yaml", "Deployment")
        obj["metadata"] = self.metadata(self.redis, "redis", WAVE_DATA)
        spec = obj["spec"]
        spec["selector"] = {"matchLabels": self.selector("redis")}
        spec["template"]["metadata"] = self.pod_metadata("redis")
        cpu = s.redis_cpu if s.redis_cpu is not None else float(d["cpu"])
        mem = s.redis_memory_mb if s.redis_memory_mb is not None else int(d["memoryMb"])
        spec["template"]["spec"]["containers"][0]["resources"] = self.resources(
            cpu,
            s.redis_cpu_limit
            if s.redis_cpu_limit is not None
            else cpu * float(d["cpuLimitFactor"]),
            mem,
            s.redis_memory_limit_mb
            if s.redis_memory_limit_mb is not None
            else int(mem * float(d["memoryLimitFactor"])),
        )
        return obj

    # -- optional components

    # -- secrets
    def _secret_plans(self) -> list[SecretPlan]:
        plans = []
        if self.dep.secrets:
            plans.append(
                self._plan(
                    ENV_FILE,
                    f"{self.name}-env",
                    tuple(
                        (s.name, s.value) for s in sorted(self.dep.secrets, key=lambda s: s.name)
                    ),
                )
            )
        if self.own_postgres and self.password is not None:
            pw = self.password.reveal()
            uri = Redacted(
                f"postgres://postgres:{pw}@{self.postgres}:5432/postgres?sslmode=disable"
            )
            plans.append(
                self._plan(
                    POSTGRES_FILE,
                    self.postgres_secret,
                    (
                        ("DATABASE_URI", uri),
                        ("POSTGRES_PASSWORD", self.password),
                        ("POSTGRES_URI", uri),
                    ),
                )
            )
        return plans

    def _plan(self, file: str, name: str, data: tuple[tuple[str, Redacted], ...]) -> SecretPlan:
        meta = self.metadata(name, "secrets", WAVE_SECRETS)
        return SecretPlan(
            file=file,
            name=name,
            namespace=self.ns,
            labels=FrozenDict(meta["labels"]),
            annotations=FrozenDict(meta["annotations"]),
            data=data,
        )
