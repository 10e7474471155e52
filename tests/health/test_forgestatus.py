"""Commit statuses as a health source: contexts, states, the commits asked,
bounds on hostile answers, and a failing forge confined to its target.
(End to end against the test forges: tests/pullrequests/test_forge_health.py.)"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from bridge.errors import BridgeError
from bridge.health.forgestatus import (
    MAX_REASON,
    MAX_STATUSES,
    SOURCE,
    ForgeStatusReader,
    commits_to_ask,
    parse_context,
    status_observation,
)
from bridge.health.observations import ObservationStore

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SHA1, SHA2, SHA3 = "1" * 40, "2" * 40, "3" * 40


@dataclass(frozen=True)
class St:
    context: str
    state: str
    description: str = ""
    updated_at: datetime | None = NOW - timedelta(minutes=1)


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        (
            "kustomization/langsmith-test-agents-alpha/0a1b2c3d",
            ("flux", "flux-system/langsmith-test-agents-alpha"),
        ),
        ("continuous-delivery/test-agents-alpha", ("argocd", "argocd/test-agents-alpha")),
        ("argocd/test-agents-alpha", ("argocd", "argocd/test-agents-alpha")),
        ("helmrelease/podinfo/0a1b2c3d", None),  # not what the bridge writes
        ("gitrepository/flux-system/0a1b2c3d", None),
        ("ci/build", None),
        ("kustomization/UPPER/0a1b2c3d", None),
        ("kustomization/../../etc/0a1b2c3d", None),
        ("kustomization/a\u202eb/0a1b2c3d", None),
        ("continuous-delivery/" + "a" * 300, None),
        ("", None),
    ],
)
def test_contexts_read(context: str, expected: tuple[str, str] | None) -> None:
    assert parse_context(context) == expected


def test_non_strings_are_no_context() -> None:
    assert parse_context(None) is None and parse_context(42) is None


@pytest.mark.parametrize(
    ("state", "description", "status", "applied"),
    [
        ("success", "reconciliation succeeded", "healthy", True),
        ("failure", "health check failed", "degraded", True),  # applied, then unhealthy
        ("failure", "build failed", "degraded", False),  # nothing applied
        ("error", "", "degraded", False),
        ("pending", "", "progressing", False),
        ("weird", "", None, False),
    ],
)
def test_flux_states(state: str, description: str, status: str | None, applied: bool) -> None:
    obs = status_observation(
        St("kustomization/a/0a1b2c3d", state, description), SHA1, branch="main", now=NOW
    )
    if status is None:
        assert obs is None
        return
    assert obs is not None
    assert (obs.source, obs.status, obs.applied) == (SOURCE, status, SHA1 if applied else None)
    assert obs.scope is not None and (obs.scope.branch, obs.scope.path) == ("main", None)


def test_argocd_sync_failure_applied_nothing() -> None:
    failed = status_observation(
        St("continuous-delivery/app", "failure", "sync failed"), SHA1, branch="main", now=NOW
    )
    degraded = status_observation(
        St("continuous-delivery/app", "failure", "health degraded"), SHA1, branch="main", now=NOW
    )
    assert failed is not None and failed.applied is None
    assert degraded is not None and degraded.applied == SHA1


def test_hostile_values_are_cut_and_times_held() -> None:
    future = NOW + timedelta(days=3650)
    obs = status_observation(
        St("kustomization/a/0a1b2c3d", "success", "x\u202e\x00" * 50_000, future),
        SHA1,
        branch="main",
        now=NOW,
    )
    assert obs is not None
    assert obs.at == NOW  # a future time would make every later word a "replay"
    assert len(obs.reason) <= MAX_REASON + 80 and "\u202e" not in obs.reason
    naive = status_observation(
        St("kustomization/a/0a1b2c3d", "success", "", datetime(2026, 1, 1)),
        SHA1,
        branch="main",
        now=NOW,
    )
    assert naive is not None and naive.at == NOW
    assert (
        status_observation(St("kustomization/a/0a1b2c3d", "success"), "HEAD", branch=None, now=NOW)
        is None
    )


def test_commits_asked() -> None:
    chain = [f"{i:040x}" for i in range(10)]
    assert commits_to_ask([], {chain[0]}) == []
    assert commits_to_ask(chain, set()) == chain[:1]  # all healthy: the head only
    assert commits_to_ask(chain, {chain[2]}) == chain[:3]
    assert commits_to_ask(chain, {chain[1], chain[8]}, limit=4) == chain[:4]
    assert commits_to_ask(chain, {"f" * 40}, limit=4) == chain[:4]  # beyond the walk


def reader(store: ObservationStore, **kw: object) -> ForgeStatusReader:
    return ForgeStatusReader(store, clock=lambda: NOW, **kw)  # type: ignore[arg-type]


def test_newest_commit_wins_and_later_statuses_of_one_context() -> None:
    store = ObservationStore(clock=lambda: NOW)
    statuses = {
        SHA1: [St("kustomization/a/0a1b2c3d", "success")],
        SHA2: [
            St("kustomization/a/0a1b2c3d", "pending", updated_at=NOW - timedelta(seconds=120)),
            St("kustomization/a/0a1b2c3d", "failure", "health check failed"),
        ],
    }
    r = reader(store)
    got = r.read_target("t", [SHA2, SHA1], lambda sha: statuses[sha], branch="main")
    assert got.error is None and got.asked == [SHA2, SHA1]
    (obs,) = store.snapshot()
    assert (obs.status, obs.applied) == ("degraded", SHA2)


def test_a_failing_forge_is_unreachable_for_its_target_only() -> None:
    store = ObservationStore(clock=lambda: NOW)
    r = reader(store)

    def broken(sha: str) -> Sequence[St]:
        raise BridgeError("GitHub answered HTTP 401 for GET statuses")

    def crashing(sha: str) -> Sequence[St]:
        raise RuntimeError("a bug")

    def fine(sha: str) -> Sequence[St]:
        return [St("kustomization/b/0a1b2c3d", "success")]

    assert "401" in (r.read_target("one", [SHA1], broken, branch="main").error or "")
    assert "RuntimeError" in (r.read_target("two", [SHA1], crashing, branch="main").error or "")
    assert r.read_target("three", [SHA1], fine, branch="main").error is None
    assert set(r.unreachable()) == {"one", "two"}
    assert [o.object for o in store.snapshot()] == ["flux-system/b"]
    # It works again: no longer unreachable.
    r.read_target("one", [SHA1], fine, branch="main")
    assert set(r.unreachable()) == {"two"}


def test_calls_are_capped_per_cycle_and_statuses_per_commit() -> None:
    store = ObservationStore(clock=lambda: NOW)
    r = reader(store, per_cycle=3)
    asked: list[str] = []
    many = [St(f"kustomization/k{i}/0a1b2c3d", "success") for i in range(MAX_STATUSES + 500)]

    def read(sha: str) -> Sequence[St]:
        asked.append(sha)
        return many

    first = r.read_target("a", [SHA1, SHA2], read, branch="main")
    r.read_target("b", [SHA1, SHA2, SHA3], read, branch="main")
    assert len(asked) == 3  # the cap holds across targets
    assert first.recorded == MAX_STATUSES and first.ignored >= 500
    assert len(store) == MAX_STATUSES
    r.new_cycle()
    r.read_target("b", [SHA3], read, branch="main")
    assert len(asked) == 4


def test_idle_targets_are_asked_once_per_interval() -> None:
    now = [NOW]
    r = ForgeStatusReader(ObservationStore(), clock=lambda: now[0], idle_every=timedelta(minutes=5))
    assert r.due("t", idle=False) and r.due("t", idle=True)
    r.read_target("t", [SHA1], lambda sha: [], branch="main", idle=True)
    assert not r.due("t", idle=True) and r.due("t", idle=False)
    now[0] += timedelta(minutes=5)
    assert r.due("t", idle=True)
