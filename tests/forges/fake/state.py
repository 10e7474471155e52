"""The test forge's state: pull requests over a real bare git repository.

One `ForgeState` is one repository on one forge (GitHub, GitLab or Gitea):
the bare repo is the truth for branches and commits (the bridge pushes to it
over smart HTTP, the same repo), this object holds what git cannot: pull
requests, reviews, labels, comments, commit statuses, tokens. Merges are real
git: `git merge-tree --write-tree` then `commit-tree` with one parent (squash)
or two (merge commit), moved onto the base with a compare-and-swap
`update-ref`, like a forge's merge button.

Tests steer it: `merge`, `review`, `set_status`, `close`, and `fail` to make
the next matching request answer 401/403/404/409/422/429/5xx (with headers
such as `retry-after`), or to send a raw, oversized, deep or dripping body.
Every exchange is recorded (`exchanges`) for assertions and for the OpenAPI
conformance check.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.gitservers import git


@dataclass
class Pull:
    number: int
    id: int
    head: str
    base: str
    title: str
    body: str
    author: str
    created_at: float
    updated_at: float
    draft: bool = False
    state: str = "open"  # open | closed
    merged: bool = False
    merged_at: float | None = None
    merged_by: str | None = None
    merge_commit: str | None = None
    merge_method: str | None = None
    closed_at: float | None = None
    head_sha: str = ""
    base_sha: str = ""
    labels: list[str] = field(default_factory=list)
    assignees: list[str] = field(default_factory=list)
    reviewers: list[str] = field(default_factory=list)
    team_reviewers: list[str] = field(default_factory=list)
    reviews: list[dict[str, Any]] = field(default_factory=list)
    comments: list[dict[str, Any]] = field(default_factory=list)
    auto_merge: dict[str, Any] | None = None


@dataclass
class Exchange:
    """One request and the answer the fake gave (for assertions and conformance)."""

    method: str
    path: str  # without the query
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    status: int
    response_headers: dict[str, str]
    response_body: bytes
    injected: bool  # the answer came from `fail`, not from the forge's logic
    at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def response_json(self) -> Any:
        return json.loads(self.response_body) if self.response_body else None


@dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    headers: dict[str, str]
    body: bytes | None  # None: the forge's usual error body for the status
    times: int
    chunks: list[bytes] | None = None  # raw body sent chunk by chunk
    delay: float = 0.0  # seconds between chunks


@dataclass
class App:
    """A GitHub App the fake knows: its id, public key and installation."""

    app_id: str
    installation_id: str
    public_key: rsa.RSAPublicKey
    lifetime: float = 3600.0
    minted: list[tuple[str, float]] = field(default_factory=list)  # (token, expires_at)


class ForgeState:
    def __init__(
        self,
        kind: str,
        bare: Path,
        *,
        owner: str = "acme",
        name: str = "prod-agents",
        token: str = "",
        bot: str = "gitops-bridge-bot",
        users: tuple[str, ...] = ("alice", "bob", "carol"),
        teams: tuple[str, ...] = ("platform",),
        labels: tuple[str, ...] = ("gitops-bridge", "deploy"),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kind = kind
        self.bare = bare
        self.owner = owner
        self.name = name
        self.bot = bot
        self.users = {bot, *users}
        self.teams = set(teams)
        self.labels = {label: i + 1 for i, label in enumerate(labels)}
        self.clock = clock
        self.tokens: dict[str, float | None] = {token: None} if token else {}  # -> expiry
        self.git_users: dict[str, str] = {}
        self.apps: list[App] = []
        self.pulls: dict[int, Pull] = {}
        self.statuses: dict[str, list[dict[str, Any]]] = {}
        self.check_runs: dict[str, list[dict[str, Any]]] = {}
        self.faults: list[Fault] = []
        self.exchanges: list[Exchange] = []
        self.lock = threading.RLock()
        self._ids = 1000
        self.base_url = ""  # set by the server

    # --- ids, time, auth -----------------------------------------------------------

    def next_id(self) -> int:
        with self.lock:
            self._ids += 1
            return self._ids

    def now(self) -> float:
        return self.clock()

    @staticmethod
    def iso(moment: float | None) -> str | None:
        if moment is None:
            return None
        return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def token_valid(self, token: str) -> bool:
        with self.lock:
            if token not in self.tokens:
                return False
            expiry = self.tokens[token]
            return expiry is None or self.now() < expiry

    def add_app(self, app_id: str, installation_id: str, public_key: rsa.RSAPublicKey) -> App:
        app = App(app_id, installation_id, public_key)
        self.apps.append(app)
        return app

    def verify_jwt(self, jwt: str) -> App | None:
        """The App whose key signed this RS256 JWT, if its claims hold (GitHub's rules)."""
        try:
            head_b64, claims_b64, sig_b64 = jwt.split(".")
            header = json.loads(_unb64(head_b64))
            claims = json.loads(_unb64(claims_b64))
            signature = _unb64(sig_b64)
        except ValueError:
            return None
        if header.get("alg") != "RS256":
            return None
        now = self.now()
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int):
            return None
        if iat > now + 5 or exp <= now or exp - iat > 600:
            return None
        for app in self.apps:
            if str(claims.get("iss")) != app.app_id:
                continue
            try:
                app.public_key.verify(
                    signature,
                    f"{head_b64}.{claims_b64}".encode(),
                    padding.PKCS1v15(),
                    hashes.SHA256(),
                )
            except InvalidSignature:
                return None
            return app
        return None

    def mint(self, app: App) -> tuple[str, float]:
        token = "ghs_" + secrets.token_urlsafe(27)
        expires = self.now() + app.lifetime
        with self.lock:
            self.tokens[token] = expires
            app.minted.append((token, expires))
            self.git_users["x-access-token"] = token
        return token, expires

    # --- faults ----------------------------------------------------------------------

    def fail(
        self,
        method: str,
        pattern: str,
        status: int,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | dict[str, Any] | None = None,
        times: int = 1,
        chunks: list[bytes] | None = None,
        delay: float = 0.0,
    ) -> None:
        """The next `times` requests of `method` whose path matches `pattern` (a
        regex searched in the path) get this answer instead of the forge's."""
        raw = json.dumps(body).encode() if isinstance(body, dict) else body
        with self.lock:
            self.faults.append(
                Fault(
                    method.upper(),
                    re.compile(pattern),
                    status,
                    headers or {},
                    raw,
                    times,
                    chunks,
                    delay,
                )
            )

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.method in (method, "*") and fault.pattern.search(path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def requests(self, method: str | None = None, pattern: str = "") -> list[Exchange]:
        with self.lock:
            return [
                e
                for e in self.exchanges
                if (method is None or e.method == method) and re.search(pattern, e.path)
            ]

    # --- git ---------------------------------------------------------------------------

    def git(self, *args: str, check: bool = True) -> str:
        return git(*args, cwd=self.bare, check=check).strip()

    def branch_sha(self, branch: str) -> str | None:
        out = self.git(
            "rev-parse", "--verify", "-q", f"refs/heads/{branch}^{{commit}}", check=False
        )
        return out or None

    def refresh(self, pull: Pull) -> Pull:
        """A pull request's head as the repository has it now (a deleted head branch
        keeps the last sha seen, as forges do)."""
        if pull.state == "open":
            sha = self.branch_sha(pull.head)
            if sha:
                pull.head_sha = sha
            base = self.branch_sha(pull.base)
            if base:
                pull.base_sha = base
        return pull

    def merge(
        self, number: int, *, method: str = "merge", by: str = "alice", delete_branch: bool = False
    ) -> str:
        """Merge for real: merge commit or squash onto the base; returns the new base sha."""
        with self.lock:
            pull = self.refresh(self.pulls[number])
            if pull.state != "open":
                raise ValueError(f"pull request {number} is not open")
            base_sha, head_sha = self.branch_sha(pull.base), self.branch_sha(pull.head)
            if base_sha is None or head_sha is None:
                raise ValueError("base or head branch missing")
            out = git("merge-tree", "--write-tree", base_sha, head_sha, cwd=self.bare, check=False)
            tree = out.splitlines()[0].strip() if out else ""
            if not re.fullmatch(r"[0-9a-f]{40}", tree) or "CONFLICT" in out:
                raise MergeConflict(f"pull request {number} does not merge cleanly")
            env = {
                "GIT_AUTHOR_NAME": by,
                "GIT_AUTHOR_EMAIL": f"{by}@forge.test",
                "GIT_COMMITTER_NAME": by,
                "GIT_COMMITTER_EMAIL": f"{by}@forge.test",
            }
            if method == "squash":
                message = f"{pull.title} (#{number})\n\n{pull.body[:2000]}"
                parents = ["-p", base_sha]
            else:
                message = (
                    f"Merge pull request #{number} from {self.owner}/{pull.head}\n\n{pull.title}"
                )
                parents = ["-p", base_sha, "-p", head_sha]
            commit = git("commit-tree", tree, *parents, "-m", message, cwd=self.bare, **env).strip()
            git("update-ref", f"refs/heads/{pull.base}", commit, base_sha, cwd=self.bare)
            now = self.now()
            pull.state, pull.merged, pull.merged_at, pull.closed_at = "closed", True, now, now
            pull.merged_by, pull.merge_commit, pull.updated_at = by, commit, now
            pull.merge_method = method
            pull.head_sha, pull.base_sha = head_sha, commit
            if delete_branch:
                git("update-ref", "-d", f"refs/heads/{pull.head}", cwd=self.bare)
            return commit

    # --- steering --------------------------------------------------------------------

    def review(self, number: int, user: str, state: str = "APPROVED") -> None:
        with self.lock:
            pull = self.refresh(self.pulls[number])
            pull.reviews.append(
                {
                    "id": self.next_id(),
                    "user": user,
                    "state": state,
                    "at": self.now(),
                    "commit": pull.head_sha,
                }
            )

    def close(self, number: int) -> None:
        with self.lock:
            pull = self.refresh(self.pulls[number])
            pull.state, pull.closed_at, pull.updated_at = "closed", self.now(), self.now()

    def set_status(self, sha: str, context: str, state: str, *, description: str = "") -> None:
        with self.lock:
            self.statuses.setdefault(sha, []).append(
                {
                    "id": self.next_id(),
                    "context": context,
                    "state": state,
                    "description": description,
                    "target_url": f"https://ci.test/{context}",
                    "at": self.now(),
                }
            )

    def add_check_run(self, sha: str, name: str, status: str, conclusion: str | None) -> None:
        with self.lock:
            self.check_runs.setdefault(sha, []).append(
                {
                    "id": self.next_id(),
                    "name": name,
                    "status": status,
                    "conclusion": conclusion,
                    "at": self.now(),
                }
            )

    def open_pull(
        self, head: str, base: str, title: str, body: str, *, draft: bool = False
    ) -> Pull | None:
        """Create, or None when one is open for head and base (the forge's uniqueness
        rule, atomic under the lock: two racing creates never both succeed)."""
        with self.lock:
            for pull in self.pulls.values():
                if pull.state == "open" and pull.head == head and pull.base == base:
                    return None
            number = len(self.pulls) + 1
            now = self.now()
            pull = Pull(
                number=number,
                id=self.next_id(),
                head=head,
                base=base,
                title=title,
                body=body,
                author=self.bot,
                created_at=now,
                updated_at=now,
                draft=draft,
            )
            self.pulls[number] = self.refresh(pull)
            return pull


class MergeConflict(Exception):
    pass


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
