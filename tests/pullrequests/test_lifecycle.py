"""Pull-request mode end to end, for GitHub, GitLab and Gitea: real git, the
test forge, the local control plane; every cycle a new reconciler (a restart
between each step), so nothing is carried in memory from one step to the next.
"""

from __future__ import annotations

from typing import Any

from bridge.formats.commits import parse
from bridge.reconcile.outcomes import CycleReport, PullReport
from tests.leakscan import scan_repo, scan_texts
from tests.pullrequests.conftest import BASE, HEAD, TOKEN, Bench, git

IMAGE_2 = "registry.example.com/acme/agent:2.0.0"


def changes_pull(report: CycleReport) -> PullReport:
    (target,) = report.targets
    assert target.error is None, target.error
    assert target.pulls is not None
    (pull,) = [p for p in target.pulls if p.kind == "changes"]
    return pull


def bridge_commits(bench: Bench, since: str, until: str) -> list[Any]:
    out = git("log", "--format=%B%x1e", f"{since}..{until}", cwd=bench.state.bare)
    return [parse(m.strip("\n")) for m in out.split("\x1e") if m.strip()]


def test_change_more_changes_merge_then_a_new_pull_request(bench: Bench) -> None:
    world = bench.world
    base0 = bench.sha(BASE)
    assert base0 is not None
    alpha = world.create("alpha", secrets_={"OPENAI_KEY": "sk-alpha-secret-value-0001"})

    # A change opens one pull request; the base (what the cluster syncs) is untouched.
    first = changes_pull(bench.cycle())
    pull = bench.open_pull()
    assert (first.state, first.number) == ("open", pull.number)
    assert first.url is not None and first.url.startswith(bench.url)
    assert bench.sha(BASE) == base0
    assert pull.title == "[test-cluster/agents] 1 deployment change"
    assert pull.labels == ["gitops-bridge"]
    (commit,) = bridge_commits(bench, BASE, HEAD)
    assert commit is not None and commit.kind == "deploy"
    assert commit.trailers["Deployment-Id"] == alpha["id"]

    # A quiet cycle (after a restart) writes nothing to the forge.
    writes = len(bench.writes())
    bench.cycle()
    assert len(bench.writes()) == writes

    # More changes: new commits on the same pull request, title and body updated.
    world.create("beta")
    world.admin.patch_deployment(alpha["id"], {"source_revision_config": {"image_uri": IMAGE_2}})
    second = changes_pull(bench.cycle())
    assert second.number == pull.number and len(bench.pulls()) == 1
    pull = bench.open_pull()
    assert pull.title == "[test-cluster/agents] 2 deployment changes"
    assert IMAGE_2 in pull.body and "beta" in pull.body
    kinds = [c.kind for c in bridge_commits(bench, BASE, HEAD)]
    assert len(kinds) == 3 and set(kinds) == {"deploy"}

    # Merged (the forge deletes the head branch): the next cycle proposes nothing.
    method = {"github": "merge", "gitlab": "squash", "gitea": "squash"}[bench.kind]
    merge = bench.state.merge(pull.number, method=method, by="bob", delete_branch=True)
    merged = changes_pull(bench.cycle())
    assert merged.state == "merged" and merged.merge_commit == merge
    assert merged.merged_by == "bob"
    assert bench.pulls("open") == [] and bench.sha(BASE) == merge

    # The next change opens a new pull request on a head started from the base.
    world.create("gamma")
    third = changes_pull(bench.cycle())
    assert third.state == "open" and third.number != pull.number
    new = bench.open_pull()
    assert new.title == "[test-cluster/agents] 1 deployment change" and "gamma" in new.body
    assert [c.kind for c in bridge_commits(bench, BASE, HEAD)] == ["deploy"]
    assert len(bench.pulls()) == 2

    # No secret anywhere: not in git, not in any pull request text or request.
    needles = [*world.secret_values, world.api_key, TOKEN]
    assert scan_texts(bench.texts(), needles) == []
    assert scan_repo(bench.state.bare, needles) == []


def test_both_merge_methods_and_the_head_recreated(bench: Bench) -> None:
    """Squash on one forge above and merge here, so each forge sees both."""
    world = bench.world
    world.create("alpha")
    bench.cycle()
    method = {"github": "squash", "gitlab": "merge", "gitea": "merge"}[bench.kind]
    merge = bench.state.merge(bench.open_pull().number, method=method, delete_branch=False)
    # The head branch stays (not deleted by the forge): it is spent, not reused.
    world.create("beta")
    pull = changes_pull(bench.cycle())
    assert pull.state == "open"
    new = bench.open_pull()
    commits = bridge_commits(bench, BASE, HEAD)
    assert [c.trailers["Deployment-Name"] for c in commits] == ["beta"]
    assert bench.state.git("merge-base", "--is-ancestor", merge, HEAD) == ""
    bench.state.merge(new.number, method=method)
    assert bench.show(BASE, "test-cluster/agents/beta/kustomization.yaml")
    assert changes_pull(bench.cycle()).state == "merged"
