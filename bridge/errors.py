"""The bridge's error vocabulary.

Library exceptions (httpx, GitPython, subprocess) are translated into these at
the boundary where they occur (`raise ... from e`), so the CLI decides exit
codes in one place and messages never carry a secret. Every class sorts a
failure as *permanent* (stop, tell a human) or *temporary* (back off, retry).
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every error the bridge reports to a user."""

    exit_code = 1
    temporary = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(BridgeError):
    """Usage or configuration error: exit 2."""

    exit_code = 2


class ControlPlaneError(BridgeError):
    """The control plane refused us or cannot be reached: exit 3."""

    exit_code = 3


class ControlPlaneUnavailable(ControlPlaneError):
    """5xx, timeout, reset, garbage body: retried, then the cycle is abandoned."""

    temporary = True

    def __init__(
        self, message: str, *, hint: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class AuthRefused(ControlPlaneError):
    """401/403 from the control plane."""


class ListenerNotFound(ControlPlaneError):
    """The configured listener id does not exist (404)."""


class GitError(BridgeError):
    """A git remote is unreachable, refused us, or a local git step failed: exit 4."""

    exit_code = 4


class GitRemoteUnavailable(GitError):
    temporary = True


class GitAuthRefused(GitError):
    pass


class PushRejected(GitError):
    """Someone else pushed first: fetch, re-render on the new head, retry."""

    temporary = True


class HistoryRewritten(GitError):
    """The remote branch no longer contains what we pushed: stop for that target."""


class SigningError(GitError):
    """Signing is configured and the key cannot be used: no commit at all."""


class LocalCloneBroken(GitError):
    """The persistent clone is corrupt; the writer re-clones into a fresh directory."""

    temporary = True


class DeploymentError(BridgeError):
    """One deployment cannot be reconciled; the others go on. Exit 1."""

    def __init__(
        self,
        message: str,
        *,
        deployment_id: str,
        deployment_name: str,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.deployment_id = deployment_id
        self.deployment_name = deployment_name

    def __str__(self) -> str:
        text = f"deployment {self.deployment_name!r} ({self.deployment_id}): {self.message}"
        return f"{text} ({self.hint})" if self.hint else text


class InvalidDeployment(DeploymentError):
    """The control plane sent a deployment we cannot parse or render."""


class SecretsError(DeploymentError):
    """Sealing a deployment's secrets failed, or the provider refuses them."""


class PolicyViolation(DeploymentError):
    """A revision breaks the configured policy; it is not committed."""

    def __init__(
        self,
        message: str,
        *,
        deployment_id: str,
        deployment_name: str,
        revision_id: str | None,
        rule: str,
    ) -> None:
        super().__init__(
            f"revision {revision_id or 'none'} breaks policy rule {rule}: {message}",
            deployment_id=deployment_id,
            deployment_name=deployment_name,
            hint="the deployment keeps its last good commit; fix the image or resources "
            "in the control plane, or change `policy:` in the config",
        )
        self.rule = rule
        self.revision_id = revision_id


class SecretsConfigError(ConfigError):
    pass


class InternalError(BridgeError):
    """An exception nobody expected: a bug, or an input the bridge does not handle
    yet. It fails only what it happened in (a deployment, a target, a cycle);
    exit 1. Described by type and code location only: the exception's own text
    may quote the input (a secret value), so it goes nowhere."""

    def __init__(self, message: str, *, hint: str | None = None, where: str = "") -> None:
        super().__init__(message, hint=hint)
        self.where = where


def unexpected(error: BaseException, what: str, *, where: str) -> InternalError:
    """An InternalError for `error`, raised while `what` (e.g. "planning deployment
    'x' (id)"); `where`: deployment, target or cycle. Frames, never values."""
    return InternalError(
        f"{what}: unexpected {type(error).__name__} at {code_location(error)}",
        hint="a bug or an input the bridge does not handle yet; the rest goes on. Please "
        "report it with this line",
        where=where,
    )


def code_location(error: BaseException, frames: int = 3) -> str:
    """The innermost frames of a traceback, newest first, as `file:line in function`
    (paths from the package or site-packages down): where, without any value."""
    import traceback

    found = traceback.extract_tb(error.__traceback__)[-frames:]
    parts = []
    for frame in reversed(found):
        path = frame.filename.replace("\\", "/")
        for marker in ("/site-packages/", "/bridge/"):
            if marker in path:
                path = ("bridge/" if marker == "/bridge/" else "") + path.rsplit(marker, 1)[1]
                break
        parts.append(f"{path}:{frame.lineno} in {frame.name}")
    return " < ".join(parts) or "an unknown place"
