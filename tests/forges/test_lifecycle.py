"""Each forge client against the test forge, through a pull request's whole life:
open -> find -> adopt -> update -> decorate -> reviews -> merge for real ->
state merged with merge commit and merger -> next one closed with a comment;
auto-merge asked for the forge's way; commit statuses read."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.forges import MergeMethod, NewPull, PullState, ReviewState, StatusState
from bridge.forges.texts import ChangeKind, PullEntry, marker_of, pull_texts
from tests.forges.conftest import Site, push_change
from tests.gitservers import git

HEAD, BASE = "gitops-bridge/main", "main"


def texts(revision: str) -> tuple[str, str]:
    made = pull_texts(
        [PullEntry("agent-one", "d-1", ChangeKind.DEPLOY, revision, "ghcr.io/acme/agent:1")],
        cluster="prod",
        namespace="agents",
    )
    return made.title, made.body


def new_pull(revision: str = "r1", **extra: object) -> NewPull:
    title, body = texts(revision)
    return NewPull(head=HEAD, base=BASE, title=title, body=body, **extra)  # type: ignore[arg-type]


def test_open_find_adopt_update(site: Site) -> None:
    forge = site.client()
    assert forge.find_pull(HEAD, BASE).open is None
    opened = forge.open_pull(new_pull())
    assert opened.created and opened.pull.state is PullState.OPEN
    assert opened.pull.head_branch == HEAD and opened.pull.base_branch == BASE
    assert opened.pull.head_sha == site.state.branch_sha(HEAD)

    found = forge.find_pull(HEAD, BASE)
    assert found.open is not None and found.open.number == opened.pull.number
    assert found.last_closed is None

    # A restart, or a second replica: the create is refused and the open one adopted.
    again = site.client().open_pull(new_pull())
    assert not again.created and again.pull.number == opened.pull.number
    assert len(site.state.pulls) == 1
    refused = {"github": 422, "gitlab": 409, "gitea": 409}[site.kind]
    assert [e.status for e in site.state.requests("POST", r"/pulls$|/merge_requests$")] == [
        201,
        refused,
    ]

    # Title and body are rewritten only when the state marker changes.
    assert marker_of(found.open.body) == marker_of(new_pull().body)
    title, body = texts("r2")
    updated = forge.update_pull(opened.pull.number, title=title, body=body)
    assert marker_of(updated.body) == marker_of(body) != marker_of(new_pull().body)


def test_decorations(site: Site) -> None:
    forge = site.client()
    opened = forge.open_pull(
        new_pull(
            labels=["gitops-bridge", "no-such-label"],
            assignees=["alice", "mallory"],
            reviewers=["bob", "team:platform", "team:nobody"],
        )
    )
    pull = site.state.pulls[opened.pull.number]
    assert "gitops-bridge" in pull.labels and "alice" in pull.assignees and "bob" in pull.reviewers
    expected = {
        # GitHub creates unknown labels; GitLab has no team reviewers; Gitea labels by id.
        "github": {"mallory", "team:nobody"},
        "gitlab": {"mallory", "team:platform", "team:nobody"},
        "gitea": {"no-such-label", "mallory", "team:nobody"},
    }[site.kind]
    assert set(opened.not_applied) == expected
    if site.kind != "gitlab":
        assert pull.team_reviewers == ["platform"]


@pytest.mark.parametrize("method", ["merge", "squash"])
def test_merge_for_real_then_state_reviews_and_close(
    site: Site, method: str, tmp_path: Path
) -> None:
    forge = site.client()
    number = forge.open_pull(new_pull()).pull.number
    site.state.review(number, "alice", "APPROVED")
    site.state.review(number, "bob", "CHANGES_REQUESTED" if site.kind != "gitlab" else "APPROVED")
    reviews = forge.reviews(number)
    assert ("alice", ReviewState.APPROVED) in [(r.user, r.state) for r in reviews]
    assert all(r.submitted_at is not None for r in reviews)

    base_before = site.state.branch_sha(BASE)
    head = site.state.branch_sha(HEAD)
    merge_commit = site.state.merge(number, method=method, by="carol")
    merged = forge.get_pull(number)
    assert merged.state is PullState.MERGED
    assert merged.merge_commit == merge_commit == site.state.branch_sha(BASE)
    assert merged.merged_by == "carol" and merged.merged_at is not None
    parents = git("rev-list", "--parents", "-n1", merge_commit, cwd=site.state.bare).split()[1:]
    assert parents == ([base_before, head] if method == "merge" else [base_before])
    assert "agents/app.yaml" in git(
        "ls-tree", "-r", "--name-only", merge_commit, cwd=site.state.bare
    )

    lookup = forge.find_pull(HEAD, BASE)
    assert lookup.open is None and lookup.last_closed is not None
    assert lookup.last_closed.number == number and lookup.last_closed.merged_by == "carol"

    # The next change starts a new head from the base; that pull request is closed with a comment.
    work = tmp_path / "work"
    git("clone", "-q", str(site.state.bare), str(work))
    git("config", "user.email", "w@test", cwd=work)
    git("config", "user.name", "w", cwd=work)
    push_change(work, HEAD, "agents/app.yaml", "rev: 2\n")
    second = forge.open_pull(new_pull("r2")).pull
    assert second.number != number
    closed = forge.close_pull(second.number, comment="Nothing to propose: the base matches.")
    assert closed.state is PullState.CLOSED and closed.merge_commit is None
    assert site.state.pulls[second.number].comments[-1]["body"].startswith("Nothing to propose")
    lookup = forge.find_pull(HEAD, BASE)
    assert lookup.open is None and lookup.last_closed is not None
    assert (
        lookup.last_closed.number == second.number and lookup.last_closed.state is PullState.CLOSED
    )


@pytest.mark.parametrize("method", [MergeMethod.MERGE, MergeMethod.SQUASH])
def test_auto_merge_request(site: Site, method: MergeMethod) -> None:
    forge = site.client()
    pull = forge.open_pull(new_pull()).pull
    site.state.set_status(pull.head_sha, "ci/build", "pending")
    forge.enable_auto_merge(pull, method)
    sent = site.state.exchanges[-1]
    if site.kind == "github":
        assert sent.path == "/api/graphql"
        assert "enablePullRequestAutoMerge" in sent.json()["query"]
        assert sent.json()["variables"] == {"id": pull.forge_id, "method": method.value.upper()}
    elif site.kind == "gitlab":
        assert sent.method == "PUT" and sent.path.endswith(f"/merge_requests/{pull.number}/merge")
        assert sent.json()["auto_merge"] is True and sent.json()["sha"] == pull.head_sha
        assert sent.json().get("squash", False) is (method is MergeMethod.SQUASH)
    else:
        assert sent.method == "POST" and sent.path.endswith(f"/pulls/{pull.number}/merge")
        assert sent.json() == {
            "Do": method.value,
            "merge_when_checks_succeed": True,
            "head_commit_id": pull.head_sha,
        }
    assert site.state.pulls[pull.number].auto_merge is not None
    assert site.state.pulls[pull.number].state == "open"  # asked for, not merged


def test_commit_statuses(site: Site) -> None:
    forge = site.client()
    sha = site.state.branch_sha(BASE)
    assert sha is not None
    site.state.set_status(sha, "argocd/prod-agents", "success", description="Synced")
    site.state.set_status(sha, "flux/agents", "pending")
    if site.kind == "github":
        site.state.add_check_run(sha, "kubeconform", "completed", "failure")
    found = {s.context: s.state for s in forge.commit_statuses(sha)}
    assert found["argocd/prod-agents"] is StatusState.SUCCESS
    assert found["flux/agents"] is StatusState.PENDING
    if site.kind == "github":
        assert found["kubeconform"] is StatusState.FAILURE


def test_head_branch_deleted_after_merge(site: Site) -> None:
    """A forge that deletes the head branch on merge: the merged pull request is
    still found and read (with its last head sha), and nothing is open."""
    forge = site.client()
    pull = forge.open_pull(new_pull()).pull
    site.state.merge(pull.number, method="squash", delete_branch=True)
    assert site.state.branch_sha(HEAD) is None
    lookup = forge.find_pull(HEAD, BASE)
    assert lookup.open is None and lookup.last_closed is not None
    assert lookup.last_closed.state is PullState.MERGED
    assert lookup.last_closed.head_sha == pull.head_sha
