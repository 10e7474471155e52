"""What one pull request proposes, and the commits that bring its head there.

The plan is made against the base (what the cluster runs), so its changes say
what must change on the base. A pull request's head already carries what
earlier cycles proposed, so a change is committed on the head only where the
head does not carry it yet, with the change's own message (SPEC §6: subject,
trailers); its diff is the push mode commit's whenever the head's folder is
the base's. "Carries" is read from the state files, not the bytes: a new
deployment's Secrets are encrypted afresh on every plan against a base that
lacks them, and the head keeps the ones it has (same input digest, same
recipients, a folder as its state file records it).

Units the head changed that no change wants any more (a proposal withdrawn:
the deployment is gone again, or back at the base's revision) go back to the
base's version in commits of their own (`delete` or `deploy` of what the
base runs). So after the commits the head proposes exactly the plan; every
commit is one deployment's, one commit per change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from bridge import __version__
from bridge.formats.commits import CommitInfo
from bridge.formats.objects import blob_id
from bridge.formats.state import MAX_STATE_BYTES, STATE_FILE, DeploymentState
from bridge.publishing.pullrequest.ownership import Layout
from bridge.reconcile.plans import Change

log = logging.getLogger("bridge.publishing")

ReadBlobs = Callable[[Sequence[str], int], dict[str, bytes]]
FILE_MAX_BYTES = 16 * 1024 * 1024
Commit = tuple[str, dict[str, bytes], list[str]]  # message, write, delete


@dataclass
class Proposal:
    """One pull request's share of a plan: its head branch and its changes (with
    their positions in the plan, for the commit ids the plan is given back)."""

    branch: str
    changes: list[tuple[int, Change]] = field(default_factory=list)
    folder: str | None = None  # granularity deployment: the deployment's folder


@dataclass
class Desired:
    """The managed units as the proposal wants them: path -> entry, and the bytes
    of the paths the plan writes (the rest are the base's blobs)."""

    tree: dict[str, str]
    data: dict[str, bytes]


def desired(
    layout: Layout, base_tree: Mapping[str, str], changes: Sequence[Change], *, recount: bool
) -> Desired:
    """The base's managed units with the changes applied in order. `recount`: the
    namespace kustomization lists the folders of this result (a pull request
    per deployment: the plan's kustomization counts every deployment's change)."""
    tree = {p: e for p, e in base_tree.items() if layout.unit(p) is not None}
    data: dict[str, bytes] = {}
    for change in changes:
        for gone in change.delete:
            for path in [p for p in tree if p == gone or p.startswith(gone.rstrip("/") + "/")]:
                del tree[path]
                data.pop(path, None)
        for path, content in change.write.items():
            if recount and path == layout.kustomization:
                continue
            tree[path] = blob_id(content)
            data[path] = content
    if recount:
        _recount(layout, tree, data)
    return Desired(tree, data)


def _recount(layout: Layout, tree: dict[str, str], data: dict[str, bytes]) -> None:
    from bridge.rendering.rendering import render_namespace_kustomization

    folders = layout.deployment_folders(tree)
    if not folders and layout.kustomization not in tree:
        return
    content = render_namespace_kustomization(folders)
    tree[layout.kustomization] = blob_id(content)
    data[layout.kustomization] = content


class Stepper:
    """Works out the commits that take a head from its tree to a `Desired`."""

    def __init__(self, layout: Layout, base_tree: Mapping[str, str], read_blobs: ReadBlobs) -> None:
        self.layout = layout
        self.base_tree = base_tree
        self.read_blobs = read_blobs

    def commits(
        self, head_tree: Mapping[str, str], want: Desired, changes: Sequence[Change]
    ) -> tuple[list[Commit], list[int | None]]:
        """The commits to make, and for each change the position of its commit in
        that list (None: the head carries it already)."""
        have = self.layout.units(head_tree)
        goal = self.layout.units(want.tree)
        differing = {u for u in have.keys() | goal.keys() if have.get(u, {}) != goal.get(u, {})}
        differing -= self._carried(differing, have, goal, want)
        plan: list[tuple[str, set[str]]] = []  # message, units
        positions: list[int | None] = []
        claimed: set[str] = set()
        for change in changes:
            units = self._touched(change) & differing - claimed
            # A change is committed for its own units; the kustomization and the
            # README alone ride along with another commit.
            if not any(not self.layout.is_shared(u) for u in units):
                positions.append(None)
                continue
            positions.append(len(plan))
            plan.append((change.info.message(), units))
            claimed |= units
        for unit in sorted(u for u in differing - claimed if u.endswith("/")):
            message = self._withdrawal(unit, have.get(unit, {}), goal.get(unit, {}))
            if message is not None:
                plan.append((message, {unit}))
                claimed.add(unit)
        rest = differing - claimed
        if plan and rest:
            plan[0] = (plan[0][0], plan[0][1] | rest)
        elif rest:
            log.debug("left as the head has them (no commit to carry them): %s", sorted(rest))
        return self._materialise(head_tree, want, plan), positions

    def _touched(self, change: Change) -> set[str]:
        units = {self.layout.unit(p) for p in change.write}
        units |= {self.layout.unit_of_delete(p) for p in change.delete}
        return {u for u in units if u is not None}

    def _carried(
        self,
        units: set[str],
        have: Mapping[str, Mapping[str, str]],
        goal: Mapping[str, Mapping[str, str]],
        want: Desired,
    ) -> set[str]:
        """The folder units whose head version is the wanted one in all but the
        bytes of freshly encrypted Secrets and generated passwords."""
        folders = [u for u in units if u.endswith("/") and u in have and u in goal]
        blobs = [have[u].get(f"{u}{STATE_FILE}", "") for u in folders]
        read = self.read_blobs([b for b in blobs if b], MAX_STATE_BYTES)
        carried = set()
        for unit in folders:
            path = f"{unit}{STATE_FILE}"
            theirs = _state(read.get(have[unit].get(path, "")))
            ours = _state(want.data.get(path))
            if theirs is None or ours is None or set(have[unit]) != set(goal[unit]):
                continue
            recorded = {f"{unit}{name}": blob for name, blob in theirs.files.items()}
            others = {p: e for p, e in have[unit].items() if p != path}
            # Edited on the head by hand: not what the bridge wrote, not carried.
            if others == {p: recorded.get(p) for p in others} and _same_intent(theirs, ours):
                carried.add(unit)
        return carried

    def _withdrawal(
        self, unit: str, have: Mapping[str, str], goal: Mapping[str, str]
    ) -> str | None:
        """The message of a commit that puts a unit back as the base has it: a
        `delete` when the base has no such deployment, else a `deploy` of the
        base's revision. None when no state file says which deployment it is."""
        path = f"{unit}{STATE_FILE}"
        source = goal if path in goal else have
        blob = source.get(path)
        state = _state(self.read_blobs([blob], MAX_STATE_BYTES).get(blob) if blob else None)
        if state is None:
            log.warning(
                "the head branch's folder %s differs from the base's and has no readable "
                "state file; it is left as it is",
                unit,
            )
            return None
        gone = path not in goal
        info = CommitInfo(
            kind="delete" if gone else "deploy",
            namespace=self.layout.namespace,
            name=self.layout.folder(unit) or state.deployment_name,
            deployment_id=state.deployment_id,
            revision_id=state.revision_id,
            listener_id=state.listener_id,
            cluster=state.cluster,
            bridge_version=__version__,
            image=None if gone else (state.image or "none"),
            body=(
                "Withdrawn from this pull request: the control plane no longer lists it."
                if gone
                else "Withdrawn from this pull request: the control plane wants what the "
                "base runs again."
            ),
        )
        return info.message()

    def _materialise(
        self, head_tree: Mapping[str, str], want: Desired, plan: list[tuple[str, set[str]]]
    ) -> list[Commit]:
        """Each planned commit as (message, write, delete): only the paths whose entry
        differs, the namespace kustomization recounted after each."""
        current = dict(head_tree)
        needed: set[str] = set()
        for _message, units in plan:
            for path, entry in want.tree.items():
                unit = self.layout.unit(path)
                if unit in units and current.get(path) != entry and path not in want.data:
                    needed.add(entry)
        blobs = self.read_blobs(sorted(e for e in needed if " " not in e), FILE_MAX_BYTES)
        commits: list[Commit] = []
        for message, units in plan:
            write: dict[str, bytes] = {}
            delete: list[str] = []
            for path in sorted(p for p in current if self.layout.unit(p) in units):
                if path not in want.tree:
                    delete.append(path)
            for path, entry in sorted(want.tree.items()):
                if self.layout.unit(path) not in units or current.get(path) == entry:
                    continue
                content = want.data.get(path, blobs.get(entry))
                if content is None:
                    log.warning("%s is not a file the bridge can write; left as it is", path)
                    continue
                write[path] = content
            for path in delete:
                current.pop(path, None)
            for path, content in write.items():
                current[path] = blob_id(content)
            if self.layout.kustomization in current or self.layout.kustomization in want.tree:
                self._recount_step(current, write)
            commits.append((message, write, delete))
        return commits

    def _recount_step(self, current: dict[str, str], write: dict[str, bytes]) -> None:
        from bridge.rendering.rendering import render_namespace_kustomization

        content = render_namespace_kustomization(self.layout.deployment_folders(current))
        if current.get(self.layout.kustomization) != blob_id(content):
            write[self.layout.kustomization] = content
            current[self.layout.kustomization] = blob_id(content)


def _state(data: bytes | None) -> DeploymentState | None:
    if data is None:
        return None
    try:
        return DeploymentState.from_bytes(data)
    except ValueError:
        return None


def _same_intent(a: DeploymentState, b: DeploymentState) -> bool:
    """The same deployment, rendered from the same input, sealed for the same
    recipients: equal but for what encryption makes anew each time."""
    return (
        a.deployment_id == b.deployment_id
        and a.deployment_name == b.deployment_name
        and a.input_digest == b.input_digest
        and a.revision_id == b.revision_id
        and a.image == b.image
        and a.cluster == b.cluster
        and set(a.files) == set(b.files)
        and {k: r.sealed_for for k, r in a.secrets.items()}
        == {k: r.sealed_for for k, r in b.secrets.items()}
    )
