"""Helpers for the reliability suite: run the bridge as a real process, look at
remotes and workdirs the way an operator would, and state the invariants every
fault test ends with (fsck clean, no lock files, no force push, each change once).

Everything here reads real git; nothing is mocked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.formats.canonical_yaml import dumps
from bridge.formats.commits import parse
from bridge.formats.state import STATE_FILE
from tests.gitservers import git
from tests.reconcile.world import World

CRASH_ENV = "GITOPS_BRIDGE_CRASH_AT"
KILLED = -signal.SIGKILL


# --- running the bridge -----------------------------------------------------------


def bridge_cmd(config: Path, *args: str, once: bool = True) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bridge",
        "run",
        *(["--once"] if once else []),
        "--config",
        str(config),
        *args,
    ]


def run_bridge(
    world: World,
    config: Path,
    *args: str,
    crash_at: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """`python -m bridge run --once --config F` as a real process."""
    full = {**world.env, **(env or {})}
    full.pop(CRASH_ENV, None)
    if crash_at:
        full[CRASH_ENV] = crash_at
    return subprocess.run(
        bridge_cmd(config, *args),
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_bridge(
    world: World,
    config: Path,
    *args: str,
    once: bool = True,
    env: Mapping[str, str] | None = None,
    crash_at: str | None = None,
) -> subprocess.Popen[str]:
    full = {**world.env, **(env or {})}
    full.pop(CRASH_ENV, None)
    if crash_at:
        full[CRASH_ENV] = crash_at
    return subprocess.Popen(
        bridge_cmd(config, *args, once=once),
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str, str]:
    """SIGTERM (a clean shutdown), then the exit code and output."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err


def run_together(
    runs: Sequence[tuple[World, Path, str | None]], timeout: float = 120
) -> list[subprocess.CompletedProcess[str]]:
    """Start several `run --once` processes at the same moment; wait for all."""
    procs = [start_bridge(world, config, crash_at=crash) for world, config, crash in runs]
    done = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


# --- a scenario: its own remotes and workdir, the world's control plane ------------


