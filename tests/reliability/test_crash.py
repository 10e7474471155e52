"""Guarantee 1: a crash at any point converges.

`python -m bridge run --once` runs as a real process with
GITOPS_BRIDGE_CRASH_AT=<point>[:<n>] (bridge/faults.py), which SIGKILLs it and
the git processes it started, as a pod kill would. A second run without the
fault must leave every remote exactly as a clean run leaves it: the same
commits in the same order (so no duplicate and no lost revision), the same
tree (sealed secrets compared by path: their nonces are random by design),
`git fsck --strict` clean, no lock files, no force push; a third run is a no-op.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.reconcile.world import World, make_world
from tests.reliability.harness import (
    KILLED,
    Scenario,
    assert_each_change_once,
    assert_healthy,
    commits,
    comparable_tree,
    fast_pushes,
    head,
    lock_files,
    run_together,
    scenario,
    slow_pushes,
)

SECRET = "tok-" + "c7a5h9s1" * 4


@dataclass
class Reference:
    world: World
    trees: dict[str, dict[str, Any]] = field(default_factory=dict)
    subjects: dict[str, list[str]] = field(default_factory=dict)

    def record(self, s: Scenario) -> None:
        for ns, remote in s.remotes.items():
            self.trees[ns] = comparable_tree(remote)
            self.subjects[ns] = [c.subject for c in commits(remote)]

    def assert_converged(self, s: Scenario) -> None:
        for ns, remote in s.remotes.items():
            assert [c.subject for c in commits(remote)] == self.subjects[ns], ns
            assert comparable_tree(remote) == self.trees[ns], ns
            assert_each_change_once(remote)
        assert_healthy(s.remotes.values(), s.workdir)


def populate(world: World) -> dict[str, dict[str, Any]]:
    made = [
        world.create("alpha", secrets_={"TOKEN": SECRET}),
        world.create("beta"),
        world.create("gamma", resource_spec={"min_scale": 1, "max_scale": 2}),
        world.create("delta", namespace="staging"),
    ]
    return {d["name"]: d for d in made}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reference]:
    with make_world(tmp_path_factory.mktemp("crash")) as world:
        populate(world)
        clean = scenario(world, "clean")
        done = clean.run()
        assert done.returncode == 0, done.stderr
        ref = Reference(world)
        ref.record(clean)
        assert len(ref.subjects["agents"]) == 3 and len(ref.subjects["staging"]) == 1
        yield ref


def plant_leftovers(workdir: Path) -> list[Path]:
    """What a git process killed at the wrong moment leaves in a clone."""
    planted = []
    for clone in (p for p in workdir.iterdir() if (p / "objects").is_dir()):
        for rel in (
            "index.lock",
            "HEAD.lock",
            "config.lock",
            "packed-refs.lock",
            "refs/heads/main.lock",
            "refs/remotes/origin/main.lock",
            "objects/pack/tmp_pack_Zq0a1b",
            "bridge-index-999999-7f00",
            "bridge-marks-999999-7f00",
        ):
            path = clone / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"left by a killed process\n")
            os.utime(path, (1_000_000_000, 1_000_000_000))
            planted.append(path)
    return planted


def assert_consistent_after_kill(s: Scenario) -> None:
    """Right after a kill, before any restart: each remote is untouched or has a
    whole push, never a half-updated ref, a lock file or a broken object store."""
    for remote in s.remotes.values():
        assert head(remote) in ("", *(c.sha for c in commits(remote)))
    assert_healthy(s.remotes.values())


@dataclass
class Plan:
    """One installation's crash sequence: points to die at, in successive runs."""

    points: list[str]
    must_hit: bool = True
    slow_push: bool = False
    leftovers: bool = False


