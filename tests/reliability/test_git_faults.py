"""Guarantee 4: git faults. An unreachable remote or refused credentials fail
that target only (exit 4, a message naming it and what to do) and heal when the
remote is back; a human pushing in a loop never loses a commit and is never
overwritten; a branch rewritten by force stops that target loudly, every cycle,
until an operator accepts the new history; a corrupted local clone is moved
aside and cloned again within the same cycle.

Real bare remotes, a real smart-HTTP git server with Basic auth, real processes.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.errors import GitRemoteUnavailable, HistoryRewritten
from tests.gitservers import http_git_server
from tests.leakscan import scan_text
from tests.reconcile.world import World, git, make_world
from tests.reliability.harness import (
    assert_each_change_once,
    assert_fsck_clean,
    assert_healthy,
    assert_no_force_push,
    commits,
    head,
    log_lines,
    reflog_length,
    run_bridge,
    tree,
    wait_for,
)

NEW_IMAGE = "registry.example.com/acme/agent:2.0.0"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with make_world(tmp_path) as w:
        yield w


def populate(world: World) -> dict[str, dict[str, Any]]:
    made = [
        world.create("alpha", secrets_={"TOKEN": "tok-" + "g1tfau1t" * 4}),
        world.create("beta"),
        world.create("solo", namespace="staging"),
    ]
    return {d["name"]: d for d in made}


def patch_image(world: World, dep: dict[str, Any], image: str = NEW_IMAGE) -> dict[str, Any]:
    patched: dict[str, Any] = world.admin.patch_deployment(
        dep["id"], {"source_revision_config": {"image_uri": image}}
    )
    return patched


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens once the socket is closed


def target_error(report: Any, namespace: str) -> Any:
    return next(t.error for t in report.targets if t.target.namespace == namespace)


# --- unreachable, refused ------------------------------------------------------------


def test_an_unreachable_remote_fails_that_target_only_and_heals(world: World) -> None:
    deps = populate(world)
    url = f"http://127.0.0.1:{closed_port()}/agents.git"
    targets = [
        {"namespace": "agents", "repo": url, "branch": "main"},
        {"namespace": "staging", "repo": world.remotes["staging"].as_uri(), "branch": "main"},
    ]
    report = world.cycle(world.settings(targets=targets))
    assert report.exit_code() == 4
    error = target_error(report, "agents")
    assert isinstance(error, GitRemoteUnavailable)
    assert "agents" in str(error) and url in str(error) and "retries next cycle" in str(error)
    assert target_error(report, "staging") is None
    assert [c.deployment_id for c in commits(world.remotes["staging"])] == [deps["solo"]["id"]]

    # The same remote goes away and comes back (file:// so it keeps its URL).
    assert world.cycle().exit_code() == 0
    aside = world.remotes["agents"].with_name("agents.git.away")
    world.remotes["agents"].rename(aside)
    deps["beta"] = patch_image(world, deps["beta"])
    report = world.cycle()
    assert report.exit_code() == 4 and target_error(report, "staging") is None
    aside.rename(world.remotes["agents"])
    report = world.cycle()
    assert report.exit_code() == 0
    assert commits(world.remotes["agents"])[0].revision_id == deps["beta"]["latest_revision_id"]
    assert_healthy(world.remotes.values(), world.root / "workdir")


def test_refused_credentials_fail_that_target_only_and_never_leak(world: World) -> None:
    deps = populate(world)
    served = world.root / "served"
    served.mkdir()
    remote = served / "agents.git"
    git("init", "-q", "--bare", "-b", "main", str(remote))
    git("config", "http.receivepack", "true", cwd=remote)
    wrong = "wr0ng-pa55word-" + "x" * 12
    with http_git_server(served, "bot", "right-password-123") as base:
        targets = [
            {"namespace": "agents", "repo": base + "agents.git", "branch": "main"},
            {"namespace": "staging", "repo": world.remotes["staging"].as_uri(), "branch": "main"},
        ]
        config = world.write_config(
            targets=targets,
            **{"git.https": {"usernameEnv": "GIT_BOT_USER", "passwordEnv": "GIT_BOT_PASSWORD"}},
        )
        refused = run_bridge(world, config, env={"GIT_BOT_USER": "bot", "GIT_BOT_PASSWORD": wrong})
        assert refused.returncode == 4, refused.stderr[-3000:]
        errors = log_lines(refused.stderr)
        assert any("agents" in e and "GIT_BOT_PASSWORD" in e for e in errors), errors
        assert scan_text(refused.stdout + refused.stderr, [wrong]) == []
        assert head(remote) == ""
        assert [c.deployment_id for c in commits(world.remotes["staging"])] == [deps["solo"]["id"]]
        for clone in (world.root / "workdir").iterdir():
            if clone.is_dir():
                for path in clone.rglob("*"):
                    if path.is_file():
                        assert wrong.encode() not in path.read_bytes(), path

        fixed = run_bridge(
            world, config, env={"GIT_BOT_USER": "bot", "GIT_BOT_PASSWORD": "right-password-123"}
        )
        assert fixed.returncode == 0, fixed.stderr[-3000:]
        assert {c.deployment_id for c in commits(remote)} == {
            deps["alpha"]["id"],
            deps["beta"]["id"],
        }


# --- a human pushing in a loop ---------------------------------------------------------


class Human:
    """Commits a file of their own and pushes, again and again, rebasing when refused."""

    def __init__(self, world: World, every: float) -> None:
        self.clone = world.clone()
        self.every = every
        self.pushed: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Human:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)

    def _loop(self) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            name = f"docs/human-{i:04d}.md"
            (self.clone / "docs").mkdir(exist_ok=True)
            (self.clone / name).write_text(f"note {i}\n")
            git("add", name, cwd=self.clone)
            git("commit", "-qm", f"human note {i}", cwd=self.clone)
            for _ in range(50):
                push = subprocess.run(
                    ["git", "push", "-q", "origin", "HEAD:main"],
                    cwd=self.clone,
                    capture_output=True,
                    check=False,
                )
                if push.returncode == 0:
                    self.pushed.append(name)
                    break
                git("pull", "-q", "--rebase", "origin", "main", cwd=self.clone)
            self.stop.wait(self.every)


def human_races(
    world: World, cycles: int, every: float, max_wait: float | None, seconds: float = 600
) -> None:
    """Up to `cycles` bridge cycles (and at most `seconds`), each with a new
    revision to push, while a human pushes every `every` seconds. `max_wait`
    caps the backoff waits (the race stays real, the test stays short); None
    waits as configured."""
    deps = populate(world)
    assert world.cycle().exit_code() == 0
    settings = world.settings(**{"git.pushRetries": 8})
    capped = (lambda s: time.sleep(min(s, max_wait))) if max_wait is not None else time.sleep
    codes: list[int] = []
    expected = {("deploy", d["id"], d["latest_revision_id"]) for d in deps.values()}
    deadline = time.monotonic() + seconds
    with Human(world, every) as human:
        for step in range(cycles):
            if time.monotonic() > deadline:
                break
            name = ("alpha", "beta")[step % 2]
            deps[name] = patch_image(world, deps[name], f"registry.example.com/acme/agent:{step}")
            expected.add(("deploy", deps[name]["id"], deps[name]["latest_revision_id"]))
            from bridge.commands.wiring import make_reconciler

            reconciler, close = make_reconciler(settings, sleep=capped)
            try:
                report = reconciler.run_cycle()
            finally:
                close()
            codes.append(report.exit_code())
            wanted = step + 1
            wait_for(lambda: len(human.pushed) >= wanted, 30, "the human's next push")  # noqa: B023
    assert world.cycle().exit_code() == 0
    remote = world.remotes["agents"]
    # Every human commit is in the history, every file still at the tip.
    files = tree(remote)
    assert human.pushed and all(f in files for f in human.pushed)
    subjects = [c.subject for c in commits(remote)]
    assert all(f"human note {i + 1}" in subjects for i in range(len(human.pushed)))
    # Every bridge change landed once; nothing was forced.
    landed = {(c.kind, c.deployment_id, c.revision_id) for c in commits(remote) if c.kind}
    landed |= {(c.kind, c.deployment_id, c.revision_id) for c in commits(world.remotes["staging"])}
    assert expected <= landed
    assert_each_change_once(remote)
    assert_healthy(world.remotes.values(), world.root / "workdir")
    assert set(codes) <= {0, 4}, codes  # 4 only when every retry lost the race
    assert codes.count(0) >= 1, codes


def test_a_human_pushing_in_a_loop_is_never_overwritten(world: World) -> None:
    human_races(world, cycles=6, every=0.3, max_wait=0.3)


@pytest.mark.long
@pytest.mark.timeout(900)
def test_long_a_human_pushing_in_a_loop_with_real_backoff(world: World) -> None:
    human_races(world, cycles=1000, every=0.15, max_wait=None, seconds=240)


# --- a branch rewritten by force ---------------------------------------------------------


def test_a_force_pushed_branch_stops_that_target_until_an_operator_accepts_it(
    world: World,
) -> None:
    deps = populate(world)
    config = world.write_config()
    assert run_bridge(world, config).returncode == 0
    ours = head(world.remotes["agents"])
    # Someone replaces the branch with an unrelated history.
    other = world.root / "rewrite"
    git("init", "-q", "-b", "main", str(other))
    (other / "README.md").write_text("start over\n")
    git("add", "-A", cwd=other)
    git(
        "-c",
        "user.name=Ops",
        "-c",
        "user.email=ops@example.com",
        "commit",
        "-qm",
        "reset",
        cwd=other,
    )
    git("push", "-q", "--force", world.remotes["agents"].as_uri(), "main:main", cwd=other)
    theirs = head(world.remotes["agents"])
    humans = reflog_length(world.remotes["agents"])
    deps["beta"] = patch_image(world, deps["beta"])
    deps["solo"] = patch_image(world, deps["solo"])

    for _ in range(2):  # refused on every cycle, not only the first
        run = run_bridge(world, config)
        assert run.returncode == 4, run.stderr[-3000:]
        loud = log_lines(run.stderr, ("CRITICAL",))
        assert len(loud) == 1 and "agents" in loud[0], run.stderr[-3000:]
        assert ours in loud[0] and theirs in loud[0] and "rewritten" in loud[0]
        clone_dir = next(
            p for p in (world.root / "workdir").iterdir() if "agents" in p.name and p.is_dir()
        )
        assert str(clone_dir) in loud[0]  # what to delete to accept the new history
        assert head(world.remotes["agents"]) == theirs  # neither followed nor undone
        # The other target goes on.
        assert (
            commits(world.remotes["staging"])[0].revision_id == deps["solo"]["latest_revision_id"]
        )

    shutil.rmtree(clone_dir)  # the operator accepts the new history
    run = run_bridge(world, config)
    assert run.returncode == 0, run.stderr[-3000:]
    history = commits(world.remotes["agents"])
    assert history[-1].sha == theirs  # built on top of the new history
    assert {c.deployment_id for c in history if c.kind} == {deps["alpha"]["id"], deps["beta"]["id"]}
    assert_no_force_push(world.remotes["agents"], skip=humans)  # the bridge only fast-forwards
    assert_healthy([world.remotes["staging"]], world.root / "workdir")
    assert_fsck_clean(world.remotes["agents"])


def test_history_rewritten_in_process_is_a_target_error(world: World) -> None:
    populate(world)
    assert world.cycle().exit_code() == 0
    other = world.clone()
    git("reset", "-q", "--hard", "HEAD~1", cwd=other)
    git("push", "-q", "--force", "origin", "HEAD:main", cwd=other)
    report = world.cycle()
    assert isinstance(target_error(report, "agents"), HistoryRewritten)
    assert target_error(report, "staging") is None
    assert report.exit_code() == 4


# --- a corrupted local clone ----------------------------------------------------------------


def _objects(clone: Path) -> list[Path]:
    return [
        p
        for p in (clone / "objects").rglob("*")
        if p.is_file() and p.parent.name != "info" and not p.name.endswith((".idx", ".rev"))
    ]


def truncate_every_object(clone: Path) -> None:
    for path in _objects(clone):
        os.chmod(path, 0o644)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])


def truncate_one_blob(clone: Path) -> None:
    """The subtle one: refs and trees are fine, one state-file blob is not."""
    out = subprocess.run(
        ["git", f"--git-dir={clone}", "ls-tree", "-r", "main"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    oid = next(
        line.split()[2] for line in out.splitlines() if line.endswith(".gitops-bridge.state")
    )
    git(f"--git-dir={clone}", "repack", "-q", "-a", "-d")  # everything in one pack
    # Explode the pack so the blob is a loose object we can damage alone.
    packs = list((clone / "objects" / "pack").glob("*.pack"))
    for pack in packs:
        moved = pack.with_suffix(".pack.bak")
        pack.rename(moved)
        pack.with_suffix(".idx").unlink()
        with moved.open("rb") as data:
            subprocess.run(
                ["git", f"--git-dir={clone}", "unpack-objects", "-q"],
                stdin=data,
                check=True,
                capture_output=True,
            )
        moved.unlink()
        for extra in pack.parent.glob(pack.stem + ".*"):
            extra.unlink()
    loose = clone / "objects" / oid[:2] / oid[2:]
    os.chmod(loose, 0o644)
    loose.write_bytes(loose.read_bytes()[:5])


def delete_head_and_index(clone: Path) -> None:
    (clone / "HEAD").unlink()
    for index in clone.glob("*index*"):
        index.unlink()


def garbage_ref(clone: Path) -> None:
    ref = clone / "refs" / "heads" / "main"
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text("not-a-sha\n")
    (clone / "packed-refs").unlink(missing_ok=True)


def delete_objects(clone: Path) -> None:
    shutil.rmtree(clone / "objects")


@pytest.mark.parametrize(
    "corrupt",
    [
        truncate_every_object,
        truncate_one_blob,
        garbage_ref,
        pytest.param(delete_head_and_index, marks=pytest.mark.long),
        pytest.param(delete_objects, marks=pytest.mark.long),
    ],
)
def test_a_corrupted_local_clone_is_recloned_and_the_cycle_carries_on(
    world: World, corrupt: Callable[[Path], None]
) -> None:
    deps = populate(world)
    assert world.cycle().exit_code() == 0
    workdir = world.root / "workdir"
    clone = next(p for p in workdir.iterdir() if "agents" in p.name and p.is_dir())
    corrupt(clone)
    deps["beta"] = patch_image(world, deps["beta"])
    report = world.cycle()
    assert report.exit_code() == 0, [str(t.error) for t in report.targets if t.error]
    assert commits(world.remotes["agents"])[0].revision_id == deps["beta"]["latest_revision_id"]
    assert clone.exists() and clone.with_name(clone.name + ".broken").exists()
    assert_healthy(world.remotes.values(), workdir)
    assert_each_change_once(world.remotes["agents"])
