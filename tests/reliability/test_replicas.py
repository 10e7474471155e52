"""Guarantee 2: replicas on the same targets, started together, never conflict.

Each replica is a real `run --once` process with its own workdir (as two pods
would have) and the same config and remotes. The only lock is git's atomic
compare-and-swap of the branch on the remote: the loser's push is rejected, it
fetches, re-plans on the winner's head, finds the change already committed
(the state files say so) and pushes nothing. Both exit 0; each change lands
exactly once; the remote's reflog shows only fast-forwards.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.reconcile.world import World, make_world
from tests.reliability.harness import (
    Scenario,
    assert_each_change_once,
    assert_healthy,
    changes,
    commits,
    run_together,
    scenario,
    slow_pushes,
)

Change = tuple[str, str, str | None]


def replicas(world: World, count: int) -> list[Scenario]:
    """`count` installations sharing the first one's remotes, each with its own workdir."""
    first = scenario(world, "replica-0")
    out = [first]
    for i in range(1, count):
        root = world.root / "scenarios" / f"replica-{i}"
        root.mkdir(parents=True)
        s = Scenario(world, root, root / "bridge.yaml", first.remotes)
        s.write_config()
        out.append(s)
    return out


def round_of(world: World, reps: list[Scenario]) -> int:
    """One `run --once` per replica, all at once; how many pushes were rejected."""
    results = run_together([(world, r.config, None) for r in reps])
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]
        assert "force" not in r.stderr.lower()
    return sum(r.stderr.count("was rejected") for r in results)


def assert_landed_once(reps: list[Scenario], expected: dict[str, Counter[Change]]) -> None:
    for ns, remote in reps[0].remotes.items():
        assert_each_change_once(remote)
        got = Counter({k: n for k, n in changes(remote).items() if k[0] is not None})
        assert got == expected[ns], ns
    assert_healthy(reps[0].remotes.values())
    for r in reps:
        assert_healthy([], r.workdir)


def deploy(dep: dict[str, Any]) -> Change:
    return ("deploy", dep["id"], dep["latest_revision_id"])


def test_two_replicas_started_together_land_each_change_once(tmp_path: Path) -> None:
    with make_world(tmp_path) as world:
        alpha = world.create("alpha", secrets_={"TOKEN": "tok-" + "r3p1ica5" * 4})
        beta = world.create("beta")
        gamma = world.create("gamma")
        delta = world.create("delta", namespace="staging")
        reps = replicas(world, 2)
        expected: dict[str, Counter[Change]] = {
            "agents": Counter([deploy(alpha), deploy(beta), deploy(gamma)]),
            "staging": Counter([deploy(delta)]),
        }

        slow_pushes(reps[0], 0.3)  # widen the window in which both have fetched
        rejected = round_of(world, reps)  # everything is new
        assert_landed_once(reps, expected)

        alpha = world.admin.patch_deployment(
            alpha["id"],
            {"source_revision_config": {"image_uri": "registry.example.com/acme/agent:2.0.0"}},
        )
        world.admin.delete_deployment(gamma["id"])
        epsilon = world.create("epsilon", namespace="staging")
        expected["agents"].update(
            [deploy(alpha), ("delete", gamma["id"], gamma["latest_revision_id"])]
        )
        expected["staging"].update([deploy(epsilon)])
        rejected += round_of(world, reps)  # a new revision, a delete, a create
        assert_landed_once(reps, expected)
        # The race this test is about did happen (and was lost gracefully).
        assert rejected >= 1

        heads = {ns: commits(r)[0].sha for ns, r in reps[0].remotes.items()}
        round_of(world, reps)  # nothing changed: nobody commits
        assert {ns: commits(r)[0].sha for ns, r in reps[0].remotes.items()} == heads


@pytest.mark.long
@pytest.mark.parametrize("seed", range(3))
def test_long_three_replicas_through_random_changes(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    with make_world(tmp_path) as world:
        live: dict[str, dict[str, Any]] = {}
        expected: dict[str, Counter[Change]] = {"agents": Counter(), "staging": Counter()}
        reps = replicas(world, 3)
        for step in range(10):
            touched: set[str] = set()
            for _ in range(rng.randint(1, 3)):
                free = sorted(i for i in live if i not in touched)
                action = rng.choice(["create", "create", "patch", "delete"]) if free else "create"
                if action == "create":
                    ns = rng.choice(["agents", "staging"])
                    dep = world.create(f"d{step}-{rng.randrange(10**6)}", namespace=ns)
                    live[dep["id"]] = dep
                    touched.add(dep["id"])
                    expected[ns].update([deploy(dep)])
                    continue
                dep = live[rng.choice(free)]
                ns = dep["source_config"]["listener_config"]["k8s_namespace"]
                in_ns = [d for d in live.values() if namespace_of(d) == ns]
                if action == "delete" and len(in_ns) >= 3:
                    # At most one delete per namespace per round: the mass-delete
                    # guard is not what this test is about.
                    del live[dep["id"]]
                    touched.update(d["id"] for d in in_ns)
                    world.admin.delete_deployment(dep["id"])
                    expected[ns].update([("delete", dep["id"], dep["latest_revision_id"])])
                else:
                    dep = world.admin.patch_deployment(
                        dep["id"],
                        {"source_revision_config": {"image_uri": f"registry.example.com/a:{step}"}},
                    )
                    live[dep["id"]] = dep
                    touched.add(dep["id"])
                    expected[ns].update([deploy(dep)])
            round_of(world, reps)
            assert_landed_once(reps, expected)


def namespace_of(dep: dict[str, Any]) -> str:
    ns: str = dep["source_config"]["listener_config"]["k8s_namespace"]
    return ns
