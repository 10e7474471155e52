"""Rate limits in virtual time: the per-host write budget (80/min, 500/h, shared
by every client of the host), the forge's wait orders (403/429 with
`retry-after`, `x-ratelimit-reset`, the at-least-60-s rule), 5xx retries, and
the quota exposed for /metrics."""

from __future__ import annotations

import threading

import httpx
import pytest

from bridge.forges import ForgeHosts, ForgeRateLimited, ForgeUnavailable, StaticToken, open_forge
from bridge.forges.limits import HostLimiter, OverBudget, WriteBudget
from bridge.redaction import Redacted
from tests.forges.conftest import Site, VirtualClock
from tests.forges.test_lifecycle import new_pull

PULL_JSON = {
    "number": 1,
    "html_url": "https://github.test/acme/x/pull/1",
    "state": "open",
    "title": "t",
    "body": "",
    "head": {"ref": "h", "sha": "a" * 40},
    "base": {"ref": "main", "sha": "b" * 40},
    "node_id": "PR_1",
    "labels": [],
    "user": {"login": "bot"},
    "created_at": "2026-01-01T00:00:00Z",
}


def mock_github(
    clock: VirtualClock, handler: object, hosts: ForgeHosts | None = None, **kw: object
):  # type: ignore[no-untyped-def]
    return open_forge(
        "github",
        repo_url="https://github.com/acme/x.git",
        tokens=StaticToken(Redacted("ghp_" + "x" * 36), origin="$T", git_username="x-access-token"),
        hosts=hosts or ForgeHosts(clock),
        transport=httpx.MockTransport(handler),  # type: ignore[arg-type]
        jitter=lambda: 0.0,
        **kw,  # type: ignore[arg-type]
    )


def test_write_budget_is_80_a_minute_in_every_window() -> None:
    clock = VirtualClock()
    limiter = HostLimiter("api.github.com", clock)
    times = []
    for _ in range(200):
        with limiter.write_slot(max_wait=3600):
            times.append(clock.monotonic())
    for i in range(len(times) - 80):
        assert times[i + 80] - times[i] >= 60.0  # any 81 writes span at least a minute
    assert times[79] == times[0]  # the first 80 go at once
    assert limiter.quota().writes_last_minute <= 80


def test_write_budget_is_500_an_hour() -> None:
    clock = VirtualClock()
    limiter = HostLimiter("h", clock, WriteBudget(per_minute=80, per_hour=500))
    times = []
    for _ in range(520):
        with limiter.write_slot(max_wait=3600):
            times.append(clock.monotonic())
    assert times[500] - times[0] >= 3600.0
    assert max(sum(1 for t in times if s <= t < s + 3600) for s in times) <= 500


def test_a_wait_longer_than_allowed_is_raised_not_slept() -> None:
    clock = VirtualClock()
    limiter = HostLimiter("h", clock, WriteBudget(per_minute=2, per_hour=2))
    for _ in range(2):
        with limiter.write_slot(max_wait=0):
            pass
    with pytest.raises(OverBudget) as caught:
        with limiter.write_slot(max_wait=120):
            pass
    assert caught.value.seconds == pytest.approx(3600.0)
    assert clock.sleeps == [0.0, 0.0]


