"""`gitops-bridge deployments` against the local control plane over real HTTP."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import yaml

from tests.controlplane.conftest import Plane, deployment_body


def deployments(
    plane: Plane, tmp_path: Path, listener_id: str, key: str, *args: str
) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "bridge.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "controlPlane": {"url": plane.url, "listenerId": listener_id, "timeout": 5},
                "targets": [{"namespace": "agents", "repo": "file:///unused.git"}],
            }
        )
    )
    return subprocess.run(
        [sys.executable, "-m", "bridge", "deployments", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "LANGSMITH_API_KEY": key},
        timeout=60,
        check=False,
    )


def test_lists_exactly_the_listeners_deployments(plane: Plane, tmp_path: Path) -> None:
    mine = plane.admin.create_listener("cluster-a", ["agents", "staging"])
    other = plane.admin.create_listener("cluster-b", ["agents"])
    a = plane.admin.create_deployment(deployment_body("alpha", mine["id"]))
    b = plane.admin.create_deployment(deployment_body("beta", mine["id"], namespace="staging"))
    plane.admin.create_deployment(deployment_body("foreign", other["id"]))
    done = deployments(plane, tmp_path, mine["id"], plane.api_key, "--output", "json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert sorted(d["id"] for d in doc["deployments"]) == sorted([a["id"], b["id"]])
    assert doc["listener"]["computeId"] == "cluster-a"
    table = deployments(plane, tmp_path, mine["id"], plane.api_key)
    assert table.returncode == 0
    assert "alpha" in table.stdout and "beta" in table.stdout and "foreign" not in table.stdout
    assert a["latest_revision_id"][:8] in table.stdout


def test_refused_key_exits_3_without_showing_it(plane: Plane, tmp_path: Path) -> None:
    mine = plane.admin.create_listener("cluster-c", ["agents"])
    wrong = "lsv2_pt_" + secrets.token_hex(16)
    done = deployments(plane, tmp_path, mine["id"], wrong)
    assert done.returncode == 3
    assert "LANGSMITH_API_KEY" in done.stderr
    assert wrong not in done.stdout + done.stderr


def test_unknown_listener_exits_3(plane: Plane, tmp_path: Path) -> None:
    done = deployments(plane, tmp_path, "6f9619ff-8b86-d011-b42d-00c04fc964ff", plane.api_key)
    assert done.returncode == 3
    assert "6f9619ff-8b86-d011-b42d-00c04fc964ff" in done.stderr
