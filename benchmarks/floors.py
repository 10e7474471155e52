"""The floors under the reconcile figures: what the parts cost alone. Prints JSON.

Each floor is a whole command or one request, timed from outside over `--runs`
runs (after one warm-up), as min / median / max; benchmarks/README.md puts
each beside the figure it bounds, so that the distance to it shows:

- `python_start`: the install's interpreter doing nothing (`python -c pass`);
- `import_cli`: `python -c 'import bridge.cli'`, what every command imports;
- `kustomize_one_root`: `kubectl kustomize` of one rendered deployment folder
  (the default install's Kustomize, as the bridge runs it per root);
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reconcile

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


def run(*argv: str | Path, cwd: Path | None = None) -> None:
    subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=GIT_ENV,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def render_one(bridge: Path, record: dict[str, Any], out: Path) -> Path:
    """One deployment as the control plane lists it, rendered by the installed
    bridge (`gitops-bridge render`, no secrets provider: none are needed)."""
    source = out.parent / "deployment.json"
    source.write_text(json.dumps(record))
    done = subprocess.run(
        [str(bridge), "render", "--deployment", str(source), "--out", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(done.stdout.split("\n")[0].removeprefix("wrote ").strip())


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
                "/v2/deployments?limit=1&offset=1",
                headers={"X-Api-Key": api_key},
            )
            record = json.loads(conn.getresponse().read())["resources"][0]
            conn.close()

        root = render_one(bridge, record, work / "render")
        figures["kustomize_one_root"] = timed(lambda: run(kubectl, "kustomize", root), args.runs)

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
