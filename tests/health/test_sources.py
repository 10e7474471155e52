"""The glue `run` uses: the poller, the streamer thread and the webhook routes."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from bridge.health.argocd import ArgoCDClient
from bridge.health.metrics import HealthMetrics
from bridge.health.observations import ObservationStore
from bridge.health.settings import (
    ArgoCDNotificationsSettings,
    ArgoCDSettings,
    FluxSettings,
    HealthSettings,
)
from bridge.health.sources import ArgoCDPoller, ArgoCDStreamer, webhook_routes
from bridge.redaction import Redacted
from tests.health.argocd_fake import FakeArgoCD, serve
from tests.health.support import application
from tests.health.test_webhooks import SECRET, flux_body

pytestmark = pytest.mark.quick
TOKEN = "argocd-api-token-0123456789abcdef"


@pytest.fixture
def fake() -> Iterator[FakeArgoCD]:
    with serve(FakeArgoCD(token=TOKEN)) as running:
        yield running
    assert running.problems == []


def make_client(fake: FakeArgoCD) -> ArgoCDClient:
    return ArgoCDClient.from_settings(
        ArgoCDSettings(url=fake.url, token_env="T", token=Redacted(TOKEN)), timeout=5
    )


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_the_poller_records_forgets_and_reports_reachability(fake: FakeArgoCD) -> None:
    registry, store = CollectorRegistry(), ObservationStore()
    fake.apps = [application("a"), application("b")]
    with make_client(fake) as client:
        poller = ArgoCDPoller(client, store, HealthMetrics(registry))
        assert poller.poll() and len(store) == 2
        assert value(registry, "gitops_bridge_health_source_up", source="argocd") == 1
        fake.apps = [application("a")]
        assert poller.poll() and [o.object for o in store.snapshot()] == ["argocd/a"]
        fake.fail_next = [(503, b"")]
        assert not poller.poll() and "HTTP 503" in (poller.last_error or "")
        assert value(registry, "gitops_bridge_health_source_up", source="argocd") == 0
        assert len(store) == 1  # an unreachable source forgets nothing


def test_the_streamer_runs_in_its_thread_and_stops(fake: FakeArgoCD) -> None:
    store = ObservationStore()
    fake.apps = [application("a")]
    streamer = ArgoCDStreamer(make_client(fake), store)
    streamer.start()
    deadline = time.monotonic() + 10
    while len(store) < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    fake.events.put(("MODIFIED", application("b")))
    while len(store) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    fake.events.put(("DELETED", application("a")))
    while len(store) != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [o.object for o in store.snapshot()] == ["argocd/b"]
    streamer.stop()
    assert streamer._thread is not None and not streamer._thread.is_alive()


def test_webhook_routes_record_and_count() -> None:
    registry, store = CollectorRegistry(), ObservationStore()
    settings = HealthSettings(
        flux=FluxSettings("FLUX_WEBHOOK_TOKEN", Redacted(SECRET)),
        argocd_notifications=ArgoCDNotificationsSettings("T", Redacted("n" * 32)),
    )
    routes = {
        r.path: r
        for r in webhook_routes(settings, store, HealthMetrics(registry), wall_clock=lambda: 1000.0)
    }
    assert set(routes) == {"/hooks/flux", "/hooks/argocd"}
    flux = routes["/hooks/flux"]
    assert flux.method == "POST" and flux.max_body == 1024 * 1024
    newer = flux_body("a" * 40, when="2026-05-01T10:05:00Z")
    older = flux_body("b" * 40, when="2026-05-01T10:00:00Z")

    def sign(body: bytes) -> dict[str, str]:
        return {
            "x-signature": "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        }

    assert flux.handle(sign(newer), newer).status == 202
    assert flux.handle(sign(newer), newer).status == 200
    assert flux.handle(sign(older), older).status == 200
    assert flux.handle({}, newer).status == 401
    for outcome in ("accepted", "duplicate", "stale", "unauthorized"):
        assert (
            value(
                registry,
                "gitops_bridge_health_webhook_requests_total",
                source="flux",
                outcome=outcome,
            )
            == 1
        )
    assert (
        value(registry, "gitops_bridge_health_source_last_event_timestamp_seconds", source="flux")
        == 1000.0
    )
    assert webhook_routes(HealthSettings(), store) == []
    assert datetime.now(UTC)  # the clock is only injected, never needed here
