"""The forge's side of pull-request mode, for GitHub, GitLab and Gitea: two
replicas on one target, "already exists" (GitHub 422, GitLab/Gitea 409)
adopted, a rate-limited 403 waited out as told, a 401 that stops the target
with a clear error and changes nothing."""

from __future__ import annotations

import dataclasses
import threading

from bridge.config import Settings
from bridge.reconcile.outcomes import CycleReport
from tests.pullrequests.conftest import BASE, HEAD, Bench
from tests.pullrequests.test_lifecycle import changes_pull

LIST = r"/repos/acme/prod-agents/pulls$|/merge_requests$"


def elsewhere(bench: Bench, name: str) -> Settings:
    """The same config with a workdir of its own: another replica, or a restart on
    a new machine (no local clone, nothing remembered)."""
    settings = bench.settings()
    workdir = bench.world.root / name
    return dataclasses.replace(settings, git=dataclasses.replace(settings.git, workdir=workdir))


def test_two_replicas_never_open_two_pull_requests(bench: Bench) -> None:
    bench.world.create("alpha")
    bench.world.create("beta")
    replicas = [elsewhere(bench, "replica-a"), elsewhere(bench, "replica-b")]
    reports: list[CycleReport] = []
    start = threading.Barrier(2)

    def run(settings: Settings) -> None:
        start.wait()
        reports.append(bench.cycle(settings))

    threads = [threading.Thread(target=run, args=(s,)) for s in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(reports) == 2
    (pull,) = bench.pulls()
    assert pull.state == "open"
    # Whichever replica lost a race planned again on the winner's head.
    for report in reports:
        assert changes_pull(report).number == pull.number
    for settings in replicas:
        assert changes_pull(bench.cycle(settings)).number == pull.number
    assert len(bench.pulls()) == 1


def test_already_exists_is_adopted(bench: Bench) -> None:
    bench.world.create("alpha")
    bench.cycle()
    pull = bench.open_pull()
    # A replica that does not see the open pull request (a lagging list): the
    # forge refuses a second one, and the replica adopts the one that exists.
    bench.world.create("beta")
    bench.state.fail("GET", LIST, 200, body=b"[]")
    report = changes_pull(bench.cycle(elsewhere(bench, "replica")))
    assert report.state == "open" and report.number == pull.number
    refused = [e.status for e in bench.state.requests("POST", LIST) if e.status >= 400]
    assert refused == [422 if bench.kind == "github" else 409]
    (only,) = bench.pulls()
    assert only.title == "[test-cluster/agents] 2 deployment changes"


def test_rate_limited_403_is_waited_out(bench: Bench) -> None:
    bench.world.create("alpha")
    bench.state.fail(
        "POST",
        LIST,
        403,
        headers={"Retry-After": "30"},
        body={"message": "You have exceeded a secondary rate limit"},
    )
    before = bench.clock.time()
    assert changes_pull(bench.cycle()).state == "open"
    assert bench.clock.time() - before >= 30.0
    assert len(bench.pulls("open")) == 1


def test_401_is_a_clear_error_and_changes_nothing(bench: Bench) -> None:
    bench.world.create("alpha")
    base = bench.sha(BASE)
    bench.state.fail("*", r"^/api/", 401, body={"message": "Bad credentials"}, times=50)
    report = bench.cycle()
    (target,) = report.targets
    assert target.error is not None
    text = str(target.error)
    assert "401" in text and "acme/prod-agents" in text and bench.kind in text.lower()
    assert bench.sha(HEAD) is None and bench.sha(BASE) == base and bench.state.pulls == {}
    assert [o.action for o in report.outcomes] != ["deployed"]
