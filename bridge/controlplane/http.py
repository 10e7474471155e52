"""One logical request to the control plane: retries, deadlines, byte caps and
error translation (the rules in bridge.controlplane.client's docstring).

The only place where the bridge's control-plane requests meet httpx: every
httpx exception and unwelcome status becomes a `bridge.errors` class here,
scrubbed of the API key, naming the method and URL and what to do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from bridge.controlplane.bounds import (
    ERROR_BODY,
    Budget,
    Limits,
    TooLarge,
    may_hold_surrogates,
    read_capped,
    redirect_target,
)
from bridge.controlplane.deadlines import Deadlines, install
from bridge.errors import (
    AuthRefused,
    ControlPlaneError,
    ControlPlaneUnavailable,
)
from bridge.redaction import Redacted, redact_url, scrub

log = logging.getLogger("bridge.controlplane")

E = TypeVar("E", bound=ControlPlaneError)

MAX_ATTEMPTS = 3

BACKOFF_BASE = 0.5  # seconds before the 2nd attempt; doubles, plus up to 25 % jitter

BACKOFF_MAX = 8.0

RETRY_AFTER_CAP = 60.0

_SNIPPET = 120  # characters of a response body quoted in an error


@dataclass(frozen=True)
class _Reply:
    status: int
    url: str  # without credentials
    data: Any  # decoded JSON of a 2xx answer with a body, else None
    detail: str  # the server's `detail` for a 4xx, else ""
    suspect_text: bool = False  # the body may hold a string UTF-8 cannot encode
    # A digest of the body, when the caller asked (`known`); `data` is then None
    # if the caller already knows what this body says (not decoded at all).
    body_key: bytes | None = None
    # With `hold`: the body's bytes, not decoded (`data` is None). Pages read
    # ahead wait as bytes, not as parsed JSON, which can be ~50 times larger
    # (see controlPlane.maxResponseMb); the caller decodes them in turn.
    body: bytes | bytearray | None = None


@dataclass(frozen=True)
class _Failed:
    """One attempt that did not get an answer to use; retried while attempts last."""

    last: str  # what went wrong, as the final error quotes it
    retry_after: float | None = None
    retry_safe: bool = False  # may a request that is not idempotent be sent again?


class Requests:
    """An httpx client to the control plane with the retry and bound rules; the
    base of the listener's client and the admin client."""

    def __init__(
        self,
        http: httpx.Client,
        *,
        api_key: Redacted,
        api_key_env: str,
        listener_id: str,
        on_response: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._api_key = api_key
        self._api_key_env = api_key_env
        self._listener_id = listener_id
        self._on_response = on_response
        self._sleep = sleep
        self._jitter = jitter
        self._limits = limits or Limits()
        self._deadlines = Deadlines()
        install(http, self._deadlines)
        # The clock is injected so that tests of the budget need no real time.
        self._budget = Budget(self._limits.cycle_timeout, clock)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact_url(str(self._http.base_url))!r})"

    def _call(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        body: dict[str, Any] | None = None,
        want_json: bool = True,
        known: Callable[[bytes], bool] | None = None,
        hold: bool = False,
    ) -> _Reply:
        """Send with retries. Returns any answer below 500 (but 429); 401/403 raise.
        `hold`: a 2xx body is handed back as bytes (`body`), not decoded; the
        caller decodes it, and asks again without `hold` if it does not."""
        request = self._http.build_request(method, path, params=params, json=body)
        url = redact_url(str(request.url))
        started = self._budget.clock()
        try:
            return self._attempts(method, url, request, want_json, started, known, hold)
        finally:
            self._budget.spend(self._budget.clock() - started)

    def _attempts(
        self,
        method: str,
        url: str,
        request: httpx.Request,
        want_json: bool,
        started: float,
        known: Callable[[bytes], bool] | None = None,
        hold: bool = False,
    ) -> _Reply:
        # A POST that may have reached the server is not repeated: it could create twice.
        idempotent = method != "POST"
        failed = _Failed("")
        for attempt in range(1, MAX_ATTEMPTS + 1):
            limit = self._time_for(method, url, started, attempt - 1, failed.last)
            answer = self._exchange(method, url, request, want_json, limit, known, hold)
            if isinstance(answer, _Reply):
                return answer
            failed = answer
            if not idempotent and not failed.retry_safe:
                break
            if attempt < MAX_ATTEMPTS:
                delay = self._backoff(attempt)
                if failed.retry_after is not None:
                    delay = failed.retry_after
                left = self._budget.left(started)
                if left is not None and left <= delay:
                    raise self._out_of_time(method, url, attempt, failed.last)
                # Debug only: the cycle logs the final error once (running.run_loop),
                # so a retry storm is never a log storm.
                log.debug(
                    "%s %s: %s; retry %d of %d in %.1fs",
                    method,
                    url,
                    failed.last,
                    attempt,
                    MAX_ATTEMPTS - 1,
                    delay,
                )
                self._sleep(delay)
        raise self._error(
            ControlPlaneUnavailable,
            f"{method} {url} failed after {attempt} attempt(s); last: {failed.last}",
            hint="the control plane is unreachable, overloaded or sending garbage; this "
            "cycle changed nothing and the next poll tries again. Check controlPlane.url, "
            "the network or proxy in between, and the control plane's health"
            + (
                f"; it asked us to wait {failed.retry_after:g}s"
                if failed.retry_after is not None
                else ""
            ),
            retry_after=failed.retry_after,
        )

    def _exchange(
        self,
        method: str,
        url: str,
        request: httpx.Request,
        want_json: bool,
        limit: float,
        known: Callable[[bytes], bool] | None = None,
        hold: bool = False,
    ) -> _Reply | _Failed:
        """One attempt within `limit` seconds, connect to last byte: an answer to
        use, a failure to retry, or an exception that ends the request."""
        self._deadlines.set(time.monotonic() + limit)
        try:
            try:
                response = self._http.send(request, stream=True)
            except (httpx.UnsupportedProtocol, httpx.ProxyError) as e:
                self._report("error")
                raise self._error(
                    ControlPlaneError,
                    f"{method} {url}: {type(e).__name__}: {e}",
                    hint="check controlPlane.url (https://api.host.langchain.com, the EU "
                    "host, or https://<host>/api-host)",
                ) from None
            except httpx.TransportError as e:
                self._report("error")
                connect = isinstance(e, httpx.ConnectError | httpx.ConnectTimeout)
                return _Failed(self._describe_failure(e, limit), retry_safe=connect)
            try:
                return self._answer(method, url, response, want_json, limit, known, hold)
            finally:
                response.close()
        finally:
            self._deadlines.set(None)

    def _answer(
        self,
        method: str,
        url: str,
        response: httpx.Response,
        want_json: bool,
        limit: float,
        known: Callable[[bytes], bool] | None = None,
        hold: bool = False,
    ) -> _Reply | _Failed:
        status = response.status_code
        if 300 <= status < 400:
            self._report(str(status))
            raise self._redirected(method, url, response)
        cap = self._limits.max_response_bytes if status < 400 else ERROR_BODY
        try:
            content = read_capped(response, cap, self._deadlines, whole=status < 400)
        except TooLarge:
            self._report("error")
            raise self._too_large(method, url) from None
        except httpx.TransportError as e:
            self._report("error")
            return _Failed(self._describe_failure(e, limit))
        except httpx.DecodingError as e:  # a Content-Encoding that does not decode
            self._report("error")
            return _Failed(f"HTTP {status} with a body that does not decode ({e})")
        self._report(str(status))
        if status == 429 or status >= 500:
            last = f"HTTP {status}" + self._quote(content)
            retry_after = _retry_after(response.headers.get("retry-after"))
            # A 429 or 503 was not acted on: even a POST may go again.
            return _Failed(
                last, retry_after if status == 429 else None, retry_safe=status in (429, 503)
            )
        if status in (401, 403):
            raise self._auth_refused(method, url, status, _detail(content))
        if status >= 400:
            return _Reply(status, url, None, _detail(content))
        if not want_json or status == 204:
            return _Reply(status, url, None, "")
        key = None
        if known is not None:
            # Bytes the caller has read before need no decoding: it kept what
            # they said (an unchanged page of the listing, ~100 records).
            key = hashlib.blake2b(content, digest_size=32).digest()
            if known(key):
                return _Reply(status, url, None, "", body_key=key)
        suspect = may_hold_surrogates(content)
        if hold:
            return _Reply(status, url, None, "", suspect_text=suspect, body_key=key, body=content)
        try:
            data = _decode(response, content)
        except ValueError as e:
            # Garbage gets the 5xx budget: a proxy page or a cut-off body
            # may be transient, a storm of retries never helps.
            return _Failed(f"HTTP {status} with {e}")
        return _Reply(status, url, data, "", suspect_text=suspect, body_key=key)

    def _time_for(self, method: str, url: str, started: float, attempts: int, last: str) -> float:
        """The deadline of the next attempt: `timeout`, cut to the cycle's budget."""
        left = self._budget.left(started)
        if left is None:
            return self._limits.timeout
        if left <= 0:
            raise self._out_of_time(method, url, attempts, last)
        return min(self._limits.timeout, left)

    def _out_of_time(self, method: str, url: str, attempts: int, last: str) -> ControlPlaneError:
        return self._error(
            ControlPlaneUnavailable,
            f"{method} {url}: this cycle's requests to the control plane ran past "
            f"controlPlane.cycleTimeout ({self._limits.cycle_timeout:g}s) "
            + (f"after {attempts} attempt(s)" if attempts else "before it was sent")
            + (f"; last: {last}" if last else ""),
            hint="the control plane answers slowly or trickles its answers; this cycle changed "
            "nothing (no deletion either) and the next poll tries again. If listings this "
            "large honestly need longer, raise controlPlane.cycleTimeout",
        )

    def _too_large(self, method: str, url: str) -> ControlPlaneError:
        mib = self._limits.max_response_bytes >> 20
        return self._error(
            ControlPlaneError,
            f"{method} {url}: the answer is more than {mib} MiB "
            "(controlPlane.maxResponseMb); refused, not read further",
            hint="a page of 100 deployments is far smaller; if yours are that large, raise "
            "controlPlane.maxResponseMb, else check what is between the bridge and the "
            "control plane (a proxy?). This cycle changed nothing",
        )

    def _redirected(self, method: str, url: str, response: httpx.Response) -> ControlPlaneError:
        where = redirect_target(str(response.request.url), response.headers.get("location"))
        return self._error(
            ControlPlaneError,
            f"{method} {url}: the control plane answered HTTP {response.status_code}, a "
            f"redirect to {where}; not followed: the API key goes to controlPlane.url only",
            hint="set controlPlane.url to the address that serves the API itself "
            "(https://api.host.langchain.com, the EU host, or https://<host>/api-host; "
            "https, not http). If the redirect points somewhere you do not know, find out "
            "why before you change anything. This cycle changed nothing",
        )

    def _describe_failure(self, e: httpx.TransportError, limit: float) -> str:
        kind = _describe_transport(e)
        if not isinstance(e, httpx.TimeoutException):
            return kind
        cut = (
            ", cut to what was left of controlPlane.cycleTimeout"
            if limit < self._limits.timeout
            else ""
        )
        return (
            f"{kind.split(' (')[0]}: no complete answer within {round(limit, 2):g}s, the request's "
            f"deadline from connect to last byte (controlPlane.timeout{cut})"
        )

    def _backoff(self, attempt: int) -> float:
        base: float = min(BACKOFF_MAX, BACKOFF_BASE * 2.0 ** (attempt - 1))
        return base * (1 + 0.25 * self._jitter())

    def _report(self, label: str) -> None:
        if self._on_response is not None:
            self._on_response(label)

    def _quote(self, content: bytes | bytearray) -> str:
        text = content.decode("utf-8", "replace").strip()
        return f" ({_snippet(scrub(text, self._api_key))})" if text else ""

    def _auth_refused(self, method: str, url: str, status: int, detail: str) -> AuthRefused:
        said = f": {detail}" if detail else ""
        if status == 401:
            return self._error(
                AuthRefused,
                f"{method} {url}: the control plane refused the API key (HTTP 401{said})",
                hint=f"put a valid LangSmith API key (PAT or service key) for this control "
                f"plane in the environment variable ${self._api_key_env}",
            )
        if "requires workspace specification" in detail.lower():
            hint = (
                f"the key in ${self._api_key_env} is organization-scoped: set "
                "controlPlane.tenantId (BRIDGE_CONTROL_PLANE_TENANT_ID) to the workspace id "
                "so the bridge sends X-Tenant-Id"
            )
        else:
            hint = (
                f"the key in ${self._api_key_env} may not read this workspace's listeners "
                "and deployments; check its permissions and that controlPlane.tenantId "
                "(sent as X-Tenant-Id) names the right workspace"
            )
        return self._error(
            AuthRefused,
            f"{method} {url}: the control plane refused access (HTTP 403{said})",
            hint=hint,
        )

    def _refuse_4xx(self, method: str, reply: _Reply) -> None:
        if reply.status >= 400:
            raise self._error(
                ControlPlaneError,
                f"{method} {reply.url}: HTTP {reply.status}"
                + (f": {reply.detail}" if reply.detail else ""),
                hint="the control plane rejected the bridge's request; check controlPlane.url "
                "and controlPlane.listenerId",
            )

    def _error(self, cls: type[E], message: str, *, hint: str | None = None, **kwargs: Any) -> E:
        # Scrubbed once here, so no message can carry the key whatever it quotes.
        return cls(
            scrub(message, self._api_key),
            hint=scrub(hint, self._api_key) if hint else None,
            **kwargs,
        )


