"""deploy/: builds with real Kustomize, validates, and keeps the operational promises."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from bridge.validation.kustomize import kustomize_build
from bridge.validation.objects import validate_objects

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def build(path: Path) -> list[dict[str, Any]]:
    objects = kustomize_build(path)
    errors, _ = validate_objects(objects)
    assert errors == []
    return objects


@pytest.mark.parametrize("variant", ["", "sharded"])
def test_builds_validates_and_is_locked_down(variant: str) -> None:
    objects = build(DEPLOY / variant)
    kinds = sorted(o["kind"] for o in objects)
    workload_kind = "StatefulSet" if variant else "Deployment"
    assert kinds == sorted(["ConfigMap", "Service", "ServiceAccount", workload_kind])
    # No RBAC, no Secret with values: the bridge needs none and holds none here.
    assert not {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "Secret"} & set(kinds)
    sa = next(o for o in objects if o["kind"] == "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    workload = next(o for o in objects if o["kind"] == workload_kind)
    pod = workload["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    env = {e["name"]: e for e in container["env"]}
    for name in ("LANGSMITH_API_KEY", "GITOPS_BRIDGE_KEY"):
        assert "value" not in env[name] and "secretKeyRef" in env[name]["valueFrom"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/var/lib/gitops-bridge" in mounts and "/tmp" in mounts
    if variant:
        assert env["BRIDGE_SHARD"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert env["BRIDGE_SHARD_COUNT"]["value"] == str(workload["spec"]["replicas"])


def test_config_in_the_configmap_loads(tmp_path: Path) -> None:
    from bridge.config import load_settings

    settings = load_settings(
        DEPLOY / "common" / "bridge.yaml",
        env={"LANGSMITH_API_KEY": "lsv2_x", "GITOPS_BRIDGE_KEY": "k" * 64},
    )
    assert settings.targets[0].namespace == "agents"


def test_servicemonitor_component_builds(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    shutil.copytree(DEPLOY, overlay / "deploy")
    (overlay / "kustomization.yaml").write_text(
        "resources: [deploy]\ncomponents: [deploy/components/servicemonitor]\n"
    )
    objects = kustomize_build(overlay)
    assert "ServiceMonitor" in {o["kind"] for o in objects}
