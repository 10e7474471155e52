"""The policy gate: checked before anything is committed (SPEC §6, issue 10)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.config import PolicySettings
from bridge.models import Deployment, ResourceSpec
from bridge.reconcile.policy import check_policy, registry_allowed
from tests.reconcile.world import World, make_world

DIGEST = "sha256:" + "b" * 64


def dep(image: str, **spec: Any) -> Deployment:
    return Deployment(
        id="d-1",
        name="agent",
        source="external_docker",
        status="READY",
        listener_id="l",
        namespace="agents",
        image_uri=image,
        revision_id="rev-1",
        resource_spec=ResourceSpec(**spec),
    )


@pytest.mark.parametrize(
    ("image", "allowed"),
    [
        ("registry.example.com/acme/agent:1", True),
        ("registry.example.com:5000/acme/agent:1", False),  # another registry (port)
        ("registry.example.com.evil.io/acme/agent:1", False),
        ("registry.example.comevil/agent:1", False),
        ("evil.io/registry.example.com/agent:1", False),
        ("ghcr.io/acme/agent:1", True),
        ("ghcr.io/acmecorp/agent:1", False),
        ("ghcr.io/acme", True),
        ("docker.io/library/busybox:1", False),
    ],
)
def test_registry_prefixes_are_host_and_path_aware(image: str, allowed: bool) -> None:
    assert registry_allowed(image, ("registry.example.com", "ghcr.io/acme/")) is allowed


@pytest.mark.parametrize(
    ("policy", "deployment", "rule"),
    [
        (
            PolicySettings(allowed_registries=("ghcr.io/acme",)),
            dep("evil.io/x:1"),
            "allowedRegistries",
        ),
        (
            PolicySettings(allowed_registries=("ghcr.io/acme",)),
            dep("ghcr.io/acme/a:1", sidecars=({"name": "s", "image": "evil.io/s:1"},)),  # type: ignore[arg-type]
            "allowedRegistries",
        ),
        (PolicySettings(require_digest=True), dep("ghcr.io/acme/a:1"), "requireDigest"),
        (PolicySettings(max_replicas=10), dep("a/b:1", max_scale=11), "maxReplicas"),
        (PolicySettings(max_replicas=10), dep("a/b:1", queue_max_scale=20), "maxReplicas"),
        (PolicySettings(max_cpu=4), dep("a/b:1", cpu=3), "maxCpu"),  # limit defaults to 2x = 6
        (PolicySettings(max_cpu=4), dep("a/b:1", db_cpu_limit=8), "maxCpu"),
        (PolicySettings(max_memory_mb=4096), dep("a/b:1", memory_mb=4096), "maxMemoryMb"),
    ],
)
def test_each_rule_rejects(policy: PolicySettings, deployment: Deployment, rule: str) -> None:
    found = check_policy(deployment, policy)
    assert found and found[0].rule == rule
    text = str(found[0])
    assert "'agent' (d-1)" in text and "rev-1" in text and rule in text


def test_compliant_passes() -> None:
    policy = PolicySettings(
        allowed_registries=("ghcr.io/acme",),
        require_digest=True,
        max_replicas=10,
        max_cpu=4,
        max_memory_mb=8192,
    )
    assert check_policy(dep(f"ghcr.io/acme/a@{DIGEST}", cpu=2, max_scale=10), policy) == []


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with make_world(tmp_path, namespaces=("agents",)) as w:
        w.config_overrides["policy.allowedRegistries"] = ["registry.example.com"]
        w.config_overrides["policy.maxReplicas"] = 5
        yield w


def test_violation_keeps_last_good_commit_and_others_go_on(world: World) -> None:
    alpha = world.create("alpha")
    world.create("beta")
    assert world.cycle().exit_code() == 0
    good_head = world.head()
    # alpha's next revision comes from a look-alike registry: refused.
    world.admin.patch_deployment(
        alpha["id"],
        {"source_revision_config": {"image_uri": "registry.example.com.evil.io/acme/agent:6.6.6"}},
    )
    world.create("gamma")
    report = world.cycle()
    assert report.exit_code() == 1
    by_name = {o.name: o for o in report.outcomes}
    assert by_name["alpha"].action == "failed"
    assert "allowedRegistries" in (by_name["alpha"].error or "")
    assert alpha["id"] in (by_name["alpha"].error or "")
    assert by_name["gamma"].action == "deployed"
    subjects = world.subjects()
    assert subjects[0].startswith("deploy(agents/gamma)")
    assert not any("evil" in s for s in subjects)
    assert world.head() != good_head
    # diff shows the violation too, and status reports it from the last run.
    config = world.write_config()
    diff = subprocess.run(
        [sys.executable, "-m", "bridge", "diff", "--config", str(config), "--no-color"],
        capture_output=True,
        text=True,
        env=world.env,
        check=False,
    )
    assert diff.returncode == 1 and "allowedRegistries" in diff.stdout + diff.stderr
    from bridge.commands.statusfile import write_status

    write_status(world.settings(), report, 0.0)
    status = subprocess.run(
        [sys.executable, "-m", "bridge", "status", "--config", str(config), "--output", "json"],
        capture_output=True,
        text=True,
        env=world.env,
        check=False,
    )
    rows = {r["name"]: r for r in json.loads(status.stdout)["deployments"]}
    assert status.returncode == 1
    assert "allowedRegistries" in rows["alpha"]["lastError"]
    assert rows["alpha"]["pushed"] is False and rows["beta"]["pushed"] is True
    # A compliant revision after the rejected one lands.
    world.admin.patch_deployment(
        alpha["id"],
        {"source_revision_config": {"image_uri": "registry.example.com/acme/agent:7.0.0"}},
    )
    report = world.cycle()
    assert report.exit_code() == 0
    assert world.subjects()[0].startswith(
        "deploy(agents/alpha): registry.example.com/acme/agent:7.0.0"
    )