@dataclass
class Scenario:
    """One bridge installation: a config, bare remotes per namespace, a workdir."""

    world: World
    root: Path
    config: Path
    remotes: dict[str, Path]

    @property
    def workdir(self) -> Path:
        return self.root / "workdir"

    def run(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return run_bridge(self.world, self.config, *args, **kwargs)

    def settings(self, **overrides: Any) -> Any:
        from bridge.config import load_settings

        return load_settings(self.write_config(**overrides), env=self.world.env)

    def write_config(self, **overrides: Any) -> Path:
        doc = self.world.config(
            **{
                "targets": [
                    {"namespace": ns, "repo": remote.as_uri(), "branch": "main"}
                    for ns, remote in self.remotes.items()
                ],
                "git.workdir": str(self.workdir),
                **overrides,
            }
        )
        self.config.write_text(dumps(doc))
        return self.config


def scenario(world: World, name: str, **overrides: Any) -> Scenario:
    root = world.root / "scenarios" / name
    remotes = {}
    for ns in world.namespaces:
        remote = root / "remotes" / f"{ns}.git"
        remote.parent.mkdir(parents=True, exist_ok=True)
        git("init", "-q", "--bare", "-b", "main", str(remote))
        git("config", "core.logAllRefUpdates", "always", cwd=remote)
        remotes[ns] = remote
    s = Scenario(world, root, root / "bridge.yaml", remotes)
    s.write_config(**overrides)
    return s


def slow_pushes(s: Scenario, seconds: float) -> None:
    """A pre-receive hook that stalls every push to the scenario's remotes."""
    for remote in s.remotes.values():
        hook = remote / "hooks" / "pre-receive"
        hook.parent.mkdir(exist_ok=True)
        hook.write_text(f"#!/bin/sh\ncat >/dev/null\nsleep {seconds}\n")
        hook.chmod(0o755)


def fast_pushes(s: Scenario) -> None:
    for remote in s.remotes.values():
        (remote / "hooks" / "pre-receive").unlink(missing_ok=True)


# --- looking at a remote ------------------------------------------------------------


def head(remote: Path, branch: str = "main") -> str:
    return git(
        "rev-parse", "-q", "--verify", f"refs/heads/{branch}", cwd=remote, check=False
    ).strip()


def tree(remote: Path, ref: str = "main") -> dict[str, str]:
    out = git("ls-tree", "-r", "-z", "--full-tree", ref, cwd=remote, check=False)
    entries = {}
    for record in out.split("\0"):
        if record:
            meta, _, path = record.partition("\t")
            entries[path] = meta.split()[2]
    return entries


def blob(remote: Path, oid: str) -> bytes:
    return subprocess.run(
        ["git", "cat-file", "blob", oid], cwd=remote, capture_output=True, check=True
    ).stdout


def comparable_tree(remote: Path) -> dict[str, Any]:
    """The tree with what is random by design taken out: sealed secrets (fresh
    nonces and data keys) are compared by path, the generated Postgres password
    (escrow, digest) by presence; every other byte must be equal."""
    out: dict[str, Any] = {}
    for path, oid in tree(remote).items():
        name = path.rsplit("/", 1)[-1]
        if name.startswith("secret-"):
            out[path] = "<sealed>"
        elif name == STATE_FILE:
            state = json.loads(blob(remote, oid))
            state["escrow"] = sorted(state.get("escrow", {}))
            for file, record in state.get("secrets", {}).items():
                if file.startswith("secret-postgres"):
                    record["digest"] = "<generated password>"
            state["files"] = {
                k: ("<sealed>" if k.startswith("secret-") else v)
                for k, v in state.get("files", {}).items()
            }
            out[path] = state
        else:
            out[path] = oid
    return out


@dataclass(frozen=True)
class Commit:
    sha: str
    author: str
    subject: str
    kind: str | None
    deployment_id: str | None
    revision_id: str | None


def commits(remote: Path, ref: str = "main") -> list[Commit]:
    """Every commit reachable from `ref`, newest first."""
    raw = git("log", "--format=%H%x00%ae%x00%B%x1e", ref, cwd=remote, check=False)
    found = []
    for record in raw.split("\x1e"):
        record = record.strip("\n")
        if not record:
            continue
        sha, author, body = record.split("\x00", 2)
        parsed = parse(body)
        found.append(
            Commit(
                sha=sha,
                author=author,
                subject=body.split("\n", 1)[0],
                kind=parsed.kind if parsed else None,
                deployment_id=parsed.deployment_id if parsed else None,
                revision_id=parsed.revision_id if parsed else None,
            )
        )
    return found


def changes(remote: Path) -> Counter[tuple[str | None, str | None, str | None]]:
    """(kind, deployment id, revision id) of every bridge commit, counted."""
    return Counter((c.kind, c.deployment_id, c.revision_id) for c in commits(remote) if c.kind)


def assert_each_change_once(remote: Path) -> None:
    counted = changes(remote)
    twice = {k: n for k, n in counted.items() if n > 1}
    assert not twice, f"{remote.name}: one change committed more than once: {twice}"


def assert_fsck_clean(repo: Path) -> None:
    out = subprocess.run(
        ["git", "fsck", "--strict", "--no-dangling", "--no-progress"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0 and not out.stdout.strip(), (
        f"git fsck --strict on {repo}: {out.stdout}{out.stderr}"
    )


def lock_files(root: Path) -> list[Path]:
    """Git lock and temp files under `root` (the workdir's own flock files excluded)."""
    found = []
    for dirpath, _dirs, files in os.walk(root):
        here = Path(dirpath)
        for name in files:
            path = here / name
            if here == root and name.endswith(".lock"):
                continue  # <clone>.lock beside the clone: the bridge's flock file, by design
            if name.endswith(".lock") or name.startswith(
                ("tmp_pack_", "tmp_idx_", "bridge-index-")
            ):
                found.append(path)
    return found


def reflog_length(remote: Path, branch: str = "main") -> int:
    log = remote / "logs" / "refs" / "heads" / branch
    return len(log.read_text().splitlines()) if log.exists() else 0


def assert_no_force_push(remote: Path, branch: str = "main", skip: int = 0) -> None:
    """Every update of the branch in the remote's reflog (after the first `skip`,
    e.g. a human's own force push) was a fast-forward."""
    log = remote / "logs" / "refs" / "heads" / branch
    if not log.exists():
        assert head(remote, branch) == "", f"{remote}: no reflog (core.logAllRefUpdates is off)"
        return
    zero = "0" * 40
    for line in log.read_text().splitlines()[skip:]:
        old, new = line.split(" ", 2)[:2]
        if old == zero or new == zero:
            continue
        ok = subprocess.run(
            ["git", "merge-base", "--is-ancestor", old, new], cwd=remote, check=False
        ).returncode
        assert ok == 0, (
            f"{remote.name}: {branch} moved {old[:12]} -> {new[:12]}, not a fast-forward"
        )


def assert_healthy(remotes: Iterable[Path], workdir: Path | None = None) -> None:
    for remote in remotes:
        assert_fsck_clean(remote)
        assert_no_force_push(remote)
        assert lock_files(remote) == []
    if workdir is not None and workdir.exists():
        assert lock_files(workdir) == [], lock_files(workdir)
        for clone in workdir.iterdir():
            if (
                clone.is_dir()
                and (clone / "objects").is_dir()
                and not clone.name.endswith(".broken")
            ):
                assert_fsck_clean(clone)


def files_under(root: Path) -> list[Path]:
    """Every file and symlink under `root`, relative to it."""
    out = []
    for dirpath, dirs, files in os.walk(root):
        for name in [*files, *(d for d in dirs if (Path(dirpath) / d).is_symlink())]:
            out.append((Path(dirpath) / name).relative_to(root))
    return out


# --- logs -------------------------------------------------------------------------


def log_lines(stderr: str, levels: Sequence[str] = ("ERROR", "CRITICAL")) -> list[str]:
    """Lines of the bridge's text log at the given levels."""
    return [line for line in stderr.splitlines() if any(f" {lv} " in line[:40] for lv in levels)]


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)
