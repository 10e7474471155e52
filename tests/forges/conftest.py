"""Fixtures of the forge tests: a test forge per kind over a real bare repo,
clients made by the bridge's own factory, a virtual clock."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bridge.forges import ForgeHosts, StaticToken, open_forge
from bridge.forges.forge import ForgeClient
from bridge.forges.models import ForgeKind
from bridge.redaction import Redacted
from tests.forges import conformance
from tests.forges.fake import gitea as fake_gitea
from tests.forges.fake import github as fake_github
from tests.forges.fake import gitlab as fake_gitlab
from tests.forges.fake.server import serve
from tests.forges.fake.state import ForgeState
from tests.gitservers import bare_remote, git

TOKEN = "tok_" + "S3cr3tForgeToken" * 2
API_PATH = {"github": "api/v3", "gitlab": "api/v4", "gitea": "api/v1"}
FAKES = {"github": fake_github, "gitlab": fake_gitlab, "gitea": fake_gitea}


class VirtualClock:
    """Time that moves only when someone sleeps: minutes of backoff in no time."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._mono = 1000.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def time(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            if seconds > 0:
                self._now += seconds
                self._mono += seconds

    def advance(self, seconds: float) -> None:
        self.sleep(seconds)
        with self._lock:
            self.sleeps.pop()


@dataclass
class Site:
    """A running test forge: its state, base URL and the repo URL the bridge uses."""

    kind: ForgeKind
    state: ForgeState
    url: str
    clock: VirtualClock

    @property
    def api_url(self) -> str:
        return self.url + API_PATH[self.kind]

    @property
    def repo_url(self) -> str:
        return f"{self.url}{self.state.owner}/{self.state.name}.git"

    def client(
        self, *, token: str = TOKEN, hosts: ForgeHosts | None = None, **kwargs: Any
    ) -> ForgeClient:
        tokens = kwargs.pop("tokens", None) or StaticToken(
            Redacted(token), origin="$FORGE_TOKEN", git_username="x-access-token"
        )
        return open_forge(
            self.kind,
            repo_url=self.repo_url,
            api_url=self.api_url,
            tokens=tokens,
            hosts=hosts or ForgeHosts(self.clock),
            jitter=lambda: 0.0,
            **kwargs,
        )


def seed_repo(bare: Path, work: Path) -> None:
    """`main` with one commit, and the bridge's head branch one commit ahead."""
    git("clone", "-q", str(bare), str(work))
    git("config", "user.email", "seed@test", cwd=work)
    git("config", "user.name", "seed", cwd=work)
    (work / "README.md").write_text("repo\n")
    git("add", "README.md", cwd=work)
    git("commit", "-qm", "init", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    push_change(work, "gitops-bridge/main", "agents/app.yaml", "rev: 1\n")


def push_change(work: Path, branch: str, path: str, content: str, *, base: str = "main") -> str:
    git("fetch", "-q", "origin", cwd=work)
    exists = git("ls-remote", "origin", f"refs/heads/{branch}", cwd=work).strip()
    git(
        "checkout", "-q", "-B", branch, f"origin/{branch}" if exists else f"origin/{base}", cwd=work
    )
    target = work / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content)
    git("add", path, cwd=work)
    git("commit", "-qm", f"change {path}", cwd=work)
    git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=work)
    return git("rev-parse", "HEAD", cwd=work).strip()


@pytest.fixture(scope="session")
def specs() -> conformance.Specs:
    return conformance.load()


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def make_site(
    tmp_path: Path, clock: VirtualClock, specs: conformance.Specs
) -> Iterator[Callable[[ForgeKind], Site]]:
    """make_site(kind) -> a running test forge with a seeded repo. At teardown every
    exchange is checked against the forge's API description (where it is present)."""
    running: list[tuple[Site, Any]] = []

    def start(kind: ForgeKind) -> Site:
        root = tmp_path / f"{kind}-root"
        bare = bare_remote(root / "acme" / "prod-agents.git")
        seed_repo(bare, tmp_path / f"{kind}-seed")
        state = ForgeState(kind, bare, token=TOKEN, clock=clock.time)
        context = serve(FAKES[kind].app(state))
        url = context.__enter__()
        site = Site(kind, state, url, clock)
        running.append((site, context))
        return site

    yield start
    problems: list[str] = []
    for site, context in running:
        context.__exit__(None, None, None)
        problems += specs.violations(site.kind, site.state.exchanges, API_PATH[site.kind])
    assert not problems, "exchanges that break the forge's API description:\n" + "\n".join(
        problems[:20]
    )


@pytest.fixture(params=["github", "gitlab", "gitea"])
def site(request: pytest.FixtureRequest, make_site: Callable[[ForgeKind], Site]) -> Site:
    kind: ForgeKind = request.param
    return make_site(kind)
