"""The test forge's GitHub: REST under `/api/v3` (as GitHub Enterprise Server
serves it) and GraphQL's `enablePullRequestAutoMerge` under `/api/graphql`.

Objects carry every field GitHub's OpenAPI description requires, so the
conformance check can validate each answer against
`github-pulls.openapi.json`; values follow GitHub's documented behaviour
(422 "A pull request already exists", a silently dropped assignee, 422 for a
reviewer who is not a collaborator, 405/409 on merge).
"""

from __future__ import annotations

from typing import Any

from tests.forges.fake.server import ForgeApp, Request, Response, Router
from tests.forges.fake.state import ForgeState, MergeConflict, Pull

router = Router("/api/v3")
DOCS = "https://docs.github.com/rest"


def error(status: int, message: str) -> dict[str, Any]:
    return {"message": message, "documentation_url": DOCS}


def authenticate(state: ForgeState, request: Request) -> Response | None:
    if request.path.startswith("/api/v3/app/"):
        return None  # the App's JWT is checked by that route
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() not in ("bearer", "token") or not state.token_valid(token):
        return Response(401, error(401, "Bad credentials"))
    return None


def _api(state: ForgeState) -> str:
    return state.base_url + "api/v3"


def user(state: ForgeState, login: str) -> dict[str, Any]:
    api = _api(state)
    base = f"{api}/users/{login}"
    return {
        "login": login,
        "id": abs(hash(login)) % 10**6,
        "node_id": f"U_{login}",
        "avatar_url": f"{state.base_url}avatars/{login}",
        "gravatar_id": "",
        "url": base,
        "html_url": f"{state.base_url}{login}",
        "followers_url": f"{base}/followers",
        "following_url": f"{base}/following{{/other_user}}",
        "gists_url": f"{base}/gists{{/gist_id}}",
        "starred_url": f"{base}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{base}/subscriptions",
        "organizations_url": f"{base}/orgs",
        "repos_url": f"{base}/repos",
        "events_url": f"{base}/events{{/privacy}}",
        "received_events_url": f"{base}/received_events",
        "type": "User",
        "site_admin": False,
    }


_REPO_URLS = (
    "archive_url assignees_url blobs_url branches_url collaborators_url comments_url commits_url "
    "compare_url contents_url contributors_url deployments_url downloads_url events_url forks_url "
    "git_commits_url git_refs_url git_tags_url hooks_url issue_comment_url issue_events_url issues_url "
    "keys_url labels_url languages_url merges_url milestones_url notifications_url pulls_url "
    "releases_url stargazers_url statuses_url subscribers_url subscription_url tags_url teams_url "
    "trees_url"
).split()


def repository(state: ForgeState) -> dict[str, Any]:
    api = f"{_api(state)}/repos/{state.owner}/{state.name}"
    html = f"{state.base_url}{state.owner}/{state.name}"
    repo: dict[str, Any] = {key: f"{api}/{key.removesuffix('_url')}" for key in _REPO_URLS}
    repo.update(
        id=1,
        node_id="R_1",
        name=state.name,
        full_name=f"{state.owner}/{state.name}",
        owner=user(state, state.owner),
        private=True,
        html_url=html,
        description=None,
        fork=False,
        url=api,
        clone_url=f"{html}.git",
        git_url=f"{html}.git",
        ssh_url=f"git@forge.test:{state.owner}/{state.name}.git",
        svn_url=html,
        homepage=None,
        mirror_url=None,
        language=None,
        license=None,
        default_branch="main",
        forks=0,
        forks_count=0,
        stargazers_count=0,
        watchers=0,
        watchers_count=0,
        size=1,
        open_issues=0,
        open_issues_count=0,
        has_issues=True,
        has_projects=False,
        has_wiki=False,
        has_pages=False,
        has_downloads=False,
        archived=False,
        disabled=False,
        pushed_at=state.iso(state.now()),
        created_at=state.iso(0),
        updated_at=state.iso(state.now()),
    )
    return repo


def _label(state: ForgeState, name: str) -> dict[str, Any]:
    return {
        "id": state.labels.get(name, 0),
        "node_id": f"L_{name}",
        "name": name,
        "description": "",
        "color": "ededed",
        "default": False,
        "url": f"{_api(state)}/repos/{state.owner}/{state.name}/labels/{name}",
    }


