"""The /healthz, /readyz and /metrics endpoint of `run --listen`, over real HTTP."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from bridge.errors import ConfigError
from bridge.observability.metrics import MAX_DEPLOYMENT_SERIES, Health, Metrics
from bridge.observability.serving import RunningServer, parse_listen, start_server


@dataclass
class Out:
    target: str
    namespace: str
    name: str
    action: str
    error: str | None = None


@dataclass
class T:
    error: object = None


@dataclass
class R:
    outcomes: list[Out] = field(default_factory=list)
    targets: list[T] = field(default_factory=lambda: [T()])


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def served() -> Iterator[tuple[RunningServer, Health, Metrics, Clock]]:
    clock = Clock()
    health = Health(poll_interval=10, clock=clock)
    metrics = Metrics()
    server = start_server("127.0.0.1:0", health, metrics.registry)
    yield server, health, metrics, clock
    server.stop()


def get(server: RunningServer, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{server.address}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_health_and_readiness(served: tuple[RunningServer, Health, Metrics, Clock]) -> None:
    server, health, _metrics, clock = served
    assert get(server, "/healthz") == (200, "ok\n")
    status, body = get(server, "/readyz")
    assert status == 503 and "no successful cycle yet" in body
    health.cycle_succeeded(clock.now)
    assert get(server, "/readyz")[0] == 200
    clock.now += 29
    assert get(server, "/readyz")[0] == 200
    clock.now += 2  # beyond 3 poll intervals
    health.cycle_failed(clock.now, "control plane: ControlPlaneUnavailable")
    status, body = get(server, "/readyz")
    assert status == 503 and "ControlPlaneUnavailable" in body
    assert get(server, "/nope")[0] == 404


def test_metrics(served: tuple[RunningServer, Health, Metrics, Clock]) -> None:
    server, _health, metrics, _clock = served
    metrics.control_plane_request("200")
    metrics.commit("agents", "deploy")
    metrics.push("agents", "ok")
    metrics.observe_cycle(0.3)
    metrics.record_report(
        R(
            outcomes=[
                Out("agents", "agents", "a", "deployed"),
                Out("agents", "agents", "b", "failed", "revision r breaks policy rule maxCpu: x"),
            ]
        )
    )
    status, body = get(server, "/metrics")
    assert status == 200
    for line in (
        'gitops_bridge_control_plane_requests_total{status="200"} 1.0',
        'gitops_bridge_commits_total{kind="deploy",target="agents"} 1.0',
        'gitops_bridge_pushes_total{outcome="ok",target="agents"} 1.0',
        'gitops_bridge_deployments{state="failed",target="agents"} 1.0',
        'gitops_bridge_deployment_failing{deployment="agents/b",kind="policy",target="agents"} 1.0',
        "gitops_bridge_cycle_duration_seconds_count 1.0",
    ):
        assert line in body, line
    assert "gitops_bridge_last_successful_cycle_timestamp_seconds" in body
    # A deployment that recovers loses its failing series.
    metrics.record_report(R(outcomes=[Out("agents", "agents", "b", "unchanged")]))
    body = get(server, "/metrics")[1]
    assert 'deployment="agents/b"' not in body
    assert 'gitops_bridge_deployments{state="failed",target="agents"} 0.0' in body


def test_failing_series_are_bounded() -> None:
    metrics = Metrics()
    n = MAX_DEPLOYMENT_SERIES + 5
    metrics.record_report(R(outcomes=[Out("t", "ns", f"d{i}", "failed", "x") for i in range(n)]))
    assert metrics.failing_unlabelled._value.get() == 5


def test_listen_values() -> None:
    assert parse_listen("127.0.0.1:9090") == ("127.0.0.1", 9090)
    assert parse_listen(":9090") == ("0.0.0.0", 9090)
    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_listen("9090x")
