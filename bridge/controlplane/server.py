"""The local control plane: the documented `/v2` subset a listener and a user need.

Listeners, deployments (create, list, get, patch, delete) and revisions, with
the request validation, status codes and `{"detail": ...}` bodies of the real
LangSmith control plane (FastAPI, like the real one, so 422 bodies match).
It persists to SQLite (`store.py`) and checks `X-Api-Key`. The local plane
"deploys" instantly: every new revision is DEPLOYED and becomes the active one.

It must not grow features the real API lacks (there is no status write-back);
the only extra is fault injection under `/_faults` (`faults.py`), switched on by
`start_in_thread(faults=True)` for the reliability tests and never by `serve`.
This module must not import httpx (only the client does).
"""

from __future__ import annotations

import hmac
import http.client
import json
import secrets
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import uvicorn
from fastapi import FastAPI, HTTPException, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.controlplane.faults import FaultBook, FaultInjector, FaultsRequest
from bridge.controlplane.store import Doc, DuplicateComputeId, Store

# The workspace every object of the local plane belongs to ([2026] `tenant_id`).
LOCAL_TENANT_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "urn:langsmith-gitops-bridge:local-tenant"))

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

# --- request models (validation errors become FastAPI's 422 shape) ----------


class _Model(BaseModel):
    # The real API ignores unknown fields; so do we.
    model_config = ConfigDict(extra="ignore")


class _Open(BaseModel):
    # Kubernetes objects inside resource_spec: a few required keys, the rest passed through.
    model_config = ConfigDict(extra="allow")


NonNegInt = Annotated[int, Field(ge=0)]
Cores = Annotated[float, Field(ge=0)]


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


Source = Literal[
    "github", "external_docker", "internal_docker", "internal_source", "internal_template"
]


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


# --- documents --------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _not_found(kind: str, object_id: object) -> HTTPException:
    return HTTPException(status_code=404, detail=f"{kind} ID {object_id} not found.")


def _bad(detail: str) -> HTTPException:
    return HTTPException(status_code=400, detail=detail)


def _listener_doc(body: ListenerCreateRequest) -> Doc:
    now = _now()
    return {
        "id": str(uuid.uuid4()),
        "compute_type": body.compute_type,
        "compute_id": body.compute_id,
        "compute_config": {"k8s_namespaces": body.compute_config.k8s_namespaces},
        "version": body.version,
        "created_at": now,
        "updated_at": now,
    }


def _revision_doc(source: str, image_uri: str | None) -> Doc:
    now = _now()
    return {
        "id": str(uuid.uuid4()),
        "created_at": now,
        "updated_at": now,
        # The local plane has nothing to build or roll out: deployed at once.
        "status": "DEPLOYED",
        "source": source,
        "source_revision_config": _revision_config(image_uri),
    }


def _revision_config(image_uri: str | None) -> Doc:
    return {
        "repo_ref": None,
        "langgraph_config_path": None,
        "image_uri": image_uri,
        "repo_commit_sha": None,
    }


def _spec_doc(spec: ResourceSpec | None) -> Doc | None:
    return None if spec is None else spec.model_dump(mode="json")


def _secrets_doc(items: list[Secret]) -> list[Doc]:
    names = [s.name for s in items]
    for name in names:
        if names.count(name) > 1:
            raise _bad(f"Secret name '{name}' is given more than once.")
        if name in RESERVED_ENV_VARS:
            raise _bad(f"Secret name '{name}' is reserved and set by the control plane.")
    return [{"name": s.name, "value": s.value} for s in items]


def _references_doc(items: list[SecretReference] | None) -> list[Doc] | None:
    if items is None:
        return None
    return [r.model_dump() for r in items]


def _reject_github_fields(config: SourceConfigRequest) -> None:
    for key in ("integration_id", "repo_url", "deployment_type", "build_on_push"):
        if getattr(config, key) is not None:
            raise _bad(f"source_config.{key} applies only to github deployments.")


def _reject_github_revision_fields(config: SourceRevisionConfigRequest) -> None:
    for key in ("repo_ref", "langgraph_config_path"):
        if getattr(config, key) is not None:
            raise _bad(f"source_revision_config.{key} must be null for external_docker.")


def _new_revision(doc: Doc, image_uri: str | None) -> Doc:
    revision = _revision_doc(doc["source"], image_uri)
    doc["latest_revision_id"] = revision["id"]
    doc["active_revision_id"] = revision["id"]
    return revision


# --- the API ----------------------------------------------------------------

Limit = Annotated[int, Query(ge=1, le=100, description="Maximum number of resources to return.")]
Offset = Annotated[int, Query(ge=0, description="Pagination offset.")]


