"""What anyone with push access may put in a branch, as the writer sees it
(issue #20): every kind of entry is listed so that it never looks like a file,
any pushed name can be deleted, and a blob is sized before it is read."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.errors import LocalCloneBroken
from bridge.formats.objects import blob_id, entry_kind, quote_path
from bridge.publishing import TargetRepo
from tests.gitservers import git

OpenRepo = Callable[..., TargetRepo]
FOLDER = "prod/agents/chat"
YAML = b"apiVersion: v1\nkind: ConfigMap\n"


def push_entries(remote: Path, tmp: Path, entries: dict[str, tuple[str, bytes] | None]) -> str:
    """A human's commit, made with plumbing (any name, any mode), pushed to main."""
    clone = tmp / f"human-{len(list(tmp.glob('human-*')))}"
    git("clone", "-q", "--bare", remote.as_uri(), str(clone))
    env = {"GIT_INDEX_FILE": str(clone / "idx")}
    if git("rev-parse", "-q", "--verify", "main", cwd=clone, check=False).strip():
        git("read-tree", "main", cwd=clone, **env)
    records = []
    for path, entry in entries.items():
        raw = path.encode("utf-8", "surrogateescape")
        if entry is None:
            records.append(b"0 " + b"0" * 40 + b"\t" + raw)
            continue
        mode, data = entry
        oid = data.decode() if mode == "160000" else _hash(clone, data)
        records.append(f"{mode} {oid}\t".encode() + raw)
    subprocess.run(
        ["git", "update-index", "-z", "--index-info"],
        cwd=clone,
        input=b"\0".join(records) + b"\0",
        env={**_env(), **env},
        check=True,
    )
    tree = git("write-tree", cwd=clone, **env).strip()
    parent = git("rev-parse", "-q", "--verify", "main", cwd=clone, check=False).strip()
    sha = git(
        "commit-tree",
        tree,
        *(["-p", parent] if parent else []),
        "-m",
        "human",
        cwd=clone,
        GIT_AUTHOR_NAME="A Human",
        GIT_AUTHOR_EMAIL="h@example.com",
        GIT_COMMITTER_NAME="A Human",
        GIT_COMMITTER_EMAIL="h@example.com",
    ).strip()
    git("push", "-q", "origin", f"{sha}:refs/heads/main", cwd=clone)
    return sha


def _env() -> dict[str, str]:
    from tests.gitservers import GIT_ENV

    return dict(GIT_ENV)


def _hash(clone: Path, data: bytes) -> str:
    return (
        subprocess.run(
            ["git", "hash-object", "-w", "--stdin"],
            cwd=clone,
            input=data,
            capture_output=True,
            check=True,
            env=_env(),
        )
        .stdout.decode()
        .strip()
    )


def modes(remote: Path) -> dict[str, tuple[str, str]]:
    out = git("ls-tree", "-r", "-z", "--full-tree", "main", cwd=remote)
    rows = [r.split("\t", 1) for r in out.split("\0") if r]
    return {name: (meta.split()[0], meta.split()[2]) for meta, name in rows}


def test_every_entry_kind_is_listed_and_none_looks_like_a_file(
    open_repo: OpenRepo, remote: Path, tmp_path: Path
) -> None:
    base = push_entries(remote, tmp_path, {f"{FOLDER}/a.yaml": ("100644", YAML)})
    push_entries(
        remote,
        tmp_path,
        {
            f"{FOLDER}/run.sh": ("100755", YAML),
            f"{FOLDER}/link.yaml": ("120000", YAML),  # the target text is the file's bytes
            f"{FOLDER}/vendored": ("160000", base.encode()),
        },
    )
    repo = open_repo()
    repo.sync()
    listing = repo.ls_tree(FOLDER + "/")
    assert listing[f"{FOLDER}/a.yaml"] == blob_id(YAML)
    for name, kind in [("run.sh", "executable"), ("link.yaml", "symlink"), ("vendored", "gitlink")]:
        entry = listing[f"{FOLDER}/{name}"]
        assert entry != blob_id(YAML) and kind in (entry_kind(entry) or ""), (name, entry)
    assert entry_kind(listing[f"{FOLDER}/a.yaml"]) is None
    # No listing entry of another kind can be read as a blob by a bounded read.
    assert repo.read_blobs(list(listing.values()), max_bytes=1 << 20) == {blob_id(YAML): YAML}


@pytest.mark.parametrize("batch", [1, 2], ids=["one-commit", "two-commits"])
def test_writes_replace_any_entry_kind_and_any_pushed_name_can_be_deleted(
    open_repo: OpenRepo, remote: Path, tmp_path: Path, batch: int
) -> None:
    base = push_entries(remote, tmp_path, {f"{FOLDER}/a.yaml": ("100644", YAML)})
    odd = [
        f"{FOLDER}/new\nline.yaml",
        f"{FOLDER}/back\\slash.yaml",
        f'{FOLDER}/"quoted".yaml',
        f"{FOLDER}/tab\there.yaml",
        f"{FOLDER}/\udcff\udcfe.yaml",  # not UTF-8
    ]
    push_entries(
        remote,
        tmp_path,
        {
            **{path: ("100644", b"x\n") for path in odd},
            f"{FOLDER}/a.yaml": ("120000", YAML),
            f"{FOLDER}/b.yaml": ("100755", YAML),
            f"{FOLDER}/c.yaml": ("160000", base.encode()),
            f"{FOLDER}/d.yaml/inner.yaml": ("100644", YAML),  # a folder where a file belongs
        },
    )
    repo = open_repo()
    repo.sync()
    restore = {f"{FOLDER}/{n}": YAML for n in ("a.yaml", "b.yaml", "c.yaml", "d.yaml")}
    commits = [("restore", restore, [*odd, f"{FOLDER}/d.yaml/inner.yaml"])]
    if batch == 2:
        commits.append(("another", {"prod/agents/other.yaml": b"o\n"}, []))
    shas = repo.commit_all(commits)
    assert all(shas) and repo.push()
    found = modes(remote)
    assert {p for p in found if p.startswith(FOLDER)} == set(restore)
    assert {found[p] for p in restore} == {("100644", blob_id(YAML))}
    listing = repo.ls_tree(FOLDER + "/")  # advanced in memory: the same as git's
    assert listing == {p: blob_id(YAML) for p in restore}