def _branch(state: ForgeState, ref: str, sha: str) -> dict[str, Any]:
    return {
        "label": f"{state.owner}:{ref}",
        "ref": ref,
        "sha": sha,
        "repo": repository(state),
        "user": user(state, state.owner),
    }


def pull_simple(state: ForgeState, pull: Pull) -> dict[str, Any]:
    state.refresh(pull)
    api = f"{_api(state)}/repos/{state.owner}/{state.name}"
    html = f"{state.base_url}{state.owner}/{state.name}/pull/{pull.number}"
    links = {
        "self": f"{api}/pulls/{pull.number}",
        "html": html,
        "issue": f"{api}/issues/{pull.number}",
        "comments": f"{api}/issues/{pull.number}/comments",
        "review_comments": f"{api}/pulls/{pull.number}/comments",
        "review_comment": f"{api}/pulls/comments{{/number}}",
        "commits": f"{api}/pulls/{pull.number}/commits",
        "statuses": f"{api}/statuses/{pull.head_sha}",
    }
    auto = None
    if pull.auto_merge is not None:
        auto = {
            "enabled_by": user(state, state.bot),
            "merge_method": pull.auto_merge["method"],
            "commit_title": "",
            "commit_message": "",
        }
    return {
        "url": links["self"],
        "id": pull.id,
        "node_id": f"PR_{pull.id}",
        "html_url": html,
        "diff_url": f"{html}.diff",
        "patch_url": f"{html}.patch",
        "issue_url": links["issue"],
        "commits_url": links["commits"],
        "review_comments_url": links["review_comments"],
        "review_comment_url": links["review_comment"],
        "comments_url": links["comments"],
        "statuses_url": links["statuses"],
        "number": pull.number,
        "state": pull.state,
        "locked": False,
        "title": pull.title,
        "user": user(state, pull.author),
        "body": pull.body,
        "labels": [_label(state, name) for name in pull.labels],
        "milestone": None,
        "active_lock_reason": None,
        "created_at": state.iso(pull.created_at),
        "updated_at": state.iso(pull.updated_at),
        "closed_at": state.iso(pull.closed_at),
        "merged_at": state.iso(pull.merged_at),
        # GitHub sets this for open pull requests too (a test merge); clients must not trust it then.
        "merge_commit_sha": pull.merge_commit or ("0" * 40 if pull.state == "open" else None),
        "assignee": user(state, pull.assignees[0]) if pull.assignees else None,
        "assignees": [user(state, a) for a in pull.assignees],
        "requested_reviewers": [user(state, r) for r in pull.reviewers],
        "requested_teams": [],
        "head": _branch(state, pull.head, pull.head_sha),
        "base": _branch(state, pull.base, pull.base_sha),
        "_links": {k: {"href": v} for k, v in links.items()},
        "author_association": "MEMBER",
        "auto_merge": auto,
        "draft": pull.draft,
    }


def pull_full(state: ForgeState, pull: Pull) -> dict[str, Any]:
    data = pull_simple(state, pull)
    data.update(
        merged=pull.merged,
        mergeable=True if pull.state == "open" else None,
        rebaseable=True,
        mergeable_state="clean",
        merged_by=user(state, pull.merged_by) if pull.merged_by else None,
        comments=len(pull.comments),
        review_comments=0,
        maintainer_can_modify=False,
        commits=1,
        additions=1,
        deletions=0,
        changed_files=1,
    )
    return data


def issue(state: ForgeState, pull: Pull) -> dict[str, Any]:
    api = f"{_api(state)}/repos/{state.owner}/{state.name}"
    return {
        "id": pull.id,
        "node_id": f"I_{pull.id}",
        "url": f"{api}/issues/{pull.number}",
        "repository_url": api,
        "labels_url": f"{api}/issues/{pull.number}/labels{{/name}}",
        "comments_url": f"{api}/issues/{pull.number}/comments",
        "events_url": f"{api}/issues/{pull.number}/events",
        "html_url": f"{state.base_url}{state.owner}/{state.name}/pull/{pull.number}",
        "number": pull.number,
        "state": pull.state,
        "title": pull.title,
        "body": pull.body,
        "user": user(state, pull.author),
        "labels": [_label(state, n) for n in pull.labels],
        "assignee": user(state, pull.assignees[0]) if pull.assignees else None,
        "assignees": [user(state, a) for a in pull.assignees],
        "milestone": None,
        "locked": False,
        "comments": len(pull.comments),
        "closed_at": state.iso(pull.closed_at),
        "created_at": state.iso(pull.created_at),
        "updated_at": state.iso(pull.updated_at),
    }


