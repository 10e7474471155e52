"""Signed commits with real keys: SSH (ssh-keygen) and OpenPGP (a throwaway
GnuPG home). A key that cannot sign means no commit at all."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bridge.config import GitSettings, SigningSettings
from bridge.errors import SigningError
from bridge.publishing import TargetRepo
from tests.gitservers import git
from tests.keys import ssh_keygen, throwaway_gnupg
from tests.publishing.conftest import AUTHOR, EMAIL

OpenRepo = Callable[..., TargetRepo]


def signed_settings(base: GitSettings, **signing: object) -> GitSettings:
    return GitSettings(
        author_name=AUTHOR,
        author_email=EMAIL,
        workdir=base.workdir,
        signing=SigningSettings(**signing),  # type: ignore[arg-type]
    )


def test_ssh_signed_commits_verify(
    open_repo: OpenRepo, remote: Path, git_settings: GitSettings, tmp_path: Path
) -> None:
    key = ssh_keygen(tmp_path / "signing_key")
    repo = open_repo(settings=signed_settings(git_settings, format="ssh", key_file=key))
    repo.sync()
    repo.check_signing()
    first = repo.commit("first", write={"a.txt": b"1\n"})
    second = repo.commit("second", write={"a.txt": b"2\n"})
    assert repo.push() is True

    allowed = tmp_path / "allowed_signers"
    pub = " ".join(key.with_suffix(".pub").read_text().split()[:2])
    allowed.write_text(f'{EMAIL} namespaces="git" {pub}\n')
    for sha in (first, second):
        assert sha is not None
        git("-c", f"gpg.ssh.allowedSignersFile={allowed}", "verify-commit", sha, cwd=remote)
        shown = git(
            "-c",
            f"gpg.ssh.allowedSignersFile={allowed}",
            "log",
            "-1",
            "--format=%G? %GS",
            sha,
            cwd=remote,
        )
        # verify-commit does not check the signer is the committer: check the principal.
        assert shown.strip() == f"G {EMAIL}"


def test_passphrase_protected_ssh_key_makes_no_commit(
    open_repo: OpenRepo, remote: Path, git_settings: GitSettings, tmp_path: Path
) -> None:
    plain = open_repo()
    plain.sync()
    base = plain.commit("unsigned base", write={"a.txt": b"0\n"})
    plain.push()
    plain.close()

    key = ssh_keygen(tmp_path / "protected_key", passphrase="correct horse battery")
    repo = open_repo(settings=signed_settings(git_settings, format="ssh", key_file=key))
    assert repo.sync() == base
    with pytest.raises(SigningError) as caught:
        repo.check_signing()
    text = str(caught.value)
    assert str(key) in text and "passphrase" in text and "agents" in text
    assert caught.value.exit_code == 4
    with pytest.raises(SigningError):
        repo.commit("must not exist", write={"a.txt": b"1\n"})
    assert git("rev-parse", "refs/heads/main", cwd=repo.path).strip() == base
    assert repo.push() is False
    assert git("rev-parse", "main", cwd=remote).strip() == base


def test_missing_or_public_ssh_key_is_a_signing_error(
    open_repo: OpenRepo, git_settings: GitSettings, tmp_path: Path
) -> None:
    missing = open_repo(
        settings=signed_settings(git_settings, format="ssh", key_file=tmp_path / "none")
    )
    with pytest.raises(SigningError, match="does not exist"):
        missing.check_signing()
    key = ssh_keygen(tmp_path / "k")
    public = open_repo(
        settings=signed_settings(git_settings, format="ssh", key_file=key.with_suffix(".pub"))
    )
    with pytest.raises(SigningError, match=r"k\.pub"):
        public.check_signing()


def test_unsigned_commit_ignores_a_global_gpgsign(
    open_repo: OpenRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[commit]\n\tgpgsign = true\n[user]\n\tsigningkey = nope\n")
    monkeypatch.setenv("HOME", str(home))
    repo = open_repo()
    repo.sync()
    assert repo.commit("plain", write={"a.txt": b"a\n"}) is not None


# --- OpenPGP -----------------------------------------------------------------------


@pytest.fixture
def gnupg_home(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    home = tmp_path / "gnupg"
    with throwaway_gnupg(home, f"GitOps Bridge <{EMAIL}>") as fpr:
        yield home, fpr


def test_openpgp_signed_commits_verify(
    open_repo: OpenRepo,
    remote: Path,
    git_settings: GitSettings,
    gnupg_home: tuple[Path, str],
) -> None:
    home, fpr = gnupg_home
    settings = signed_settings(git_settings, format="openpgp", key=fpr, gnupg_home=home)
    repo = open_repo(settings=settings)
    repo.sync()
    repo.check_signing()
    sha = repo.commit("signed", write={"a.txt": b"a\n"})
    assert repo.push() is True
    assert sha is not None
    git("verify-commit", sha, cwd=remote, GNUPGHOME=str(home))
    shown = git("log", "-1", "--format=%G? %GF", sha, cwd=remote, GNUPGHOME=str(home))
    assert shown.strip() == f"G {fpr}"


def test_unknown_openpgp_key_is_a_signing_error(
    open_repo: OpenRepo, git_settings: GitSettings, gnupg_home: tuple[Path, str]
) -> None:
    home, _ = gnupg_home
    unknown = "0123456789ABCDEF0123456789ABCDEF01234567"
    repo = open_repo(
        settings=signed_settings(git_settings, format="openpgp", key=unknown, gnupg_home=home)
    )
    repo.sync()
    with pytest.raises(SigningError, match=unknown):
        repo.commit("x", write={"a.txt": b"a\n"})
    assert repo.ls_tree("") == {}


def test_key_lost_after_the_check_still_makes_no_commit(
    open_repo: OpenRepo, remote: Path, git_settings: GitSettings, tmp_path: Path
) -> None:
    key = ssh_keygen(tmp_path / "vanishing_key")
    repo = open_repo(settings=signed_settings(git_settings, format="ssh", key_file=key))
    repo.sync()
    repo.check_signing()
    key.unlink()  # e.g. a rotated Secret mount between check and commit
    with pytest.raises(SigningError, match="no commit was made"):
        repo.commit("x", write={"a.txt": b"a\n"})
    assert repo.ls_tree("") == {}
    assert repo.push() is False
    assert git("rev-parse", "-q", "--verify", "main", cwd=remote, check=False) == ""
