"""Gitea and Forgejo pull requests over their REST API (`/api/v1`).

The two are the same for everything used here. Differences from GitHub that
live only in this module: the list of pull requests has no head filter, so
ours is found by paging (newest first, at most `MAX_PAGES`); labels are set
by id, resolved from the repository's labels by name (names not found are
reported as not applied, not created: creating needs more rights than the
bridge asks for); a draft is a title starting `WIP:`; auto-merge is the
merge call with `merge_when_checks_succeed`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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

DRAFT_PREFIX = "WIP: "
_REVIEW_STATES = {
    "APPROVED": ReviewState.APPROVED,
    "REQUEST_CHANGES": ReviewState.CHANGES_REQUESTED,
    "COMMENT": ReviewState.COMMENTED,
    "PENDING": ReviewState.PENDING,
    "REQUEST_REVIEW": ReviewState.PENDING,
}
_STATUS_STATES = {
    "success": StatusState.SUCCESS,
    "pending": StatusState.PENDING,
    "failure": StatusState.FAILURE,
    "warning": StatusState.FAILURE,
    "error": StatusState.ERROR,
}


def parse_pull(data: Any) -> PullRequest:
    pull = obj(data)
    head, base = obj(pull.get("head")), obj(pull.get("base"))
    merged = flag(pull, "merged")
    if merged:
        state = PullState.MERGED
    elif text(pull, "state") == "closed":
        state = PullState.CLOSED
    else:
        state = PullState.OPEN
    title = text(pull, "title", 1024)
    labels = [text(obj(label), "name") for label in items_of(pull.get("labels") or [])]
    return PullRequest(
        number=integer(pull, "number"),
        url=text(pull, "html_url", 2048),
        state=state,
        title=title,
        body=opt_text(pull, "body", 262_144) or "",
        head_branch=text(head, "ref"),
        head_sha=sha_of(head, "sha") or "",
        base_branch=text(base, "ref"),
        draft=flag(pull, "draft") or title.startswith(("WIP:", "[WIP]")),
        author=login(pull.get("user")),
        created_at=when(pull, "created_at"),
        closed_at=when(pull, "closed_at"),
        merged_at=when(pull, "merged_at"),
        merged_by=login(pull.get("merged_by")) if merged else None,
        merge_commit=sha_of(pull, "merge_commit_sha") if merged else None,
        labels=tuple(labels),
        forge_id=str(integer(pull, "id")),
    )


def parse_review(data: Any) -> Review:
    review = obj(data)
    state = _REVIEW_STATES.get(text(review, "state"), ReviewState.COMMENTED)
    if flag(review, "dismissed"):
        state = ReviewState.DISMISSED
    return Review(
        user=login(review.get("user")) or login(review.get("team"), "name") or "(deleted user)",
        state=state,
        submitted_at=when(review, "submitted_at"),
        commit=sha_of(review, "commit_id"),
    )


def parse_statuses(data: Any) -> tuple[CommitStatus, ...]:
    found = []
    for item in items_of(obj(data).get("statuses") or []):
        status = obj(item)
        found.append(
            CommitStatus(
                context=text(status, "context"),
                state=_STATUS_STATES.get(text(status, "status"), StatusState.ERROR),
                description=opt_text(status, "description", 1024) or "",
                target_url=opt_text(status, "target_url", 2048),
                updated_at=when(status, "updated_at"),
            )
        )
    return tuple(found)


class GiteaForge(ForgeClient):
    kind: ForgeKind = "gitea"

    def __init__(self, http: Any, repo: str) -> None:
        super().__init__(http, repo)
        owner, _, name = repo.partition("/")
        self._base = f"repos/{seg(owner)}/{seg(name)}"

    def find_pull(self, head: str, base: str) -> PullLookup:
        return PullLookup(
            open=self._newest("open", head, base), last_closed=self._newest("closed", head, base)
        )

    def _newest(self, state: str, head: str, base: str) -> PullRequest | None:
        """The newest pull request of head into base in `state`. Gitea lists newest
        first, so the first match is it; paging stops there."""
        path = f"{self._base}/pulls"

        def ours(found: list[Any]) -> bool:
            return any(self._is(p, head, base) for p in found)

        found = self.pages(path, {"state": state}, page_param="page", size_param="limit", stop=ours)
        pulls = self.parsed(f"GET {path}", lambda d: [parse_pull(p) for p in d], found)
        mine = [p for p in pulls if p.head_branch == head and p.base_branch == base]
        return max(mine, key=lambda p: p.number) if mine else None

    @staticmethod
    def _is(raw: Any, head: str, base: str) -> bool:
        if not isinstance(raw, dict):
            return False
        h, b = raw.get("head"), raw.get("base")
        return (
            isinstance(h, dict)
            and h.get("ref") == head
            and isinstance(b, dict)
            and b.get("ref") == base
        )

    def get_pull(self, number: int) -> PullRequest:
        path = f"{self._base}/pulls/{number}"
        return self.parsed(f"GET {path}", parse_pull, self.http.call("GET", path).data)

    def _create(self, new: NewPull) -> PullRequest | None:
        title = new.title
        if new.draft and not title.startswith(DRAFT_PREFIX):
            title = (DRAFT_PREFIX + title)[:256]
        path = f"{self._base}/pulls"
        body = {"head": new.head, "base": new.base, "title": title, "body": new.body}
        reply = self.http.call("POST", path, json=body, write=True, accept=(409,))
        if reply.status == 409:
            return None  # "pull request already exists for these targets"
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
        wanted = names(labels)
        known = self._label_ids()
        ids = [known[label] for label in wanted if label in known]
        if ids:
            path = f"{self._base}/issues/{number}/labels"
            self.http.call("POST", path, json={"labels": ids}, write=True)
        return tuple(label for label in wanted if label not in known)

    def _label_ids(self) -> dict[str, int]:
        path = f"{self._base}/labels"
        found = self.pages(path, {}, page_param="page", size_param="limit")

        def table(items: list[Any]) -> dict[str, int]:
            return {text(obj(i), "name"): integer(obj(i), "id") for i in items}

        return self.parsed(f"GET {path}", table, found)

    def add_assignees(self, number: int, users: Sequence[str]) -> tuple[str, ...]:
        wanted = names(users)
        if self._assign(number, wanted):
            return ()
        # One unknown user fails the whole edit (422), and an edit replaces the set:
        # grow the set one user at a time to keep everyone who can be assigned.
        kept: list[str] = []
        for user in wanted:
            if self._assign(number, [*kept, user]):
                kept.append(user)
        return tuple(user for user in wanted if user not in kept)

    def _assign(self, number: int, users: list[str]) -> bool:
        path = f"{self._base}/pulls/{number}"
        reply = self.http.call("PATCH", path, json={"assignees": users}, write=True, accept=(422,))
        return reply.status < 300

    def request_reviewers(self, number: int, reviewers: Sequence[str]) -> tuple[str, ...]:
        wanted = names(reviewers)
        if self._request(number, wanted):
            return ()
        return tuple(r for r in wanted if not self._request(number, [r]))

    def _request(self, number: int, reviewers: list[str]) -> bool:
        users = [r for r in reviewers if not r.startswith("team:")]
        teams = [r.removeprefix("team:") for r in reviewers if r.startswith("team:")]
        path = f"{self._base}/pulls/{number}/requested_reviewers"
        body = {"reviewers": users, "team_reviewers": teams}
        reply = self.http.call("POST", path, json=body, write=True, accept=(404, 422))
        return reply.status < 300

    def reviews(self, number: int) -> tuple[Review, ...]:
        path = f"{self._base}/pulls/{number}/reviews"
        found = self.pages(path, {}, page_param="page", size_param="limit")
        return tuple(self.parsed(f"GET {path}", lambda d: [parse_review(r) for r in d], found))

    def enable_auto_merge(self, pull: PullRequest, method: MergeMethod) -> None:
        path = f"{self._base}/pulls/{pull.number}/merge"
        body = {
            "Do": method.value,
            "merge_when_checks_succeed": True,
            "head_commit_id": pull.head_sha,
        }
        reply = self.http.call("POST", path, json=body, write=True, accept=(405, 409))
        if reply.status >= 400:
            raise ForgeRejected(
                f"Gitea/Forgejo refused auto-merge for pull request #{pull.number} on "
                f"{self.repo} (HTTP {reply.status})",
                forge=self.kind,
                repo=self.repo,
                status=reply.status,
                hint="check that the merge style is allowed in the repository settings; "
                "protect the base with required status checks, or it merges at once",
            )

    def commit_statuses(self, sha: str) -> tuple[CommitStatus, ...]:
        path = f"{self._base}/commits/{seg(sha)}/status"
        reply = self.http.call("GET", path, params={"limit": 50})
        return self.parsed(f"GET {path}", parse_statuses, reply.data)
