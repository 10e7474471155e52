"""The admin side of the control plane API, for the demo, the tests and the
benchmarks: create listeners and deployments, patch, delete, redeploy a
revision. The bridge itself never calls these (it only reads).
"""

from __future__ import annotations

import logging
from typing import Any

from bridge.config import ControlPlaneSettings
from bridge.controlplane.client import MAX_PAGES, PAGE_SIZE, ControlPlaneClient
from bridge.errors import (
    ControlPlaneError,
)
from bridge.redaction import Redacted

log = logging.getLogger("bridge.controlplane")

NO_LISTENER = "00000000-0000-0000-0000-000000000000"


def deployment_request(
    name: str, listener_id: str, namespace: str, image: str, **extra: Any
) -> dict[str, Any]:
    """A `DeploymentCreateRequest` body for a hybrid/self-hosted (external_docker) deployment."""
    body: dict[str, Any] = {
        "name": name,
        "source": "external_docker",
        "source_config": {
            "listener_id": listener_id,
            "listener_config": {"k8s_namespace": namespace},
            "resource_spec": extra.pop("resource_spec", None),
        },
        "source_revision_config": {"image_uri": image},
        "secrets": extra.pop("secrets", []),
    }
    body.update(extra)
    return body


class AdminClient(ControlPlaneClient):
    """A client that creates and changes listeners and deployments (not the bridge's own)."""

    @classmethod
    def connect(cls, url: str, api_key: str, *, timeout: float = 10.0) -> AdminClient:
        """A client for the admin helpers (demo, tests): creates listeners and
        deployments, lists nothing of its own."""
        return cls.from_settings(
            ControlPlaneSettings(
                url=url,
                api_key_env="LANGSMITH_API_KEY",
                api_key=Redacted(api_key),
                listener_id=NO_LISTENER,
                timeout=timeout,
            )
        )

    def create_listener(self, compute_id: str, namespaces: list[str]) -> dict[str, Any]:
        body = {
            "compute_type": "k8s",
            "compute_id": compute_id,
            "compute_config": {"k8s_namespaces": list(namespaces)},
        }
        return self._admin("POST", "/v2/listeners", body=body)

    def get_listener(self, listener_id: str) -> dict[str, Any]:
        return self._admin("GET", f"/v2/listeners/{listener_id}")

    def create_deployment(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._admin("POST", "/v2/deployments", body=body)

    def get_deployment(self, deployment_id: str) -> dict[str, Any]:
        return self._admin("GET", f"/v2/deployments/{deployment_id}")

    def patch_deployment(self, deployment_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._admin("PATCH", f"/v2/deployments/{deployment_id}", body=body)

    def delete_deployment(self, deployment_id: str) -> None:
        self._admin("DELETE", f"/v2/deployments/{deployment_id}", want_body=False)

    def redeploy(self, deployment_id: str, revision_id: str) -> dict[str, Any]:
        """A new revision with the config of an earlier one (a rollback)."""
        return self._admin(
            "POST", f"/v2/deployments/{deployment_id}/revisions/{revision_id}/redeploy"
        )

    def list_revisions(self, deployment_id: str) -> list[dict[str, Any]]:
        """Every revision of a deployment, newest first."""
        revisions: list[dict[str, Any]] = []
        offset = 0
        for _ in range(MAX_PAGES):
            page = self._admin(
                "GET",
                f"/v2/deployments/{deployment_id}/revisions",
                params={"limit": PAGE_SIZE, "offset": offset},
            )
            resources = page.get("resources")
            if not isinstance(resources, list) or not all(isinstance(r, dict) for r in resources):
                raise self._error(
                    ControlPlaneError,
                    f"GET /v2/deployments/{deployment_id}/revisions: `resources` is not a "
                    "list of objects",
                )
            revisions.extend(resources)
            if len(resources) < PAGE_SIZE:
                break
            offset += len(resources)
        return revisions

    def _admin(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        want_body: bool = True,
    ) -> dict[str, Any]:
        reply = self._call(method, path, params, body=body, want_json=want_body)
        if reply.status >= 400:
            raise self._error(
                ControlPlaneError,
                f"{method} {reply.url}: HTTP {reply.status}"
                + (f": {reply.detail}" if reply.detail else ""),
                hint="the control plane rejected the request; fix it as the detail says",
            )
        if not want_body:
            return {}
        if not isinstance(reply.data, dict):
            raise self._error(
                ControlPlaneError, f"{method} {reply.url}: the answer is not a JSON object"
            )
        return reply.data
