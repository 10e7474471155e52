"""Helpers of the health tests: the shared reference files, Applications made
here, and a TreeReader over a real git repository."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.gitservers import GIT_ENV, git

REPO = Path(__file__).resolve().parents[2]
CONSUMERS = REPO.parent / "shared" / "reference" / "consumers"
FIXTURE = CONSUMERS / "argocd-application-fixture.yaml"
SWAGGER = CONSUMERS / "argocd-applications.swagger.json"


def shared_fixture() -> dict[str, Any]:
    """The real Application of ../shared (argo-cd's controller/testdata), or a skip."""
    if not FIXTURE.is_file():
        pytest.skip(f"{FIXTURE} is absent (../shared beside the checkout)")
    doc = yaml.safe_load(FIXTURE.read_text())
    assert isinstance(doc, dict)
    return doc


def application(
    name: str = "agents-support-bot",
    *,
    repo: str = "https://git.example.com/platform/prod-agents.git",
    path: str = "prod/agents/support-bot",
    branch: str = "main",
    sync: str = "Synced",
    revision: str = "a" * 40,
    health: str = "Healthy",
    phase: str | None = "Succeeded",
    finished: str | None = "2026-05-01T10:00:05Z",
    reconciled: str | None = "2026-05-01T10:00:10Z",
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An Application in the API's JSON shape, made here (present in every checkout)."""
    status: dict[str, Any] = {
        "sync": {"status": sync, "revision": revision},
        "health": {"status": health, "lastTransitionTime": "2026-05-01T10:00:08Z"},
        "history": [
            {"id": 1, "revision": revision, "deployedAt": finished or "2026-05-01T10:00:05Z"}
        ],
    }
    if phase is not None:
        status["operationState"] = {
            "phase": phase,
            "startedAt": "2026-05-01T10:00:00Z",
            "finishedAt": finished,
            "syncResult": {"revision": revision},
        }
    if reconciled is not None:
        status["reconciledAt"] = reconciled
    if conditions:
        status["conditions"] = conditions
    return {
        "metadata": {
            "name": name,
            "namespace": "argocd",
            "labels": {
                "app.kubernetes.io/part-of": "langsmith-gitops-bridge",
                "langsmith.com/deployment-id": "0b1c",
            },
        },
        "spec": {
            "project": "langsmith",
            "source": {"repoURL": repo, "path": path, "targetRevision": branch},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "agents"},
        },
        "status": status,
    }


def with_changes(doc: dict[str, Any], **status: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out["status"].update(status)
    return out


class GitTreeReader:
    """bridge.health.syncing.TreeReader over a real repository, with git itself."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo

    def _ok(self, *args: str) -> bool:
        done = subprocess.run(
            ["git", *args], cwd=self.repo, env=GIT_ENV, capture_output=True, check=False
        )
        return done.returncode == 0

    def has_commit(self, sha: str) -> bool:
        return self._ok("cat-file", "-e", f"{sha}^{{commit}}")

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        return self._ok("merge-base", "--is-ancestor", ancestor, descendant)

    def folder_tree(self, sha: str, folder: str) -> str | None:
        spec = f"{sha}^{{tree}}" if not folder else f"{sha}:{folder}"
        done = subprocess.run(
            ["git", "rev-parse", "--verify", "-q", spec],
            cwd=self.repo,
            env=GIT_ENV,
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout.strip() or None if done.returncode == 0 else None


def commit_files(repo: Path, files: dict[str, str], message: str) -> str:
    """Write `files` (path -> text; "" deletes), commit, return the sha."""
    for name, text in files.items():
        target = repo / name
        if text == "":
            git("rm", "-rq", name, cwd=repo)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        git("add", name, cwd=repo)
    git(
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.com",
        "commit",
        "-qm",
        message,
        cwd=repo,
    )
    return git("rev-parse", "HEAD", cwd=repo).strip()
