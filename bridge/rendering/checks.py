"""What a deployment must satisfy before it is rendered: names, images, env
names, Secret keys and sizes that a cluster would reject or that would be
unsafe to write. Pure; raises InvalidDeployment naming the deployment, the
field and what is allowed. The renderer (bridge.rendering.rendering) calls
`check_deployment` first.
"""

from __future__ import annotations

import re

from bridge.errors import InvalidDeployment
from bridge.models import Deployment, ResourceSpec
from bridge.rendering import RenderContext
from bridge.rendering.naming import LABEL, MAX_NAME, NAMESPACE

# Names the control plane injects or rejects (reference/control-plane-api.md).
RESERVED_ENV = frozenset(
    """LANGCHAIN_TRACING_V2 LANGSMITH_TRACING_V2 LANGCHAIN_ENDPOINT LANGCHAIN_PROJECT
    LANGSMITH_PROJECT LANGSMITH_LANGGRAPH_GIT_REPO LANGGRAPH_GIT_REPO_PATH LANGCHAIN_API_KEY
    LANGSMITH_CONTROL_PLANE_API_KEY POSTGRES_URI POSTGRES_PASSWORD DATABASE_URI
    LANGSMITH_LANGGRAPH_GIT_REF LANGSMITH_LANGGRAPH_GIT_REF_SHA LANGGRAPH_AUTH_TYPE
    LANGSMITH_AUTH_ENDPOINT LANGSMITH_TENANT_ID LANGSMITH_AUTH_VERIFY_TENANT_ID
    LANGSMITH_HOST_PROJECT_ID LANGSMITH_HOST_PROJECT_NAME LANGSMITH_HOST_REVISION_ID LOG_JSON
    LOG_DICT_TRACEBACKS REDIS_URI LANGCHAIN_CALLBACKS_BACKGROUND DD_TRACE_PSYCOPG_ENABLED
    DD_TRACE_REDIS_ENABLED LANGSMITH_DEPLOYMENT_NAME LANGGRAPH_CLOUD_LICENSE_KEY
    N_JOBS_PER_WORKER""".split()
)


ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")


DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


# A docker reference: [registry[:port]/]path[:tag][@sha256:digest], path lowercase.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"


