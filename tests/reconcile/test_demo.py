"""The first README command: `gitops-bridge demo` runs end to end and leaves a
repo that builds with kustomize and leaks nothing."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from bridge.formats.commits import parse
from tests.leakscan import scan_repo, scan_text


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    out = subprocess.run(
        [sys.executable, "-m", "bridge", "demo", "--dir", str(demo)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "== cycle 1" in out.stdout and "== cycle 2" in out.stdout
    assert "Deployment-Id:" in out.stdout  # the log is printed with trailers
    remote = demo / "remotes" / "agents.git"
    log = subprocess.run(
        ["git", "log", "--format=%B%x1e", "main"],
        cwd=remote,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    subjects = [c.strip().splitlines()[0] for c in log.split("\x1e") if c.strip()]
    assert subjects[0] == "delete(agents/research-agent)"
    assert subjects[1].startswith(
        "deploy(agents/support-agent): registry.example.com/acme/support-agent:1.5.0"
    )
    assert all(parse(c) for c in log.split("\x1e") if c.strip())
    kubectl = Path(sys.prefix) / "bin" / "kubectl"
    built = subprocess.run(
        [str(kubectl), "kustomize", str(demo / "checkout" / "demo-cluster" / "agents")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "kind: StatefulSet" in built and "support-agent" in built
    assert "research-agent" not in built
    # Nothing secret in any repo or in what the demo printed.
    env = (demo / "keys" / "demo.env").read_text()
    values = re.findall(r"=(\S+)", env)
    api_key, bridge_key = values[0], values[1]
    cp_secrets = re.findall(
        r"(?:sk|zd)-demo-[0-9a-f]{32}",
        (demo / "keys")
        .joinpath("..")
        .resolve()
        .joinpath("control-plane.db")
        .read_bytes()
        .decode("latin-1"),
    )
    assert cp_secrets, "the demo's secret values should be in the control plane DB"
    for name in ("agents", "agents-staging"):
        assert [] == scan_repo(demo / "remotes" / f"{name}.git", [api_key, bridge_key, *cp_secrets])
    assert [] == scan_text(out.stdout + out.stderr, [api_key, bridge_key, *cp_secrets])