def test_an_empty_commit_in_a_batch_is_dropped_the_others_land(
    open_repo: OpenRepo, remote: Path, tmp_path: Path
) -> None:
    push_entries(remote, tmp_path, {f"{FOLDER}/a.yaml": ("100644", YAML)})
    repo = open_repo()
    repo.sync()
    shas = repo.commit_all(
        [
            ("same bytes", {f"{FOLDER}/a.yaml": YAML}, []),
            ("a change", {f"{FOLDER}/b.yaml": b"b\n"}, []),
            ("same again", {f"{FOLDER}/b.yaml": b"b\n"}, []),
        ]
    )
    assert shas[0] is None and shas[1] is not None and shas[2] is None
    assert repo.push()
    assert git("log", "--format=%s", "main", cwd=remote).split("\n")[0] == "a change"


def test_an_oversized_blob_is_sized_and_never_read(
    open_repo: OpenRepo, remote: Path, tmp_path: Path
) -> None:
    big = b"#" * (2 << 20)
    push_entries(remote, tmp_path, {"big": ("100644", big), "small": ("100644", b"s\n")})
    repo = open_repo()
    repo.sync()
    ids = [blob_id(big), blob_id(b"s\n"), "0" * 40, "not an id"]
    sizes = {blob_id(big): len(big), blob_id(b"s\n"): 2}
    assert repo.blob_sizes(ids, missing_ok=True) == sizes
    assert repo.read_blobs(ids[:1], max_bytes=1 << 20) == {}
    assert repo.reader._catfile is None  # the long-lived reader never even started
    assert repo.read_blobs(ids, max_bytes=1 << 20, missing_ok=True) == {blob_id(b"s\n"): b"s\n"}
    # An id the clone lacks is damage, unless it came from a file's content.
    with pytest.raises(LocalCloneBroken, match="is missing"):
        repo.read_blobs(ids, max_bytes=1 << 20)


def test_paths_are_shown_quoted_the_way_git_shows_them() -> None:
    assert quote_path("prod/agents/chat/a.yaml") == "prod/agents/chat/a.yaml"
    assert quote_path("a/new\nline") == '"a/new\\nline"'
    assert quote_path("a/back\\slash") == '"a/back\\\\slash"'
    assert quote_path('a/"q"') == '"a/\\"q\\""'
    assert quote_path("a/\x1b[31m") == '"a/\\033[31m"'
    assert quote_path("a/\udcff") == '"a/\\377"'
    assert quote_path("a/\u00e9t\u00e9") == "a/\u00e9t\u00e9"


def test_a_name_git_refuses_in_an_index_stops_signed_commits_without_recloning(
    open_repo: OpenRepo, remote: Path, tmp_path: Path, git_settings: Any
) -> None:
    from bridge.config import GitSettings, SigningSettings
    from bridge.errors import GitError, LocalCloneBroken
    from tests.keys import ssh_keygen

    # `git update-index` refuses such a name too: the tree is made with mktree.
    push_entries(remote, tmp_path, {f"{FOLDER}/a.yaml": ("100644", YAML)})
    clone = tmp_path / "crafted"
    git("clone", "-q", "--bare", remote.as_uri(), str(clone))
    blob = _hash(clone, YAML)
    tree = _mktree(clone, [f"100644 blob {blob}\t..", f"100644 blob {blob}\ta.yaml"])
    for name in ("chat", "agents", "prod"):
        tree = _mktree(clone, [f"040000 tree {tree}\t{name}"])
    head = git("rev-parse", "main", cwd=clone).strip()
    sha = git("commit-tree", tree, "-p", head, "-m", "crafted", cwd=clone).strip()
    git("push", "-q", "origin", f"{sha}:refs/heads/main", cwd=clone)
    key = ssh_keygen(tmp_path / "signing_key")
    settings = GitSettings(
        author_name=git_settings.author_name,
        author_email=git_settings.author_email,
        workdir=git_settings.workdir,
        signing=SigningSettings(format="ssh", key_file=key),
    )
    repo = open_repo(settings=settings)
    repo.sync()
    with pytest.raises(GitError) as caught:
        repo.commit_all([("signed", {"prod/agents/other.yaml": b"o\n"}, [])])
    assert not isinstance(caught.value, LocalCloneBroken)
    assert "prod/agents/chat/.." in str(caught.value) and "refuses" in str(caught.value)
    assert not (repo.path / "bridge-needs-reclone").exists()


def _mktree(clone: Path, lines: list[str]) -> str:
    return (
        subprocess.run(
            ["git", "mktree", "-z"],
            cwd=clone,
            input="".join(f"{line}\0" for line in lines).encode(),
            capture_output=True,
            check=True,
            env=_env(),
        )
        .stdout.decode()
        .strip()
    )
