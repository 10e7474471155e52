"""GitHub (github.com and Enterprise Server) pull requests over REST, plus the one
GraphQL mutation REST lacks (`enablePullRequestAutoMerge`).

Parses GitHub's JSON into `bridge.forges.models` and nowhere else; every
request goes through `ForgeHttp` (bounds, limits, errors). Writes that create
content (a pull request, a comment, labels, assignees, reviewers, auto-merge)
are marked `write=True` so the host's budget counts them. Must not know what a
deployment is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bridge.forges.auth import parse_expiry
from bridge.forges.errors import ForgeRejected
from bridge.forges.forge import (
    ForgeClient,
    flag,
    integer,
    items_of,
    login,
    names,
    obj,
    opt_text,
    seg,
    sha_of,
    text,
    when,
)
from bridge.forges.models import (
    CommitStatus,
    ForgeKind,
    MergeMethod,
    NewPull,
    PullLookup,
    PullRequest,
    PullState,
    Review,
    ReviewState,
    StatusState,
)
from bridge.redaction import Redacted

AUTO_MERGE = (
    "mutation($id: ID!, $method: PullRequestMergeMethod!) {"
    " enablePullRequestAutoMerge(input: {pullRequestId: $id, mergeMethod: $method})"
    " { pullRequest { number } } }"
)
_REVIEW_STATES = {
    "APPROVED": ReviewState.APPROVED,
    "CHANGES_REQUESTED": ReviewState.CHANGES_REQUESTED,
    "COMMENTED": ReviewState.COMMENTED,
    "DISMISSED": ReviewState.DISMISSED,
    "PENDING": ReviewState.PENDING,
}
_STATUS_STATES = {
    "success": StatusState.SUCCESS,
    "pending": StatusState.PENDING,
    "failure": StatusState.FAILURE,
    "error": StatusState.ERROR,
}
_CHECK_CONCLUSIONS = {
    "success": StatusState.SUCCESS,
    "neutral": StatusState.SUCCESS,
    "skipped": StatusState.SUCCESS,
    "cancelled": StatusState.ERROR,
}


def graphql_url(api_url: str) -> str:
    """api.github.com/graphql; Enterprise Server: https://HOST/api/graphql."""
    base = api_url.rstrip("/")
    if base.endswith("/api/v3"):
        return base[: -len("/v3")] + "/graphql"
    return base + "/graphql"


def parse_pull(data: Any) -> PullRequest:
    pull = obj(data)
    head, base = obj(pull.get("head")), obj(pull.get("base"))
    merged = flag(pull, "merged") or pull.get("merged_at") is not None
    if merged:
        state = PullState.MERGED
    elif text(pull, "state") == "closed":
        state = PullState.CLOSED
    else:
        state = PullState.OPEN
    labels = [text(obj(label), "name") for label in items_of(pull.get("labels") or [])]
    return PullRequest(
        number=integer(pull, "number"),
        url=text(pull, "html_url", 2048),
        state=state,
        title=text(pull, "title", 1024),
        body=opt_text(pull, "body", 262_144) or "",
        head_branch=text(head, "ref"),
        head_sha=sha_of(head, "sha") or "",
        base_branch=text(base, "ref"),
        draft=flag(pull, "draft"),
        author=login(pull.get("user")),
        created_at=when(pull, "created_at"),
        closed_at=when(pull, "closed_at"),
        merged_at=when(pull, "merged_at"),
        merged_by=login(pull.get("merged_by")),
        merge_commit=sha_of(pull, "merge_commit_sha") if merged else None,
        labels=tuple(labels),
        forge_id=text(pull, "node_id"),
    )


def parse_review(data: Any) -> Review:
    review = obj(data)
    return Review(
        user=login(review.get("user")) or "(deleted user)",
        state=_REVIEW_STATES.get(text(review, "state"), ReviewState.COMMENTED),
        submitted_at=when(review, "submitted_at"),
        commit=sha_of(review, "commit_id"),
    )


