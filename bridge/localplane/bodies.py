"""The request bodies the local control plane accepts, as pydantic models: their
validation errors become FastAPI's 422 shape, as the real control plane's do.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# Env var names the real control plane injects itself and so rejects in
# `secrets` (from the CLI's RESERVED_ENV_VARS, minus those self-hosted allows).
RESERVED_ENV_VARS = frozenset(
    {
        "LANGCHAIN_TRACING_V2",
        "LANGSMITH_TRACING_V2",
        "LANGCHAIN_ENDPOINT",
        "LANGCHAIN_PROJECT",
        "LANGSMITH_PROJECT",
        "LANGSMITH_LANGGRAPH_GIT_REPO",
        "LANGGRAPH_GIT_REPO_PATH",
        "LANGCHAIN_API_KEY",
        "LANGSMITH_CONTROL_PLANE_API_KEY",
        "POSTGRES_URI",
        "POSTGRES_PASSWORD",
        "DATABASE_URI",
        "LANGSMITH_LANGGRAPH_GIT_REF",
        "LANGSMITH_LANGGRAPH_GIT_REF_SHA",
        "LANGGRAPH_AUTH_TYPE",
        "LANGSMITH_AUTH_ENDPOINT",
        "LANGSMITH_TENANT_ID",
        "LANGSMITH_AUTH_VERIFY_TENANT_ID",
        "LANGSMITH_HOST_PROJECT_ID",
        "LANGSMITH_HOST_PROJECT_NAME",
        "LANGSMITH_HOST_REVISION_ID",
        "LOG_JSON",
        "LOG_DICT_TRACEBACKS",
        "REDIS_URI",
        "LANGCHAIN_CALLBACKS_BACKGROUND",
        "DD_TRACE_PSYCOPG_ENABLED",
        "DD_TRACE_REDIS_ENABLED",
        "LANGSMITH_DEPLOYMENT_NAME",
        "LANGGRAPH_CLOUD_LICENSE_KEY",
    }
)


NonNegInt = Annotated[int, Field(ge=0)]
Cores = Annotated[float, Field(ge=0)]


Source = Literal[
    "github", "external_docker", "internal_docker", "internal_source", "internal_template"
]


# --- documents --------------------------------------------------------------


class _Model(BaseModel):
    # The real API ignores unknown fields; so do we.
    model_config = ConfigDict(extra="ignore")


class _Open(BaseModel):
    # Kubernetes objects inside resource_spec: a few required keys, the rest passed through.
    model_config = ConfigDict(extra="allow")


class ListenerComputeConfig(_Model):
    k8s_namespaces: list[str] | None = None


class ListenerCreateRequest(_Model):
    compute_type: Literal["k8s"]
    compute_id: str = Field(min_length=1)
    compute_config: ListenerComputeConfig
    version: str | None = None


class ListenerPatchRequest(_Model):
    version: str | None = None
    compute_config: ListenerComputeConfig | None = None


class ListenerConfig(_Model):
    k8s_namespace: str | None = None


class LocalObjectReference(_Open):
    name: str


class Volume(_Open):
    name: str


class VolumeMount(_Open):
    name: str
    mountPath: str  # the Kubernetes field name


class Container(_Open):
    name: str
    image: str


class ResourceSpec(_Model):
    min_scale: NonNegInt | None = None
    max_scale: NonNegInt | None = None
    cpu: Cores | None = None
    cpu_limit: Cores | None = None
    memory_mb: NonNegInt | None = None
    memory_limit_mb: NonNegInt | None = None
    queue_min_scale: NonNegInt | None = None
    queue_max_scale: NonNegInt | None = None
    queue_cpu: Cores | None = None
    queue_cpu_limit: Cores | None = None
    queue_memory_mb: NonNegInt | None = None
    queue_memory_limit_mb: NonNegInt | None = None
    orchestrator_cpu: Cores | None = None
    orchestrator_cpu_limit: Cores | None = None
    orchestrator_memory_mb: NonNegInt | None = None
    orchestrator_memory_limit_mb: NonNegInt | None = None
    orchestrator_min_scale: NonNegInt | None = None
    orchestrator_max_scale: NonNegInt | None = None
    redis_cpu: Cores | None = None
    redis_cpu_limit: Cores | None = None
    redis_memory_mb: NonNegInt | None = None
    redis_memory_limit_mb: NonNegInt | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    service_account_name: str | None = None
    image_pull_secrets: list[LocalObjectReference] | None = None
    volumes: list[Volume] | None = None
    volume_mounts: list[VolumeMount] | None = None
    init_containers: list[Container] | None = None
    sidecars: list[Container] | None = None
    db_cpu: Cores | None = None
    db_cpu_limit: Cores | None = None
    db_memory_mb: NonNegInt | None = None
    db_memory_limit_mb: NonNegInt | None = None
    db_storage_gi: NonNegInt | None = None
    db_max_connections: NonNegInt | None = None


class SourceConfigRequest(_Model):
    integration_id: uuid.UUID | None = None
    repo_url: str | None = None
    deployment_type: Literal["dev_free", "dev", "prod"] | None = None
    build_on_push: bool | None = None
    custom_url: str | None = None
    resource_spec: ResourceSpec | None = None
    listener_id: uuid.UUID | None = None
    listener_config: ListenerConfig | None = None
    install_command: str | None = None
    build_command: str | None = None


class SourceRevisionConfigRequest(_Model):
    repo_ref: str | None = None
    langgraph_config_path: str | None = None
    image_uri: str | None = None


class Secret(_Model):
    name: str = Field(min_length=1)
    value: str


class SecretReference(_Model):
    name: str = Field(min_length=1)
    secret_name: str = Field(min_length=1)
    secret_key: str = Field(min_length=1)


class DeploymentCreateRequest(_Model):
    name: str = Field(min_length=1)
    source: Source
    source_config: SourceConfigRequest
    source_revision_config: SourceRevisionConfigRequest
    secrets: list[Secret]
    secret_references: list[SecretReference] | None = None


class DeploymentPatchRequest(_Model):
    source_config: SourceConfigRequest | None = None
    source_revision_config: SourceRevisionConfigRequest | None = None
    secrets: list[Secret] | None = None
    secret_references: list[SecretReference] | None = None