IMAGE = re.compile(
    r"^(?:(?P<registry>[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?)/)?"
    rf"(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)


# Sizes beyond these are typos, not intentions (a pod of 1000 cores exists nowhere).
MAX_CPU = 512.0


MAX_MEMORY_MB = 16 * 1024 * 1024


MAX_REPLICAS = 10_000


MAX_STORAGE_GI = 64 * 1024


def _fail(dep: Deployment, message: str, hint: str | None = None) -> InvalidDeployment:
    return InvalidDeployment(
        message, deployment_id=dep.id, deployment_name=dep.name, hint=hint or "fix it in LangSmith"
    )


def check_deployment(dep: Deployment, ctx: RenderContext, name: str) -> None:
    if not LABEL.match(name) or len(name) > MAX_NAME:
        raise _fail(dep, f"folder name {name!r} is not a DNS-1123 label of at most {MAX_NAME}")
    ns = dep.namespace
    if not ns:
        raise _fail(dep, "has no source_config.listener_config.k8s_namespace")
    if not NAMESPACE.match(ns) or len(ns) > 63:
        raise _fail(dep, f"namespace {ns!r} is not a valid Kubernetes namespace name")
    if ns not in ctx.listener.namespaces:
        raise _fail(
            dep,
            f"namespace {ns!r} is not one of the listener's namespaces "
            f"{sorted(ctx.listener.namespaces)}",
            hint="add it to the listener's k8s_namespaces, or move the deployment",
        )
    image = dep.image_uri
    if not image:
        raise _fail(dep, "has no source_revision_config.image_uri")
    if len(image) > 512 or not IMAGE.match(image):
        raise _fail(
            dep,
            f"image_uri {image!r} is not a valid image reference "
            "([registry/]repository[:tag][@sha256:digest], repository lowercase)",
        )
    seen: set[str] = set()
    for s in dep.secrets:
        _check_env_name(dep, s.name, "secrets")
        if s.name in seen:
            raise _fail(dep, f"secrets[] sets {s.name!r} twice")
        seen.add(s.name)
    for ref in dep.secret_references:
        _check_env_name(dep, ref.name, "secret_references")
        if ref.name in seen:
            raise _fail(dep, f"secret_references[] sets {ref.name!r}, which is already set")
        seen.add(ref.name)
        if not DNS_SUBDOMAIN.match(ref.secret_name) or len(ref.secret_name) > 253:
            raise _fail(dep, f"secret_references[{ref.name}].secret_name is not a Secret name")
        if not SECRET_KEY.match(ref.secret_key):
            raise _fail(dep, f"secret_references[{ref.name}].secret_key is not a valid key")
    _check_sizes(dep, dep.resource_spec)
    for field_name in ("service_account_name",):
        value = getattr(dep.resource_spec, field_name)
        if value is not None and (not DNS_SUBDOMAIN.match(value) or len(value) > 253):
            raise _fail(dep, f"resource_spec.{field_name} {value!r} is not a valid name")
    for secret_name in dep.resource_spec.image_pull_secrets:
        if not DNS_SUBDOMAIN.match(secret_name):
            raise _fail(
                dep, f"resource_spec.image_pull_secrets has an invalid name {secret_name!r}"
            )
    for kind, items in (
        ("init_containers", dep.resource_spec.init_containers),
        ("sidecars", dep.resource_spec.sidecars),
        ("volumes", dep.resource_spec.volumes),
    ):
        names = [str(i.get("name", "")) for i in items]
        for n in names:
            if not LABEL.match(n) and not NAMESPACE.match(n):
                raise _fail(dep, f"resource_spec.{kind} has an invalid name {n!r}")
        if len(set(names)) != len(names):
            raise _fail(dep, f"resource_spec.{kind} has duplicate names")
    for c in (*dep.resource_spec.init_containers, *dep.resource_spec.sidecars):
        if not isinstance(c.get("image"), str) or not c.get("image"):
            raise _fail(dep, f"container {c.get('name')!r} in resource_spec has no image")
        if c.get("name") in ("api-server", "queue-worker"):
            raise _fail(dep, f"container name {c.get('name')!r} is reserved for the Agent Server")
    for key in (*dep.resource_spec.labels, *dep.resource_spec.annotations):
        if not re.match(
            r"^([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$", key
        ):
            raise _fail(dep, f"resource_spec label/annotation key {key!r} is not valid")
    for value in dep.resource_spec.labels.values():
        if not isinstance(value, str) or not re.match(
            r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$", value
        ):
            raise _fail(dep, f"resource_spec.labels value {value!r} is not a valid label value")


def _check_env_name(dep: Deployment, env: str, where: str) -> None:
    if not ENV_NAME.match(env):
        raise _fail(dep, f"{where}[] name {env!r} is not a valid environment variable name")
    if env in RESERVED_ENV:
        raise _fail(
            dep,
            f"{where}[] sets {env!r}, which the platform sets itself",
            hint="remove it from the deployment's secrets in LangSmith",
        )


def _check_sizes(dep: Deployment, spec: ResourceSpec) -> None:
    for attr in (
        "min_scale",
        "max_scale",
        "queue_min_scale",
        "queue_max_scale",
    ):
        v = getattr(spec, attr)
        if v is not None and not 0 <= v <= MAX_REPLICAS:
            raise _fail(dep, f"resource_spec.{attr} = {v} is out of range 0..{MAX_REPLICAS}")
    for lo, hi in (("min_scale", "max_scale"), ("queue_min_scale", "queue_max_scale")):
        a, b = getattr(spec, lo), getattr(spec, hi)
        if a is not None and b is not None and b < a:
            raise _fail(dep, f"resource_spec.{hi} ({b}) is less than {lo} ({a})")
    for attr in ("cpu", "cpu_limit", "queue_cpu", "queue_cpu_limit", "db_cpu", "db_cpu_limit"):
        v = getattr(spec, attr)
        if v is not None and not 0 < v <= MAX_CPU:
            raise _fail(dep, f"resource_spec.{attr} = {v:g} is out of range (0, {MAX_CPU:g}] cores")
    for attr in ("redis_cpu", "redis_cpu_limit"):
        v = getattr(spec, attr)
        if v is not None and not 0 < v <= MAX_CPU:
            raise _fail(dep, f"resource_spec.{attr} = {v:g} is out of range (0, {MAX_CPU:g}] cores")
    for attr in (
        "memory_mb",
        "memory_limit_mb",
        "queue_memory_mb",
        "queue_memory_limit_mb",
        "db_memory_mb",
        "db_memory_limit_mb",
        "redis_memory_mb",
        "redis_memory_limit_mb",
    ):
        v = getattr(spec, attr)
        if v is not None and not 0 < v <= MAX_MEMORY_MB:
            raise _fail(dep, f"resource_spec.{attr} = {v} is out of range (0, {MAX_MEMORY_MB}] MiB")
    if spec.db_storage_gi is not None and not 0 < spec.db_storage_gi <= MAX_STORAGE_GI:
        raise _fail(dep, f"resource_spec.db_storage_gi = {spec.db_storage_gi} is out of range")
    if spec.db_max_connections is not None and not 1 <= spec.db_max_connections <= 100_000:
        raise _fail(
            dep, f"resource_spec.db_max_connections = {spec.db_max_connections} is out of range"
        )
    for req, lim in (
        ("cpu", "cpu_limit"),
        ("memory_mb", "memory_limit_mb"),
        ("queue_cpu", "queue_cpu_limit"),
        ("queue_memory_mb", "queue_memory_limit_mb"),
        ("db_cpu", "db_cpu_limit"),
        ("db_memory_mb", "db_memory_limit_mb"),
        ("redis_cpu", "redis_cpu_limit"),
        ("redis_memory_mb", "redis_memory_limit_mb"),
    ):
        a, b = getattr(spec, req), getattr(spec, lim)
        if a is not None and b is not None and b < a:
            raise _fail(dep, f"resource_spec.{lim} ({b:g}) is less than {req} ({a:g})")
