"""Everything about reaching a remote: the environment of every git process,
SSH and HTTPS credentials, and translating git's stderr into our errors.

Credentials exist only in the environment of the git child processes started
here: an SSH key path in `GIT_SSH_COMMAND`, an HTTPS password in an env var
read by a private GIT_ASKPASS script. Never in a URL, never in `.git/config`,
never in a log line or an exception message. This module must not import
httpx, rendering or the control plane.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bridge.config import GitSettings, HttpsSettings, SshSettings, Target
from bridge.errors import (
    ConfigError,
    GitAuthRefused,
    GitError,
    GitRemoteUnavailable,
)
from bridge.redaction import Redacted, redact_url, scrub

# Git variables a user may legitimately set for TLS; every other GIT_* variable
# is dropped, because an inherited GIT_DIR, GIT_INDEX_FILE, GIT_WORK_TREE,
# GIT_CONFIG_* or GIT_ASKPASS would silently redirect or change what we do.
_PASSTHROUGH_GIT_VARS = frozenset({"GIT_SSL_CAINFO", "GIT_SSL_CAPATH"})
_DROPPED_VARS = frozenset({"SSH_ASKPASS", "SSH_ASKPASS_REQUIRE", "GIT_ASKPASS"})

# `-c` options on every git call. Hooks: a global core.hooksPath must not run
# anything on our plumbing (update-ref fires `reference-transaction`).
# credential.helper reset: no helper from ~/.gitconfig may read or store the
# HTTPS password. gc.autoDetach: no background gc left running after we return.
BASE_CONFIG: tuple[str, ...] = (
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "credential.helper=",
    "-c",
    "gc.autoDetach=false",
    "-c",
    "advice.detachedHead=false",
)

LOCAL_TIMEOUT = 300.0  # seconds; local plumbing on a 10k-file repo takes < 1 s
REMOTE_TIMEOUT = 300.0  # seconds for one fetch or push

# `-c` options on every fetch and push. No redirect is followed (git follows
# one on the first request by default, and then asks for credentials for the
# host it landed on): credentials go to the configured URL only. The path stays
# out of credential prompts, so that the askpass helper can match them exactly.
REMOTE_CONFIG: tuple[str, ...] = (
    "-c",
    "http.followRedirects=false",
    "-c",
    "credential.useHttpPath=false",
)

ASKPASS_USER_VAR = "BRIDGE_GIT_ASKPASS_USERNAME"
ASKPASS_PASSWORD_VAR = "BRIDGE_GIT_ASKPASS_PASSWORD"  # noqa: S105 - a variable name
ASKPASS_SCHEME_VAR = "BRIDGE_GIT_ASKPASS_SCHEME"
ASKPASS_HOST_VAR = "BRIDGE_GIT_ASKPASS_HOST"
ASKPASS_REFUSED = "gitops-bridge askpass: not answering"
# git's prompts name the remote it is talking to: `Username for 'https://host:port': `
# and `Password for 'https://user@host:port': ` (the user percent-encoded, so it
# holds no raw "@" or "/"). The helper answers only those naming the configured
# scheme, host and port; any other host (a redirect, a url.*.insteadOf rewrite
# in someone's git config) gets nothing. The values come from the environment,
# never from the script's text.
_ASKPASS_SCRIPT = f"""#!/bin/sh
# Written by langsmith-gitops-bridge; answers git's credential prompts from the
# environment of the git process only, for the configured remote only. Holds no
# secret itself.
origin="${ASKPASS_SCHEME_VAR}://${ASKPASS_HOST_VAR}"
refuse() {{
  printf '%s\\n' "{ASKPASS_REFUSED} a prompt for another remote than $origin" >&2
  exit 1
}}
case "$1" in
  "Username for '$origin': ") printf '%s\\n' "${ASKPASS_USER_VAR}" ;;
  "Password for '$origin': ") printf '%s\\n' "${ASKPASS_PASSWORD_VAR}" ;;
  "Password for '${ASKPASS_SCHEME_VAR}://"*"@${ASKPASS_HOST_VAR}': ")
    user=${{1#"Password for '${ASKPASS_SCHEME_VAR}://"}}
    user=${{user%"@${ASKPASS_HOST_VAR}': "}}
    case "$user" in
      */*|*@*|*"'"*) refuse ;;
    esac
    printf '%s\\n' "${ASKPASS_PASSWORD_VAR}" ;;
  *) refuse ;;
esac
"""


def askpass_origin(url: str) -> tuple[str, str]:
    """(scheme, host[:port]) of a remote URL as git writes them in its credential
    prompts: the text of the URL itself, without user info or path."""
    scheme, _, rest = url.partition("://")
    authority = rest.split("/", 1)[0]
    return scheme, authority.rsplit("@", 1)[-1]


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for every git subprocess (local or remote)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if (not k.startswith("GIT_") or k in _PASSTHROUGH_GIT_VARS) and k not in _DROPPED_VARS
    }
    env.update(
        {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            # Paths we pass are paths, never glob patterns.
            "GIT_LITERAL_PATHSPECS": "1",
            "LC_ALL": "C",
            "LANGUAGE": "C",
        }
    )
    if extra:
        env.update(extra)
    return env


@dataclass
class GitResult:
    returncode: int
    stdout: bytes
    stderr: str


def run_git(
    args: Sequence[str],
    *,
    git_dir: Path | None,
    env: Mapping[str, str],
    input: bytes | None = None,
    timeout: float = LOCAL_TIMEOUT,
    config: Sequence[str] = (),
) -> GitResult:
    """Run one git command; never raises on a git failure (callers translate).

    A new session means no controlling terminal, so nothing (ssh, ssh-keygen,
    gpg) can ever stop and wait for a passphrase typed on a tty.
    """
    argv = ["git", *BASE_CONFIG, *config]
    if git_dir is not None:
        argv.append(f"--git-dir={git_dir}")
    argv.extend(args)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            start_new_session=True,
        )
    except FileNotFoundError as e:
        raise GitError(
            "the git command is not installed or not on PATH",
            hint="install git 2.30 or newer",
        ) from e
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        return GitResult(
            -1, out, err.decode("utf-8", "replace") + f"\ntimed out after {timeout:g}s"
        )
    return GitResult(proc.returncode, out, err.decode("utf-8", "replace"))


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # git starts ssh / remote-https children; kill the whole session we created.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def scheme_of(url: str) -> str:
    """`ssh`, `http` (http and https) or `file` (file:// and plain local paths)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "ssh":
        return "ssh"
    if scheme in ("http", "https"):
        return "http"
    return "file"


class Transport:
    """How to reach one target's remote; owns the askpass temp dir (call close())."""

    def __init__(self, target: Target, git_settings: GitSettings) -> None:
        self.target = target
        self.url = target.repo
        self.display_url = redact_url(target.repo)
        self.kind = scheme_of(target.repo)
        self._secret: Redacted | None = None
        self._askpass_dir: Path | None = None
        self._remote_env: dict[str, str] = {}
        # A forge's credentials (pull-request mode): asked for before each fetch
        # and push, so that a GitHub App's hourly token is always the current one.
        self._credentials: Callable[[], tuple[str, Redacted]] | None = None
        self._credentials_origin = ""
        if self.kind == "ssh":
            self._remote_env = self._ssh_env(_pick_ssh(target.ssh, git_settings.ssh))
        elif self.kind == "http":
            https = _pick_https(target.https, git_settings.https)
            self._secret = https.password
            self._https = https

    # -- environment ----------------------------------------------------------

    def _ssh_env(self, ssh: SshSettings) -> dict[str, str]:
        ns = self.target.namespace
        if ssh.known_hosts_file is None:
            raise ConfigError(
                f"target {ns}: ssh remote {self.display_url} has no known_hosts file; "
                "the bridge never accepts an unknown host key",
                hint="set git.ssh.knownHostsFile (or the target's ssh.knownHostsFile) to a file "
                "with the server's host key, e.g. from `ssh-keyscan -p PORT HOST` checked out of band",
            )
        if not ssh.known_hosts_file.is_file():
            raise ConfigError(
                f"target {ns}: the known_hosts file {ssh.known_hosts_file} for {self.display_url} "
                "does not exist",
                hint="create it with the server's pinned host key",
            )
        if ssh.key_file is not None and not ssh.key_file.is_file():
            raise ConfigError(
                f"target {ns}: the ssh key file {ssh.key_file} for {self.display_url} does not "
                "exist",
                hint="mount the deploy key there or fix git.ssh.keyFile",
            )
        if '"' in str(ssh.known_hosts_file):
            raise ConfigError(
                f"target {ns}: the known_hosts path {ssh.known_hosts_file} contains a double quote",
                hint="use a path without quotes",
            )
        parts = ["ssh"]
        if ssh.key_file is not None:
            parts += ["-i", str(ssh.key_file), "-o", "IdentitiesOnly=yes"]
        parts += [
            "-o",
            "IdentityAgent=none",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            # ssh splits option values on whitespace; its config syntax takes "...".
            f'UserKnownHostsFile="{ssh.known_hosts_file}"',
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=15",
            "-o",
            "LogLevel=ERROR",
        ]
        # git hands GIT_SSH_COMMAND to `sh -c`: every path is shell-quoted.
        return {"GIT_SSH_COMMAND": shlex.join(parts)}

    def use_credentials(
        self, credentials: Callable[[], tuple[str, Redacted]], *, origin: str
    ) -> None:
        """Git over HTTPS authenticates with these (user, token) instead of
        git.https: a forge's token, through the same askpass (never in a URL).
        `origin` names where the token comes from, for error hints."""
        self._credentials = credentials
        self._credentials_origin = origin

    def _https_now(self) -> HttpsSettings:
        if self._credentials is None:
            return self._https
        user, token = self._credentials()
        self._secret = token  # scrubbed from git's stderr from now on
        return HttpsSettings(username=user, password=token)

    def _ensure_askpass(self) -> dict[str, str]:
        https = self._https_now()
        if https.password is None and https.username is None:
            return {}
        if self._askpass_dir is None:
            self._askpass_dir = Path(tempfile.mkdtemp(prefix="gitops-bridge-askpass-"))
            os.chmod(self._askpass_dir, stat.S_IRWXU)
            script = self._askpass_dir / "askpass.sh"
            fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
            with os.fdopen(fd, "w") as f:
                f.write(_ASKPASS_SCRIPT)
        scheme, host = askpass_origin(self.url)
        env = {
            "GIT_ASKPASS": str(self._askpass_dir / "askpass.sh"),
            ASKPASS_SCHEME_VAR: scheme,
            ASKPASS_HOST_VAR: host,
        }
        env[ASKPASS_USER_VAR] = https.username or ""
        env[ASKPASS_PASSWORD_VAR] = https.password.reveal() if https.password else ""
        return env

    def remote_env(self) -> dict[str, str]:
        """Environment for fetch and push (credentials included, for the child only)."""
        extra = dict(self._remote_env)
        if self.kind == "http":
            extra.update(self._ensure_askpass())
        return base_env(extra)

    def close(self) -> None:
        if self._askpass_dir is not None:
            shutil.rmtree(self._askpass_dir, ignore_errors=True)
            self._askpass_dir = None

    # -- errors ---------------------------------------------------------------

    def clean(self, text: str) -> str:
        """git's stderr made safe to show: secret scrubbed, trimmed to the useful lines."""
        lines = [ln.strip() for ln in scrub(text, self._secret).splitlines() if ln.strip()]
        lines = [ln for ln in lines if not ln.startswith(("hint:", "To ", "Done"))]
        detail = " | ".join(lines[-4:])
        return detail if len(detail) <= 400 else detail[:397] + "..."

    def failure(self, action: str, stderr: str) -> GitError:
        """Translate a failed fetch/push/ls-remote into one of our error classes."""
        ns = self.target.namespace
        detail = self.clean(stderr)
        where = f"target {ns}: {action} {self.display_url} failed: {detail or 'no output'}"
        low = stderr.lower()
        redirect = _REDIRECT.search(low)
        if redirect:
            return GitError(
                f"target {ns}: {action} {self.display_url} failed: the server answered with a "
                f"redirect (HTTP {redirect.group(1)}), which the bridge does not follow: "
                "credentials go to the configured URL only",
                hint="set the target's repo to the URL the server redirects to (see "
                f"`curl -sI '{self.display_url}/info/refs?service=git-upload-pack'`)",
            )
        if ASKPASS_REFUSED.lower() in low:
            return GitAuthRefused(
                where,
                hint=f"git asked for credentials for another remote than {self.display_url} "
                "(a url.*.insteadOf rewrite or a redirect in the git configuration of the "
                "bridge's user?); the bridge answers only for the configured scheme, host "
                "and port — remove that git configuration",
            )
        if _HOST_KEY.search(low):
            return GitAuthRefused(
                where,
                hint="the server's host key is not the pinned one in the known_hosts file; "
                "verify the server's key out of band and update the file (never accept-new)",
            )
        if _AUTH.search(low):
            return GitAuthRefused(
                where,
                hint=self._auth_hint(),
            )
        if _NOT_FOUND.search(low):
            return GitError(
                where,
                hint="check the repo URL in the target and that the credentials may read it",
            )
        if _UNAVAILABLE.search(low):
            return GitRemoteUnavailable(
                where,
                hint="the remote is unreachable or failing; the bridge retries next cycle — "
                "check the network, DNS and the git server",
            )
        return GitRemoteUnavailable(
            where,
            hint="git failed talking to the remote; the bridge retries next cycle — if it "
            "persists, check the git server and the message above",
        )

    def _auth_hint(self) -> str:
        if self.kind == "ssh":
            return (
                "the server refused the deploy key: check git.ssh.keyFile and that the key "
                "has write access to the repo"
            )
        if self.kind == "http" and self._credentials is not None:
            return (
                f"the server refused the forge token ({self._credentials_origin}) for git over "
                "HTTPS: check that it is valid and may push to the repository"
            )
        if self.kind == "http":
            https = self._https
            names = " and ".join(n for n in (https.username_env, https.password_env) if n)
            return (
                f"the server refused the HTTPS credentials from {names or 'git.https'}: "
                "check the username and token and that the token may push"
                if https.password is not None
                else "the server wants credentials: set git.https.usernameEnv and "
                "git.https.passwordEnv"
            )
        return "check file permissions on the repository"


_REDIRECT = re.compile(r"returned error: (30[1278])\b")
_HOST_KEY = re.compile(
    r"host key verification failed|remote host identification has changed"
    r"|no \S+ host key is known|host key for .* has changed"
)
_AUTH = re.compile(
    r"authentication failed|permission denied|could not read (username|password)"
    r"|terminal prompts disabled|returned error: 40[13]\b|http 40[13]\b|access denied"
    r"|invalid username or password|unauthorized"
)
_NOT_FOUND = re.compile(
    r"repository not found|does not appear to be a git repository|returned error: 404\b"
    r"|not a git repository|no such file or directory"
)
_UNAVAILABLE = re.compile(
    r"could not resolve|connection refused|connection timed out|timed out|failed to connect"
    r"|unable to access|network is unreachable|no route to host|connection reset"
    r"|remote end hung up|early eof|returned error: 5\d\d\b|could not read from remote"
    r"|broken pipe|ssh: connect to host|operation timed out|connection closed"
)


def _pick_ssh(own: SshSettings, default: SshSettings) -> SshSettings:
    return SshSettings(
        key_file=own.key_file or default.key_file,
        known_hosts_file=own.known_hosts_file or default.known_hosts_file,
    )


def _pick_https(own: HttpsSettings, default: HttpsSettings) -> HttpsSettings:
    if own.password is not None or own.username is not None:
        return own
    return default
