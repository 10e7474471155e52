"""`targets[].publish`: how a target's changes are published (SPEC §4, §6a).

`mode: push` (the default) commits straight to the target's branch;
`mode: pull-request` proposes them in a pull request on a forge. Every key is
checked here, at start, with errors that name the key, the value and what is
allowed. Credentials are named, never given: an environment variable, a file,
or a GitHub App's key file; reading them is the forge client's, at start-up.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any, cast
from urllib.parse import urlsplit

from bridge.config.reader import _env_secret, _Reader
from bridge.config.settings import (
    ENV_NAME,
    ForgeAuthSettings,
    PublishSettings,
    PullRequestSettings,
    Target,
)
from bridge.errors import ConfigError

MODES = ("push", "pull-request")
FORGES = ("github", "gitlab", "gitea")
GRANULARITIES = ("target", "deployment")
MERGE_METHODS = ("merge", "squash", "rebase")
MAX_NAMES = 50  # labels, reviewers or assignees: what one forge request carries
NAME_MAX = 255
_BRANCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
_NUMBER = re.compile(r"^[0-9]{1,20}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def publish_settings(
    reader: _Reader, where: str, item: Mapping[str, Any], *, repo: str, branch: str
) -> PublishSettings:
    """`<where>.publish` of one target (`where` is e.g. `targets[0]`)."""
    node = item.get("publish") or {}
    key = f"{where}.publish"
    mode = reader.convert(f"{key}.mode", "str", node.get("mode")) or "push"
    if mode not in MODES:
        raise reader.error(f"{key}.mode", mode, "push or pull-request")
    raw = node.get("pullRequest")
    if raw is None:
        if mode == "pull-request":
            raise reader.error(
                f"{key}.pullRequest", None, "a mapping with at least `forge` and `auth`"
            )
        return PublishSettings()
    pull = _pull_request(reader, f"{key}.pullRequest", raw, repo=repo, branch=branch)
    return PublishSettings(mode=cast(Any, mode), pull_request=pull)


def _pull_request(
    reader: _Reader, key: str, node: Mapping[str, Any], *, repo: str, branch: str
) -> PullRequestSettings:
    def v(name: str, kind: str) -> Any:
        return reader.convert(f"{key}.{name}", kind, node.get(name))

    forge = v("forge", "str")
    if forge not in FORGES:
        raise reader.error(f"{key}.forge", forge, "github, gitlab or gitea (Gitea and Forgejo)")
    scheme = urlsplit(repo).scheme if "://" in repo else ""
    if scheme not in ("https", "http", "ssh"):
        raise ConfigError(
            f"{reader.source}: key `{key}`: a pull request needs the target's repo on a "
            f"forge, but its repo is {repo!r}; allowed: an https:// or ssh:// URL of the "
            f"repository on {forge}",
            hint="set the target's repo to the forge's clone URL, or use publish.mode: push",
        )
    api_url = v("apiUrl", "str")
    if api_url is not None:
        parts = urlsplit(api_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise reader.error(f"{key}.apiUrl", api_url, "an http:// or https:// URL, or null")
        if parts.username is not None or parts.password is not None:
            raise reader.error(f"{key}.apiUrl", "<url with credentials>", "a URL without user info")
    granularity = v("granularity", "str") or "target"
    if granularity not in GRANULARITIES:
        raise reader.error(f"{key}.granularity", granularity, "target or deployment")
    draft = v("draft", "bool")
    return PullRequestSettings(
        forge=forge,
        auth=_auth(reader, f"{key}.auth", node.get("auth"), forge),
        head_branch=_head_branch(reader, f"{key}.headBranch", v("headBranch", "str"), branch),
        api_url=api_url.rstrip("/") if api_url else None,
        granularity=cast(Any, granularity),
        labels=_names(reader, f"{key}.labels", v("labels", "strlist")),
        reviewers=_names(reader, f"{key}.reviewers", v("reviewers", "strlist"), teams=True),
        assignees=_names(reader, f"{key}.assignees", v("assignees", "strlist")),
        draft=bool(draft),
        auto_merge=_auto_merge(reader, f"{key}.autoMerge", node.get("autoMerge"), forge),
    )


def _auth(reader: _Reader, key: str, node: Any, forge: str) -> ForgeAuthSettings:
    if not isinstance(node, Mapping) or not node:
        raise reader.error(
            key,
            node,
            "{tokenEnv: NAME}, {tokenFile: PATH}, or (GitHub) "
            "{appId, installationId, privateKeyFile}",
        )

    def v(name: str, kind: str) -> Any:
        return reader.convert(f"{key}.{name}", kind, node.get(name))

    auth = ForgeAuthSettings(
        token_env=v("tokenEnv", "str"),
        token_file=v("tokenFile", "path"),
        app_id=v("appId", "str"),
        installation_id=v("installationId", "str"),
        private_key_file=v("privateKeyFile", "path"),
    )
    app = (auth.app_id, auth.installation_id, auth.private_key_file)
    given = [
        auth.token_env is not None,
        auth.token_file is not None,
        any(x is not None for x in app),
    ]
    if sum(given) != 1:
        raise reader.error(
            key,
            dict(node),
            "exactly one of tokenEnv, tokenFile, or appId + installationId + privateKeyFile",
        )
    if auth.token_env is not None:
        if not ENV_NAME.match(auth.token_env):
            raise reader.error(f"{key}.tokenEnv", auth.token_env, "an environment variable name")
        token = _env_secret(reader, f"{key}.tokenEnv", auth.token_env, required=True)
        auth = dataclasses.replace(auth, token=token)
    if any(x is not None for x in app):
        if forge != "github":
            raise reader.error(f"{key}.appId", auth.app_id, "a GitHub App only with forge: github")
        for name, value in (("appId", auth.app_id), ("installationId", auth.installation_id)):
            if value is None or not _NUMBER.match(value):
                raise reader.error(f"{key}.{name}", value, "the App's numeric id")
        if auth.private_key_file is None:
            raise reader.error(f"{key}.privateKeyFile", None, "the App's private key file (PEM)")
    return auth


def _head_branch(reader: _Reader, key: str, value: str | None, branch: str) -> str:
    head = value or f"gitops-bridge/{branch}"
    if (
        not _BRANCH.match(head)
        or ".." in head
        or "//" in head
        or head.endswith(("/", ".", ".lock"))
        or "/." in head
        or "@{" in head
    ):
        raise reader.error(key, head, "a branch name (e.g. gitops-bridge/main)")
    if branch.startswith(head):
        # The bridge fetches every branch whose name starts with the head's.
        raise reader.error(
            key,
            head,
            f"a branch of the bridge's own, not a prefix of the target's branch {branch!r}",
        )
    return head


def _names(
    reader: _Reader, key: str, values: Sequence[str] | None, *, teams: bool = False
) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(values or ()))
    if len(names) > MAX_NAMES:
        raise reader.error(key, f"{len(names)} names", f"at most {MAX_NAMES}")
    for name in names:
        bare = name.removeprefix("team:") if teams else name
        if not bare or len(name) > NAME_MAX or _CONTROL.search(name):
            allowed = "user names, or team:<slug> for a team" if teams else "names"
            raise reader.error(key, name, f"{allowed} of at most {NAME_MAX} characters")
    return names


def _auto_merge(reader: _Reader, key: str, node: Any, forge: str) -> Any:
    if node is None:
        return None
    if not isinstance(node, Mapping):
        raise reader.error(key, node, "null, or {method: merge|squash|rebase}")
    method = reader.convert(f"{key}.method", "str", node.get("method"))
    if method not in MERGE_METHODS:
        raise reader.error(f"{key}.method", method, "merge, squash or rebase")
    if forge == "gitlab" and method == "rebase":
        # GitLab's merge method is the project's setting; a merge request can ask
        # for a squash, nothing else.
        raise reader.error(
            f"{key}.method", method, "merge or squash on GitLab (the project sets the rest)"
        )
    return method


def check_pull_targets(reader: _Reader, targets: Sequence[Target]) -> None:
    """Two targets must never share a pull request: each (repo, head branch) is
    one target's, and no head branch is another target's branch."""
    heads: dict[tuple[str, str], str] = {}
    branches = {(t.repo, t.branch): t.namespace for t in targets}
    for t in targets:
        pull = t.publish.pull_request
        if t.publish.mode != "pull-request" or pull is None:
            continue
        other = heads.get((t.repo, pull.head_branch)) or branches.get((t.repo, pull.head_branch))
        for (repo, head), namespace in heads.items():
            # git cannot hold both `a/b` and `a/b/c`: one would refuse the other's push.
            if repo == t.repo and (
                head.startswith(pull.head_branch + "/") or pull.head_branch.startswith(head + "/")
            ):
                other = namespace
        if other is not None:
            raise ConfigError(
                f"{reader.source}: targets {other} and {t.namespace} would share the branch "
                f"{pull.head_branch!r} of {t.repo}; each pull-request target needs a head "
                "branch of its own",
                hint=f"set publish.pullRequest.headBranch, e.g. "
                f"gitops-bridge/{t.branch}-{t.namespace}",
            )
        heads[(t.repo, pull.head_branch)] = t.namespace
