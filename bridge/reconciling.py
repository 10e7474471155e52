"""One reconcile cycle: list -> decide per deployment -> render changed -> publish.

The cycle is the only place that knows about all the parts. It never touches
git itself (publishing does), never encrypts (secrets does), never builds
manifests (rendering does). It decides, from the in-repo state files, what
changed; makes one change record per changed deployment; and hands finished
file maps to the writer, one commit per record, one push per target.

Guarantees kept here:
- A listing that failed or was incomplete changes nothing (the client raises).
- An unchanged deployment costs one digest comparison: no render, no write.
- A deployment that cannot be reconciled (malformed, policy, secrets,
  validation) is reported by name and id and keeps its last good commit; the
  others go on.
- Deletions only from a complete listing, and only of deployments the
  control plane confirms are gone (`confirm_gone`): offset paging can skip a
  record without any sign. A second line, the mass-delete guard: more than
  `policy.massDelete.fraction` of a target's deployments and at least
  `policy.massDelete.min` of them are held (not deleted, reported) until an
  operator approves them by a commit (bridge.approvals) or runs once with
  `allow_mass_delete`; deploys of the target go on meanwhile.
- A rejected push: fetch, recompute on the new head, retry with jittered
  backoff; never force. Plans and validations are reused within a cycle, so
  a retry's fetch-to-push window stays short.
- A local clone found damaged is cloned again and the target retried once,
  in the same cycle. A remote branch rewritten by force stops that target
  (HistoryRewritten, logged critical); the others go on.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import random
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Literal, Protocol

from bridge import RENDER_SCHEMA, __version__
from bridge.approvals import (
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
from bridge.commits import CommitInfo
from bridge.config import Settings, Target
from bridge.errors import (
    BridgeError,
    ControlPlaneError,
    DeploymentError,
    GitError,
    HistoryRewritten,
    InternalError,
    LocalCloneBroken,
    PushRejected,
    SecretsError,
    unexpected,
)
from bridge.faults import checkpoint, crash_soon, fault_point
from bridge.logs import deployment_extra
from bridge.models import Deployment, Listener
from bridge.publishing.objects import blob_id, entry_kind, quote_path
from bridge.publishing.repo import check_repo_path
from bridge.redaction import Redacted
from bridge.secrets.providers import Sealer
from bridge.state import MAX_STATE_BYTES, STATE_FILE, DeploymentState, SecretRecord
from bridge.untrusted import UntrustedInput

log = logging.getLogger("bridge.reconcile")

Action = Literal[
    "unchanged", "deployed", "restored", "rekeyed", "deleted", "failed", "refused", "would-change"
]
ESCROW_POSTGRES = "postgres-password"
SECRET_MAX_BYTES = 1024 * 1024  # Kubernetes' limit on a Secret's data
# The largest file of a deployment folder the bridge reads back to restore it:
# a sealed Secret of SECRET_MAX_BYTES is ~1.4 MB; a state file could name any
# blob of the repo, so a read on its word is bounded.
FILE_MAX_BYTES = 16 * 1024 * 1024
SYNC_THREADS = 4  # targets fetched at the same time


def shard_owns(target: Target, shard: tuple[int, int] | None) -> bool:
    """Whether replica I of N owns a target: a stable hash, no coordination."""
    if shard is None:
        return True
    index, count = shard
    digest = hashlib.sha256(target.key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count == index


# --- what the cycle needs from its collaborators ------------------------------


class ValidationRun(Protocol):
    """What a validator's optional `begin(expected)` returns: roots fed one by one
    while the others are rendered, then every root's errors at once."""

    def add(self, folder: str, files: dict[str, bytes]) -> None: ...

    def results(self) -> dict[str, list[str]]: ...

    def close(self) -> None: ...


def _is_state_of(rel: str, namespace: str) -> bool:
    """Is `rel` (below a target's path) `<cluster>/<namespace>/<folder>/` + STATE_FILE?"""
    parts = rel.split("/")
    return len(parts) == 4 and parts[1] == namespace and parts[3] == STATE_FILE


_UNREADABLE_HINT = (
    "restore the file as the bridge last committed it (`git log -- <path>`, then "
    "`git checkout <commit> -- <path>` and push); deleting the folder instead deploys "
    "it afresh, with a new generated Postgres password"
)


def _unreadable_error(dep: Deployment, why: str) -> DeploymentError:
    return DeploymentError(
        f"{why}; its folder is left as it is",
        deployment_id=dep.id,
        deployment_name=dep.name,
        hint=_UNREADABLE_HINT,
    )


def _edited(old: _Existing) -> str:
    """The entries of a drifted folder that differ from the state file's record."""
    recorded = {k: v for k, v in old.state.files.items() if k != STATE_FILE}
    names = sorted(
        n for n in recorded.keys() | old.files.keys() if recorded.get(n) != old.files.get(n)
    )
    shown = []
    for name in names[:10]:
        entry = old.files.get(name)
        kind = entry_kind(entry) if entry is not None else None
        what = "removed" if entry is None else "added" if name not in recorded else "changed"
        shown.append(f"{quote_path(name)} ({kind or what})")
    more = f" and {len(names) - 10} more" if len(names) > 10 else ""
    return ", ".join(shown) + more


def _detail(e: ValueError) -> str:
    """A parse error's text as a predicate: "state file: 'x' is ..." -> "'x' is ..."."""
    text = str(e)
    for prefix in ("state file: ", "state file "):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


def _root_key(files: Mapping[str, bytes]) -> str:
    """A root's identity for validation: its file names and contents."""
    return hashlib.sha256(
        b"".join(n.encode() + b"\0" + blob_id(d).encode() + b"\0" for n, d in sorted(files.items()))
    ).hexdigest()


class Repo(Protocol):
    """The part of publishing.TargetRepo the cycle uses."""

    def sync(self) -> str | None: ...
    def ls_tree(self, prefix: str) -> dict[str, str]: ...
    def read_blob(self, blob: str) -> bytes: ...
    def read_blobs(
        self, blobs: Sequence[str], *, max_bytes: int | None = None, missing_ok: bool = False
    ) -> dict[str, bytes]: ...
    def preload_blobs(self, blobs: Sequence[str], *, max_bytes: int | None = None) -> None: ...
    def blob_sizes(self, entries: Sequence[str], *, missing_ok: bool = False) -> dict[str, int]: ...
    def commit_all(
        self, commits: Sequence[tuple[str, Mapping[str, bytes], Iterable[str]]]
    ) -> list[str | None]: ...
    def push(self) -> bool: ...
    def last_commit_for(self, path: str) -> tuple[str, str, str, str] | None: ...
    def check_signing(self) -> None: ...
    def close(self) -> None: ...


# --- results -----------------------------------------------------------------


@dataclass
class Outcome:
    target: str
    namespace: str
    deployment_id: str
    name: str
    action: Action
    revision_id: str | None = None
    commit: str | None = None
    error: str | None = None
    diff: str = ""


@dataclass
class TargetResult:
    target: Target
    pushed: bool = False
    commits: int = 0
    head: str | None = None
    error: BridgeError | None = None
    # Deletions the mass-delete guard holds, as (id, name); None: not planned.
    held: list[tuple[str, str]] | None = None
    approval_notes: list[str] = field(default_factory=list)


