"""Reconcile benchmark, measured the way users run the bridge. Prints JSON.

Every figure comes from a real `gitops-bridge` process installed the way the
README says (`pip install .` into a fresh virtualenv; for the `library` engine
also `scripts/install-libkustomize`, as the container image does), against the
local control plane served over loopback HTTP by `gitops-bridge control-plane
serve`, with N deployments over 10 namespaces and 10 bare remotes (tmpfs when
/dev/shm exists). Per run, on a fresh world:

- loop: one `gitops-bridge run --listen` process; each cycle's duration is the
  one the bridge logs (`"event": "cycle"`, `seconds`; the same figure as the
  /metrics histogram): cold (empty remotes), unchanged, one change, 100 changes;
- once: one `gitops-bridge run --once` process per figure, timed from spawn to
  exit (interpreter start, imports and clones included: what a CronJob or a CI
  job pays): unchanged and one change on the repos the loop left, cold on
  fresh remotes;
- memory: peak RSS of the bridge process plus its Python workers (sum of each
  one's peak), and the peak of the whole process tree summed over live
  processes (git and kubectl included; a child not yet past exec, which
  shares its parent's memory, counted once), sampled every 20 ms.

Setups are `<provider>/<engine>`: provider sops (age), sealed-secrets or none;
engine `kubectl` (the default install: Kustomize through `kubectl kustomize`)
or `library` (Kustomize's Go library in the validation workers).
`sops/kubectl` is the recommended setup (README).

    python benchmarks/reconcile.py --n 1000 --runs 5 --setup sops/kubectl
    python benchmarks/reconcile.py --n 1000 --runs 2            # every setup
    python benchmarks/reconcile.py --n 10000 --runs 5 --setup sops/kubectl --setup sops/library

benchmarks/inprocess.py is the in-process form (MockTransport control plane,
py-spy profiles): a shortcut for finding where time goes, not a figure users see.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

NAMESPACES = [f"ns-{i:02d}" for i in range(10)]
PROVIDERS = ("sops", "sealed-secrets", "none")
ENGINES = ("kubectl", "library")
RECOMMENDED = "sops/kubectl"
VENVS = REPO / "benchmarks" / ".venvs"
POLL_INTERVAL = 3  # seconds: room to apply a change between two loop cycles
CYCLE_TIMEOUT = 900.0


# --- installs ----------------------------------------------------------------------


def install(engine: str, *, reinstall: bool) -> Path:
    """A virtualenv with the bridge as the README installs it; its `gitops-bridge`."""
    venv = VENVS / engine
    python = venv / "bin" / "python"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", str(REPO)], check=True, **quiet)
        if engine == "library":
            subprocess.run(
                [str(REPO / "scripts" / "install-libkustomize"), str(python)], check=True, **quiet
            )
    elif reinstall:
        # The tree may have changed since the venv was made: this tree, no deps.
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "--force-reinstall",
                "--no-deps",
                str(REPO),
            ],
            check=True,
            **quiet,
        )
    has_library = (
        subprocess.run(
            [str(python), "-c", "import importlib.util as u; print(u.find_spec('pykustomize'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        != "None"
    )
    if has_library != (engine == "library"):
        raise SystemExit(f"{venv}: pykustomize installed={has_library}, engine {engine}")
    return venv / "bin" / "gitops-bridge"


# --- the world: control plane, remotes, config ---------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def control_plane(bridge: Path, db: Path, api_key: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            str(bridge),
            "control-plane",
            "serve",
            "--port",
            str(port),
            "--db",
            str(db),
            "--api-key",
            api_key,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        for _ in range(200):
            try:
                httpx.get(url + "/v2/listeners", headers={"X-Api-Key": api_key}, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        else:
            raise SystemExit("the control plane did not start")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def populate(bridge: Path, db: Path, api_key: str, n: int) -> tuple[str, list[str]]:
    """A control-plane database with one listener and N deployments; (listener id, ids)."""
    from bridge.controlplane.admin import AdminClient, deployment_request

    with control_plane(bridge, db, api_key) as url:
        with AdminClient.connect(url, api_key, timeout=30) as admin:
            listener_id = str(admin.create_listener("bench-cluster", NAMESPACES)["id"])

        def create(chunk: range) -> list[str]:
            with AdminClient.connect(url, api_key, timeout=30) as admin:
                return [
                    str(
                        admin.create_deployment(
                            deployment_request(
                                f"agent-{i:05d}",
                                listener_id,
                                NAMESPACES[i % len(NAMESPACES)],
                                f"registry.example.com/acme/agent-{i}:1.0.0",
                                resource_spec={"min_scale": 1, "max_scale": 1 + i % 3},
                            )
                        )["id"]
                    )
                    for i in chunk
                ]

        step = max(1, n // 4)
        with ThreadPoolExecutor(max_workers=4) as pool:
            ids = [
                i
                for part in pool.map(
                    create, [range(a, min(n, a + step)) for a in range(0, n, step)]
                )
                for i in part
            ]
    return listener_id, ids


def sealed_secrets_cert(path: Path) -> None:
    """A controller certificate as kubeseal --fetch-cert gives one (the tests' own maker)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tests.secrets.test_sealed import self_signed

    path.write_bytes(self_signed(rsa.generate_private_key(public_exponent=65537, key_size=4096)))


def write_config(
    root: Path, name: str, url: str, listener_id: str, provider: str, keys: Path
) -> Path:
    import pyrage

    targets = []
    for ns in NAMESPACES:
        remote = root / f"{name}-remotes" / f"{ns}.git"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
        targets.append({"namespace": ns, "repo": remote.as_uri(), "branch": "main"})
    secrets: dict[str, Any] = {"provider": provider}
    if provider == "sops":
        identity = pyrage.x25519.Identity.generate()
        secrets["sops"] = {"ageRecipients": [str(identity.to_public())]}
    elif provider == "sealed-secrets":
        cert = keys / "sealed-secrets.pem"
        if not cert.exists():
            sealed_secrets_cert(cert)
        secrets["sealedSecrets"] = {"certFile": str(cert)}
    config = {
        "controlPlane": {"url": url, "listenerId": listener_id, "pollInterval": POLL_INTERVAL},
        "targets": targets,
        "git": {"workdir": str(root / f"{name}-work"), "authorEmail": "bench@example.com"},
        "secrets": secrets,
    }
    path = root / f"{name}.yaml"
    path.write_text(json.dumps(config))
    return path


# --- measuring processes ---------------------------------------------------------------


def _status(pid: int) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _kb(fields: dict[str, str], key: str) -> float:
    return int(fields.get(key, "0 kB").split()[0]) / 1024


class Memory:
    """Samples a process tree every 20 ms: peak of bridge + Python workers (sum of
    each one's VmHWM) and peak of the whole tree (sum of live VmRSS)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.hwm: dict[int, float] = {}
        self.tree_peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _tree(self) -> list[tuple[int, int]]:
        """(pid, parent pid) of every process of the tree."""
        # /proc/PID/task/TID/children: cheaper than reading every process's stat
        # 50 times a second on a 2-core machine the benchmark shares.
        found, todo = [], [(self.pid, 0)]
        while todo:
            pid, parent = todo.pop()
            found.append((pid, parent))
            # A process may end between two reads: its task folder vanishes
            # under glob (FileNotFoundError), which once ended the sampler
            # and left that run's memory figures short.
            try:
                tasks = list(Path(f"/proc/{pid}/task").glob("*/children"))
            except OSError:
                tasks = []
            for children in tasks:
                with contextlib.suppress(OSError, ValueError):
                    todo.extend((int(c), pid) for c in children.read_text().split())
        return found

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0.0
            tree = self._tree()
            cmdlines = {pid: _cmdline(pid) for pid, _parent in tree}
            for pid, parent in tree:
                # A child between fork and exec (Python spawns with vfork) still
                # shows its parent's memory, which it shares: counted once.
                if parent and cmdlines[pid] == cmdlines.get(parent):
                    continue
                fields = _status(pid)
                total += _kb(fields, "VmRSS")
                if "python" in fields.get("Name", "") or pid == self.pid:
                    self.hwm[pid] = max(self.hwm.get(pid, 0.0), _kb(fields, "VmHWM"))
            self.tree_peak = max(self.tree_peak, total)
            self._stop.wait(0.02)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {
            "bridge_mb": round(self.hwm.get(self.pid, 0.0), 1),
            "bridge_workers_mb": round(sum(self.hwm.values()), 1),
            "tree_mb": round(self.tree_peak, 1),
        }


def bridge_env(api_key: str, bridge_key: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANGSMITH_API_KEY": api_key,
        "GITOPS_BRIDGE_KEY": bridge_key,
        "LC_ALL": "C.UTF-8",
    }
    return env


def deployed(summary: str) -> int:
    """How many deployments a cycle summary says were deployed."""
    found = re.search(r"(\d+) deployed", summary)
    return int(found.group(1)) if found else 0


def cycle_lines(stream: Any, into: queue.Queue[dict[str, Any]], log: list[str]) -> None:
    for line in stream:
        log.append(line)
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if doc.get("event") == "cycle":
            into.put(doc)


def once(bridge: Path, config: Path, env: dict[str, str]) -> dict[str, Any]:
    """One `run --once` process: wall seconds, the cycle's own seconds, memory."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [str(bridge), "--log-format", "json", "run", "--once", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    memory = Memory(proc.pid)
    _, stderr = proc.communicate(timeout=CYCLE_TIMEOUT)
    wall = time.perf_counter() - started
    mem = memory.stop()
    cycles = [json.loads(line) for line in stderr.splitlines() if '"event": "cycle"' in line]
    if proc.returncode != 0 or len(cycles) != 1:
        raise SystemExit(f"run --once exited {proc.returncode}:\n{stderr[-3000:]}")
    return {
        "wall_s": wall,
        "cycle_s": float(cycles[0]["seconds"]),
        "memory": mem,
        "summary": cycles[0]["message"],
    }


class Loop:
    """A `gitops-bridge run --listen` process and the cycles it logs."""

    def __init__(self, bridge: Path, config: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [
                str(bridge),
                "--log-format",
                "json",
                "run",
                "--config",
                str(config),
                "--listen",
                f"127.0.0.1:{free_port()}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.memory = Memory(self.proc.pid)
        self.cycles: queue.Queue[dict[str, Any]] = queue.Queue()
        self.log: list[str] = []
        assert self.proc.stderr is not None
        threading.Thread(
            target=cycle_lines, args=(self.proc.stderr, self.cycles, self.log), daemon=True
        ).start()

    def next_cycle(self) -> dict[str, Any]:
        try:
            return self.cycles.get(timeout=CYCLE_TIMEOUT)
        except queue.Empty:
            raise SystemExit("no cycle logged:\n" + "".join(self.log[-30:])) from None

    def cycle_deploying(self, count: int) -> dict[str, Any]:
        """The first cycle that deployed `count` deployments (the change just made)."""
        for _ in range(5):
            cycle = self.next_cycle()
            if deployed(cycle["message"]) == count:
                return cycle
        raise SystemExit(f"no cycle deployed {count}:\n" + "".join(self.log[-30:]))

    def stop(self) -> dict[str, float]:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)
        return self.memory.stop()


def new_revision(url: str, api_key: str, ids: list[str], tag: str) -> None:
    from bridge.controlplane.admin import AdminClient

    with AdminClient.connect(url, api_key, timeout=30) as admin:
        for dep_id in ids:
            image = admin.get_deployment(dep_id)["source_revision_config"]["image_uri"]
            admin.patch_deployment(
                dep_id, {"source_revision_config": {"image_uri": f"{image}-{tag}"}}
            )


# --- one run, one setup ----------------------------------------------------------------


def one_run(
    setup: str,
    bridge: Path,
    template: Path,
    listener_id: str,
    ids: list[str],
    n: int,
    once_cold: bool = True,
) -> dict[str, Any]:
    import secrets as random_secrets

    provider, _engine = setup.split("/")
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    api_key = "bench-" + random_secrets.token_hex(16)
    bridge_key = random_secrets.token_hex(32)
    env = bridge_env(api_key, bridge_key)
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bridge-bench-", dir=base) as tmp:
        root = Path(tmp)
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{template}{suffix}").exists():
                shutil.copy(f"{template}{suffix}", root / f"cp.db{suffix}")
        with control_plane(bridge, root / "cp.db", api_key) as url:
            main = write_config(root, "main", url, listener_id, provider, root)
            loop = Loop(bridge, main, env)
            try:
                figures["loop_cold"] = loop.cycle_deploying(n)["seconds"]
                figures["loop_unchanged"] = loop.next_cycle()["seconds"]
                new_revision(url, api_key, ids[:1], "a")
                figures["loop_one_change"] = loop.cycle_deploying(1)["seconds"]
                many = ids[1 : 1 + min(100, n - 2)]
                new_revision(url, api_key, many, "b")
                figures["loop_hundred_changes"] = loop.cycle_deploying(len(many))["seconds"]
            finally:
                figures["loop_memory"] = loop.stop()
            unchanged = once(bridge, main, env)
            figures["once_unchanged"] = unchanged["wall_s"]
            figures["once_unchanged_cycle"] = unchanged["cycle_s"]
            new_revision(url, api_key, ids[-1:], "c")
            change = once(bridge, main, env)
            if deployed(change["summary"]) != 1:
                raise SystemExit(f"one change: {change['summary']}")
            figures["once_one_change"] = change["wall_s"]
            figures["once_one_change_cycle"] = change["cycle_s"]
            if once_cold:
                fresh = write_config(root, "fresh", url, listener_id, provider, root)
                cold_once = once(bridge, fresh, env)
                figures["once_cold"] = cold_once["wall_s"]
                figures["once_cold_cycle"] = cold_once["cycle_s"]
                figures["once_cold_memory"] = cold_once["memory"]
    figures["load_avg_1m"] = round(os.getloadavg()[0], 2)
    return figures


TIMES = (
    "loop_cold",
    "loop_unchanged",
    "loop_one_change",
    "loop_hundred_changes",
    "once_cold",
    "once_unchanged",
    "once_one_change",
    "once_cold_cycle",
    "once_unchanged_cycle",
    "once_one_change_cycle",
)


def summarise(setup: str, n: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"setup": setup, "n": n, "runs": len(runs)}
    for key in TIMES:
        values = [r[key] for r in runs if key in r]
        if not values:
            continue
        out[key] = {
            "min_s": round(min(values), 3),
            "median_s": round(statistics.median(values), 3),
            "max_s": round(max(values), 3),
        }
    for key in ("loop_memory", "once_cold_memory"):
        if key in runs[0]:
            out[key] = {m: max(r[key][m] for r in runs) for m in runs[0][key]}
    out["load_avg_1m"] = [r["load_avg_1m"] for r in runs]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, action="append", help="deployments (repeatable)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--setup",
        action="append",
        choices=[f"{p}/{e}" for p in PROVIDERS for e in ENGINES],
        help=f"provider/engine (repeatable; default: all six). Recommended: {RECOMMENDED}",
    )
    parser.add_argument(
        "--no-reinstall", action="store_true", help="keep the bridge already in benchmarks/.venvs"
    )
    parser.add_argument(
        "--no-once-cold",
        action="store_true",
        help="skip the cold `run --once` (it repeats the loop's cold cycle in a new process)",
    )
    args = parser.parse_args()
    sizes = args.n or [1000]
    setups = args.setup or [f"{p}/{e}" for p in PROVIDERS for e in ENGINES]
    bridges = {
        engine: install(engine, reinstall=not args.no_reinstall)
        for engine in sorted({s.split("/")[1] for s in setups})
    }
    results = []
    with tempfile.TemporaryDirectory(prefix="bridge-bench-cp-") as tmp:
        for n in sizes:
            template = Path(tmp) / f"cp-{n}.db"
            api_key = "bench-populate"
            started = time.perf_counter()
            listener_id, ids = populate(next(iter(bridges.values())), template, api_key, n)
            print(f"populated {n} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            for setup in setups:
                runs = []
                for run in range(args.runs):
                    bridge = bridges[setup.split("/")[1]]
                    runs.append(
                        one_run(setup, bridge, template, listener_id, ids, n, not args.no_once_cold)
                    )
                    print(
                        json.dumps({"setup": setup, "n": n, "run": run, **runs[-1]}),
                        file=sys.stderr,
                        flush=True,
                    )
                results.append(summarise(setup, n, runs))
    print(json.dumps({"benchmark": "reconcile", "results": results}, indent=2))


if __name__ == "__main__":
    main()
