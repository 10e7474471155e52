"""Reconcile benchmark: prints JSON figures for cold, unchanged, one-change and
100-change cycles at N deployments spread over 10 namespaces.

The control plane is an in-process fake of the same `/v2` API served through
httpx.MockTransport (so what is measured is the bridge, not a test server);
remotes and clones live on tmpfs (/dev/shm) when it exists. Each N runs in a
fresh subprocess so peak RSS is that N's own.

    python benchmarks/reconcile.py --n 1000 --n 10000 --runs 5
    python benchmarks/reconcile.py --n 1000 --no-validate   # where does time go?
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NAMESPACES = [f"ns-{i:02d}" for i in range(10)]
LISTENER_ID = "6f9619ff-8b86-d011-b42d-00c04fc964ff"


def fake_control_plane(n: int) -> tuple[Any, dict[str, dict[str, Any]]]:
    import httpx

    deployments: dict[str, dict[str, Any]] = {}
    for i in range(n):
        dep_id = str(uuid.UUID(int=i + 1))
        deployments[dep_id] = {
            "id": dep_id,
            "name": f"agent-{i:05d}",
            "source": "external_docker",
            "status": "READY",
            "source_config": {
                "listener_id": LISTENER_ID,
                "listener_config": {"k8s_namespace": NAMESPACES[i % len(NAMESPACES)]},
                "resource_spec": {"min_scale": 1, "max_scale": 1 + i % 3},
            },
            "source_revision_config": {"image_uri": f"registry.example.com/acme/agent-{i}:1.0.0"},
            "secrets": [],
            "latest_revision_id": str(uuid.UUID(int=10**9 + i)),
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
        }
    listener = {
        "id": LISTENER_ID,
        "compute_type": "k8s",
        "compute_id": "bench-cluster",
        "compute_config": {"k8s_namespaces": NAMESPACES},
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
    }

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == f"/v2/listeners/{LISTENER_ID}":
            return httpx.Response(200, json=listener)
        if request.url.path == "/v2/deployments":
            limit = int(request.url.params.get("limit", "20"))
            offset = int(request.url.params.get("offset", "0"))
            page = list(deployments.values())[offset : offset + limit]
            return httpx.Response(200, json={"resources": page, "offset": offset + len(page)})
        return httpx.Response(404, json={"detail": "Not found."})

    return httpx.MockTransport(handler), deployments


def one_n(n: int, runs: int, validate: bool) -> dict[str, Any]:
    from bridge.config import load_settings
    from bridge.running import make_reconciler

    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    figures: dict[str, list[float]] = {
        "cold": [],
        "unchanged": [],
        "one_change": [],
        "hundred_changes": [],
    }
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="bridge-bench-", dir=base) as tmp:
            root = Path(tmp)
            transport, deployments = fake_control_plane(n)
            targets = []
            for ns in NAMESPACES:
                remote = root / f"{ns}.git"
                subprocess.run(
                    ["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True
                )
                targets.append({"namespace": ns, "repo": remote.as_uri(), "branch": "main"})
            config = {
                "controlPlane": {"url": "http://control-plane.invalid", "listenerId": LISTENER_ID},
                "targets": targets,
                "git": {"workdir": str(root / "work"), "authorEmail": "bench@example.com"},
                "secrets": {"provider": "none"},
            }
            (root / "bridge.yaml").write_text(json.dumps(config))
            settings = load_settings(root / "bridge.yaml", env={"LANGSMITH_API_KEY": "bench-key"})

            def cycle(settings: Any = settings, transport: Any = transport) -> float:
                reconciler, close = make_reconciler(
                    settings, transport=transport, validate=validate
                )
                started = time.perf_counter()
                try:
                    report = reconciler.run_cycle()
                finally:
                    close()
                elapsed = time.perf_counter() - started
                if report.exit_code() != 0:
                    raise SystemExit(f"cycle failed: {[o.error for o in report.failed][:3]}")
                return elapsed

            figures["cold"].append(cycle())
            figures["unchanged"].append(cycle())
            ids = list(deployments)
            deployments[ids[0]]["source_revision_config"]["image_uri"] += "-1"
            deployments[ids[0]]["latest_revision_id"] = str(uuid.uuid4())
            figures["one_change"].append(cycle())
            for dep_id in ids[1:101]:
                deployments[dep_id]["source_revision_config"]["image_uri"] += "-2"
                deployments[dep_id]["latest_revision_id"] = str(uuid.uuid4())
            figures["hundred_changes"].append(cycle())
    out: dict[str, Any] = {"n": n, "runs": runs, "validate": validate, "tmpfs": base is not None}
    for name, values in figures.items():
        out[name] = {
            "min_s": round(min(values), 3),
            "median_s": round(statistics.median(values), 3),
            "max_s": round(max(values), 3),
        }
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, action="append", help="deployments (repeatable)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-validate", action="store_true", help="skip kustomize validation")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = args.n or [100, 1000]
    if args.child:
        print(json.dumps(one_n(sizes[0], args.runs, not args.no_validate)))
        return
    results = []
    for n in sizes:
        cmd = [sys.executable, __file__, "--child", "--n", str(n), "--runs", str(args.runs)]
        if args.no_validate:
            cmd.append("--no-validate")
        out = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"}
        )
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            raise SystemExit(out.returncode)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(json.dumps({"benchmark": "reconcile", "results": results}, indent=2))


if __name__ == "__main__":
    main()
