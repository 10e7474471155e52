"""The pull-request publisher (SPEC §6a): a target's plans proposed in pull
requests on its forge instead of pushed to its branch.

    open()     fetch the base (the branch Argo CD / Flux sync, with push mode's
               force-push protection) and every head branch of the bridge's;
               the tree to plan on is the base's: what the cluster runs
    publish()  split the plan: one rolling pull request for the target (or one
               per deployment), and one of their own for the deletions the
               mass-delete guard holds; roll each (bridge.publishing.pullrequest.
               rolling); the plan gets back each change's commit on its head

Git goes through the target's one clone and the same writer, signer and
pusher as push mode; git over HTTPS authenticates with the forge's token
(the askpass transport, never a URL). Planning and the guard do not change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from bridge.config import PullRequestSettings
from bridge.errors import GitError
from bridge.forges import Forge, PullRequest
from bridge.forges.texts import PullTexts
from bridge.formats.approvals import APPROVAL_KEY, approval_path
from bridge.formats.objects import blob_id
from bridge.formats.state import MAX_STATE_BYTES, STATE_FILE, DeploymentState
from bridge.publishing.publisher import RepoView
from bridge.publishing.pullrequest.branches import HeadBranches
from bridge.publishing.pullrequest.describing import Link, change_texts, held_texts
from bridge.publishing.pullrequest.ownership import Layout, approval_message
from bridge.publishing.pullrequest.proposal import Commit, Proposal, Stepper, desired
from bridge.publishing.pullrequest.pulls import PullDesk
from bridge.publishing.pullrequest.rolling import Goal, Paused, Rolled, Roller
from bridge.publishing.repo import TargetRepo
from bridge.publishing.writing import CommitWriter
from bridge.reconcile.outcomes import PullReport
from bridge.reconcile.plans import Change, Plan, Published, TreeView

log = logging.getLogger("bridge.publishing")

HELD_SUFFIX = ".held-deletions"


class PullRequestPublisher:
    """Publishes one target's plans as pull requests (`publish.mode: pull-request`)."""

    def __init__(
        self,
        repo: TargetRepo,
        forge: Forge,
        settings: PullRequestSettings,
        *,
        clock: Callable[[], float],
        link: Link = lambda _id: None,
        on_merged: Callable[[PullRequest], None] | None = None,
    ) -> None:
        self.repo = repo
        self.forge = forge
        self.settings = settings
        self.target = repo.target
        self.link = link
        self.on_merged = on_merged
        self.head = settings.head_branch
        self.held_branch = self.head + HELD_SUFFIX
        repo.clone.transport.use_credentials(
            forge.git_credentials,
            origin=f"publish.pullRequest.auth of target {self.target.namespace}",
        )
        self.branches = HeadBranches(repo.clone, self.head)
        self.desk = PullDesk(
            forge, settings, base=self.target.branch, target=self.target.namespace, clock=clock
        )
        self._writers: dict[str, CommitWriter] = {}
        self.roller = Roller(
            self.branches,
            self.desk,
            self._writer,
            base=self.target.branch,
            email=repo.clone.settings.author_email,
            target=self.target.namespace,
        )
        self._base: str | None = None

    # -- the Publisher seam ------------------------------------------------------------

    def open(self) -> TreeView:
        """The base, fetched (a force-push of it stops the target, as in push mode),
        and the bridge's head branches."""
        self._base = self.repo.sync()
        self.branches.fetch()
        return RepoView(self.repo, self._base)

    def publish(self, plan: Plan) -> Published:
        base = self._base
        ns = self.target.namespace
        if base is None:
            if not plan.changes:
                return Published(shas=[], pushed=False, pulls=[])
            raise GitError(
                f"target {ns}: branch {self.target.branch} does not exist on "
                f"{self.repo.transport.display_url}; a pull request needs a base to merge into",
                hint=f"create {self.target.branch} (one commit is enough, e.g. a README), or "
                "publish the first deployments with publish.mode: push",
            )
        goals, positions = self._goals(plan, base)
        if self.repo.signer.enabled and any(g.texts is not None for g in goals):
            self.repo.check_signing()  # an unusable key means no commit at all
        shas: list[str | None] = [None] * len(plan.changes)
        pushed = False
        reports: list[PullReport] = []
        for goal, where in zip(goals, positions, strict=True):
            rolled = self.roller.roll(goal, base)
            for index, sha in zip(where, rolled.shas, strict=False):
                shas[index] = sha
            pushed = pushed or rolled.pushed
            reports.append(rolled.report)
            self._merged(rolled)
        return Published(shas=shas, pushed=pushed, pulls=reports)

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        self.branches.release()
        self.repo.close()

    # -- goals ----------------------------------------------------------------------------

    def _goals(self, plan: Plan, base: str) -> tuple[list[Goal], list[list[int]]]:
        """The pull requests this plan makes: each with the plan positions of its changes."""
        proposals = self._proposals(plan)
        base_tree = self.repo.ls_tree("")
        stepper_for: dict[str, Stepper] = {}
        goals: list[Goal] = []
        positions: list[list[int]] = []
        for proposal in proposals:
            changes = [c for _, c in proposal.changes]
            layout = _layout_of(self.target.path, changes)
            goals.append(self._change_goal(proposal, changes, layout, base_tree, stepper_for))
            positions.append([i for i, _ in proposal.changes])
        held = self._held_goal(plan, base_tree)
        if held is not None:
            goals.append(held)
            positions.append([])
        return goals, positions

    def _proposals(self, plan: Plan) -> list[Proposal]:
        indexed = list(enumerate(plan.changes))
        if self.settings.granularity == "target":
            return [Proposal(branch=self.head, changes=indexed)]
        by_folder: dict[str, Proposal] = {}
        for index, change in indexed:
            folder = change.info.name
            found = by_folder.setdefault(
                folder, Proposal(branch=f"{self.head}/{folder}", folder=folder)
            )
            found.changes.append((index, change))
        # Heads of deployments with nothing to propose now: their pull requests close.
        for branch in self.branches.remote:
            folder = branch.removeprefix(self.head + "/")
            if branch.startswith(self.head + "/") and folder not in by_folder:
                by_folder[folder] = Proposal(branch=branch, folder=folder)
        return [by_folder[k] for k in sorted(by_folder)]

    def _change_goal(
        self,
        proposal: Proposal,
        changes: list[Change],
        layout: Layout | None,
        base_tree: Mapping[str, str],
        stepper_for: dict[str, Stepper],
    ) -> Goal:
        if not changes or layout is None:
            return Goal("changes", proposal.branch, None, None, lambda _t: ([], []), [])
        want = desired(
            layout, base_tree, changes, recount=self.settings.granularity == "deployment"
        )
        stepper = stepper_for.get(layout.ns_dir)
        if stepper is None:
            stepper = stepper_for[layout.ns_dir] = Stepper(layout, base_tree, self._read)
        first = changes[0].info

        def texts(paused: Paused | None) -> PullTexts:
            return change_texts(
                changes,
                cluster=first.cluster,
                namespace=first.namespace,
                link=self.link,
                paused=paused,
            )

        return Goal(
            kind="changes",
            branch=proposal.branch,
            layout=layout,
            texts=texts,
            commits=lambda head_tree: stepper.commits(head_tree, want, changes),
            deployments=[c.info.deployment_id for c in changes],
        )

    def _held_goal(self, plan: Plan, base_tree: Mapping[str, str]) -> Goal | None:
        """The pull request of the deletions the guard holds: it commits the approval
        file listing them, so that its merge is the approval (the guard reads it
        on the base next cycle and lets exactly those go)."""
        held = sorted(plan.held)
        if not held:
            return Goal("held-deletions", self.held_branch, None, None, lambda _t: ([], []), [])
        layout = self._held_layout(base_tree, held)
        if layout is None:
            log.warning(
                "target %s: the folders of the held deletions are not on %s; no pull request "
                "for them this cycle",
                self.target.namespace,
                self.target.branch,
                extra={"target": self.target.namespace},
            )
            return None
        path = approval_path(layout.ns_dir)
        content = approval_file([dep_id for dep_id, _name in held])
        message = approval_message(layout.namespace, len(held))
        cluster = layout.ns_dir.split("/")[-2]

        def commits(head_tree: dict[str, str]) -> tuple[list[Commit], list[int | None]]:
            if head_tree.get(path) == blob_id(content):
                return [], []
            return [(message, {path: content}, [])], []

        def texts(paused: Paused | None) -> PullTexts:
            return held_texts(
                held,
                cluster=cluster,
                namespace=layout.namespace,
                base=self.target.branch,
                link=self.link,
                paused=paused,
            )

        return Goal(
            kind="held-deletions",
            branch=self.held_branch,
            layout=layout,
            texts=texts,
            commits=commits,
            deployments=[dep_id for dep_id, _name in held],
        )

    def _held_layout(
        self, base_tree: Mapping[str, str], held: Sequence[tuple[str, str]]
    ) -> Layout | None:
        """Where the held deployments are: their folders are on the base (a held
        deletion is of a folder the base has); their state files name them."""
        ns = self.target.namespace
        prefix = f"{self.target.path}/" if self.target.path else ""
        wanted = {dep_id for dep_id, _ in held}
        for path, blob in sorted(base_tree.items()):
            parts = path[len(prefix) :].split("/") if path.startswith(prefix) else []
            if len(parts) != 4 or parts[1] != ns or parts[3] != STATE_FILE:
                continue
            data = self._read([blob], MAX_STATE_BYTES).get(blob)
            try:
                state = DeploymentState.from_bytes(data) if data is not None else None
            except ValueError:
                continue
            if state is not None and state.deployment_id in wanted:
                return Layout.of(self.target.path, parts[0], ns)
        return None

    # -- parts --------------------------------------------------------------------------

    def _writer(self, branch: str) -> CommitWriter:
        writer = self._writers.get(branch)
        if writer is None:
            writer = self._writers[branch] = CommitWriter(
                self.branches.clone_for(branch), self.repo.signer
            )
        return writer

    def _read(self, blobs: Sequence[str], max_bytes: int) -> dict[str, bytes]:
        return self.repo.read_blobs(blobs, max_bytes=max_bytes, missing_ok=True)

    def _merged(self, rolled: Rolled) -> None:
        if rolled.merged is not None and self.on_merged is not None:
            self.on_merged(rolled.merged)


def approval_file(ids: Sequence[str]) -> bytes:
    """The approval file the held-deletions pull request commits
    (bridge.formats.approvals reads it back on the base)."""
    lines = [
        "# Written by langsmith-gitops-bridge in a pull request of its own: merging that",
        "# pull request approves these deletions, which the mass-delete guard holds.",
        f"{APPROVAL_KEY}:",
        *(f"- {dep_id}" for dep_id in sorted(set(ids))),
    ]
    return ("\n".join(lines) + "\n").encode()


def _layout_of(path: str, changes: Sequence[Change]) -> Layout | None:
    if not changes:
        return None
    info = changes[0].info
    return Layout.of(path, info.cluster, info.namespace)
