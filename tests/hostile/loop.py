"""The hostile-input suite's harness: the `run` loop as a real process over two
targets, and the checks every attack ends with.

An attack is made while the loop runs; then the other target gets a change and
the test waits for it to land. Every test then states the same things: the
loop is still alive, the other target's change landed, the failure is named,
nothing was deleted, no credential or secret value appears anywhere (remotes'
whole object stores, the workdir, the log), and the bridge process stayed
under the pod's memory limit (peak RSS, `VmHWM`).

Real parts only: the local control plane on loopback (with `/_faults` for
misbehaving answers, or a hostile server of the test's own in front of it),
real bare remotes, the bridge as `python -m bridge run --listen`.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.formats.state import STATE_FILE
from tests.gitservers import GIT_ENV, git
from tests.leakscan import scan_repo, scan_text
from tests.reconcile.world import World, make_world
from tests.reliability.harness import Scenario, blob, bridge_cmd, scenario, tree

POD_LIMIT_MB = 1024  # deploy/: the shipped Deployment's memory limit (1 GiB)
_SERVING = re.compile(r"serving /healthz, /readyz and /metrics on (\S+)")


def peak_rss_mb(pid: int) -> float:
    """The peak resident set of a live process (`VmHWM`), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


@dataclass
class Loop:
    """One `gitops-bridge run --listen 127.0.0.1:0` process; its log goes to a file."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    peak_mb: float = 0.0
    _address: str | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        if self.proc.poll() is None:
            try:
                self.peak_mb = max(self.peak_mb, peak_rss_mb(self.proc.pid))
            except (OSError, AssertionError):
                return self.proc.poll() is None  # it exited between the two looks
            if self.peak_mb >= POD_LIMIT_MB:
                # What the kubelet would do (an OOM kill), and at once: a process
                # growing at 250 MB/s must not take the test machine with it.
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"the bridge passed the pod's memory limit: peak RSS {self.peak_mb:.0f} MB "
                    f"(limit {POD_LIMIT_MB} MB); killed"
                )
            return True
        return False

    def cycles(self) -> int:
        """Cycles finished (the `cycle:` line) or abandoned (a control-plane error)."""
        return sum(
            1
            for line in self.log().splitlines()
            if "event=cycle" in line or "nothing changed this cycle" in line
        )

    def wait(self, predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert self.alive(), f"the bridge died while waiting for {what}:\n{self.log()[-4000:]}"
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:g}s waiting for {what}:\n{self.log()[-4000:]}"
                )
            time.sleep(0.1)

    def wait_cycles(self, count: int = 1, timeout: float = 60) -> None:
        """`count` more cycles from now."""
        start = self.cycles()
        self.wait(lambda: self.cycles() >= start + count, f"{count} more cycle(s)", timeout)

    @property
    def address(self) -> str:
        if self._address is None:
            self.wait(lambda: _SERVING.search(self.log()) is not None, "the listen address")
            found = _SERVING.search(self.log())
            assert found is not None
            self._address = found.group(1)
        return self._address

    def get(self, path: str, timeout: float = 5) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{self.address}{path}", timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def stop(self, timeout: float = 30) -> int:
        self.alive()  # last memory sample
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@dataclass
class TwoTargets:
    """A world with two namespaces, each its own target and remote, one
    deployment in each; `faults=True` on the control plane."""

    world: World
    scenario: Scenario
    ids: dict[str, str] = field(default_factory=dict)  # namespace -> its deployment's id
    loops: list[Loop] = field(default_factory=list)

    @property
    def remotes(self) -> dict[str, Path]:
        return self.scenario.remotes

    def start(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        config: Path | None = None,
        url: str | None = None,
        **overrides: Any,
    ) -> Loop:
        """Start the loop; `url` points the bridge at another control plane (e.g. a
        hostile proxy in front of the world's); `overrides` go into the config."""
        if url is not None:
            overrides["controlPlane.url"] = url
        path = config or self.scenario.write_config(**overrides)
        log_path = self.scenario.root / f"bridge-{len(self.loops)}.log"
        with log_path.open("wb") as out:
            proc = subprocess.Popen(
                [*bridge_cmd(path, "--listen", "127.0.0.1:0", *args, once=False)],
                env={**self.world.env, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.scenario.root,
            )
        loop = Loop(proc, log_path)
        self.loops.append(loop)
        return loop

    def arm(self, *rules: Mapping[str, Any]) -> None:
        """Fault rules on the world's control plane (`/_faults`, see
        bridge.localplane.faults.FaultRule). Sent as ASCII JSON, so a rule may
        carry a lone surrogate (its `\\ud800` escape is valid JSON)."""
        self._faults("POST", json.dumps({"rules": list(rules)}).encode())

    def clear_faults(self) -> None:
        self._faults("DELETE")

    def fault_rules(self) -> list[dict[str, Any]]:
        """The armed rules, each with how often it matched (`seen`) and fired (`hits`)."""
        rules: list[dict[str, Any]] = json.loads(self._faults("GET"))["rules"]
        return rules

    def _faults(self, method: str, body: bytes | None = None) -> bytes:
        request = urllib.request.Request(
            f"{self.world.url}/_faults",
            data=body,
            method=method,
            headers={"X-Api-Key": self.world.api_key, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer: bytes = response.read()
            return answer

    def change(self, namespace: str, image: str) -> None:
        """A new revision of the namespace's deployment, with this image."""
        self.world.admin.patch_deployment(
            self.ids[namespace], {"source_revision_config": {"image_uri": image}}
        )

    def landed(self, namespace: str, image: str) -> bool:
        """Whether the remote's head deploys `image` for the namespace's deployment."""
        from tests.reliability.harness import commits

        return any(
            c.kind == "deploy" and c.deployment_id == self.ids[namespace] and image in c.subject
            for c in commits(self.remotes[namespace])
        )

    def push(
        self,
        namespace: str,
        entries: Mapping[str, tuple[str, bytes] | None],
        message: str = "a human's commit",
    ) -> str:
        """A human's commit on the namespace's branch, made with plumbing in a clone
        (so any name and entry kind can be written) and pushed; its sha. Each path
        gets (mode, data): 100644 or 100755 a file, 120000 a symlink (data: its
        target), 160000 a gitlink (data: a commit id); None removes it."""
        clone = self.scenario.root / f"human-{time.monotonic_ns()}"
        remote = self.remotes[namespace]
        git("clone", "-q", "--bare", remote.as_uri(), str(clone))
        index = {"GIT_INDEX_FILE": str(clone / "human-index")}
        git("read-tree", "main", cwd=clone, **index)
        records = []
        for path, entry in entries.items():
            raw = path.encode("utf-8", "surrogateescape")
            if entry is None:
                records.append(b"0 " + b"0" * 40 + b"\t" + raw)
                continue
            mode, data = entry
            if mode == "160000":
                oid = data.decode()
            else:
                oid = (
                    subprocess.run(
                        ["git", "hash-object", "-w", "--stdin"],
                        cwd=clone,
                        input=data,
                        capture_output=True,
                        check=True,
                    )
                    .stdout.decode()
                    .strip()
                )
            records.append(f"{mode} {oid}\t".encode() + raw)
        subprocess.run(
            ["git", "update-index", "-z", "--index-info"],
            cwd=clone,
            input=b"\0".join(records) + b"\0",
            env={**GIT_ENV, **index},
            check=True,
        )
        tree_id = git("write-tree", cwd=clone, **index).strip()
        who = {
            "GIT_AUTHOR_NAME": "A Human",
            "GIT_AUTHOR_EMAIL": "human@example.com",
            "GIT_COMMITTER_NAME": "A Human",
            "GIT_COMMITTER_EMAIL": "human@example.com",
        }
        sha = git("commit-tree", tree_id, "-p", "main", "-m", message, cwd=clone, **who).strip()
        git("push", "-q", "origin", f"{sha}:refs/heads/main", cwd=clone)
        return sha

    def read(self, namespace: str, path: str) -> bytes:
        """The bytes of one file at the head of the namespace's remote."""
        return blob(self.remotes[namespace], tree(self.remotes[namespace])[path])

    def folders(self, namespace: str) -> set[str]:
        """Deployment folders (with a state file) at the remote's head."""
        return {
            p.rsplit("/", 2)[-2]
            for p in tree(self.remotes[namespace])
            if p.endswith("/" + STATE_FILE)
        }


@contextmanager
def two_targets(root: Path, *, deploy: bool = True) -> Iterator[TwoTargets]:
    """The world of the hostile suite. With `deploy`, a first `run --once` has
    committed both deployments before the test starts."""
    with make_world(root, namespaces=("agents", "staging"), faults=True) as world:
        s = scenario(world, "hostile")
        env = TwoTargets(world, s)
        for ns in world.namespaces:
            dep = world.create(f"{ns}-app", ns, secrets_={"API_TOKEN": f"tok-{ns}-s3cr3t-value"})
            env.ids[ns] = dep["id"]
        if deploy:
            first = s.run()
            assert first.returncode == 0, first.stderr[-3000:]
        try:
            yield env
        finally:
            for loop in env.loops:
                loop.stop()


def assert_survived(
    env: TwoTargets,
    loop: Loop,
    *,
    other: str,
    before: Mapping[str, set[str]] | None = None,
    named: Iterable[str] = (),
    needles: Iterable[str] = (),
    timeout: float = 90,
) -> None:
    """The checks every attack ends with (see the module docstring).

    `other`: the namespace whose change must land while the attack stands.
    `before`: deployment folders per namespace before the attack (nothing deleted).
    `named`: texts the log must hold (the failure, named).
    `needles`: credentials or secret values that must appear nowhere."""
    image = f"registry.example.com/acme/agent:after-{time.monotonic_ns()}"
    env.change(other, image)
    loop.wait(lambda: env.landed(other, image), f"the change of target {other} to land", timeout)
    assert loop.alive(), loop.log()[-4000:]
    text = loop.log()
    for what in named:
        assert what in text, f"{what!r} not in the log:\n{text[-4000:]}"
    for ns, folders in (before or {}).items():
        now = env.folders(ns)
        assert folders <= now, f"{ns}: folders deleted: {sorted(folders - now)}"
    secrets = [*needles, env.world.api_key, *env.world.secret_values]
    for remote in env.remotes.values():
        assert scan_repo(remote, secrets) == [], remote
    assert scan_text(text, secrets) == [], "a secret in the log"
    workdir = env.scenario.workdir
    for path in workdir.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".log", ".txt", ""):
            if "objects" in path.parts:
                continue
            assert scan_text(path.read_text(errors="replace"), secrets) == [], path
    assert loop.peak_mb < POD_LIMIT_MB, f"peak RSS {loop.peak_mb:.0f} MB"
