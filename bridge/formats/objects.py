"""Git object names computed in Python: the same bytes give the same id git
would give them, without starting git (sha1 is git's object name here)."""

from __future__ import annotations

import hashlib


def blob_id(data: bytes) -> str:
    """The git blob id of some bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()