def test_writes_to_one_host_share_one_budget_and_are_serialised() -> None:
    """Two targets on one host: 160 writes from two clients take two minutes, and
    never two at once."""
    clock = VirtualClock()
    hosts = ForgeHosts(clock)
    inflight, peak, lock = [0], [0], threading.Lock()

    def handler(request: httpx.Request) -> httpx.Response:
        with lock:
            inflight[0] += 1
            peak[0] = max(peak[0], inflight[0])
        with lock:
            inflight[0] -= 1
        return httpx.Response(201, json={"id": 1})

    one, two = mock_github(clock, handler, hosts), mock_github(clock, handler, hosts)
    threads = [
        threading.Thread(target=lambda c=c: [c.comment(1, "x") for _ in range(80)])
        for c in (one, two)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 1
    assert clock.monotonic() - 1000.0 >= 60.0
    assert hosts.quotas()[0].writes_last_hour == 160


@pytest.mark.parametrize("status", [403, 429])
def test_rate_limited_answers_honour_retry_after(site: Site, status: int) -> None:
    """A secondary limit (403 or 429 with retry-after): the client waits as told,
    in virtual time, and the request then succeeds; the whole host waited."""
    forge = site.client()
    site.state.fail(
        "GET",
        r"/pulls|/merge_requests",
        status,
        headers={"Retry-After": "37"},
        body={"message": "You have exceeded a secondary rate limit"},
    )
    before = site.clock.time()
    assert forge.find_pull("gitops-bridge/main", "main").open is None
    waited = site.clock.time() - before
    assert 37.0 <= waited <= 37.0 * 1.1 + 2
    assert forge.quota().host.startswith("127.0.0.1")


def test_rate_limit_reset_header_and_the_sixty_second_floor(site: Site) -> None:
    forge = site.client(max_wait=600.0)
    reset = int(site.clock.time()) + 300
    site.state.fail(
        "GET",
        r"/pulls|/merge_requests",
        403,
        headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)},
        body={"message": "API rate limit exceeded"},
        times=1,
    )
    forge.find_pull("gitops-bridge/main", "main")
    assert site.clock.time() >= reset
    # No advice at all: at least 60 s, then doubling.
    site.state.fail("GET", r"/pulls|/merge_requests", 429, times=2)
    before = site.clock.time()
    forge.find_pull("gitops-bridge/main", "main")
    assert site.clock.time() - before >= 60.0 + 120.0


def test_a_long_wait_is_raised_and_the_host_is_not_asked_again(site: Site) -> None:
    hosts = ForgeHosts(site.clock)
    forge = site.client(hosts=hosts, max_wait=120.0)
    site.state.fail("POST", r"/pulls$|/merge_requests$", 429, headers={"Retry-After": "3600"})
    with pytest.raises(ForgeRateLimited) as caught:
        forge.open_pull(new_pull())
    assert caught.value.temporary and caught.value.retry_after is not None
    assert caught.value.retry_after >= 3600 and caught.value.exit_code == 4
    sent = len(site.state.exchanges)
    other = site.client(hosts=hosts, max_wait=120.0)  # another target on the same host
    with pytest.raises(ForgeRateLimited):
        other.find_pull("gitops-bridge/main", "main")
    assert len(site.state.exchanges) == sent  # nothing was sent while blocked
    assert hosts.quotas()[0].blocked_until is not None
    assert not site.state.pulls  # nothing was created


def test_5xx_is_retried_with_backoff(site: Site) -> None:
    forge = site.client()
    site.state.fail(
        "GET", r"/pulls|/merge_requests", 502, times=2, body=b"<html>bad gateway</html>"
    )
    assert forge.find_pull("gitops-bridge/main", "main").open is None
    assert [s for s in site.clock.sleeps if s > 0] == [1.0, 2.0]
    site.state.fail("GET", r"/pulls|/merge_requests", 503, times=3)
    with pytest.raises(ForgeUnavailable) as caught:
        forge.find_pull("gitops-bridge/main", "main")
    assert "3 attempt" in str(caught.value) and caught.value.temporary


def test_a_comment_is_not_repeated_after_a_5xx(site: Site) -> None:
    forge = site.client()
    number = forge.open_pull(new_pull()).pull.number
    site.state.fail("POST", r"comments$|notes$", 500)
    with pytest.raises(ForgeUnavailable):
        forge.comment(number, "hello")
    assert len(site.state.requests("POST", r"comments$|notes$")) == 1


def test_quota_headers_are_exposed() -> None:
    clock = VirtualClock()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json=PULL_JSON,
            headers={
                "x-ratelimit-remaining": "4321",
                "x-ratelimit-limit": "5000",
                "x-ratelimit-reset": "1800000600",
            },
        )

    hosts = ForgeHosts(clock)
    mock_github(clock, handler, hosts).get_pull(1)
    (quota,) = hosts.quotas()
    assert (quota.host, quota.remaining, quota.limit, quota.reset_at) == (
        "api.github.com",
        4321,
        5000,
        1800000600.0,
    )
