"""What `gitops-bridge diff` shows: the plan a real run would publish, as a
unified diff per file (encrypted secrets only as "would be re-sealed"). The
same plan as a real run's; only the last stage differs.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath

from bridge.formats.objects import entry_kind, quote_path
from bridge.formats.state import STATE_FILE
from bridge.reconcile.plans import Plan, TreeView


def describe(plan: Plan, view: TreeView, tree: Mapping[str, str]) -> None:
    """Turn every change of the plan into a would-change outcome with its diff."""
    for change in plan.changes:
        change.outcome.action = "would-change"
        change.outcome.diff = diff_change(view, tree, change.write, change.delete)


def diff_change(
    view: TreeView, tree: Mapping[str, str], write: Mapping[str, bytes], delete: Sequence[str]
) -> str:
    chunks: list[str] = []
    for path in sorted(write):
        if PurePosixPath(path).name == STATE_FILE:
            continue
        new = write[path]
        old_blob = tree.get(path)
        other = entry_kind(old_blob) if old_blob else None
        if other is not None:
            chunks.append(f"~ {quote_path(path)}: {other}, would become a file\n")
            old_blob = None
        old = view.read_blob(old_blob) if old_blob else b""
        if PurePosixPath(path).name.startswith("secret-"):
            if old != new:
                chunks.append(f"~ {path}: encrypted secret would be re-sealed\n")
            continue
        chunks.extend(
            difflib.unified_diff(
                old.decode("utf-8", "replace").splitlines(keepends=True),
                new.decode("utf-8", "replace").splitlines(keepends=True),
                fromfile=f"a/{path}" if old_blob else "/dev/null",
                tofile=f"b/{path}",
            )
        )
    for path in delete:
        removed = sorted(p for p in tree if p == path or p.startswith(path + "/"))
        for p in removed:
            chunks.append(f"- {quote_path(p)} (deleted)\n")
    return "".join(chunks)
