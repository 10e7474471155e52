"""`gitops-bridge run --listen` in a subprocess: /healthz, /readyz and /metrics over
real HTTP, readiness flipping when the control plane fails and recovering after."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

from bridge.controlplane.admin import AdminClient, deployment_request
from bridge.localplane.server import start_in_thread

API_KEY = "lsv2_pt_" + secrets.token_hex(16)  # made at run time, never a real key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_endpoints_during_run(tmp_path: Path) -> None:
    server = start_in_thread(db=tmp_path / "cp.db", api_key=API_KEY, faults=True)
    proc = None
    try:
        with AdminClient.connect(server.url, API_KEY) as admin:
            listener = admin.create_listener("c1", ["agents"])
            admin.create_deployment(
                deployment_request("alpha", listener["id"], "agents", "registry.example.com/a:1")
            )
        remote = tmp_path / "agents.git"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
        config = tmp_path / "bridge.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "controlPlane": {
                        "url": server.url,
                        "listenerId": listener["id"],
                        "pollInterval": 1,
                        "timeout": 1,
                    },
                    "targets": [{"namespace": "agents", "repo": remote.as_uri()}],
                    "git": {"workdir": str(tmp_path / "work")},
                }
            )
        )
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bridge",
                "--log-format",
                "json",
                "run",
                "--config",
                str(config),
                "--listen",
                f"127.0.0.1:{port}",
            ],
            env={**os.environ, "LANGSMITH_API_KEY": API_KEY},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: get(base + "/healthz") == (200, "ok\n"), 30, "/healthz")
        wait_for(lambda: get(base + "/readyz")[0] == 200, 30, "ready after a good cycle")
        status, metrics = get(base + "/metrics")
        assert status == 200
        for name in (
            'gitops_bridge_control_plane_requests_total{status="200"}',
            'gitops_bridge_commits_total{kind="deploy",target="agents"} 1.0',
            'gitops_bridge_pushes_total{outcome="ok",target="agents"} 1.0',
            'gitops_bridge_deployments{state="deployed",target="agents"} 1.0',
            "gitops_bridge_cycle_duration_seconds_bucket",
            "gitops_bridge_last_successful_cycle_timestamp_seconds",
        ):
            assert name in metrics, name
        # The control plane starts failing: readiness drops within 3 poll intervals.
        httpx.post(
            server.url + "/_faults",
            json={"rules": [{"path": "/v2", "mode": "500", "times": None}]},
            headers={"X-Api-Key": API_KEY},
        ).raise_for_status()
        wait_for(lambda: get(base + "/readyz")[0] == 503, 30, "not ready while failing")
        assert "control plane" in get(base + "/readyz")[1]
        assert (
            'gitops_bridge_control_plane_requests_total{status="500"}' in get(base + "/metrics")[1]
        )
        assert get(base + "/healthz")[0] == 200  # alive all along
        httpx.delete(server.url + "/_faults", headers={"X-Api-Key": API_KEY}).raise_for_status()
        wait_for(lambda: get(base + "/readyz")[0] == 200, 30, "ready again after recovery")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        # The outage is one error line, then one warning per failing cycle: never
        # a line per retry.
        errors = [line for line in err.splitlines() if '"level": "error"' in line]
        assert len(errors) == 1 and "control plane" in errors[0], errors
        still = [line for line in err.splitlines() if "still failing" in line]
        assert all('"level": "warning"' in line for line in still)
        assert API_KEY not in out + err
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()
        server.stop()
