"""Commit signing (SSH or OpenPGP): prove the key works, and the git options
that make `commit-tree` sign with it.

With `git.signing` set, every commit is signed or none is made (SPEC §6): the
key is checked before the first commit, and a failed signature fails the
commit before any ref moves. Nothing here may prompt: no tty, no askpass.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping

from bridge.config import SigningSettings
from bridge.errors import SigningError
from bridge.publishing.transport import base_env

CHECK_TIMEOUT = 30.0


class Signer:
    def __init__(self, settings: SigningSettings | None, *, target: str) -> None:
        self.settings = settings
        self.target = target  # namespace, for messages

    @property
    def enabled(self) -> bool:
        return self.settings is not None

    def describe(self) -> str:
        s = self.settings
        if s is None:
            return "no signing"
        if s.format == "ssh":
            return f"ssh key file {s.key_file}"
        home = f" in GNUPGHOME {s.gnupg_home}" if s.gnupg_home else ""
        return f"OpenPGP key {s.key}{home}"

    def env(self) -> dict[str, str]:
        """Extra environment for a signing git process (and for the check)."""
        s = self.settings
        extra: dict[str, str] = {
            # A passphrase-protected key must fail, never wait for someone to type.
            "SSH_ASKPASS": "/bin/false",
            "SSH_ASKPASS_REQUIRE": "never",
        }
        if s is not None and s.format == "openpgp" and s.gnupg_home is not None:
            extra["GNUPGHOME"] = str(s.gnupg_home)
        return extra

    def commit_tree_args(self) -> tuple[list[str], list[str]]:
        """(`-c` config options, commit-tree flags) for one commit."""
        s = self.settings
        if s is None:
            # A user's global commit.gpgSign must not make our commits fail or differ.
            return [], ["--no-gpg-sign"]
        if s.format == "ssh":
            return ["-c", "gpg.format=ssh", "-c", f"user.signingkey={s.key_file}"], ["-S"]
        return ["-c", "gpg.format=openpgp"], [f"-S{s.key}"]

    def failure(self, problem: str) -> SigningError:
        return SigningError(
            f"target {self.target}: cannot sign commits with {self.describe()}: {problem}; "
            "no commit was made",
            hint=self._hint(),
        )

    def _hint(self) -> str:
        s = self.settings
        if s is not None and s.format == "ssh":
            return (
                "git.signing.keyFile must be an unencrypted private key (ssh-keygen -N ''), "
                "readable by the bridge, mode 0600"
            )
        return (
            "git.signing.key must name a secret key without passphrase in git.signing.gnupgHome "
            "(check with `gpg --list-secret-keys`)"
        )

    def check(self) -> None:
        """Raise SigningError unless the configured key can sign right now."""
        s = self.settings
        if s is None:
            return
        if s.format == "ssh":
            self._check_ssh()
        else:
            self._check_openpgp()

    def _check_ssh(self) -> None:
        s = self.settings
        assert s is not None
        key = s.key_file
        if key is None:
            raise self.failure("no key file is configured")
        if not key.is_file():
            raise self.failure("the file does not exist")
        if not os.access(key, os.R_OK):
            raise self.failure("the file is not readable by the bridge")
        # -y with an empty passphrase loads the private key exactly as signing
        # will: a protected key, a public key, bad modes or garbage all fail here.
        out = self._run(["ssh-keygen", "-y", "-P", "", "-f", str(key)], None)
        if out.returncode != 0:
            raise self.failure(_ssh_problem(out.stderr))

    def _check_openpgp(self) -> None:
        s = self.settings
        assert s is not None
        if not s.key:
            raise self.failure("no key fingerprint is configured")
        out = self._run(
            [
                "gpg",
                "--batch",
                "--no-tty",
                "--pinentry-mode",
                "error",
                "--local-user",
                s.key,
                "--armor",
                "--sign",
                "--output",
                "-",
            ],
            b"gitops-bridge signing check\n",
        )
        if out.returncode != 0:
            raise self.failure(_gpg_problem(out.stderr))

    def _run(self, argv: list[str], input: bytes | None) -> subprocess.CompletedProcess[str]:
        env: Mapping[str, str] = base_env(self.env())
        try:
            proc = subprocess.run(
                argv,
                input=input.decode() if input is not None else None,
                capture_output=True,
                text=True,
                errors="replace",
                env=dict(env),
                timeout=CHECK_TIMEOUT,
                start_new_session=True,
                stdin=None if input is not None else subprocess.DEVNULL,
                check=False,
            )
        except FileNotFoundError as e:
            raise self.failure(f"{argv[0]} is not installed") from e
        except subprocess.TimeoutExpired as e:
            raise self.failure(f"{argv[0]} did not answer in {CHECK_TIMEOUT:g}s") from e
        return proc


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "unknown error"


def _ssh_problem(stderr: str) -> str:
    low = stderr.lower()
    if "passphrase" in low:
        return "the key is protected by a passphrase (the bridge cannot type it)"
    if "bad permissions" in low or "unprotected private key" in low:
        return "the key file's permissions are too open (chmod 600 it)"
    if "invalid format" in low or "not a private key" in low:
        return "the file is not an ssh private key"
    return _last_line(stderr)


def _gpg_problem(stderr: str) -> str:
    low = stderr.lower()
    if "no secret key" in low or "no default secret key" in low or "skipped" in low:
        return "no secret key with that fingerprint in the GnuPG home"
    if "pinentry" in low or "passphrase" in low or "bad passphrase" in low:
        return "the key is protected by a passphrase (the bridge cannot type it)"
    if "expired" in low or "revoked" in low:
        return "the key is expired or revoked"
    return _last_line(stderr)
