"""Compiled fast schema checks, kept on disk between bridge processes.

A `run --once` that changes one deployment validates ~8 objects. Without this
cache it pays for importing jsonschema (~0.16 s) or for compiling the
fastjsonschema copies of their kinds (~0.17 s a Deployment); a cold cycle
compiles them anyway (after schemas.FAST_AFTER objects of a kind) and stores
the compiled code here, so that later processes load it (~5 ms a kind).

What is stored is Python code, so the cache is trusted no more than the
bridge's own files: the folder (`<git.workdir>/checks`) is made 0700, entries
0600, and an entry is loaded only from a regular file (no symlink followed)
owned by this user that neither group nor others can write, in a folder of
the same kind; anything else is ignored. The key covers every input of the
compiled code: the schema files' bytes, the source of bridge.validation.schemas
(which shapes the fast schema), fastjsonschema's version and the interpreter's
(marshal's format). A failure to read or write the cache never fails a check:
the code is compiled as before. Bounded: entries of at most MAX_ENTRY_BYTES,
the oldest dropped once the folder holds more than MAX_FOLDER_BYTES.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import marshal
import os
import stat
import sys
from pathlib import Path
from types import CodeType

from bridge.privatefiles import write_private

log = logging.getLogger(__name__)

FORMAT = b"gitops-bridge fast checks 1"
MAX_ENTRY_BYTES = 16 * 1024 * 1024  # a Deployment's checks are ~0.35 MB
MAX_FOLDER_BYTES = 64 * 1024 * 1024  # every kind of a fleet, for a few versions
SUFFIX = ".checks"

_folder: Path | None = None


def configure(folder: Path | None) -> None:
    """Keep compiled checks in `folder` (None: keep nothing, compile in each process)."""
    global _folder
    _folder = folder


def folder() -> Path | None:
    return _folder


@functools.cache
def _environment() -> bytes:
    """The parts of every key that are the same for all kinds in this process:
    what makes and reads the stored code (the caller adds the schema files and
    the source that shaped the fast schema)."""
    import fastjsonschema  # the loaded code imports it as well

    return b"\0".join([FORMAT, sys.version.encode(), str(fastjsonschema.VERSION).encode()])


@functools.cache
def file_digest(path: str) -> bytes:
    """SHA-256 of a schema file's bytes (the files never change while we run)."""
    return hashlib.sha256(Path(path).read_bytes()).digest()


def key(*parts: bytes) -> str:
    """The entry name for compiled checks of the schema that `parts` identify."""
    h = hashlib.sha256(_environment())
    for part in parts:
        h.update(len(part).to_bytes(8, "big") + part)
    return h.hexdigest()


def load(name: str) -> tuple[str, list[CodeType]] | None:
    """The root function's name and the code objects stored under `name`, or None."""
    where = _folder
    if where is None or not _private_folder(where):
        return None
    try:
        fd = os.open(where / (name + SUFFIX), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None  # missing (the usual miss), a symlink, unreadable
    try:
        info = os.fstat(fd)
        if not _trusted(info) or info.st_size > MAX_ENTRY_BYTES:
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_ENTRY_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        root, codes = marshal.loads(data)  # noqa: S302 - only from a file private to this user (see _trusted)
    except (ValueError, EOFError, TypeError):
        return None
    if not isinstance(root, str) or not all(isinstance(c, CodeType) for c in codes):
        return None
    return root, list(codes)


def store(name: str, root: str, codes: list[CodeType]) -> None:
    """Keep compiled checks for later processes; never raises."""
    where = _folder
    if where is None:
        return
    try:
        data = marshal.dumps((root, codes))
        if len(data) > MAX_ENTRY_BYTES:
            return
        where.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _private_folder(where):
            log.warning("not keeping compiled schema checks in %s: not private to this user", where)
            return
        write_private(where / (name + SUFFIX), data)
        _prune(where)
    except (OSError, ValueError) as e:
        log.debug("could not keep compiled schema checks in %s: %s", where, e)


def _trusted(info: os.stat_result) -> bool:
    return info.st_uid == os.geteuid() and not stat.S_IMODE(info.st_mode) & 0o022


def _private_folder(where: Path) -> bool:
    try:
        info = os.lstat(where)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and _trusted(info)


def _prune(where: Path) -> None:
    """Drop the oldest entries while the folder holds more than MAX_FOLDER_BYTES."""
    entries = []
    for path in where.glob("*" + SUFFIX):
        with contextlib.suppress(OSError):
            info = path.lstat()
            entries.append((info.st_mtime_ns, info.st_size, path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries):
        if total <= MAX_FOLDER_BYTES:
            break
        with contextlib.suppress(OSError):
            path.unlink()
            total -= size