@dataclass
class CycleReport:
    outcomes: list[Outcome] = field(default_factory=list)
    targets: list[TargetResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.action in ("failed", "refused")]

    def exit_code(self) -> int:
        codes = [t.error.exit_code for t in self.targets if t.error is not None]
        if any(c == 4 for c in codes):
            return 4
        if codes or self.failed:
            return 1
        return 0


# --- the change record --------------------------------------------------------


@dataclass
class Change:
    """One commit: what it says and exactly what it writes, decided together."""

    info: CommitInfo
    write: dict[str, bytes]
    delete: list[str]
    outcome: Outcome


@dataclass(frozen=True)
class _Approval:
    """An operator's approval file at the target's head, and who committed it."""

    path: str
    ids: tuple[str, ...]
    commit: str
    author: str  # "Name <email>" of the commit that last changed the file


@dataclass
class _Guard:
    """What the mass-delete guard decided for one target in one cycle."""

    deletable: list[str]  # ids to delete (still to be confirmed gone per id)
    held: list[str] = field(default_factory=list)
    held_outcomes: list[Outcome] = field(default_factory=list)
    approval: _Approval | None = None
    approved: frozenset[str] = frozenset()  # held ids the approval lets go
    finishing: frozenset[str] = frozenset()  # ids whose last deletion carries finish_*
    finish_write: dict[str, bytes] = field(default_factory=dict)
    finish_delete: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # approval problems, for the log


@dataclass
class _Existing:
    folder: str  # folder name inside the namespace dir
    state: DeploymentState
    files: dict[str, str]  # file name -> blob id, as in the tree now


@dataclass(frozen=True)
class _Remembered:
    """What planning a deployment computed last cycle, reused while it is equal."""

    deployment: Deployment
    context: object
    name: str
    fingerprint: bytes
    digest: str