def decode_json(content: bytes | bytearray) -> Any:
    """JSON of a body, or ValueError (RecursionError and decode errors included)."""
    if not content.strip():
        raise ValueError("an empty body where JSON was expected")
    try:
        return json.loads(content)
    except RecursionError:
        raise ValueError("JSON nested too deeply to parse") from None


def _decode(response: httpx.Response, content: bytes | bytearray) -> Any:
    """JSON of an answer, or ValueError. Depth-safe without a walk over the
    result: the C parser raises RecursionError past Python's recursion limit
    (~1,000 levels), caught here; shallower nesting inside a record is checked
    where it is used (models.freeze), and the hot path pays nothing for it."""
    try:
        return decode_json(content)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        kind = response.headers.get("content-type", "no content type")
        if kind.startswith("application/json"):
            raise ValueError(f"JSON that does not parse, probably truncated ({e})") from None
        raise ValueError(f"a body that is not JSON ({kind}: {_snippet(content)!r})") from None


def _detail(content: bytes | bytearray) -> str:
    """The server's `detail` (a string, or FastAPI's 422 list), short and on one line."""
    try:
        data = json.loads(content)
    except (ValueError, RecursionError):
        return _snippet(content.decode("utf-8", "replace"))
    detail = data.get("detail") if isinstance(data, dict) else data
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", []))
                parts.append(f"{loc}: {item.get('msg', '')}")
            else:
                parts.append(str(item))
        return _snippet("; ".join(parts), 400)
    return _snippet(str(detail), 400)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or HTTP date), capped at 60."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def _describe_transport(e: httpx.TransportError) -> str:
    kinds = {
        httpx.ConnectTimeout: "connect timeout",
        httpx.ReadTimeout: "read timeout",
        httpx.WriteTimeout: "write timeout",
        httpx.PoolTimeout: "pool timeout",
        httpx.ConnectError: "cannot connect",
        httpx.RemoteProtocolError: "connection closed without a complete answer",
        httpx.ReadError: "connection reset",
    }
    kind = next((k for t, k in kinds.items() if isinstance(e, t)), type(e).__name__)
    return f"{kind} ({e})" if str(e) else kind


def _snippet(value: str | bytes | bytearray, limit: int = _SNIPPET) -> str:
    text = value if isinstance(value, str) else value.decode("utf-8", "replace")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
