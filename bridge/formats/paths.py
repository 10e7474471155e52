"""Repo paths the bridge writes or deletes: POSIX, relative, and never a name
git refuses in an index (".", "..", ".git" in any spelling NTFS or HFS+ would
read as .git). Defence in depth: callers build safe paths already.
"""

from __future__ import annotations


def check_repo_path(path: str, *, folder: bool = False, listed: bool = False) -> str:
    """A repo-relative POSIX path, or ValueError. Defence in depth: the caller
    already builds safe paths; git itself would silently ignore some bad ones.
    With `folder=True` one trailing "/" is allowed (and stripped). With
    `listed=True` (a path to delete, as a tree listing named it: anyone who can
    push may have chosen it) control characters and backslashes are allowed —
    fast-import takes any name C-quoted — but never NUL, an empty, "." or ".."
    component, or a .git one: what git refuses in an index is refused here."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"invalid repo path {path!r}: empty")
    clean = path[:-1] if folder and path.endswith("/") else path
    if clean.startswith("/"):
        raise ValueError(f"invalid repo path {path!r}: absolute paths are not allowed")
    if "\0" in clean or (not listed and any(c in clean for c in ("\\", "\n", "\r"))):
        raise ValueError(f"invalid repo path {path!r}: backslash or control character")
    for part in clean.split("/"):
        if part in ("", ".", ".."):
            raise ValueError(f"invalid repo path {path!r}: empty, '.' or '..' component")
        # Also `.GIT`, `.git.` and `.git ` (what NTFS/HFS+ checkouts treat as .git).
        if part.rstrip(". ").lower() == ".git":
            raise ValueError(f"invalid repo path {path!r}: a .git component")
    return clean