def _pull(state: ForgeState, owner: str, repo: str, number: str) -> Pull:
    if (owner, repo) != (state.owner, state.name) or not number.isdigit():
        raise KeyError(number)
    return state.pulls[int(number)]


def _repo(state: ForgeState, owner: str, repo: str) -> None:
    if (owner, repo) != (state.owner, state.name):
        raise KeyError(repo)


@router.route("GET", "/repos/{owner}/{repo}/pulls")
def list_pulls(state: ForgeState, request: Request, owner: str, repo: str) -> Response:
    _repo(state, owner, repo)
    wanted = request.arg("state", "open")
    head, base = request.arg("head"), request.arg("base")
    pulls = [p for p in state.pulls.values() if wanted == "all" or p.state == wanted]
    if head:
        pulls = [p for p in pulls if f"{state.owner}:{p.head}" == head]
    if base:
        pulls = [p for p in pulls if p.base == base]
    reverse = (
        request.arg("direction", "desc" if request.arg("sort", "created") == "created" else "asc")
        == "desc"
    )
    pulls.sort(key=lambda p: p.number, reverse=reverse)
    per_page, page = int(request.arg("per_page", "30") or 30), int(request.arg("page", "1") or 1)
    chunk = pulls[(page - 1) * per_page : page * per_page]
    return Response(200, [pull_simple(state, p) for p in chunk])


@router.route("POST", "/repos/{owner}/{repo}/pulls")
def create_pull(state: ForgeState, request: Request, owner: str, repo: str) -> Response:
    _repo(state, owner, repo)
    body = request.json()
    head, base = body["head"], body["base"]
    head_sha, base_sha = state.branch_sha(head), state.branch_sha(base)
    if head_sha is None or base_sha is None or head_sha == base_sha:
        return Response(
            422,
            {
                **error(422, "Validation Failed"),
                "errors": [
                    {
                        "resource": "PullRequest",
                        "code": "custom",
                        "message": f"No commits between {base} and {head}",
                    }
                ],
            },
        )
    pull = state.open_pull(
        head, base, body["title"], body.get("body") or "", draft=bool(body.get("draft"))
    )
    if pull is None:
        return Response(
            422,
            {
                **error(422, "Validation Failed"),
                "errors": [
                    {
                        "resource": "PullRequest",
                        "code": "custom",
                        "message": f"A pull request already exists for {state.owner}:{head}.",
                    }
                ],
            },
        )
    return Response(201, pull_full(state, pull))


@router.route("GET", "/repos/{owner}/{repo}/pulls/{number}")
def get_pull(state: ForgeState, request: Request, owner: str, repo: str, number: str) -> Response:
    return Response(200, pull_full(state, _pull(state, owner, repo, number)))


@router.route("PATCH", "/repos/{owner}/{repo}/pulls/{number}")
def edit_pull(state: ForgeState, request: Request, owner: str, repo: str, number: str) -> Response:
    pull = _pull(state, owner, repo, number)
    body = request.json()
    pull.title = body.get("title", pull.title)
    pull.body = body.get("body", pull.body)
    if body.get("state") == "closed" and pull.state == "open":
        state.close(pull.number)
    pull.updated_at = state.now()
    return Response(200, pull_full(state, pull))


@router.route("GET", "/repos/{owner}/{repo}/pulls/{number}/reviews")
def reviews(state: ForgeState, request: Request, owner: str, repo: str, number: str) -> Response:
    pull = _pull(state, owner, repo, number)
    api = f"{_api(state)}/repos/{state.owner}/{state.name}/pulls/{pull.number}"
    html = f"{state.base_url}{state.owner}/{state.name}/pull/{pull.number}"
    per_page, page = int(request.arg("per_page", "30") or 30), int(request.arg("page", "1") or 1)
    chunk = pull.reviews[(page - 1) * per_page : page * per_page]
    return Response(
        200,
        [
            {
                "id": r["id"],
                "node_id": f"PRR_{r['id']}",
                "user": user(state, r["user"]),
                "body": "",
                "state": r["state"],
                "html_url": f"{html}#review-{r['id']}",
                "pull_request_url": api,
                "_links": {"html": {"href": html}, "pull_request": {"href": api}},
                "submitted_at": state.iso(r["at"]),
                "commit_id": r["commit"],
                "author_association": "MEMBER",
            }
            for r in chunk
        ],
    )


