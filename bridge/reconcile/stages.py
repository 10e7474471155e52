"""One target's turn in a cycle: the stages in order, with their retries.

    view  = publisher.open()                  the target's tree, fetched
    draft = planner.draft_begin(view, ...)    planned; changed roots building
    draft = planner.draft_end(draft)          deploys, restores, rekeys; candidates
    decision = guard.decide(view, candidates) held or let go
    gone  = confirm_gone(decision.deletable)  the control plane's word, per id
    plan  = planner.finish(draft, decision, gone)
    publisher.publish(plan)                   commit, push

`begin`, `start` and `finish` split a target's turn twice. `begin` opens
the target and drafts it: its changed roots start building (Kustomize) and
are left to build while the cycle begins the next target, so that the builds
of targets with a few changes each run back to back on every core instead of
one target's at a time. `start` waits for them and hands the publish to one
other thread, so that the cycle plans the next target while this one's
commits are written and pushed. The planner is only ever used from the
cycle's thread, retries included.

A rejected push (someone else pushed first) opens the target again and
re-plans on the new head, with jittered backoff; never a force. A local clone
found damaged is cloned again and the target retried once in the same cycle;
a branch rewritten by force stops this target (HistoryRewritten, logged
critical) and the others go on. Plans and validations are reused within a
cycle, so a retry's fetch-to-push window stays short.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import TypeVar

from bridge.config import Settings, Target
from bridge.errors import (
    ControlPlaneError,
    GitError,
    HistoryRewritten,
    LocalCloneBroken,
    PushRejected,
)
from bridge.observability.logs import deployment_extra
from bridge.reconcile import diffing, guard
from bridge.reconcile.existing import Existing
from bridge.reconcile.guard import Candidates, Decision
from bridge.reconcile.listing import Listing
from bridge.reconcile.notices import Notices, OnEvent
from bridge.reconcile.outcomes import Outcome, TargetResult
from bridge.reconcile.planning import Draft, Planner
from bridge.reconcile.plans import Plan, Published, Publisher, TreeView

log = logging.getLogger("bridge.reconcile")

ConfirmGone = Callable[[Sequence[str]], Collection[str]]
_T = TypeVar("_T")

# A plan of more changes than this is published on the cycle's thread before
# the next target is planned. A small publish is mostly waiting for the remote
# (a round trip or more per push), which the next target's planning hides; a
# large one (a cold cycle: every deployment of the target) is git's CPU and
# memory (fast-import, pack-objects) beside the next target's `kubectl
# kustomize` builds, with nothing to hide on a busy machine. Overlapped, a cold
# cycle at 10,000 deployments peaked at 691-708 MB for the whole process tree
# against 544-622 MB, for no shorter cycle.
OVERLAP_MAX_CHANGES = 50


@dataclass(frozen=True)
class Begun:
    """A target opened and drafted on the cycle's thread, its roots building."""

    publisher: Publisher
    target: Target
    listing: Listing
    result: TargetResult
    view: TreeView
    draft: Draft
    changes: int  # how many deployments the draft plans to change, validation pending


@dataclass(frozen=True)
class Started:
    """A target planned on the cycle's thread, its publish under way elsewhere."""

    publisher: Publisher
    target: Target
    listing: Listing
    result: TargetResult
    plan: Plan
    published: Future[Published]