# --- the cycle ---------------------------------------------------------------


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        *,
        list_deployments: Callable[
            [], tuple[Listener, Sequence[Deployment], Sequence[DeploymentError]]
        ],
        open_repo: Callable[[Target], Repo],
        allow_mass_delete: bool = False,
        dry_run: bool = False,
        force_reseal: bool = False,
        shard: tuple[int, int] | None = None,
        validate: Callable[[dict[str, dict[str, bytes]]], dict[str, list[str]]] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        on_event: Callable[[str, Mapping[str, object]], None] | None = None,
        confirm_gone: Callable[[Sequence[str]], Collection[str]] | None = None,
    ) -> None:
        self.settings = settings
        self.list_deployments = list_deployments
        # Asks the control plane whether deployments missing from a listing are
        # really gone (None: the listing's word is taken, e.g. in unit tests).
        self.confirm_gone = confirm_gone
        self.open_repo = open_repo
        self.allow_mass_delete = allow_mass_delete
        self.dry_run = dry_run
        self.force_reseal = force_reseal
        self.shard = shard
        self.validate = validate
        self.sleep = sleep
        self.rng = rng or random.Random()  # noqa: S311 - backoff jitter, not security
        self.on_event = on_event or (lambda _name, _data: None)
        self._state_cache: dict[str, DeploymentState] = {}
        self._states_seen: set[str] = set()  # state blobs read this cycle
        # ns folder -> (head commit, its deployments, their state blob ids, folders
        # whose state file cannot be trusted -> why)
        self._existing_cache: dict[
            str, tuple[str, dict[str, _Existing], list[str], dict[str, str]]
        ] = {}
        # dep id -> (deployment, render context, input fingerprint) of the last
        # cycle; rebuilt each cycle, so it holds the deployments listed last.
        self._fingerprints: dict[str, _Remembered] = {}
        self._fingerprints_next: dict[str, _Remembered] = {}
        self._contexts: dict[str, object] = {}  # target key -> last RenderContext
        # Per cycle (cleared by run_cycle): plans and validation results by input,
        # so push retries within a cycle neither re-render nor re-validate.
        self._plans: dict[object, tuple[str, dict[str, bytes], DeploymentState]] = {}
        self._validated: dict[tuple[str, str], list[str]] = {}
        self._sealer: Sealer | None = None
        self._sealer_loaded = False
        # What was last logged per (target or topic, kind), to log once per change.
        self._said: dict[tuple[str, str], object] = {}
        # Target key -> the guard's decision of its last plan this cycle.
        self._guards: dict[str, _Guard] = {}

    # -- public ---------------------------------------------------------------

    def run_cycle(self) -> CycleReport:
        """One cycle over every owned target. Raises ControlPlaneError if listing fails."""
        self._states_seen.clear()
        self._fingerprints_next = {}
        try:
            report = self._run_cycle()
        finally:
            self._plans.clear()
            self._validated.clear()
            self._fingerprints, self._fingerprints_next = self._fingerprints_next, {}
        # Keep only the states of folders that still exist: memory follows the
        # number of deployments, not the number of revisions ever seen.
        self._state_cache = {
            blob: state for blob, state in self._state_cache.items() if blob in self._states_seen
        }
        return report

    def _run_cycle(self) -> CycleReport:
        owned = [t for t in self.settings.targets if shard_owns(t, self.shard)]
        # Every target's first sync (a fetch: a network round trip to its remote)
        # runs ahead in a few threads, started before the listing so that the
        # two wait on their servers at the same time; targets are then planned
        # and committed one at a time. A fetch changes nothing in the remote, so
        # one made for a cycle whose listing fails costs nothing but the trip.
        with ThreadPoolExecutor(
            max_workers=max(1, min(SYNC_THREADS, len(owned))), thread_name_prefix="sync"
        ) as pool:
            opened: dict[str, tuple[Repo, Future[str | None]] | BridgeError] = {}
            for target in owned:
                try:
                    repo = self.open_repo(target)
                except BridgeError as e:
                    opened[target.key] = e
                    continue
                except Exception as e:  # one target's bug must not stop the others
                    opened[target.key] = unexpected(
                        e, f"target {target.namespace}: opening its clone", where="target"
                    )
                    continue
                opened[target.key] = (repo, pool.submit(self._sync_and_preload, repo, target))
            try:
                return self._cycle_on(owned, opened)
            finally:
                # Left over only if the cycle was cut short: release those clones.
                for entry in opened.values():
                    if not isinstance(entry, BridgeError):
                        wait([entry[1]])  # its error, if any, is moot now
                        entry[0].close()

    def _sync_and_preload(self, repo: Repo, target: Target) -> str | None:
        """The first sync of a target, then (still in the sync thread) the state
        files of its namespace folder that this process has not read yet: a
        restarted bridge reads them while the listing is on its way instead of
        after it. Only `<path>/<cluster>/<namespace>/<folder>/` state files: the
        cluster comes with the listing, the rest is the target's own; another
        target's folders in the same repo are not this target's to read. Any
        failure here is left to the cycle, which reads them again and names it."""
        head = repo.sync()
        if head is not None:
            try:
                prefix = f"{PurePosixPath(target.path)}/" if target.path else ""
                repo.preload_blobs(
                    [
                        blob
                        for path, blob in repo.ls_tree(prefix).items()
                        if blob not in self._state_cache
                        and _is_state_of(path[len(prefix) :], target.namespace)
                    ],
                    max_bytes=MAX_STATE_BYTES,
                )
            except (BridgeError, ValueError, OSError) as e:
                log.debug("reading state files ahead failed (%s); read in the cycle", e)
        return head

    def _cycle_on(
        self,
        owned: list[Target],
        opened: dict[str, tuple[Repo, Future[str | None]] | BridgeError],
    ) -> CycleReport:
        listener, deployments, invalid = self._list()
        report = CycleReport(outcomes=invalid_as_failed(invalid))
        for error in invalid:
            log.error(
                "%s", error, extra=deployment_extra(error.deployment_name, error.deployment_id)
            )
        by_namespace: dict[str, list[Deployment]] = {}
        for dep in deployments:
            by_namespace.setdefault(dep.namespace or "", []).append(dep)
        # Deployments whose namespace has a malformed record count as present:
        # a parse failure must never look like a deletion.
        unparsed_ids = {e.deployment_id for e in invalid}
        unmanaged = unmanaged_messages(listener, by_namespace, self.settings)
        report.warnings.extend(unmanaged)
        # Once per change of the set, not every cycle: a standing condition that
        # is logged every 15 s buries everything else.
        if self._changed(("listener", "unmanaged"), tuple(unmanaged)):
            for message in unmanaged:
                log.warning("%s", message, extra={"event": "unmanaged"})
        for target in owned:
            result = TargetResult(target=target)
            report.targets.append(result)
            try:
                entry = opened.pop(target.key)
                if isinstance(entry, BridgeError):
                    raise entry
                outcomes = self._reconcile_target(
                    target,
                    listener,
                    by_namespace.get(target.namespace, []),
                    unparsed_ids,
                    result,
                    entry,
                )
                report.outcomes.extend(outcomes)
            except BridgeError as e:
                result.error = e
                log.error("target %s: %s", target.namespace, e, extra={"target": target.namespace})
            except Exception as e:
                # Isolation: whatever one target's tree or remote holds, the other
                # targets are reconciled (a crash loop would block every team).
                result.error = self._internal(
                    e, f"target {target.namespace}", target.key, target=target.namespace
                )
            finally:
                # Plans are only reused by this target's push retries: free the
                # rendered files now (at 10,000 deployments they were ~160 MB).
                self._plans.clear()
                self._validated.clear()
        return report

    def _list(self) -> tuple[Listener, Sequence[Deployment], Sequence[DeploymentError]]:
        """The listing, or ControlPlaneError: whatever goes wrong while reading it
        (a page the client cannot digest included), this cycle changes nothing."""
        try:
            return self.list_deployments()
        except ControlPlaneError:
            raise
        except Exception as e:
            self.on_event("internal-error", {"where": "cycle"})
            error = unexpected(e, "reading the control plane's listing", where="cycle")
            raise ControlPlaneError(
                error.message,
                hint="the control plane sent something the bridge does not handle; this cycle "
                "changed nothing and the next poll lists again. Please report it with this line",
            ) from e

    def _internal(self, error: Exception, what: str, key: str, **extra: object) -> InternalError:
        """An unexpected exception of one deployment or target, as an InternalError:
        logged at error level with its frames once per change (not every cycle),
        counted in /metrics."""
        where = "deployment" if "deployment_id" in extra else "target"
        internal = unexpected(error, what, where=where)
        self.on_event("internal-error", {"where": where})
        if self._changed((key, "internal"), internal.message):
            log.error("%s", internal, exc_info=error, extra=extra)
        else:
            log.debug("%s (again)", internal, extra=extra)
        return internal

    # -- one target -------------------------------------------------------------

    def _reconcile_target(
        self,
        target: Target,
        listener: Listener,
        deployments: list[Deployment],
        unparsed_ids: set[str],
        result: TargetResult,
        opened: tuple[Repo, Future[str | None]],
    ) -> list[Outcome]:
        repo, first_sync = opened
        try:
            try:
                return self._publish(
                    repo, target, listener, deployments, unparsed_ids, result, first_sync
                )
            except LocalCloneBroken as e:
                # The writer has marked its clone: the next sync() moves it aside and
                # clones again, so the cycle carries on instead of failing until the
                # next poll. Once: a second failure is not the clone's fault.
                log.warning(
                    "target %s: %s; cloning again and retrying this target once",
                    target.namespace,
                    e,
                    extra={"target": target.namespace},
                )
                return self._publish(repo, target, listener, deployments, unparsed_ids, result)
        except GitError as e:
            if isinstance(e, HistoryRewritten):
                log.critical("%s", e, extra={"target": target.namespace})
            raise
        finally:
            repo.close()

    def _publish(
        self,
        repo: Repo,
        target: Target,
        listener: Listener,
        deployments: list[Deployment],
        unparsed_ids: set[str],
        result: TargetResult,
        first_sync: Future[str | None] | None = None,
    ) -> list[Outcome]:
        """Sync, plan, commit, push; a rejected push starts over on the new head.
        `first_sync`: the first attempt's sync, already started."""
        attempts = max(1, self.settings.git.push_retries + 1)
        for attempt in range(attempts):
            if attempt == 0 and first_sync is not None:
                result.head = first_sync.result()  # raises what sync() raised
            else:
                result.head = repo.sync()
            outcomes, changes = self._plan_target(
                repo, target, listener, deployments, unparsed_ids, result.head
            )
            guard = self._guards.get(target.key)
            if guard is not None:
                held_names = {o.deployment_id: o.name for o in guard.held_outcomes}
                result.held = [(i, held_names[i]) for i in guard.held]
                result.approval_notes = list(guard.notes)
            if self.dry_run or not changes:
                return outcomes
            if self.settings.git.signing is not None:
                repo.check_signing()
            committed = 0
            checkpoint("before-commit")
            shas = repo.commit_all(
                [(change.info.message(), change.write, change.delete) for change in changes]
            )
            for change, sha in zip(changes, shas, strict=True):
                change.outcome.commit = sha
                if sha is not None:
                    committed += 1
                    self.on_event("commit", {"target": target.namespace, "kind": change.info.kind})
            checkpoint("before-push")
            try:
                crash_soon("during-push", 0.05)
                result.pushed = repo.push()
                checkpoint("after-push")
                result.commits = committed
                self.on_event(
                    "push",
                    {
                        "target": target.namespace,
                        "outcome": "ok" if result.pushed else "nothing",
                    },
                )
            except PushRejected:
                self.on_event("push", {"target": target.namespace, "outcome": "rejected"})
                if attempt + 1 >= attempts:
                    raise
                delay = min(30.0, 0.5 * 2**attempt) * (0.5 + self.rng.random())
                log.info(
                    "push to %s was rejected (someone else pushed); fetching and "
                    "re-rendering on the new head in %.1fs",
                    target.repo,
                    delay,
                    extra={"target": target.namespace},
                )
                self.sleep(delay)
                continue
            for change in changes:
                o = change.outcome
                log.info(
                    "%s %s/%s -> %s",
                    change.info.kind,
                    o.namespace,
                    o.name,
                    (o.commit or "")[:12],
                    extra=deployment_extra(o.name, o.deployment_id, target=target.namespace),
                )
            return outcomes
        raise AssertionError("unreachable")  # pragma: no cover

    def _plan_target(
        self,
        repo: Repo,
        target: Target,
        listener: Listener,
        deployments: list[Deployment],
        unparsed_ids: set[str],
        head: str | None = None,
    ) -> tuple[list[Outcome], list[Change]]:
        from bridge.rendering import RenderContext
        from bridge.rendering.naming import folder_names

        fault_point("plan-target", target.namespace)
        cluster = target.cluster or listener.compute_id
        ns_dir = (
            str(PurePosixPath(target.path, cluster, target.namespace))
            if target.path
            else (f"{cluster}/{target.namespace}")
        )
        context = RenderContext(
            listener=listener,
            cluster=cluster,
            settings=self.settings.render,
            secrets_provider=self.settings.secrets.provider,
        )
        # The same context as last cycle is the same object, so that a deployment's
        # remembered fingerprint is checked by identity of its context.
        last_context = self._contexts.get(target.key)
        if last_context is not None and last_context == context:
            context = last_context
        self._contexts[target.key] = context
        tree = repo.ls_tree(ns_dir + "/")
        existing, unreadable = self._existing_states(repo, tree, ns_dir, head)
        outcomes: list[Outcome] = []
        changes: list[Change] = []

        live = [d for d in deployments if not d.awaiting_delete]
        names = folder_names(live)
        self._report_unreadable(target, unreadable, set(names.values()))
        # Deletions: gone from a complete listing, or AWAITING_DELETE. A deployment
        # that is listed but did not parse is present: a parse error never deletes.
        listed_ids = {d.id for d in live} | unparsed_ids
        to_delete = sorted(
            (dep_id for dep_id in existing if dep_id not in listed_ids),
            key=lambda i: existing[i].folder,
        )
        guard = self._guard(repo, target, tree, ns_dir, to_delete, existing, listed_ids)
        outcomes.extend(guard.held_outcomes)
        to_delete = guard.deletable
        if to_delete and self.confirm_gone is not None:
            to_delete = self._confirmed_gone(target, to_delete, existing)
        if guard.approval is not None:
            self._note_approval_result(target, guard, to_delete, existing)
        self._guards[target.key] = guard
        if self._changed((target.key, "approval-notes"), tuple(guard.notes)):
            for note in guard.notes:
                log.warning(
                    "target %s: %s", target.namespace, note, extra={"target": target.namespace}
                )

        # The folder set after this cycle, for the namespace kustomization, and the
        # blob ids of the shared files as they will be after each commit, so that
        # each commit carries exactly the shared-file changes its deployment causes.
        current_folders = {e.folder for e in existing.values()} | set(unreadable)
        readme_path = str(PurePosixPath(target.path, "README.md")) if target.path else "README.md"
        kustomization_path = f"{ns_dir}/kustomization.yaml"
        shared_blobs = {
            kustomization_path: tree.get(kustomization_path),
            readme_path: repo.ls_tree(readme_path).get(readme_path),
        }

        def shared_files(folders: set[str]) -> dict[str, bytes]:
            from bridge.provenance import target_readme
            from bridge.rendering.rendering import render_namespace_kustomization

            wanted = {
                kustomization_path: render_namespace_kustomization(sorted(folders)),
                readme_path: target_readme(target, listener.id, cluster),
            }
            out = {}
            for path, data in wanted.items():
                if shared_blobs.get(path) != blob_id(data):
                    out[path] = data
                    shared_blobs[path] = blob_id(data)
            return out

        validated: dict[str, list[str]] = {}
        pending: list[tuple[Deployment, str, dict[str, bytes], DeploymentState, str]] = []

        ordered = sorted(live, key=lambda d: (names[d.id], d.id))
        # A validator that takes roots one by one starts on each as soon as it is
        # rendered: Kustomize runs in its worker processes while this thread renders on.
        begin = getattr(self.validate, "begin", None)
        run: ValidationRun | None = begin(len(ordered)) if callable(begin) else None
        try:
            for position, dep in enumerate(ordered, 1):
                # Progress of the expensive part (planning renders what changed).
                self.on_event(
                    "progress",
                    {"target": target.namespace, "done": position, "total": len(ordered)},
                )
                outcome = Outcome(
                    target=target.namespace,
                    namespace=target.namespace,
                    deployment_id=dep.id,
                    name=names[dep.id],
                    action="unchanged",
                    revision_id=dep.revision_id,
                )
                outcomes.append(outcome)
                try:
                    fault_point("plan-deployment", dep.name)
                    if unreadable and names[dep.id] in unreadable:
                        raise _unreadable_error(dep, unreadable[names[dep.id]])
                    planned = self._plan_deployment(
                        dep,
                        names[dep.id],
                        context,
                        existing.get(dep.id),
                        f"{ns_dir}/{names[dep.id]}",
                    )
                except DeploymentError as e:
                    outcome.action = "failed"
                    outcome.error = str(e)
                    log.error(
                        "%s", e, extra=deployment_extra(dep.name, dep.id, target=target.namespace)
                    )
                    continue
                except Exception as e:
                    # Isolation: a deployment the bridge cannot handle fails alone, by
                    # name and id; the others in this target are still planned.
                    outcome.action = "failed"
                    outcome.error = str(
                        self._internal(
                            e,
                            f"deployment {dep.name!r} ({dep.id}): planning",
                            dep.id,
                            **deployment_extra(dep.name, dep.id, target=target.namespace),
                        )
                    )
                    continue
                if planned is None:
                    continue
                kind, files, state = planned
                pending.append((dep, kind, files, state, names[dep.id]))
                path = f"{ns_dir}/{names[dep.id]}"
                # (The per-cycle memo is empty but when a push race re-plans a target.)
                if run is not None and (
                    not self._validated or (path, _root_key(files)) not in self._validated
                ):
                    run.add(path, files)

            if self.validate is not None and pending:
                validated = self._validate(
                    {f"{ns_dir}/{name}": files for _dep, _k, files, _s, name in pending}, run
                )
        finally:
            if run is not None:
                run.close()

        by_id = {o.deployment_id: o for o in outcomes}
        for dep, kind, files, state, name in pending:
            outcome = by_id[dep.id]
            folder_path = f"{ns_dir}/{name}"
            errors = validated.get(folder_path, [])
            if errors:
                outcome.action = "failed"
                outcome.error = (
                    f"deployment {dep.name!r} ({dep.id}): rendered manifests do not validate: "
                    + "; ".join(errors[:5])
                )
                log.error(outcome.error, extra=deployment_extra(dep.name, dep.id))
                continue
            old = existing.get(dep.id)
            if STATE_FILE in files:
                # What this cycle writes, the next one finds without reading it back
                # (keyed by blob id: right whether or not the commit lands).
                state_blob = blob_id(files[STATE_FILE])
                self._state_cache[state_blob] = state
                self._states_seen.add(state_blob)
            write = {f"{folder_path}/{fname}": data for fname, data in files.items()}
            delete: list[str] = []
            if old is not None and old.folder != name:
                # The folder name changed (a new collision): move it in one commit.
                delete.append(f"{ns_dir}/{old.folder}")
                current_folders.discard(old.folder)
            elif old is not None:
                delete = [
                    f"{folder_path}/{fname}" for fname in sorted(old.files) if fname not in files
                ]
                write = {
                    f"{folder_path}/{fname}": data
                    for fname, data in files.items()
                    if old.files.get(fname) != blob_id(data)
                    and not (fname == STATE_FILE and data == old.state.to_bytes())
                }
            current_folders.add(name)
            write.update(shared_files(current_folders))
            if not write and not delete:
                continue
            actions: dict[str, Action] = {
                "deploy": "deployed",
                "restore": "restored",
                "rekey": "rekeyed",
            }
            outcome.action = actions[kind]
            if self.dry_run:
                outcome.action = "would-change"
                outcome.diff = self._diff(repo, tree, write, delete, kind)
                continue
            changes.append(
                Change(
                    info=CommitInfo(
                        kind=kind,  # type: ignore[arg-type]
                        namespace=target.namespace,
                        name=name,
                        deployment_id=dep.id,
                        revision_id=dep.revision_id,
                        listener_id=listener.id,
                        cluster=cluster,
                        bridge_version=__version__,
                        image=dep.image_uri if kind == "deploy" else None,
                    ),
                    write=write,
                    delete=delete,
                    outcome=outcome,
                )
            )

        # The approval file and the held record change in the commit of the last
        # deletion they concern (one per deployment, SPEC §6; no commit of its own).
        last_finishing = max(
            (n for n, i in enumerate(to_delete) if i in guard.finishing), default=-1
        )
        for position, dep_id in enumerate(to_delete):
            old = existing[dep_id]
            outcome = Outcome(
                target=target.namespace,
                namespace=target.namespace,
                deployment_id=dep_id,
                name=old.state.deployment_name,
                action="deleted",
                revision_id=old.state.revision_id,
            )
            outcomes.append(outcome)
            current_folders.discard(old.folder)
            write = shared_files(current_folders)
            delete = [f"{ns_dir}/{old.folder}"]
            approval = guard.approval if dep_id in guard.approved else None
            if position == last_finishing:
                write.update(guard.finish_write)
                delete.extend(guard.finish_delete)
            if self.dry_run:
                outcome.action = "would-change"
                outcome.diff = self._diff(repo, tree, write, delete, "delete")
                continue
            changes.append(
                Change(
                    info=CommitInfo(
                        kind="delete",
                        namespace=target.namespace,
                        name=old.folder,
                        deployment_id=dep_id,
                        revision_id=old.state.revision_id,
                        listener_id=listener.id,
                        cluster=cluster,
                        bridge_version=__version__,
                        approved_by=approval.author if approval is not None else None,
                        body=(
                            f"Held by the mass-delete guard; approved in commit {approval.commit} "
                            f"({approval.path})."
                            if approval is not None
                            else ""
                        ),
                    ),
                    write=write,
                    delete=delete,
                    outcome=outcome,
                )
            )
        return outcomes, changes

    def _guard(
        self,
        repo: Repo,
        target: Target,
        tree: Mapping[str, str],
        ns_dir: str,
        candidates: list[str],
        existing: dict[str, _Existing],
        listed_ids: Collection[str],
    ) -> _Guard:
        """The mass-delete guard, approvals and the held record for one target.

        Held: every candidate when they are more than `massDelete.fraction` of
        the target's deployments and at least `massDelete.min` of them, plus any
        candidate the held record (written when an approval let only part of
        them go) still names. An approval lets go exactly the held ids it lists;
        the rest stay held. `--allow-mass-delete` lets everything go, once."""
        policy = self.settings.policy
        record_path = f"{ns_dir}/{HELD_FILE}"
        approval_file = approval_path(ns_dir)
        notes: list[str] = []
        recorded: set[str] = set()
        record_blob = tree.get(record_path)
        if record_blob is not None:
            try:
                data = self._read_small(repo, record_blob, MAX_HELD_BYTES)
                recorded = set(parse_approval(data, max_bytes=MAX_HELD_BYTES, max_ids=MAX_HELD_IDS))
            except (ApprovalFileError, UntrustedInput) as e:
                # Someone broke the bridge's record: hold everything, the safe reading
                # (it exists to hold deletions; which ones cannot be known now).
                notes.append(
                    f"the held-deletion record {self._shown(repo, record_path)} {e}; every "
                    "deletion held until it is fixed or removed (an approval or "
                    "--allow-mass-delete writes it anew)"
                )
                recorded = set(candidates)
        if self.allow_mass_delete:
            self._changed((target.key, "held"), ())
            guard = _Guard(deletable=list(candidates), notes=notes)
            if record_blob is not None and candidates:
                guard.finishing = frozenset(candidates)
                guard.finish_delete = [record_path]
            return guard
        trips = len(candidates) >= policy.mass_delete_min and len(
            candidates
        ) > policy.mass_delete_fraction * len(existing)
        guarded = list(candidates) if trips else [i for i in candidates if i in recorded]
        if not guarded:
            self._changed((target.key, "held"), ())  # so that a new hold is logged again
            if approval_file in tree:
                notes.append(
                    f"approval file {approval_file} is present but no deletion of this target "
                    "is held; it is ignored and kept (remove it)"
                )
            return _Guard(deletable=list(candidates), notes=notes)
        approval = self._read_approval(repo, tree, approval_file, notes)
        approved: frozenset[str] = frozenset()
        if approval is not None:
            approved = frozenset(i for i in guarded if i in approval.ids)
            for dep_id in approval.ids:
                if dep_id in approved:
                    continue
                if dep_id in listed_ids:
                    known = existing.get(dep_id)
                    name = known.state.deployment_name if known is not None else "?"
                    notes.append(
                        f"approval in {approval_file} (commit {approval.commit[:12]}) names "
                        f"deployment {name!r} ({dep_id}), which the control plane lists "
                        "again: ignored, it is not deleted"
                    )
                elif dep_id in candidates:
                    notes.append(
                        f"approval in {approval_file} (commit {approval.commit[:12]}) names "
                        f"deployment {existing[dep_id].state.deployment_name!r} ({dep_id}), "
                        "whose deletion the guard does not hold: it needs no approval"
                    )
                else:
                    notes.append(
                        f"approval in {approval_file} (commit {approval.commit[:12]}) names "
                        f"{dep_id}, which is not a held deletion of target {target.namespace}: "
                        "ignored"
                    )
            if not approved:
                notes.append(
                    f"approval file {approval_file} approves none of the held deletions; "
                    "it is kept (fix or remove it)"
                )
        held = [i for i in guarded if i not in approved]
        guard = _Guard(
            deletable=[i for i in candidates if i not in guarded or i in approved],
            held=held,
            approval=approval if approved else None,
            approved=approved,
            notes=notes,
        )
        if approved and approval is not None:
            guard.finishing = approved
            guard.finish_delete = [approval.path]
            if held:
                guard.finish_write = {record_path: held_record(held)}
            elif record_blob is not None:
                guard.finish_delete.append(record_path)
        hint = (
            f"approve by committing {approval_file} on branch {target.branch} with "
            f"`{APPROVAL_KEY}: [<id>, ...]`, or run once with --allow-mass-delete; an empty or "
            "shrunken listing may also mean the control plane is misbehaving"
        )
        for dep_id in held:
            guard.held_outcomes.append(
                Outcome(
                    target=target.namespace,
                    namespace=target.namespace,
                    deployment_id=dep_id,
                    name=existing[dep_id].state.deployment_name,
                    action="refused",
                    error=(
                        f"deletion held by the mass-delete guard ({len(guarded)} of "
                        f"{len(existing)} deployments of target {target.namespace} would go; "
                        f"{hint})"
                    ),
                )
            )
        if self._changed((target.key, "held"), tuple(held)) and held:
            which = ", ".join(f"{existing[i].state.deployment_name} ({i})" for i in held)
            log.error(
                "target %s (%s): the mass-delete guard holds %d deletion(s) of %d deployments "
                "(more than %g%% and at least %d, or held before): %s; none of them is "
                "deleted until approved (%s)",
                target.namespace,
                target.repo,
                len(held),
                len(existing),
                policy.mass_delete_fraction * 100,
                policy.mass_delete_min,
                which,
                hint,
                extra={"target": target.namespace, "event": "deletions-held"},
            )
        return guard

    def _read_approval(
        self, repo: Repo, tree: Mapping[str, str], path: str, notes: list[str]
    ) -> _Approval | None:
        """The approval file at `path` (only there: one elsewhere approves nothing)."""
        blob = tree.get(path)
        if blob is None:
            return None
        last = repo.last_commit_for(path)
        if last is None:  # pragma: no cover - a file at the head has a commit
            return None
        sha, name, email, _subject = last
        author = f"{safe_text(name) or '?'} <{safe_text(email) or '?'}>"
        try:
            ids = parse_approval(self._read_small(repo, blob, MAX_APPROVAL_BYTES))
        except (ApprovalFileError, UntrustedInput) as e:
            notes.append(
                f"approval file {path} (commit {sha[:12]} by {author}) {e}; "
                "nothing is deleted on its word"
            )
            return None
        return _Approval(path=path, ids=ids, commit=sha, author=author)

    def _note_approval_result(
        self,
        target: Target,
        guard: _Guard,
        deleting: Collection[str],
        existing: dict[str, _Existing],
    ) -> None:
        """Approved ids the control plane still has are not deleted: say so."""
        for dep_id in sorted(guard.approved):
            if dep_id not in deleting:
                guard.notes.append(
                    f"approved deletion of {existing[dep_id].state.deployment_name!r} "
                    f"({dep_id}) is not made: the control plane does not confirm it is gone"
                )
        if guard.approval is not None and not any(i in guard.approved for i in deleting):
            guard.notes.append(
                f"approval file {guard.approval.path} is kept: none of its deletions was made "
                "this cycle"
            )

    def _changed(self, key: tuple[str, str], value: object) -> bool:
        """Whether `value` differs from what was last said under `key` (then remembered):
        held deletions and unmanaged deployments are logged once per change."""
        if self._said.get(key) == value:
            return False
        self._said[key] = value
        return True

    def _confirmed_gone(
        self, target: Target, to_delete: list[str], existing: dict[str, _Existing]
    ) -> list[str]:
        """The deployments of `to_delete` the control plane confirms are gone."""
        assert self.confirm_gone is not None
        try:
            gone = set(self.confirm_gone(to_delete))
        except ControlPlaneError as e:
            log.warning(
                "target %s: cannot confirm that %d deployment(s) missing from the listing "
                "are gone (%s); nothing is deleted this cycle",
                target.namespace,
                len(to_delete),
                e,
                extra={"target": target.namespace},
            )
            return []
        for dep_id in to_delete:
            if dep_id not in gone:
                name = existing[dep_id].state.deployment_name
                log.warning(
                    "deployment %r (%s) is missing from the listing but the control plane "
                    "still has it (the listing changed while paging?); its folder is kept",
                    name,
                    dep_id,
                    extra=deployment_extra(name, dep_id, target=target.namespace),
                )
        return [dep_id for dep_id in to_delete if dep_id in gone]

    # -- one deployment ---------------------------------------------------------

    def _plan_deployment(
        self,
        dep: Deployment,
        name: str,
        context: object,
        old: _Existing | None,
        folder_path: str,
    ) -> tuple[str, dict[str, bytes], DeploymentState] | None:
        """None when nothing changed; else (commit kind, folder files, new state)."""
        from bridge.policy import check_policy
        from bridge.rendering import RenderContext
        from bridge.rendering.rendering import input_fingerprint, render_deployment
        from bridge.secrets.digests import input_digest, secret_digest
        from bridge.secrets.escrow import generate_password, open_escrow, seal_escrow

        assert isinstance(context, RenderContext)
        key = self.settings.secrets.bridge_key
        sealer = self._get_sealer()
        sealed_for = sealer.sealed_for() if sealer is not None else "none"
        # A deployment equal to last cycle's, in the same context and folder, has
        # passed the policy and has the same fingerprint and digest: comparing
        # (~6 us) is cheaper than checking, encoding and HMAC-ing (~60 us), which
        # was most of an unchanged cycle. Not with free-form objects (volumes,
        # sidecars...): there `1 == 1.0 == True` in Python, though each renders
        # differently. Parsed numbers are normalized.
        spec = dep.resource_spec
        free_form = spec.volumes or spec.volume_mounts or spec.init_containers or spec.sidecars
        remembered = None if free_form else self._fingerprints.get(dep.id)
        if (
            remembered is not None
            and remembered.context is context
            and remembered.name == name
            and (remembered.deployment is dep or remembered.deployment == dep)
        ):
            fingerprint, digest = remembered.fingerprint, remembered.digest
        else:
            violations = check_policy(dep, self.settings.policy)
            if violations:
                raise violations[0]
            if dep.secrets and key is None:
                raise SecretsError(
                    "has secrets but no bridge key is configured",
                    deployment_id=dep.id,
                    deployment_name=dep.name,
                    hint=f"set {self.settings.secrets.bridge_key_env}",
                )
            fingerprint = input_fingerprint(dep, context)
            secret_part = b"".join(
                f"{s.name}\0".encode() + self._value_digest(key, s.value).encode() + b"\0"
                for s in sorted(dep.secrets, key=lambda s: s.name)
            )
            digest = input_digest(
                key,
                b"render-schema:%d\0name:%s\0" % (RENDER_SCHEMA, name.encode())
                + fingerprint
                + b"\0secrets\0"
                + secret_part,
            )
        if not free_form:
            self._fingerprints_next[dep.id] = _Remembered(dep, context, name, fingerprint, digest)
        if old is not None and old.folder == name and old.state.input_digest == digest:
            drift = self._drifted(old)
            resealed = self.force_reseal or any(
                rec.sealed_for != sealed_for for rec in old.state.secrets.values()
            )
            if not drift and not resealed:
                return None
            if drift and not resealed:
                self._check_deletable(dep, old, folder_path, keep=old.state.files)
                restored = self._restore_files(dep, old, folder_path)
                log.warning(
                    "manual edit in %s: %s (last commit by %s); restoring what the bridge "
                    "committed",
                    quote_path(folder_path),
                    _edited(old),
                    self._last_change(folder_path),
                    extra=deployment_extra(dep.name, dep.id, event="drift"),
                )
                return "restore", restored, old.state

        # Render (the only path that costs anything), once per cycle: a rejected
        # push re-plans on the new head, and if our folder there is as it was,
        # the plan is too. Re-rendering would widen the fetch-to-push window that
        # a busy committer keeps winning.
        plan_key = (
            dep.id,
            name,
            digest,
            sealed_for,
            (old.folder, old.state.to_bytes(), tuple(sorted(old.files.items()))) if old else None,
        )
        cached = self._plans.get(plan_key)
        if cached is not None:
            return cached
        password: Redacted | None = None
        escrow: dict[str, str] = {}
        if sealer is not None and key is not None:
            purpose = f"{ESCROW_POSTGRES}:{dep.id}"
            token = old.state.escrow.get(ESCROW_POSTGRES) if old is not None else None
            if token is not None:
                try:
                    password = open_escrow(key, purpose, token)
                except ValueError as e:
                    raise SecretsError(
                        f"cannot read back the Postgres password from the repo: {e}",
                        deployment_id=dep.id,
                        deployment_name=dep.name,
                        hint="the bridge key changed; restore the previous key "
                        f"({self.settings.secrets.bridge_key_env}) — a new password would lock "
                        "the agent server out of its existing database",
                    ) from None
                escrow[ESCROW_POSTGRES] = token
            else:
                password = generate_password()
                escrow[ESCROW_POSTGRES] = seal_escrow(key, purpose, password)
        elif old is not None:
            # Provider none renders no password, but the escrow of an earlier one
            # must survive: switching back must not lock the agent out of its DB.
            escrow = dict(old.state.escrow)
        rendered = render_deployment(dep, context, name=name, postgres_password=password)
        files: dict[str, bytes] = dict(rendered.files)
        records: dict[str, SecretRecord] = {}
        kind = "deploy"
        for plan in rendered.secrets:
            if sealer is None or key is None:
                raise SecretsError(
                    f"needs Secret {plan.name} but the secrets provider is none",
                    deployment_id=dep.id,
                    deployment_name=dep.name,
                    hint="configure secrets.provider sops or sealed-secrets",
                )
            size = sum(len(k.encode()) + len(v.reveal().encode()) for k, v in plan.data)
            if size > SECRET_MAX_BYTES:
                # The API server refuses it, and Flux applies a namespace all or
                # nothing: one oversized Secret would block every deployment in it.
                raise SecretsError(
                    f"Secret {plan.name} would hold {size} bytes of keys and values; "
                    f"Kubernetes stores at most {SECRET_MAX_BYTES} (1 MiB) per Secret",
                    deployment_id=dep.id,
                    deployment_name=dep.name,
                    hint="shrink the values in LangSmith, or keep large ones in a Secret "
                    "you manage and use secret_references",
                )
            plan_digest = secret_digest(key, plan)
            record = old.state.secrets.get(plan.file) if old is not None else None
            old_blob = old.files.get(plan.file) if old is not None else None
            if (
                not self.force_reseal
                and record is not None
                and old_blob is not None
                and record.digest == plan_digest
                and record.sealed_for == sealed_for
                # Only what the bridge sealed: a hand-edited file is sealed afresh.
                and old is not None
                and old_blob == old.state.files.get(plan.file)
            ):
                files[plan.file] = self._read_blob(old_blob)
            else:
                try:
                    files[plan.file] = sealer.seal(plan)
                except SecretsError as e:
                    # The provider names the Secret's folder; say the deployment's own name.
                    raise SecretsError(
                        e.message, deployment_id=dep.id, deployment_name=dep.name, hint=e.hint
                    ) from None
                except Exception as e:
                    raise SecretsError(
                        f"sealing {plan.file} failed: {type(e).__name__}",
                        deployment_id=dep.id,
                        deployment_name=dep.name,
                    ) from None
            records[plan.file] = SecretRecord(digest=plan_digest, sealed_for=sealed_for)
        if (
            old is not None
            and old.folder == name
            and old.state.input_digest == digest
            and not self._drifted(old)
        ):
            kind = "rekey"
        state = DeploymentState(
            deployment_id=dep.id,
            deployment_name=name,
            namespace=dep.namespace or "",
            cluster=context.cluster,
            listener_id=context.listener.id,
            revision_id=dep.revision_id,
            image=dep.image_uri,
            input_digest=digest,
            bridge_version=__version__,
            files={fname: blob_id(data) for fname, data in files.items()},
            secrets=records,
            escrow=escrow,
        )
        files[STATE_FILE] = state.to_bytes()
        if old is not None and old.folder == name:
            self._check_deletable(dep, old, folder_path, keep=files)
        self._plans[plan_key] = (kind, files, state)
        return kind, files, state

    # -- helpers ----------------------------------------------------------------

    def _validate(
        self, roots: dict[str, dict[str, bytes]], run: ValidationRun | None
    ) -> dict[str, list[str]]:
        """`self.validate`, skipping roots already validated this cycle with the same
        bytes; `run` has been given exactly those roots already, as they were rendered."""
        assert self.validate is not None
        keys = {path: _root_key(files) for path, files in roots.items()}
        todo = {p: f for p, f in roots.items() if (p, keys[p]) not in self._validated}
        if todo:
            found = run.results() if run is not None else self.validate(todo)
            for path in todo:
                self._validated[(path, keys[path])] = found.get(path, [])
        return {p: self._validated[(p, keys[p])] for p in roots if self._validated[(p, keys[p])]}

    def _value_digest(self, key: Redacted | None, value: Redacted) -> str:
        from bridge.secrets.digests import input_digest

        return input_digest(key, b"secret-value\0" + value.reveal().encode())

    def _get_sealer(self) -> Sealer | None:
        if not self._sealer_loaded:
            from bridge.secrets.providers import make_sealer

            self._sealer = make_sealer(self.settings.secrets)
            self._sealer_loaded = True
        return self._sealer

    def _read_blob(self, blob: str) -> bytes:
        repo = self._current_repo
        return repo.read_blob(blob)

    _current_repo: Repo

    def _existing_states(
        self, repo: Repo, tree: dict[str, str], ns_dir: str, head: str | None = None
    ) -> tuple[dict[str, _Existing], dict[str, str]]:
        """The deployments the tree holds, by id, and the folders whose state file
        cannot be trusted (folder -> why). Kept per namespace folder and head
        commit (content-addressed, so never stale): when the branch did not move,
        the next cycle skips sorting 10,000 files into folders (12 % of an
        unchanged cycle at 10,000 deployments)."""
        self._current_repo = repo
        cached = self._existing_cache.get(ns_dir)
        if head is not None and cached is not None and cached[0] == head:
            self._states_seen.update(cached[2])
            return cached[1], cached[3]
        existing, state_blobs, unreadable = self._read_existing(repo, tree, ns_dir)
        if head is not None:
            self._existing_cache[ns_dir] = (head, existing, state_blobs, unreadable)
        else:
            self._existing_cache.pop(ns_dir, None)
        return existing, unreadable

    def _read_existing(
        self, repo: Repo, tree: dict[str, str], ns_dir: str
    ) -> tuple[dict[str, _Existing], list[str], dict[str, str]]:
        state_blobs: list[str] = []
        folders: dict[str, dict[str, str]] = {}
        prefix = ns_dir + "/"
        for path, blob in tree.items():
            rel = path[len(prefix) :] if path.startswith(prefix) else path
            parts = rel.split("/", 1)
            if len(parts) == 2:
                folders.setdefault(parts[0], {})[parts[1]] = blob
        existing: dict[str, _Existing] = {}
        # A folder whose state file is broken (pushed by anyone: nested, oversized,
        # naming paths outside its folder, not a file) is left as it is: never
        # written, never deleted, still listed in the namespace kustomization. Its
        # deployment fails by name until someone restores the file (README,
        # Failure modes); guessing could lose its escrowed Postgres password.
        unreadable: dict[str, str] = {}
        unread = [
            state_id
            for files in folders.values()
            if (state_id := files.get(STATE_FILE)) is not None and state_id not in self._state_cache
        ]
        read = repo.read_blobs(unread, max_bytes=MAX_STATE_BYTES) if unread else {}
        for folder, files in sorted(folders.items()):
            state_blob = files.get(STATE_FILE)
            if state_blob is None:
                continue
            state = self._state_cache.get(state_blob)
            if state is None:
                try:
                    data = read.get(state_blob)
                    if data is None:
                        raise UntrustedInput(self._unread_why(repo, state_blob, MAX_STATE_BYTES))
                    state = DeploymentState.from_bytes(data)
                    check_repo_path(prefix + folder, listed=True)
                except ValueError as e:
                    path = f"{prefix}{folder}/{STATE_FILE}"
                    unreadable[folder] = f"state file {self._shown(repo, path)}: {_detail(e)}"
                    continue
                if len(self._state_cache) > 100_000:
                    self._state_cache.clear()
                self._state_cache[state_blob] = state
            self._states_seen.add(state_blob)
            state_blobs.append(state_blob)
            other = {f: b for f, b in files.items() if f != STATE_FILE}
            if state.deployment_id in existing:
                log.warning(
                    "two folders claim deployment %s: %s and %s; keeping the first",
                    state.deployment_id,
                    quote_path(existing[state.deployment_id].folder),
                    quote_path(folder),
                )
                continue
            existing[state.deployment_id] = _Existing(folder=folder, state=state, files=other)
        return existing, state_blobs, unreadable

    def _read_small(self, repo: Repo, entry: str, max_bytes: int) -> bytes:
        """The bytes of a listing entry that must be a file of at most `max_bytes`
        (an approval, the held record): sized before it is read, never read
        otherwise. UntrustedInput says why ("is a symlink, not a file", ...)."""
        data = repo.read_blobs([entry], max_bytes=max_bytes).get(entry)
        if data is None:
            raise UntrustedInput(self._unread_why(repo, entry, max_bytes))
        return data

    def _report_unreadable(
        self, target: Target, unreadable: Mapping[str, str], listed_folders: Collection[str]
    ) -> None:
        """A broken state file in the folder of a listed deployment fails that
        deployment (every cycle, by name); one in any other folder is told here,
        once per change."""
        alone = sorted(why for f, why in unreadable.items() if f not in listed_folders)
        if self._changed((target.key, "unreadable"), tuple(alone)):
            for why in alone:
                log.error(
                    "target %s: %s; the bridge leaves its folder as it is (%s)",
                    target.namespace,
                    why,
                    _UNREADABLE_HINT,
                    extra={"target": target.namespace, "event": "unreadable-state"},
                )

    def _unread_why(self, repo: Repo, entry: str, max_bytes: int) -> str:
        """Why a bounded read left `entry` (a listing entry) out."""
        kind = entry_kind(entry)
        if kind is not None:
            return f"is {kind}, not a file"
        size = repo.blob_sizes([entry], missing_ok=True).get(entry)
        if size is None:
            return "is not a file in the repository"
        return f"is {size} bytes; at most {max_bytes} are read"

    def _shown(self, repo: Repo, path: str) -> str:
        """`path` (quoted as git would) and the commit that last changed it."""
        last = repo.last_commit_for(path)
        if last is None:
            return quote_path(path)
        sha, name, email, _subject = last
        return (
            f"{quote_path(path)} (last changed in commit {sha[:12]} by "
            f"{safe_text(name) or '?'} <{safe_text(email) or '?'}>)"
        )

    @staticmethod
    def _drifted(old: _Existing) -> bool:
        # Listing entries name anything but a regular file as "<mode> <id>", so
        # this one comparison also finds symlinks, executables and gitlinks.
        recorded = {k: v for k, v in old.state.files.items() if k != STATE_FILE}
        return recorded != old.files

    def _restore_files(self, dep: Deployment, old: _Existing, folder_path: str) -> dict[str, bytes]:
        """The folder's files as the state file records them. Its blob ids come
        from a file anyone may have edited: each is read only if it is a blob of
        the repo of at most FILE_MAX_BYTES."""
        wanted = {f: b for f, b in old.state.files.items() if f != STATE_FILE}
        read = self._current_repo.read_blobs(
            list(wanted.values()), max_bytes=FILE_MAX_BYTES, missing_ok=True
        )
        lost = sorted(f for f, b in wanted.items() if b not in read)
        if lost:
            state_path = f"{folder_path}/{STATE_FILE}"
            raise DeploymentError(
                f"cannot restore {quote_path(folder_path)}: its state file "
                f"{self._shown(self._current_repo, state_path)} records "
                f"{', '.join(repr(f) for f in lost[:5])} as blob(s) that "
                f"{self._unread_why(self._current_repo, wanted[lost[0]], FILE_MAX_BYTES)}",
                deployment_id=dep.id,
                deployment_name=dep.name,
                hint=f"{_UNREADABLE_HINT}; if the bridge's own last commit of the folder records "
                "those blobs, the local clone is damaged: delete it from git.workdir and the "
                "bridge clones it again",
            )
        files = {fname: read[blob] for fname, blob in wanted.items()}
        files[STATE_FILE] = old.state.to_bytes()
        return files

    def _check_deletable(
        self, dep: Deployment, old: _Existing, folder_path: str, keep: Mapping[str, object]
    ) -> None:
        """DeploymentError when an entry of the folder that this plan removes has a
        name git cannot put in an index (".", "..", ".git": anyone who can push
        may have made one with plumbing); other names, newlines and backslashes
        included, are removed like any file."""
        for fname in sorted(old.files):
            if fname in keep:
                continue
            path = f"{folder_path}/{fname}"
            try:
                check_repo_path(path, listed=True)
            except ValueError:
                raise DeploymentError(
                    f"its folder holds {self._shown(self._current_repo, path)}, a name the "
                    "bridge cannot remove; nothing of the deployment is committed",
                    deployment_id=dep.id,
                    deployment_name=dep.name,
                    hint="remove that entry from the branch with a commit of your own",
                ) from None

    def _last_change(self, path: str) -> str:
        last = self._current_repo.last_commit_for(path)
        if last is None:
            return "unknown"
        return f"{safe_text(last[1]) or '?'} <{safe_text(last[2]) or '?'}> in {last[0][:12]}"

    def _diff(
        self,
        repo: Repo,
        tree: dict[str, str],
        write: Mapping[str, bytes],
        delete: Sequence[str],
        kind: str,
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
            old = repo.read_blob(old_blob) if old_blob else b""
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


def unmanaged_messages(
    listener: Listener, by_namespace: Mapping[str, Sequence[Deployment]], settings: Settings
) -> list[str]:
    """One message per namespace whose deployments the bridge will not manage,
    naming each deployment and id, with advice that can actually help."""
    messages = []
    allowed = ", ".join(repr(n) for n in sorted(listener.namespaces)) or "none"
    for namespace in sorted(by_namespace):
        if settings.target_for(namespace) is not None:
            continue
        deps = sorted(by_namespace[namespace], key=lambda d: (d.name, d.id))
        which = ", ".join(f"{d.name!r} ({d.id})" for d in deps)
        shown = repr(namespace) if namespace else "<none>"
        if namespace not in listener.namespaces:
            messages.append(
                f"deployment(s) {which} in namespace {shown}, which is not one of the "
                f"listener's namespaces ({allowed}): not managed (move them to one of those "
                "namespaces in LangSmith, or add the namespace to the listener)"
            )
        else:
            messages.append(
                f"deployment(s) {which} in namespace {shown} of the listener have no target "
                f"in the config: skipped (add a target for namespace {shown})"
            )
    return messages


def invalid_as_failed(errors: Iterable[DeploymentError]) -> list[Outcome]:
    """Records the control plane sent but we could not parse: failed, never deleted."""
    return [
        Outcome(
            target="-",
            namespace="-",
            deployment_id=e.deployment_id,
            name=e.deployment_name,
            action="failed",
            error=str(e),
        )
        for e in errors
    ]
