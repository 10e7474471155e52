"""The `Forge` protocol, and what the three clients share.

`Forge` is the whole surface the pull-request publisher uses: find the pull
request of a head branch, open (adopting one that already exists), update,
close with a comment, decorate (labels, assignees, reviewers), read its state,
reviews and the statuses of a commit, and ask for the forge's native
auto-merge. `ForgeClient` holds what does not differ between forges: the
HTTP side (`ForgeHttp`), adoption after "already exists", the order of
decorations, and the parsing helpers that turn hostile JSON into models or an
`ForgeAnswerInvalid`. It must not decide anything about deployments or git.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

from bridge.forges.errors import ForgeAnswerInvalid, ForgeRejected
from bridge.forges.http import ForgeHttp, Reply
from bridge.forges.models import (
    CommitStatus,
    ForgeKind,
    MergeMethod,
    NewPull,
    Opened,
    PullLookup,
    PullRequest,
    Quota,
    Review,
    clean,
)
from bridge.redaction import Redacted
from bridge.untrusted import UntrustedInput

TITLE_MAX = 256
BODY_MAX = 65_536
MAX_PAGES = 10  # of any list: a forge that pages beyond is looping or hostile
PAGE_SIZE = 50
MAX_NAMES = 50  # labels, assignees or reviewers in one request
NAME_MAX = 255
URL_MAX = 2048
T = TypeVar("T")


class Forge(Protocol):
    """One repository on one forge, as the pull-request publisher uses it."""

    kind: ForgeKind
    repo: str  # "owner/name" (GitLab: "group/sub/project"), for messages

    def find_pull(self, head: str, base: str) -> PullLookup: ...

    def get_pull(self, number: int) -> PullRequest: ...

    def open_pull(self, new: NewPull) -> Opened: ...

    def update_pull(
        self, number: int, *, title: str | None = None, body: str | None = None
    ) -> PullRequest: ...

    def close_pull(self, number: int, *, comment: str | None = None) -> PullRequest: ...

    def comment(self, number: int, body: str) -> None: ...

    def add_labels(self, number: int, labels: Sequence[str]) -> tuple[str, ...]: ...

    def add_assignees(self, number: int, users: Sequence[str]) -> tuple[str, ...]: ...

    def request_reviewers(self, number: int, reviewers: Sequence[str]) -> tuple[str, ...]: ...

    def reviews(self, number: int) -> tuple[Review, ...]: ...

    def enable_auto_merge(self, pull: PullRequest, method: MergeMethod) -> None: ...

    def commit_statuses(self, sha: str) -> tuple[CommitStatus, ...]: ...

    def git_credentials(self) -> tuple[str, Redacted]: ...

    def quota(self) -> Quota: ...

    def close(self) -> None: ...


class ForgeClient:
    """Shared behaviour of the GitHub, GitLab and Gitea clients."""

    kind: ForgeKind

    def __init__(self, http: ForgeHttp, repo: str) -> None:
        self.http = http
        self.repo = repo

    # --- the parts each forge writes ------------------------------------------

    def find_pull(self, head: str, base: str) -> PullLookup:
        raise NotImplementedError

    def get_pull(self, number: int) -> PullRequest:
        raise NotImplementedError

    def update_pull(
        self, number: int, *, title: str | None = None, body: str | None = None
    ) -> PullRequest:
        raise NotImplementedError

    def reviews(self, number: int) -> tuple[Review, ...]:
        raise NotImplementedError

    def enable_auto_merge(self, pull: PullRequest, method: MergeMethod) -> None:
        raise NotImplementedError

    def commit_statuses(self, sha: str) -> tuple[CommitStatus, ...]:
        raise NotImplementedError

    def _create(self, new: NewPull) -> PullRequest | None:
        """Create, or None when the forge says one already exists for head and base."""
        raise NotImplementedError

    def _set_state_closed(self, number: int) -> PullRequest:
        raise NotImplementedError

    def comment(self, number: int, body: str) -> None:
        raise NotImplementedError

    def add_labels(self, number: int, labels: Sequence[str]) -> tuple[str, ...]:
        raise NotImplementedError

    def add_assignees(self, number: int, users: Sequence[str]) -> tuple[str, ...]:
        raise NotImplementedError

    def request_reviewers(self, number: int, reviewers: Sequence[str]) -> tuple[str, ...]:
        raise NotImplementedError

    # --- shared ----------------------------------------------------------------

    def open_pull(self, new: NewPull) -> Opened:
        """Open a pull request for `new.head` into `new.base`, or adopt the open one.

        Two replicas racing here both end with the same pull request: the forge
        refuses the second create (GitHub 422, GitLab/Gitea 409) and the loser
        finds and adopts the winner's. Labels, assignees and reviewers are set
        only on a pull request this call created."""
        check_texts(new.title, new.body)
        created = self._create(new)
        if created is None:
            found = self.find_pull(new.head, new.base).open
            if found is None:
                raise ForgeRejected(
                    f"{self.http.name} on {self.repo} refused to open a pull request from "
                    f"{new.head!r} into {new.base!r}, and none is open for that branch",
                    forge=self.kind,
                    repo=self.repo,
                    hint="check that the head branch was pushed and differs from the base",
                )
            return Opened(found, created=False)
        missing: list[str] = []
        if new.labels:
            missing += self.add_labels(created.number, new.labels)
        if new.assignees:
            missing += self.add_assignees(created.number, new.assignees)
        if new.reviewers:
            missing += self.request_reviewers(created.number, new.reviewers)
        return Opened(created, created=True, not_applied=tuple(missing))

    def close_pull(self, number: int, *, comment: str | None = None) -> PullRequest:
        """Close without merging; the comment (why) goes first, so a reader of the
        closed pull request always finds the reason."""
        if comment:
            self.comment(number, comment)
        return self._set_state_closed(number)

    def git_credentials(self) -> tuple[str, Redacted]:
        """User and token for git over HTTPS to this forge (never put in a URL)."""
        tokens = self.http.tokens
        if tokens is None:
            raise RuntimeError("a forge client without credentials")
        return tokens.git_username, tokens.token()

    def quota(self) -> Quota:
        return self.http.limiter.quota()

    def close(self) -> None:
        self.http.close()

    # --- parsing helpers ---------------------------------------------------------

    def parsed(self, what: str, parse: Callable[[Any], T], data: Any) -> T:
        """`parse(data)`, with any shape error an ForgeAnswerInvalid naming `what`."""
        try:
            return parse(data)
        except (UntrustedInput, KeyError, TypeError, ValueError) as e:
            raise ForgeAnswerInvalid(
                f"{self.http.name} {what} on {self.repo}: the answer is not what the API "
                f"describes ({clean(str(e), 200)})",
                forge=self.kind,
                repo=self.repo,
                hint="a proxy in between, or a forge version the bridge does not know; "
                "nothing more was changed",
            ) from None

    def pages(
        self,
        path: str,
        params: dict[str, Any],
        *,
        page_param: str,
        size_param: str,
        size: int = PAGE_SIZE,
        stop: Callable[[list[Any]], bool] | None = None,
    ) -> list[Any]:
        """Items of a paged list, at most MAX_PAGES pages; `stop(items)` ends early."""
        found: list[Any] = []
        for page in range(1, MAX_PAGES + 1):
            reply = self.http.call(
                "GET", path, params={**params, page_param: page, size_param: size}
            )
            items = self.parsed(f"GET {path}", items_of, reply.data)
            found.extend(items)
            if len(items) < size or (stop is not None and stop(found)):
                break
        return found


def check_texts(title: str, body: str) -> None:
    if len(title) > TITLE_MAX or len(body) > BODY_MAX:
        raise ValueError(
            f"pull request texts over the limits (title {len(title)}/{TITLE_MAX}, body "
            f"{len(body)}/{BODY_MAX}); make them with bridge.forges.texts"
        )


def seg(value: str) -> str:
    """One URL path segment from a name (owner, repo, branch): nothing escapes it."""
    return quote(value, safe="")


def items_of(data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise UntrustedInput("expected a JSON list")
    if len(data) > 1000:
        raise UntrustedInput(f"a list of {len(data)} items where a page holds at most 100")
    return data


def obj(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise UntrustedInput("expected a JSON object")
    return data


def text(data: dict[str, Any], key: str, limit: int = NAME_MAX) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise UntrustedInput(f"`{key}` is not a string")
    return clean(value, limit)


def opt_text(data: dict[str, Any], key: str, limit: int = NAME_MAX) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise UntrustedInput(f"`{key}` is not a string")
    return clean(value, limit) or None


def integer(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**53:
        raise UntrustedInput(f"`{key}` is not a non-negative integer")
    return value


def flag(data: dict[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise UntrustedInput(f"`{key}` is not a boolean")
    return value


def when(data: dict[str, Any], key: str) -> datetime | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise UntrustedInput(f"`{key}` is not a time")
    # Go's zero time is how Gitea says "never".
    if value.startswith("0001-01-01"):
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise UntrustedInput(f"`{key}` has no time zone")
    return moment


def login(data: Any, key: str = "login") -> str | None:
    """A user object's name (`login`, GitLab `username`), or None for null."""
    if data is None:
        return None
    return opt_text(obj(data), key)


def names(values: Sequence[str]) -> list[str]:
    """Configured names, deduplicated, bounded, order kept."""
    found = list(dict.fromkeys(v for v in values if v))
    if len(found) > MAX_NAMES:
        raise ValueError(f"{len(found)} names where at most {MAX_NAMES} are sent")
    return found


def sha_of(data: dict[str, Any], key: str) -> str | None:
    value = opt_text(data, key, 64)
    if value is not None and not all(c in "0123456789abcdef" for c in value.lower()):
        raise UntrustedInput(f"`{key}` is not a commit id")
    return value


def reply_items(reply: Reply) -> list[Any]:
    return items_of(reply.data)
