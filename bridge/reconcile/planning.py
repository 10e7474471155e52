"""Planning one target: from its part of the listing and a read-only view of its
tree to the commits to make, one per deployment change (SPEC §6).

    draft_begin()  every listed deployment planned (bridge.reconcile.deployments),
                   the changed roots handed to real Kustomize, building while the
                   cycle begins the next target; deletion candidates named
    draft_end()    validation waited for, deploy/restore/rekey changes made
    finish()       the guard's decision and the control plane's confirmation in,
                   delete commits appended: the `Plan` a publisher takes

Renders and validates; never writes git and imports nothing of
bridge.publishing (a contract that import-linter holds). Each commit carries
exactly the shared-file changes (the namespace kustomization, the README) its
deployment causes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Protocol

from bridge import __version__
from bridge.config import Settings, Target
from bridge.errors import DeploymentError
from bridge.faults import fault_point, raising
from bridge.formats.commits import CommitInfo
from bridge.formats.objects import blob_id
from bridge.formats.state import STATE_FILE, DeploymentState
from bridge.models import Deployment, Listener
from bridge.observability.logs import deployment_extra
from bridge.reconcile.deployments import DeploymentPlanner
from bridge.reconcile.existing import (
    UNREADABLE_HINT,
    Existing,
    ExistingReader,
    unreadable_error,
)
from bridge.reconcile.guard import Candidates, Decision
from bridge.reconcile.notices import Notices, OnEvent
from bridge.reconcile.outcomes import Action, Outcome
from bridge.reconcile.plans import Change, Plan, TreeView
from bridge.rendering import RenderContext

log = logging.getLogger("bridge.reconcile")

Validate = Callable[[dict[str, dict[str, bytes]]], dict[str, list[str]]]
_ACTIONS: dict[str, Action] = {"deploy": "deployed", "restore": "restored", "rekey": "rekeyed"}


class ValidationRun(Protocol):
    """What a validator's optional `begin(expected)` returns: roots fed one by one
    while the others are rendered, then every root's errors at once."""

    def add(self, folder: str, files: dict[str, bytes]) -> None: ...

    def flush(self) -> None: ...

    def results(self) -> dict[str, list[str]]: ...

    def close(self) -> None: ...


def root_key(files: Mapping[str, bytes]) -> str:
    """A root's identity for validation: its file names and contents."""
    return hashlib.sha256(
        b"".join(n.encode() + b"\0" + blob_id(d).encode() + b"\0" for n, d in sorted(files.items()))
    ).hexdigest()


class SharedFiles:
    """The namespace kustomization and the README as they will be after each
    commit, so that each commit carries exactly the shared-file changes its
    deployment causes."""

    def __init__(
        self, view: TreeView, target: Target, listener_id: str, cluster: str, ns_dir: str
    ) -> None:
        self._target, self._listener_id, self._cluster = target, listener_id, cluster
        self.kustomization = f"{ns_dir}/kustomization.yaml"
        self.readme = str(PurePosixPath(target.path, "README.md")) if target.path else "README.md"
        self.folders: set[str] = set()
        self._blobs = {
            self.kustomization: view.ls_tree(self.kustomization).get(self.kustomization),
            self.readme: view.ls_tree(self.readme).get(self.readme),
        }

    def changed(self) -> dict[str, bytes]:
        """The shared files that differ from the last commit's, for the folders now."""
        from bridge.formats.readme import target_readme
        from bridge.rendering.rendering import render_namespace_kustomization

        wanted = {
            self.kustomization: render_namespace_kustomization(sorted(self.folders)),
            self.readme: target_readme(self._target, self._listener_id, self._cluster),
        }
        out = {}
        for path, data in wanted.items():
            if self._blobs.get(path) != blob_id(data):
                out[path] = data
                self._blobs[path] = blob_id(data)
        return out


def _extra(dep: Deployment, draft: Draft) -> dict[str, Any]:
    return deployment_extra(dep.name, dep.id, target=draft.target.namespace)


