"""The road of each revision: first-seen times that survive restarts, in a bounded 0600 file."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.health.road import FILE_NAME, RoadStore

pytestmark = pytest.mark.quick
T0 = datetime(2026, 5, 1, 10, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_first_seen_wins_and_survives_a_restart(tmp_path: Path) -> None:
    road = RoadStore.open(tmp_path)
    assert road.mark("dep-1", "rev-1", "created", at(0))
    assert road.mark("dep-1", "rev-1", "committed", at(12))
    assert road.mark("dep-1", "rev-1", "synced", at(90))
    assert not road.mark("dep-1", "rev-1", "synced", at(95))  # a repeat changes nothing
    assert road.save() and not road.save()  # written once; nothing new, no write
    again = RoadStore.open(tmp_path)
    assert not again.mark("dep-1", "rev-1", "committed", at(500))  # known from before the restart
    assert again.mark("dep-1", "rev-1", "healthy", at(150))
    found = again.road("dep-1", "rev-1")
    assert found is not None
    assert found.seconds("committed") == 12 and found.seconds("synced") == 90
    assert found.lead_time_seconds == 150
    assert found.to_json()["leadTimeSeconds"] == 150
    assert (
        found.to_json()["created"] == "2026-05-01T10:00:00Z" and found.to_json()["merged"] is None
    )
    assert again.road("dep-1", "other") is None


def test_lead_time_is_null_until_healthy(tmp_path: Path) -> None:
    road = RoadStore(tmp_path / FILE_NAME)
    road.mark("d", "r", "created", at(0))
    road.mark("d", "r", "synced", at(30))
    found = road.road("d", "r")
    assert found is not None and found.lead_time_seconds is None


def test_the_file_is_0600_replaced_atomically_and_leaves_nothing_behind(tmp_path: Path) -> None:
    road = RoadStore.open(tmp_path)
    road.mark("d", "r", "created", at(0))
    road.save()
    path = tmp_path / FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)  # someone loosened it: the next write is 0600 again
    road.mark("d", "r", "committed", at(1))
    road.save()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILE_NAME]
    doc = json.loads(path.read_text())
    assert doc["deployments"]["d"]["r"] == {
        "created": "2026-05-01T10:00:00Z",
        "committed": "2026-05-01T10:00:01Z",
    }


def test_bounded_old_revisions_and_quiet_deployments_pruned(tmp_path: Path) -> None:
    road = RoadStore(tmp_path / FILE_NAME, max_revisions=3, max_deployments=2)
    for i in range(5):
        road.mark("d1", f"r{i}", "created", at(i))
    assert [r.revision_id for r in road.roads("d1")] == ["r2", "r3", "r4"]
    road.mark("d2", "r", "created", at(10))
    road.mark("d1", "r4", "synced", at(11))  # d1 moved last
    road.mark("d3", "r", "created", at(12))  # over the cap: d2 was the quietest
    assert road.road("d2", "r") is None and road.road("d1", "r4") and road.road("d3", "r")
    with pytest.raises(ValueError):
        road.mark("d" * 200, "r", "created")
    with pytest.raises(ValueError):
        road.mark("d", "r", "deployed")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b'{"schema": 99}',
        b'{"schema": 1, "deployments": {"d": {"r": {"created": "yesterday"}}}}',
        b"[" * 200,
    ],
)
def test_a_damaged_file_is_set_aside_and_the_road_starts_again(
    tmp_path: Path, content: bytes
) -> None:
    (tmp_path / FILE_NAME).write_bytes(content)
    road = RoadStore.open(tmp_path)
    assert road.road("d", "r") is None
    assert (tmp_path / (FILE_NAME + ".damaged")).read_bytes() == content
    road.mark("d", "r", "created", at(0))
    road.save()
    assert RoadStore.open(tmp_path).road("d", "r") is not None


def test_merged_is_held_between_the_commit_and_now_and_timed(tmp_path: Path) -> None:
    """Pull-request mode: the forge's merge time, on the forge's clock."""
    from prometheus_client import CollectorRegistry

    from bridge.health.metrics import HealthMetrics
    from bridge.health.roadkeeping import MERGE_SKEW, RoadKeeper

    t0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    now = [t0]
    registry = CollectorRegistry()
    keeper = RoadKeeper(RoadStore.open(tmp_path), HealthMetrics(registry), clock=lambda: now[0])
    keeper.merged("agents", "d1", "r1", t0)  # no road yet: nothing
    assert keeper.road.road("d1", "r1") is None
    keeper.committed("agents", "d1", "r1", pushed=True)
    keeper.created("agents", "d1", "r1", t0 - timedelta(minutes=1))
    now[0] = t0 + timedelta(minutes=5)
    # An earlier pull request's merge (before the commit, beyond the skew): not this one's.
    keeper.merged("agents", "d1", "r1", t0 - MERGE_SKEW - timedelta(seconds=1))
    road = keeper.road.road("d1", "r1")
    assert road is not None and "merged" not in road.times
    # A forge clock ahead of ours is held to now; the first mark stays.
    keeper.merged("agents", "d1", "r1", t0 + timedelta(hours=1))
    keeper.merged("agents", "d1", "r1", t0 + timedelta(minutes=2))
    road = keeper.road.road("d1", "r1")
    assert road is not None and road.times["merged"] == now[0]
    count = registry.get_sample_value(
        "gitops_bridge_revision_stage_seconds_count", {"target": "agents", "stage": "merge"}
    )
    assert count == 1.0
