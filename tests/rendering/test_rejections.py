"""Input the renderer refuses: each is a clear, per-deployment error and writes nothing."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from bridge.errors import InvalidDeployment
from bridge.models import parse_deployment
from bridge.rendering.naming import folder_name
from bridge.rendering.rendering import render_deployment
from tests.rendering.support import CASES, context

pytestmark = pytest.mark.quick  # needs nothing beside the checkout: run in a fresh clone

BASE = json.loads((CASES / "minimal" / "case.json").read_text())["deployment"]


def spec(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        d["source_config"]["resource_spec"] = fields

    return mutate


def image(value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        d["source_revision_config"]["image_uri"] = value

    return mutate


def secrets(*items: dict[str, str]) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        d["secrets"] = list(items)

    return mutate


def namespace(value: str | None) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        d["source_config"]["listener_config"] = {"k8s_namespace": value}

    return mutate


CASES_REJECTED = {
    "no image": (image(None), "has no source_revision_config.image_uri"),
    "image with spaces": (image("acme/agent:1 ; rm -rf /"), "is not a valid image reference"),
    "image uppercase repo": (image("registry.example.com/Acme/Agent:1"), "not a valid image"),
    "image bad digest": (image("acme/agent@sha256:xyz"), "not a valid image reference"),
    "env not identifier": (secrets({"name": "MY-VAR", "value": "x"}), "'MY-VAR' is not a valid"),
    "env reserved": (
        secrets({"name": "POSTGRES_URI", "value": "postgres://evil"}),
        "'POSTGRES_URI', which the platform sets itself",
    ),
    "env twice": (
        secrets({"name": "A", "value": "1"}, {"name": "A", "value": "2"}),
        "sets 'A' twice",
    ),
    "namespace foreign": (namespace("kube-system"), "is not one of the listener's namespaces"),
    "namespace traversal": (namespace("../../x"), "is not a valid Kubernetes namespace name"),
    "namespace missing": (namespace(None), "has no source_config.listener_config.k8s_namespace"),
    "negative replicas": (spec(min_scale=-1), "min_scale = -1 is out of range"),
    "max below min": (spec(min_scale=5, max_scale=2), "max_scale (2) is less than min_scale (5)"),
    "zero cpu": (spec(cpu=0), "cpu = 0"),
    "absurd memory": (spec(memory_mb=10**12), "memory_mb = 1000000000000 is out of range"),
    "limit below request": (spec(cpu=4, cpu_limit=1), "cpu_limit (1) is less than cpu (4)"),
    "bad volume name": (spec(volumes=[{"name": "../x", "emptyDir": {}}]), "invalid name '../x'"),
    "sidecar without image": (spec(sidecars=[{"name": "s"}]), "has no image"),
    "sidecar named api-server": (
        spec(sidecars=[{"name": "api-server", "image": "busybox:1"}]),
        "reserved for the Agent Server",
    ),
    "bad label value": (spec(labels={"team": "a b"}), "not a valid label value"),
}


@pytest.mark.parametrize("case", sorted(CASES_REJECTED))
def test_rejected(case: str) -> None:
    mutate, message = CASES_REJECTED[case]
    raw = copy.deepcopy(BASE)
    mutate(raw)
    with pytest.raises(InvalidDeployment) as info:
        dep = parse_deployment(raw)
        render_deployment(dep, context(), name=folder_name(dep.name, dep.id))
    text = str(info.value)
    assert message in text
    # Every error names the deployment by name and id.
    assert "support-agent" in text and BASE["id"] in text
