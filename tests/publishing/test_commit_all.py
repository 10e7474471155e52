"""TargetRepo.commit_all: a batch of commits through one `git fast-import`
stream must be exactly what the same commits made one by one are (trees,
messages, authors, parent chain), with no empty commit and no scratch ref left."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.config import GitSettings, Target
from bridge.publishing import TargetRepo
from tests.gitservers import bare_remote, git

OpenRepo = Callable[..., TargetRepo]

Batch = list[tuple[str, dict[str, bytes], list[str]]]

BATCH: Batch = [
    (
        "deploy(agents/chat): one\n\nDeployment-Id: 1\n",
        {
            "prod/agents/chat/kustomization.yaml": b"k\n",
            "prod/agents/chat/deep/secret.enc.yaml": b"s\n",
            "prod/agents/kustomization.yaml": b"ns1\n",
            "README.md": b"r\n",
        },
        [],
    ),
    (
        "deploy(agents/odd name): quoting",
        {
            'prod/agents/odd name/"quoted" file.yaml': b"q\n",
            "prod/agents/odd name/\u00e9t\u00e9.yaml": "\u00e9\n".encode(),
            "prod/agents/kustomization.yaml": b"ns2\n",
        },
        [],
    ),
    (
        "delete(agents/chat)",
        {"prod/agents/kustomization.yaml": b"ns3\n"},
        ["prod/agents/chat/"],
    ),
    ("more", {"prod/agents/chatbot/x.yaml": b"x\n"}, ["README.md"]),
]


def log_of(path: Path, ref: str = "refs/heads/main") -> list[tuple[str, str, str]]:
    """(tree, author+committer, message) per commit, oldest first."""
    out = git("log", "--reverse", "--format=%T%x01%an <%ae> %cn <%ce>%x01%B%x02", ref, cwd=path)
    rows = [r.strip("\n") for r in out.split("\x02") if r.strip()]
    return [tuple(r.split("\x01")) for r in rows]  # type: ignore[misc]


def git_listing(path: Path) -> dict[str, str]:
    """path -> blob id at main, as git itself lists it."""
    out = git("ls-tree", "-r", "-z", "--full-tree", "main", cwd=path)
    rows = [r.split("\t", 1) for r in out.split("\0") if r]
    return {name: meta.split()[2] for meta, name in rows}


def one_by_one(repo: TargetRepo, batch: Batch) -> list[str | None]:
    return [repo.commit(m, write=w, delete=d) for m, w, d in batch]


def other_repo(tmp_path: Path, settings: GitSettings, name: str) -> TargetRepo:
    remote = bare_remote(tmp_path / "remotes" / f"{name}.git")
    return TargetRepo(
        Target(namespace="agents", repo=remote.as_uri()),
        GitSettings(
            author_name=settings.author_name,
            author_email=settings.author_email,
            workdir=tmp_path / f"workdir-{name}",
        ),
    )


def test_batch_equals_commits_one_by_one(
    open_repo: OpenRepo, remote: Path, git_settings: GitSettings, tmp_path: Path
) -> None:
    fast = open_repo()
    assert fast.sync() is None  # an empty remote: the batch starts the branch
    shas = fast.commit_all(BATCH)
    assert all(shas) and len(set(shas)) == len(BATCH)
    with other_repo(tmp_path, git_settings, "slow") as slow:
        slow.sync()
        assert all(one_by_one(slow, BATCH))
        assert log_of(fast.path) == log_of(slow.path)
    assert git("rev-parse", "main", cwd=fast.path).strip() == shas[-1]
    # The chain is linear, oldest first, and the scratch ref is gone.
    chain = git("rev-list", "--reverse", "main", cwd=fast.path).split()
    assert chain == shas
    assert git("for-each-ref", "refs/bridge/", cwd=fast.path).strip() == ""
    # The writer's own listing (advanced from what it wrote) is git's.
    assert fast.ls_tree("") == git_listing(fast.path)
    assert fast.push() is True
    assert git("rev-parse", "main", cwd=remote).strip() == shas[-1]
    assert sorted(fast.ls_tree("")) == [
        "prod/agents/chatbot/x.yaml",
        "prod/agents/kustomization.yaml",
        'prod/agents/odd name/"quoted" file.yaml',
        "prod/agents/odd name/\u00e9t\u00e9.yaml",
    ]


def test_batch_on_top_of_history_and_a_stale_scratch_ref(open_repo: OpenRepo) -> None:
    repo = open_repo()
    repo.sync()
    base = repo.commit("base", write={"a/x.yaml": b"x\n"})
    assert base is not None
    assert repo.push() is True
    # A crashed run's scratch ref (pointing at an unpushed commit that the next
    # sync drops) must not become a parent.
    stray = repo.commit("stray", write={"stray.txt": b"s\n"})
    git("update-ref", "refs/bridge/import", str(stray), cwd=repo.path)
    assert repo.sync() == base
    shas = repo.commit_all([("one", {"a/y.yaml": b"y\n"}, []), ("two", {"b/z": b"z\n"}, ["a/"])])
    assert git("rev-list", "main", cwd=repo.path).split() == [shas[1], shas[0], base]
    assert sorted(repo.ls_tree("")) == ["b/z"]
    assert repo.ls_tree("") == git_listing(repo.path)


def test_a_change_that_changes_nothing_is_not_committed(open_repo: OpenRepo) -> None:
    repo = open_repo()
    repo.sync()
    repo.commit("base", write={"a/x.yaml": b"x\n"})
    shas = repo.commit_all(
        [
            ("real", {"a/y.yaml": b"y\n"}, []),
            ("same bytes", {"a/x.yaml": b"x\n"}, []),
            ("gone already", {}, ["nope/"]),
            ("real too", {}, ["a/x.yaml"]),
        ]
    )
    assert shas[1] is None and shas[2] is None
    assert shas[0] is not None and shas[3] is not None
    assert git("rev-list", "--count", "main", cwd=repo.path).strip() == "3"
    assert repo.ls_tree("") == git_listing(repo.path)


def test_an_empty_root_commit_is_not_made(open_repo: OpenRepo) -> None:
    repo = open_repo()
    repo.sync()
    shas = repo.commit_all([("nothing", {}, ["a/"]), ("first", {"a/x": b"x\n"}, [])])
    assert shas[0] is None and shas[1] is not None
    assert git("rev-list", "--count", "main", cwd=repo.path).strip() == "1"


def test_bad_paths_and_messages_are_refused_before_anything_is_written(
    open_repo: OpenRepo,
) -> None:
    repo = open_repo()
    repo.sync()
    base = repo.commit("base", write={"a/x.yaml": b"x\n"})
    for bad in (
        [("ok", {"a/y": b"y"}, []), ("bad", {"../x": b"x"}, [])],
        [("ok", {"a/y": b"y"}, []), ("bad", {}, ["a/.git/"])],
        [("ok", {"a/y": b"y"}, []), ("  ", {"a/z": b"z"}, [])],
    ):
        with pytest.raises(ValueError):
            repo.commit_all(bad)
    assert git("rev-parse", "main", cwd=repo.path).strip() == base
