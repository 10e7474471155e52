"""Errors of the forge clients: what GitHub, GitLab or Gitea refused, and why.

Every forge failure the bridge reports is one of these, raised where httpx or
a forge's answer meets our code. They belong to the exit-4 family ("a git
remote or forge refused us", SPEC §3) and are sorted like every bridge error:
`ForgeRefused` and `ForgeRejected` are permanent (a human must act; retrying
changes nothing), `ForgeUnavailable` and `ForgeRateLimited` are temporary.
Messages name the forge and the repository, never a token: callers scrub
with the token before they build one (`ForgeHttp` does).
"""

from __future__ import annotations

from bridge.errors import BridgeError

FORGE_NAMES = {"github": "GitHub", "gitlab": "GitLab", "gitea": "Gitea/Forgejo"}

# What a token needs on each forge to run pull-request mode: said in every
# 401/403/404, because those are nearly always a token without these.
PERMISSIONS = {
    "github": "a fine-grained token (or GitHub App installation) with 'Pull requests: read "
    "and write', 'Contents: read and write' and 'Commit statuses: read' on the repository "
    "(a classic token needs the `repo` scope)",
    "gitlab": "a token with the `api` scope whose user has at least the Developer role in "
    "the project",
    "gitea": "a token with the `write:repository` and `write:issue` scopes whose user may "
    "write to the repository",
}


class ForgeError(BridgeError):
    """A forge (GitHub, GitLab, Gitea/Forgejo) refused or failed a request: exit 4."""

    exit_code = 4

    def __init__(
        self,
        message: str,
        *,
        forge: str,
        repo: str,
        status: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.forge = forge
        self.repo = repo
        self.status = status


class ForgeRefused(ForgeError):
    """401, 403 (not a rate limit) or 404: the token is missing a permission, is
    expired, or cannot see the repository. Nothing was changed."""


class ForgeRejected(ForgeError):
    """The forge understood and declined this one request (405 not mergeable, 409,
    422 validation, a GraphQL error): permanent for that request."""


class ForgeUnavailable(ForgeError):
    """5xx, timeouts, resets, or an answer that is not what the API describes,
    after the retries: the next cycle tries again."""

    temporary = True

    def __init__(
        self,
        message: str,
        *,
        forge: str,
        repo: str,
        status: int | None = None,
        hint: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, forge=forge, repo=repo, status=status, hint=hint)
        self.retry_after = retry_after


class ForgeRateLimited(ForgeUnavailable):
    """The forge asked us to slow down for longer than one request may wait; every
    request to that host waits out `retry_after` seconds before it is sent again."""


class ForgeAnswerInvalid(ForgeUnavailable):
    """An answer too large, too slow, too deep, or not shaped as the API describes."""
