"""The Argo CD API source against a loopback fake whose answers are checked
against Argo CD's own API description (../shared; skipped there when absent)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.health.applications import StreamEvent
from bridge.health.argocd import (
    LIST_FIELDS,
    ArgoCDClient,
    HealthSourceError,
    HealthSourceRefused,
    HealthSourceUnavailable,
    Listing,
    StreamFollower,
    TokenSource,
)
from bridge.health.observations import ObservationStore
from bridge.health.rules import argocd_observations
from bridge.health.settings import ArgoCDSettings
from bridge.redaction import Redacted
from tests.health.argocd_fake import END, FakeArgoCD, self_signed, serve
from tests.health.support import application, shared_fixture

pytestmark = pytest.mark.quick
TOKEN = "argocd-api-token-0123456789abcdef"
NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)


def as_served(doc: dict[str, Any]) -> dict[str, Any]:
    """An Application as the API serves it: no apiVersion/kind (the fixture is
    the stored object, the API's ApplicationList items carry neither)."""
    return {k: v for k, v in doc.items() if k not in ("apiVersion", "kind")}


def labelled(doc: dict[str, Any], deployment_id: str = "0b1c") -> dict[str, Any]:
    labels = doc["metadata"].setdefault("labels", {})
    labels["app.kubernetes.io/part-of"] = "langsmith-gitops-bridge"
    labels["langsmith.com/deployment-id"] = deployment_id
    return doc


@pytest.fixture
def fake() -> Iterator[FakeArgoCD]:
    with serve(FakeArgoCD(token=TOKEN)) as running:
        yield running
    # Whatever a test did, the fake never sent a body Argo CD's API description rejects.
    assert running.problems == [], running.problems[:5]


def client(fake: FakeArgoCD, **kw: Any) -> ArgoCDClient:
    settings = ArgoCDSettings(url=fake.url, token_env="ARGOCD_TOKEN", token=Redacted(TOKEN), **kw)
    made = ArgoCDClient.from_settings(settings, timeout=5.0)
    OPEN.append(made)
    return made


OPEN: list[ArgoCDClient] = []


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    yield
    while OPEN:
        OPEN.pop().close()


def raw_client(fake: FakeArgoCD, **kw: Any) -> ArgoCDClient:
    made = ArgoCDClient(
        httpx.Client(base_url=fake.url + "/", timeout=5), TokenSource(Redacted(TOKEN)), **kw
    )
    OPEN.append(made)
    return made


def from_settings(settings: ArgoCDSettings, **kw: Any) -> ArgoCDClient:
    made = ArgoCDClient.from_settings(settings, **kw)
    OPEN.append(made)
    return made


def test_the_swagger_check_runs_where_shared_is() -> None:
    fake = FakeArgoCD(token=TOKEN)
    if not fake.swagger_checked:
        pytest.skip(
            "../shared/reference/consumers/argocd-applications.swagger.json is absent: "
            "the fake's answers are not checked against Argo CD's API description"
        )
    assert fake.swagger.errors("list", {"items": [{"metadata": {"name": "x"}, "bogus": 1}]})


def test_list_selects_by_label_and_replays_the_real_application(fake: FakeArgoCD) -> None:
    real = labelled(as_served(shared_fixture()))
    ours = application("agents-bot")
    stranger = application("not-ours")
    del stranger["metadata"]["labels"]
    fake.apps = [real, ours, stranger]
    argo = client(fake, app_namespace=None)
    listing = argo.list_applications()
    assert sorted(a.key for a in listing.applications) == [
        "argo-cd/velero-test",
        "argocd/agents-bot",
    ]
    path, query, auth = fake.requests[-1]
    assert path == "/api/v1/applications" and auth == f"Bearer {TOKEN}"
    assert query["selector"] == ["app.kubernetes.io/part-of=langsmith-gitops-bridge"]
    assert query["fields"] == [LIST_FIELDS]
    assert "appNamespace" not in query
    velero = next(a for a in listing.applications if a.name == "velero-test")
    [obs] = argocd_observations(velero, source="argocd", now=NOW)
    # Trimmed by `fields` as Argo CD would: the rules still have all they need.
    assert obs.status == "healthy" and obs.applied == "ea8759964626a583667a2bfd08f334ec2070040a"
    assert obs.scope is not None and obs.scope.path == "instances/test"


def test_stale_health_through_the_api(fake: FakeArgoCD) -> None:
    fake.apps = [
        application(
            health="Healthy", finished="2026-05-01T10:00:05Z", reconciled="2026-05-01T10:00:01Z"
        )
    ]
    [app] = client(fake).list_applications().applications
    [obs] = argocd_observations(app, source="argocd", now=NOW)
    assert obs.status == "unknown" and "not yet reconciled" in obs.reason


def test_app_namespace_is_passed(fake: FakeArgoCD) -> None:
    other = application("elsewhere")
    other["metadata"]["namespace"] = "team-a"
    fake.apps = [application(), other]
    listing = client(fake, app_namespace="team-a").list_applications()
    assert [a.key for a in listing.applications] == ["team-a/elsewhere"]
    assert fake.requests[-1][1]["appNamespace"] == ["team-a"]


@pytest.mark.parametrize(
    ("status", "body", "error", "text"),
    [
        (401, b"", HealthSourceRefused, "refused the token"),
        (403, b'{"message": "permission denied"}', HealthSourceRefused, "HTTP 403"),
        (404, b"", HealthSourceRefused, "HTTP 404"),
        (502, b"<html>bad gateway</html>", HealthSourceUnavailable, "HTTP 502"),
        (200, b"not json", HealthSourceUnavailable, "not valid JSON"),
        (200, b'{"items": {"a": 1}}', HealthSourceUnavailable, "`items` is not a list"),
        (200, b"[" * 5000 + b"]" * 5000, HealthSourceUnavailable, "nested"),
    ],
)
def test_refusals_and_garbage_are_ours_never_httpx(
    fake: FakeArgoCD, status: int, body: bytes, error: type[HealthSourceError], text: str
) -> None:
    fake.fail_next = [(status, body)]
    with pytest.raises(error, match=text) as caught:
        client(fake).list_applications()
    assert TOKEN not in str(caught.value)


def test_a_bad_token_and_an_unreachable_server(fake: FakeArgoCD) -> None:
    settings = ArgoCDSettings(url=fake.url, token_env="T", token=Redacted("wrong-token"))
    with pytest.raises(HealthSourceRefused, match="HTTP 401"):
        from_settings(settings).list_applications()
    closed = ArgoCDSettings(url="http://127.0.0.1:9", token_env="T", token=Redacted(TOKEN))
    with pytest.raises(HealthSourceUnavailable, match="ConnectError"):
        from_settings(closed, timeout=2).list_applications()


def test_caps_on_bytes_count_and_time(fake: FakeArgoCD) -> None:
    fake.apps = [application(f"app-{i}") for i in range(5)]
    with pytest.raises(HealthSourceUnavailable, match="at most 4 are read"):
        raw_client(fake, max_apps=4).list_applications()
    with pytest.raises(HealthSourceUnavailable, match="larger than 1000 bytes"):
        raw_client(fake, max_bytes=1000).list_applications()
    ticks = iter(range(0, 10_000, 40))  # every read of the clock: 40 s later
    slow = raw_client(fake, deadline=30, clock=lambda: float(next(ticks)))
    with pytest.raises(HealthSourceUnavailable, match="longer than 30s"):
        slow.list_applications()


def test_one_malformed_application_is_skipped_and_said(fake: FakeArgoCD) -> None:
    fake.list_body = json.dumps(
        {
            "items": [
                application("good"),
                {"metadata": {"name": "bad"}, "status": {"reconciledAt": 5}},
            ]
        }
    ).encode()
    listing = client(fake).list_applications()
    assert [a.name for a in listing.applications] == ["good"]
    assert len(listing.invalid) == 1 and "bad" in listing.invalid[0]


def test_token_file_is_read_again_for_each_request(fake: FakeArgoCD, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("old-token-0123456789\n")
    settings = ArgoCDSettings(url=fake.url, token_file=token)
    argo = from_settings(settings)
    with pytest.raises(HealthSourceRefused):
        argo.list_applications()
    token.write_text(TOKEN + "\n")  # rotated (a projected token, a renewed Secret)
    assert argo.list_applications().applications == ()


def test_private_tls_with_a_ca_file(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    with serve(FakeArgoCD(token=TOKEN, apps=[application()]), tls=(cert, key)) as fake:
        trusted = ArgoCDSettings(url=fake.url, token_env="T", token=Redacted(TOKEN), ca_file=cert)
        assert len(from_settings(trusted).list_applications().applications) == 1
        untrusted = ArgoCDSettings(url=fake.url, token_env="T", token=Redacted(TOKEN))
        with pytest.raises(HealthSourceUnavailable, match="ConnectError"):
            from_settings(untrusted).list_applications()


# --- the stream --------------------------------------------------------------------------


def test_stream_framing_and_event_types(fake: FakeArgoCD) -> None:
    fake.apps = [application("a"), application("b")]
    fake.chunk = 5  # every line cut across many chunks
    fake.stream_prefix = [b"\n"]  # a blank keep-alive line is no event
    fake.events.put(("MODIFIED", application("a", health="Degraded")))
    fake.events.put(
        b'{"result": {"type": "MODIFIED", "application": {"metadata": {}}}}\n'
    )  # malformed: skipped
    fake.events.put(("DELETED", application("b")))
    fake.events.put(END)
    events = list(client(fake).stream(idle_timeout=5))
    assert [(e.kind, e.application.name) for e in events] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("MODIFIED", "a"),
        ("DELETED", "b"),
    ]
    assert events[2].application.health_status == "Degraded"
    path, query, _ = fake.requests[-1]
    assert path == "/api/v1/stream/applications" and query["fields"][0].startswith("result.type,")


def test_stream_error_line_and_oversized_line(fake: FakeArgoCD) -> None:
    fake.apps = [application("a")]
    fake.events.put(
        b'{"error": {"grpc_code": 14, "http_code": 503, "message": "unavailable", "http_status": "Service Unavailable"}}\n'
    )
    with pytest.raises(HealthSourceUnavailable, match="HTTP 503: unavailable"):
        list(client(fake).stream(idle_timeout=5))
    with serve(FakeArgoCD(token=TOKEN, apps=[application("a")])) as other:
        other.events.put(b'{"result": ' + b" " * 5000)  # no end of line in sight
        small = raw_client(other, max_line_bytes=4096)
        with pytest.raises(HealthSourceUnavailable, match="stream line larger than 4096"):
            list(small.stream(idle_timeout=5))


def test_an_idle_stream_ends_quietly(fake: FakeArgoCD) -> None:
    fake.apps = [application("a")]
    started = time.monotonic()
    events = list(client(fake).stream(idle_timeout=0.5))
    assert [e.kind for e in events] == ["ADDED"] and time.monotonic() - started < 5


def test_follower_resyncs_reconnects_with_backoff_and_stops(fake: FakeArgoCD) -> None:
    fake.apps = [application("a"), application("b")]
    store = ObservationStore()
    waits: list[float] = []
    reach: list[bool] = []
    listings: list[Listing] = []
    seen: list[StreamEvent] = []

    def on_listing(listing: Listing) -> None:
        listings.append(listing)
        keep = []
        for app in listing.applications:
            for obs in argocd_observations(app, source="argocd", now=NOW):
                store.record(obs)
                keep.append(obs.object)
        store.forget("argocd", keep)

    follower = StreamFollower(
        client(fake),
        on_listing=on_listing,
        on_event=seen.append,
        on_reachable=lambda ok, why: reach.append(ok),
        jitter=lambda: 0.0,
        idle_timeout=5,
    )

    def wait(delay: float) -> bool:
        waits.append(delay)
        if len(waits) == 1:
            fake.apps = fake.apps[:1]  # b deleted while disconnected
            fake.fail_next = [(503, b""), (503, b"")]  # two failed reconnects
        if len(waits) >= 4:
            follower.stop.set()
        fake.events.put(END)
        return follower.stop.is_set()

    follower._wait = wait
    fake.events.put(END)  # the first stream ends after its ADDEDs
    runner = threading.Thread(target=follower.run)
    runner.start()
    runner.join(timeout=20)
    assert not runner.is_alive()
    # Clean end -> reconnect at once; then 503 twice -> 1 s, 2 s; then a clean one.
    assert waits == [0.0, 1.0, 2.0, 0.0]
    assert reach == [True, False, False, True]
    assert [o.object for o in store.snapshot()] == ["argocd/a"]  # b forgotten at the resync
    assert [e.application.name for e in seen] == ["a", "b", "a"]
