"""What reviewers and other writers do to the bridge's pull requests, for
GitHub, GitLab and Gitea: closed unmerged, nothing left to propose, the base
moved by someone else, a foreign commit on the head branch."""

from __future__ import annotations

from tests.pullrequests.conftest import BASE, HEAD, Bench
from tests.pullrequests.test_lifecycle import IMAGE_2, changes_pull


def test_closed_unmerged_is_not_reopened_then_nothing_to_propose(bench: Bench) -> None:
    world = bench.world
    alpha = world.create("alpha")
    bench.cycle()
    first = bench.open_pull()

    # A reviewer closes it: rejected in review, and not reopened for the same state.
    bench.state.close(first.number)
    for _ in range(2):
        report = changes_pull(bench.cycle())
        assert report.state == "rejected" and report.number == first.number
        assert bench.pulls("open") == []

    # A new desired state opens a new pull request.
    world.admin.patch_deployment(alpha["id"], {"source_revision_config": {"image_uri": IMAGE_2}})
    assert changes_pull(bench.cycle()).state == "open"
    second = bench.open_pull()
    assert second.number != first.number and IMAGE_2 in second.body

    # The control plane no longer wants it: nothing to propose, closed with a comment.
    world.admin.delete_deployment(alpha["id"])
    report = changes_pull(bench.cycle())
    assert report.state == "closed" and report.number == second.number
    closed = bench.state.pulls[second.number]
    assert closed.state == "closed" and not closed.merged
    assert len(closed.comments) == 1 and "nothing to propose" in closed.comments[0]["body"]
    assert bench.sha(HEAD) is None and bench.pulls("open") == []
    # Closed by the bridge is not "rejected": the next cycles stay quiet.
    writes = len(bench.writes())
    assert changes_pull(bench.cycle()).state in ("closed", "none")
    assert len(bench.writes()) == writes


def test_base_moved_is_merged_into_the_head(bench: Bench) -> None:
    world = bench.world
    world.create("alpha")
    bench.cycle()
    pull = bench.open_pull()
    other = bench.human_push(BASE, "docs/other.md", "another writer\n")

    world.create("beta")
    assert changes_pull(bench.cycle()).number == pull.number
    head = bench.sha(HEAD)
    assert head is not None
    # A merge commit, never a rebase: the old head and the new base are both parents.
    assert bench.state.git("merge-base", "--is-ancestor", other, HEAD) == ""
    assert bench.state.git("merge-base", "--is-ancestor", pull.head_sha, HEAD) == ""
    assert any(s.startswith("Merge branch 'main' into") for s in bench.subjects(BASE, HEAD))
    assert bench.show(HEAD, "docs/other.md") == "another writer\n"
    bench.state.merge(pull.number)
    assert bench.show(BASE, "test-cluster/agents/beta/kustomization.yaml")


def test_foreign_push_pauses_the_pull_request(bench: Bench) -> None:
    world = bench.world
    alpha = world.create("alpha")
    bench.cycle()
    pull = bench.open_pull()
    foreign = bench.human_push(HEAD, "test-cluster/agents/alpha/extra.yaml", "a: 1\n")

    # Stopped: commented once (however many cycles and restarts), reported, not updated.
    for _ in range(2):
        report = changes_pull(bench.cycle())
        assert report.state == "paused" and foreign[:12] in report.note
        assert bench.sha(HEAD) == foreign
    comments = bench.state.pulls[pull.number].comments
    assert len(comments) == 1 and foreign[:12] in comments[0]["body"]

    # A new desired state: that pull request is closed, a new one starts from the base.
    world.admin.patch_deployment(alpha["id"], {"source_revision_config": {"image_uri": IMAGE_2}})
    report = changes_pull(bench.cycle())
    assert report.state == "open" and report.number != pull.number
    assert bench.state.pulls[pull.number].state == "closed"
    assert bench.state.git("merge-base", "--is-ancestor", foreign, HEAD, check=False) == ""
    assert "extra.yaml" not in bench.tree(HEAD).__repr__()
