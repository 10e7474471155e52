"""The routes of the local control plane (FastAPI): listeners, deployments and
revisions of the documented `/v2` subset, with the real one's validation,
status codes and `{"detail": ...}` bodies, over the SQLite store. The
`/_faults` routes exist only when the server is started for tests.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import FastAPI, HTTPException, Query, Response

from bridge.localplane.bodies import (
    RESERVED_ENV_VARS,
    DeploymentCreateRequest,
    DeploymentPatchRequest,
    ListenerCreateRequest,
    ListenerPatchRequest,
    ResourceSpec,
    Secret,
    SecretReference,
    SourceConfigRequest,
    SourceRevisionConfigRequest,
)
from bridge.localplane.faults import FaultBook, FaultsRequest
from bridge.localplane.store import Doc, DuplicateComputeId, Store

# The workspace every object of the local plane belongs to ([2026] `tenant_id`).
LOCAL_TENANT_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "urn:langsmith-gitops-bridge:local-tenant"))


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
    _listener_routes(api, store)
    _deployment_routes(api, store)
    _revision_routes(api, store)
    if faults is not None:
        _fault_routes(api, faults)
    return api


def _listener_routes(api: FastAPI, store: Store) -> None:
    """/v2/listeners: create, list, get, patch, delete."""

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


def _deployment_routes(api: FastAPI, store: Store) -> None:
    """/v2/deployments: create, list, get, patch, delete."""

    @api.post("/v2/deployments", status_code=201)
    def create_deployment(body: DeploymentCreateRequest) -> Doc:
        return _create_deployment(store, body)

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

    @api.get("/v2/deployments/{deployment_id}")
    def get_deployment(deployment_id: uuid.UUID) -> Doc:
        return _deployment(store, deployment_id)

    @api.patch("/v2/deployments/{deployment_id}")
    def patch_deployment(deployment_id: uuid.UUID, body: DeploymentPatchRequest) -> Doc:
        return _patch_deployment(store, _deployment(store, deployment_id), body)

    @api.delete("/v2/deployments/{deployment_id}", status_code=204)
    def delete_deployment(deployment_id: uuid.UUID) -> Response:
        if not store.delete_deployment(str(deployment_id)):
            raise _not_found("Deployment", deployment_id)
        return Response(status_code=204)


def _revision_routes(api: FastAPI, store: Store) -> None:
    """/v2/deployments/{id}/revisions: list, get, redeploy (a rollback)."""

    @api.get("/v2/deployments/{deployment_id}/revisions")
    def list_revisions(
        deployment_id: uuid.UUID,
        limit: Limit = 20,
        offset: Offset = 0,
        status: Annotated[str | None, Query()] = None,
    ) -> Doc:
        _deployment(store, deployment_id)
        statuses = [s.strip() for s in status.split(",") if s.strip()] if status else None
        resources = store.list_revisions(str(deployment_id), limit, offset, statuses)
        return {"resources": resources, "offset": offset + len(resources)}

    @api.get("/v2/deployments/{deployment_id}/revisions/{revision_id}")
    def get_revision(deployment_id: uuid.UUID, revision_id: uuid.UUID) -> Doc:
        _deployment(store, deployment_id)
        doc = store.get_revision(str(deployment_id), str(revision_id))
        if doc is None:
            raise _not_found("Revision", revision_id)
        return doc

    @api.post("/v2/deployments/{deployment_id}/revisions/{revision_id}/redeploy")
    def redeploy_revision(deployment_id: uuid.UUID, revision_id: uuid.UUID) -> Doc:
        """Roll back (or forward) to an earlier revision: a new revision with its config."""
        doc = _deployment(store, deployment_id)
        old = store.get_revision(str(deployment_id), str(revision_id))
        if old is None:
            raise _not_found("Revision", revision_id)
        image_uri = old["source_revision_config"]["image_uri"]
        doc["source_revision_config"] = _revision_config(image_uri)
        revision = _new_revision(doc, image_uri)
        doc["updated_at"] = _now()
        store.update_deployment(doc, revision)
        return doc


def _fault_routes(api: FastAPI, book: FaultBook) -> None:
    """/_faults: arm, read and clear fault rules (tests only)."""

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


def _deployment(store: Store, deployment_id: uuid.UUID) -> Doc:
    doc = store.get_deployment(str(deployment_id))
    if doc is None:
        raise _not_found("Deployment", deployment_id)
    return doc


def _create_deployment(store: Store, body: DeploymentCreateRequest) -> Doc:
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
        raise _bad("source_revision_config.image_uri is required for external_docker deployments.")
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


def _patch_deployment(store: Store, doc: Doc, body: DeploymentPatchRequest) -> Doc:
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
