"""A whole pull-request world: the local control plane, a test forge (GitHub,
GitLab or Gitea) over a real bare repository served by its own smart HTTP,
and the bridge configured in pull-request mode against it. Every exchange
with the forge is checked against the forge's API description at the end
(where ../shared is present; tests.forges.conformance says when it is not).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bridge.config import Settings, load_settings
from bridge.forges import ForgeHosts
from bridge.forges.models import ForgeKind
from bridge.formats.canonical_yaml import dumps
from bridge.reconcile.outcomes import CycleReport
from tests.forges import conformance
from tests.forges.conftest import API_PATH, FAKES, TOKEN, VirtualClock
from tests.forges.fake.server import serve
from tests.forges.fake.state import ForgeState
from tests.gitservers import bare_remote, git
from tests.reconcile.world import World, make_world

GIT_USER = {"github": "x-access-token", "gitlab": "oauth2", "gitea": "oauth2"}
HEAD, BASE = "gitops-bridge/main", "main"


@dataclass
class Bench:
    """The world, the forge, and the bridge's pull-request config for them."""

    world: World
    kind: ForgeKind
    state: ForgeState
    url: str
    clock: VirtualClock
    work: Path
    publish: dict[str, Any] = field(default_factory=dict)

    @property
    def repo_url(self) -> str:
        return f"{self.url}{self.state.owner}/{self.state.name}.git"

    @property
    def api_url(self) -> str:
        return self.url + API_PATH[self.kind]

    @property
    def env(self) -> dict[str, str]:
        return {**self.world.env, "FORGE_TOKEN": TOKEN}

    def pull_request(self, **extra: Any) -> dict[str, Any]:
        return {
            "forge": self.kind,
            "apiUrl": self.api_url,
            "auth": {"tokenEnv": "FORGE_TOKEN"},
            "labels": ["gitops-bridge"],
            **extra,
        }

    def config_doc(self, **pull: Any) -> dict[str, Any]:
        doc = self.world.config()
        doc["targets"] = [
            {
                "namespace": self.world.namespaces[0],
                "repo": self.repo_url,
                "branch": BASE,
                "publish": {"mode": "pull-request", "pullRequest": self.pull_request(**pull)},
            }
        ]
        return doc

    def write_config(self, **pull: Any) -> Path:
        path = self.world.root / "bridge.yaml"
        path.write_text(dumps(self.config_doc(**pull)))
        return path

    def settings(self, **pull: Any) -> Settings:
        return load_settings(self.write_config(**pull), env=self.env)

    def cycle(self, settings: Settings | None = None, **kwargs: Any) -> CycleReport:
        """One cycle in this process, as a restart would run it (a new reconciler)."""
        from bridge.commands.wiring import make_reconciler

        kwargs.setdefault("forge_hosts", ForgeHosts(self.clock))
        kwargs.setdefault("sleep", lambda _s: None)
        reconciler, close = make_reconciler(settings or self.settings(), **kwargs)
        try:
            return reconciler.run_cycle()
        finally:
            close()

    # -- the forge's side --------------------------------------------------------------

    def pulls(self, state: str | None = None, head: str = HEAD) -> list[Any]:
        return [
            p
            for n, p in sorted(self.state.pulls.items())
            if p.head == head and (state is None or p.state == state)
        ]

    def open_pull(self, head: str = HEAD) -> Any:
        found = self.pulls("open", head)
        assert len(found) == 1, f"{len(found)} open pull requests for {head}"
        return found[0]

    def texts(self) -> list[tuple[str, str]]:
        """Everything the bridge wrote on the forge: titles, bodies, comments, and
        every request body it sent (for the secret scan)."""
        out: list[tuple[str, str]] = []
        for n, p in sorted(self.state.pulls.items()):
            out += [(f"#{n} title", p.title), (f"#{n} body", p.body)]
            out += [(f"#{n} comment", c["body"]) for c in p.comments]
        for e in self.state.exchanges:
            out.append((f"{e.method} {e.path}", e.body.decode("utf-8", "replace")))
        return out

    def writes(self) -> list[str]:
        """The API writes the bridge sent (method and path), in order."""
        return [
            f"{e.method} {e.path}"
            for e in self.state.exchanges
            if e.method != "GET" and ".git/" not in e.path
        ]

    def sha(self, branch: str) -> str | None:
        return self.state.branch_sha(branch)

    def tree(self, ref: str) -> dict[str, str]:
        out = git("ls-tree", "-r", "--full-tree", ref, cwd=self.state.bare, check=False)
        tree: dict[str, str] = {}
        for line in out.splitlines():
            meta, _, path = line.partition("\t")
            tree[path] = meta.split()[2]
        return tree

    def show(self, ref: str, path: str) -> str:
        return git("show", f"{ref}:{path}", cwd=self.state.bare)

    def subjects(self, since: str, until: str) -> list[str]:
        out = git("log", "--format=%s", f"{since}..{until}", cwd=self.state.bare)
        return out.splitlines()

    def human_push(self, branch: str, path: str, content: str, *, base: str = BASE) -> str:
        """A commit by someone else, pushed to `branch` over the forge's git."""
        work = self.work
        git("fetch", "-q", "origin", cwd=work)
        exists = git("ls-remote", "origin", f"refs/heads/{branch}", cwd=work).strip()
        git(
            "checkout",
            "-q",
            "-B",
            branch,
            f"origin/{branch}" if exists else f"origin/{base}",
            cwd=work,
        )
        target = work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        git("add", path, cwd=work)
        git("commit", "-qm", f"human edit of {path}", cwd=work)
        git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=work)
        return git("rev-parse", "HEAD", cwd=work).strip()


