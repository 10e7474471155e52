"""The local control plane against the client and raw HTTP, on loopback.

Asserts the answers the real control plane documents: status codes, the
`{"detail": ...}` bodies, FastAPI's 422 shape, the list envelope, revisions.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.controlplane.admin import AdminClient
from bridge.controlplane.client import ControlPlaneClient
from bridge.errors import AuthRefused, ControlPlaneError, ListenerNotFound
from bridge.localplane.server import start_in_thread
from tests.controlplane.conftest import Plane, deployment_body, make_settings

DEPLOYMENT_FIELDS = {
    "id",
    "tenant_id",
    "name",
    "source",
    "source_config",
    "source_revision_config",
    "secrets",
    "secret_references",
    "created_at",
    "updated_at",
    "status",
    "latest_revision_id",
    "active_revision_id",
    "image_version",
}
SOURCE_CONFIG_FIELDS = {
    "integration_id",
    "repo_url",
    "deployment_type",
    "build_on_push",
    "custom_url",
    "resource_spec",
    "listener_id",
    "listener_config",
    "install_command",
    "build_command",
}


class Connections(httpx.BaseTransport):
    """A real HTTP transport that records the local address of every connection used."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.local_addresses: list[Any] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        stream = response.extensions["network_stream"]
        self.local_addresses.append(stream.get_extra_info("client_addr"))
        return response

    def close(self) -> None:
        self.inner.close()


def test_create_list_and_read_back(plane: Plane) -> None:
    listener = plane.admin.create_listener("prod-cluster", ["agents", "staging"])
    assert listener["compute_type"] == "k8s" and listener["compute_id"] == "prod-cluster"
    assert listener["compute_config"] == {"k8s_namespaces": ["agents", "staging"]}
    assert plane.admin.get_listener(listener["id"]) == listener
    other = plane.admin.create_listener("other-cluster", ["agents"])

    created = plane.admin.create_deployment(
        deployment_body(
            "support",
            listener["id"],
            secrets=[{"name": "OPENAI_API_KEY", "value": "sk-x"}],
            resource_spec={"min_scale": 1, "max_scale": 3, "cpu": 1.5, "labels": {"team": "a"}},
            secret_references=[{"name": "DB", "secret_name": "db", "secret_key": "url"}],
        )
    )
    plane.admin.create_deployment(deployment_body("research", listener["id"], "staging"))
    plane.admin.create_deployment(deployment_body("foreign", other["id"]))

    assert set(created) == DEPLOYMENT_FIELDS
    assert set(created["source_config"]) == SOURCE_CONFIG_FIELDS
    assert created["source"] == "external_docker" and created["status"] == "READY"
    assert created["source_config"]["listener_config"] == {"k8s_namespace": "agents"}
    assert created["secrets"] == [{"name": "OPENAI_API_KEY", "value": "sk-x"}]
    assert created["secret_references"] == [
        {"name": "DB", "secret_name": "db", "secret_key": "url"}
    ]
    assert created["latest_revision_id"] == created["active_revision_id"] is not None
    assert plane.admin.get_deployment(created["id"]) == created

    with plane.client(listener["id"]) as client:
        listing = client.list_listener_deployments()
    assert listing.listener.compute_id == "prod-cluster"
    assert {d.name: d.namespace for d in listing.deployments} == {
        "support": "agents",
        "research": "staging",
    }
    support = next(d for d in listing.deployments if d.name == "support")
    assert support.revision_id == created["latest_revision_id"]
    assert support.resource_spec.cpu == 1.5 and support.resource_spec.max_scale == 3
    assert dict(support.resource_spec.labels) == {"team": "a"}
    assert [s.name for s in support.secrets] == ["OPENAI_API_KEY"]
    assert support.secret_references[0].secret_name == "db"

    revisions = plane.admin.list_revisions(created["id"])
    assert len(revisions) == 1
    assert revisions[0]["id"] == created["latest_revision_id"]
    assert revisions[0]["status"] == "DEPLOYED"
    assert revisions[0]["source_revision_config"]["image_uri"] == (
        "registry.example.com/acme/agent:1.0.0"
    )


