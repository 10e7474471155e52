"""The floors under the reconcile figures: what the parts cost alone. Prints JSON.

Each floor is a whole command or one request, timed from outside over `--runs`
runs (after one warm-up), as min / median / max; benchmarks/README.md puts
each beside the figure it bounds, so that the distance to it shows:

- `python_start`: the install's interpreter doing nothing (`python -c pass`);
- `import_cli`: `python -c 'import bridge.cli'`, what every command imports;
- `import_run_path`: every module `run --once` has imported when its first
  cycle begins (~330 modules), in one `python -c`: start-up's floor;
- `import_httpx`: `python -c 'import httpx'`, the HTTP client's share of it;
- `kustomize_one_root`: `kubectl kustomize` of one rendered deployment folder
  (the default install's Kustomize, as the bridge runs it per root, with the
  bridge's Go settings `KUSTOMIZE_ENV`);
- `kustomize_chunk`: one `kubectl kustomize` of a chunk of rendered deployment
  folders (`roots`: bridge.validation.kustomize.CHUNK, 16) listed by one parent
  kustomization, as the bridge builds them; with the CPU it takes per root
  (`cpu_per_root_s`, user + system of the child), which bounds a cold cycle:
  every root is built, so N roots need N times it on the machine's cores;
- `kustomize_output_parse`: parsing that chunk's output (YAML: `kubectl
  kustomize` prints nothing else) the way the bridge reads it (one document
  at a time, its libyaml loader), timed in this process; `per_root_s` is a
  root's share;
- `http_page_100`: one `GET /v2/deployments?limit=100` (the page the bridge asks for) from
  `gitops-bridge control-plane serve` on loopback, on a new connection;
- `git_commit_3_in_10k`: `git add` of 3 changed files and `git commit` in a
  work tree of 10,000 deployment folders (7 files each);
- `git_push_one_commit`: `git push` of one new commit to a bare `file://` remote
  holding those 10,000 folders.

    python benchmarks/floors.py --runs 10

Uses the default install benchmarks/reconcile.py makes (benchmarks/.venvs/kubectl).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reconcile

from bridge.validation.kustomize import (
    CHUNK,
    KUSTOMIZE_ENV,
    _Loader,
    _split_documents,
    _write_parent,
)

FOLDER_FILES = (
    "agent-server.yaml",
    "autoscaling.yaml",
    "postgres.yaml",
    "queue-worker.yaml",
    "redis.yaml",
    "secret-postgres.yaml",
    ".gitops-bridge.state",
)
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
    "GIT_CONFIG_GLOBAL": "/dev/null",
}


def timed(action: Callable[[], object], runs: int) -> dict[str, float]:
    action()  # warm-up: page cache, the interpreter's bytecode cache
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - start)
    return {
        "min_s": round(min(seconds), 4),
        "median_s": round(statistics.median(seconds), 4),
        "max_s": round(max(seconds), 4),
    }


# kubectl as the bridge runs it: one OS thread, Go's collector a quarter as often.
KUBECTL_ENV = {**os.environ, **KUSTOMIZE_ENV}


def run(*argv: str | Path, cwd: Path | None = None, env: dict[str, str] = GIT_ENV) -> None:
    subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# What `run --once` has imported when its first cycle begins (sys.modules
# there: ~338 modules; these bring in ~333 of them).
RUN_PATH_IMPORTS = (
    "bridge.cli, bridge.commands.run, bridge.commands.wiring, bridge.commands.forging,"
    " bridge.controlplane.client, bridge.reconcile.cycle, bridge.observability.progress"
)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def render_one(bridge: Path, record: dict[str, Any], out: Path) -> Path:
    """One deployment as the control plane lists it, rendered by the installed
    bridge (`gitops-bridge render`, no secrets provider: none are needed)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    source = out.parent / "deployment.json"
    source.write_text(json.dumps(record))
    done = subprocess.run(
        [str(bridge), "render", "--deployment", str(source), "--out", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(done.stdout.split("\n")[0].removeprefix("wrote ").strip())


def chunk_parent(bridge: Path, records: list[dict[str, Any]], work: Path) -> Path:
    """A parent kustomization listing one rendered root per record, written by
    the bridge's own `_write_parent`, as it builds a chunk."""
    roots = [render_one(bridge, r, work / f"render-{i}" / "out") for i, r in enumerate(records)]
    parent = work / "parent"
    parent.mkdir(parents=True)
    return _write_parent(work, parent, [str(root.relative_to(work)) for root in roots])


def with_cpu_per_root(action: Callable[[], object], runs: int, roots: int) -> dict[str, float]:
    """`timed`, plus the median CPU (user + system) of the children per root."""
    cpu: list[float] = []

    def measured() -> None:
        before = children_cpu()
        action()
        cpu.append(children_cpu() - before)

    figures = timed(measured, runs)
    figures["cpu_per_root_s"] = round(statistics.median(cpu[1:]) / roots, 4)
    return figures


def big_repo(work: Path, n: int) -> tuple[Path, Path]:
    """A bare remote and a work tree of `n` deployment folders, made with fast-import."""
    remote = work / "remote.git"
    tree = work / "tree"
    run("git", "init", "-q", "--bare", "-b", "main", remote)
    lines: list[bytes] = [b"commit refs/heads/main\n", b"committer bench <b@e> 0 +0000\n"]
    lines.append(b"data 4\ninit\n")
    for i in range(n):
        for name in FOLDER_FILES:
            body = f"# agent-{i:05d} {name}\nkind: ConfigMap\n".encode()
            lines.append(f"M 100644 inline agent-{i:05d}/{name}\n".encode())
            lines.append(b"data %d\n" % len(body) + body + b"\n")
    subprocess.run(
        ["git", "fast-import", "--quiet"],
        input=b"".join(lines),
        cwd=remote,
        env=GIT_ENV,
        check=True,
    )
    run("git", "clone", "-q", remote, tree)
    return remote, tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--folders", type=int, default=10_000)
    parser.add_argument("--no-reinstall", action="store_true")
    args = parser.parse_args()
    bridge = reconcile.install("kubectl", reinstall=not args.no_reinstall)
    python = bridge.parent / "python"
    kubectl = bridge.parent / "kubectl"
    parent = "/dev/shm" if Path("/dev/shm").is_dir() else None
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=parent) as tmp:
        work = Path(tmp)
        figures["python_start"] = timed(lambda: run(python, "-c", "pass"), args.runs)
        figures["import_cli"] = timed(lambda: run(python, "-c", "import bridge.cli"), args.runs)
        figures["import_run_path"] = timed(
            lambda: run(python, "-c", f"import {RUN_PATH_IMPORTS}"), args.runs
        )
        figures["import_httpx"] = timed(lambda: run(python, "-c", "import httpx"), args.runs)

        api_key = "bench-" + secrets.token_hex(16)
        _listener, _ids = reconcile.populate(bridge, work / "cp.db", api_key, 100)
        with reconcile.control_plane(bridge, work / "cp.db", api_key) as url:
            host, port = url.removeprefix("http://").split(":")

            def page() -> None:
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                try:
                    conn.request(
                        "GET",
                        "/v2/deployments?limit=100&offset=0",
                        headers={"X-Api-Key": api_key},
                    )
                    response = conn.getresponse()
                    body = response.read()
                    if response.status != 200 or not body:
                        raise SystemExit(f"control plane answered {response.status}")
                finally:
                    conn.close()

            figures["http_page_100"] = timed(page, args.runs)
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            conn.request(
                "GET",
                f"/v2/deployments?limit={CHUNK}&offset=0",
                headers={"X-Api-Key": api_key},
            )
            records = json.loads(conn.getresponse().read())["resources"]
            conn.close()

        root = render_one(bridge, records[0], work / "render" / "out")
        figures["kustomize_one_root"] = with_cpu_per_root(
            lambda: run(kubectl, "kustomize", root, env=KUBECTL_ENV), args.runs, 1
        )
        parent = chunk_parent(bridge, records[:CHUNK], work / "chunk")
        figures["kustomize_chunk"] = {
            "roots": CHUNK,
            **with_cpu_per_root(
                lambda: run(kubectl, "kustomize", parent, env=KUBECTL_ENV), args.runs, CHUNK
            ),
        }
        output = subprocess.run(
            [kubectl, "kustomize", parent],
            env=KUBECTL_ENV,
            capture_output=True,
            check=True,
            text=True,
        ).stdout
        # As the bridge reads a build (roots._check_output): one document at a time.
        parse = timed(
            lambda: [yaml.load(t, Loader=_Loader) for t in _split_documents(output)],  # noqa: S506
            args.runs,
        )
        figures["kustomize_output_parse"] = {
            **parse,
            "per_root_s": round(parse["median_s"] / CHUNK, 4),
        }

        _remote, tree = big_repo(work, args.folders)
        counter = iter(range(10**9))

        def commit() -> None:
            k = next(counter)
            for name in FOLDER_FILES[:3]:
                (tree / "agent-00001" / name).write_text(f"changed {k}\n")
            run("git", "add", "agent-00001", cwd=tree)
            run("git", "commit", "-q", "-m", f"change {k}", cwd=tree)

        figures["git_commit_3_in_10k"] = timed(commit, args.runs)

        def push() -> None:
            commit()
            run("git", "push", "-q", "origin", "HEAD:main", cwd=tree)

        pushes = timed(push, args.runs)
        commits = figures["git_commit_3_in_10k"]
        # The push alone: each timed run also made one commit; its median is taken off.
        figures["git_push_one_commit"] = {
            key: round(max(0.0, value - commits["median_s"]), 4) for key, value in pushes.items()
        }
        shutil.rmtree(tree, ignore_errors=True)
    print(
        json.dumps(
            {
                "benchmark": "floors",
                "runs": args.runs,
                "cores": os.cpu_count(),
                "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
                "floors": figures,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
