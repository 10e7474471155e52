"""Fixtures for the control plane tests: a real local control plane on loopback."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.config import ControlPlaneSettings
from bridge.controlplane.admin import NO_LISTENER, AdminClient, deployment_request
from bridge.controlplane.client import ControlPlaneClient
from bridge.localplane.server import RunningServer, start_in_thread
from bridge.redaction import Redacted


def make_settings(
    url: str, api_key: str, listener_id: str = NO_LISTENER, **overrides: Any
) -> ControlPlaneSettings:
    return ControlPlaneSettings(
        url=url,
        api_key_env="LANGSMITH_API_KEY",
        api_key=Redacted(api_key),
        listener_id=listener_id,
        **overrides,
    )


def deployment_body(
    name: str,
    listener_id: str,
    namespace: str = "agents",
    image: str = "registry.example.com/acme/agent:1.0.0",
    **extra: Any,
) -> dict[str, Any]:
    return deployment_request(name, listener_id, namespace, image, **extra)


@dataclass
class Plane:
    """A running local control plane and an admin client for it."""

    server: RunningServer
    db: Path
    api_key: str
    admin: AdminClient

    @property
    def url(self) -> str:
        return self.server.url

    def raw(self) -> httpx.Client:
        """A plain httpx client with the key, for asserting exact HTTP answers."""
        return httpx.Client(base_url=self.url, headers={"X-Api-Key": self.api_key}, timeout=5)

    def client(self, listener_id: str, **kwargs: Any) -> ControlPlaneClient:
        overrides = {k: kwargs.pop(k) for k in ("timeout", "tenant_id") if k in kwargs}
        return ControlPlaneClient.from_settings(
            make_settings(self.url, self.api_key, listener_id, **overrides), **kwargs
        )


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Plane]:
    api_key = "lsv2_pt_" + secrets.token_hex(16)
    db = tmp_path / "cp.db"
    server = start_in_thread(db=db, api_key=api_key)
    try:
        with AdminClient.from_settings(make_settings(server.url, api_key)) as admin:
            yield Plane(server, db, api_key, admin)
    finally:
        server.stop()