def crash_then_converge(ref: Reference, plans: dict[str, Plan], *, check_noop: bool = True) -> None:
    """Each plan on its own installation, all installations side by side (runs
    of one step start together, to use every core): crash run(s), a clean
    restart, the comparison with the clean run, then a run that must be a no-op."""
    world = ref.world
    installs = {name: scenario(world, name) for name in plans}
    for name, plan in plans.items():
        if plan.slow_push:
            slow_pushes(installs[name], 2.0)
    for step in range(max(len(p.points) for p in plans.values())):
        todo = {n: p.points[step] for n, p in plans.items() if step < len(p.points)}
        results = run_together([(world, installs[n].config, point) for n, point in todo.items()])
        for (name, point), crashed in zip(todo.items(), results, strict=True):
            if plans[name].must_hit:
                assert crashed.returncode == KILLED, (
                    f"{point} was never reached (exit {crashed.returncode}): "
                    f"{crashed.stderr[-2000:]}"
                )
            else:
                assert crashed.returncode in (KILLED, 0), (point, crashed.stderr[-2000:])
            assert_consistent_after_kill(installs[name])
    for name, plan in plans.items():
        fast_pushes(installs[name])
        if plan.leftovers:
            assert plant_leftovers(installs[name].workdir)
    runs = run_together([(world, s.config, None) for s in installs.values()])
    for (name, s), again in zip(installs.items(), runs, strict=True):
        assert again.returncode == 0, (name, again.stderr[-3000:])
        try:
            ref.assert_converged(s)
        except AssertionError as e:
            raise AssertionError(f"after a crash at {plans[name].points}: {e}") from e
        assert lock_files(s.workdir) == []
    if check_noop:
        heads = {(n, ns): head(r) for n, s in installs.items() for ns, r in s.remotes.items()}
        runs = run_together([(world, s.config, None) for s in installs.values()])
        assert [r.returncode for r in runs] == [0] * len(runs)
        assert {
            (n, ns): head(r) for n, s in installs.items() for ns, r in s.remotes.items()
        } == heads


def test_a_crash_at_each_kind_of_moment_converges_to_a_clean_run(reference: Reference) -> None:
    """The default set: one point of each kind; the long variants run every point
    at every occurrence and sequences of crashes."""
    crash_then_converge(
        reference,
        {
            # the 2nd target's objects written, its branch not moved; git's locks left behind
            "writing-files-2": Plan(["writing-files:2"], leftovers=True),
            # agents pushed, staging committed but not pushed
            "before-push-2": Plan(["before-push:2"]),
            # the push cut off half way (the remote's hook stalls it)
            "during-push-1": Plan(["during-push:1"], slow_push=True),
            # the remote has everything, the bridge never recorded it
            "after-push-1": Plan(["after-push:1"]),
        },
    )


LONG_POINTS = [
    f"{point}:{n}"
    for point, most in (
        # once per target: a target's commits are written as one batch
        ("writing-files", 2),
        ("before-commit", 2),
        ("between-commits", 2),
        ("before-push", 2),
        ("during-push", 2),
        ("after-push", 2),
    )
    for n in range(1, most + 1)
]


@pytest.mark.long
def test_long_every_point_every_occurrence(reference: Reference) -> None:
    for i in range(0, len(LONG_POINTS), 4):
        batch = LONG_POINTS[i : i + 4]
        crash_then_converge(
            reference,
            {
                "long-" + point.replace(":", "-"): Plan(
                    [point], slow_push=point.startswith("during-push"), leftovers=True
                )
                for point in batch
            },
        )


@pytest.mark.long
@pytest.mark.parametrize("seed", range(4))
def test_long_several_crashes_in_a_row(reference: Reference, seed: int) -> None:
    rng = random.Random(seed)
    plans = {}
    for j in range(3):
        points = rng.sample(LONG_POINTS, 3)
        plans[f"seq-{seed}-{j}"] = Plan(
            points, must_hit=False, slow_push=any("during" in p for p in points)
        )
    crash_then_converge(reference, plans)


def test_crash_during_an_update_cycle_converges(tmp_path: Path) -> None:
    """A cycle that deploys a new revision, creates and deletes: crash between its commits."""
    with make_world(tmp_path) as world:
        by_name = populate(world)
        clean, crashing = scenario(world, "clean"), scenario(world, "crashing")
        first = run_together([(world, clean.config, None), (world, crashing.config, None)])
        assert [r.returncode for r in first] == [0, 0], [r.stderr[-2000:] for r in first]
        world.admin.patch_deployment(
            by_name["alpha"]["id"],
            {"source_revision_config": {"image_uri": "registry.example.com/acme/agent:2.0.0"}},
        )
        world.admin.delete_deployment(by_name["gamma"]["id"])
        world.create("epsilon")
        ref = Reference(world)
        done, crashed = run_together(
            [(world, clean.config, None), (world, crashing.config, "between-commits:2")]
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert crashed.returncode == KILLED, crashed.stderr[-2000:]
        ref.record(clean)
        newest = sorted(c.split("(")[0] for c in ref.subjects["agents"][:3])
        assert newest == ["delete", "deploy", "deploy"]
        assert_consistent_after_kill(crashing)
        again = crashing.run()
        assert again.returncode == 0, again.stderr[-3000:]
        ref.assert_converged(crashing)
