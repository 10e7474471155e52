"""Reading files anyone with push access may have written (approvals, the held
record, state files and the blobs they name): sized before they are read,
never read past a bound, and named in messages with their path and the
commit that last changed them, so an operator can find and fix them.
"""

from __future__ import annotations

from bridge.formats.approvals import safe_text
from bridge.formats.objects import entry_kind, quote_path
from bridge.reconcile.plans import TreeView
from bridge.untrusted import UntrustedInput


def read_small(view: TreeView, entry: str, max_bytes: int) -> bytes:
    """The bytes of a listing entry that must be a file of at most `max_bytes`
    (an approval, the held record): sized before it is read, never read
    otherwise. UntrustedInput says why ("is a symlink, not a file", ...)."""
    data = view.read_blobs([entry], max_bytes=max_bytes).get(entry)
    if data is None:
        raise UntrustedInput(unread_why(view, entry, max_bytes))
    return data


def unread_why(view: TreeView, entry: str, max_bytes: int) -> str:
    """Why a bounded read left `entry` (a listing entry) out."""
    kind = entry_kind(entry)
    if kind is not None:
        return f"is {kind}, not a file"
    size = view.blob_sizes([entry], missing_ok=True).get(entry)
    if size is None:
        return "is not a file in the repository"
    return f"is {size} bytes; at most {max_bytes} are read"


def shown(view: TreeView, path: str) -> str:
    """`path` (quoted as git would) and the commit that last changed it."""
    last = view.last_commit_for(path)
    if last is None:
        return quote_path(path)
    sha, name, email, _subject = last
    return (
        f"{quote_path(path)} (last changed in commit {sha[:12]} by "
        f"{safe_text(name) or '?'} <{safe_text(email) or '?'}>)"
    )


def last_change(view: TreeView, path: str) -> str:
    """Who last changed `path`, and in which commit."""
    last = view.last_commit_for(path)
    if last is None:
        return "unknown"
    return f"{safe_text(last[1]) or '?'} <{safe_text(last[2]) or '?'}> in {last[0][:12]}"