def _comma_uuids(text: str | None, where: str) -> list[str] | None:
    if text is None:
        return None
    values = [v.strip() for v in text.split(",") if v.strip()]
    for value in values:
        try:
            uuid.UUID(value)
        except ValueError:
            raise HTTPException(
                status_code=422,
                detail=[
                    {
                        "type": "uuid_parsing",
                        "loc": ["query", where],
                        "msg": f"Input should be a comma-separated list of UUIDs, got {value!r}",
                        "input": text,
                    }
                ],
            ) from None
    return values


def create_api(store: Store, faults: FaultBook | None = None) -> FastAPI:
    """The FastAPI app (no auth, no fault injection: see `create_app`)."""
    api = FastAPI(
        title="LangSmith Deployment Control Plane API (local)",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    # -- listeners

    @api.post("/v2/listeners", status_code=201)
    def create_listener(body: ListenerCreateRequest) -> Doc:
        doc = _listener_doc(body)
        try:
            store.insert_listener(doc)
        except DuplicateComputeId:
            raise HTTPException(
                status_code=409,
                detail=f"Listener for LangSmith workspace ID '{LOCAL_TENANT_ID}' and "
                f"compute ID '{body.compute_id}' already exists.",
            ) from None
        return doc

    @api.get("/v2/listeners")
    def list_listeners(limit: Limit = 20, offset: Offset = 0) -> Doc:
        resources = store.list_listeners(limit, offset)
        return {"resources": resources, "offset": offset + len(resources)}

    @api.get("/v2/listeners/{listener_id}")
    def get_listener(listener_id: uuid.UUID) -> Doc:
        doc = store.get_listener(str(listener_id))
        if doc is None:
            raise _not_found("Listener", listener_id)
        return doc

    @api.patch("/v2/listeners/{listener_id}")
    def patch_listener(listener_id: uuid.UUID, body: ListenerPatchRequest) -> Doc:
        doc = store.get_listener(str(listener_id))
        if doc is None:
            raise _not_found("Listener", listener_id)
        if body.version is not None:
            doc["version"] = body.version
        if body.compute_config is not None:
            doc["compute_config"] = {"k8s_namespaces": body.compute_config.k8s_namespaces}
        doc["updated_at"] = _now()
        store.update_listener(doc)
        return doc

    @api.delete("/v2/listeners/{listener_id}", status_code=204)
    def delete_listener(listener_id: uuid.UUID) -> Response:
        if not store.delete_listener(str(listener_id)):
            raise _not_found("Listener", listener_id)
        return Response(status_code=204)

    # -- deployments

    @api.post("/v2/deployments", status_code=201)
    def create_deployment(body: DeploymentCreateRequest) -> Doc:
        if body.source != "external_docker":
            raise _bad(
                f"Source '{body.source}' is not available on this control plane; "
                "hybrid and self-hosted deployments use 'external_docker'."
            )
        config, revision_config = body.source_config, body.source_revision_config
        _reject_github_fields(config)
        _reject_github_revision_fields(revision_config)
        if config.listener_id is None:
            raise _bad("source_config.listener_id is required for external_docker deployments.")
        listener = store.get_listener(str(config.listener_id))
        if listener is None:
            raise _bad(f"Listener ID {config.listener_id} not found.")
        namespace = config.listener_config.k8s_namespace if config.listener_config else None
        allowed = listener["compute_config"].get("k8s_namespaces") or []
        if namespace is None:
            raise _bad(
                "source_config.listener_config.k8s_namespace is required for "
                "external_docker deployments."
            )
        if namespace not in allowed:
            raise _bad(
                f"Namespace '{namespace}' is not one of the namespaces of listener "
                f"{config.listener_id}: {', '.join(allowed) or '(none)'}."
            )
        if not revision_config.image_uri:
            raise _bad(
                "source_revision_config.image_uri is required for external_docker deployments."
            )
        now = _now()
        doc: Doc = {
            "id": str(uuid.uuid4()),
            "tenant_id": LOCAL_TENANT_ID,
            "name": body.name,
            "source": body.source,
            "source_config": {
                "integration_id": None,
                "repo_url": None,
                "deployment_type": None,
                "build_on_push": None,
                "custom_url": config.custom_url,
                "resource_spec": _spec_doc(config.resource_spec),
                "listener_id": str(config.listener_id),
                "listener_config": {"k8s_namespace": namespace},
                "install_command": None,
                "build_command": None,
            },
            "source_revision_config": _revision_config(revision_config.image_uri),
            "secrets": _secrets_doc(body.secrets),
            "secret_references": _references_doc(body.secret_references),
            "created_at": now,
            "updated_at": now,
            "status": "READY",
            "latest_revision_id": None,
            "active_revision_id": None,
            "image_version": None,
        }
        revision = _new_revision(doc, revision_config.image_uri)
        store.insert_deployment(doc, revision)
        return doc

    @api.get("/v2/deployments")
    def list_deployments(
        limit: Limit = 20,
        offset: Offset = 0,
        name_contains: Annotated[str | None, Query()] = None,
        status: Annotated[str | None, Query()] = None,
        deployment_ids: Annotated[str | None, Query()] = None,
    ) -> Response:
        texts = store.list_deployment_texts(
            limit,
            offset,
            name_contains=name_contains,
            status=status,
            ids=_comma_uuids(deployment_ids, "deployment_ids"),
        )
        # The stored documents as they are: decoding and re-encoding 100 of
        # them (FastAPI's encoder) cost ~4 ms a page, 0.4 s per listing of 10,000.
        body = '{"resources":[' + ",".join(texts) + f'],"offset":{offset + len(texts)}}}'

        return Response(content=body.encode(), media_type="application/json")

    def _deployment(deployment_id: uuid.UUID) -> Doc:
        doc = store.get_deployment(str(deployment_id))
        if doc is None:
            raise _not_found("Deployment", deployment_id)
        return doc

    @api.get("/v2/deployments/{deployment_id}")
    def get_deployment(deployment_id: uuid.UUID) -> Doc:
        return _deployment(deployment_id)

    @api.patch("/v2/deployments/{deployment_id}")
    def patch_deployment(deployment_id: uuid.UUID, body: DeploymentPatchRequest) -> Doc:
        doc = _deployment(deployment_id)
        new_revision = False
        config = body.source_config
        if config is not None:
            _reject_github_fields(config)
            current = doc["source_config"]
            if config.listener_id is not None and str(config.listener_id) != current["listener_id"]:
                raise _bad("source_config.listener_id cannot be changed after creation.")
            wanted_ns = config.listener_config.k8s_namespace if config.listener_config else None
            if wanted_ns is not None and wanted_ns != current["listener_config"]["k8s_namespace"]:
                raise _bad(
                    "source_config.listener_config.k8s_namespace cannot be changed after creation."
                )
            if config.custom_url is not None:
                current["custom_url"] = config.custom_url
            if config.resource_spec is not None:
                # A non-null resource_spec replaces the stored one entirely.
                current["resource_spec"] = _spec_doc(config.resource_spec)
                new_revision = True
        image_uri = doc["source_revision_config"]["image_uri"]
        if body.source_revision_config is not None:
            _reject_github_revision_fields(body.source_revision_config)
            if body.source_revision_config.image_uri is not None:
                image_uri = body.source_revision_config.image_uri
                doc["source_revision_config"] = _revision_config(image_uri)
                new_revision = True
        if body.secrets is not None:
            doc["secrets"] = _secrets_doc(body.secrets)
            new_revision = True
        if body.secret_references is not None:
            doc["secret_references"] = _references_doc(body.secret_references)
            new_revision = True
        revision = _new_revision(doc, image_uri) if new_revision else None
        doc["updated_at"] = _now()
        store.update_deployment(doc, revision)
        return doc

    @api.delete("/v2/deployments/{deployment_id}", status_code=204)
    def delete_deployment(deployment_id: uuid.UUID) -> Response:
        if not store.delete_deployment(str(deployment_id)):
            raise _not_found("Deployment", deployment_id)
        return Response(status_code=204)

    # -- revisions

    @api.get("/v2/deployments/{deployment_id}/revisions")
    def list_revisions(
        deployment_id: uuid.UUID,
        limit: Limit = 20,
        offset: Offset = 0,
        status: Annotated[str | None, Query()] = None,
    ) -> Doc:
        _deployment(deployment_id)
        statuses = [s.strip() for s in status.split(",") if s.strip()] if status else None
        resources = store.list_revisions(str(deployment_id), limit, offset, statuses)
        return {"resources": resources, "offset": offset + len(resources)}

    @api.get("/v2/deployments/{deployment_id}/revisions/{revision_id}")
    def get_revision(deployment_id: uuid.UUID, revision_id: uuid.UUID) -> Doc:
        _deployment(deployment_id)
        doc = store.get_revision(str(deployment_id), str(revision_id))
        if doc is None:
            raise _not_found("Revision", revision_id)
        return doc

    @api.post("/v2/deployments/{deployment_id}/revisions/{revision_id}/redeploy")
    def redeploy_revision(deployment_id: uuid.UUID, revision_id: uuid.UUID) -> Doc:
        """Roll back (or forward) to an earlier revision: a new revision with its config."""
        doc = _deployment(deployment_id)
        old = store.get_revision(str(deployment_id), str(revision_id))
        if old is None:
            raise _not_found("Revision", revision_id)
        image_uri = old["source_revision_config"]["image_uri"]
        doc["source_revision_config"] = _revision_config(image_uri)
        revision = _new_revision(doc, image_uri)
        doc["updated_at"] = _now()
        store.update_deployment(doc, revision)
        return doc

    # -- fault injection (tests only)

    if faults is not None:
        book = faults

        def rules() -> Response:
            # ASCII JSON: a rule may carry a lone surrogate (a hostile value), which
            # FastAPI's own encoder (UTF-8) cannot write; its \u escape is valid JSON.
            text = json.dumps({"rules": book.snapshot()}, default=str)
            return Response(content=text.encode(), media_type="application/json")

        @api.post("/_faults")
        def set_faults(body: FaultsRequest) -> Response:
            book.set(body.rules)
            return rules()

        @api.get("/_faults")
        def get_faults() -> Response:
            return rules()

        @api.delete("/_faults", status_code=204)
        def clear_faults() -> Response:
            book.set([])
            return Response(status_code=204)

    return api


# --- ASGI layers: auth (fault injection: faults.py) ---------------------------


class ApiKeyGate:
    """401 `{"detail": "Invalid API key"}` unless `X-Api-Key` matches."""

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.key = api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.key is not None:
            given = next((v for k, v in scope["headers"] if k == b"x-api-key"), b"")
            if not hmac.compare_digest(given, self.key):
                response = JSONResponse({"detail": "Invalid API key"}, status_code=401)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(store: Store, api_key: str | None, *, faults: bool = False) -> ASGIApp:
    """The full ASGI app: fault injection (if enabled) outside the key check outside the API."""
    book = FaultBook() if faults else None
    app: ASGIApp = ApiKeyGate(create_api(store, book), api_key)
    if book is not None:
        app = FaultInjector(app, book)
    return app


# --- running it ----------------------------------------------------------------


def _config(app: ASGIApp, **kwargs: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http="h11",  # the `reset` fault relies on h11's transport handling
        ws="none",
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=3,
        **kwargs,
    )


def serve(host: str, port: int, db: Path, api_key: str | None) -> None:
    """Serve until interrupted. Without `api_key` a random one is made and printed."""
    if not api_key:
        api_key = "lsv2_local_" + secrets.token_urlsafe(24)
        print(f"no API key given; clients must send X-Api-Key: {api_key}", file=sys.stderr)
    store = Store(db)
    try:
        print(
            f"local control plane on http://{_netloc(host, port)} (database {db}); Ctrl-C to stop",
            file=sys.stderr,
        )
        uvicorn.Server(_config(create_app(store, api_key), host=host, port=port)).run()
    except KeyboardInterrupt:
        # uvicorn shuts down gracefully on Ctrl-C, then re-raises the signal: done.
        pass
    finally:
        store.close()


@dataclass
class RunningServer:
    """A local control plane served from a background thread."""

    url: str
    _server: uvicorn.Server
    _thread: threading.Thread
    _store: Store

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._store.close()


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def start_in_thread(
    db: Path,
    api_key: str | None,
    host: str = "127.0.0.1",
    port: int = 0,
    faults: bool = False,
) -> RunningServer:
    """Start on `host:port` (0: a free port) and return once it answers HTTP."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio only sets TCP_NODELAY on accepted sockets whose proto
    # says TCP; with proto 0 every answer waits ~40 ms on delayed ACKs (measured).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    actual_port = sock.getsockname()[1]
    store = Store(db)
    server = uvicorn.Server(_config(create_app(store, api_key, faults=faults), log_config=None))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="local-control-plane", daemon=True
    )
    thread.start()
    running = RunningServer(f"http://{_netloc(host, actual_port)}", server, thread, store)
    try:
        _wait_until_answering(server, thread, host, actual_port)
    except BaseException:
        running.stop()
        sock.close()
        raise
    return running


def _wait_until_answering(
    server: uvicorn.Server, thread: threading.Thread, host: str, port: int
) -> None:
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the local control plane stopped while starting")
        if time.monotonic() > deadline:
            raise RuntimeError("the local control plane did not start within 10 s")
        time.sleep(0.01)
    connection = http.client.HTTPConnection(host, port, timeout=5)
    try:
        # Any HTTP answer will do (401 without a key): it proves the loop serves.
        connection.request("GET", "/v2/listeners?limit=1")
        connection.getresponse().read()
    finally:
        connection.close()