class TargetStages:
    """Runs the stages for one target at a time; shared by every target of a cycle."""

    def __init__(
        self,
        settings: Settings,
        planner: Planner,
        notices: Notices,
        *,
        on_event: OnEvent,
        confirm_gone: ConfirmGone | None,
        allow_mass_delete: bool,
        dry_run: bool,
        sleep: Callable[[float], None],
        rng: random.Random,
    ) -> None:
        self.settings = settings
        self.planner = planner
        self.notices = notices
        self.on_event = on_event
        # Asks the control plane whether deployments missing from a listing are
        # really gone (None: the listing's word is taken, e.g. in unit tests).
        self.confirm_gone = confirm_gone
        self.allow_mass_delete = allow_mass_delete
        self.dry_run = dry_run
        self.sleep = sleep
        self.rng = rng

    def begin(
        self,
        publisher: Publisher,
        target: Target,
        listing: Listing,
        result: TargetResult,
        first_open: Future[TreeView] | None,
    ) -> list[Outcome] | Begun:
        """Open and draft one target on the caller's thread; its roots build on
        while the caller goes on. Then `start` it (or drop it: `Planner.abandon`).
        The outcomes instead when a broken clone made the target start over, and
        it was planned and published here. Raises BridgeError for the target
        (the cycle records it and goes on with the others)."""
        return self._once_more(
            target,
            lambda: self._begin(publisher, target, listing, result, first_open),
            lambda: self._publish(publisher, target, listing, result, None),
        )

    def _begin(
        self,
        publisher: Publisher,
        target: Target,
        listing: Listing,
        result: TargetResult,
        first_open: Future[TreeView] | None,
    ) -> Begun:
        view = first_open.result() if first_open is not None else publisher.open()
        result.head = view.head
        draft = self._draft(view, target, listing)
        return Begun(publisher, target, listing, result, view, draft, len(draft.pending))

    @staticmethod
    def holds(begun: Begun) -> bool:
        """Whether the cycle may begin the next target before starting this one:
        not a large plan (a cold target), which is validated and published
        before the next target is begun, since overlapped, its git work and the
        next target's builds only share the cores and add up their memory."""
        return begun.changes <= OVERLAP_MAX_CHANGES

    def start(self, begun: Begun, publishing: Executor) -> list[Outcome] | Started:
        """Plan a begun target to the end (its validation waited for), and hand
        its first publish to `publishing` (one thread): the cycle plans the next
        target while this one's commits are written and pushed. The outcomes
        when that is all: nothing to publish (dry run), a plan of more than
        OVERLAP_MAX_CHANGES published here, or a broken clone that made the
        target start over; else `finish` it. Raises BridgeError for the target
        (the cycle records it and goes on with the others)."""
        return self._once_more(
            begun.target, lambda: self._start(begun, publishing), self._over_again(begun)
        )

    def finish(self, started: Started) -> list[Outcome]:
        """The outcomes of a target `start` handed over, once its publish is
        done. A rejected push is retried here, on the caller's thread:
        fetched, re-planned on the new head, after a backoff wait."""
        return self._once_more(
            started.target,
            lambda: self._settle(
                started.publisher,
                started.target,
                started.listing,
                started.result,
                started.plan,
                started.published.result,
            ),
            self._over_again(started),
        )

    def _over_again(self, turn: Begun | Started) -> Callable[[], list[Outcome]]:
        """The target's whole turn from a new open: what a broken clone falls back to."""
        return lambda: self._publish(turn.publisher, turn.target, turn.listing, turn.result, None)

    def _settle(
        self,
        publisher: Publisher,
        target: Target,
        listing: Listing,
        result: TargetResult,
        plan: Plan,
        published: Callable[[], Published],
    ) -> list[Outcome]:
        """The outcomes of a first attempt's publish; a rejected push is retried
        on this thread, on the new head."""
        try:
            done = published()
        except PushRejected:
            if not self._retrying(target, 0):
                raise
            return self._publish(publisher, target, listing, result, None, first_attempt=1)
        return self._done(plan, done, result)

    def _once_more(
        self,
        target: Target,
        first: Callable[[], list[Outcome] | _T],
        again: Callable[[], list[Outcome]],
    ) -> list[Outcome] | _T:
        try:
            return first()
        except LocalCloneBroken as e:
            # The writer has marked its clone: the next open() moves it aside and
            # clones again, so the cycle carries on instead of failing until the
            # next poll. Once: a second failure is not the clone's fault.
            log.warning(
                "target %s: %s; cloning again and retrying this target once",
                target.namespace,
                e,
                extra={"target": target.namespace},
            )
            return again()
        except GitError as e:
            if isinstance(e, HistoryRewritten):
                log.critical("%s", e, extra={"target": target.namespace})
            raise

    def _start(self, begun: Begun, publishing: Executor) -> list[Outcome] | Started:
        publisher, target, listing, result = (
            begun.publisher,
            begun.target,
            begun.listing,
            begun.result,
        )
        plan = self._drafted(begun.view, begun.draft, result)
        if self.dry_run:
            return plan.outcomes
        if len(plan.changes) > OVERLAP_MAX_CHANGES:
            return self._settle(
                publisher, target, listing, result, plan, lambda: publisher.publish(plan)
            )
        # Also a plan without changes: a pull request may have to be closed.
        return Started(
            publisher, target, listing, result, plan, publishing.submit(publisher.publish, plan)
        )

    def _publish(
        self,
        publisher: Publisher,
        target: Target,
        listing: Listing,
        result: TargetResult,
        first_open: Future[TreeView] | None,
        *,
        first_attempt: int = 0,
    ) -> list[Outcome]:
        """Open, plan, publish; a rejected push starts over on the new head.
        `first_open`: the first attempt's open(), already started."""
        attempts = max(1, self.settings.git.push_retries + 1)
        for attempt in range(first_attempt, attempts):
            if attempt == first_attempt and first_open is not None:
                view = first_open.result()  # raises what open() raised
            else:
                view = publisher.open()
            plan = self._planned(view, target, listing, result)
            if self.dry_run:
                return plan.outcomes
            try:
                # Also a plan without changes: a pull request may have to be closed.
                published = publisher.publish(plan)
            except PushRejected:
                if not self._retrying(target, attempt):
                    raise
                continue
            return self._done(plan, published, result)
        raise AssertionError("unreachable")  # pragma: no cover

    def _planned(
        self, view: TreeView, target: Target, listing: Listing, result: TargetResult
    ) -> Plan:
        result.head = view.head
        return self._drafted(view, self._draft(view, target, listing), result)

    def _drafted(self, view: TreeView, draft: Draft, result: TargetResult) -> Plan:
        plan = self.plan_drafted(view, draft)
        result.held, result.approval_notes = list(plan.held), list(plan.notes)
        return plan

    def _retrying(self, target: Target, attempt: int) -> bool:
        """After a rejected push: False on the last attempt, else True after a
        backoff wait."""
        self.on_event("push", {"target": target.namespace, "outcome": "rejected"})
        if attempt + 1 >= max(1, self.settings.git.push_retries + 1):
            return False
        delay = min(30.0, 0.5 * 2**attempt) * (0.5 + self.rng.random())
        log.info(
            "push to %s was rejected (someone else pushed); fetching and "
            "re-rendering on the new head in %.1fs",
            target.repo,
            delay,
            extra={"target": target.namespace},
        )
        self.sleep(delay)
        return True

    def _done(self, plan: Plan, published: Published, result: TargetResult) -> list[Outcome]:
        result.pulls = published.pulls
        if plan.changes:
            self._record(plan, published.shas, published.pushed, result)
        return plan.outcomes

    def plan(self, view: TreeView, target: Target, listing: Listing) -> Plan:
        """The stages before publishing: draft, guard, confirmation, finish."""
        return self.plan_drafted(view, self._draft(view, target, listing))

    def _draft(self, view: TreeView, target: Target, listing: Listing) -> Draft:
        return self.planner.draft_begin(
            view,
            target,
            listing.listener,
            listing.by_namespace.get(target.namespace, []),
            listing.unparsed_ids,
        )

    def plan_drafted(self, view: TreeView, begun: Draft) -> Plan:
        """`plan` from a draft whose validation is under way (`Planner.draft_begin`)."""
        draft = self.planner.draft_end(begun)
        target = draft.target
        decision = guard.decide(
            view, draft.candidates, self.settings.policy, allow_mass_delete=self.allow_mass_delete
        )
        gone = decision.deletable
        if gone and self.confirm_gone is not None:
            gone = self._confirmed_gone(target, gone, draft.existing)
        if decision.approval is not None:
            guard.note_confirmed(decision, gone, draft.existing)
        self._report_guard(draft.candidates, decision)
        plan = self.planner.finish(draft, decision, gone)
        if self.dry_run:
            diffing.describe(plan, view, draft.tree)
        return plan

    def _report_guard(self, candidates: Candidates, decision: Decision) -> None:
        """Held deletions and approval notes, logged once per change of each."""
        target = candidates.target
        ns = target.namespace
        if self.notices.changed((target.key, "held"), tuple(decision.held)) and decision.held:
            log.error(
                "%s",
                guard.held_message(candidates, decision, self.settings.policy),
                extra={"target": ns, "event": "deletions-held"},
            )
        if self.notices.changed((target.key, "approval-notes"), tuple(decision.notes)):
            for note in decision.notes:
                log.warning("target %s: %s", ns, note, extra={"target": ns})

    def _confirmed_gone(
        self, target: Target, to_delete: list[str], existing: Mapping[str, Existing]
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

    def _record(
        self, plan: Plan, shas: Sequence[str | None], pushed: bool, result: TargetResult
    ) -> None:
        """Commits into outcomes, events and log lines."""
        ns = plan.target.namespace
        committed = 0
        for change, sha in zip(plan.changes, shas, strict=True):
            change.outcome.commit = sha
            if sha is not None:
                committed += 1
                self.on_event("commit", {"target": ns, "kind": change.info.kind})
        result.pushed, result.commits = pushed, committed
        self.on_event("push", {"target": ns, "outcome": "ok" if pushed else "nothing"})
        for change in plan.changes:
            o = change.outcome
            log.info(
                "%s %s/%s -> %s",
                change.info.kind,
                o.namespace,
                o.name,
                (o.commit or "")[:12],
                extra=deployment_extra(o.name, o.deployment_id, target=ns),
            )
