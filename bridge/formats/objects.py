"""Git object names computed in Python: the same bytes give the same id git
would give them, without starting git (sha1 is git's object name here)."""

from __future__ import annotations

import hashlib
import re


def blob_id(data: bytes) -> str:
    """The git blob id of some bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


# How a tree listing names an entry. A regular file (mode 100644) by its blob id,
# the id the bridge computes for the bytes it writes and records in state files;
# anything else as "<mode> <id>": an executable (100755), a symlink (120000) or
# a gitlink (160000) then never equals a file's blob id, even when its bytes are
# the same (a symlink whose target text is a file's bytes has that file's blob
# id). Comparing listing entries with blob ids thus finds every kind of edit, at
# no cost per entry beyond one string comparison while listing.
REGULAR_FILE = "100644"
ENTRY_KINDS = {"100755": "an executable file", "120000": "a symlink", "160000": "a gitlink"}


def entry_id(mode: str, oid: str) -> str:
    """The listing's name for an entry of `mode` with object id `oid`."""
    return oid if mode == REGULAR_FILE else f"{mode} {oid}"


def entry_kind(entry: str) -> str | None:
    """None for a regular file's entry, else what it is ("a symlink", ...)."""
    if " " not in entry:
        return None
    mode = entry.split(" ", 1)[0]
    return ENTRY_KINDS.get(mode, f"an entry of mode {mode}")


def quote_path(path: str) -> str:
    """A repo path to show in a message, quoted the way git shows it when it must
    be: C-style in double quotes when it holds a control character, a quote, a
    backslash or bytes that are not UTF-8; else as it is."""
    raw = path.encode("utf-8", "surrogateescape")
    if PLAIN_PATH.match(raw) and path.isprintable():
        try:
            raw.decode("utf-8")
            return path
        except UnicodeDecodeError:
            pass
    return '"' + c_quote(raw).decode("ascii") + '"'


# Bytes of a path that need no escape inside double quotes (fast-import takes
# UTF-8 as it is).
PLAIN_PATH = re.compile(rb'^[^\x00-\x1f"\\\x7f]*$')
_C_ESCAPES = {0x07: b"\\a", 0x08: b"\\b", 0x09: b"\\t", 0x0A: b"\\n", 0x0B: b"\\v"}
_C_ESCAPES |= {0x0C: b"\\f", 0x0D: b"\\r", 0x22: b'\\"', 0x5C: b"\\\\"}


def c_quote(raw: bytes) -> bytes:
    """The inside of a C-style quoted path as git reads and writes them (fast-import,
    ls-tree without -z): escapes for the usual controls, `\\ooo` octal for other
    control bytes and for bytes that are not ASCII, so the result is ASCII."""
    out = bytearray()
    for byte in raw:
        escape = _C_ESCAPES.get(byte)
        if escape is not None:
            out += escape
        elif byte < 0x20 or byte >= 0x7F:
            out += b"\\%03o" % byte
        else:
            out.append(byte)
    return bytes(out)