def _seed(bare: Path, work: Path) -> None:
    git("clone", "-q", str(bare), str(work))
    git("config", "user.email", "human@example.com", cwd=work)
    git("config", "user.name", "A Human", cwd=work)
    (work / "NOTES.md").write_text("not the bridge's\n")
    git("add", "NOTES.md", cwd=work)
    git("commit", "-qm", "init", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)


@pytest.fixture(scope="session")
def specs() -> conformance.Specs:
    return conformance.load()


@pytest.fixture
def make_bench(tmp_path: Path, specs: conformance.Specs) -> Iterator[Callable[[ForgeKind], Bench]]:
    running: list[tuple[Bench, Any, Any]] = []

    def start(kind: ForgeKind) -> Bench:
        root = tmp_path / kind
        root.mkdir()
        world_context = make_world(root, ("agents",))
        world = world_context.__enter__()
        clock = VirtualClock()
        bare = bare_remote(root / "forge" / "acme" / "prod-agents.git")
        work = root / "human"
        _seed(bare, work)
        state = ForgeState(kind, bare, token=TOKEN, clock=clock.time)
        state.git_users[GIT_USER[kind]] = TOKEN
        server = serve(FAKES[kind].app(state))
        url = server.__enter__()
        # The human's clone pushes over the same smart HTTP (as someone else).
        state.git_users["human"] = "human-password"
        origin = url.replace("http://", "http://human:human-password@")
        git("remote", "set-url", "origin", f"{origin}acme/prod-agents.git", cwd=work)
        bench = Bench(world, kind, state, url, clock, work)
        running.append((bench, server, world_context))
        return bench

    yield start
    problems: list[str] = []
    for bench, server, world_context in running:
        server.__exit__(None, None, None)
        world_context.__exit__(None, None, None)
        problems += specs.violations(bench.kind, bench.state.exchanges, API_PATH[bench.kind])
    assert not problems, "exchanges that break the forge's API description:\n" + "\n".join(
        problems[:20]
    )


@pytest.fixture(params=["github", "gitlab", "gitea"])
def bench(request: pytest.FixtureRequest, make_bench: Callable[[ForgeKind], Bench]) -> Bench:
    kind: ForgeKind = request.param
    return make_bench(kind)


__all__ = ["BASE", "HEAD", "Bench", "os"]
