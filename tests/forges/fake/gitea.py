"""The test forge's Gitea/Forgejo: pull requests under `/api/v1`, shaped as
`forgejo-pulls.swagger.json` describes them: 409 for a second open pull
request of head and base, label ids, `merge_when_checks_succeed`, reviews
with Gitea's states (APPROVED, REQUEST_CHANGES, COMMENT, ...)."""

from __future__ import annotations

from typing import Any

from tests.forges.fake.server import ForgeApp, Request, Response, Router
from tests.forges.fake.state import ForgeState, MergeConflict, Pull

router = Router("/api/v1")


def error(status: int, message: str) -> dict[str, Any]:
    return {"message": message, "url": "https://forgejo.org/api/swagger"}


def authenticate(state: ForgeState, request: Request) -> Response | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() not in ("token", "bearer") or not state.token_valid(token):
        return Response(401, {"message": "user does not exist [uid: 0, name: ]", "url": ""})
    return None


def user(state: ForgeState, login: str) -> dict[str, Any]:
    return {
        "id": sorted(state.users | {state.owner}).index(login) + 1
        if login in state.users | {state.owner}
        else 0,
        "login": login,
        "full_name": login.title(),
        "email": f"{login}@forge.test",
        "avatar_url": f"{state.base_url}avatars/{login}",
        "html_url": f"{state.base_url}{login}",
        "active": True,
        "is_admin": False,
        "username": login,
    }


def repository(state: ForgeState) -> dict[str, Any]:
    return {
        "id": 1,
        "name": state.name,
        "full_name": f"{state.owner}/{state.name}",
        "owner": user(state, state.owner),
        "private": True,
        "default_branch": "main",
        "html_url": f"{state.base_url}{state.owner}/{state.name}",
        "clone_url": f"{state.base_url}{state.owner}/{state.name}.git",
    }


def _label(state: ForgeState, name: str) -> dict[str, Any]:
    return {
        "id": state.labels[name],
        "name": name,
        "color": "ededed",
        "description": "",
        "exclusive": False,
        "is_archived": False,
        "url": f"{state.base_url}api/v1/repos/{state.owner}/{state.name}/labels/{state.labels[name]}",
    }


def pull_json(state: ForgeState, pull: Pull) -> dict[str, Any]:
    state.refresh(pull)
    html = f"{state.base_url}{state.owner}/{state.name}/pulls/{pull.number}"
    data: dict[str, Any] = {
        "id": pull.id,
        "url": html,
        "number": pull.number,
        "user": user(state, pull.author),
        "title": pull.title,
        "body": pull.body,
        "labels": [_label(state, n) for n in pull.labels],
        "assignees": [user(state, a) for a in pull.assignees],
        "requested_reviewers": [user(state, r) for r in pull.reviewers],
        "state": pull.state,
        "draft": pull.title.startswith("WIP:"),
        "is_locked": False,
        "comments": len(pull.comments),
        "review_comments": 0,
        "additions": 1,
        "deletions": 0,
        "changed_files": 1,
        "html_url": html,
        "diff_url": f"{html}.diff",
        "patch_url": f"{html}.patch",
        "mergeable": pull.state == "open",
        "merged": pull.merged,
        "allow_maintainer_edit": False,
        "base": {
            "label": pull.base,
            "ref": pull.base,
            "sha": pull.base_sha,
            "repo_id": 1,
            "repo": repository(state),
        },
        "head": {
            "label": pull.head,
            "ref": pull.head,
            "sha": pull.head_sha,
            "repo_id": 1,
            "repo": repository(state),
        },
        "merge_base": pull.base_sha,
        "created_at": state.iso(pull.created_at),
        "updated_at": state.iso(pull.updated_at),
        "pin_order": 0,
        "flow": 0,
    }
    # Forgejo leaves out what is unset rather than sending null for objects.
    if pull.assignees:
        data["assignee"] = user(state, pull.assignees[0])
    if pull.merged:
        data.update(
            merged_at=state.iso(pull.merged_at),
            merge_commit_sha=pull.merge_commit,
            merged_by=user(state, pull.merged_by or state.bot),
        )
    if pull.closed_at is not None:
        data["closed_at"] = state.iso(pull.closed_at)
    return data


