"""A new revision touches the app only; Postgres and Redis change only with their own spec."""

from __future__ import annotations

import dataclasses

import pytest

from bridge.rendering.rendering import render_deployment
from tests.rendering.support import load_case

pytestmark = pytest.mark.quick  # needs nothing beside the checkout: run in a fresh clone


def test_new_revision_changes_only_the_app() -> None:
    dep, ctx, _ = load_case("full-resource-spec")
    before = render_deployment(dep, ctx, name="support-agent").files
    newer = dataclasses.replace(
        dep, image_uri="registry.example.com/acme/support-agent:1.5.0", revision_id="rev-2"
    )
    after = render_deployment(newer, ctx, name="support-agent").files
    changed = sorted(f for f in before if before[f] != after[f])
    assert changed == ["agent-server.yaml", "queue-worker.yaml"]


def test_db_size_change_touches_only_postgres() -> None:
    dep, ctx, _ = load_case("full-resource-spec")
    before = render_deployment(dep, ctx, name="support-agent").files
    spec = dataclasses.replace(dep.resource_spec, db_storage_gi=100)
    after = render_deployment(
        dataclasses.replace(dep, resource_spec=spec), ctx, name="support-agent"
    ).files
    assert sorted(f for f in before if before[f] != after[f]) == ["postgres.yaml"]


def test_autoscaled_deployments_leave_replicas_to_keda() -> None:
    import yaml

    dep, ctx, _ = load_case("autoscaled")
    files = render_deployment(dep, ctx, name="research-agent").files
    agent = next(yaml.safe_load_all(files["agent-server.yaml"]))
    assert "replicas" not in agent["spec"]
    fixed, fctx, _ = load_case("full-resource-spec")
    agent = next(
        yaml.safe_load_all(render_deployment(fixed, fctx, name="x").files["agent-server.yaml"])
    )
    assert agent["spec"]["replicas"] == 2