def test_patch_makes_revisions_only_for_image_secrets_and_resources(plane: Plane) -> None:
    listener = plane.admin.create_listener("c", ["agents"])
    dep = plane.admin.create_deployment(
        deployment_body("alpha", listener["id"], resource_spec={"cpu": 1, "memory_mb": 512})
    )
    first = dep["latest_revision_id"]

    patched = plane.admin.patch_deployment(
        dep["id"], {"source_revision_config": {"image_uri": "registry.example.com/alpha:2"}}
    )
    second = patched["latest_revision_id"]
    assert second != first and patched["active_revision_id"] == second
    assert patched["updated_at"] > dep["updated_at"]
    assert patched["source_revision_config"]["image_uri"] == "registry.example.com/alpha:2"

    # custom_url alone is not a revision.
    same = plane.admin.patch_deployment(dep["id"], {"source_config": {"custom_url": "https://a"}})
    assert same["latest_revision_id"] == second
    assert same["source_config"]["custom_url"] == "https://a"

    # A non-null resource_spec replaces the stored one entirely, and is a revision.
    resized = plane.admin.patch_deployment(
        dep["id"], {"source_config": {"resource_spec": {"max_scale": 4}}}
    )
    spec = resized["source_config"]["resource_spec"]
    assert spec["max_scale"] == 4 and spec["cpu"] is None and spec["memory_mb"] is None
    third = resized["latest_revision_id"]
    assert third != second

    secrets = plane.admin.patch_deployment(dep["id"], {"secrets": [{"name": "A", "value": "b"}]})
    assert secrets["secrets"] == [{"name": "A", "value": "b"}]
    fourth = secrets["latest_revision_id"]

    revisions = plane.admin.list_revisions(dep["id"])
    assert [r["id"] for r in revisions] == [fourth, third, second, first]  # newest first
    assert revisions[-1]["source_revision_config"]["image_uri"].endswith("agent:1.0.0")
    with plane.raw() as raw:
        one = raw.get(f"/v2/deployments/{dep['id']}/revisions/{second}")
        assert one.status_code == 200 and one.json() == revisions[2]
        newest = raw.get(f"/v2/deployments/{dep['id']}/revisions", params={"limit": 1}).json()
        assert newest == {"resources": [revisions[0]], "offset": 1}

    # Namespace and listener cannot change after creation.
    with pytest.raises(ControlPlaneError, match=r"HTTP 400: .*cannot be changed"):
        plane.admin.patch_deployment(
            dep["id"], {"source_config": {"listener_config": {"k8s_namespace": "other"}}}
        )


def test_delete_removes_the_deployment(plane: Plane) -> None:
    listener = plane.admin.create_listener("c", ["agents"])
    dep = plane.admin.create_deployment(deployment_body("gone", listener["id"]))
    plane.admin.delete_deployment(dep["id"])
    with pytest.raises(
        ControlPlaneError, match=rf"HTTP 404: Deployment ID {dep['id']} not found\."
    ):
        plane.admin.get_deployment(dep["id"])
    with plane.raw() as raw:
        again = raw.delete(f"/v2/deployments/{dep['id']}")
        assert again.status_code == 404
        assert again.json() == {"detail": f"Deployment ID {dep['id']} not found."}
        revisions = raw.get(f"/v2/deployments/{dep['id']}/revisions")
        assert revisions.status_code == 404
    with plane.client(listener["id"]) as client:
        assert client.list_listener_deployments().deployments == ()


