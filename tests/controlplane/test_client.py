"""Client unit tests: paging, filtering, retries and error translation.

The HTTP side is an `httpx.MockTransport` (the transport is injected, as in
production); the integration tests in test_server.py / test_faults.py run the
same client against the real local control plane on loopback.
"""

from __future__ import annotations

import json
import re
import secrets
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.controlplane.admin import AdminClient
from bridge.controlplane.client import ControlPlaneClient, Listing, tls_verification
from bridge.errors import (
    AuthRefused,
    ControlPlaneError,
    ControlPlaneUnavailable,
    ListenerNotFound,
)
from tests.controlplane.conftest import make_settings
from tests.health.argocd_fake import FakeArgoCD, self_signed, serve

LISTENER = "7d1c55a6-0a5c-4c1c-9a43-1d7e3f2c9b10"
OTHER_LISTENER = "1b2b3c4d-0000-4000-8000-000000000001"
API_KEY = "lsv2_pt_" + secrets.token_hex(16)  # made at run time, never a real key
BASE = "https://ls.example.com/api-host"
JSON_TYPE = {"content-type": "application/json"}


def listener_doc(listener_id: str = LISTENER) -> dict[str, Any]:
    return {
        "id": listener_id,
        "compute_type": "k8s",
        "compute_id": "prod-cluster",
        "compute_config": {"k8s_namespaces": ["agents", "staging"]},
        "version": None,
        "created_at": "2025-11-01T00:00:00+00:00",
        "updated_at": "2025-11-01T00:00:00+00:00",
    }


def record(
    name: str, listener_id: str = LISTENER, source: str = "external_docker", **extra: Any
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "name": name,
        "source": source,
        "source_config": {
            "listener_id": listener_id,
            "listener_config": {"k8s_namespace": "agents"},
            "resource_spec": None,
            "custom_url": None,
        },
        "source_revision_config": {"image_uri": f"registry.example.com/{name}:1"},
        "secrets": [],
        "status": "READY",
        "latest_revision_id": str(uuid.uuid4()),
        "active_revision_id": None,
        "created_at": "2025-11-01T00:00:00+00:00",
        "updated_at": "2025-11-01T00:00:00+00:00",
    }
    doc.update(extra)
    return doc


Handler = Callable[[httpx.Request], httpx.Response]


class Plane:
    """A scripted control plane: the listener, the records, and hooks per request."""

    def __init__(self, records: list[dict[str, Any]], listener: Any = None) -> None:
        self.records = records
        self.listener = listener if listener is not None else listener_doc()
        self.requests: list[httpx.Request] = []
        self.page_hook: Callable[[int, int], httpx.Response | None] | None = None
        self.page_requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path.removeprefix("/api-host")
        if path == f"/v2/listeners/{LISTENER}":
            return httpx.Response(200, json=self.listener)
        if path == "/v2/deployments":
            offset = int(request.url.params.get("offset", "0"))
            limit = int(request.url.params.get("limit", "20"))
            self.page_requests += 1
            if self.page_hook is not None:
                response = self.page_hook(self.page_requests, offset)
                if response is not None:
                    return response
            page = self.records[offset : offset + limit]
            return httpx.Response(200, json={"resources": page, "offset": offset + len(page)})
        return httpx.Response(404, json={"detail": "Not Found"})


def client(
    handler: Handler,
    *,
    sleeps: list[float] | None = None,
    labels: list[str] | None = None,
    **settings: Any,
) -> AdminClient:
    # The admin client: the listener's client and the admin helpers, on one transport.
    recorded = sleeps if sleeps is not None else []
    return AdminClient.from_settings(
        make_settings(BASE, API_KEY, LISTENER, **settings),
        transport=httpx.MockTransport(handler),
        on_response=labels.append if labels is not None else None,
        sleep=recorded.append,
    )


def listing(handler: Handler, **kwargs: Any) -> Listing:
    with client(handler, **kwargs) as c:
        return c.list_listener_deployments()


