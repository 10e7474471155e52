"""Files only the bridge's own user may read: created 0600, never widened.

The status file (`<workdir>/status.json`: errors, repo URLs, names), the local
control plane's SQLite database (plaintext secret values of its deployments,
and its -wal/-shm files) and the demo's keys are made here. Each is created
with mode 0600 in the `open` call itself: a file written first and chmod-ed
after is readable by anyone in between, and under a permissive umask (0o000,
common in containers) `write_text` makes it 0666.

Must not: import anything but the standard library (the control plane's store
uses it as well as the run loop).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path

MODE = 0o600
# O_EXCL: never open a file someone else made (or a symlink they planted) in its
# place; O_NOFOLLOW for the same reason where O_EXCL does not apply.
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` with `data`, atomically, as a file of mode 0600.

    Written to a new file of a random name beside it (so a stale temporary of a
    killed process, or one of another mode, is never reused) and renamed over
    `path`: a reader sees the old bytes or the new, never a part."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, _CREATE, MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def create_private(path: Path) -> bool:
    """Make `path` an empty file of mode 0600 unless it exists; True if it was made.

    An existing file keeps its bytes; if an older version left it readable by
    group or others, it is narrowed to 0600 before anything more is written to it."""
    try:
        fd = os.open(path, _CREATE, MODE)
    except FileExistsError:
        narrow(path)
        return False
    os.close(fd)
    return True


def narrow(path: Path) -> None:
    """Take group and other permissions off an existing file (no-op if missing).
    Through a descriptor opened without following links: a symlink in the
    file's place is left alone, never followed to change another file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError as e:
        if e.errno == errno.ELOOP:
            return  # a symlink: its owner chose where the file lives
        raise
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode) and stat.S_IMODE(mode) & 0o077:
            os.fchmod(fd, stat.S_IMODE(mode) & 0o700)
    finally:
        os.close(fd)
