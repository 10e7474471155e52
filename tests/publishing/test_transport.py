"""Reaching real remotes: smart HTTP with Basic auth and a real sshd on
loopback. Credentials must work, wrong ones must fail with our errors, and
the password must never land in the clone, the URL or an error message."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bridge.config import GitSettings, HttpsSettings, SshSettings, Target
from bridge.errors import (
    ConfigError,
    GitAuthRefused,
    GitError,
    GitRemoteUnavailable,
)
from bridge.publishing import TargetRepo
from bridge.publishing.transport import _ASKPASS_SCRIPT, askpass_origin, base_env
from bridge.redaction import Redacted
from tests.gitservers import (
    BaseURL,
    SshGitServer,
    bare_remote,
    git,
    http_git_server,
    recording_server,
    redirecting_server,
    ssh_git_server,
    sshd_available,
)

OpenRepo = Callable[..., TargetRepo]
PASSWORD = "s3cret-Pa55word-for-the-test"
USER = "bot"


def all_bytes_under(path: Path) -> bytes:
    return b"\n".join(p.read_bytes() for p in path.rglob("*") if p.is_file())


# --- environment -------------------------------------------------------------------


def test_base_env_drops_inherited_git_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GIT_DIR", "GIT_INDEX_FILE", "GIT_WORK_TREE", "GIT_ASKPASS", "SSH_ASKPASS"):
        monkeypatch.setenv(name, "/tmp/evil")
    monkeypatch.setenv("GIT_SSL_CAINFO", "/etc/ca.pem")
    env = base_env()
    for name in ("GIT_DIR", "GIT_INDEX_FILE", "GIT_WORK_TREE", "GIT_ASKPASS", "SSH_ASKPASS"):
        assert name not in env
    assert env["GIT_SSL_CAINFO"] == "/etc/ca.pem"
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["GIT_CONFIG_NOSYSTEM"] == "1"
    assert env["LC_ALL"] == "C"


# --- smart HTTP ----------------------------------------------------------------------


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[BaseURL]:
    root = tmp_path / "http-root"
    bare_remote(root / "app.git")
    with http_git_server(root, USER, PASSWORD) as url:
        yield url


def https_target(url: str, password: str | None = PASSWORD, user: str | None = USER) -> Target:
    return Target(
        namespace="agents",
        repo=url + "app.git",
        https=HttpsSettings(
            username_env="GIT_USER",
            password_env="GIT_TOKEN",
            username=user,
            password=Redacted(password) if password is not None else None,
        ),
    )


def test_http_basic_auth_round_trip_keeps_password_out_of_the_clone(
    open_repo: OpenRepo, http_server: BaseURL, tmp_path: Path
) -> None:
    repo = open_repo(target=https_target(http_server))
    assert repo.sync() is None
    sha = repo.commit("first", write={"a.txt": b"a\n"})
    assert repo.push() is True
    assert repo.sync() == sha
    assert git("rev-parse", "main", cwd=tmp_path / "http-root" / "app.git").strip() == sha
    served = [r for r in http_server.requests if r[2] == USER]
    assert any("git-receive-pack" in r[1] for r in served)  # the push went over HTTP
    askpass_dir = repo.transport._askpass_dir
    assert askpass_dir is not None and oct(askpass_dir.stat().st_mode & 0o777) == "0o700"
    repo.close()
    assert not askpass_dir.exists()  # the helper is gone with the repo
    workdir = tmp_path / "workdir"
    assert PASSWORD.encode() not in all_bytes_under(workdir)
    assert git("config", "--get", "remote.origin.url", cwd=repo.path).strip() == (
        http_server + "app.git"
    )


def test_http_wrong_password_is_auth_refused_without_the_password(
    open_repo: OpenRepo, http_server: BaseURL, tmp_path: Path
) -> None:
    wrong = "not-the-Password-123"
    repo = open_repo(target=https_target(http_server, password=wrong))
    with pytest.raises(GitAuthRefused) as caught:
        repo.sync()
    text = str(caught.value)
    assert wrong not in text and PASSWORD not in text
    assert "agents" in text and http_server in text and "GIT_TOKEN" in text
    assert caught.value.exit_code == 4 and not caught.value.temporary
    assert wrong.encode() not in all_bytes_under(tmp_path / "workdir")
    assert any(r[3] == "401" for r in http_server.requests)


def test_http_without_credentials_fails_fast(open_repo: OpenRepo, http_server: BaseURL) -> None:
    target = Target(namespace="agents", repo=http_server + "app.git")
    with pytest.raises(GitAuthRefused, match="wants credentials"):
        open_repo(target=target).sync()


def test_http_server_down_is_temporary(open_repo: OpenRepo, http_server: BaseURL) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    target = https_target(f"http://127.0.0.1:{port}/")
    with pytest.raises(GitRemoteUnavailable) as caught:
        open_repo(target=target).sync()
    assert caught.value.temporary and PASSWORD not in str(caught.value)


# --- credentials go to the configured remote only (issue #20) ----------------------


def test_http_redirect_to_another_host_is_not_followed(open_repo: OpenRepo, tmp_path: Path) -> None:
    with recording_server() as elsewhere, redirecting_server(elsewhere.url) as url:
        repo = open_repo(target=https_target(url))
        with pytest.raises(GitError) as caught:
            repo.sync()
    text = str(caught.value)
    assert "redirect (HTTP 302)" in text and "does not follow" in text and "agents" in text
    assert not caught.value.temporary and caught.value.exit_code == 4
    assert elsewhere.requests == []  # never even asked, so no credential could go there
    assert not elsewhere.received(PASSWORD) and PASSWORD not in text


def test_askpass_answers_only_for_the_configured_scheme_host_and_port(
    open_repo: OpenRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A git config that rewrites the target's URL to another host: git then asks
    # for credentials for that host, and the helper must not answer.
    with recording_server() as elsewhere, http_git_server(tmp_path, USER, PASSWORD) as url:
        home = tmp_path / "home"
        home.mkdir()
        (home / ".gitconfig").write_text(f'[url "{elsewhere.url}"]\n\tinsteadOf = {url}\n')
        monkeypatch.setenv("HOME", str(home))
        repo = open_repo(target=https_target(url))
        with pytest.raises(GitAuthRefused) as caught:
            repo.sync()
    assert elsewhere.requests  # git did go there...
    assert not elsewhere.received(PASSWORD)  # ...and got no password
    assert not any("Authorization" in headers for _m, _p, headers in elsewhere.requests)
    assert "another remote" in str(caught.value) and PASSWORD not in str(caught.value)


ASKPASS_ENV = {
    "PATH": "/usr/bin:/bin",
    "BRIDGE_GIT_ASKPASS_SCHEME": "https",
    "BRIDGE_GIT_ASKPASS_HOST": "git.example.com:8443",
    "BRIDGE_GIT_ASKPASS_USERNAME": "bot",
    "BRIDGE_GIT_ASKPASS_PASSWORD": PASSWORD,
}
ASKPASS_PROMPTS = [
    ("Username for 'https://git.example.com:8443': ", "bot"),
    ("Password for 'https://bot@git.example.com:8443': ", PASSWORD),
    ("Password for 'https://me%40corp.com@git.example.com:8443': ", PASSWORD),
    ("Password for 'https://git.example.com:8443': ", PASSWORD),
    ("Username for 'https://git.example.com': ", None),  # another port
    ("Password for 'https://bot@git.example.com': ", None),
    ("Password for 'http://bot@git.example.com:8443': ", None),  # another scheme
    ("Username for 'https://evil.example.com:8443': ", None),  # another host
    ("Password for 'https://bot@evil.example.com:8443': ", None),
    ("Password for 'https://bot@evil/x@git.example.com:8443': ", None),  # a path in front
    ("Username for 'https://git.example.com:8443/agents.git': ", None),
    ("Passphrase for key: ", None),
]


@pytest.mark.parametrize(("prompt", "answer"), ASKPASS_PROMPTS)
def test_askpass_script_matches_the_whole_prompt(
    tmp_path: Path, prompt: str, answer: str | None
) -> None:
    script = tmp_path / "askpass.sh"
    script.write_text(_ASKPASS_SCRIPT)
    script.chmod(0o700)
    done = subprocess.run(
        [str(script), prompt], env=ASKPASS_ENV, capture_output=True, text=True, check=False
    )
    if answer is None:
        assert done.returncode != 0 and done.stdout == ""
        assert PASSWORD not in done.stderr and "not answering" in done.stderr
    else:
        assert done.returncode == 0 and done.stdout == answer + "\n"


def test_askpass_origin_is_the_url_text_git_prompts_with() -> None:
    assert askpass_origin("https://git.example.com/a/b.git") == ("https", "git.example.com")
    assert askpass_origin("http://u@127.0.0.1:8080/a.git") == ("http", "127.0.0.1:8080")
    assert askpass_origin("https://[::1]:8443/a.git") == ("https", "[::1]:8443")


# --- SSH ---------------------------------------------------------------------------

needs_sshd = pytest.mark.skipif(
    not sshd_available() or os.geteuid() != 0, reason="needs /usr/sbin/sshd and root"
)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshGitServer]:
    if not sshd_available() or os.geteuid() != 0:
        pytest.skip("needs /usr/sbin/sshd and root")
    root = tmp_path_factory.mktemp("ssh-root")
    with ssh_git_server(root) as server:
        yield server


def ssh_target(sshd: SshGitServer, name: str, key: Path, known_hosts: Path) -> Target:
    bare_remote(sshd.root / name)
    return Target(
        namespace="agents",
        repo=sshd.url_for(name),
        ssh=SshSettings(key_file=key, known_hosts_file=known_hosts),
    )


@needs_sshd
def test_ssh_round_trip_with_pinned_host_key(
    open_repo: OpenRepo, sshd: SshGitServer, tmp_path: Path
) -> None:
    # Paths with a space prove GIT_SSH_COMMAND is quoted.
    keys = tmp_path / "deploy keys"
    keys.mkdir()
    key = keys / "id ed25519"
    shutil.copy(sshd.client_key, key)
    key.chmod(0o600)
    known = keys / "known hosts"
    shutil.copy(sshd.known_hosts, known)
    target = ssh_target(sshd, "ok.git", key, known)
    repo = open_repo(target=target)
    assert repo.sync() is None
    sha = repo.commit("over ssh", write={"a.txt": b"a\n"})
    assert repo.push() is True
    assert git("rev-parse", "main", cwd=sshd.root / "ok.git").strip() == sha
    assert known.read_text() == sshd.known_hosts.read_text()


@needs_sshd
def test_ssh_unknown_host_key_is_refused_not_accepted(
    open_repo: OpenRepo, sshd: SshGitServer, tmp_path: Path
) -> None:
    other = tmp_path / "other_host"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
        check=True,
        capture_output=True,
    )
    wrong_known = tmp_path / "known_hosts"
    wrong_known.write_text(
        f"[127.0.0.1]:{sshd.port} {' '.join(other.with_suffix('.pub').read_text().split()[:2])}\n"
    )
    empty_known = tmp_path / "empty_known_hosts"
    empty_known.write_text("")
    for known in (wrong_known, empty_known):
        before = known.read_text()
        target = ssh_target(sshd, "pinned.git", sshd.client_key, known)
        with pytest.raises(GitAuthRefused, match="host key") as caught:
            open_repo(target=target).sync()
        assert "agents" in str(caught.value)
        assert known.read_text() == before  # nothing was accepted or added


@needs_sshd
def test_ssh_wrong_client_key_is_auth_refused(
    open_repo: OpenRepo, sshd: SshGitServer, tmp_path: Path
) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)],
        check=True,
        capture_output=True,
    )
    target = ssh_target(sshd, "denied.git", stranger, sshd.known_hosts)
    with pytest.raises(GitAuthRefused, match="deploy key"):
        open_repo(target=target).sync()


def test_ssh_without_known_hosts_is_a_config_error(git_settings: GitSettings) -> None:
    target = Target(namespace="agents", repo="ssh://git@127.0.0.1:1/x.git")
    with pytest.raises(ConfigError, match="known_hosts"):
        TargetRepo(target, git_settings)
    # The global setting is the fallback for a target without its own.
    missing = Path("/nonexistent/known_hosts")
    settings = GitSettings(workdir=git_settings.workdir, ssh=SshSettings(known_hosts_file=missing))
    with pytest.raises(ConfigError, match="does not exist"):
        TargetRepo(target, settings)
