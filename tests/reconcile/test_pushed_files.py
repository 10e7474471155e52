"""Files pushed into a target's branch that the bridge can neither restore nor
trust (issue #20), in one reconcile cycle against real git: each fails only
its deployment, named with the path and the commit, and the rest of the
target is committed as usual."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.formats.state import STATE_FILE
from tests.reconcile.world import World, git, make_world

NS = "test-cluster/agents"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with make_world(tmp_path) as w:
        yield w


def push(world: World, entries: dict[str, tuple[str, bytes] | None]) -> str:
    """A human's commit made with fast-import, which writes any name a tree can
    hold (even `..`, which `update-index` and a checkout refuse); its sha."""
    clone = world.root / f"crafted-{len(list(world.root.glob('crafted-*')))}"
    git("clone", "-q", "--bare", world.remotes["agents"].as_uri(), str(clone))
    head = git("rev-parse", "main", cwd=clone).strip()
    stream = bytearray(b"commit refs/heads/main\n")
    stream += b"committer A Human <human@example.com> 0 +0000\ndata 5\nhuman\n"
    stream += b"from %s\n" % head.encode()
    for path, entry in entries.items():
        quoted = b'"' + path.encode().replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
        if entry is None:
            stream += b"D %s\n" % quoted
        elif entry[0] == "160000":
            stream += b"M 160000 %s %s\n" % (entry[1], quoted)
        else:
            stream += b"M %s inline %s\ndata %d\n%s\n" % (
                entry[0].encode(),
                quoted,
                len(entry[1]),
                entry[1],
            )
    stream += b"done\n"
    subprocess.run(
        ["git", "fast-import", "--quiet", "--done", "--force"],
        cwd=clone,
        input=bytes(stream),
        check=True,
        capture_output=True,
    )
    git("push", "-q", "origin", "main", cwd=clone)
    return git("rev-parse", "main", cwd=clone).strip()


def failed(report: object) -> dict[str, str]:
    return {o.name: o.error or "" for o in report.outcomes if o.action == "failed"}  # type: ignore[attr-defined]


def test_an_entry_git_refuses_fails_its_deployment_and_the_rest_commit(world: World) -> None:
    world.create("alpha")
    beta = world.create("beta")
    assert world.cycle().exit_code() == 0
    sha = push(world, {f"{NS}/alpha/..": ("100644", b"x\n")})
    world.admin.patch_deployment(
        beta["id"], {"source_revision_config": {"image_uri": "registry.example.com/a/b:2"}}
    )
    report = world.cycle()
    errors = failed(report)
    assert set(errors) == {"alpha"}, errors
    assert f"{NS}/alpha/.." in errors["alpha"] and sha[:12] in errors["alpha"]
    assert report.exit_code() == 1
    assert any("deploy(agents/beta)" in s for s in world.subjects()[:1])
    assert f"{NS}/alpha/.." in world.tree()  # left as it is


def test_a_state_file_naming_blobs_the_repo_lacks_fails_its_deployment(world: World) -> None:
    world.create("alpha")
    world.create("beta")
    assert world.cycle().exit_code() == 0
    state = json.loads(world.read(f"{NS}/alpha/{STATE_FILE}"))
    state["files"]["kustomization.yaml"] = "0123456789abcdef" * 2 + "01234567"
    sha = push(
        world,
        {
            f"{NS}/alpha/{STATE_FILE}": ("100644", json.dumps(state).encode()),
            f"{NS}/alpha/kustomization.yaml": ("100644", b"edited: by hand\n"),
        },
    )
    report = world.cycle()
    errors = failed(report)
    assert set(errors) == {"alpha"}, errors
    assert (
        "cannot restore" in errors["alpha"] and "is not a file in the repository" in errors["alpha"]
    )
    assert sha[:12] in errors["alpha"] and "kustomization.yaml" in errors["alpha"]
    workdir = world.root / "workdir"
    assert not list(workdir.glob("*/bridge-needs-reclone"))  # the repo is fine; the file lies
    assert not list(workdir.glob("*.broken"))


def test_diff_shows_entries_of_other_kinds_without_reading_them(world: World) -> None:
    world.create("alpha")
    assert world.cycle().exit_code() == 0
    head = world.head()
    push(
        world,
        {
            f"{NS}/alpha/redis.yaml": ("160000", head.encode()),
            f"{NS}/alpha/kustomization.yaml": ("120000", b"../beta/kustomization.yaml"),
        },
    )
    report = world.cycle(dry_run=True)
    (outcome,) = [o for o in report.outcomes if o.name == "alpha"]
    assert outcome.action == "would-change", outcome.error
    assert f"~ {NS}/alpha/redis.yaml: a gitlink, would become a file" in outcome.diff
    assert f"~ {NS}/alpha/kustomization.yaml: a symlink, would become a file" in outcome.diff
