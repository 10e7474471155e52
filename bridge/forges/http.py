"""One bounded, rate-limited, retrying HTTP exchange with a forge's API.

The forge clients' only way out: every request goes through `ForgeHttp.call`,
which owns the rules everything from outside follows here:

- bounds: a deadline for the whole exchange (httpx's timeouts are per read, a
  server dripping a byte a second would never trip them), a byte cap on the
  body (checked as it is read, after decompression), JSON parsed by
  `bridge.untrusted.parse_json` (depth-bounded);
- limits: writes take a slot of the host's `HostLimiter`; a 403/429 that is a
  rate limit makes the whole host wait `retry-after`, or until
  `x-ratelimit-reset` when the quota is spent, or at least 60 s (doubling),
  with jitter; a wait longer than `max_wait` is not slept but raised
  (`ForgeRateLimited`), and the host stays blocked until it passes;
- retries: 5xx, timeouts and resets are retried with jittered backoff; a
  request that is not idempotent is retried only when it cannot have arrived;
- errors: 401/403/404 become `ForgeRefused` naming the forge, the repository
  and the permission the token needs; other 4xx `ForgeRejected` with the
  forge's own words (short, scrubbed); nothing is retried that would change
  something twice.

It must not know what a pull request is; `accept` lets a client take a 404,
409 or 422 as an answer rather than an error.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx

from bridge.forges.auth import TokenSource
from bridge.forges.errors import (
    FORGE_NAMES,
    PERMISSIONS,
    ForgeAnswerInvalid,
    ForgeError,
    ForgeRateLimited,
    ForgeRefused,
    ForgeRejected,
    ForgeUnavailable,
)
from bridge.forges.limits import Clock, HostLimiter, OverBudget
from bridge.forges.models import clean
from bridge.redaction import Redacted, scrub
from bridge.untrusted import UntrustedInput, parse_json

log = logging.getLogger("bridge.forges")
E = TypeVar("E", bound=ForgeError)

MAX_ATTEMPTS = 3  # per request, for 5xx and transport errors
MAX_RATE_WAITS = 4  # rate-limit waits per request, within max_wait
BACKOFF_BASE = 1.0
BACKOFF_MAX = 16.0
RATE_LIMIT_FLOOR = 60.0  # GitHub: "wait at least one minute" without other advice
MAX_BODY = 8 * 1024 * 1024
MAX_DEPTH = 32  # forge objects nest ~6 deep
DEADLINE = 30.0  # seconds for one whole exchange
_SNIPPET = 200


@dataclass(frozen=True)
class AuthStyle:
    """How a forge wants its token: `Authorization: Bearer x`, `PRIVATE-TOKEN: x`, ..."""

    header: str
    prefix: str


@dataclass(frozen=True)
class Reply:
    status: int
    data: Any  # parsed JSON, or None (no body, or a body that is not JSON on an accepted 4xx)
    headers: httpx.Headers


class _Retry(Exception):
    """Internal: this attempt failed in a way worth another one."""

    def __init__(self, why: str, *, status: int | None = None) -> None:
        super().__init__(why)
        self.why = why
        self.status = status


class ForgeHttp:
    """The HTTP side of one forge client: one repository, one token source."""

    def __init__(
        self,
        *,
        forge: str,
        repo: str,
        api_url: str,
        tokens: TokenSource | None,
        auth: AuthStyle,
        limiter: HostLimiter,
        clock: Clock,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 10.0,
        deadline: float = DEADLINE,
        max_bytes: int = MAX_BODY,
        max_wait: float = 120.0,
        jitter: Callable[[], float] = random.random,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.forge = forge
        self.repo = repo
        self.tokens = tokens
        self._auth = auth
        self.limiter = limiter
        self._clock = clock
        self._deadline = deadline
        self._max_bytes = max_bytes
        self._max_wait = max_wait
        self._jitter = jitter
        self._client = httpx.Client(
            base_url=api_url.rstrip("/") + "/",
            headers={"User-Agent": "langsmith-gitops-bridge", **(headers or {})},
            timeout=httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=False,
        )

    @property
    def name(self) -> str:
        return FORGE_NAMES.get(self.forge, self.forge)

    def close(self) -> None:
        self._client.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        write: bool = False,
        accept: tuple[int, ...] = (),
        idempotent: bool = True,
        bearer: Redacted | None = None,
        need: str | None = None,
    ) -> Reply:
        """Send one request with the rules of the module docstring.

        `write`: content-creating, so it takes a slot of the host's write budget.
        `bearer`: a token for this call only (a GitHub App's JWT). `need`: the
        permission to name when refused, if not the forge's usual one."""
        what = f"{method} {path.split('?')[0]}"
        refreshed = bearer is not None  # a JWT cannot be refreshed by the token source
        attempts = rate_waits = 0
        waited = 0.0
        last = ""
        while True:
            waited += self._wait_for_host(what, waited)
            attempts += 1
            try:
                reply = self._send_once(method, path, params, json, write, bearer, waited)
            except _Retry as e:
                last = e.why
                if attempts >= MAX_ATTEMPTS or (not idempotent and e.status != 0):
                    break
                delay = self._backoff(attempts)
                log.debug(
                    "%s %s on %s: %s; retry in %.1fs", self.name, what, self.repo, last, delay
                )
                self._clock.sleep(delay)
                waited += delay
                continue
            status = reply.status
            if status < 300 or status in accept:
                return reply
            if status == 401 and not refreshed and self.tokens is not None:
                refreshed = True
                if self.tokens.refresh():
                    continue
            wait = self._rate_limit_wait(reply, rate_waits)
            if wait is not None:
                rate_waits += 1
                self.limiter.block_for(wait)
                if rate_waits > MAX_RATE_WAITS:
                    raise self._rate_limited(what, wait, reply.status)
                continue
            raise self._refusal(what, reply, need)
        raise self._error(
            ForgeUnavailable,
            f"{self.name} {what} on {self.repo} failed after {attempts} attempt(s); last: {last}",
            hint="the forge is unreachable, overloaded or sent an answer that is not its "
            "API's; nothing more was changed and the next cycle tries again",
        )

    # --- one attempt -----------------------------------------------------------

    def _wait_for_host(self, what: str, waited: float) -> float:
        wait = self.limiter.wait_needed()
        if wait <= 0:
            return 0.0
        if waited + wait > self._max_wait:
            raise self._rate_limited(what, wait, None)
        self._clock.sleep(wait)
        return wait

    def _send_once(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        body: Any,
        write: bool,
        bearer: Redacted | None,
        waited: float,
    ) -> Reply:
        headers = {"Accept": "application/json"}
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer.reveal()}"
        elif self.tokens is not None:
            headers[self._auth.header] = self._auth.prefix + self.tokens.token().reveal()
        request = self._client.build_request(
            method, path, params=params, json=body, headers=headers
        )
        try:
            slot = self.limiter.write_slot(self._max_wait - waited) if write else nullcontext()
            with slot:
                return self._exchange(request)
        except OverBudget as e:
            raise self._rate_limited(f"{method} {path}", e.seconds, None) from None

    def _exchange(self, request: httpx.Request) -> Reply:
        started = time.monotonic()  # real time: it bounds real I/O
        try:
            response = self._client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            raise _Retry(f"cannot connect ({type(e).__name__})", status=0) from None
        except httpx.TransportError as e:
            raise _Retry(f"{type(e).__name__}") from None
        try:
            content = self._read_bounded(response, started)
        finally:
            response.close()
        self._record_quota(response.headers)
        status = response.status_code
        if status >= 500:
            raise _Retry(f"HTTP {status}{self._quote(content)}", status=status)
        if status == 204 or not content.strip():
            return Reply(status, None, response.headers)
        try:
            data = parse_json(
                content,
                source=f"{self.name} {request.method} {request.url.path}",
                max_bytes=self._max_bytes,
                max_depth=MAX_DEPTH,
            )
        except UntrustedInput as e:
            if status >= 400:
                return Reply(status, None, response.headers)
            raise self._error(ForgeAnswerInvalid, str(e), status=status) from None
        return Reply(status, data, response.headers)

    def _read_bounded(self, response: httpx.Response, started: float) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise self._too_large(response, int(declared))
        body = bytearray()
        try:
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > self._max_bytes:
                    raise self._too_large(response, len(body))
                if time.monotonic() - started > self._deadline:
                    raise self._error(
                        ForgeAnswerInvalid,
                        f"{self.name} {response.request.method} {response.request.url.path}: "
                        f"the answer took longer than {self._deadline:g}s",
                        hint="the forge or a proxy is sending very slowly; the next cycle "
                        "tries again",
                    )
        except httpx.TransportError as e:
            raise _Retry(f"{type(e).__name__} while reading the answer") from None
        return bytes(body)

    def _too_large(self, response: httpx.Response, size: int) -> ForgeError:
        return self._error(
            ForgeAnswerInvalid,
            f"{self.name} {response.request.method} {response.request.url.path}: the answer "
            f"is larger than {self._max_bytes} bytes ({size} seen); it is not read",
            status=response.status_code,
        )

    # --- rate limits ---------------------------------------------------------------

    def _record_quota(self, headers: httpx.Headers) -> None:
        def number(name: str) -> int | None:
            value = headers.get(f"x-{name}") or headers.get(name)
            return int(value) if value and value.isdigit() and len(value) < 16 else None

        reset = number("ratelimit-reset")
        self.limiter.record_quota(
            number("ratelimit-remaining"),
            number("ratelimit-limit"),
            float(reset) if reset is not None else None,
        )

    def _rate_limit_wait(self, reply: Reply, earlier: int) -> float | None:
        """Seconds to wait if this 403/429 is a rate limit, else None."""
        if reply.status not in (403, 429):
            return None
        headers = reply.headers
        retry_after = _retry_after(headers.get("retry-after"), self._clock.time())
        remaining = headers.get("x-ratelimit-remaining") or headers.get("ratelimit-remaining")
        reset = headers.get("x-ratelimit-reset") or headers.get("ratelimit-reset")
        message = _message(reply.data).lower()
        limited = (
            reply.status == 429
            or retry_after is not None
            or remaining == "0"
            or "rate limit" in message
        )
        if not limited:
            return None
        if retry_after is not None:
            wait = retry_after
        elif remaining == "0" and reset and reset.isdigit() and len(reset) < 16:
            wait = max(0.0, float(reset) - self._clock.time())
        else:
            wait = RATE_LIMIT_FLOOR * 2.0**earlier
        # Jitter spreads the replicas and targets that were told the same moment.
        return wait + min(wait, RATE_LIMIT_FLOOR) * 0.1 * self._jitter() + 1.0

    def _rate_limited(self, what: str, wait: float, status: int | None) -> ForgeRateLimited:
        return self._error(
            ForgeRateLimited,
            f"{self.name} {what} on {self.repo}: rate limited; the host is not asked "
            f"again for {wait:.0f}s",
            status=status,
            hint="the bridge keeps under the forge's limits and waits as told; if this "
            "repeats, other tools share the token's quota: give the bridge its own token",
            retry_after=wait,
        )

    def _backoff(self, attempt: int) -> float:
        base: float = min(BACKOFF_MAX, BACKOFF_BASE * 2.0 ** (attempt - 1))
        return base * (1 + 0.25 * self._jitter())

    # --- errors ----------------------------------------------------------------------

    def _refusal(self, what: str, reply: Reply, need: str | None) -> ForgeError:
        status = reply.status
        said = _message(reply.data)
        said = f": {said}" if said else ""
        needed = need or PERMISSIONS.get(self.forge, "write access")
        where = f"{self.name} {what} on {self.repo}"
        if status == 401:
            return self._error(
                ForgeRefused,
                f"{where}: the token was refused (HTTP 401{said})",
                status=status,
                hint=f"the token is invalid or expired; the bridge needs {needed}",
            )
        if status in (403, 404):
            seen = "forbidden" if status == 403 else "not found, or not visible to the token"
            return self._error(
                ForgeRefused,
                f"{where}: {seen} (HTTP {status}{said})",
                status=status,
                hint=f"check the repository name and the token's permissions: the bridge "
                f"needs {needed}; nothing was changed",
            )
        return self._error(
            ForgeRejected,
            f"{where}: HTTP {status}{said}",
            status=status,
            hint="the forge declined this request as it says",
        )

    def _error(self, cls: type[E], message: str, **kwargs: Any) -> E:
        token = self._current_token()
        hint = kwargs.pop("hint", None)
        return cls(
            scrub(message, token),
            forge=self.forge,
            repo=self.repo,
            hint=scrub(hint, token) if hint else None,
            **kwargs,
        )

    def _current_token(self) -> Redacted | None:
        # Never trades for a new token just to scrub a message: only a cached one.
        return self.tokens.cached() if self.tokens is not None else None

    def _quote(self, content: bytes) -> str:
        text = clean(content.decode("utf-8", "replace"), _SNIPPET).strip()
        return f" ({scrub(text, self._current_token())})" if text else ""


def _message(data: Any) -> str:
    """The forge's own explanation: GitHub/Gitea `message` (+ `errors[].message`),
    GitLab `message` (a string, list or object) or `error`; short, one line."""
    if not isinstance(data, dict):
        return ""
    parts: list[str] = []
    for key in ("message", "error"):
        value = data.get(key)
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):
            parts.extend(str(v) for v in value[:5] if isinstance(v, str | int | float))
        elif isinstance(value, dict):
            for field, said in list(value.items())[:5]:
                parts.append(f"{field} {said}")
    errors = data.get("errors")
    if isinstance(errors, list):
        for item in errors[:5]:
            if isinstance(item, dict) and isinstance(item.get("message"), str):
                parts.append(item["message"])
            elif isinstance(item, str):
                parts.append(item)
    return clean(" ".join(" ".join(parts).split()), _SNIPPET)


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date)."""
    if not value or len(value) > 64:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError):
            return None
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(seconds, 0.0)