def test_pages_until_a_short_page_and_keeps_only_this_listeners_external_docker() -> None:
    ours = [record(f"ours-{i}") for i in range(230)]
    foreign = [record(f"theirs-{i}", listener_id=OTHER_LISTENER) for i in range(10)]
    github = [record("gh", source="github", source_config={"repo_url": "https://x"})]
    ours_but_github = [record("odd", source="github")]
    no_config = [record("bare", source_config=None)]
    records = ours[:100] + foreign + github + ours[100:] + ours_but_github + no_config
    plane = Plane(records)  # 243 records: pages of 100, 100, 43

    result = listing(plane, tenant_id="11111111-2222-3333-4444-555555555555")

    assert [d.name for d in result.deployments] == [d["name"] for d in ours]
    assert result.invalid == ()
    assert result.listener.compute_id == "prod-cluster"
    assert result.listener.namespaces == ("agents", "staging")
    paths = [str(r.url) for r in plane.requests]
    assert paths[:3] == [
        f"{BASE}/v2/listeners/{LISTENER}",
        f"{BASE}/v2/deployments?limit=100&offset=0",
        f"{BASE}/v2/deployments?limit=100&offset=100",
    ]
    # After two full pages, two are asked for at once: the last one, and one
    # past the end (read ahead, not used).
    assert sorted(paths[3:]) == [
        f"{BASE}/v2/deployments?limit=100&offset=200",
        f"{BASE}/v2/deployments?limit=100&offset=300",
    ]
    for request in plane.requests:
        assert request.headers["x-api-key"] == API_KEY
        assert request.headers["x-tenant-id"] == "11111111-2222-3333-4444-555555555555"
    first = result.deployments[0]
    assert (first.namespace, first.image_uri, first.listener_id) == (
        "agents",
        "registry.example.com/ours-0:1",
        LISTENER,
    )


def test_exactly_full_last_page_needs_one_more_empty_page() -> None:
    plane = Plane([record(f"d{i}") for i in range(200)])
    result = listing(plane)
    assert len(result.deployments) == 200
    assert plane.page_requests == 3 + 1  # and one read ahead past the empty page


def test_no_tenant_header_without_tenant_id() -> None:
    plane = Plane([])
    listing(plane)
    assert all("x-tenant-id" not in r.headers for r in plane.requests)


def test_invalid_records_are_reported_by_id_and_the_others_kept() -> None:
    good = [record("good-1"), record("good-2")]
    bad_name = record("x")
    bad_name["name"] = 42
    bad_secret = record("bad-secret", secrets=[{"name": "TOKEN"}])
    bad_config = record("bad-config", source_config="not an object")
    plane = Plane([good[0], bad_name, bad_secret, bad_config, good[1]])

    result = listing(plane)

    assert [d.name for d in result.deployments] == ["good-1", "good-2"]
    by_id = {e.deployment_id: e for e in result.invalid}
    assert set(by_id) == {bad_name["id"], bad_secret["id"], bad_config["id"]}
    assert "name" in str(by_id[bad_name["id"]])
    assert by_id[bad_secret["id"]].deployment_name == "bad-secret"
    assert "secrets[0].value" in str(by_id[bad_secret["id"]])
    assert "cannot be told" in str(by_id[bad_config["id"]])


def test_a_record_without_an_id_fails_the_whole_listing() -> None:
    nameless = record("no-id")
    del nameless["id"]
    plane = Plane([record("fine"), nameless])
    with pytest.raises(ControlPlaneError, match=r"/v2/deployments.*no string `id`"):
        listing(plane)


def test_500_then_200_is_retried_after_a_backoff() -> None:
    plane = Plane([record("a")])
    plane.page_hook = lambda n, _offset: httpx.Response(500, text="boom") if n == 1 else None
    sleeps: list[float] = []
    labels: list[str] = []

    result = listing(plane, sleeps=sleeps, labels=labels)

    assert [d.name for d in result.deployments] == ["a"]
    assert labels == ["200", "500", "200"]
    assert len(sleeps) == 1 and 0.5 <= sleeps[0] <= 0.625


def test_429_honours_retry_after_and_caps_it_at_60_seconds() -> None:
    for header, expected in (("7", 7.0), ("3600", 60.0)):
        plane = Plane([record("a")])
        plane.page_hook = lambda n, _o, h=header: (
            httpx.Response(429, headers={"Retry-After": h}, json={"detail": "slow down"})
            if n == 1
            else None
        )
        sleeps: list[float] = []
        assert len(listing(plane, sleeps=sleeps).deployments) == 1
        assert sleeps == [expected]