def _pull(state: ForgeState, owner: str, repo: str, index: str) -> Pull:
    _repo(state, owner, repo)
    return state.pulls[int(index)]


def _repo(state: ForgeState, owner: str, repo: str) -> None:
    if (owner, repo) != (state.owner, state.name):
        raise KeyError(repo)


def _page(request: Request, items: list[Any]) -> list[Any]:
    limit, page = int(request.arg("limit", "30") or 30), int(request.arg("page", "1") or 1)
    return items[(page - 1) * limit : page * limit]


@router.route("GET", "/repos/{owner}/{repo}/pulls")
def list_pulls(state: ForgeState, request: Request, owner: str, repo: str) -> Response:
    _repo(state, owner, repo)
    wanted = request.arg("state", "open")
    pulls = [p for p in state.pulls.values() if wanted == "all" or p.state == wanted]
    pulls.sort(key=lambda p: p.number, reverse=request.arg("sort") != "oldest")  # newest first
    return Response(200, [pull_json(state, p) for p in _page(request, pulls)])


@router.route("POST", "/repos/{owner}/{repo}/pulls")
def create_pull(state: ForgeState, request: Request, owner: str, repo: str) -> Response:
    _repo(state, owner, repo)
    body = request.json()
    head, base = body["head"], body["base"]
    if state.branch_sha(head) is None or state.branch_sha(base) is None:
        return Response(404, error(404, "The target couldn't be found."))
    pull = state.open_pull(head, base, body["title"], body.get("body") or "")
    if pull is None:
        found = next(
            p
            for p in state.pulls.values()
            if p.state == "open" and p.head == head and p.base == base
        )
        return Response(
            409,
            error(
                409,
                f"pull request already exists for these targets [id: {found.id}, "
                f"issue_id: {found.id}, head_repo_id: 1, base_repo_id: 1, "
                f"head_branch: {head}, base_branch: {base}]",
            ),
        )
    return Response(201, pull_json(state, pull))


@router.route("GET", "/repos/{owner}/{repo}/pulls/{index}")
def get_pull(state: ForgeState, request: Request, owner: str, repo: str, index: str) -> Response:
    return Response(200, pull_json(state, _pull(state, owner, repo, index)))


@router.route("PATCH", "/repos/{owner}/{repo}/pulls/{index}")
def edit_pull(state: ForgeState, request: Request, owner: str, repo: str, index: str) -> Response:
    pull = _pull(state, owner, repo, index)
    body = request.json()
    if "assignees" in body:
        if any(a not in state.users for a in body["assignees"]):
            return Response(422, {"message": "user does not exist", "url": ""})
        pull.assignees = list(body["assignees"])
    pull.title = body.get("title", pull.title)
    pull.body = body.get("body", pull.body)
    if body.get("state") == "closed" and pull.state == "open":
        state.close(pull.number)
    pull.updated_at = state.now()
    return Response(201, pull_json(state, pull))


def _review(state: ForgeState, pull: Pull, review: dict[str, Any]) -> dict[str, Any]:
    html = f"{state.base_url}{state.owner}/{state.name}/pulls/{pull.number}"
    return {
        "id": review["id"],
        "user": user(state, review["user"]),
        "state": review["state"],
        "body": "",
        "commit_id": review["commit"],
        "stale": False,
        "official": True,
        "dismissed": False,
        "comments_count": 0,
        "submitted_at": state.iso(review["at"]),
        "updated_at": state.iso(review["at"]),
        "html_url": f"{html}#review-{review['id']}",
        "pull_request_url": html,
    }


_STATES = {"APPROVED": "APPROVED", "CHANGES_REQUESTED": "REQUEST_CHANGES", "COMMENTED": "COMMENT"}


@router.route("GET", "/repos/{owner}/{repo}/pulls/{index}/reviews")
def reviews(state: ForgeState, request: Request, owner: str, repo: str, index: str) -> Response:
    pull = _pull(state, owner, repo, index)
    found = [
        _review(state, pull, {**r, "state": _STATES.get(r["state"], r["state"])})
        for r in pull.reviews
    ]
    return Response(200, _page(request, found))


