"""The sources, wired to the ObservationStore and HealthMetrics: what `run` starts.

Owns the glue each source needs, so the wiring in bridge/commands only picks
by settings: `ArgoCDPoller.poll()` once per cycle (mode poll), `ArgoCDStreamer`
a daemon thread (mode stream), and `webhook_routes()` the two `POST /hooks/*`
routes for the `--listen` server, each a (method, path, max_body, handle)
whose `handle(headers, body)` returns the HookResult to answer with.

Must not know the HTTP server (bridge/commands/readback.py adapts a WebhookRoute
to bridge/observability/serving.py's Route), the cycle or git.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from bridge.health.applications import StreamEvent
from bridge.health.argocd import ArgoCDClient, HealthSourceError, Listing, StreamFollower
from bridge.health.metrics import HealthMetrics
from bridge.health.observations import ObservationStore
from bridge.health.rules import argocd_observations
from bridge.health.settings import HealthSettings
from bridge.health.webhooks import (
    ARGOCD_PATH,
    FLUX_PATH,
    MAX_BODY,
    ArgoCDNotificationsWebhook,
    FluxWebhook,
    HookResult,
    deliver,
)

log = logging.getLogger("bridge.health")
SOURCE = "argocd"


def _now() -> datetime:
    return datetime.now(UTC)


def record_listing(
    listing: Listing, store: ObservationStore, *, now: datetime, source: str = SOURCE
) -> int:
    """Every Application of a complete listing into the store; those no longer
    listed are forgotten. How many observations were new."""
    kept, new = [], 0
    for app in listing.applications:
        for obs in argocd_observations(app, source=source, now=now):
            kept.append(obs.object)
            new += store.record(obs) == "new"
    store.forget(source, kept)
    for why in listing.invalid:
        log.warning("Argo CD: %s; skipped", why)
    return new


def record_event(event: StreamEvent, store: ObservationStore, *, now: datetime) -> None:
    if event.kind == "DELETED":
        store.drop(SOURCE, event.application.key)
        return
    for obs in argocd_observations(event.application, source=SOURCE, now=now):
        store.record(obs)


class ArgoCDPoller:
    """Mode poll: one list per call (the wiring calls it once per cycle)."""

    def __init__(
        self,
        client: ArgoCDClient,
        store: ObservationStore,
        metrics: HealthMetrics | None = None,
        *,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.client, self.store, self.metrics, self._clock = client, store, metrics, clock
        self.last_error: str | None = None  # for `status`: says so instead of guessing

    def poll(self) -> bool:
        try:
            listing = self.client.list_applications()
        except HealthSourceError as e:
            self.last_error = str(e)
            if self.metrics is not None:
                self.metrics.source_read(SOURCE, False)
            return False
        now = self._clock()
        record_listing(listing, self.store, now=now)
        self.last_error = None
        if self.metrics is not None:
            self.metrics.source_read(SOURCE, True, now.timestamp())
        return True


class ArgoCDStreamer:
    """Mode stream: a daemon thread following the application stream."""

    def __init__(
        self,
        client: ArgoCDClient,
        store: ObservationStore,
        metrics: HealthMetrics | None = None,
        *,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.store, self.metrics, self._clock = store, metrics, clock
        self.last_error: str | None = None
        self.follower = StreamFollower(
            client,
            on_listing=self._listing,
            on_event=lambda event: record_event(event, store, now=clock()),
            on_reachable=self._reachable,
        )
        self._thread: threading.Thread | None = None

    def _listing(self, listing: Listing) -> None:
        record_listing(listing, self.store, now=self._clock())

    def _reachable(self, ok: bool, why: str) -> None:
        self.last_error = None if ok else why
        if self.metrics is not None:
            self.metrics.source_read(SOURCE, ok, self._clock().timestamp() if ok else None)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.follower.run, name="argocd-stream", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.follower.stop.set()
        self.follower.client.interrupt()  # a read blocked on an idle stream ends now
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        self.follower.client.close()


@dataclass(frozen=True)
class WebhookRoute:
    method: str
    path: str
    max_body: int
    handle: Callable[[Mapping[str, str], bytes], HookResult]


def webhook_routes(
    settings: HealthSettings,
    store: ObservationStore,
    metrics: HealthMetrics | None = None,
    *,
    wall_clock: Callable[[], float] = time.time,
) -> list[WebhookRoute]:
    """`POST /hooks/flux` and `POST /hooks/argocd`, for the sources configured."""
    routes = []
    pushed: list[tuple[str, str, Callable[[Mapping[str, str], bytes], HookResult]]] = []
    if settings.flux is not None:
        pushed.append(("flux", FLUX_PATH, FluxWebhook(settings.flux.webhook_secret).handle))
    if settings.argocd_notifications is not None:
        hook = ArgoCDNotificationsWebhook(settings.argocd_notifications.token)
        pushed.append(("argocd-notifications", ARGOCD_PATH, hook.handle))
    for source, path, handle in pushed:
        routes.append(
            WebhookRoute(
                "POST", path, MAX_BODY, _recording(source, handle, store, metrics, wall_clock)
            )
        )
    return routes


def _recording(
    source: str,
    handle: Callable[[Mapping[str, str], bytes], HookResult],
    store: ObservationStore,
    metrics: HealthMetrics | None,
    wall_clock: Callable[[], float],
) -> Callable[[Mapping[str, str], bytes], HookResult]:
    def run(headers: Mapping[str, str], body: bytes) -> HookResult:
        result = deliver(handle(headers, body), store)
        if metrics is not None:
            metrics.webhook_request(source, result.outcome, wall_clock())
        if result.status >= 400:
            # One line, no body and no header value: the message says what was wrong.
            log.warning("%s webhook: HTTP %d, %s", source, result.status, result.message)
        return result

    return run
