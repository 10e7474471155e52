"""The test forge's GitLab: merge requests under `/api/v4`, in the shapes GitLab
documents (no description file is at hand): `iid`, `opened`/`closed`/`merged`,
409 for a second open merge request of a source branch, user ids for
assignees and reviewers, `/approvals`, `auto_merge` on the merge call (405
while no pipeline exists for the head)."""

from __future__ import annotations

from typing import Any

from tests.forges.fake.server import ForgeApp, Request, Response, Router
from tests.forges.fake.state import ForgeState, MergeConflict, Pull

router = Router("/api/v4")


def error(status: int, message: str) -> dict[str, Any]:
    return {"message": f"{status} {message}"}


def authenticate(state: ForgeState, request: Request) -> Response | None:
    token = request.headers.get("private-token", "")
    if not token:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token if scheme.lower() == "bearer" else ""
    if not state.token_valid(token):
        return Response(401, {"message": "401 Unauthorized"})
    return None


def _user(state: ForgeState, name: str | None) -> dict[str, Any] | None:
    if name is None:
        return None
    return {
        "id": _uid(state, name),
        "username": name,
        "name": name.title(),
        "state": "active",
        "web_url": f"{state.base_url}{name}",
    }


def _uid(state: ForgeState, name: str) -> int:
    return sorted(state.users).index(name) + 1 if name in state.users else 0


def merge_request(state: ForgeState, pull: Pull) -> dict[str, Any]:
    state.refresh(pull)
    status = "merged" if pull.merged else ("closed" if pull.state == "closed" else "opened")
    squashed = pull.merge_method == "squash"
    return {
        "id": pull.id,
        "iid": pull.number,
        "project_id": 1,
        "title": pull.title,
        "description": pull.body,
        "state": status,
        "draft": pull.title.startswith("Draft:"),
        "work_in_progress": pull.title.startswith("Draft:"),
        "source_branch": pull.head,
        "target_branch": pull.base,
        "sha": pull.head_sha,
        "merge_commit_sha": pull.merge_commit if pull.merged and not squashed else None,
        "squash_commit_sha": pull.merge_commit if pull.merged and squashed else None,
        "author": _user(state, pull.author),
        "merge_user": _user(state, pull.merged_by),
        "merged_by": _user(state, pull.merged_by),
        "merged_at": state.iso(pull.merged_at),
        "closed_at": state.iso(pull.closed_at) if status == "closed" else None,
        "created_at": state.iso(pull.created_at),
        "updated_at": state.iso(pull.updated_at),
        "labels": list(pull.labels),
        "assignees": [_user(state, a) for a in pull.assignees],
        "reviewers": [_user(state, r) for r in pull.reviewers],
        "web_url": f"{state.base_url}{state.owner}/{state.name}/-/merge_requests/{pull.number}",
        "merge_when_pipeline_succeeds": pull.auto_merge is not None,
    }


def _project(state: ForgeState, project: str) -> None:
    if project != f"{state.owner}/{state.name}":
        raise KeyError(project)


def _mr(state: ForgeState, project: str, iid: str) -> Pull:
    _project(state, project)
    return state.pulls[int(iid)]


@router.route("GET", "/projects/{project}/merge_requests")
def list_mrs(state: ForgeState, request: Request, project: str) -> Response:
    _project(state, project)
    wanted = request.arg("state", "all")
    found = [merge_request(state, p) for p in state.pulls.values()]
    if wanted != "all":
        found = [m for m in found if m["state"] == wanted]
    for key in ("source_branch", "target_branch"):
        if request.arg(key):
            found = [m for m in found if m[key] == request.arg(key)]
    found.sort(key=lambda m: m["iid"], reverse=request.arg("sort", "desc") == "desc")
    per_page, page = int(request.arg("per_page", "20") or 20), int(request.arg("page", "1") or 1)
    return Response(200, found[(page - 1) * per_page : page * per_page])


@router.route("POST", "/projects/{project}/merge_requests")
def create_mr(state: ForgeState, request: Request, project: str) -> Response:
    _project(state, project)
    body = request.json()
    head, base = body["source_branch"], body["target_branch"]
    if state.branch_sha(head) is None:
        return Response(422, {"message": ["Source branch does not exist"]})
    pull = state.open_pull(head, base, body["title"], body.get("description") or "")
    if pull is None:
        open_one = next(p for p in state.pulls.values() if p.state == "open" and p.head == head)
        return Response(
            409,
            {
                "message": [
                    f"Another open merge request already exists for this source branch: !{open_one.number}"
                ]
            },
        )
    return Response(201, merge_request(state, pull))


