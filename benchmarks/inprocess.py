"""Reconcile benchmark: prints JSON figures for cold, unchanged, one-change and
100-change cycles at N deployments spread over 10 namespaces (10 targets).

The control plane is an in-process fake of the same `/v2` API served through
httpx.MockTransport (so what is measured is the bridge, not a test server);
remotes and clones live on tmpfs (/dev/shm) when it exists. Each N (and each
validation setting) runs in a fresh subprocess so peak RSS is that run's own.
One reconciler serves all cycles of a run, as in `gitops-bridge run`, except
`unchanged_after_restart`, which starts a fresh one (a restarted pod).
See benchmarks/README.md for what each figure means and what was measured.

    python benchmarks/reconcile.py --n 1000 --n 10000 --runs 5 --validation both
    python benchmarks/reconcile.py --n 1000 --no-validate   # where does time go?
    python benchmarks/reconcile.py --n 1000 --runs 1 --profile prof/   # py-spy per cycle
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
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


@contextlib.contextmanager
def sampled(out: Path | None) -> Iterator[None]:
    """py-spy samples this process (all threads, idle ones too) into `out` (raw
    collapsed stacks; summarise with benchmarks/profile_summary.py); no-op without."""
    if out is None:
        yield
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    proc = subprocess.Popen(
        [
            *(spy, "record", "--pid", str(os.getpid()), "--rate", "250", "--idle", "--threads"),
            "--subprocesses",
            *("--format", "raw", "--output", str(out)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # "Sampling process ..." once it is attached
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)


def _tree_rss_mb() -> tuple[float, float]:
    """(this process's peak RSS, the sum of the peaks of its live Python
    descendants) in MB. The descendants are the validation workers and their
    forkserver, which a pod's memory limit counts too; the sum overstates their
    share a little (pages they share are counted in each)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    parents: dict[int, int] = {}
    peaks: dict[int, float] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(
                line.split(":", 1) for line in status.read_text().splitlines() if ":" in line
            )
            pid = int(status.parent.name)
            parents[pid] = int(fields["PPid"])
        except (OSError, KeyError, ValueError):
            continue
        if "python" in fields.get("Name", ""):
            peaks[pid] = int(fields.get("VmHWM", "0 kB").split()[0]) / 1024
    mine = {os.getpid()}
    grew = True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in mine} - mine
        grew = bool(found)
        mine |= found
    return own, sum(peaks.get(pid, 0.0) for pid in mine if pid != os.getpid())


PHASES = ("cold", "unchanged", "unchanged_after_restart", "one_change", "hundred_changes")


def one_n(n: int, runs: int, validate: bool, profile: Path | None = None) -> dict[str, Any]:
    from bridge.commands.wiring import make_reconciler
    from bridge.config import load_settings

    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    figures: dict[str, list[float]] = {phase: [] for phase in PHASES}
    peak_workers = 0.0
    for run in range(runs):
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
            # One reconciler for every cycle, as `gitops-bridge run` keeps one;
            # `unchanged_after_restart` alone starts a fresh one (a restarted pod).
            live: list[Any] = list(
                make_reconciler(settings, transport=transport, validate=validate)
            )

            def cycle(
                phase: str,
                run: int = run,
                live: list[Any] = live,
                settings: Any = settings,
                transport: Any = transport,
            ) -> float:
                if phase == "unchanged_after_restart":
                    live[1]()
                    live[:] = make_reconciler(settings, transport=transport, validate=validate)
                out = None
                if profile is not None and run == 0:
                    out = profile / f"n{n}-{'validate' if validate else 'novalidate'}-{phase}.txt"
                with sampled(out):
                    started = time.perf_counter()
                    report = live[0].run_cycle()
                    elapsed = time.perf_counter() - started
                if report.exit_code() != 0:
                    raise SystemExit(f"cycle failed: {[o.error for o in report.failed][:3]}")
                return elapsed

            try:
                figures["cold"].append(cycle("cold"))
                figures["unchanged"].append(cycle("unchanged"))
                figures["unchanged_after_restart"].append(cycle("unchanged_after_restart"))
                ids = list(deployments)
                deployments[ids[0]]["source_revision_config"]["image_uri"] += "-1"
                deployments[ids[0]]["latest_revision_id"] = str(uuid.uuid4())
                figures["one_change"].append(cycle("one_change"))
                for dep_id in ids[1:101]:
                    deployments[dep_id]["source_revision_config"]["image_uri"] += "-2"
                    deployments[dep_id]["latest_revision_id"] = str(uuid.uuid4())
                figures["hundred_changes"].append(cycle("hundred_changes"))
                peak_workers = max(peak_workers, _tree_rss_mb()[1])
            finally:
                live[1]()
    out: dict[str, Any] = {"n": n, "runs": runs, "validate": validate, "tmpfs": base is not None}
    for name, values in figures.items():
        out[name] = {
            "min_s": round(min(values), 3),
            "median_s": round(statistics.median(values), 3),
            "max_s": round(max(values), 3),
        }
    own, _ = _tree_rss_mb()
    out["peak_rss_mb"] = round(own, 1)
    out["workers_peak_rss_mb"] = round(peak_workers, 1)
    out["peak_rss_total_mb"] = round(own + peak_workers, 1)
    # Other work on the machine shows here (2 cores: above ~2 means shared).
    out["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    return out


def _merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from single-run results: min / median / max per phase, the
    largest RSS figures, the last load."""
    out = {k: runs[0][k] for k in ("n", "validate", "tmpfs")}
    out["runs"] = len(runs)
    for phase in PHASES:
        values = [r[phase]["median_s"] for r in runs]
        out[phase] = {
            "min_s": min(values),
            "median_s": round(statistics.median(values), 3),
            "max_s": max(values),
        }
    for key in ("peak_rss_mb", "workers_peak_rss_mb", "peak_rss_total_mb"):
        out[key] = max(r[key] for r in runs)
    out["load_avg_1m_at_end"] = runs[-1]["load_avg_1m_at_end"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, action="append", help="deployments (repeatable)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--validation",
        choices=("on", "off", "both"),
        default="on",
        help="kustomize + schema validation of changed roots (both: each N twice)",
    )
    parser.add_argument("--no-validate", action="store_true", help="the same as --validation off")
    parser.add_argument(
        "--profile", type=Path, help="folder for py-spy samples of each cycle of the first run"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = args.n or [100, 1000]
    if args.child:
        print(json.dumps(one_n(sizes[0], args.runs, not args.no_validate, args.profile)))
        return
    mode = "off" if args.no_validate else args.validation
    modes = {"on": [True], "off": [False], "both": [True, False]}[mode]
    results = []
    for n in sizes:
        for validate in modes:
            # Every run in a fresh process, as a pod that starts on empty repos:
            # the validator remembers objects it found valid (by exact text) and
            # keeps its worker, so a second cold run in one process re-checked
            # nothing and looked ~25 % faster than any real first start.
            runs = []
            for run in range(args.runs):
                cmd = [sys.executable, __file__, "--child", "--n", str(n), "--runs", "1"]
                if not validate:
                    cmd.append("--no-validate")
                if args.profile is not None and run == 0:
                    args.profile.mkdir(parents=True, exist_ok=True)
                    cmd += ["--profile", str(args.profile.resolve())]
                out = subprocess.run(
                    cmd, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"}
                )
                if out.returncode != 0:
                    print(out.stderr, file=sys.stderr)
                    raise SystemExit(out.returncode)
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            results.append(_merge(runs))
            # Progress on stderr: a 10,000 run takes minutes.
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"benchmark": "reconcile", "results": results}, indent=2))


if __name__ == "__main__":
    main()
