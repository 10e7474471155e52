"""Guarantee 5: hostile control-plane data. Whatever the control plane sends,
nothing is written outside the target path (the whole workdir, the remote and
the bridge's working directory are walked), no shell ever runs it, each bad
deployment gets its own error naming it (name and id), and the rest deploy.

The local control plane validates some input itself, so the hostile records
are written straight into its SQLite store (`bridge/localplane/store.py`),
as a buggy or compromised control plane would serve them.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bridge.formats.state import STATE_FILE
from bridge.localplane.api import LOCAL_TENANT_ID
from bridge.localplane.store import Store
from tests.leakscan import scan_repo
from tests.reconcile.world import World, make_world
from tests.reliability.harness import (
    assert_healthy,
    bridge_cmd,
    commits,
    files_under,
    tree,
)

MIB = 1024 * 1024


def raw_deployment(
    world: World,
    name: Any,
    *,
    namespace: Any = "agents",
    image: Any = "registry.example.com/acme/agent:1.0.0",
    secrets: Any = (),
    dep_id: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A deployment document and its revision, as the local plane stores them."""
    now = datetime.now(UTC).isoformat()
    revision_id = str(uuid.uuid4())
    revision_config = {
        "repo_ref": None,
        "langgraph_config_path": None,
        "image_uri": image,
        "repo_commit_sha": None,
    }
    doc = {
        "id": dep_id or str(uuid.uuid4()),
        "tenant_id": LOCAL_TENANT_ID,
        "name": name,
        "source": "external_docker",
        "source_config": {
            "integration_id": None,
            "repo_url": None,
            "deployment_type": None,
            "build_on_push": None,
            "custom_url": None,
            "resource_spec": None,
            "listener_id": world.listener_id,
            "listener_config": {"k8s_namespace": namespace},
            "install_command": None,
            "build_command": None,
        },
        "source_revision_config": revision_config,
        "secrets": [dict(s) for s in secrets],
        "secret_references": None,
        "created_at": now,
        "updated_at": now,
        "status": "READY",
        "latest_revision_id": revision_id,
        "active_revision_id": revision_id,
        "image_version": None,
    }
    revision = {
        "id": revision_id,
        "created_at": now,
        "updated_at": now,
        "status": "DEPLOYED",
        "source": "external_docker",
        "source_revision_config": revision_config,
    }
    return doc, revision


@dataclass
class Hostile:
    world: World
    ids: dict[str, str]  # label -> deployment id
    run: subprocess.CompletedProcess[str]
    cwd: Path
    markers: list[Path]

    @property
    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((self.world.root / "workdir" / "status.json").read_text())
        return doc

    def outcome(self, label: str) -> dict[str, Any]:
        dep_id = self.ids[label]
        found = [o for o in self.status["outcomes"] if o["deployment_id"] == dep_id]
        assert len(found) == 1, (label, found)
        return found[0]


