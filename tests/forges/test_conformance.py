"""The conformance check itself: it runs where the forges' descriptions are, says
so where they are not, and is not vacuous (it rejects what breaks them)."""

from __future__ import annotations

import json

import pytest

from tests.forges import conformance
from tests.forges.fake.state import Exchange


def exchange(method: str, path: str, body: object, status: int, response: object) -> Exchange:
    return Exchange(
        method,
        path,
        {},
        {"content-type": "application/json"},
        json.dumps(body).encode(),
        status,
        {"Content-Type": "application/json"},
        json.dumps(response).encode(),
        injected=False,
    )


def test_descriptions_are_checked(specs: conformance.Specs) -> None:
    if not specs.available("github"):
        pytest.skip(specs.reason)
    bad_request = exchange("POST", "/api/v3/repos/a/b/pulls", {"title": 5}, 201, {})
    assert any("request" in p for p in specs.violations("github", [bad_request], "api/v3"))
    bad_response = exchange("GET", "/api/v3/repos/a/b/pulls/1", None, 200, {"number": "x"})
    bad_response.body = b""
    assert any("response" in p for p in specs.violations("github", [bad_response], "api/v3"))
    gitea = exchange(
        "POST", "/api/v1/repos/a/b/pulls/3/merge", {"merge_when_checks_succeed": True}, 200, None
    )
    assert any("Do" in p for p in specs.violations("gitea", [gitea], "api/v1"))
    gitea_ok = exchange("POST", "/api/v1/repos/a/b/pulls/3/merge", {"Do": "squash"}, 200, None)
    gitea_ok.response_body = b""
    assert specs.violations("gitea", [gitea_ok], "api/v1") == []
