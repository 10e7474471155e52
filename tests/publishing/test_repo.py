"""TargetRepo against real bare remotes over file://: commit, push, races,
crash leftovers, repairs. No mocks: every assertion reads real git."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.config import GitSettings, Target
from bridge.errors import GitError, HistoryRewritten, LocalCloneBroken, PushRejected
from bridge.publishing import TargetRepo, check_repo_path
from tests.gitservers import git
from tests.publishing.conftest import AUTHOR, EMAIL

OpenRepo = Callable[..., TargetRepo]

MESSAGE = (
    "deploy(agents/chat): registry.example.com/acme/agent:1.0.0 [revision 0123abcd]\n"
    "\n"
    "Deployment-Id: 6f1c7a4e-0000-4000-8000-000000000001\n"
    "Deployment-Name: chat\n"
    "Revision-Id: 0123abcd-0000-4000-8000-000000000002\n"
    "Listener-Id: 00000000-0000-0000-0000-000000000000\n"
    "Cluster: prod\n"
    "Namespace: agents\n"
    "Bridge-Version: 0.1.0\n"
)


def remote_head(remote: Path, branch: str = "main") -> str | None:
    out = git("rev-parse", "-q", "--verify", f"refs/heads/{branch}", cwd=remote, check=False)
    return out.strip() or None


def human_clone(remote: Path, dest: Path) -> Path:
    git("clone", "-q", remote.as_uri(), str(dest))
    git("config", "user.name", "A Human", cwd=dest)
    git("config", "user.email", "human@example.com", cwd=dest)
    return dest


def human_commit(clone: Path, path: str, text: str, push: bool = True) -> str:
    file = clone / path
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text)
    git("add", "--", path, cwd=clone)
    git("commit", "-q", "-m", f"human edit of {path}", cwd=clone)
    if push:
        git("push", "-q", "origin", "HEAD:main", cwd=clone)
    return git("rev-parse", "HEAD", cwd=clone).strip()


def test_first_commit_round_trip(open_repo: OpenRepo, remote: Path) -> None:
    repo = open_repo()
    assert repo.sync() is None  # empty remote: the first commit creates the branch
    assert repo.ls_tree("") == {}
    assert repo.last_commit_for("prod/agents") is None
    sha = repo.commit(
        MESSAGE,
        write={"prod/agents/chat/kustomization.yaml": b"resources: []\n", "README.md": b"hi\n"},
    )
    assert sha is not None
    assert repo.push() is True
    assert repo.push() is False  # nothing left to push
    assert remote_head(remote) == sha

    fmt = "%an%x00%ae%x00%cn%x00%ce%x00%B"
    an, ae, cn, ce, body = git("log", "-1", f"--format={fmt}", "main", cwd=remote).split("\0")
    assert (an, ae, cn, ce) == (AUTHOR, EMAIL, AUTHOR, EMAIL)
    assert body.rstrip("\n") == MESSAGE.rstrip("\n")
    trailers = git("log", "-1", "--format=%(trailers:only,unfold)", "main", cwd=remote)
    keys = [line.split(":")[0] for line in trailers.splitlines() if line]
    assert keys == [
        "Deployment-Id",
        "Deployment-Name",
        "Revision-Id",
        "Listener-Id",
        "Cluster",
        "Namespace",
        "Bridge-Version",
    ]
    # The parent of the second commit is the first; a new instance reuses the clone.
    repo.close()
    again = open_repo()
    assert again.path == repo.path
    assert again.sync() == sha
    second = again.commit("second\n", write={"README.md": b"hello\n"})
    assert git("rev-parse", f"{second}^", cwd=again.path).strip() == sha
    assert again.push() is True
    assert remote_head(remote) == second
    assert again.last_commit_for("README.md") == (second, AUTHOR, EMAIL, "second")
    assert again.last_commit_for("prod/agents/")[0] == sha  # type: ignore[index]


def test_no_empty_commits(open_repo: OpenRepo, remote: Path) -> None:
    repo = open_repo()
    repo.sync()
    assert repo.commit("nothing", write={}) is None  # empty remote, nothing to write
    assert repo.commit("nothing", write={}, delete=["a/"]) is None
    first = repo.commit("first", write={"a/x.yaml": b"x\n", "b.txt": b"b\n"})
    assert first is not None
    assert repo.commit("same bytes", write={"a/x.yaml": b"x\n"}) is None
    assert repo.commit("gone already", write={}, delete=["nope/", "c.txt"]) is None
    # Deleting and re-writing the same bytes is no change either.
    assert repo.commit("round trip", write={"a/x.yaml": b"x\n"}, delete=["a/"]) is None
    assert git("rev-list", "--count", "main", cwd=repo.path).strip() == "1"
    assert repo.push() is True
    assert git("rev-list", "--count", "main", cwd=remote).strip() == "1"


def test_delete_folder_and_file(open_repo: OpenRepo, remote: Path) -> None:
    repo = open_repo()
    repo.sync()
    repo.commit(
        "create",
        write={
            "prod/agents/chat/kustomization.yaml": b"k\n",
            "prod/agents/chat/deep/secret.enc.yaml": b"s\n",
            "prod/agents/chatbot/kustomization.yaml": b"other\n",  # shares a name prefix
            "prod/agents/kustomization.yaml": b"ns\n",
            "README.md": b"r\n",
        },
    )
    sha = repo.commit("delete(agents/chat)", write={}, delete=["prod/agents/chat/"])
    assert sha is not None
    assert set(repo.ls_tree("")) == {
        "prod/agents/chatbot/kustomization.yaml",
        "prod/agents/kustomization.yaml",
        "README.md",
    }
    # A folder without the trailing slash, a single file, and a write in the same commit.
    repo.commit(
        "more",
        write={"prod/agents/kustomization.yaml": b"ns2\n"},
        delete=["prod/agents/chatbot", "README.md"],
    )
    assert repo.ls_tree("") == {
        "prod/agents/kustomization.yaml": git(
            "rev-parse", "HEAD:prod/agents/kustomization.yaml", cwd=repo.path
        ).strip()
    }
    repo.push()
    assert git("ls-tree", "-r", "--name-only", "main", cwd=remote).split() == [
        "prod/agents/kustomization.yaml"
    ]


@pytest.mark.parametrize(
    "bad",
    [
        "../x",
        "a/../../x",
        "/etc/passwd",
        ".git/config",
        "a/.git/hooks/post-update",
        ".GIT/config",
        ".git./x",
        "",
        "a//b",
        "./a",
        "a\0b",
        "a\\..\\b",
        "a\nb",
    ],
)
def test_path_validation(open_repo: OpenRepo, remote: Path, bad: str) -> None:
    repo = open_repo()
    repo.sync()
    with pytest.raises(ValueError, match="invalid repo path"):
        repo.commit("evil", write={bad: b"x"})
    if "\\" not in bad and "\n" not in bad:  # names a push may hold can be deleted
        with pytest.raises(ValueError, match="invalid repo path"):
            repo.commit("evil", write={"ok.txt": b"x"}, delete=[bad])
    assert repo.ls_tree("") == {}
    assert remote_head(remote) is None


def test_check_repo_path_accepts_normal_paths() -> None:
    assert check_repo_path("prod/agents/chat/kustomization.yaml") == (
        "prod/agents/chat/kustomization.yaml"
    )
    assert check_repo_path(".sops.yaml") == ".sops.yaml"
    assert check_repo_path("a/.gitkeep") == "a/.gitkeep"
    assert check_repo_path("prod/agents/", folder=True) == "prod/agents"
    with pytest.raises(ValueError):
        check_repo_path("prod/agents/")  # a file path never ends in /


def test_ls_tree_and_read_blob(open_repo: OpenRepo) -> None:
    repo = open_repo()
    repo.sync()
    files = {
        f"prod/agents/app{i:03}/f{j}.yaml": f"{i}-{j}\n".encode()
        for i in range(60)
        for j in range(5)
    }
    files["prod/agents/kustomization.yaml"] = b"ns\n"
    files["README.md"] = b"readme\n"
    files["prod/agents-other/x.yaml"] = b"other\n"
    repo.commit("many", write=files)
    folder = repo.ls_tree("prod/agents/")
    assert set(folder) == {p for p in files if p.startswith("prod/agents/")}
    assert repo.ls_tree("README.md") == {"README.md": folder and repo.ls_tree("")["README.md"]}
    assert repo.ls_tree("prod/agents") == {}  # exact path: a folder is not a file
    assert repo.ls_tree("missing/") == {}
    assert repo.ls_tree("missing.yaml") == {}
    for path, blob in folder.items():
        assert repo.read_blob(blob) == files[path]
    with pytest.raises(ValueError):
        repo.read_blob("HEAD:README.md")
    with pytest.raises(LocalCloneBroken):
        repo.read_blob("0" * 40)


def test_read_blobs_many_at_once(open_repo: OpenRepo) -> None:
    """Requests are written by a thread while answers are read: more than the
    pipes hold in both directions (3,000 x 2 KB) must neither deadlock nor mix up."""
    repo = open_repo()
    repo.sync()
    files = {f"d{i:04}/f.yaml": (f"{i}-".encode() * 400)[: 2000 + i % 7] for i in range(3000)}
    repo.commit_all([("many", files, [])])
    listing = repo.ls_tree("")
    ids = [listing[p] for p in files]
    read = repo.read_blobs([*ids, ids[0]])  # a repeated id is read once
    assert [read[b] for b in ids] == list(files.values())
    tree = git("rev-parse", "main^{tree}", cwd=repo.path).strip()
    with pytest.raises(ValueError, match="not a blob"):
        repo.read_blobs([ids[1], tree])
    with pytest.raises(LocalCloneBroken, match="missing"):
        repo.read_blobs([ids[2], "0" * 40, ids[3]])
    # The long-lived cat-file is still in step after both errors.
    assert repo.read_blobs(ids[:50]) == {
        b: files[p] for p, b in list(zip(files, ids, strict=True))[:50]
    }


def test_preloaded_blobs_are_handed_out_once(open_repo: OpenRepo) -> None:
    """Blobs read ahead (from the sync thread) come back from read_blobs once,
    mixed with ones read now; then they are read from git again."""
    repo = open_repo()
    repo.sync()
    files = {f"d{i}/f.yaml": f"body {i}\n".encode() for i in range(20)}
    repo.commit_all([("some", files, [])])
    listing = repo.ls_tree("")
    ids = [listing[p] for p in files]
    repo.preload_blobs(ids[:10])
    repo.preload_blobs([])  # nothing to read: no cat-file round trip, no error
    assert repo.read_blobs(ids) == {b: files[p] for p, b in zip(files, ids, strict=True)}
    assert repo.reader._preloaded == {}  # handed out, not kept
    assert repo.read_blobs(ids[:3]) == {
        b: files[p] for p, b in list(zip(files, ids, strict=True))[:3]
    }
    tree = git("rev-parse", "main^{tree}", cwd=repo.path).strip()
    with pytest.raises(ValueError, match="not a blob"):
        repo.preload_blobs([tree])


def test_push_race_rejected_then_converges(
    open_repo: OpenRepo, remote: Path, tmp_path: Path
) -> None:
    repo = open_repo()
    repo.sync()
    base = repo.commit("base", write={"prod/agents/chat/a.yaml": b"1\n"})
    repo.push()
    other = human_clone(remote, tmp_path / "human")
    theirs = human_commit(other, "docs/NOTES.md", "by a human\n")

    ours = repo.commit("deploy", write={"prod/agents/chat/a.yaml": b"2\n"})
    with pytest.raises(PushRejected) as caught:
        repo.push()
    message = str(caught.value)
    assert "agents" in message and remote.as_uri() in message and "never force" in message
    assert remote_head(remote) == theirs  # nothing was overwritten

    assert repo.sync() == theirs  # our unpushed commit is dropped ...
    assert repo.ls_tree("prod/agents/chat/a.yaml") == {
        "prod/agents/chat/a.yaml": git(
            "rev-parse", f"{base}:prod/agents/chat/a.yaml", cwd=remote
        ).strip()
    }
    again = repo.commit("deploy", write={"prod/agents/chat/a.yaml": b"2\n"})  # ... and re-made
    assert again is not None and again != ours
    assert repo.push() is True
    head = remote_head(remote)
    assert head == again
    git("merge-base", "--is-ancestor", theirs, head, cwd=remote)  # the human commit is kept
    assert git("show", f"{head}:docs/NOTES.md", cwd=remote) == "by a human\n"


def test_push_refused_by_hook_is_not_a_race(open_repo: OpenRepo, remote: Path) -> None:
    hooks = remote / "hooks"
    hooks.mkdir(exist_ok=True)
    hook = hooks / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'branch is protected' >&2\nexit 1\n")
    hook.chmod(0o755)
    repo = open_repo()
    repo.sync()
    repo.commit("x", write={"a.txt": b"a\n"})
    with pytest.raises(GitError) as caught:
        repo.push()
    assert not isinstance(caught.value, PushRejected)
    assert "agents" in str(caught.value) and "hook" in str(caught.value)
    assert remote_head(remote) is None


def test_crash_leftovers_converge(open_repo: OpenRepo, remote: Path, tmp_path: Path) -> None:
    repo = open_repo()
    repo.sync()
    pushed = repo.commit("pushed", write={"a.txt": b"1\n"})
    repo.push()
    unpushed = repo.commit("crashed before push", write={"a.txt": b"2\n"})
    clone = repo.path
    repo.close()  # the "crash": a commit never pushed, and lock files left behind
    long_ago = time.time() - 3600
    leftovers = [
        clone / "index.lock",
        clone / "HEAD.lock",
        clone / "refs" / "heads" / "main.lock",
        clone / "bridge-index-999-1",
    ]
    for lock in leftovers:
        lock.write_text("")
        os.utime(lock, (long_ago, long_ago))
    human = human_commit(human_clone(remote, tmp_path / "human"), "b.txt", "b\n")

    fresh = open_repo()
    assert fresh.path == clone
    assert fresh.sync() == human
    assert not any(lock.exists() for lock in leftovers)
    assert (
        fresh.ls_tree("a.txt")["a.txt"] == git("rev-parse", f"{pushed}:a.txt", cwd=remote).strip()
    )
    assert unpushed is not None
    assert git("cat-file", "-t", unpushed, cwd=remote, check=False) == ""  # never pushed
    redo = fresh.commit("re-created from state", write={"a.txt": b"2\n"})
    assert fresh.push() is True
    assert remote_head(remote) == redo
    assert git("rev-parse", f"{redo}^", cwd=remote).strip() == human


def test_fresh_lock_of_a_live_process_is_kept(open_repo: OpenRepo) -> None:
    repo = open_repo()
    repo.sync()
    repo.close()
    lock = repo.path / "packed-refs.lock"
    lock.write_text("")  # younger than this process: someone may be writing
    open_repo().sync()
    assert lock.exists()


def test_a_folders_listing_is_kept_per_head_and_read_only(open_repo: OpenRepo) -> None:
    """ls_tree(folder) hands out the same read-only mapping while the head
    stays; a commit (a new head) lists the folder again, with the change."""
    repo = open_repo()
    repo.sync()
    repo.commit("one", write={"a/x.txt": b"1\n", "b/y.txt": b"2\n"})
    first = repo.ls_tree("a/")
    assert dict(first) == {"a/x.txt": first["a/x.txt"]} and repo.ls_tree("a/") is first
    with pytest.raises(TypeError):
        first["a/z.txt"] = "0" * 40  # type: ignore[index]
    repo.commit("two", write={"a/z.txt": b"3\n"}, delete=["a/x.txt"])
    second = repo.ls_tree("a/")
    assert sorted(second) == ["a/z.txt"] and sorted(first) == ["a/x.txt"]
    assert sorted(repo.ls_tree("")) == ["a/z.txt", "b/y.txt"]
    assert sorted(repo.ls_tree("b/")) == ["b/y.txt"]


def test_temp_objects_are_swept_at_the_first_open_then_once_per_stale_interval(
    open_repo: OpenRepo,
) -> None:
    """A killed fetch's half-written loose objects are disk nothing else frees,
    but looking for them scans up to 256 folders: a clone is looked at once per
    STALE_LOCK_SECONDS, whichever process opens it (a `run --once` from cron
    is a new process each time). Half-written packs (one folder) and locks
    are looked for at every open: the run after a crash leaves none."""
    from bridge.publishing.clone import _SWEPT, STALE_LOCK_SECONDS

    repo = open_repo()
    for _ in range(2):  # made, then opened again: looked at once
        repo.sync()
        repo.close()
    loose = repo.path / "objects" / "ab"
    loose.mkdir(exist_ok=True)
    leftover = loose / "tmp_obj_killed"
    leftover.write_text("")
    long_ago = time.time() - 3600
    os.utime(leftover, (long_ago, long_ago))
    lock = repo.path / "index.lock"  # a lock blocks git: looked for at every open
    lock.write_text("")
    os.utime(lock, (long_ago, long_ago))

    repo.sync()  # the next cycle of the same process
    repo.close()
    assert leftover.exists() and not lock.exists()
    swept = repo.clone._objects_swept
    assert swept is not None
    repo.clone._objects_swept = swept - STALE_LOCK_SECONDS  # that long later
    repo.sync()
    repo.close()
    assert not leftover.exists()

    leftover.write_text("")
    os.utime(leftover, (long_ago, long_ago))
    marker = repo.path / _SWEPT
    half_pack = repo.path / "objects" / "pack" / "tmp_pack_killed"  # one folder: every open
    half_pack.write_text("")
    os.utime(half_pack, (long_ago, long_ago))
    open_repo().sync()  # another process's first open, within the interval
    assert leftover.exists() and not half_pack.exists()
    for when in (time.time() - STALE_LOCK_SECONDS, time.time() + 3600):  # late; or skewed
        os.utime(marker, (when, when))
        open_repo().sync()
        assert not leftover.exists()
        leftover.write_text("")
        os.utime(leftover, (long_ago, long_ago))
    marker.unlink()  # never looked at (a clone made by an older version)
    open_repo().sync()
    assert not leftover.exists()


def test_a_new_process_trusts_the_remote_check_of_an_unchanged_config(
    open_repo: OpenRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`git config --get remote.origin.url` once per change of the clone's
    config, not once per process (a `run --once` from cron is a new one)."""
    from bridge.publishing.clone import _REMOTE_CHECKED, Clone

    asked: list[tuple[str, ...]] = []
    real_git = Clone.git

    def counting(self: Clone, *args: str, **kwargs: Any) -> Any:
        if args[:1] == ("config",):
            asked.append(args)
        return real_git(self, *args, **kwargs)

    monkeypatch.setattr(Clone, "git", counting)
    first = open_repo()
    first.sync()  # made: nothing to check
    first.close()
    open_repo().sync()
    assert asked == [("config", "--get", "remote.origin.url")]
    for _ in range(2):
        open_repo().sync()  # new processes, the config unchanged
    assert len(asked) == 1
    record = first.path / _REMOTE_CHECKED
    for damage in ("junk", record.read_text().replace(" ", "  ", 1), ""):
        asked.clear()
        record.write_text(damage)
        open_repo().sync()  # a record that does not parse, or is not this one's
        assert len(asked) == 1
    asked.clear()
    os.utime(first.path / "config", None)  # touched: its signature changed
    open_repo().sync()
    assert len(asked) == 1


