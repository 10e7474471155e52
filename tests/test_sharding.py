"""--shard I/N: each target belongs to exactly one replica, by a stable hash."""

from __future__ import annotations

import pytest

from bridge.commands.run import parse_shard
from bridge.config import Target
from bridge.errors import ConfigError
from bridge.reconcile.cycle import shard_owns

pytestmark = pytest.mark.quick  # needs nothing beside the checkout: run in a fresh clone


def test_parse_shard_forms() -> None:
    assert parse_shard("1/3", env={}) == (1, 3)
    assert parse_shard(None, env={"BRIDGE_SHARD": "0/2"}) == (0, 2)
    assert parse_shard(None, env={}) is None
    # A StatefulSet pod name plus the replica count.
    assert parse_shard("gitops-bridge-2", env={"BRIDGE_SHARD_COUNT": "3"}) == (2, 3)


@pytest.mark.parametrize("value", ["3/3", "-1/2", "1/0", "a/b", "bridge-1"])
def test_parse_shard_rejects_bad_values(value: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_shard(value, env={})
    assert e.value.exit_code == 2
    assert value in str(e.value)


def test_every_target_has_exactly_one_owner_and_the_split_is_even() -> None:
    targets = [
        Target(namespace=f"ns-{i}", repo=f"ssh://git@example.com/repo-{i % 7}.git")
        for i in range(600)
    ]
    count = 3
    owners = {t.key: [i for i in range(count) if shard_owns(t, (i, count))] for t in targets}
    assert all(len(o) == 1 for o in owners.values())
    sizes = [sum(1 for o in owners.values() if o == [i]) for i in range(count)]
    assert min(sizes) > 150  # roughly even: 200 each
    # Stable: the same answer every time (no per-process hash seed).
    assert owners == {
        t.key: [i for i in range(count) if shard_owns(t, (i, count))] for t in targets
    }
