"""Forge credentials: a token from the environment or a file, or a GitHub App.

A token lives in a `Redacted` from the moment it is read; it is handed to
`on_secret` (the log scrubber's `register_secret`, wired by the caller) before
it is ever used, so even a stray log line cannot show it. It never goes into a
URL: the API gets it in a header, git over HTTPS gets it from
`git_credentials()` (the publisher passes it as a header or an askpass, never
in the remote URL).

A GitHub App signs a JWT (RS256, `iat` 60 s in the past against clock drift,
`exp` 9 minutes ahead, under GitHub's 10-minute cap) and trades it for an
installation token valid one hour. The token is cached and traded again
`REFRESH_MARGIN` before it expires, so no request or `git push` starts with a
token about to lapse. This module reads no network itself: the trade goes
through a callable the client supplies (its bounded, rate-limited HTTP).
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bridge.errors import ConfigError
from bridge.forges.limits import Clock, SystemClock
from bridge.redaction import Redacted

MAX_SECRET_FILE = 64 * 1024  # a token or a PEM key; anything larger is not one
JWT_BACKDATE = 60.0
JWT_LIFETIME = 540.0
REFRESH_MARGIN = 600.0  # trade for a new installation token 10 minutes before expiry

OnSecret = Callable[[Redacted], None]


def _ignore(_: Redacted) -> None:
    return None


class TokenSource(Protocol):
    """Where a forge client gets the token for each request."""

    git_username: str  # the user name git over HTTPS pairs with the token

    def token(self) -> Redacted: ...

    def cached(self) -> Redacted | None:
        """The token in hand, without getting one (to scrub a message with)."""
        ...

    def refresh(self) -> bool:
        """After a 401: get a new token if this source can (True), else False."""
        ...


class StaticToken:
    """A personal, project or bot token, as configured (`tokenEnv` / `tokenFile`)."""

    def __init__(
        self, value: Redacted, *, origin: str, git_username: str, on_secret: OnSecret = _ignore
    ) -> None:
        self._value = value
        self.origin = origin  # e.g. "$GITHUB_TOKEN": named in errors, never the value
        self.git_username = git_username
        on_secret(value)

    def token(self) -> Redacted:
        return self._value

    def cached(self) -> Redacted | None:
        return self._value

    def refresh(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"StaticToken(from {self.origin})"


def token_from_env(
    name: str, *, environ: Mapping[str, str] | None = None, what: str = "forge token"
) -> Redacted:
    value = (environ if environ is not None else os.environ).get(name, "").strip()
    if not value:
        raise ConfigError(
            f"the {what} environment variable ${name} is not set or empty",
            hint=f"export {name}=<token> before starting the bridge (the token never "
            "goes in the config file)",
        )
    return Redacted(value)


def secret_from_file(path: Path, *, what: str) -> Redacted:
    """A token or key from a file, read with a size bound; errors never quote it."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SECRET_FILE + 1)
    except OSError as e:
        raise ConfigError(
            f"cannot read the {what} file {path}: {e.strerror or type(e).__name__}",
            hint="check the path and that the bridge's user may read it",
        ) from None
    if len(data) > MAX_SECRET_FILE:
        raise ConfigError(f"the {what} file {path} is larger than {MAX_SECRET_FILE} bytes")
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"the {what} file {path} is not UTF-8 text") from None
    if not text:
        raise ConfigError(f"the {what} file {path} is empty")
    return Redacted(text)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def app_jwt(app_id: str, private_key: rsa.RSAPrivateKey, now: float) -> Redacted:
    """The JWT a GitHub App authenticates with (RS256, GitHub's required claims)."""
    header = {"alg": "RS256", "typ": "JWT"}
    claims = {"iat": int(now - JWT_BACKDATE), "exp": int(now + JWT_LIFETIME), "iss": app_id}
    signing_input = (
        _b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    signature = private_key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return Redacted(f"{signing_input}.{_b64url(signature)}")


def load_app_key(pem: Redacted, *, origin: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem.reveal().encode(), password=None)
    except (ValueError, TypeError):
        raise ConfigError(
            f"the GitHub App private key {origin} is not an unencrypted PEM private key",
            hint="download a private key in the App's settings (a .pem file) and point "
            "auth.privateKeyFile at it",
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"the GitHub App private key {origin} is not an RSA key")
    return key


# exchange(jwt) -> (installation token, expires_at as epoch seconds)
Exchange = Callable[[Redacted], tuple[Redacted, float]]


class GitHubAppToken:
    """Installation tokens of a GitHub App, traded for a JWT and kept until
    `REFRESH_MARGIN` before they expire. Thread-safe: one trade at a time."""

    git_username = "x-access-token"

    def __init__(
        self,
        *,
        app_id: str,
        installation_id: str,
        private_key: rsa.RSAPrivateKey,
        clock: Clock | None = None,
        on_secret: OnSecret = _ignore,
    ) -> None:
        self.app_id = app_id
        self.installation_id = installation_id
        self._key = private_key
        self._clock: Clock = clock or SystemClock()
        self._on_secret = on_secret
        self._exchange: Exchange | None = None
        self._token: Redacted | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()

    def bind(self, exchange: Exchange) -> None:
        """The client's trade call (its HTTP, limits and bounds); set once."""
        self._exchange = exchange

    @property
    def expires_at(self) -> float:
        return self._expires_at

    def token(self) -> Redacted:
        with self._lock:
            if self._token is None or self._clock.time() >= self._expires_at - REFRESH_MARGIN:
                self._trade()
            assert self._token is not None
            return self._token

    def cached(self) -> Redacted | None:
        return self._token

    def refresh(self) -> bool:
        with self._lock:
            self._trade()
        return True

    def _trade(self) -> None:
        if self._exchange is None:
            raise RuntimeError("GitHubAppToken used before a client bound its exchange")
        jwt = app_jwt(self.app_id, self._key, self._clock.time())
        self._on_secret(jwt)
        token, expires_at = self._exchange(jwt)
        self._on_secret(token)
        self._token, self._expires_at = token, expires_at

    def __repr__(self) -> str:
        return f"GitHubAppToken(app {self.app_id}, installation {self.installation_id})"


def parse_expiry(value: object) -> float | None:
    """`expires_at` of an installation token (ISO 8601) as epoch seconds, or None."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None