def test_persistent_5xx_is_one_unavailable_error_naming_the_request() -> None:
    plane = Plane([record("a")])
    plane.page_hook = lambda _n, _o: httpx.Response(503, text="<h1>down</h1>")
    sleeps: list[float] = []
    labels: list[str] = []

    with pytest.raises(ControlPlaneUnavailable) as info:
        listing(plane, sleeps=sleeps, labels=labels)

    text = str(info.value)
    assert f"GET {BASE}/v2/deployments?limit=100&offset=0 failed after 3 attempt(s)" in text
    assert "HTTP 503" in text and "next poll" in text
    assert info.value.retry_after is None
    assert info.value.temporary and info.value.exit_code == 3
    assert labels == ["200", "503", "503", "503"]
    # Bounded exponential backoff with jitter: ~0.5 s, then ~1 s; no sleep after the last.
    assert len(sleeps) == 2 and 0.5 <= sleeps[0] <= 0.625 and 1.0 <= sleeps[1] <= 1.25


def test_persistent_429_reports_retry_after() -> None:
    plane = Plane([])
    plane.page_hook = lambda _n, _o: httpx.Response(429, headers={"Retry-After": "2"})
    with pytest.raises(ControlPlaneUnavailable) as info:
        listing(plane)
    assert info.value.retry_after == 2.0
    assert "HTTP 429" in str(info.value)


def test_connection_errors_and_timeouts_are_retried_then_unavailable() -> None:
    for exc in (httpx.ConnectError("refused"), httpx.ReadTimeout("timed out")):
        labels: list[str] = []

        def fail(request: httpx.Request, exc: Exception = exc) -> httpx.Response:
            raise exc

        with pytest.raises(ControlPlaneUnavailable) as info:
            listing(fail, labels=labels)
        assert labels == ["error"] * 3
        assert f"GET {BASE}/v2/listeners/{LISTENER}" in str(info.value)


def test_401_is_auth_refused_naming_the_env_var_never_the_key() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        # A hostile or careless server that echoes the key back.
        key = request.headers["x-api-key"]
        return httpx.Response(401, json={"detail": f"Invalid API key {key}"})

    labels: list[str] = []
    with pytest.raises(AuthRefused) as info:
        listing(refuse, labels=labels)

    exc = info.value
    assert labels == ["401"]  # not retried
    assert "LANGSMITH_API_KEY" in str(exc) and "HTTP 401" in str(exc)
    for text in (str(exc), repr(exc), exc.message, exc.hint or "", repr(exc.args)):
        assert API_KEY not in text
    assert exc.exit_code == 3 and not exc.temporary


def test_403_workspace_specification_points_at_x_tenant_id() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            403, json={"detail": "This API key is org-scoped and requires workspace specification"}
        )

    with pytest.raises(AuthRefused) as info:
        listing(refuse)
    assert "X-Tenant-Id" in str(info.value) and "controlPlane.tenantId" in str(info.value)


def test_listener_404_is_listener_not_found() -> None:
    def missing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"detail": f"Listener ID {LISTENER} not found."})

    with pytest.raises(ListenerNotFound) as info:
        listing(missing)
    assert LISTENER in str(info.value) and "controlPlane.listenerId" in str(info.value)


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b"<html>502 Bad Gateway</html>", "text/html", "not JSON"),
        (b'{"resources": [{"id": "a", "na', "application/json", "truncated"),
        (b"", "application/json", "empty body"),
    ],
)
def test_unreadable_pages_get_the_5xx_budget_then_fail(
    body: bytes, content_type: str, expected: str
) -> None:
    plane = Plane([record("a")])
    plane.page_hook = lambda _n, _o: httpx.Response(
        200, content=body, headers={"content-type": content_type}
    )
    labels: list[str] = []
    with pytest.raises(ControlPlaneUnavailable) as info:
        listing(plane, labels=labels)
    assert expected in str(info.value)
    assert "/v2/deployments?limit=100&offset=0" in str(info.value)
    assert labels.count("200") == 4  # the listener, then 3 attempts at the page


def test_a_listener_of_the_wrong_shape_is_an_error_naming_the_path() -> None:
    plane = Plane([], listener=["not", "a", "listener"])
    with pytest.raises(ControlPlaneError, match=rf"/v2/listeners/{LISTENER}.*not a listener"):
        listing(plane)


