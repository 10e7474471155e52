"""GitLab merge requests over REST v4 (gitlab.com and self-managed).

GitLab names things differently, and this module is where that stops: a
merge request's `iid` is our `number`, `source_branch`/`target_branch` our
head/base, `opened` our open; a draft is a title starting `Draft:`;
assignees and reviewers are user ids, looked up by username; labels are a
comma-separated string (so a name with a comma cannot be sent and is
reported as not applied); GitLab has no team reviewers. Approvals come from
`/approvals`. Auto-merge is `auto_merge: true` on the merge call (its old
name `merge_when_pipeline_succeeds` is deprecated since 17.11); the merge
method is the project's setting, so only `squash` can be asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bridge.forges.errors import ForgeRejected
from bridge.forges.forge import (
    NAME_MAX,
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
    clean,
)

DRAFT_PREFIX = "Draft: "
_STATES = {"merged": PullState.MERGED, "closed": PullState.CLOSED}
_STATUS_STATES = {
    "success": StatusState.SUCCESS,
    "skipped": StatusState.SUCCESS,
    "failed": StatusState.FAILURE,
    "canceled": StatusState.ERROR,
}


def parse_merge_request(data: Any) -> PullRequest:
    mr = obj(data)
    state = _STATES.get(text(mr, "state"), PullState.OPEN)  # opened, locked: still open
    merged = state is PullState.MERGED
    merger = mr.get("merge_user") or mr.get("merged_by")
    labels = [clean_label(v) for v in items_of(mr.get("labels") or [])]
    return PullRequest(
        number=integer(mr, "iid"),
        url=text(mr, "web_url", 2048),
        state=state,
        title=text(mr, "title", 1024),
        body=opt_text(mr, "description", 1_048_576) or "",
        head_branch=text(mr, "source_branch"),
        head_sha=sha_of(mr, "sha") or "",
        base_branch=text(mr, "target_branch"),
        draft=flag(mr, "draft") or flag(mr, "work_in_progress"),
        author=login(mr.get("author"), "username"),
        created_at=when(mr, "created_at"),
        closed_at=when(mr, "closed_at"),
        merged_at=when(mr, "merged_at"),
        merged_by=login(merger, "username") if merged else None,
        # Fast-forward squash leaves no merge commit: the squash commit is what landed.
        merge_commit=(sha_of(mr, "merge_commit_sha") or sha_of(mr, "squash_commit_sha"))
        if merged
        else None,
        labels=tuple(labels),
        forge_id=str(integer(mr, "id")),
    )


def clean_label(value: Any) -> str:
    if isinstance(value, dict):  # with_labels_details=true
        return text(value, "name")
    if not isinstance(value, str):
        raise TypeError("a label is not a string")
    return clean(value, NAME_MAX)


def parse_approvals(data: Any) -> list[Review]:
    found = []
    for item in items_of(obj(data).get("approved_by") or []):
        entry = obj(item)
        found.append(
            Review(
                user=login(entry.get("user"), "username") or "(deleted user)",
                state=ReviewState.APPROVED,
                submitted_at=when(entry, "approved_at"),
            )
        )
    return found


def parse_status(data: Any) -> CommitStatus:
    status = obj(data)
    return CommitStatus(
        context=text(status, "name"),
        state=_STATUS_STATES.get(text(status, "status"), StatusState.PENDING),
        description=opt_text(status, "description", 1024) or "",
        target_url=opt_text(status, "target_url", 2048),
        updated_at=when(status, "finished_at") or when(status, "created_at"),
    )


class GitLabForge(ForgeClient):
    kind: ForgeKind = "gitlab"

    def __init__(self, http: Any, repo: str) -> None:
        super().__init__(http, repo)
        self._base = f"projects/{seg(repo)}"  # the URL-encoded path is an id too
        self._mrs = f"{self._base}/merge_requests"

    def find_pull(self, head: str, base: str) -> PullLookup:
        params = {"source_branch": head, "target_branch": base, "per_page": 20}
        opened = self._list({**params, "state": "opened"}, head, base)
        recent = self._list({**params, "order_by": "created_at", "sort": "desc"}, head, base)
        done = [mr for mr in recent if mr.state is not PullState.OPEN]
        return PullLookup(
            open=max(opened, key=lambda p: p.number) if opened else None,
            last_closed=max(done, key=lambda p: p.number) if done else None,
        )

    def _list(self, params: dict[str, Any], head: str, base: str) -> list[PullRequest]:
        reply = self.http.call("GET", self._mrs, params=params)
        mrs = self.parsed(
            f"GET {self._mrs}", lambda d: [parse_merge_request(m) for m in items_of(d)], reply.data
        )
        return [mr for mr in mrs if mr.head_branch == head and mr.base_branch == base]

    def get_pull(self, number: int) -> PullRequest:
        path = f"{self._mrs}/{number}"
        return self.parsed(f"GET {path}", parse_merge_request, self.http.call("GET", path).data)

    def _create(self, new: NewPull) -> PullRequest | None:
        title = new.title
        if new.draft and not title.startswith(DRAFT_PREFIX):
            title = (DRAFT_PREFIX + title)[:256]
        body = {
            "source_branch": new.head,
            "target_branch": new.base,
            "title": title,
            "description": new.body,
            "remove_source_branch": False,
        }
        reply = self.http.call("POST", self._mrs, json=body, write=True, accept=(409,))
        if reply.status == 409:
            return None  # "Another open merge request already exists for this source branch"
        return self.parsed(f"POST {self._mrs}", parse_merge_request, reply.data)

    def update_pull(
        self, number: int, *, title: str | None = None, body: str | None = None
    ) -> PullRequest:
        fields = {k: v for k, v in (("title", title), ("description", body)) if v is not None}
        return self._put(number, fields)

    def _set_state_closed(self, number: int) -> PullRequest:
        return self._put(number, {"state_event": "close"})

    def _put(self, number: int, fields: dict[str, Any]) -> PullRequest:
        path = f"{self._mrs}/{number}"
        reply = self.http.call("PUT", path, json=fields, write=True)
        return self.parsed(f"PUT {path}", parse_merge_request, reply.data)

    def comment(self, number: int, body: str) -> None:
        path = f"{self._mrs}/{number}/notes"
        self.http.call("POST", path, json={"body": body}, write=True, idempotent=False)

    def add_labels(self, number: int, labels: Sequence[str]) -> tuple[str, ...]:
        wanted = names(labels)
        sendable = [label for label in wanted if "," not in label]
        if sendable:
            self._put(number, {"add_labels": ",".join(sendable)})
        return tuple(label for label in wanted if "," in label)

    def add_assignees(self, number: int, users: Sequence[str]) -> tuple[str, ...]:
        ids, missing = self._user_ids(names(users))
        if ids:
            self._put(number, {"assignee_ids": ids})
        return missing

    def request_reviewers(self, number: int, reviewers: Sequence[str]) -> tuple[str, ...]:
        wanted = names(reviewers)
        teams = tuple(r for r in wanted if r.startswith("team:"))  # GitLab has none
        ids, missing = self._user_ids([r for r in wanted if not r.startswith("team:")])
        if ids:
            self._put(number, {"reviewer_ids": ids})
        return missing + teams

    def _user_ids(self, usernames: list[str]) -> tuple[list[int], tuple[str, ...]]:
        ids: list[int] = []
        missing: list[str] = []
        for name in usernames:
            reply = self.http.call("GET", "users", params={"username": name})
            users = self.parsed("GET users", items_of, reply.data)
            match = [
                integer(obj(u), "id")
                for u in users
                if str(obj(u).get("username", "")).lower() == name.lower()
            ]
            if match:
                ids.append(match[0])
            else:
                missing.append(name)
        return ids, tuple(missing)

    def reviews(self, number: int) -> tuple[Review, ...]:
        path = f"{self._mrs}/{number}/approvals"
        return tuple(self.parsed(f"GET {path}", parse_approvals, self.http.call("GET", path).data))

    def enable_auto_merge(self, pull: PullRequest, method: MergeMethod) -> None:
        path = f"{self._mrs}/{pull.number}/merge"
        body: dict[str, Any] = {"auto_merge": True, "sha": pull.head_sha}
        if method is MergeMethod.SQUASH:
            body["squash"] = True
        reply = self.http.call("PUT", path, json=body, write=True, accept=(405, 406, 422))
        if reply.status >= 400:
            raise ForgeRejected(
                f"GitLab refused auto-merge for merge request !{pull.number} on {self.repo} "
                f"(HTTP {reply.status})",
                forge=self.kind,
                repo=self.repo,
                status=reply.status,
                hint="GitLab answers 405 until a pipeline exists for the head; the next "
                "cycle asks again. Protect the base with required pipelines, or GitLab "
                "merges at once",
            )

    def commit_statuses(self, sha: str) -> tuple[CommitStatus, ...]:
        path = f"{self._base}/repository/commits/{seg(sha)}/statuses"
        found = self.pages(path, {}, page_param="page", size_param="per_page", size=100)
        return tuple(self.parsed(f"GET {path}", lambda d: [parse_status(s) for s in d], found))
