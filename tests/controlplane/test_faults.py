"""Every fault mode of the local control plane, as the client sees it on loopback.

One server with 205 deployments (3 pages) for the module; each test arms rules
under `/_faults` and the client must turn them into a complete listing or the
right error. Backoff sleeps are recorded, not slept; `slow` and `reset` are real
(a 0.5 s client timeout, a TCP reset).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.controlplane.admin import AdminClient
from bridge.controlplane.client import ControlPlaneClient, Listing
from bridge.errors import ControlPlaneError, ControlPlaneUnavailable
from bridge.localplane.server import RunningServer, start_in_thread
from tests.controlplane.conftest import deployment_body, make_settings

COUNT = 205


@dataclass
class Faulty:
    server: RunningServer
    api_key: str
    listener_id: str
    names: list[str]

    def arm(self, *rules: dict[str, Any]) -> None:
        r = httpx.post(
            f"{self.server.url}/_faults",
            json={"rules": list(rules)},
            headers={"X-Api-Key": self.api_key},
        )
        assert r.status_code == 200, r.text

    def rules(self) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.server.url}/_faults", headers={"X-Api-Key": self.api_key})
        rules: list[dict[str, Any]] = r.json()["rules"]
        return rules

    def clear(self) -> None:
        r = httpx.delete(f"{self.server.url}/_faults", headers={"X-Api-Key": self.api_key})
        assert r.status_code == 204

    def list(
        self,
        sleeps: list[float] | None = None,
        labels: list[str] | None = None,
        **overrides: Any,
    ) -> Listing:
        settings = make_settings(
            self.server.url, self.api_key, self.listener_id, **{"timeout": 0.5, **overrides}
        )
        with ControlPlaneClient.from_settings(
            settings,
            sleep=(sleeps if sleeps is not None else []).append,
            on_response=labels.append if labels is not None else None,
        ) as client:
            return client.list_listener_deployments()


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faulty]:
    db: Path = tmp_path_factory.mktemp("faults") / "cp.db"
    api_key = "lsv2_pt_" + secrets.token_hex(16)
    server = start_in_thread(db=db, api_key=api_key, faults=True)
    try:
        settings = make_settings(server.url, api_key)
        with AdminClient.from_settings(settings) as admin:
            listener = admin.create_listener("faulty", ["agents"])
            names = [f"agent-{i:03d}" for i in range(COUNT)]
            for name in names:
                admin.create_deployment(deployment_body(name, listener["id"]))
        yield Faulty(server, api_key, listener["id"], names)
    finally:
        server.stop()


@pytest.fixture
def plane(faulty: Faulty) -> Iterator[Faulty]:
    yield faulty
    faulty.clear()


def names(listing: Listing) -> list[str]:
    return sorted(d.name for d in listing.deployments)


# Page 2 of 3 is where a fault hurts most: one page is already in hand.
PAGE_2 = {"path": "/v2/deployments", "after": 1}


@pytest.mark.parametrize(
    ("mode", "label"),
    [("500", "500"), ("429", "429"), ("slow", "error"), ("reset", "error")],
)
def test_a_transient_fault_once_is_retried_into_a_complete_listing(
    plane: Faulty, mode: str, label: str
) -> None:
    plane.arm({**PAGE_2, "mode": mode, "times": 1})
    labels: list[str] = []
    sleeps: list[float] = []
    assert names(plane.list(sleeps, labels)) == plane.names
    # The listener, page 1, page 2 failing then retried, page 3 and one read
    # ahead past the end (pages after the first full one are asked for ahead).
    assert labels == ["200", "200", label, "200", "200", "200"]
    if mode == "429":
        assert sleeps == [1.0]  # the server's Retry-After: 1
    else:
        assert len(sleeps) == 1 and 0.5 <= sleeps[0] <= 0.625
    assert plane.rules()[0]["hits"] == 1


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("500", "HTTP 500"),
        ("429", "HTTP 429"),
        ("slow", "read timeout"),
        ("reset", "connection reset"),
        ("garbage", "not JSON (text/html"),
        ("truncated", "probably truncated"),
    ],
)
def test_a_persistent_fault_is_one_unavailable_error(
    plane: Faulty, mode: str, expected: str
) -> None:
    plane.arm({**PAGE_2, "mode": mode, "times": None, "seconds": 3})
    labels: list[str] = []
    with pytest.raises(ControlPlaneUnavailable) as info:
        plane.list(labels=labels)
    text = str(info.value)
    assert "GET http://127.0.0.1:" in text and "/v2/deployments?limit=100&offset=100" in text
    assert "failed after 3 attempt(s)" in text and expected in text, text
    assert plane.api_key not in text
    assert info.value.retry_after == (1.0 if mode == "429" else None)
    assert len(labels) == 2 + 3


def test_reset_on_the_listener_is_retried(plane: Faulty) -> None:
    plane.arm({"path": "/v2/listeners", "mode": "reset", "times": 2})
    labels: list[str] = []
    assert len(plane.list(labels=labels).deployments) == COUNT
    assert labels[:3] == ["error", "error", "200"]


def test_wrong_types_makes_one_invalid_deployment_and_keeps_the_others(plane: Faulty) -> None:
    plane.arm({**PAGE_2, "mode": "wrong-types", "times": 1})
    listing = plane.list()
    assert len(listing.deployments) == COUNT - 1
    [bad] = listing.invalid
    assert bad.deployment_name == "<unknown>"  # its name is the number 42
    assert "field name must be a string, got int" in str(bad)
    missing = set(plane.names) - {d.name for d in listing.deployments}
    assert missing == {"agent-100"}


def test_an_empty_later_page_is_caught_and_relisted(plane: Faulty) -> None:
    plane.arm({**PAGE_2, "mode": "empty", "times": 1})
    labels: list[str] = []
    assert names(plane.list(labels=labels)) == plane.names
    # The listener, the bad pass (2 pages), the good pass (3, and one read ahead).
    assert len(labels) == 1 + 2 + 3 + 1


def test_an_empty_first_page_is_an_empty_listing(plane: Faulty) -> None:
    # Indistinguishable from a control plane with no deployments: the client
    # accepts it; the reconciler's mass-delete guard is what protects the repos.
    plane.arm({"path": "/v2/deployments", "mode": "empty", "times": 1})
    listing = plane.list()
    assert listing.deployments == () and listing.invalid == ()


def test_a_shift_once_relists_from_zero(plane: Faulty) -> None:
    plane.arm({**PAGE_2, "mode": "shift", "times": 1})
    labels: list[str] = []
    assert names(plane.list(labels=labels)) == plane.names
    # The listener, two pages of the first pass and the two it had asked for
    # while it read the second (the pages after it download while one is
    # parsed), then three pages from zero and one read ahead past the end.
    assert len(labels) == 1 + 2 + 2 + 3 + 1


def test_a_shift_on_every_pass_is_an_error(plane: Faulty) -> None:
    plane.arm({"path": "/v2/deployments", "mode": "shift", "times": None})
    with pytest.raises(ControlPlaneError, match="changed while paging, twice in a row") as info:
        plane.list()
    assert not isinstance(info.value, ControlPlaneUnavailable)
    assert "agent-099" in str(info.value)


def test_rules_count_and_clear(plane: Faulty) -> None:
    plane.arm(
        {"path": "/v2/deployments", "mode": "500", "times": 1, "after": 5},
        {"path": "/v2/listeners", "mode": "429", "times": 0, "method": "POST"},
    )
    plane.list()
    deployments_rule, listeners_rule = plane.rules()
    assert (deployments_rule["seen"], deployments_rule["hits"]) == (3 + 1, 0)  # 1 read ahead
    assert (listeners_rule["seen"], listeners_rule["hits"]) == (0, 0)
    plane.clear()
    assert plane.rules() == []
    bad = httpx.post(
        f"{plane.server.url}/_faults",
        json={"rules": [{"path": "/v2", "mode": "explode"}]},
        headers={"X-Api-Key": plane.api_key},
    )
    assert bad.status_code == 422


# --- hostile answers: each read is bounded, the key goes nowhere else ----------------


def test_a_trickled_answer_ends_at_the_request_deadline(plane: Faulty) -> None:
    # A byte every 0.2 s: never a 0.5 s read timeout, so only the deadline on
    # the whole request (connect to last byte) ends each attempt.
    plane.arm({"path": "/v2/listeners", "mode": "trickle", "seconds": 0.2, "times": None})
    labels: list[str] = []
    with pytest.raises(ControlPlaneUnavailable) as info:
        plane.list(labels=labels)
    text = str(info.value)
    assert "failed after 3 attempt(s)" in text and "no complete answer within 0.5s" in text
    assert labels == ["error"] * 3
    assert plane.rules()[0]["hits"] == 3


@pytest.mark.parametrize(
    ("rule", "where"),
    [
        ({"path": "/v2/deployments", "mode": "endless"}, "/v2/deployments?limit=100&offset=0"),
        ({"path": "/v2/listeners", "mode": "oversized", "size": 2 << 30}, "/v2/listeners/"),
    ],
)
def test_an_answer_past_the_byte_cap_is_refused_once(
    plane: Faulty, rule: dict[str, Any], where: str
) -> None:
    plane.arm({**rule, "times": None})
    with pytest.raises(ControlPlaneError) as info:
        plane.list(max_response_mb=1)
    assert where in str(info.value) and "more than 1 MiB" in str(info.value)
    assert not isinstance(info.value, ControlPlaneUnavailable)
    assert plane.rules()[0]["hits"] == 1  # not retried: it would not shrink


def test_the_api_key_never_reaches_a_redirects_target(plane: Faulty) -> None:
    from tests.gitservers import recording_server

    with recording_server() as elsewhere:
        plane.arm(
            {
                "path": "/v2/deployments",
                "mode": "redirect",
                "location": f"{elsewhere.url}v2/deployments?limit=100&offset=0",
                "times": None,
            }
        )
        with pytest.raises(ControlPlaneError) as info:
            plane.list()
        assert elsewhere.requests == []
        assert not elsewhere.received(plane.api_key)
    text = str(info.value)
    assert f"a redirect to {elsewhere.url}v2/deployments;" in text and "not followed" in text
    assert plane.api_key not in text


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"mode": "deep", "depth": 100_000}, "nested too deeply"),
        ({"mode": "extra-records", "count": 1}, "has 101 records, more than the limit=100"),
    ],
)
def test_a_malformed_page_is_no_listing(plane: Faulty, rule: dict[str, Any], expected: str) -> None:
    plane.arm({"path": "/v2/deployments", "times": None, **rule})
    with pytest.raises(ControlPlaneError, match=expected):
        plane.list()
