"""A loop cycle of many changes with git remotes a round trip away. Prints JSON.

`benchmarks/reconcile.py` pushes to `file://` remotes on the same disk, where a
push is only CPU. A user's remotes are a network away (GitHub, GitLab, a
Gitea): every request of a fetch or a push waits a round trip. Here the 10
bare remotes are served by real smart HTTP (`git http-backend` behind Basic
auth, tests/gitservers.py) that answers each request after `--delay-ms`, and a
real `gitops-bridge run --listen` process (installed as reconcile.py does, or
each `--bridge` given, run in turn) deploys `--changes` new revisions spread
over the 10 targets, `--rounds` times. The figure is the cycle's own
`seconds`, as the bridge logs it.

    python benchmarks/remote.py --n 1000 --delay-ms 100 --rounds 5
    python benchmarks/remote.py --bridge /path/to/old/gitops-bridge --bridge .venv/bin/gitops-bridge
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import reconcile

from tests import gitservers

USER, PASSWORD = "bench", "bench-" + secrets.token_hex(8)


def served_remotes(root: Path) -> Path:
    served = root / "served"
    for ns in reconcile.NAMESPACES:
        remote = served / f"{ns}.git"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
        subprocess.run(["git", "config", "http.receivepack", "true"], cwd=remote, check=True)
    return served


def http_config(root: Path, template: Path, base: str, name: str) -> Path:
    config = json.loads(template.read_text())
    config["targets"] = [
        {"namespace": ns, "repo": f"{base}{ns}.git", "branch": "main"}
        for ns in reconcile.NAMESPACES
    ]
    config["git"]["workdir"] = str(root / f"{name}-work")
    config["git"]["https"] = {"usernameEnv": "GIT_BENCH_USER", "passwordEnv": "GIT_BENCH_PASSWORD"}
    path = root / f"{name}.yaml"
    path.write_text(json.dumps(config))
    return path


def rounds(
    bridge: Path,
    config: Path,
    env: dict[str, str],
    url: str,
    api_key: str,
    ids: list[str],
    args: Any,
) -> dict[str, Any]:
    loop = reconcile.Loop(bridge, config, env)
    try:
        first = loop.next_cycle()
        seconds = []
        for _ in range(args.rounds):
            reconcile.new_revision(url, api_key, ids, "r" + secrets.token_hex(3))
            seconds.append(loop.cycle_deploying(len(ids))["seconds"])
    finally:
        memory = loop.stop()
    return {"first_cycle": first["seconds"], "changes": seconds, **memory}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="deployments")
    parser.add_argument("--changes", type=int, default=100, help="new revisions per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--delay-ms", type=float, default=100.0, help="per HTTP request")
    parser.add_argument("--bridge", type=Path, action="append", help="gitops-bridge to run")
    args = parser.parse_args()
    bridges = args.bridge or [
        reconcile.install("kubectl", reinstall=False) / "bin" / "gitops-bridge"
    ]
    server = bridges[-1]
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="bridge-bench-remote-", dir=shm) as tmp:
        root = Path(tmp)
        api_key = "bench-" + secrets.token_hex(16)
        listener_id, ids = reconcile.populate(server, root / "cp.db", api_key, args.n)
        # As reconcile.py: the ids are listed namespace after namespace in turn,
        # so these are spread over the 10 targets.
        changed = ids[1 : 1 + min(args.changes, args.n - 1)]
        env = {
            **reconcile.bridge_env(api_key, secrets.token_hex(32)),
            "GIT_BENCH_USER": USER,
            "GIT_BENCH_PASSWORD": PASSWORD,
        }
        served = served_remotes(root)
        delay = args.delay_ms / 1000
        results = {}
        with (
            reconcile.control_plane(server, root / "cp.db", api_key) as url,
            gitservers.http_git_server(served, USER, PASSWORD, delay=delay) as base,
        ):
            template = reconcile.write_config(root, "template", url, listener_id, "sops", root)
            for index, bridge in enumerate(bridges):
                config = http_config(root, template, base, f"b{index}")
                results[f"{index}: {bridge}"] = rounds(
                    bridge, config, env, url, api_key, changed, args
                )
    for result in results.values():
        result["median"] = statistics.median(result["changes"])
    print(json.dumps({"n": args.n, "delay_ms": args.delay_ms, "results": results}, indent=2))


if __name__ == "__main__":
    main()
