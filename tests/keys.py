"""Keys made at test time: SSH keys (ssh-keygen) and a throwaway GnuPG home."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def ssh_keygen(path: Path, *, comment: str = "signing", passphrase: str = "") -> Path:
    """An ed25519 key pair at `path` and `path.pub`; returns the private key's path."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


@contextmanager
def throwaway_gnupg(home: Path, uid: str) -> Iterator[str]:
    """A fresh GnuPG home with one passphrase-less signing key; yields its fingerprint.

    Skips the test when gpg is not installed; stops the home's gpg-agent after.
    """
    if shutil.which("gpg") is None:
        pytest.skip("gpg is not installed")
    home.mkdir(mode=0o700)
    env = {"GNUPGHOME": str(home), "PATH": "/usr/bin:/bin"}
    try:
        subprocess.run(
            [
                "gpg",
                "--batch",
                "--passphrase",
                "",
                "--quick-gen-key",
                uid,
                "ed25519",
                "sign",
                "never",
            ],
            env=env,
            check=True,
            capture_output=True,
            timeout=30,
        )
        listing = subprocess.run(
            ["gpg", "--batch", "--with-colons", "--list-secret-keys"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        yield next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    finally:
        # gpg leaves a gpg-agent per home: stop it (by its home, not by name).
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, capture_output=True)