@pytest.mark.parametrize("damage", ["wrong-remote", "objects-gone", "not-a-repo", "marker"])
def test_broken_clone_is_moved_aside_and_recloned(
    open_repo: OpenRepo,
    remote: Path,
    damage: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    repo = open_repo()
    repo.sync()
    sha = repo.commit("one", write={"a.txt": b"1\n"})
    repo.push()
    clone = repo.path
    repo.close()
    if damage == "wrong-remote":
        git("config", "remote.origin.url", "file:///somewhere/else.git", cwd=clone)
    elif damage == "objects-gone":
        for path in (clone / "objects").rglob("*"):
            if path.is_file():
                path.unlink()
    elif damage == "not-a-repo":
        for path in clone.iterdir():
            if path.is_dir():
                for sub in sorted(path.rglob("*"), reverse=True):
                    sub.rmdir() if sub.is_dir() else sub.unlink()
                path.rmdir()
            else:
                path.unlink()
        (clone / "junk").write_text("x")
    else:
        (clone / "bridge-needs-reclone").write_text("ls-tree: bad tree object\n")

    caplog.set_level(logging.WARNING, logger="bridge.publishing")
    fresh = open_repo()
    assert fresh.sync() == sha
    assert any("moving it to" in r.getMessage() for r in caplog.records)
    assert (clone.parent / (clone.name + ".broken")).is_dir()
    assert fresh.ls_tree("a.txt")
    fresh.commit("two", write={"a.txt": b"2\n"})
    assert fresh.push() is True


def test_corruption_found_later_heals_on_next_sync(open_repo: OpenRepo) -> None:
    repo = open_repo()
    repo.sync()
    repo.commit("one", write={"a.txt": b"1\n"})
    repo.push()
    blob = repo.ls_tree("a.txt")["a.txt"]
    loose = repo.path / "objects" / blob[:2] / blob[2:]
    if loose.exists():  # fetched objects are packed; the blob may be loose only locally
        loose.unlink()
    for pack in (repo.path / "objects" / "pack").glob("*"):
        pack.unlink()
    with pytest.raises(LocalCloneBroken):
        repo.read_blob(blob)
    assert repo.sync() is not None  # repaired: moved aside, fetched again
    assert repo.read_blob(repo.ls_tree("a.txt")["a.txt"]) == b"1\n"


def test_clone_lock_excludes_other_processes(
    open_repo: OpenRepo, git_settings: GitSettings
) -> None:
    repo = open_repo()
    repo.sync()
    lock_path = git_settings.workdir / (repo.path.name + ".lock")
    # Same process, second instance: shares the lock (no self-deadlock).
    second = open_repo()
    assert second.sync() == repo.sync()
    second.close()
    repo.close()
    # Another open file description = what another process would hold.
    fd = os.open(lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(LocalCloneBroken, match="in use by another bridge process"):
            open_repo(lock_timeout=0.2).sync()
    finally:
        os.close(fd)


def test_inherited_git_environment_is_ignored(
    open_repo: OpenRepo, remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoy = tmp_path / "decoy"
    git("init", "-q", str(decoy))
    monkeypatch.setenv("GIT_DIR", str(decoy / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(decoy))
    monkeypatch.setenv("GIT_INDEX_FILE", str(decoy / "evil-index"))
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Mallory")
    repo = open_repo()
    repo.sync()
    sha = repo.commit("x", write={"a.txt": b"a\n"})
    repo.push()
    monkeypatch.delenv("GIT_DIR")
    monkeypatch.delenv("GIT_WORK_TREE")
    monkeypatch.delenv("GIT_INDEX_FILE")
    assert remote_head(remote) == sha
    assert git("log", "-1", "--format=%an", "main", cwd=remote).strip() == AUTHOR
    assert not (decoy / "evil-index").exists()
    assert git("rev-parse", "-q", "--verify", "HEAD", cwd=decoy, check=False) == ""


def test_other_branch_and_remote_branch_deleted(
    open_repo: OpenRepo, remote: Path, target: Target
) -> None:
    prod = Target(namespace="prod", repo=target.repo, branch="env/prod")
    repo = open_repo(target=prod)
    assert repo.sync() is None
    sha = repo.commit("x", write={"a.txt": b"a\n"})
    repo.push()
    assert remote_head(remote, "env/prod") == sha
    assert remote_head(remote) is None
    git("update-ref", "-d", "refs/heads/env/prod", cwd=remote)
    assert repo.sync() is None  # the branch is gone: start over, never resurrect
    assert repo.ls_tree("") == {}


def test_unreachable_file_remote(open_repo: OpenRepo, tmp_path: Path) -> None:
    missing = Target(namespace="agents", repo=(tmp_path / "nope.git").as_uri())
    with pytest.raises(GitError) as caught:
        open_repo(target=missing).sync()
    assert "agents" in str(caught.value) and "nope.git" in str(caught.value)
    assert caught.value.exit_code == 4


def test_force_pushed_remote_stops_the_target_until_the_clone_is_deleted(
    open_repo: OpenRepo, remote: Path, tmp_path: Path
) -> None:
    repo = open_repo()
    repo.sync()
    ours = repo.commit("ours", write={"a.txt": b"1\n"})
    assert ours is not None
    repo.push()
    rewritten = tmp_path / "rewrite"
    git("init", "-q", "-b", "main", str(rewritten))
    git("config", "user.name", "A Human", cwd=rewritten)
    git("config", "user.email", "human@example.com", cwd=rewritten)
    new_head = human_commit(rewritten, "b.txt", "unrelated\n", push=False)
    git("push", "-q", "--force", remote.as_uri(), "main:main", cwd=rewritten)
    for _ in range(2):  # refused on every sync, not only the first one
        with pytest.raises(HistoryRewritten) as caught:
            repo.sync()
        text = str(caught.value)
        assert caught.value.exit_code == 4
        assert "agents" in text and ours in text and new_head in text
        assert str(repo.path) in text  # what to delete to accept the new history
        # Nothing of ours moved: the bridge neither follows nor pushes back.
        assert set(repo.ls_tree("")) == {"a.txt"}
        assert remote_head(remote) == new_head
    repo.close()
    shutil.rmtree(repo.path)  # the operator accepts the new history
    again = open_repo()
    assert again.sync() == new_head
    assert set(again.ls_tree("")) == {"b.txt"}


def test_a_rewrite_is_seen_even_when_refs_moved_since_the_clone_was_checked(
    open_repo: OpenRepo, remote: Path
) -> None:
    """The writer remembers the refs it read when it checked the clone; a commit
    and a push after that must not leave it comparing with a stale head."""
    repo = open_repo()
    repo.sync()
    base = repo.commit("base", write={"a.txt": b"1\n"})
    repo.push()
    repo.close()
    repo = open_repo()
    assert repo.ls_tree("") != {}  # checks the clone (reads refs) without a sync
    ours = repo.commit("ours", write={"b.txt": b"2\n"})
    assert ours is not None and repo.push() is True
    human = human_clone(remote, remote.parent / "human")
    git("reset", "-q", "--hard", str(base), cwd=human)  # drops `ours`
    git("commit", "-q", "--allow-empty", "-m", "rewrite", cwd=human)
    git("push", "-q", "--force", "origin", "HEAD:main", cwd=human)
    with pytest.raises(HistoryRewritten):
        repo.sync()


def object_counts(path: Path) -> dict[str, int]:
    out = git("count-objects", "-v", cwd=path)
    return {k: int(v) for k, v in (line.split(": ") for line in out.splitlines())}


def test_gc_runs_after_a_push_never_inside_the_fetch(open_repo: OpenRepo, remote: Path) -> None:
    """git's automatic gc inside `fetch` ran in the foreground of the next cycle
    (13 s at 10,000 deployments); the writer runs `gc --auto` after a push."""
    repo = open_repo()
    repo.sync()
    # Thresholds git's `gc --auto` acts on at once: more than one pack; every
    # fetch keeps its pack.
    git("config", "gc.autoPackLimit", "1", cwd=repo.path)
    git("config", "fetch.unpackLimit", "1", cwd=repo.path)
    assert repo.commit("first", write={"a/a.yaml": b"a\n"}) is not None
    assert repo.push() is True
    human = human_clone(remote, remote.parent / "human")
    for i in range(3):
        human_commit(human, f"h{i}/x.yaml", f"{i}\n")
        repo.sync()
    assert object_counts(repo.path)["packs"] >= 3  # no gc inside the fetches
    assert repo.commit("mine", write={"m.yaml": b"m\n"}) is not None
    assert repo.push() is True
    after = object_counts(repo.path)
    assert (after["packs"], after["count"]) == (1, 0)  # repacked after the push