@router.route("GET", "/projects/{project}/merge_requests/{iid}")
def get_mr(state: ForgeState, request: Request, project: str, iid: str) -> Response:
    return Response(200, merge_request(state, _mr(state, project, iid)))


@router.route("PUT", "/projects/{project}/merge_requests/{iid}")
def edit_mr(state: ForgeState, request: Request, project: str, iid: str) -> Response:
    pull = _mr(state, project, iid)
    body = request.json()
    pull.title = body.get("title", pull.title)
    pull.body = body.get("description", pull.body)
    for label in filter(None, (body.get("add_labels") or "").split(",")):
        if label not in pull.labels:
            pull.labels.append(label)
    by_id = {_uid(state, u): u for u in state.users}
    if "assignee_ids" in body:
        pull.assignees = [by_id[i] for i in body["assignee_ids"] if i in by_id]
    if "reviewer_ids" in body:
        pull.reviewers = [by_id[i] for i in body["reviewer_ids"] if i in by_id]
    if body.get("state_event") == "close" and pull.state == "open":
        state.close(pull.number)
    pull.updated_at = state.now()
    return Response(200, merge_request(state, pull))


@router.route("POST", "/projects/{project}/merge_requests/{iid}/notes")
def note(state: ForgeState, request: Request, project: str, iid: str) -> Response:
    pull = _mr(state, project, iid)
    nid = state.next_id()
    pull.comments.append(
        {"id": nid, "body": request.json()["body"], "user": state.bot, "at": state.now()}
    )
    return Response(
        201,
        {
            "id": nid,
            "body": request.json()["body"],
            "author": _user(state, state.bot),
            "created_at": state.iso(state.now()),
            "system": False,
            "noteable_iid": pull.number,
        },
    )


@router.route("GET", "/projects/{project}/merge_requests/{iid}/approvals")
def approvals(state: ForgeState, request: Request, project: str, iid: str) -> Response:
    pull = _mr(state, project, iid)
    approved = [r for r in pull.reviews if r["state"] == "APPROVED"]
    return Response(
        200,
        {
            "id": pull.id,
            "iid": pull.number,
            "approved": bool(approved),
            "approved_by": [
                {"user": _user(state, r["user"]), "approved_at": state.iso(r["at"])}
                for r in approved
            ],
        },
    )


@router.route("PUT", "/projects/{project}/merge_requests/{iid}/merge")
def merge(state: ForgeState, request: Request, project: str, iid: str) -> Response:
    pull = state.refresh(_mr(state, project, iid))
    body = request.json() or {}
    if pull.state != "open":
        return Response(405, {"message": "405 Method Not Allowed"})
    if body.get("sha") and body["sha"] != pull.head_sha:
        return Response(409, {"message": "SHA does not match HEAD of source branch"})
    if body.get("auto_merge"):
        if not state.statuses.get(pull.head_sha):
            return Response(405, {"message": "405 Method Not Allowed"})  # no pipeline yet
        pull.auto_merge = {
            "method": "squash" if body.get("squash") else "merge",
            "squash": bool(body.get("squash")),
        }
        return Response(200, merge_request(state, pull))
    try:
        state.merge(pull.number, method="squash" if body.get("squash") else "merge", by=state.bot)
    except MergeConflict:
        return Response(406, {"message": "Branch cannot be merged"})
    return Response(200, merge_request(state, pull))


@router.route("GET", "/users")
def users(state: ForgeState, request: Request) -> Response:
    name = request.arg("username")
    return Response(200, [_user(state, name)] if name in state.users else [])


@router.route("GET", "/projects/{project}/repository/commits/{sha}/statuses")
def statuses(state: ForgeState, request: Request, project: str, sha: str) -> Response:
    _project(state, project)
    states = {"success": "success", "failure": "failed", "error": "canceled", "pending": "running"}
    return Response(
        200,
        [
            {
                "id": s["id"],
                "sha": sha,
                "name": s["context"],
                "status": states[s["state"]],
                "description": s["description"] or None,
                "target_url": s["target_url"],
                "created_at": state.iso(s["at"]),
                "finished_at": state.iso(s["at"]) if s["state"] != "pending" else None,
            }
            for s in state.statuses.get(sha, [])
        ],
    )


def app(state: ForgeState) -> ForgeApp:
    return ForgeApp(state, router, authenticate, error)
