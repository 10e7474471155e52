"""What people push into a target's branch (issue #20): bad files fail only what
they belong to, named with their path and the commit that added them.

Each attack is a human's commit, pushed from a clone to the `agents` target's
branch while the `run` loop runs over two targets. Then the checks every attack
ends with (`assert_survived`: the loop lives, the `staging` target's change
lands, nothing is deleted, nothing leaks), the attack's own outcome (restored,
failed by name, held), and `run --once` on the same attack: the documented
exit code, never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from bridge.formats.state import STATE_FILE
from tests.hostile.loop import TwoTargets, assert_survived, two_targets
from tests.reliability.harness import commits, head

Entries = Mapping[str, "tuple[str, bytes] | None"]


def folder_of(env: TwoTargets, ns: str = "agents") -> str:
    (folder,) = env.folders(ns)
    return f"test-cluster/{ns}/{folder}"


def entries_of(env: TwoTargets, ns: str, prefix: str) -> dict[str, tuple[str, str]]:
    """path -> (mode, object id) of every entry under `prefix` at the remote head."""
    from tests.gitservers import git

    out = git("ls-tree", "-r", "-z", "--full-tree", "main", cwd=env.remotes[ns])
    found = {}
    for record in out.split("\0"):
        if record:
            meta, _, path = record.partition("\t")
            mode, _kind, oid = meta.split()
            if path.startswith(prefix + "/"):
                found[path] = (mode, oid)
    return found


def once(env: TwoTargets, *codes: int) -> str:
    """`run --once` (the loop stopped first): one of `codes`, no traceback; stderr."""
    for loop in env.loops:
        loop.stop()
    done = env.scenario.run()
    assert done.returncode in codes, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done.stderr


# --- entries the bridge restores like any manual edit ------------------------------


def bad_names(env: TwoTargets, folder: str) -> Entries:
    return {
        f"{folder}/evil\nname.yaml": ("100644", b"kind: ConfigMap\n"),
        f"{folder}/evil\\name.yaml": ("100644", b"kind: ConfigMap\n"),
        f'{folder}/"quoted".yaml': ("100644", b"kind: ConfigMap\n"),
    }


def other_kinds(env: TwoTargets, folder: str) -> Entries:
    some_commit = head(env.remotes["staging"]).encode()
    kustomization = env.read("agents", f"{folder}/kustomization.yaml")
    return {
        # A folder where a file belongs (the file removed first).
        f"{folder}/queue-worker.yaml": None,
        f"{folder}/queue-worker.yaml/inner.yaml": ("100644", b"kind: ConfigMap\n"),
        f"{folder}/vendored": ("160000", some_commit),  # a submodule entry
        f"{folder}/redis.yaml": ("160000", some_commit),  # a gitlink over a file
        # A symlink whose target text is the file's bytes: the same blob id.
        f"{folder}/kustomization.yaml": ("120000", kustomization),
        f"{folder}/agent-server.yaml": (
            "100755",
            env.read("agents", f"{folder}/agent-server.yaml"),
        ),
    }


@pytest.mark.parametrize("attack", [bad_names, other_kinds], ids=["names", "entry-kinds"])
def test_bad_entries_in_a_deployment_folder_are_restored(
    tmp_path: Path, attack: Callable[[TwoTargets, str], Entries]
) -> None:
    with two_targets(tmp_path) as env:
        folder = folder_of(env)
        before = {ns: env.folders(ns) for ns in env.remotes}
        clean = entries_of(env, "agents", folder)
        loop = env.start()
        loop.wait_cycles(1)
        sha = env.push("agents", attack(env, folder))
        assert entries_of(env, "agents", folder) != clean
        loop.wait(lambda: entries_of(env, "agents", folder) == clean, "the folder restored")
        restores = [c for c in commits(env.remotes["agents"]) if c.kind == "restore"]
        assert len(restores) == 1, restores
        assert_survived(
            env, loop, other="staging", before=before, named=["manual edit in", sha[:12]]
        )
        text = loop.log()
        for path, entry in attack(env, folder).items():
            if entry is None:
                continue
            shown = path[len(folder) + 1 :].replace("\\", "\\\\").replace("\n", "\\n")
            assert shown.replace('"', '\\"') in text, (shown, text[-3000:])
        # The same attack under `run --once`: restored, exit 0.
        env.push("agents", attack(env, folder))
        once(env, 0)
        assert entries_of(env, "agents", folder) == clean


# --- a broken state file: its deployment fails, by name, path and commit ------------


def nested_state(env: TwoTargets, folder: str) -> bytes:
    return b"[" * 1024 + b"]" * 1024  # 2 KB, 1,024 deep


def escaping_file_map(env: TwoTargets, folder: str) -> bytes:
    state: dict[str, Any] = json.loads(env.read("agents", f"{folder}/{STATE_FILE}"))
    state["files"]["../../../escape.yaml"] = state["files"]["kustomization.yaml"]
    return json.dumps(state).encode()


def oversized_state(env: TwoTargets, folder: str) -> bytes:
    state = env.read("agents", f"{folder}/{STATE_FILE}")
    return state[:-2] + b" " * (2 << 20) + state[-2:]  # valid JSON, 2 MiB


@pytest.mark.parametrize(
    ("attack", "why"),
    [
        (nested_state, "nested"),
        (escaping_file_map, "'../../../escape.yaml'"),
        (oversized_state, "bytes; at most"),
    ],
    ids=["nested", "escaping-file-map", "oversized"],
)
def test_a_broken_state_file_fails_its_deployment_alone(
    tmp_path: Path, attack: Callable[[TwoTargets, str], bytes], why: str
) -> None:
    with two_targets(tmp_path) as env:
        folder = folder_of(env)
        state_path = f"{folder}/{STATE_FILE}"
        before = {ns: env.folders(ns) for ns in env.remotes}
        loop = env.start()
        loop.wait_cycles(1)
        sha = env.push("agents", {state_path: ("100644", attack(env, folder))})
        broken = entries_of(env, "agents", folder)
        loop.wait(lambda: sha[:12] in loop.log(), "the broken state file to be reported")
        dep_id = env.ids["agents"]
        assert_survived(
            env,
            loop,
            other="staging",
            before=before,
            named=[state_path, sha[:12], why, dep_id, "agents-app"],
        )
        # Nothing written into the folder, nothing written outside it.
        assert entries_of(env, "agents", folder) == broken
        assert not any("escape" in p for p in entries_of(env, "agents", "test-cluster"))
        status, _body = loop.get("/metrics")
        assert status == 200
        text = once(env, 1)
        assert state_path in text and sha[:12] in text and dep_id in text


# --- approval files and the held record --------------------------------------------

NESTED_YAML = b"deploymentIds: " + b"[" * 512 + b"]" * 512 + b"\n"  # 1 KB


def test_a_nested_approval_file_approves_nothing(tmp_path: Path) -> None:
    with two_targets(tmp_path) as env:
        before = {ns: env.folders(ns) for ns in env.remotes}
        # One deletion of one deployment trips the guard: it is held for approval.
        loop = env.start(**{"policy.massDelete.min": 1})
        env.world.admin.delete_deployment(env.ids["agents"])
        loop.wait(lambda: "mass-delete guard holds" in loop.log(), "the deletion to be held")
        path = "test-cluster/agents/.gitops-bridge/approve-delete"
        sha = env.push("agents", {path: ("100644", NESTED_YAML)}, "approve (broken)")
        loop.wait(lambda: sha[:12] in loop.log(), "the approval to be reported")
        assert_survived(
            env,
            loop,
            other="staging",
            before=before,
            named=[path, sha[:12], "A Human", "nested deeper than", "nothing is deleted"],
        )
        # An oversized one is refused by its size, before it is read.
        big = f"deploymentIds:\n  - {env.ids['agents']}\n".encode() + b"#" * (1 << 20) + b"\n"
        sha = env.push("agents", {path: ("100644", big)}, "approve (oversized)")
        loop.wait(lambda: sha[:12] in loop.log(), "the oversized approval to be reported")
        assert "bytes; at most 65536 are read" in loop.log()
        text = once(env, 1)
        assert "mass-delete guard holds" in text and env.ids["agents"] in text
        assert before["agents"] <= env.folders("agents")


def test_a_nested_held_record_holds_every_deletion(tmp_path: Path) -> None:
    with two_targets(tmp_path) as env:
        before = {ns: env.folders(ns) for ns in env.remotes}
        loop = env.start()
        loop.wait_cycles(1)
        path = "test-cluster/agents/.gitops-bridge/held-delete"
        sha = env.push("agents", {path: ("100644", NESTED_YAML)}, "break the held record")
        loop.wait(lambda: sha[:12] in loop.log(), "the held record to be reported")
        # Below the guard's floor, this deletion would go at once; the broken
        # record holds it (the safe reading: hold everything).
        env.world.admin.delete_deployment(env.ids["agents"])
        loop.wait(lambda: "mass-delete guard holds" in loop.log(), "the deletion to be held")
        assert_survived(
            env,
            loop,
            other="staging",
            before=before,
            named=[path, sha[:12], "every deletion held"],
        )
        text = once(env, 1)
        assert env.ids["agents"] in text
        assert before["agents"] <= env.folders("agents")
