"""Attack: another user of the machine (or of the volume) reads what the bridge wrote.

The status file, the local control plane's database (plaintext secret values
of its deployments, in the file and in its -wal/-shm files) and the demo's keys
are created mode 0600, even under a permissive umask (0o000, as in many
containers), and a file an older version left 0644 is narrowed when reused.
Real processes, each started under `umask 000`.
"""

from __future__ import annotations

import re
import secrets
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from bridge.controlplane.admin import AdminClient, deployment_request
from tests.reconcile.world import World, make_world
from tests.reliability.harness import scenario

# Anything that holds a secret may be read by its owner only.
PRIVATE = 0o600


def under_umask_000(cmd: Sequence[str]) -> list[str]:
    return ["sh", "-c", 'umask 000 && exec "$@"', "sh", *cmd]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with make_world(tmp_path, namespaces=("agents",)) as w:
        w.create("alpha", secrets_={"API_TOKEN": "tok-" + secrets.token_hex(12)})
        yield w


def test_the_status_file_is_private(world: World) -> None:
    s = scenario(world, "private")
    # What an older version left: a world-readable status file and temporary.
    s.workdir.mkdir(parents=True)
    for name in ("status.json", "status.json.tmp"):
        (s.workdir / name).write_text("{}\n")
        (s.workdir / name).chmod(0o666)
    cmd = [sys.executable, "-m", "bridge", "run", "--once", "--config", str(s.config)]
    done = subprocess.run(
        under_umask_000(cmd), env=world.env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    status = s.workdir / "status.json"
    assert '"outcomes"' in status.read_text()  # written by this run
    assert mode(status) == PRIVATE, oct(mode(status))
    # No other file of the run beside it is readable by others either.
    leftovers = {
        p.name: oct(mode(p))
        for p in s.workdir.iterdir()
        if p.is_file() and p.name != "status.json.tmp" and mode(p) & 0o077
    }
    assert leftovers == {}


def serve_control_plane(db: Path, port: int, api_key: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "bridge", "control-plane", "serve"]
    cmd += ["--db", str(db), "--port", str(port), "--api-key", api_key]
    proc = subprocess.Popen(
        under_umask_000(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
            return proc
        except httpx.TransportError:
            assert proc.poll() is None, "the control plane exited"
            assert time.monotonic() < deadline, "the control plane never answered"
            time.sleep(0.1)


def test_the_control_plane_database_is_private(tmp_path: Path) -> None:
    db = tmp_path / "control-plane.db"
    api_key = "lsv2_pt_" + secrets.token_hex(16)
    value = "sk-live-" + secrets.token_hex(16)
    port = free_port()
    proc = serve_control_plane(db, port, api_key)
    try:
        with AdminClient.connect(f"http://127.0.0.1:{port}", api_key) as admin:
            listener = admin.create_listener("c1", ["agents"])
            admin.create_deployment(
                deployment_request(
                    "alpha",
                    listener["id"],
                    "agents",
                    "registry.example.com/a:1",
                    secrets=[{"name": "OPENAI_API_KEY", "value": value}],
                )
            )
        files = [p for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists()]
        assert Path(f"{db}-wal") in files  # WAL mode: the write is in the -wal file
        # The test means something: the plaintext value is in these files.
        assert any(value.encode() in p.read_bytes() for p in files)
        assert {p.name: oct(mode(p)) for p in files} == {p.name: oct(PRIVATE) for p in files}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # A database an older version left world-readable is narrowed when served again.
    db.chmod(0o644)
    proc = serve_control_plane(db, port, api_key)
    try:
        assert mode(db) == PRIVATE, oct(mode(db))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_demo_keeps_keys_and_secret_values_private(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    cmd = [sys.executable, "-m", "bridge", "demo", "--dir", str(folder)]
    done = subprocess.run(under_umask_000(cmd), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    keys = folder / "keys"
    assert mode(keys) == 0o700, oct(mode(keys))
    env_text = (keys / "demo.env").read_text()
    needles = [
        m.encode() for m in re.findall(r"(?:LANGSMITH_API_KEY|GITOPS_BRIDGE_KEY)=(\S+)", env_text)
    ]
    needles += [
        m.encode() for m in re.findall(r"AGE-SECRET-KEY-\S+", (keys / "age.agekey").read_text())
    ]
    assert len(needles) == 3, env_text
    demo_secrets = re.compile(rb"(?:sk|zd)-demo-[0-9a-f]{32}")
    holding = {}
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if any(n in data for n in needles) or demo_secrets.search(data):
                holding[str(path.relative_to(folder))] = oct(mode(path))
    # The keys, and the database with the deployments' secret values.
    assert {"keys/demo.env", "keys/age.agekey", "control-plane.db"} <= set(holding)
    assert holding == dict.fromkeys(holding, oct(PRIVATE))