@router.route("POST", "/repos/{owner}/{repo}/pulls/{number}/requested_reviewers")
def request_reviewers(
    state: ForgeState, request: Request, owner: str, repo: str, number: str
) -> Response:
    pull = _pull(state, owner, repo, number)
    body = request.json()
    users, teams = body.get("reviewers", []), body.get("team_reviewers", [])
    if any(u not in state.users for u in users) or any(t not in state.teams for t in teams):
        return Response(422, error(422, "Reviews may only be requested from collaborators."))
    pull.reviewers += [u for u in users if u not in pull.reviewers]
    pull.team_reviewers += [t for t in teams if t not in pull.team_reviewers]
    return Response(201, pull_simple(state, pull))


@router.route("GET", "/repos/{owner}/{repo}/pulls/{number}/merge")
def is_merged(state: ForgeState, request: Request, owner: str, repo: str, number: str) -> Response:
    pull = _pull(state, owner, repo, number)
    return Response(204) if pull.merged else Response(404, error(404, "Not Found"))


@router.route("PUT", "/repos/{owner}/{repo}/pulls/{number}/merge")
def merge(state: ForgeState, request: Request, owner: str, repo: str, number: str) -> Response:
    pull = state.refresh(_pull(state, owner, repo, number))
    body = request.json() or {}
    if pull.state != "open":
        return Response(405, {"message": "Pull Request is not mergeable"})
    if body.get("sha") and body["sha"] != pull.head_sha:
        return Response(
            409, {"message": "Head branch was modified. Review and try the merge again."}
        )
    try:
        sha = state.merge(pull.number, method=body.get("merge_method", "merge"), by=state.bot)
    except MergeConflict:
        return Response(405, {"message": "Pull Request is not mergeable"})
    return Response(
        200, {"sha": sha, "merged": True, "message": "Pull Request successfully merged"}
    )


@router.route("POST", "/repos/{owner}/{repo}/issues/{number}/comments")
def comment(state: ForgeState, request: Request, owner: str, repo: str, number: str) -> Response:
    pull = _pull(state, owner, repo, number)
    text = request.json()["body"]
    cid = state.next_id()
    pull.comments.append({"id": cid, "body": text, "user": state.bot, "at": state.now()})
    api = f"{_api(state)}/repos/{state.owner}/{state.name}"
    return Response(
        201,
        {
            "id": cid,
            "node_id": f"IC_{cid}",
            "url": f"{api}/issues/comments/{cid}",
            "body": text,
            "html_url": f"{state.base_url}{state.owner}/{state.name}/pull/{pull.number}#issuecomment-{cid}",
            "issue_url": f"{api}/issues/{pull.number}",
            "user": user(state, state.bot),
            "created_at": state.iso(state.now()),
            "updated_at": state.iso(state.now()),
            "author_association": "MEMBER",
        },
    )


@router.route("POST", "/repos/{owner}/{repo}/issues/{number}/labels")
def add_labels(state: ForgeState, request: Request, owner: str, repo: str, number: str) -> Response:
    pull = _pull(state, owner, repo, number)
    for name in request.json()["labels"]:
        state.labels.setdefault(name, len(state.labels) + 1)  # GitHub creates unknown labels
        if name not in pull.labels:
            pull.labels.append(name)
    return Response(200, [_label(state, n) for n in pull.labels])


@router.route("POST", "/repos/{owner}/{repo}/issues/{number}/assignees")
def add_assignees(
    state: ForgeState, request: Request, owner: str, repo: str, number: str
) -> Response:
    pull = _pull(state, owner, repo, number)
    for name in request.json().get("assignees", []):
        if name in state.users and name not in pull.assignees:  # others are dropped silently
            pull.assignees.append(name)
    return Response(201, issue(state, pull))