@dataclass
class _Pending:
    """A deployment planned to change, waiting for its root's validation."""

    dep: Deployment
    kind: str
    files: dict[str, bytes]
    state: DeploymentState
    name: str


@dataclass
class Draft:
    """A target's plan before the guard: everything but the deletions."""

    target: Target
    listener: Listener
    view: TreeView
    cluster: str
    ns_dir: str
    tree: Mapping[str, str]  # the namespace folder at the view's head
    existing: dict[str, Existing]
    unreadable: dict[str, str]  # folder -> why its state file cannot be trusted
    candidates: Candidates  # what the guard weighs
    shared: SharedFiles
    outcomes: list[Outcome] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    # Between draft_begin and draft_end: the planned changes and their roots'
    # validation, under way.
    pending: list[_Pending] = field(default_factory=list)
    run: ValidationRun | None = None
    # Roots this target's earlier plans of the cycle validated (a push retry):
    # the very dict that decided which roots `run` was given.
    memo: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    ended: bool = False


class Planner:
    """Plans targets one at a time; what it remembers between cycles is keyed by
    content (state blobs, digests), so it is never stale."""

    def __init__(
        self,
        settings: Settings,
        *,
        validate: Validate | None,
        notices: Notices,
        on_event: OnEvent,
        force_reseal: bool = False,
    ) -> None:
        self.settings = settings
        self.validate = validate
        self.notices = notices
        self.on_event = on_event
        self.deployments = DeploymentPlanner(settings, force_reseal=force_reseal)
        self.existing = ExistingReader()
        self._contexts: dict[str, RenderContext] = {}  # target key -> last RenderContext
        # For push retries: validation results by root path and bytes, by target
        # key, of the targets planned since the last `next_target` and before it.
        self._validated: dict[str, dict[tuple[str, str], list[str]]] = {}
        self._drafted: set[str] = set()
        self._drafted_before: set[str] = set()

    def begin_cycle(self) -> None:
        self.existing.begin_cycle()
        self.deployments.begin_cycle()

    def end_cycle(self) -> None:
        self._validated, self._drafted, self._drafted_before = {}, set(), set()
        self.deployments.end_cycle()
        self.existing.end_cycle()

    def end_target(self, key: str, *, last: bool = True) -> None:
        """A target published on the cycle's thread (or failed): its plans and
        validations are not needed for a retry; the target's before it are.
        `last`: no target was begun after it, so the newest plans are its own
        and are freed (a held target's few plans go with the next targets')."""
        if last:
            self.deployments.forget_plans()
        self._validated.pop(key, None)
        self._drafted.discard(key)
        self._drafted_before.discard(key)

    def next_target(self) -> None:
        """Plans and validations are only reused by a target's own push retries,
        and those come while the next targets are planned (the cycle begins a
        target, starts the one before it and finishes the publish of the one
        before that): keep the last two targets', free the rest."""
        self.deployments.next_target()
        keep = self._drafted | self._drafted_before
        self._validated = {k: v for k, v in self._validated.items() if k in keep}
        self._drafted_before, self._drafted = self._drafted, set()

    # -- draft ---------------------------------------------------------------

    def draft_begin(
        self,
        view: TreeView,
        target: Target,
        listener: Listener,
        deployments: Sequence[Deployment],
        unparsed_ids: Collection[str],
    ) -> Draft:
        """Every listed deployment planned and the roots that change handed to
        validation, which runs on while the caller goes on (the cycle begins the
        next target). `draft_end` waits for it and makes the changes; `abandon`
        stops it if the draft is dropped instead."""
        from bridge.rendering.naming import folder_names

        fault_point("plan-target", target.namespace)
        cluster = target.cluster or listener.compute_id
        ns_dir = (
            str(PurePosixPath(target.path, cluster, target.namespace))
            if target.path
            else f"{cluster}/{target.namespace}"
        )
        context = self._context(target, listener, cluster)
        tree = view.ls_tree(ns_dir + "/")
        existing, unreadable = self.existing.read(view, tree, ns_dir)
        live = [d for d in deployments if not d.awaiting_delete]
        names = folder_names(live)
        self._report_unreadable(target, unreadable, set(names.values()))
        # Deletions: gone from a complete listing, or AWAITING_DELETE. A deployment
        # that is listed but did not parse is present: a parse error never deletes.
        listed = {d.id for d in live} | set(unparsed_ids)
        candidates = Candidates(
            target=target,
            ns_dir=ns_dir,
            tree=tree,
            ids=sorted((i for i in existing if i not in listed), key=lambda i: existing[i].folder),
            existing=existing,
            listed=listed,
        )
        shared = SharedFiles(view, target, listener.id, cluster, ns_dir)
        shared.folders = {e.folder for e in existing.values()} | set(unreadable)
        draft = Draft(
            target, listener, view, cluster, ns_dir, tree, existing, unreadable, candidates, shared
        )
        self._plan_live(draft, context, live, names)
        return draft

    def draft_end(self, draft: Draft) -> Draft:
        """The draft of `draft_begin` with its changes: one for every planned
        deployment whose root validates."""
        assert not draft.ended, "a draft ends once"
        try:
            validated: dict[str, list[str]] = {}
            if self.validate is not None and draft.pending:
                roots = {f"{draft.ns_dir}/{p.name}": p.files for p in draft.pending}
                validated = self._validate(roots, draft.run, draft.memo)
        finally:
            self.abandon(draft)
        pending, draft.pending = draft.pending, []  # the changes hold what is kept
        self._live_changes(draft, pending, validated)
        return draft

    @staticmethod
    def abandon(draft: Draft) -> None:
        """Stop the draft's validation (and remove its scratch folder); it ends here."""
        draft.ended = True
        run, draft.run = draft.run, None
        if run is not None:
            run.close()

    def _report_unreadable(
        self, target: Target, unreadable: Mapping[str, str], listed_folders: Collection[str]
    ) -> None:
        """A broken state file in the folder of a listed deployment fails that
        deployment (every cycle, by name); one in any other folder is told here,
        once per change."""
        alone = sorted(why for f, why in unreadable.items() if f not in listed_folders)
        if self.notices.changed((target.key, "unreadable"), tuple(alone)):
            for why in alone:
                log.error(
                    "target %s: %s; the bridge leaves its folder as it is (%s)",
                    target.namespace,
                    why,
                    UNREADABLE_HINT,
                    extra={"target": target.namespace, "event": "unreadable-state"},
                )

    def _context(self, target: Target, listener: Listener, cluster: str) -> RenderContext:
        context = RenderContext(
            listener=listener,
            cluster=cluster,
            settings=self.settings.render,
            secrets_provider=self.settings.secrets.provider,
        )
        # The same context as last cycle is the same object, so that a deployment's
        # remembered digest is checked by identity of its context.
        last = self._contexts.get(target.key)
        if last is not None and last == context:
            return last
        self._contexts[target.key] = context
        return context

    def _plan_live(
        self,
        draft: Draft,
        context: RenderContext,
        live: list[Deployment],
        names: Mapping[str, str],
    ) -> None:
        """Plan every listed deployment into `draft.pending`; the roots that change
        go to `draft.run`, whose builds start now (`draft_end` waits for them)."""
        ns = draft.target.namespace
        pending = draft.pending
        ordered = sorted(live, key=lambda d: (names[d.id], d.id))
        # A validator that takes roots one by one starts on each as soon as it is
        # rendered: Kustomize runs in its worker processes while this thread renders on.
        begin = getattr(self.validate, "begin", None)
        run: ValidationRun | None = begin(len(ordered)) if callable(begin) else None
        draft.run = run
        # What this target's earlier plans of the cycle validated (a push retry).
        memo = draft.memo = self._validated.setdefault(draft.target.key, {})
        self._drafted.add(draft.target.key)
        armed = raising()
        try:
            for position, dep in enumerate(ordered, 1):
                # Progress of the expensive part (planning renders what changed).
                self.on_event("progress", {"target": ns, "done": position, "total": len(ordered)})
                outcome = Outcome(
                    target=ns,
                    namespace=ns,
                    deployment_id=dep.id,
                    name=names[dep.id],
                    action="unchanged",
                    revision_id=dep.revision_id,
                )
                draft.outcomes.append(outcome)
                planned = self._plan_one(draft, dep, names[dep.id], context, outcome, armed)
                if planned is None:
                    continue
                pending.append(planned)
                path = f"{draft.ns_dir}/{planned.name}"
                # (The memo is empty but when a push race re-plans a target.)
                if run is not None and (not memo or (path, root_key(planned.files)) not in memo):
                    run.add(path, planned.files)
            if run is not None:
                run.flush()  # a last chunk short of full builds now, not when waited for
        except BaseException:
            self.abandon(draft)
            raise

    def _plan_one(
        self,
        draft: Draft,
        dep: Deployment,
        name: str,
        context: RenderContext,
        outcome: Outcome,
        armed: bool = True,
    ) -> _Pending | None:
        """One deployment's plan; a failure fails it alone, by name and id.
        `armed`: whether the fault point is to be checked (faults.raising())."""
        try:
            if armed:
                fault_point("plan-deployment", dep.name)
            if name in draft.unreadable:
                raise unreadable_error(dep, draft.unreadable[name])
            planned = self.deployments.plan(
                draft.view,
                dep,
                name,
                context,
                draft.existing.get(dep.id),
                f"{draft.ns_dir}/{name}",
            )
        except DeploymentError as e:
            outcome.action, outcome.error = "failed", str(e)
            log.error("%s", e, extra=_extra(dep, draft))
            return None
        except Exception as e:
            # Isolation: a deployment the bridge cannot handle fails alone, by
            # name and id; the others in this target are still planned.
            what = f"deployment {dep.name!r} ({dep.id}): planning"
            outcome.action = "failed"
            outcome.error = str(self.notices.internal(e, what, dep.id, **_extra(dep, draft)))
            return None
        if planned is None:
            return None
        kind, files, state = planned
        return _Pending(dep, kind, files, state, name)

    def _validate(
        self,
        roots: dict[str, dict[str, bytes]],
        run: ValidationRun | None,
        memo: dict[tuple[str, str], list[str]],
    ) -> dict[str, list[str]]:
        """`self.validate`, skipping roots already validated this cycle with the same
        bytes; `run` has been given exactly those roots already, as they were rendered."""
        assert self.validate is not None
        keys = {path: root_key(files) for path, files in roots.items()}
        todo = {p: f for p, f in roots.items() if (p, keys[p]) not in memo}
        if todo:
            found = run.results() if run is not None else self.validate(todo)
            for path in todo:
                memo[(path, keys[path])] = found.get(path, [])
        return {p: memo[(p, keys[p])] for p in roots if memo[(p, keys[p])]}

    def _live_changes(
        self, draft: Draft, pending: list[_Pending], validated: Mapping[str, list[str]]
    ) -> None:
        """A change for every planned deployment whose root validates."""
        by_id = {o.deployment_id: o for o in draft.outcomes}
        for p in pending:
            outcome = by_id[p.dep.id]
            folder_path = f"{draft.ns_dir}/{p.name}"
            errors = validated.get(folder_path, [])
            if errors:
                outcome.action = "failed"
                outcome.error = (
                    f"deployment {p.dep.name!r} ({p.dep.id}): rendered manifests do not "
                    "validate: " + "; ".join(errors[:5])
                )
                log.error(outcome.error, extra=deployment_extra(p.dep.name, p.dep.id))
                continue
            if STATE_FILE in p.files:
                self.existing.remember(blob_id(p.files[STATE_FILE]), p.state)
            write, delete = self._folder_change(draft, p, folder_path)
            if not write and not delete:
                continue
            outcome.action = _ACTIONS[p.kind]
            info = CommitInfo(
                kind=p.kind,  # type: ignore[arg-type]
                namespace=draft.target.namespace,
                name=p.name,
                deployment_id=p.dep.id,
                revision_id=p.dep.revision_id,
                listener_id=draft.listener.id,
                cluster=draft.cluster,
                bridge_version=__version__,
                image=p.dep.image_uri if p.kind == "deploy" else None,
            )
            draft.changes.append(Change(info=info, write=write, delete=delete, outcome=outcome))

    @staticmethod
    def _folder_change(
        draft: Draft, p: _Pending, folder_path: str
    ) -> tuple[dict[str, bytes], list[str]]:
        """What one deployment's commit writes and deletes (its folder's files that
        differ, and the shared files that change with it)."""
        old = draft.existing.get(p.dep.id)
        write = {f"{folder_path}/{fname}": data for fname, data in p.files.items()}
        delete: list[str] = []
        if old is not None and old.folder != p.name:
            # The folder name changed (a new collision): move it in one commit.
            delete.append(f"{draft.ns_dir}/{old.folder}")
            draft.shared.folders.discard(old.folder)
        elif old is not None:
            delete = [
                f"{folder_path}/{fname}" for fname in sorted(old.files) if fname not in p.files
            ]
            write = {
                f"{folder_path}/{fname}": data
                for fname, data in p.files.items()
                if old.files.get(fname) != blob_id(data)
                and not (fname == STATE_FILE and data == old.state.to_bytes())
            }
        draft.shared.folders.add(p.name)
        write.update(draft.shared.changed())
        return write, delete

    # -- finish --------------------------------------------------------------

    def finish(self, draft: Draft, decision: Decision, gone: Sequence[str]) -> Plan:
        """The plan: the draft's changes, then one delete commit per deployment the
        guard lets go and the control plane confirms gone. The approval file and
        the held record change in the commit of the last deletion they concern
        (one commit per deployment, SPEC §6; no commit of their own)."""
        changes = list(draft.changes)
        deleted: list[Outcome] = []
        last = max((n for n, i in enumerate(gone) if i in decision.finishing), default=-1)
        for position, dep_id in enumerate(gone):
            old = draft.existing[dep_id]
            outcome = Outcome(
                target=draft.target.namespace,
                namespace=draft.target.namespace,
                deployment_id=dep_id,
                name=old.state.deployment_name,
                action="deleted",
                revision_id=old.state.revision_id,
            )
            deleted.append(outcome)
            draft.shared.folders.discard(old.folder)
            write = draft.shared.changed()
            delete = [f"{draft.ns_dir}/{old.folder}"]
            if position == last:
                write.update(decision.finish_write)
                delete.extend(decision.finish_delete)
            approval = decision.approval if dep_id in decision.approved else None
            info = CommitInfo(
                kind="delete",
                namespace=draft.target.namespace,
                name=old.folder,
                deployment_id=dep_id,
                revision_id=old.state.revision_id,
                listener_id=draft.listener.id,
                cluster=draft.cluster,
                bridge_version=__version__,
                approved_by=approval.author if approval is not None else None,
                body=(
                    f"Held by the mass-delete guard; approved in commit {approval.commit} "
                    f"({approval.path})."
                    if approval is not None
                    else ""
                ),
            )
            changes.append(Change(info=info, write=write, delete=delete, outcome=outcome))
        names = {o.deployment_id: o.name for o in decision.held_outcomes}
        return Plan(
            target=draft.target,
            head=draft.view.head,
            outcomes=[*decision.held_outcomes, *draft.outcomes, *deleted],
            changes=changes,
            held=[(i, names[i]) for i in decision.held],
            notes=list(decision.notes),
        )
