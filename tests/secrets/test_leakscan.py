"""tests/leakscan.py finds a secret wherever git keeps it, and nothing in a clean repo."""

from __future__ import annotations

import base64
import os
import subprocess
import textwrap
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.leakscan import _b64_fragments, scan_repo, scan_text

SECRET = "s3cr3t-Vz8Qm2Lp7Kx4"
SPECIAL = "p@ss/w0rd:x?y&z=1 ok"
ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@test.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@test.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str, input: str | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=ENV, input=input, capture_output=True, text=True, check=True
    ).stdout.strip()


def commit(repo: Path, files: dict[str, str | None], message: str = "change") -> str:
    for name, content in files.items():
        path = repo / name
        if content is None:
            git(repo, "rm", "-q", name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        git(repo, "add", name)
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    commit(
        path,
        {"README.md": "# deployments\n", "agents/alpha/kustomization.yaml": "resources: []\n"},
        "initial",
    )
    return path


def only_reports_of(found: list[str], needle: str) -> None:
    assert found, "the secret was not found"
    for line in found:
        assert line.endswith(f": {needle[:4]}…"), line
        assert needle not in line


def test_clean_repo_is_clean(repo: Path, tmp_path: Path) -> None:
    commit(
        repo, {"agents/alpha/secret-env.yaml": "stringData:\n  TOKEN: ENC[...]\n"}, "deploy alpha"
    )
    git(repo, "checkout", "-q", "-b", "other")
    commit(repo, {"x.txt": "nothing here\n"})
    git(repo, "checkout", "-q", "main")
    git(repo, "remote", "add", "origin", "https://git.example.com/x.git")
    assert scan_repo(repo, [SECRET, SPECIAL]) == []
    bare = tmp_path / "bare.git"
    git(tmp_path, "clone", "-q", "--mirror", str(repo), str(bare))
    assert scan_repo(bare, [SECRET, SPECIAL]) == []


def test_secret_only_in_a_deleted_file_of_an_old_commit(repo: Path) -> None:
    commit(repo, {"agents/alpha/secret.yaml": f"TOKEN: {SECRET}\n"}, "oops")
    commit(repo, {"agents/alpha/secret.yaml": None}, "remove it")
    commit(repo, {"later.txt": "later\n"}, "later")
    assert SECRET not in "".join(p.read_text() for p in repo.rglob("*.yaml"))
    found = scan_repo(repo, [SECRET])
    only_reports_of(found, SECRET)
    blob = git(repo, "rev-parse", "HEAD~2:agents/alpha/secret.yaml")
    assert f"blob {blob}: s3cr…" in found


def test_secret_only_in_a_commit_message(repo: Path) -> None:
    sha = commit(repo, {"a.txt": "a\n"}, f"rotate token {SECRET}")
    commit(repo, {"b.txt": "b\n"}, "next")
    found = scan_repo(repo, [SECRET])
    only_reports_of(found, SECRET)
    assert f"commit {sha}: s3cr…" in found
    assert f"message of {sha}: s3cr…" in found


def test_secret_only_on_another_branch_also_in_a_bare_clone(repo: Path, tmp_path: Path) -> None:
    git(repo, "checkout", "-q", "-b", "feature")
    commit(repo, {"agents/beta/secret.yaml": f"TOKEN: {SECRET}\n"}, "beta")
    git(repo, "checkout", "-q", "main")
    assert not (repo / "agents" / "beta").exists()
    only_reports_of(scan_repo(repo, [SECRET]), SECRET)
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(repo, "push", "-q", str(bare), "main", "feature")
    found = scan_repo(bare, [SECRET])
    only_reports_of(found, SECRET)
    assert any(line.startswith("blob ") for line in found)


@pytest.mark.parametrize("prefix", ["", "x", "xy"], ids=["align0", "align1", "align2"])
@pytest.mark.parametrize("urlsafe", [False, True], ids=["std", "urlsafe"])
def test_secret_only_base64_encoded(repo: Path, prefix: str, urlsafe: bool) -> None:
    # "??>" makes '+' / '/' (or '-' / '_') appear, so the alphabets really differ.
    raw = f"{prefix}{SECRET}??>{prefix}".encode()
    encoded = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(raw).decode()
    sha = commit(repo, {"agents/alpha/secret.yaml": f"data:\n  TOKEN: {encoded}\n"}, "b64")
    assert SECRET not in (repo / "agents/alpha/secret.yaml").read_text()
    found = scan_repo(repo, [SECRET])
    only_reports_of(found, SECRET)
    blob = git(repo, "rev-parse", f"{sha}:agents/alpha/secret.yaml")
    assert f"blob {blob}: s3cr…" in found


def test_secret_base64_wrapped_across_lines(repo: Path) -> None:
    encoded = base64.b64encode(b"A" * 50 + SECRET.encode() + b"B" * 50).decode()
    wrapped = "\n".join(textwrap.wrap(encoded, 76)) + "\n"  # MIME line length
    # The line break falls inside the encoded secret, so only unwrapping finds it.
    assert not any(f.decode() in wrapped for f in _b64_fragments(SECRET.encode()))
    commit(repo, {"pem.txt": wrapped}, "pem")
    only_reports_of(scan_repo(repo, [SECRET]), SECRET)


def test_secret_only_in_a_dangling_blob(repo: Path) -> None:
    blob = git(repo, "hash-object", "-w", "--stdin", input=f"TOKEN={SECRET}\n")
    assert git(repo, "status", "--porcelain") == ""
    found = scan_repo(repo, [SECRET])
    assert found == [f"blob {blob}: s3cr…"]


def test_secret_only_reachable_from_the_reflog(repo: Path) -> None:
    sha = commit(repo, {"a.txt": f"{SECRET}\n"}, "bad")
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    assert sha not in git(repo, "log", "--all", "--format=%H")
    found = scan_repo(repo, [SECRET])
    only_reports_of(found, SECRET)
    assert any(line.startswith("blob ") for line in found)


def test_secret_url_encoded_in_git_config(repo: Path) -> None:
    git(
        repo,
        "remote",
        "add",
        "origin",
        f"https://bot:{quote(SPECIAL, safe='')}@git.example.com/x.git",
    )
    found = scan_repo(repo, [SPECIAL])
    assert found == [f"{repo / '.git' / 'config'}: p@ss…"]


def test_secret_only_in_the_working_tree(repo: Path) -> None:
    (repo / "untracked.env").write_text(f"TOKEN={SECRET}\n")
    assert scan_repo(repo, [SECRET]) == [f"{repo / 'untracked.env'}: s3cr…"]


def test_short_needles_are_refused(repo: Path) -> None:
    with pytest.raises(ValueError, match="too short"):
        scan_repo(repo, [SECRET, "short"])
    with pytest.raises(ValueError, match="too short"):
        scan_text("anything", ["1234567"])


def test_scan_text_finds_raw_base64_and_url_encoded() -> None:
    assert scan_text(f"log line token={SECRET} end", [SECRET]) == ["<text>: s3cr…"]
    for shift in range(3):
        blob = base64.b64encode(b"-" * shift + SECRET.encode()).decode()
        assert scan_text(f"payload {blob}", [SECRET]) == ["<text>: s3cr…"]
    assert scan_text(f"GET /x?p={quote(SPECIAL, safe='')}", [SPECIAL]) == ["<text>: p@ss…"]
    assert scan_text(f"GET /x?p={quote(SPECIAL, safe='').lower()}", [SPECIAL]) == ["<text>: p@ss…"]
    assert scan_text("a clean log line\n" * 100, [SECRET, SPECIAL]) == []