def test_a_duplicate_across_pages_relists_once_then_succeeds() -> None:
    records = [record(f"d{i}") for i in range(150)]
    plane = Plane(records)
    # First pass: page 2 starts one record early, as if one was inserted at the front.
    plane.page_hook = lambda n, offset: (
        httpx.Response(200, json={"resources": records[99:199], "offset": 199}) if n == 2 else None
    )
    result = listing(plane)
    assert [d.name for d in result.deployments] == [r["name"] for r in records]
    offsets = [r.url.params.get("offset") for r in plane.requests[1:]]
    assert offsets == ["0", "100", "0", "100"]


def test_a_duplicate_on_the_relist_too_is_an_error() -> None:
    records = [record(f"d{i}") for i in range(150)]
    plane = Plane(records)
    plane.page_hook = lambda _n, offset: (
        httpx.Response(200, json={"resources": records[99:], "offset": 150}) if offset else None
    )
    with pytest.raises(ControlPlaneError, match="changed while paging, twice") as info:
        listing(plane)
    assert "d99" in str(info.value) and records[99]["id"] in str(info.value)
    assert plane.page_requests == 4


@pytest.mark.parametrize(
    "page",
    [
        {"resources": {"not": "a list"}, "offset": 100},
        {"resources": [], "offset": "100"},
        {"items": []},
        ["resources"],
        {"resources": [], "offset": 0},  # an empty page that goes back to the start
    ],
)
def test_a_malformed_envelope_relists_once(page: Any) -> None:
    records = [record(f"d{i}") for i in range(120)]
    plane = Plane(records)
    plane.page_hook = lambda n, _offset: httpx.Response(200, json=page) if n == 2 else None
    result = listing(plane)
    assert len(result.deployments) == 120
    assert plane.page_requests == 4