def test_error_bodies_are_the_real_apis(plane: Plane) -> None:
    listener = plane.admin.create_listener("c", ["agents"])
    missing = str(uuid.uuid4())
    with plane.raw() as raw:
        r = raw.get(f"/v2/deployments/{missing}")
        assert (r.status_code, r.json()) == (404, {"detail": f"Deployment ID {missing} not found."})
        r = raw.patch(f"/v2/deployments/{missing}", json={})
        assert r.status_code == 404
        r = raw.get(f"/v2/listeners/{missing}")
        assert (r.status_code, r.json()) == (404, {"detail": f"Listener ID {missing} not found."})

        r = raw.get("/v2/deployments/not-a-uuid")
        assert r.status_code == 422
        [error] = r.json()["detail"]
        assert error["loc"] == ["path", "deployment_id"] and error["type"] == "uuid_parsing"
        assert isinstance(error["msg"], str)

        r = raw.post("/v2/deployments", json={"name": "x"})
        assert r.status_code == 422
        locs = {tuple(e["loc"]) for e in r.json()["detail"]}
        assert {("body", "source"), ("body", "secrets"), ("body", "source_config")} <= locs

        for limit in (0, 101):
            r = raw.get("/v2/deployments", params={"limit": limit})
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "limit"]

        r = raw.post(
            "/v2/listeners",
            json={
                "compute_type": "k8s",
                "compute_id": "c",
                "compute_config": {"k8s_namespaces": []},
            },
        )
        assert r.status_code == 409
        assert "compute ID 'c' already exists" in r.json()["detail"]

        body = deployment_body("x", listener["id"], namespace="not-a-listener-namespace")
        r = raw.post("/v2/deployments", json=body)
        assert r.status_code == 400
        assert "not-a-listener-namespace" in r.json()["detail"]
        r = raw.post("/v2/deployments", json=deployment_body("x", missing))
        assert (r.status_code, r.json()) == (400, {"detail": f"Listener ID {missing} not found."})
        r = raw.post(
            "/v2/deployments",
            json=deployment_body(
                "x", listener["id"], secrets=[{"name": "POSTGRES_URI", "value": "v"}]
            ),
        )
        assert r.status_code == 400 and "reserved" in r.json()["detail"]

    for headers in ({}, {"X-Api-Key": "wrong"}):
        r = httpx.get(f"{plane.url}/v2/deployments", headers=headers)
        assert (r.status_code, r.json()) == (401, {"detail": "Invalid API key"})
    r = httpx.get(f"{plane.url}/_faults", headers={"X-Api-Key": plane.api_key})
    assert r.status_code == 404  # fault injection is off unless asked for


def test_wrong_key_and_unknown_listener_through_the_client(plane: Plane) -> None:
    wrong = "lsv2_pt_" + secrets.token_hex(16)
    settings = make_settings(plane.url, wrong, str(uuid.uuid4()))
    with ControlPlaneClient.from_settings(settings) as client, pytest.raises(AuthRefused) as info:
        client.list_listener_deployments()
    assert wrong not in str(info.value) + repr(info.value)
    assert plane.api_key not in str(info.value)
    assert "$LANGSMITH_API_KEY" in str(info.value)

    missing = str(uuid.uuid4())
    with plane.client(missing) as client, pytest.raises(ListenerNotFound, match=missing):
        client.list_listener_deployments()


def test_listener_list_patch_delete(plane: Plane) -> None:
    ids = [plane.admin.create_listener(f"c{i}", ["agents"])["id"] for i in range(3)]
    with plane.raw() as raw:
        page = raw.get("/v2/listeners", params={"limit": 2}).json()
        assert [r["id"] for r in page["resources"]] == ids[:2] and page["offset"] == 2
        page = raw.get("/v2/listeners", params={"limit": 2, "offset": 2}).json()
        assert [r["id"] for r in page["resources"]] == ids[2:] and page["offset"] == 3

        r = raw.patch(
            f"/v2/listeners/{ids[0]}",
            json={"version": "0.1.2", "compute_config": {"k8s_namespaces": ["a", "b"]}},
        )
        assert r.status_code == 200
        assert r.json()["version"] == "0.1.2"
        assert r.json()["compute_config"] == {"k8s_namespaces": ["a", "b"]}
        assert r.json()["compute_id"] == "c0"

        r = raw.delete(f"/v2/listeners/{ids[1]}")
        assert (r.status_code, r.content) == (204, b"")
        assert raw.get(f"/v2/listeners/{ids[1]}").status_code == 404


def test_205_deployments_page_over_kept_alive_connections(plane: Plane) -> None:
    listener = plane.admin.create_listener("c", ["agents"])
    for i in range(205):
        plane.admin.create_deployment(deployment_body(f"agent-{i:03d}", listener["id"]))

    with plane.raw() as raw:
        default = raw.get("/v2/deployments").json()
        assert len(default["resources"]) == 20 and default["offset"] == 20
        last = raw.get("/v2/deployments", params={"limit": 100, "offset": 200}).json()
        assert len(last["resources"]) == 5 and last["offset"] == 205
        named = raw.get("/v2/deployments", params={"name_contains": "agent-20"}).json()
        assert sorted(d["name"] for d in named["resources"]) == [
            f"agent-{i}" for i in range(200, 205)
        ]
        some = [d["id"] for d in last["resources"][:2]]
        picked = raw.get("/v2/deployments", params={"deployment_ids": ",".join(some)}).json()
        assert [d["id"] for d in picked["resources"]] == some
        assert raw.get("/v2/deployments", params={"status": "AWAITING_DELETE"}).json() == {
            "resources": [],
            "offset": 0,
        }
        bad = raw.get("/v2/deployments", params={"deployment_ids": "x"})
        assert bad.status_code == 422

    transport = Connections()
    labels: list[str] = []
    with plane.client(listener["id"], transport=transport, on_response=labels.append) as client:
        listing = client.list_listener_deployments()
    assert sorted(d.name for d in listing.deployments) == [f"agent-{i:03d}" for i in range(205)]
    assert labels == ["200"] * 5  # the listener, 3 pages and one read ahead past the end
    # Keep-alive: 5 requests over at most 2 connections (the last two pages
    # are asked for at once).
    assert len(set(transport.local_addresses)) <= 2