@router.route("POST", "/repos/{owner}/{repo}/pulls/{index}/requested_reviewers")
def request_reviewers(
    state: ForgeState, request: Request, owner: str, repo: str, index: str
) -> Response:
    pull = _pull(state, owner, repo, index)
    body = request.json()
    users, teams = body.get("reviewers") or [], body.get("team_reviewers") or []
    if any(u not in state.users for u in users) or any(t not in state.teams for t in teams):
        return Response(422, {"message": "user does not exist", "url": ""})
    pull.reviewers += [u for u in users if u not in pull.reviewers]
    pull.team_reviewers += [t for t in teams if t not in pull.team_reviewers]
    made = [
        _review(
            state,
            pull,
            {
                "id": state.next_id(),
                "user": u,
                "state": "REQUEST_REVIEW",
                "at": state.now(),
                "commit": pull.head_sha,
            },
        )
        for u in users
    ]
    return Response(201, made)


@router.route("GET", "/repos/{owner}/{repo}/pulls/{index}/merge")
def is_merged(state: ForgeState, request: Request, owner: str, repo: str, index: str) -> Response:
    pull = _pull(state, owner, repo, index)
    return Response(204) if pull.merged else Response(404)


@router.route("POST", "/repos/{owner}/{repo}/pulls/{index}/merge")
def merge(state: ForgeState, request: Request, owner: str, repo: str, index: str) -> Response:
    pull = state.refresh(_pull(state, owner, repo, index))
    body = request.json() or {}
    if pull.state != "open":
        return Response(405)
    if body.get("head_commit_id") and body["head_commit_id"] != pull.head_sha:
        return Response(409, error(409, "head out of date"))
    if body.get("merge_when_checks_succeed"):
        pull.auto_merge = {"method": body["Do"]}
        return Response(200)
    try:
        state.merge(
            pull.number,
            method=body["Do"],
            by=state.bot,
            delete_branch=bool(body.get("delete_branch_after_merge")),
        )
    except MergeConflict:
        return Response(405)
    return Response(200)


@router.route("GET", "/repos/{owner}/{repo}/labels")
def labels(state: ForgeState, request: Request, owner: str, repo: str) -> Response:
    _repo(state, owner, repo)
    return Response(200, _page(request, [_label(state, n) for n in state.labels]))


@router.route("POST", "/repos/{owner}/{repo}/issues/{index}/labels")
def add_labels(state: ForgeState, request: Request, owner: str, repo: str, index: str) -> Response:
    pull = _pull(state, owner, repo, index)
    by_id = {i: n for n, i in state.labels.items()}
    for label in request.json()["labels"]:
        name = by_id.get(label) if isinstance(label, int) else label
        if name is None or name not in state.labels:
            return Response(422, {"message": "label does not exist", "url": ""})
        if name not in pull.labels:
            pull.labels.append(name)
    return Response(200, [_label(state, n) for n in pull.labels])


@router.route("POST", "/repos/{owner}/{repo}/issues/{index}/comments")
def comment(state: ForgeState, request: Request, owner: str, repo: str, index: str) -> Response:
    pull = _pull(state, owner, repo, index)
    cid = state.next_id()
    pull.comments.append(
        {"id": cid, "body": request.json()["body"], "user": state.bot, "at": state.now()}
    )
    return Response(
        201,
        {
            "id": cid,
            "body": request.json()["body"],
            "user": user(state, state.bot),
            "created_at": state.iso(state.now()),
            "updated_at": state.iso(state.now()),
        },
    )


@router.route("GET", "/repos/{owner}/{repo}/commits/{ref}/status")
def combined_status(
    state: ForgeState, request: Request, owner: str, repo: str, ref: str
) -> Response:
    _repo(state, owner, repo)
    found = state.statuses.get(ref, [])
    return Response(
        200,
        {
            "state": "success" if found else "pending",
            "sha": ref,
            "total_count": len(found),
            "statuses": [
                {
                    "id": s["id"],
                    "status": s["state"],
                    "context": s["context"],
                    "description": s["description"],
                    "target_url": s["target_url"],
                    "created_at": state.iso(s["at"]),
                    "updated_at": state.iso(s["at"]),
                }
                for s in found
            ],
        },
    )


def app(state: ForgeState) -> ForgeApp:
    return ForgeApp(state, router, authenticate, error)