def test_admin_helpers_raise_with_the_servers_detail() -> None:
    def reject(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(400, json={"detail": "Namespace 'nope' is not allowed."})
        return httpx.Response(
            422,
            json={
                "detail": [
                    {"type": "uuid_parsing", "loc": ["path", "deployment_id"], "msg": "bad uuid"}
                ]
            },
        )

    with client(reject) as c:
        with pytest.raises(ControlPlaneError, match=r"HTTP 400: Namespace 'nope' is not allowed\."):
            c.create_deployment({"name": "x"})
        with pytest.raises(ControlPlaneError, match=r"HTTP 422: path\.deployment_id: bad uuid"):
            c.get_deployment("nope")


def test_a_post_that_may_have_reached_the_server_is_not_repeated() -> None:
    calls: list[str] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        return httpx.Response(500, text="oops")

    with client(flaky) as c, pytest.raises(ControlPlaneUnavailable):
        c.create_listener("cluster", ["agents"])
    assert calls == ["POST"]


def test_post_is_retried_when_it_never_left() -> None:
    calls: list[str] = []

    def refuse_then_accept(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if len(calls) == 1:
            raise httpx.ConnectError("refused")
        return httpx.Response(201, json=json.loads(request.content) | {"id": "L1"})

    with client(refuse_then_accept) as c:
        assert c.create_listener("cluster", ["agents"])["id"] == "L1"
    assert calls == ["POST", "POST"]


def test_client_repr_and_errors_carry_no_key() -> None:
    with client(Plane([])) as c:
        assert API_KEY not in repr(c)


# --- bounds: every answer is outside input (README "Failure modes") ---------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_never_followed_and_names_where_it_points(status: int) -> None:
    requests: list[httpx.Request] = []

    def redirect(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(
            status, headers={"Location": "http://user:pw@evil.example:8443/v2/x?token=abc"}
        )

    labels: list[str] = []
    with pytest.raises(ControlPlaneError) as info:
        listing(redirect, labels=labels)
    text = str(info.value)
    assert [str(r.url) for r in requests] == [f"{BASE}/v2/listeners/{LISTENER}"]  # once, here
    assert labels == [str(status)]  # not retried
    assert f"HTTP {status}, a redirect to http://evil.example:8443/v2/x" in text
    assert "not followed" in text and "controlPlane.url" in text
    for secret in ("user", "pw@", "token=abc", API_KEY):
        assert secret not in text
    assert not isinstance(info.value, ControlPlaneUnavailable)


def test_a_relative_or_missing_location_is_named_too() -> None:
    for location, shown in (("/login", f"{BASE.split('/api-host')[0]}/login"), (None, "nowhere")):
        headers = {"Location": location} if location else {}

        def redirect(request: httpx.Request, h: dict[str, str] = headers) -> httpx.Response:
            return httpx.Response(302, headers=h)

        with pytest.raises(ControlPlaneError, match=re.escape(shown)):
            listing(redirect)


def test_an_answer_announced_larger_than_the_cap_is_refused_unread() -> None:
    def huge(request: httpx.Request) -> httpx.Response:
        def body() -> Iterator[bytes]:
            read.append(True)
            yield b"{}"

        return httpx.Response(200, headers={"Content-Length": str(3 << 30)}, content=body())

    read: list[bool] = []
    with pytest.raises(ControlPlaneError, match=r"more than 1 MiB \(controlPlane\.maxResponseMb\)"):
        listing(huge, max_response_mb=1)
    assert read == []


def test_an_endless_answer_is_cut_at_the_cap_while_it_streams() -> None:
    sent = [0]

    def endless(request: httpx.Request) -> httpx.Response:
        def body() -> Iterator[bytes]:
            yield b'{"resources": ['
            while True:
                sent[0] += 64 << 10
                yield b" " * (64 << 10)

        return httpx.Response(200, content=body())

    labels: list[str] = []
    with pytest.raises(ControlPlaneError, match=r"GET .*/v2/listeners/.*more than 1 MiB") as info:
        listing(endless, max_response_mb=1, labels=labels)
    assert (1 << 20) <= sent[0] <= (1 << 20) + (128 << 10)  # read up to the cap, no further
    assert labels == ["error"]  # refused at once: a retry would not shrink it
    assert not isinstance(info.value, ControlPlaneUnavailable)


def test_an_error_answer_is_read_only_as_far_as_its_detail() -> None:
    def verbose(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, content=b'{"detail": "bad"}' + b" " * (64 << 20))

    with client(verbose, max_response_mb=1) as c:
        with pytest.raises(ControlPlaneError, match="HTTP 400"):
            c.get_deployment(str(uuid.uuid4()))


@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_json_nested_too_deep_is_garbage_retried_then_unavailable(depth: int) -> None:
    plane = Plane([record("a")])
    deep = b"[" * depth + b"]" * depth
    plane.page_hook = lambda _n, _o: httpx.Response(200, content=deep)
    with pytest.raises(ControlPlaneUnavailable, match="nested too deeply") as info:
        listing(plane)
    assert "/v2/deployments?limit=100&offset=0 failed after 3 attempt(s)" in str(info.value)


def test_an_error_body_nested_deep_still_gives_a_clean_error() -> None:
    deep = b'{"detail":' * 100_000 + b"1" + b"}" * 100_000
    with client(lambda _r: httpx.Response(422, content=deep)) as c:
        with pytest.raises(ControlPlaneError, match="HTTP 422"):
            c.get_deployment(str(uuid.uuid4()))


def test_a_page_larger_than_the_limit_asked_for_is_refused() -> None:
    records = [record(f"d{i}") for i in range(150)]
    plane = Plane(records)
    plane.page_hook = lambda _n, _o: httpx.Response(200, json={"resources": records, "offset": 150})
    with pytest.raises(ControlPlaneError, match="has 150 records, more than the limit=100"):
        listing(plane)
    assert plane.page_requests == 1  # refused, not relisted or retried


def test_a_listing_past_max_deployments_is_refused_counting_every_listener() -> None:
    records = [record(f"d{i}") for i in range(150)] + [
        record(f"theirs-{i}", listener_id=OTHER_LISTENER) for i in range(100)
    ]
    assert len(listing(Plane(records), max_deployments=250).deployments) == 150
    with pytest.raises(ControlPlaneError, match=r"more than 249 deployment records") as info:
        listing(Plane(records), max_deployments=249)
    assert "controlPlane.maxDeployments" in str(info.value)


def test_the_cycle_budget_ends_retries_and_the_confirmations_after_it() -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    def slow_500(request: httpx.Request) -> httpx.Response:
        if "/v2/listeners/" in request.url.path:
            return httpx.Response(200, json=listener_doc())
        now[0] += 4.0  # each attempt at a page takes 4 s of the budget
        return httpx.Response(500, text="slow and failing")

    settings = make_settings(BASE, API_KEY, LISTENER, timeout=5, cycle_timeout=6)
    c = ControlPlaneClient.from_settings(
        settings, transport=httpx.MockTransport(slow_500), sleep=sleep, clock=lambda: now[0]
    )
    with c:
        with pytest.raises(ControlPlaneUnavailable) as info:
            c.list_listener_deployments()
        text = str(info.value)
        assert "ran past controlPlane.cycleTimeout (6s) after 2 attempt(s)" in text, text
        assert "last: HTTP 500" in text
        assert len(sleeps) == 1  # no backoff past the budget
        # The deletion confirmations of the same cycle share what is left: nothing.
        with pytest.raises(ControlPlaneUnavailable, match="before it was sent"):
            c.confirm_gone([str(uuid.uuid4())])
        # A new listing starts a new budget.
        with pytest.raises(ControlPlaneUnavailable, match="after 2 attempt"):
            c.list_listener_deployments()


def test_a_page_with_a_surrogate_escape_has_its_records_checked() -> None:
    bad = record("bad", secrets=[{"name": "TOKEN", "value": "s3cr3t-\ud800"}])
    page = {"resources": [record("good"), bad], "offset": 2}
    plane = Plane([])
    # ASCII JSON: the lone surrogate goes as its escape, valid JSON (the Plane's
    # json= would refuse to encode it).
    plane.page_hook = lambda _n, _o: httpx.Response(200, content=json.dumps(page).encode())
    result = listing(plane)
    [error] = result.invalid
    assert "secrets[0].value is not valid Unicode" in str(error) and "s3cr3t" not in str(error)
    assert [d.name for d in result.deployments] == ["good"]


def test_the_deadline_is_installed_on_a_real_client() -> None:
    """The per-request deadline reaches into httpcore (deadlines.py): if an
    upgrade moves what it wraps, this fails before any trickle can hang a cycle."""
    from bridge.controlplane.deadlines import Deadlines, install

    with httpx.Client() as http:
        assert install(http, Deadlines())
    with httpx.Client(mounts={"https://": httpx.HTTPTransport()}) as http:
        assert install(http, Deadlines())


def test_an_unchanged_page_is_not_parsed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same bytes at the same offset say the same thing: the next listing reuses
    what the last complete one parsed (~40 us a record), and reads anew exactly
    the pages whose bytes changed. The listing is the same either way."""
    import bridge.controlplane.client as client_module

    parsed: list[str] = []
    original = client_module.parse_deployment

    def counting(raw: Any, **kwargs: Any) -> Any:
        parsed.append(raw["name"])
        return original(raw, **kwargs)

    monkeypatch.setattr(client_module, "parse_deployment", counting)
    records = [record(f"d{i:03d}") for i in range(250)]
    records[120]["source_config"]["listener_id"] = OTHER_LISTENER  # another listener's
    records[130]["secrets"] = "not a list"  # malformed: kept as present, every listing
    plane = Plane(records)
    with client(plane) as c:
        first = c.list_listener_deployments()
        assert len(parsed) == 249 and len(first.deployments) == 248 and len(first.invalid) == 1
        parsed.clear()
        again = c.list_listener_deployments()
        assert parsed == [] and again == first
        records[150]["source_revision_config"]["image_uri"] = "registry.example.com/d150:2"
        changed = c.list_listener_deployments()
        assert len(parsed) == 99 and parsed[0] == "d100"  # page 2 only (less d120)
        assert [d.image_uri for d in changed.deployments if d.name == "d150"] == [
            "registry.example.com/d150:2"
        ]
        assert [e.deployment_id for e in changed.invalid] == [records[130]["id"]]
        # A record inserted at the front shifts every page: all are read anew.
        records.insert(0, record("d-new"))
        parsed.clear()
        shifted = c.list_listener_deployments()
        assert len(parsed) == 250 and len(shifted.deployments) == 249


def test_a_failed_listing_keeps_the_last_complete_ones_pages() -> None:
    records = [record(f"d{i:03d}") for i in range(250)]
    plane = Plane(records)
    with client(plane) as c:
        first = c.list_listener_deployments()
        plane.page_hook = lambda n, offset: httpx.Response(404) if offset == 200 else None
        with pytest.raises(ControlPlaneError):
            c.list_listener_deployments()
        plane.page_hook = None
        assert c.list_listener_deployments() == first
        # A record seen on two pages is still an inconsistent listing, reused or not.
        records[150] = records[50]
        with pytest.raises(ControlPlaneError, match="two pages"):
            c.list_listener_deployments()


# --- TLS ---------------------------------------------------------------------------------


def test_tls_over_https_is_httpx_default_trust_and_over_http_trusts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """https keeps httpx's trust (here SSL_CERT_FILE names a private CA and is
    honoured); a plain-http control plane's context, which loads no CA bundle,
    refuses that same server: TLS through it fails closed."""
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    with serve(FakeArgoCD(token="t"), tls=(cert, key)) as fake:
        assert tls_verification(BASE) is True
        assert tls_verification("HTTPS://ls.example.com") is True
        with httpx.Client(verify=tls_verification(fake.url)) as trusted:
            assert trusted.get(fake.url + "/api/v1/applications").status_code == 401
        for http_url in ("http://127.0.0.1:1", "HTTP://cp.internal:1985/api-host"):
            context = tls_verification(http_url)
            assert isinstance(context, ssl.SSLContext)
            assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
            assert context.get_ca_certs() == []
            with (
                httpx.Client(verify=context) as untrusting,
                pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
            ):
                untrusting.get(fake.url + "/api/v1/applications")


# --- read ahead ---------------------------------------------------------------------------


def test_pages_are_read_ahead_a_few_at_a_time_and_wait_as_bytes() -> None:
    """A long listing has up to READ_AHEAD page requests in flight at once (a
    round trip each, overlapped), never more; what is read ahead waits as
    the body's bytes, decoded when the listing gets to it."""
    from bridge.controlplane.client import READ_AHEAD

    lock = threading.Lock()
    in_flight = [0, 0]  # now, most
    plane = Plane([record(f"d{i:04d}") for i in range(1000)])

    def slow(request: httpx.Request) -> httpx.Response:
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight)
        try:
            time.sleep(0.05)  # a round trip
            return plane(request)
        finally:
            with lock:
                in_flight[0] -= 1

    with client(slow) as c:
        result = c.list_listener_deployments()
        plane.records[300]["name"] = "d0300-renamed"  # bytes the last listing did not read
        held = c._page(result.listener, 300, hold=True).result()
        assert held.data is None and held.body is not None
        decoded = c._decoded(result.listener, 300, held)
    assert [d.name for d in result.deployments] == [f"d{i:04d}" for i in range(1000)]
    assert in_flight[1] == READ_AHEAD
    assert plane.page_requests == 11 + READ_AHEAD - 1 + 1  # the chain, past the end, ours
    assert [r["name"] for r in decoded.data["resources"]][:2] == ["d0300-renamed", "d0301"]


def test_a_page_read_ahead_that_does_not_decode_is_asked_for_again() -> None:
    """Bytes read ahead are decoded when the listing gets to them; garbage
    there is asked for again, with a request's usual retries."""
    plane = Plane([record(f"d{i:03d}") for i in range(450)])
    served: list[int] = []

    def garbage_once(count: int, offset: int) -> httpx.Response | None:
        served.append(offset)
        if offset == 300 and served.count(300) == 1:
            return httpx.Response(200, content=b'{"resources": [', headers=JSON_TYPE)
        return None

    plane.page_hook = garbage_once
    result = listing(plane)
    assert [d.name for d in result.deployments] == [f"d{i:03d}" for i in range(450)]
    assert served.count(300) == 2


def test_a_chain_that_does_not_step_by_a_page_is_followed_and_guesses_unused() -> None:
    """Pages are asked for ahead on the guess that each full page is followed
    by the next 100 records. A server whose `offset` says otherwise is
    followed, and no page read on a wrong guess is used."""
    records = [record(f"d{i:03d}") for i in range(600)]
    requested: list[int] = []

    def skipping(request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api-host")
        if path == f"/v2/listeners/{LISTENER}":
            return httpx.Response(200, json=listener_doc())
        offset = int(request.url.params["offset"])
        requested.append(offset)
        page = records[offset : offset + 100]
        # The next page starts 150 records on: the 50 between are never listed.
        return httpx.Response(200, json={"resources": page, "offset": offset + 150})

    result = listing(skipping)
    chain = [0, 150, 300, 450]
    expected = [r["name"] for at in chain for r in records[at : at + 100]]
    assert [d.name for d in result.deployments] == expected
    assert set(chain) < set(requested)  # and guesses (250, 400, ...) that were not used
