"""Commit statuses on the forge, read for the health read-back (`health.forgeStatuses`).

Owns the wiring of bridge.health.forgestatus for `run`: a forge client per
pull-request target (its own, on the process's `ForgeHosts`, so that its
reads wait on the same rate-limit block and count in the same quota as the
pull requests' calls), which commits to ask (the target's clone: the
branch's first parents from its head), and when not to ask at all:

- every deployment known healthy: the head once per `IDLE_EVERY`;
- the forge told us to wait (the host is blocked), or its primary quota is
  below `QUOTA_RESERVE`: the pull requests need it more; nothing is asked
  and the last word stands.

A forge that fails makes `forge-status` unreachable for that target only
(said once, in the log, /metrics and `status`); the loop never sees it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bridge.commands.forging import make_forge, pull_request_targets
from bridge.config import Settings, Target
from bridge.errors import BridgeError
from bridge.health.forgestatus import (
    MAX_COMMITS,
    SOURCE,
    ForgeStatusReader,
    StatusLike,
    commits_to_ask,
)
from bridge.health.observations import ObservationStore
from bridge.publishing.lineage import CloneLineage

log = logging.getLogger("bridge.health")

CHAIN = 20  # first-parent commits looked at to find the oldest wanted one
QUOTA_RESERVE = 200  # primary requests left for the pull requests themselves


class ForgeStatuses:
    def __init__(
        self,
        settings: Settings,
        store: ObservationStore,
        *,
        hosts: Any = None,
        forges: Mapping[str, Any] | None = None,
        clock: Any = None,
    ) -> None:
        from bridge.forges import ForgeHosts

        self.hosts = hosts or ForgeHosts()
        targets = pull_request_targets(settings)
        # Credentials are read now: a missing token is a configuration error at start.
        self.forges: dict[str, Any] = (
            dict(forges)
            if forges is not None
            else {t.key: make_forge(t, self.hosts) for t in targets}
        )
        kwargs = {"clock": clock} if clock is not None else {}
        self.reader = ForgeStatusReader(store, **kwargs)
        # Per target: the commits of deployments not yet known synced and
        # healthy (None: not assessed yet, so every recent commit matters).
        self.wanted: dict[str, set[str] | None] = {}
        self.skipped: dict[str, str] = {}  # target -> why nothing was asked

    def has(self, target: Target) -> bool:
        return target.key in self.forges

    def new_cycle(self) -> None:
        self.reader.new_cycle()

    def read(self, target: Target, lineage: CloneLineage) -> str | None:
        """Read the target's statuses into the store; the problem, or None."""
        forge = self.forges.get(target.key)
        if forge is None:
            return None
        head = lineage.head()
        chain = lineage.first_parents(head, CHAIN) if head else []
        wanted = self.wanted.get(target.key)
        idle = wanted is not None and not wanted
        if not self.reader.due(target.key, idle=idle):
            return self._last_error(target)
        busy = self._busy(forge)
        if busy is not None:
            self.skipped[target.key] = busy
            return self._last_error(target)
        self.skipped.pop(target.key, None)
        commits = commits_to_ask(chain, chain if wanted is None else wanted, limit=MAX_COMMITS)

        def statuses(sha: str) -> Sequence[StatusLike]:
            found: Sequence[StatusLike] = forge.commit_statuses(sha)
            return found

        reading = self.reader.read_target(
            target.key, commits, statuses, branch=target.branch, idle=idle
        )
        return reading.error

    def assessed(self, target: Target, unsettled: Iterable[str | None]) -> None:
        """The commits of the target's deployments that are not yet synced and healthy."""
        self.wanted[target.key] = {sha for sha in unsettled if sha}

    def reachable(self) -> bool:
        return not self.reader.unreachable()

    def _last_error(self, target: Target) -> str | None:
        return self.reader.unreachable().get(target.key)

    def _busy(self, forge: Any) -> str | None:
        """Why not to spend a read on this forge now, or None."""
        try:
            quota = forge.quota()
        except (BridgeError, AttributeError):
            return None
        if quota.blocked_until is not None and quota.blocked_until > self.hosts.clock.time():
            return f"the forge asked to wait (rate limit) until {quota.blocked_until:.0f}"
        if quota.remaining is not None and quota.remaining < QUOTA_RESERVE:
            return f"{quota.remaining} requests left of the forge's quota, kept for pull requests"
        return None

    def close(self) -> None:
        for forge in self.forges.values():
            forge.close()


__all__ = ["SOURCE", "ForgeStatuses"]
