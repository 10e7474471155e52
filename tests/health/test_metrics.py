"""The health series on a registry: bounded labels, series only while something is pending."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from bridge.health import metrics as health_metrics
from bridge.health.metrics import DeploymentState, HealthMetrics

pytestmark = pytest.mark.quick
COMMITTED = datetime(2026, 5, 1, 10, tzinfo=UTC)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_counts_per_target_and_pending_series() -> None:
    registry = CollectorRegistry()
    m = HealthMetrics(registry)
    m.update(
        [
            DeploymentState("agents", "agents/a", "synced", "healthy", COMMITTED),
            DeploymentState("agents", "agents/b", "out-of-date", "degraded", COMMITTED),
            DeploymentState("agents", "agents/c", "synced", "progressing", COMMITTED),
            DeploymentState("staging", "staging/d", "unknown", "unknown", COMMITTED, covered=False),
        ]
    )
    assert (
        sample(
            registry,
            "gitops_bridge_health_deployments",
            target="agents",
            sync="synced",
            status="healthy",
        )
        == 1
    )
    assert (
        sample(
            registry,
            "gitops_bridge_health_deployments",
            target="agents",
            sync="unknown",
            status="degraded",
        )
        == 0
    )
    assert (
        sample(
            registry, "gitops_bridge_deployment_degraded", target="agents", deployment="agents/b"
        )
        == 1
    )
    waiting = "gitops_bridge_deployment_waiting_since_timestamp_seconds"
    assert (
        sample(registry, waiting, target="agents", deployment="agents/b", stage="sync")
        == COMMITTED.timestamp()
    )
    assert (
        sample(registry, waiting, target="agents", deployment="agents/c", stage="healthy")
        == COMMITTED.timestamp()
    )
    assert (
        sample(registry, waiting, target="agents", deployment="agents/a", stage="healthy") is None
    )
    assert (
        sample(registry, waiting, target="staging", deployment="staging/d", stage="sync") is None
    )  # nobody watches it
    # b recovers: its series go, the counts follow.
    m.update([DeploymentState("agents", "agents/b", "synced", "healthy", COMMITTED)])
    assert (
        sample(
            registry, "gitops_bridge_deployment_degraded", target="agents", deployment="agents/b"
        )
        is None
    )
    assert sample(registry, waiting, target="agents", deployment="agents/b", stage="sync") is None
    assert (
        sample(
            registry,
            "gitops_bridge_health_deployments",
            target="agents",
            sync="out-of-date",
            status="degraded",
        )
        == 0
    )
    assert (
        sample(
            registry,
            "gitops_bridge_health_deployments",
            target="staging",
            sync="unknown",
            status="unknown",
        )
        == 0
    )


def test_per_deployment_series_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health_metrics, "MAX_DEPLOYMENT_SERIES", 3)
    registry = CollectorRegistry()
    m = HealthMetrics(registry)
    m.update(
        [
            DeploymentState("agents", f"agents/d{i}", "synced", "degraded", COMMITTED)
            for i in range(5)
        ]
    )
    text = generate_latest(registry).decode()
    assert text.count("gitops_bridge_deployment_degraded{") == 3
    assert (
        sample(registry, "gitops_bridge_health_deployments_unlabelled") == 2 + 2
    )  # 5 degraded and 5 waiting, 3 of each labelled


def test_stages_sources_and_webhooks() -> None:
    registry = CollectorRegistry()
    m = HealthMetrics(registry)
    m.stage_reached("agents", "commit", 12.0)
    m.stage_reached("agents", "healthy", 150.0)
    m.stage_reached("agents", "merged", 60.0)  # not a timed stage: nothing
    m.stage_reached("agents", "sync", None)
    assert (
        sample(
            registry, "gitops_bridge_revision_stage_seconds_count", target="agents", stage="commit"
        )
        == 1
    )
    assert (
        sample(
            registry,
            "gitops_bridge_revision_stage_seconds_bucket",
            target="agents",
            stage="healthy",
            le="300.0",
        )
        == 1
    )
    assert (
        sample(
            registry, "gitops_bridge_revision_stage_seconds_count", target="agents", stage="merged"
        )
        is None
    )
    from bridge.health.road import Road

    road = Road("d", "r", {"created": COMMITTED, "synced": COMMITTED.replace(minute=2)})
    m.road_stage_reached("agents", "synced", road)
    m.road_stage_reached("agents", "pushed", road)
    assert (
        sample(registry, "gitops_bridge_revision_stage_seconds_sum", target="agents", stage="sync")
        == 120
    )
    m.source_read("argocd", True, when=1000.0)
    m.source_read("argocd", False)
    assert sample(registry, "gitops_bridge_health_source_up", source="argocd") == 0
    assert (
        sample(
            registry, "gitops_bridge_health_source_last_event_timestamp_seconds", source="argocd"
        )
        == 1000.0
    )
    m.webhook_request("flux", "unauthorized", when=2000.0)
    m.webhook_request("flux", "accepted", when=2001.0)
    assert (
        sample(
            registry,
            "gitops_bridge_health_webhook_requests_total",
            source="flux",
            outcome="unauthorized",
        )
        == 1
    )
    assert (
        sample(registry, "gitops_bridge_health_source_last_event_timestamp_seconds", source="flux")
        == 2001.0
    )


def test_it_shares_the_bridge_registry_without_collisions() -> None:
    from bridge.observability.metrics import Metrics

    bridge = Metrics()
    HealthMetrics(bridge.registry)  # a name clash would raise here
    assert "gitops_bridge_health_source_up" in generate_latest(bridge.registry).decode()