def test_the_database_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "cp.db"
    key = "lsv2_pt_restart_key"
    server = start_in_thread(db=db, api_key=key)
    try:
        with AdminClient.from_settings(make_settings(server.url, key)) as admin:
            listener = admin.create_listener("c", ["agents"])
            dep = admin.create_deployment(deployment_body("kept", listener["id"]))
            admin.patch_deployment(dep["id"], {"source_revision_config": {"image_uri": "i:2"}})
            before = admin.get_deployment(dep["id"])
            revisions = admin.list_revisions(dep["id"])
    finally:
        server.stop()

    again = start_in_thread(db=db, api_key=key)
    try:
        assert again.url != "" and db.exists()
        settings = make_settings(again.url, key, listener["id"])
        with AdminClient.from_settings(settings) as client:
            assert client.get_deployment(dep["id"]) == before
            assert client.list_revisions(dep["id"]) == revisions
            [kept] = client.list_listener_deployments().deployments
            assert (kept.name, kept.image_uri) == ("kept", "i:2")
            with pytest.raises(ControlPlaneError, match="409"):
                client.create_listener("c", ["agents"])
    finally:
        again.stop()


def test_without_a_key_no_auth_is_asked_and_ports_differ(tmp_path: Path) -> None:
    first = start_in_thread(db=tmp_path / "a.db", api_key=None)
    second = start_in_thread(db=tmp_path / "b.db", api_key=None)
    try:
        assert first.url != second.url
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", first.url)
        assert httpx.get(f"{first.url}/v2/listeners").json() == {"resources": [], "offset": 0}
    finally:
        first.stop()
        second.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_serve_blocks_prints_a_random_key_and_stops_on_sigint(tmp_path: Path) -> None:
    port = _free_port()
    db = tmp_path / "serve.db"
    code = (
        "import sys; from pathlib import Path; from bridge.localplane.server import serve; "
        f"serve('127.0.0.1', {port}, Path(sys.argv[1]), None)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(db)],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(r"X-Api-Key: (\S+)", line)
        assert match, line
        key = match.group(1)
        deadline = time.monotonic() + 10
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v2/listeners", headers={"X-Api-Key": key})
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "serve() did not start"
                time.sleep(0.05)
        assert r.status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/v2/listeners").status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert db.exists()


def test_redeploy_makes_a_new_revision_with_the_old_config(plane: Plane) -> None:
    listener = plane.admin.create_listener("c-redeploy", ["agents"])
    dep = plane.admin.create_deployment(deployment_body("roll", listener["id"], image="r.io/a:1"))
    first = dep["latest_revision_id"]
    plane.admin.patch_deployment(dep["id"], {"source_revision_config": {"image_uri": "r.io/a:2"}})
    back = plane.admin.redeploy(dep["id"], first)
    assert back["source_revision_config"]["image_uri"] == "r.io/a:1"
    assert back["latest_revision_id"] not in (first, dep["latest_revision_id"])
    revisions = plane.admin.list_revisions(dep["id"])
    assert [r["source_revision_config"]["image_uri"] for r in revisions] == [
        "r.io/a:1",
        "r.io/a:2",
        "r.io/a:1",
    ]
    with plane.raw() as raw:
        missing = raw.post(
            f"/v2/deployments/{dep['id']}/revisions/00000000-0000-4000-8000-000000000009/redeploy"
        )
        assert missing.status_code == 404
        assert missing.json()["detail"].startswith("Revision ID")
