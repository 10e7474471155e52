"""401/403/404 from a forge: a clear error that names the forge, the repository
and the permission the token needs, and changes nothing; no token in any
message or log line; two replicas never open two pull requests."""

from __future__ import annotations

import logging
import threading

import pytest

from bridge.forges import ForgeRefused
from bridge.forges.errors import PERMISSIONS
from tests.forges.conftest import TOKEN, Site
from tests.forges.test_lifecycle import BASE, HEAD, new_pull
from tests.leakscan import scan_text

NEEDS = {
    "github": "Pull requests: read and write",
    "gitlab": "`api` scope",
    "gitea": "`write:repository`",
}


def test_a_wrong_token_is_refused_clearly(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    forge = site.client(token="wrong_" + "t" * 30)
    with pytest.raises(ForgeRefused) as caught:
        forge.open_pull(new_pull())
    error = caught.value
    text = str(error)
    assert error.status == 401 and error.exit_code == 4 and not error.temporary
    assert "acme/prod-agents" in text and "401" in text and NEEDS[site.kind] in text
    assert {"github": "GitHub", "gitlab": "GitLab", "gitea": "Gitea/Forgejo"}[site.kind] in text
    assert not site.state.pulls
    assert scan_text(text + caplog.text, ["wrong_" + "t" * 30, TOKEN]) == []


@pytest.mark.parametrize("status", [403, 404])
def test_forbidden_or_not_found_changes_nothing(
    site: Site, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    forge = site.client()
    site.state.fail(
        "POST",
        r"/pulls$|/merge_requests$",
        status,
        body={"message": "Resource not accessible by integration"},
    )
    with pytest.raises(ForgeRefused) as caught:
        forge.open_pull(new_pull(labels=["gitops-bridge"]))
    text = str(caught.value)
    assert str(status) in text and PERMISSIONS[site.kind] in text
    assert "Resource not accessible by integration" in text  # the forge's own words
    assert not site.state.pulls
    assert [e.method for e in site.state.exchanges] == ["POST"]  # no label, no retry
    assert scan_text(text + caplog.text, [TOKEN]) == []


def test_a_token_echoed_by_the_forge_is_scrubbed(site: Site) -> None:
    """A hostile or buggy proxy quoting the Authorization header back."""
    forge = site.client()
    site.state.fail(
        "POST", r"/pulls$|/merge_requests$", 422, body={"message": f"bad header Bearer {TOKEN}"}
    )
    if site.kind != "github":  # 422 is 'already exists' only on GitHub; elsewhere it is the error
        with pytest.raises(Exception) as caught:
            forge.open_pull(new_pull())
        assert scan_text(str(caught.value), [TOKEN]) == []
    site.state.fail(
        "GET",
        r"/pulls/1$|/merge_requests/1$",
        500,
        body=f"upstream saw token {TOKEN}".encode(),
        times=3,
    )
    with pytest.raises(Exception) as caught:
        forge.get_pull(1)
    assert scan_text(str(caught.value), [TOKEN]) == []


def test_the_token_never_goes_in_a_url(site: Site) -> None:
    forge = site.client()
    forge.open_pull(new_pull(labels=["gitops-bridge"], reviewers=["bob"]))
    forge.find_pull(HEAD, BASE)
    for exchange in site.state.exchanges:
        assert TOKEN not in exchange.path and all(
            TOKEN not in v for vs in exchange.query.values() for v in vs
        )
    assert "****" in repr(forge.git_credentials()[1]) or "Redacted" in repr(
        forge.git_credentials()[1]
    )


def test_two_replicas_racing_open_one_pull_request(site: Site) -> None:
    results = []
    start = threading.Barrier(4)

    def replica() -> None:
        forge = site.client()
        start.wait()
        results.append(forge.open_pull(new_pull()))

    threads = [threading.Thread(target=replica) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(site.state.pulls) == 1
    assert sorted(r.created for r in results) == [False, False, False, True]
    assert {r.pull.number for r in results} == {1}
