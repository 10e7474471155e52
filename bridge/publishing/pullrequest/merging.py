"""Merging the base into an open pull request's head, when the base moved: a
merge commit (two parents, never a rebase, never a force), whose tree is the
base's with what the head proposes kept.

Merged unit by unit (a deployment folder whole, a file of the namespace
folder, the README; bridge.publishing.pullrequest.ownership), three ways
against the merge base: a unit only the base changed takes the base's
version, a unit the head changed keeps the head's (the bridge's version, even
where the base changed it too: mixing hunks of two versions of a sealed
Secret or a state file would make neither). Everything outside the units is
the base's. The namespace kustomization is then recounted from the folders
the merged tree holds, so a deployment merged into the base meanwhile is
listed beside the ones the head proposes. The commits that follow the merge
(bridge.publishing.pullrequest.proposal) bring the head to what the plan wants.
"""

from __future__ import annotations

from bridge.formats.objects import blob_id
from bridge.publishing.pullrequest.branches import HeadBranches
from bridge.publishing.pullrequest.ownership import Layout, merge_message
from bridge.publishing.writing import CommitWriter, commit_merge


def merge_base_into_head(
    branches: HeadBranches,
    writer: CommitWriter,
    layout: Layout,
    *,
    base: str,
    base_sha: str,
    head_branch: str,
    head_sha: str,
) -> str:
    """Commit the merge of `base_sha` into the head (whose local branch is at
    `head_sha`); the merge commit's id."""
    ancestor = branches.merge_base(base_sha, head_sha)
    base_tree = branches.tree(base_sha)
    head_tree = branches.tree(head_sha)
    theirs = layout.units(base_tree)
    ours = layout.units(head_tree)
    common = layout.units(branches.tree(ancestor)) if ancestor else {}
    merged = dict(base_tree)
    for unit in ours.keys() | theirs.keys():
        mine = ours.get(unit, {})
        if mine == common.get(unit, {}) or mine == theirs.get(unit, {}):
            continue  # the head did not change it: the base's version
        for path in theirs.get(unit, {}):
            merged.pop(path, None)
        merged.update(mine)
    if layout.kustomization in merged:
        from bridge.rendering.rendering import render_namespace_kustomization

        content = render_namespace_kustomization(layout.deployment_folders(merged))
        if merged[layout.kustomization] != blob_id(content):
            merged[layout.kustomization] = branches.write_blob(content)
    changed: list[tuple[str, str | None]] = [
        (p, e) for p, e in merged.items() if base_tree.get(p) != e
    ]
    changed += [(p, None) for p in base_tree if p not in merged]
    tree = branches.make_tree(base_sha, changed)
    return commit_merge(writer, tree, base_sha, merge_message(base, head_branch))