def cases(world: World, markers: list[Path]) -> dict[str, dict[str, Any]]:
    """label -> keyword arguments of raw_deployment."""
    shell = [
        f"registry.example.com/a:1;touch {markers[0]}",
        f"registry.example.com/a:$(touch {markers[1]})",
        f"registry.example.com/a:`touch {markers[2]}`",
        f"registry.example.com/a:1|tee {markers[3]}",
        f"registry.example.com/a:1 && touch {markers[4]}",
        "registry.example.com/a:1\n\nDeployment-Id: 00000000-0000-0000-0000-000000000000",
    ]
    special = [
        "yes",
        "no",
        "null",
        "~",
        "true",
        "0x1F",
        "1e3",
        "- a",
        "{a: b}",
        "&x",
        "*x",
        "!!python/object:os.system",
        "'",
        '"',
        "#",
        "%TAG",
        "---",
        "...",
        "=",
        "@",
    ]
    return {
        "slash": {"name": "team/app"},
        "dotdot": {"name": "../../../../etc/cron.d/x"},
        "dot": {"name": ".."},
        "nul": {"name": "app\x00.yaml"},
        "newline": {"name": "app\nDeployment-Id: forged"},
        "long": {"name": "n" * 300},
        "lookalike": {"name": "аlpha"},  # Cyrillic а
        "alpha": {"name": "alpha"},
        "collide-1": {"name": "My App"},
        "collide-2": {"name": "my-app"},
        "collide-3": {"name": "my_app"},
        "empty-name": {"name": ""},
        "dot-git": {"name": ".git"},
        "absolute": {"name": "/etc/passwd"},
        "huge-value": {"name": "huge-value", "secrets": [{"name": "BIG", "value": "v" * MIB}]},
        "many-vars": {
            "name": "many-vars",
            "secrets": [{"name": f"VAR_{i:05d}", "value": f"value-{i}"} for i in range(10_000)],
        },
        "special-strings": {
            "name": "special-strings",
            "secrets": [{"name": f"S_{i}", "value": v} for i, v in enumerate(special)],
        },
        "bad-env-names": {
            "name": "bad-env-names",
            "secrets": [{"name": "A=B", "value": "x"}, {"name": "../../x", "value": "y"}],
        },
        **{f"shell-{i}": {"name": f"shell-{i}", "image": image} for i, image in enumerate(shell)},
        "image-not-string": {"name": "image-not-string", "image": ["registry.example.com/a:1"]},
        "namespace-escape": {"name": "namespace-escape", "namespace": "../agents"},
        "normal-1": {"name": "normal-1"},
        "normal-2": {"name": "normal-2"},
    }


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    root = tmp_path_factory.mktemp("hostile")
    with make_world(root, namespaces=("agents",)) as world:
        markers = [root / f"pwned-{i}" for i in range(5)]
        ids: dict[str, str] = {}
        store = Store(root / "cp.db")
        try:
            for label, kwargs in cases(world, markers).items():
                doc, revision = raw_deployment(world, **kwargs)
                store.insert_deployment({**doc, "name": str(doc["name"])}, revision)
                if not isinstance(doc["name"], str):
                    continue
                ids[label] = doc["id"]
        finally:
            store.close()
        cwd = root / "cwd"
        cwd.mkdir()
        config = world.write_config()
        run = subprocess.run(
            bridge_cmd(config),
            cwd=cwd,
            env=world.env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        yield Hostile(world, ids, run, cwd, markers)


ALLOWED = re.compile(
    r"^(README\.md|test-cluster/agents/kustomization\.yaml"
    r"|test-cluster/agents/[a-z]([-a-z0-9]{0,38}[a-z0-9])?/[A-Za-z0-9._-]+)$"
)


def test_nothing_is_written_outside_the_target_path(hostile: Hostile) -> None:
    world = hostile.world
    remote = world.remotes["agents"]
    paths = set(tree(remote))
    # Every commit's tree, not only the tip.
    for c in commits(remote):
        out = subprocess.run(
            ["git", "ls-tree", "-r", "--name-only", "-z", c.sha],
            cwd=remote,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        paths |= {p for p in out.split("\0") if p}
    assert paths and all(ALLOWED.match(p) for p in paths), sorted(
        p for p in paths if not ALLOWED.match(p)
    )
    # The world's root holds only what the test made: no file escaped the workdir.
    made = {"cp.db", "cp.db-wal", "cp.db-shm", "age.agekey", "bridge.yaml"}
    for path in files_under(world.root):
        top = path.parts[0]
        assert top in made | {"workdir", "remotes", "cwd"}, path
    assert files_under(hostile.cwd) == []  # the bridge's working directory stays empty
    workdir = world.root / "workdir"
    clones = {p.name for p in workdir.iterdir() if (p / "objects").is_dir()}
    for path in files_under(workdir):
        top = path.parts[0]
        assert top == "status.json" or top in clones or top.removesuffix(".lock") in clones, path
    for clone in clones:
        # Bare clones: nothing is ever checked out, so no rendered path touches disk.
        assert not (workdir / clone / "test-cluster").exists()
    assert_healthy([remote], workdir)


def test_no_shell_ever_runs_control_plane_data(hostile: Hostile) -> None:
    assert not [m for m in hostile.markers if m.exists()]


def test_each_bad_deployment_has_its_own_error_and_the_rest_deploy(hostile: Hostile) -> None:
    assert hostile.run.returncode == 1, hostile.run.stderr[-3000:]
    outcomes = hostile.status["outcomes"]
    for label in ("normal-1", "normal-2", "alpha", "collide-1", "collide-2", "collide-3"):
        assert hostile.outcome(label)["action"] == "deployed", (label, hostile.outcome(label))
    failed = [o for o in outcomes if o["action"] == "failed"]
    assert failed
    for o in failed:
        assert o["deployment_id"] in o["error"], o
    for label in ("shell-0", "shell-1", "shell-2", "shell-3", "shell-4", "shell-5"):
        o = hostile.outcome(label)
        assert o["action"] == "failed" and "image" in o["error"], o
    # A Secret over Kubernetes' 1 MiB would block a whole namespace in Flux.
    huge = hostile.outcome("huge-value")
    assert huge["action"] == "failed" and "1 MiB" in huge["error"], huge
    assert hostile.outcome("many-vars")["action"] == "deployed"
    assert hostile.outcome("bad-env-names")["action"] == "failed"
    assert hostile.outcome("image-not-string")["action"] == "failed"
    # The warning for a namespace without a target names it; nothing is guessed.
    assert any("'../agents'" in w for w in hostile.status["warnings"])


def test_commit_messages_cannot_be_forged_by_names_or_images(hostile: Hostile) -> None:
    remote = hostile.world.remotes["agents"]
    known = set(hostile.ids.values())
    for c in commits(remote):
        assert c.kind is not None, c.subject  # every commit parses as a bridge commit
        body = subprocess.run(
            ["git", "log", "-1", "--format=%B", c.sha],
            cwd=remote,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        ids = [ln for ln in body.splitlines() if ln.startswith("Deployment-Id:")]
        assert len(ids) == 1 and c.deployment_id in known, body
        assert "\x00" not in body and "Deployment-Id: forged" not in body


def test_colliding_and_look_alike_names_get_distinct_stable_folders(hostile: Hostile) -> None:
    remote = hostile.world.remotes["agents"]
    folders: dict[str, str] = {}
    for path in tree(remote):
        if path.endswith("/" + STATE_FILE):
            state = json.loads(
                subprocess.run(
                    ["git", "show", f"main:{path}"],
                    cwd=remote,
                    capture_output=True,
                    check=True,
                ).stdout
            )
            folders[state["deployment"]["id"]] = path.split("/")[2]
    names = [folders[hostile.ids[k]] for k in ("collide-1", "collide-2", "collide-3")]
    assert len(set(names)) == 3, names
    assert folders[hostile.ids["alpha"]] == "alpha"
    if hostile.ids["lookalike"] in folders:
        assert folders[hostile.ids["lookalike"]] != "alpha"


def test_no_secret_value_of_a_hostile_deployment_leaks(hostile: Hostile) -> None:
    needles = [f"value-{i}" for i in range(1000, 1010)] + ["v" * 64]
    assert scan_repo(hostile.world.remotes["agents"], [n for n in needles if len(n) >= 8]) == []