def parse_statuses(combined: Any, checks: Any) -> tuple[CommitStatus, ...]:
    found = []
    for item in items_of(obj(combined).get("statuses")):
        status = obj(item)
        found.append(
            CommitStatus(
                context=text(status, "context"),
                state=_STATUS_STATES.get(text(status, "state"), StatusState.ERROR),
                description=opt_text(status, "description", 1024) or "",
                target_url=opt_text(status, "target_url", 2048),
                updated_at=when(status, "updated_at"),
            )
        )
    for item in items_of(obj(checks).get("check_runs")):
        run = obj(item)
        if text(run, "status") != "completed":
            state = StatusState.PENDING
        else:
            state = _CHECK_CONCLUSIONS.get(opt_text(run, "conclusion") or "", StatusState.FAILURE)
        found.append(
            CommitStatus(
                context=text(run, "name"),
                state=state,
                description=opt_text(obj(run.get("output") or {}), "title", 1024) or "",
                target_url=opt_text(run, "html_url", 2048),
                updated_at=when(run, "completed_at") or when(run, "started_at"),
            )
        )
    return tuple(found)


class GitHubForge(ForgeClient):
    kind: ForgeKind = "github"

    def __init__(self, http: Any, repo: str, *, graphql: str) -> None:
        super().__init__(http, repo)
        self.owner, _, self.repo_name = repo.partition("/")
        self._base = f"repos/{seg(self.owner)}/{seg(self.repo_name)}"
        self._graphql = graphql

    def find_pull(self, head: str, base: str) -> PullLookup:
        params = {"head": f"{self.owner}:{head}", "base": base, "per_page": 10}
        path = f"{self._base}/pulls"
        opened = self._first(path, {**params, "state": "open"}, head, base)
        closed = self._first(
            path, {**params, "state": "closed", "sort": "created", "direction": "desc"}, head, base
        )
        # A list item has no `merged_by`; the audit needs it, so read the whole one.
        last = self.get_pull(closed.number) if closed is not None else None
        return PullLookup(open=opened, last_closed=last)

    def _first(self, path: str, params: dict[str, Any], head: str, base: str) -> PullRequest | None:
        reply = self.http.call("GET", path, params=params)
        pulls = self.parsed(
            f"GET {path}", lambda d: [parse_pull(p) for p in items_of(d)], reply.data
        )
        # The filter is the forge's; the check is ours (a hostile answer may not filter).
        mine = [p for p in pulls if p.head_branch == head and p.base_branch == base]
        return max(mine, key=lambda p: p.number) if mine else None

    def get_pull(self, number: int) -> PullRequest:
        path = f"{self._base}/pulls/{number}"
        return self.parsed(f"GET {path}", parse_pull, self.http.call("GET", path).data)

    def _create(self, new: NewPull) -> PullRequest | None:
        path = f"{self._base}/pulls"
        body = {
            "title": new.title,
            "head": new.head,
            "base": new.base,
            "body": new.body,
            "draft": new.draft,
            "maintainer_can_modify": False,
        }
        reply = self.http.call("POST", path, json=body, write=True, accept=(422,))
        if reply.status == 422:
            return None  # "A pull request already exists", or a reason find_pull will show
        return self.parsed(f"POST {path}", parse_pull, reply.data)

    def update_pull(
        self, number: int, *, title: str | None = None, body: str | None = None
    ) -> PullRequest:
        fields = {k: v for k, v in (("title", title), ("body", body)) if v is not None}
        return self._patch(number, fields)

    def _set_state_closed(self, number: int) -> PullRequest:
        return self._patch(number, {"state": "closed"})

    def _patch(self, number: int, fields: dict[str, Any]) -> PullRequest:
        path = f"{self._base}/pulls/{number}"
        reply = self.http.call("PATCH", path, json=fields, write=True)
        return self.parsed(f"PATCH {path}", parse_pull, reply.data)

    def comment(self, number: int, body: str) -> None:
        path = f"{self._base}/issues/{number}/comments"
        self.http.call("POST", path, json={"body": body}, write=True, idempotent=False)

    def add_labels(self, number: int, labels: Sequence[str]) -> tuple[str, ...]:
        path = f"{self._base}/issues/{number}/labels"
        self.http.call("POST", path, json={"labels": names(labels)}, write=True)
        return ()  # GitHub creates a label that does not exist yet

    def add_assignees(self, number: int, users: Sequence[str]) -> tuple[str, ...]:
        wanted = names(users)
        path = f"{self._base}/issues/{number}/assignees"
        reply = self.http.call("POST", path, json={"assignees": wanted}, write=True)

        def assigned(data: Any) -> set[str]:
            return {login(user) or "" for user in items_of(obj(data).get("assignees") or [])}

        # GitHub drops, without an error, users who may not be assigned.
        got = {name.lower() for name in self.parsed(f"POST {path}", assigned, reply.data)}
        return tuple(user for user in wanted if user.lower() not in got)

    def request_reviewers(self, number: int, reviewers: Sequence[str]) -> tuple[str, ...]:
        wanted = names(reviewers)
        if self._request(number, wanted):
            return ()
        # 422 names nobody: ask one by one to tell who cannot review.
        return tuple(r for r in wanted if not self._request(number, [r]))

    def _request(self, number: int, reviewers: list[str]) -> bool:
        users = [r for r in reviewers if not r.startswith("team:")]
        teams = [r.removeprefix("team:") for r in reviewers if r.startswith("team:")]
        path = f"{self._base}/pulls/{number}/requested_reviewers"
        body = {"reviewers": users, "team_reviewers": teams}
        return self.http.call("POST", path, json=body, write=True, accept=(422,)).status != 422

    def reviews(self, number: int) -> tuple[Review, ...]:
        path = f"{self._base}/pulls/{number}/reviews"
        found = self.pages(path, {}, page_param="page", size_param="per_page", size=100)
        return tuple(self.parsed(f"GET {path}", lambda d: [parse_review(r) for r in d], found))

    def enable_auto_merge(self, pull: PullRequest, method: MergeMethod) -> None:
        variables = {"id": pull.forge_id, "method": method.value.upper()}
        reply = self.http.call(
            "POST", self._graphql, json={"query": AUTO_MERGE, "variables": variables}, write=True
        )
        errors = obj(reply.data).get("errors") if isinstance(reply.data, dict) else None
        if errors:
            said = "; ".join(str(e.get("message"))[:200] for e in errors[:3] if isinstance(e, dict))
            raise ForgeRejected(
                f"GitHub refused auto-merge for pull request #{pull.number} on {self.repo}: {said}",
                forge=self.kind,
                repo=self.repo,
                hint="allow auto-merge in the repository settings and protect the base branch "
                "with required checks (without them GitHub merges at once)",
            )

    def commit_statuses(self, sha: str) -> tuple[CommitStatus, ...]:
        combined = self.http.call("GET", f"{self._base}/commits/{seg(sha)}/status").data
        checks = self.http.call(
            "GET", f"{self._base}/commits/{seg(sha)}/check-runs", params={"per_page": 100}
        ).data
        return self.parsed(
            f"GET statuses of {sha[:12]}", lambda _: parse_statuses(combined, checks), None
        )

    def exchange_app_token(self, installation_id: str, jwt: Redacted) -> tuple[Redacted, float]:
        """A GitHub App's installation token for its JWT (the App token source's trade)."""
        path = f"app/installations/{seg(installation_id)}/access_tokens"
        reply = self.http.call(
            "POST",
            path,
            bearer=jwt,
            need="the App's private key and installation id "
            "(the App must be installed on the repository)",
        )

        def token(data: Any) -> tuple[Redacted, float]:
            answer = obj(data)
            value, expires = answer.get("token"), parse_expiry(answer.get("expires_at"))
            if not isinstance(value, str) or not 8 <= len(value) <= 1024 or expires is None:
                raise ValueError("no `token` and `expires_at`")
            return Redacted(value), expires

        return self.parsed(f"POST {path}", token, reply.data)
