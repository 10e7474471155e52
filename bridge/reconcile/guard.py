"""The mass-delete guard: which of a target's deletions go ahead, which are held
until an operator approves them, and what the approval file and the held
record become.

Held: every candidate when they are more than `massDelete.fraction` of the
target's deployments and at least `massDelete.min` of them, plus any candidate
the held record (written when an approval let only part of them go) still
names. An approval lets go exactly the held ids it lists; the rest stay held.
`--allow-mass-delete` lets everything go, once.

A function of the deletion candidates and the tree (read through a
`TreeView`): it returns a `Decision` and neither plans, logs nor writes; the
planner turns the decision into delete commits, the cycle reports it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from bridge.config import PolicySettings, Target
from bridge.formats.approvals import (
    APPROVAL_KEY,
    HELD_FILE,
    MAX_APPROVAL_BYTES,
    MAX_HELD_BYTES,
    MAX_HELD_IDS,
    ApprovalFileError,
    approval_path,
    held_record,
    parse_approval,
    safe_text,
)
from bridge.reconcile.existing import Existing
from bridge.reconcile.outcomes import Outcome
from bridge.reconcile.plans import TreeView
from bridge.reconcile.reading import read_small, shown
from bridge.untrusted import UntrustedInput


@dataclass(frozen=True)
class Approval:
    """An operator's approval file at the target's head, and who committed it."""

    path: str
    ids: tuple[str, ...]
    commit: str
    author: str  # "Name <email>" of the commit that last changed the file


@dataclass
class Decision:
    """What the guard decided for one target in one cycle."""

    deletable: list[str]  # ids to delete (still to be confirmed gone per id)
    held: list[str] = field(default_factory=list)
    held_outcomes: list[Outcome] = field(default_factory=list)
    approval: Approval | None = None
    approved: frozenset[str] = frozenset()  # held ids the approval lets go
    finishing: frozenset[str] = frozenset()  # ids whose last deletion carries finish_*
    finish_write: dict[str, bytes] = field(default_factory=dict)
    finish_delete: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # approval problems, for the log
    guarded: int = 0  # deletions the guard weighed as one (tripped or recorded)
    hint: str = ""  # how to approve, for messages


@dataclass(frozen=True)
class Candidates:
    """The deletions a plan proposes, and what the guard weighs them against."""

    target: Target
    ns_dir: str
    tree: Mapping[str, str]
    ids: list[str]  # deletion candidates, in the order they would be deleted
    existing: Mapping[str, Existing]
    listed: Collection[str]  # ids the listing has (parsed or not)


def decide(
    view: TreeView, c: Candidates, policy: PolicySettings, *, allow_mass_delete: bool
) -> Decision:
    """The guard's decision for one target's deletion candidates."""
    record_path = f"{c.ns_dir}/{HELD_FILE}"
    approval_file = approval_path(c.ns_dir)
    notes: list[str] = []
    recorded: set[str] = set()
    record_blob = c.tree.get(record_path)
    if record_blob is not None:
        try:
            data = read_small(view, record_blob, MAX_HELD_BYTES)
            recorded = set(parse_approval(data, max_bytes=MAX_HELD_BYTES, max_ids=MAX_HELD_IDS))
        except (ApprovalFileError, UntrustedInput) as e:
            # Someone broke the bridge's record: hold everything, the safe reading
            # (it exists to hold deletions; which ones cannot be known now).
            notes.append(
                f"the held-deletion record {shown(view, record_path)} {e}; every "
                "deletion held until it is fixed or removed (an approval or "
                "--allow-mass-delete writes it anew)"
            )
            recorded = set(c.ids)
    if allow_mass_delete:
        decision = Decision(deletable=list(c.ids), notes=notes)
        if record_blob is not None and c.ids:
            decision.finishing = frozenset(c.ids)
            decision.finish_delete = [record_path]
        return decision
    count = len(c.ids)
    trips = count >= policy.mass_delete_min and count > policy.mass_delete_fraction * len(
        c.existing
    )
    guarded = list(c.ids) if trips else [i for i in c.ids if i in recorded]
    if not guarded:
        if approval_file in c.tree:
            notes.append(
                f"approval file {approval_file} is present but no deletion of this target "
                "is held; it is ignored and kept (remove it)"
            )
        return Decision(deletable=list(c.ids), notes=notes)
    approval = read_approval(view, c.tree, approval_file, notes)
    approved = _approved(c, approval, guarded, approval_file, notes)
    held = [i for i in guarded if i not in approved]
    decision = Decision(
        deletable=[i for i in c.ids if i not in guarded or i in approved],
        held=held,
        approval=approval if approved else None,
        approved=approved,
        notes=notes,
        guarded=len(guarded),
        hint=(
            f"approve by committing {approval_file} on branch {c.target.branch} with "
            f"`{APPROVAL_KEY}: [<id>, ...]`, or run once with --allow-mass-delete; an empty or "
            "shrunken listing may also mean the control plane is misbehaving"
        ),
    )
    if approved and approval is not None:
        decision.finishing = approved
        decision.finish_delete = [approval.path]
        if held:
            decision.finish_write = {record_path: held_record(held)}
        elif record_blob is not None:
            decision.finish_delete.append(record_path)
    decision.held_outcomes = [_held_outcome(c, decision, dep_id) for dep_id in held]
    return decision


def _approved(
    c: Candidates,
    approval: Approval | None,
    guarded: list[str],
    approval_file: str,
    notes: list[str],
) -> frozenset[str]:
    """The guarded ids the approval lets go; a note for every other id it names."""
    if approval is None:
        return frozenset()
    approved = frozenset(i for i in guarded if i in approval.ids)
    where = f"approval in {approval_file} (commit {approval.commit[:12]}) names"
    for dep_id in approval.ids:
        if dep_id in approved:
            continue
        if dep_id in c.listed:
            known = c.existing.get(dep_id)
            name = known.state.deployment_name if known is not None else "?"
            notes.append(
                f"{where} deployment {name!r} ({dep_id}), which the control plane lists "
                "again: ignored, it is not deleted"
            )
        elif dep_id in c.ids:
            notes.append(
                f"{where} deployment {c.existing[dep_id].state.deployment_name!r} ({dep_id}), "
                "whose deletion the guard does not hold: it needs no approval"
            )
        else:
            notes.append(
                f"{where} {dep_id}, which is not a held deletion of target "
                f"{c.target.namespace}: ignored"
            )
    if not approved:
        notes.append(
            f"approval file {approval_file} approves none of the held deletions; "
            "it is kept (fix or remove it)"
        )
    return approved


def _held_outcome(c: Candidates, decision: Decision, dep_id: str) -> Outcome:
    return Outcome(
        target=c.target.namespace,
        namespace=c.target.namespace,
        deployment_id=dep_id,
        name=c.existing[dep_id].state.deployment_name,
        action="refused",
        error=(
            f"deletion held by the mass-delete guard ({decision.guarded} of "
            f"{len(c.existing)} deployments of target {c.target.namespace} would go; "
            f"{decision.hint})"
        ),
    )


def read_approval(
    view: TreeView, tree: Mapping[str, str], path: str, notes: list[str]
) -> Approval | None:
    """The approval file at `path` (only there: one elsewhere approves nothing)."""
    blob = tree.get(path)
    if blob is None:
        return None
    last = view.last_commit_for(path)
    if last is None:  # pragma: no cover - a file at the head has a commit
        return None
    sha, name, email, _subject = last
    author = f"{safe_text(name) or '?'} <{safe_text(email) or '?'}>"
    try:
        ids = parse_approval(read_small(view, blob, MAX_APPROVAL_BYTES))
    except (ApprovalFileError, UntrustedInput) as e:
        notes.append(
            f"approval file {path} (commit {sha[:12]} by {author}) {e}; "
            "nothing is deleted on its word"
        )
        return None
    return Approval(path=path, ids=ids, commit=sha, author=author)


def note_confirmed(
    decision: Decision, deleting: Collection[str], existing: Mapping[str, Existing]
) -> None:
    """Approved ids the control plane still has are not deleted: say so."""
    for dep_id in sorted(decision.approved):
        if dep_id not in deleting:
            decision.notes.append(
                f"approved deletion of {existing[dep_id].state.deployment_name!r} "
                f"({dep_id}) is not made: the control plane does not confirm it is gone"
            )
    if decision.approval is not None and not any(i in decision.approved for i in deleting):
        decision.notes.append(
            f"approval file {decision.approval.path} is kept: none of its deletions was made "
            "this cycle"
        )


def held_message(c: Candidates, decision: Decision, policy: PolicySettings) -> str:
    """The one log line that names every held deletion (logged once per change)."""
    which = ", ".join(f"{c.existing[i].state.deployment_name} ({i})" for i in decision.held)
    return (
        f"target {c.target.namespace} ({c.target.repo}): the mass-delete guard holds "
        f"{len(decision.held)} deletion(s) of {len(c.existing)} deployments (more than "
        f"{policy.mass_delete_fraction * 100:g}% and at least {policy.mass_delete_min}, or "
        f"held before): {which}; none of them is deleted until approved ({decision.hint})"
    )
