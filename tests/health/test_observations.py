"""The observation store: one word per object, ordered by the source's time, bounded."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from bridge.health.folders import Scope
from bridge.health.observations import ObservationStore
from bridge.health.rules import Observation, Status

pytestmark = pytest.mark.quick
T0 = datetime(2026, 5, 1, 10, tzinfo=UTC)


def obs(
    name: str, status: Status, seconds: int, applied: str | None = "a" * 40, source: str = "argocd"
) -> Observation:
    return Observation(
        source=source,
        object=f"argocd/{name}",
        scope=Scope("git.example.com/p/r", "main", f"prod/agents/{name}"),
        applied=applied,
        status=status,
        at=T0 + timedelta(seconds=seconds),
    )


def test_since_moves_only_when_the_status_changes() -> None:
    store = ObservationStore()
    assert store.record(obs("a", "progressing", 0)) == "new"
    assert store.record(obs("a", "healthy", 10)) == "new"
    assert store.record(obs("a", "healthy", 20)) == "duplicate"
    [kept] = store.snapshot()
    assert kept.since == T0 + timedelta(seconds=10) and kept.at == T0 + timedelta(seconds=20)
    # Same status, a new commit: a new word, `since` stays (healthy all along).
    assert store.record(obs("a", "healthy", 30, applied="b" * 40)) == "new"
    [kept] = store.snapshot()
    assert kept.since == T0 + timedelta(seconds=10) and kept.applied == "b" * 40
    assert store.record(obs("a", "degraded", 5)) == "stale"
    # A repeat moves the time that orders replays, not `since`: an older word
    # said between the first and the last repeat is stale too.
    assert store.record(obs("a", "healthy", 60, applied="b" * 40)) == "duplicate"
    assert store.record(obs("a", "degraded", 45)) == "stale"
    [kept] = store.snapshot()
    assert kept.at == T0 + timedelta(seconds=60) and kept.since == T0 + timedelta(seconds=10)


def test_the_source_s_own_transition_time_wins() -> None:
    store = ObservationStore()
    given = obs("a", "healthy", 50)
    store.record(Observation(**{**given.__dict__, "since": T0}))
    assert store.snapshot()[0].since == T0


def test_bounded_oldest_dropped_and_forget() -> None:
    store = ObservationStore(max_objects=3)
    for i in range(5):
        store.record(obs(f"d{i}", "healthy", i))
    assert sorted(o.object for o in store.snapshot()) == ["argocd/d2", "argocd/d3", "argocd/d4"]
    store.record(obs("d2", "degraded", 100))  # moved: now the youngest
    store.record(obs("d9", "healthy", 101))
    assert sorted(o.object for o in store.snapshot()) == ["argocd/d2", "argocd/d4", "argocd/d9"]
    assert store.forget("argocd", keep=["argocd/d9"]) == 2
    assert store.forget("flux", keep=[]) == 0
    assert [o.object for o in store.snapshot()] == ["argocd/d9"]


def test_concurrent_writers() -> None:
    store = ObservationStore()

    def write(offset: int) -> None:
        for i in range(200):
            store.record(obs(f"d{i % 50}", "healthy" if i % 2 else "progressing", offset + i))

    threads = [threading.Thread(target=write, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store) == 50
