"""Reading a target's history for `audit`: commits, their paths and signatures.

Read-only plumbing on a clone's git dir (`TargetRepo.path`), one `git log`
for the whole history. Signatures are checked by git (`%G?`, `%GS`, `%GK`)
against the allowed-signers file (SSH) or the GnuPG home (OpenPGP) we are
given; deciding whether the signer is the *right* one is the auditor's job
(`bridge.commands.audit`), because git accepts a trusted key under any name.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from bridge.errors import GitError
from bridge.publishing.transport import base_env

_FIELDS = 12
_FORMAT = (
    "%x1e"
    + "%x00".join(["%H", "%P", "%an", "%ae", "%aI", "%cn", "%ce", "%cI", "%G?", "%GS", "%GK", "%B"])
    + "%x00"
)


@dataclass(frozen=True)
class CommitRecord:
    sha: str
    parents: tuple[str, ...]
    author_name: str
    author_email: str
    author_time: str  # ISO 8601 with offset
    committer_name: str
    committer_email: str
    commit_time: str
    signature: str  # git's %G?: G good, B bad, U good/unknown validity, N none, E cannot check, ...
    signer: str  # %GS: SSH principal or OpenPGP user id
    key: str  # %GK: key fingerprint / id
    message: str
    paths: tuple[str, ...]  # paths changed against the first parent


def _git(git_dir: Path, *args: str, env_extra: dict[str, str] | None = None) -> bytes:
    env = {**base_env(), **(env_extra or {})}
    done = subprocess.run(
        ["git", f"--git-dir={git_dir}", *args],
        capture_output=True,
        env=env,
        check=False,
        timeout=600,
    )
    if done.returncode != 0:
        raise GitError(
            f"git {args[0]} in {git_dir} failed: {done.stderr.decode(errors='replace').strip()}"
        )
    return done.stdout


def read_history(
    git_dir: Path,
    ref: str,
    *,
    paths: tuple[str, ...] = (),
    allowed_signers: Path | None = None,
    gnupg_home: Path | None = None,
) -> list[CommitRecord]:
    """Every commit reachable from `ref` that touches `paths` (all when empty), oldest first."""
    config: list[str] = []
    if allowed_signers is not None:
        config += ["-c", f"gpg.ssh.allowedSignersFile={allowed_signers}"]
    env = {"GNUPGHOME": str(gnupg_home)} if gnupg_home is not None else {}
    raw = _git(
        git_dir,
        *config,
        "log",
        "--reverse",
        "--no-renames",
        "--diff-merges=first-parent",
        "--name-only",
        f"--format={_FORMAT}",
        ref,
        "--",
        *paths,
        env_extra=env,
    )
    records: list[CommitRecord] = []
    for chunk in raw.split(b"\x1e")[1:]:
        fields = chunk.split(b"\x00", _FIELDS)
        if len(fields) != _FIELDS + 1:
            raise GitError(f"unexpected git log output in {git_dir}")
        text = [f.decode("utf-8", "replace") for f in fields]
        changed = tuple(p for p in text[_FIELDS].split("\n") if p.strip())
        records.append(
            CommitRecord(
                sha=text[0],
                parents=tuple(text[1].split()),
                author_name=text[2],
                author_email=text[3],
                author_time=text[4],
                committer_name=text[5],
                committer_email=text[6],
                commit_time=text[7],
                signature=text[8] or "N",
                signer=text[9],
                key=text[10],
                message=text[11],
                paths=changed,
            )
        )
    return records


def read_file(git_dir: Path, rev: str, path: str) -> bytes | None:
    """The bytes of `path` at `rev`, or None when it does not exist there."""
    done = subprocess.run(
        ["git", f"--git-dir={git_dir}", "cat-file", "blob", f"{rev}:{path}"],
        capture_output=True,
        env=base_env(),
        check=False,
        timeout=60,
    )
    return done.stdout if done.returncode == 0 else None


def list_files(git_dir: Path, rev: str, prefix: str = "") -> list[str]:
    """Paths of all files at `rev` (under `prefix`, a folder, when given)."""
    args = ["ls-tree", "-r", "-z", "--name-only", rev]
    if prefix:
        args += ["--", prefix.rstrip("/") + "/"]
    out = _git(git_dir, *args)
    return [p.decode("utf-8", "replace") for p in out.split(b"\x00") if p]


def last_author(git_dir: Path, rev: str, path: str) -> tuple[str, str, str] | None:
    """(sha, author name, author email) of the last commit up to `rev` that changed
    `path`, or None when no commit did."""
    out = _git(git_dir, "log", "-1", "--format=%H%x00%an%x00%ae", rev, "--", path)
    text = out.decode("utf-8", "replace").strip("\n")
    if not text:
        return None
    sha, name, email = text.split("\0", 2)
    return sha, name, email