@router.route("GET", "/repos/{owner}/{repo}/commits/{ref}/status")
def combined_status(
    state: ForgeState, request: Request, owner: str, repo: str, ref: str
) -> Response:
    _repo(state, owner, repo)
    api = f"{_api(state)}/repos/{state.owner}/{state.name}"
    found = state.statuses.get(ref, [])
    overall = "success" if found and all(s["state"] == "success" for s in found) else "pending"
    if any(s["state"] in ("failure", "error") for s in found):
        overall = "failure"
    minimal = {k: v for k, v in repository(state).items()}
    return Response(
        200,
        {
            "state": overall,
            "sha": ref,
            "total_count": len(found),
            "repository": minimal,
            "commit_url": f"{api}/commits/{ref}",
            "url": f"{api}/commits/{ref}/status",
            "statuses": [
                {
                    "id": s["id"],
                    "node_id": f"SC_{s['id']}",
                    "state": s["state"],
                    "context": s["context"],
                    "description": s["description"],
                    "target_url": s["target_url"],
                    "avatar_url": None,
                    "url": f"{api}/statuses/{ref}",
                    "created_at": state.iso(s["at"]),
                    "updated_at": state.iso(s["at"]),
                }
                for s in found
            ],
        },
    )


@router.route("GET", "/repos/{owner}/{repo}/commits/{ref}/check-runs")
def check_runs(state: ForgeState, request: Request, owner: str, repo: str, ref: str) -> Response:
    _repo(state, owner, repo)
    api = f"{_api(state)}/repos/{state.owner}/{state.name}"
    runs = state.check_runs.get(ref, [])
    return Response(
        200,
        {
            "total_count": len(runs),
            "check_runs": [
                {
                    "id": r["id"],
                    "node_id": f"CR_{r['id']}",
                    "head_sha": ref,
                    "name": r["name"],
                    "url": f"{api}/check-runs/{r['id']}",
                    "html_url": f"https://ci.test/runs/{r['id']}",
                    "details_url": None,
                    "status": r["status"],
                    "conclusion": r["conclusion"],
                    "started_at": state.iso(r["at"]),
                    "completed_at": state.iso(r["at"]) if r["status"] == "completed" else None,
                    "external_id": None,
                    "check_suite": None,
                    "app": None,
                    "pull_requests": [],
                    "output": {
                        "title": r["name"],
                        "summary": None,
                        "text": None,
                        "annotations_count": 0,
                        "annotations_url": f"{api}/check-runs/{r['id']}/annotations",
                    },
                }
                for r in runs
            ],
        },
    )


@router.route("POST", "/app/installations/{installation}/access_tokens")
def access_token(state: ForgeState, request: Request, installation: str) -> Response:
    scheme, _, jwt = request.headers.get("authorization", "").partition(" ")
    app = state.verify_jwt(jwt) if scheme.lower() == "bearer" else None
    if app is None:
        return Response(401, error(401, "A JSON web token could not be decoded"))
    if app.installation_id != installation:
        return Response(404, error(404, "Not Found"))
    token, expires = state.mint(app)
    return Response(
        201,
        {
            "token": token,
            "expires_at": state.iso(expires),
            "permissions": {"pull_requests": "write", "contents": "write"},
            "repository_selection": "selected",
        },
    )


def graphql(state: ForgeState, request: Request) -> Response:
    """`enablePullRequestAutoMerge`, the one mutation the bridge sends."""
    body = request.json() or {}
    query, variables = body.get("query", ""), body.get("variables") or {}
    if "enablePullRequestAutoMerge" not in query:
        return Response(200, {"errors": [{"message": "unsupported by the test forge"}]})
    node, method = variables.get("id"), variables.get("method")
    found = [p for p in state.pulls.values() if f"PR_{p.id}" == node]
    if not found or method not in ("MERGE", "SQUASH", "REBASE"):
        return Response(
            200,
            {
                "data": None,
                "errors": [
                    {
                        "type": "NOT_FOUND",
                        "message": f"Could not resolve to a node with the global id of '{node}'",
                    }
                ],
            },
        )
    pull = found[0]
    if pull.state != "open":
        return Response(200, {"data": None, "errors": [{"message": "Pull request is not open"}]})
    pull.auto_merge = {"method": method.lower()}
    return Response(
        200, {"data": {"enablePullRequestAutoMerge": {"pullRequest": {"number": pull.number}}}}
    )


def app(state: ForgeState) -> ForgeApp:
    gql = Router("/api")
    gql.routes.extend(router.routes)

    @gql.route("POST", "/graphql")
    def _graphql(state: ForgeState, request: Request) -> Response:
        return graphql(state, request)

    return ForgeApp(state, gql, authenticate, error)
