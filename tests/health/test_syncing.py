"""Synced-ness across later commits, with a real git repository (no mocked Repo)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.health.applications import parse_application
from bridge.health.assessing import assess, assess_all
from bridge.health.folders import DeploymentFolder
from bridge.health.rules import Observation, argocd_observations
from bridge.health.syncing import sync_state
from tests.gitservers import git
from tests.health.support import GitTreeReader, application, commit_files

pytestmark = pytest.mark.quick
NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)
REMOTE = "https://git.example.com/platform/prod-agents.git"


@pytest.fixture
def history(tmp_path: Path) -> dict[str, str]:
    """c1: deployment a's revision; c2: deployment b's, a untouched; c3: a's folder
    changed again; old: before a existed."""
    repo = tmp_path / "repo"
    git("init", "-q", "-b", "main", str(repo))
    shas = {"old": commit_files(repo, {"README.md": "generated\n"}, "init")}
    shas["c1"] = commit_files(
        repo,
        {
            "prod/agents/a/kustomization.yaml": "resources: [deploy.yaml]\n",
            "prod/agents/a/deploy.yaml": "image: a:1\n",
        },
        "deploy(agents/a)",
    )
    shas["c2"] = commit_files(
        repo, {"prod/agents/b/kustomization.yaml": "resources: []\n"}, "deploy(agents/b)"
    )
    shas["c3"] = commit_files(
        repo, {"prod/agents/a/deploy.yaml": "image: a:2\n"}, "deploy(agents/a) again"
    )
    shas["repo"] = str(repo)
    return shas


def test_a_later_commit_of_another_deployment_is_synced(history: dict[str, str]) -> None:
    reader = GitTreeReader(Path(history["repo"]))
    folder = "prod/agents/a"
    assert sync_state(history["c1"], history["c1"], folder, reader) == "synced"
    assert sync_state(history["c1"], history["c2"], folder, reader) == "synced"
    # A later commit that changed the folder: the consumer runs other bytes.
    assert sync_state(history["c1"], history["c3"], folder, reader) == "out-of-date"
    # An older commit: the revision has not reached the cluster yet.
    assert sync_state(history["c2"], history["c1"], "prod/agents/b", reader) == "out-of-date"
    assert sync_state(history["c1"], history["old"], folder, reader) == "out-of-date"


def test_a_commit_the_bridge_never_wrote_is_unknown_never_synced(history: dict[str, str]) -> None:
    reader = GitTreeReader(Path(history["repo"]))
    stranger = "f" * 40
    assert sync_state(history["c1"], stranger, "prod/agents/a", reader) == "unknown"
    assert sync_state(stranger, history["c2"], "prod/agents/a", reader) == "unknown"
    assert sync_state(None, history["c2"], "prod/agents/a", reader) == "unknown"
    assert sync_state(history["c1"], None, "prod/agents/a", reader) == "unknown"
    # A commit off our history (another branch) is not a later commit.
    repo = Path(history["repo"])
    git("checkout", "-q", "-b", "side", history["old"], cwd=repo)
    side = commit_files(repo, {"prod/agents/a/deploy.yaml": "image: a:1\n"}, "side")
    assert sync_state(history["c1"], side, "prod/agents/a", reader) == "out-of-date"


def test_end_to_end_argo_reports_the_later_sha(history: dict[str, str]) -> None:
    """The issue's case: a deployment's commit, a later commit of another
    deployment, the consumer reporting the later sha -> the first is synced."""
    reader = GitTreeReader(Path(history["repo"]))
    a = DeploymentFolder("id-a", "agents", REMOTE, "main", "prod/agents/a", commit=history["c1"])
    b = DeploymentFolder("id-b", "agents", REMOTE, "main", "prod/agents/b", commit=history["c2"])
    apps = [
        application("a", repo=REMOTE, path="prod/agents/a", revision=history["c2"]),
        application("b", repo=REMOTE, path="prod/agents/b", revision=history["c2"]),
    ]
    observations = [
        o
        for doc in apps
        for o in argocd_observations(parse_application(doc), source="argocd", now=NOW)
    ]
    result = assess_all([a, b], observations, reader)
    assert result["id-a"].sync == "synced" and result["id-a"].status == "healthy"
    assert result["id-a"].to_json() == {
        "sync": "synced",
        "status": "healthy",
        "since": "2026-05-01T10:00:08Z",
        "commit": history["c2"],
        "source": "argocd argocd/a",
    }
    assert result["id-b"].sync == "synced" and not result["id-b"].per_namespace
    # The consumer then applies c3, which changed a's folder; a's record still
    # names c1 (e.g. someone edited the folder by hand): out of date.
    moved = application("a", repo=REMOTE, path="prod/agents/a", revision=history["c3"])
    [obs] = argocd_observations(parse_application(moved), source="argocd", now=NOW)
    assert assess(a, [obs], reader).sync == "out-of-date"


def test_per_namespace_objects_and_the_most_specific_wins(history: dict[str, str]) -> None:
    reader = GitTreeReader(Path(history["repo"]))
    a = DeploymentFolder("id-a", "agents", REMOTE, "main", "prod/agents/a", commit=history["c1"])
    namespace_app = application(
        "ns", repo=REMOTE, path="prod/agents", revision=history["c2"], health="Degraded"
    )
    [wide] = argocd_observations(parse_application(namespace_app), source="argocd", now=NOW)
    health = assess(a, [wide], reader)
    assert health.per_namespace and health.sync == "synced" and health.status == "degraded"
    own = application("a", repo=REMOTE, path="prod/agents/a", revision=history["c1"])
    [narrow] = argocd_observations(parse_application(own), source="argocd", now=NOW)
    best = assess(a, [wide, narrow], reader)
    assert not best.per_namespace and best.status == "healthy" and best.source == "argocd argocd/a"


def test_flux_observations_resolve_their_path_through_routes(history: dict[str, str]) -> None:
    reader = GitTreeReader(Path(history["repo"]))
    a = DeploymentFolder("id-a", "agents", REMOTE, "main", "prod/agents/a", commit=history["c1"])
    from bridge.health.folders import Scope

    obs = Observation(
        source="flux",
        object="flux-system/agents",
        scope=Scope(None, "main", None),
        applied=history["c2"],
        status="healthy",
        at=NOW,
    )
    assert assess(a, [obs], reader).sync == "unknown"  # no path known: nothing claimed
    routed = assess(a, [obs], reader, routes={"flux-system/agents": "./prod/agents"})
    assert routed.sync == "synced" and routed.per_namespace
    other_branch = assess(
        DeploymentFolder(
            "id-a", "agents", REMOTE, "staging", "prod/agents/a", commit=history["c1"]
        ),
        [obs],
        reader,
        routes={"flux-system/agents": "prod/agents"},
    )
    assert other_branch.sync == "unknown" and other_branch.source is None
