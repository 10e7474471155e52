"""The control plane client: paging, retries and error translation.

The only module of the bridge that imports httpx. It turns every httpx
exception and every unwelcome status into `bridge.errors` classes, so callers
see a complete listing or an exception, never a partial listing. Messages name
the method and URL (never the API key) and say what to do.

Retry budget, per logical request: 3 attempts. 5xx, 429, timeouts, connection
errors and unreadable bodies (not JSON, truncated, nested too deeply) are
retried with bounded exponential backoff and jitter (429 honours
`Retry-After`, at most 60 s). A listing that sees a record twice or a
malformed page envelope starts again from offset 0 once, because another
writer moved records between pages.

Bounds (README "Failure modes"), because the control plane's answers are
outside input: each request has a deadline from connect to its last byte
(`controlPlane.timeout`, see `deadlines.py`); the requests of one cycle (the
listing, then deletion confirmations) share a budget (`cycleTimeout`);
an answer is read while it streams in, up to `maxResponseMb`; a listing holds
at most `maxDeployments` records and no page more than the `limit` asked for.
A redirect is never followed: the key goes to `controlPlane.url` only. Over a
bound, the answer is refused (no retry, it would not shrink); the cycle
changes nothing.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from bridge.config import ControlPlaneSettings
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
    InvalidDeployment,
    ListenerNotFound,
)
from bridge.models import (
    Deployment,
    InvalidListener,
    Listener,
    deployment_identity,
    parse_deployment,
    parse_listener,
)
from bridge.redaction import Redacted, redact_url, scrub

log = logging.getLogger("bridge.controlplane")
E = TypeVar("E", bound=ControlPlaneError)

PAGE_SIZE = 100  # the API's maximum `limit`
MAX_ATTEMPTS = 3
BACKOFF_BASE = 0.5  # seconds before the 2nd attempt; doubles, plus up to 25 % jitter
BACKOFF_MAX = 8.0
RETRY_AFTER_CAP = 60.0
MAX_PAGES = 10_000  # of revisions (admin helper): beyond that the server is looping
_SNIPPET = 120  # characters of a response body quoted in an error


@dataclass(frozen=True)
class Listing:
    """A complete listing of one listener's deployments (never a partial one)."""

    listener: Listener
    deployments: tuple[Deployment, ...]
    invalid: tuple[InvalidDeployment, ...]


class _Inconsistent(Exception):
    """A page contradicts the pages before it; the listing restarts once."""


@dataclass(frozen=True)
class _Reply:
    status: int
    url: str  # without credentials
    data: Any  # decoded JSON of a 2xx answer with a body, else None
    detail: str  # the server's `detail` for a 4xx, else ""
    suspect_text: bool = False  # the body may hold a string UTF-8 cannot encode


@dataclass(frozen=True)
class _Failed:
    """One attempt that did not get an answer to use; retried while attempts last."""

    last: str  # what went wrong, as the final error quotes it
    retry_after: float | None = None
    retry_safe: bool = False  # may a request that is not idempotent be sent again?


NO_LISTENER = "00000000-0000-0000-0000-000000000000"


def deployment_request(
    name: str, listener_id: str, namespace: str, image: str, **extra: Any
) -> dict[str, Any]:
    """A `DeploymentCreateRequest` body for a hybrid/self-hosted (external_docker) deployment."""
    body: dict[str, Any] = {
        "name": name,
        "source": "external_docker",
        "source_config": {
            "listener_id": listener_id,
            "listener_config": {"k8s_namespace": namespace},
            "resource_spec": extra.pop("resource_spec", None),
        },
        "source_revision_config": {"image_uri": image},
        "secrets": extra.pop("secrets", []),
    }
    body.update(extra)
    return body


class ControlPlaneClient:
    """One keep-alive connection pool to the control plane, with the retry rules above."""

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
        self._pager: ThreadPoolExecutor | None = None
        self._limits = limits or Limits()
        self._deadlines = Deadlines()
        install(http, self._deadlines)
        # The clock is injected so that tests of the budget need no real time.
        self._budget = Budget(self._limits.cycle_timeout, clock)

    @classmethod
    def admin(cls, url: str, api_key: str, *, timeout: float = 10.0) -> ControlPlaneClient:
        """A client for the admin helpers (demo, tests): creates listeners and deployments,
        lists nothing of its own."""
        return cls.from_settings(
            ControlPlaneSettings(
                url=url,
                api_key_env="LANGSMITH_API_KEY",
                api_key=Redacted(api_key),
                listener_id=NO_LISTENER,
                timeout=timeout,
            )
        )

    @classmethod
    def from_settings(
        cls,
        settings: ControlPlaneSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        on_response: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> ControlPlaneClient:
        headers = {"X-Api-Key": settings.api_key.reveal(), "Accept": "application/json"}
        if settings.tenant_id:
            headers["X-Tenant-Id"] = settings.tenant_id
        http = httpx.Client(
            # httpx joins "/v2/..." onto the base path, so ".../api-host" keeps its prefix.
            base_url=settings.url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(settings.timeout),
            transport=transport,
            # Never: a redirect would take the key elsewhere (an error names it).
            follow_redirects=False,
        )
        return cls(
            http,
            api_key=settings.api_key,
            api_key_env=settings.api_key_env,
            listener_id=settings.listener_id,
            on_response=on_response,
            sleep=sleep,
            limits=Limits.of(settings),
            clock=clock,
        )

    def close(self) -> None:
        if self._pager is not None:
            self._pager.shutdown(wait=True)
            self._pager = None
        self._http.close()

    def __enter__(self) -> ControlPlaneClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ControlPlaneClient({redact_url(str(self._http.base_url))!r})"

    # --- the listener's view ------------------------------------------------

    def list_listener_deployments(self) -> Listing:
        """The listener and every deployment assigned to it, or an exception.
        Starts a cycle: this listing and the `confirm_gone` calls after it share
        the budget of `controlPlane.cycleTimeout`."""
        self._budget.start()
        listener = self._read_listener()
        try:
            return self._list_once(listener)
        except _Inconsistent as first:
            log.warning("deployment listing restarts from offset 0: %s", first)
        try:
            return self._list_once(listener)
        except _Inconsistent as second:
            raise self._error(
                ControlPlaneError,
                f"the deployment listing changed while paging, twice in a row ({second})",
                hint="another writer is moving deployments or the control plane sends "
                "malformed pages; this cycle changed nothing, the next poll lists again",
            ) from None

    def _read_listener(self) -> Listener:
        path = f"/v2/listeners/{self._listener_id}"
        reply = self._call("GET", path)
        if reply.status == 404:
            raise self._error(
                ListenerNotFound,
                f"listener {self._listener_id} does not exist (GET {reply.url}: HTTP 404"
                + (f": {reply.detail}" if reply.detail else "")
                + ")",
                hint="check controlPlane.listenerId (BRIDGE_CONTROL_PLANE_LISTENER_ID) and "
                "controlPlane.url; `GET /v2/listeners` shows the listeners of the workspace",
            )
        self._refuse_4xx("GET", reply)
        try:
            return parse_listener(reply.data)
        except InvalidListener as e:
            raise self._error(
                ControlPlaneError,
                f"GET {reply.url}: listener {self._listener_id} cannot be used: {e}",
                hint="fix the listener in LangSmith. Its compute_id names the cluster folder "
                "(<path>/<compute_id>/<namespace>/) of every target: one folder name, without "
                "'/', '\\', '..', control characters or `.git`. This cycle changed nothing",
            ) from None
        except ValueError as e:
            raise self._error(
                ControlPlaneError,
                f"GET {reply.url}: the answer is not a listener: {e}",
                hint="check that controlPlane.url points at the LangSmith control plane "
                "(self-hosted: https://<host>/api-host)",
            ) from None

    def _list_once(self, listener: Listener) -> Listing:
        seen: set[str] = set()
        deployments: list[Deployment] = []
        invalid: list[InvalidDeployment] = []
        offset = records = 0
        pending: Future[_Reply] | None = self._page(offset)
        try:
            while True:
                assert pending is not None
                reply, pending = pending.result(), None
                self._refuse_4xx("GET", reply)
                resources, next_offset = _envelope(reply.data, offset, reply.url)
                records += len(resources)
                self._refuse_page(reply.url, len(resources), records)
                if len(resources) == PAGE_SIZE:
                    # The next page (at the offset this one names, as before)
                    # downloads while this one is parsed: the same requests in
                    # the same order, with the server's time and ours overlapped.
                    pending = self._page(next_offset)
                for raw in resources:
                    self._take(raw, listener, reply, seen, deployments, invalid)
                if len(resources) < PAGE_SIZE:
                    return Listing(listener, tuple(deployments), tuple(invalid))
                offset = next_offset
        finally:
            if pending is not None:
                # This listing failed; the page it asked for is not used, but
                # no request is left running on the client.
                wait([pending])

    def _refuse_page(self, url: str, size: int, records: int) -> None:
        """A page larger than asked, or a listing past `maxDeployments`: no listing.
        Each full page adds exactly PAGE_SIZE records, so paging ends."""
        if size > PAGE_SIZE:
            raise self._error(
                ControlPlaneError,
                f"GET {url}: the page has {size} records, more than the limit={PAGE_SIZE} "
                "asked for; refused",
                hint="the control plane (or a proxy in between) does not honour `limit`; "
                "this cycle changed nothing. Report it to the control plane's operator",
            )
        if records > self._limits.max_records:
            raise self._error(
                ControlPlaneError,
                f"GET {url}: the listing has more than {self._limits.max_records:,} deployment "
                "records (controlPlane.maxDeployments, every listener's counted); refused",
                hint="if the workspace really holds that many deployments, raise "
                "controlPlane.maxDeployments; else the control plane keeps paging without end. "
                "This cycle changed nothing",
            )

    def _page(self, offset: int) -> Future[_Reply]:
        """GET one page of deployments in the client's one background thread."""
        if self._pager is None:
            self._pager = ThreadPoolExecutor(max_workers=1, thread_name_prefix="page")
        params = {"limit": PAGE_SIZE, "offset": offset}
        return self._pager.submit(self._call, "GET", "/v2/deployments", params)

    def _take(
        self,
        raw: Any,
        listener: Listener,
        reply: _Reply,
        seen: set[str],
        deployments: list[Deployment],
        invalid: list[InvalidDeployment],
    ) -> None:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("id"), str):
            # Without an id nothing can be told about the record: which listener
            # owns it, or whether it is one we must keep. No listing beats a wrong one.
            raise self._error(
                ControlPlaneError,
                f"GET {reply.url}: a deployment record has no string `id` ({_record(raw)})",
                hint="the control plane sent a malformed page; this cycle changed nothing",
            )
        # The id as sent tells records apart; the escaped one is for messages.
        raw_id: str = raw["id"]
        dep_id, name = deployment_identity(raw)
        if raw_id in seen:
            raise _Inconsistent(f"deployment {name!r} ({dep_id}) appeared on two pages")
        seen.add(raw_id)
        claim = _claims(raw, listener.id)
        if claim is False:
            return
        if claim is None:
            invalid.append(
                InvalidDeployment(
                    "its `source` or `source_config.listener_id` is malformed, so it cannot "
                    f"be told whether it belongs to listener {listener.id}",
                    deployment_id=dep_id,
                    deployment_name=name,
                    hint="fix the deployment in the control plane; until then its folder is kept",
                )
            )
            return
        try:
            deployments.append(parse_deployment(raw, check_text=reply.suspect_text))
        except InvalidDeployment as e:
            invalid.append(e)
        except (TypeError, ValueError) as e:
            invalid.append(
                InvalidDeployment(
                    f"cannot be parsed: {e}",
                    deployment_id=dep_id,
                    deployment_name=name,
                    hint="the control plane sent a malformed deployment; it is skipped until fixed",
                )
            )

    def confirm_gone(self, deployment_ids: Iterable[str]) -> set[str]:
        """Of deployments missing from a listing, those the control plane confirms
        are no longer this listener's: 404, AWAITING_DELETE, or owned elsewhere.

        Offset paging can skip a record without any sign (another writer deletes
        an earlier record between two pages), so a folder is never deleted on a
        listing's word alone. Raises ControlPlaneError when it cannot tell.
        """
        gone: set[str] = set()
        for dep_id in deployment_ids:
            try:
                uuid.UUID(dep_id)
            except ValueError:
                gone.add(dep_id)  # no control plane deployment has such an id
                continue
            reply = self._call("GET", f"/v2/deployments/{quote(dep_id, safe='')}")
            if reply.status == 404:
                gone.add(dep_id)
                continue
            self._refuse_4xx("GET", reply)
            raw = reply.data
            # A 200 that is not this very deployment (an empty page, another record)
            # proves nothing: for a target with one or two deployments this answer
            # is the only thing between a misbehaving control plane and a deletion.
            answered = raw.get("id") if isinstance(raw, Mapping) else None
            if not isinstance(answered, str) or answered.lower() != dep_id.lower():
                raise self._error(
                    ControlPlaneError,
                    f"GET {reply.url}: the answer is not deployment {dep_id}",
                    hint="the control plane sends malformed answers; nothing is deleted this cycle",
                )
            assert isinstance(raw, Mapping)
            if raw.get("status") == "AWAITING_DELETE" or _claims(raw, self._listener_id) is False:
                gone.add(dep_id)
        return gone

    # --- admin helpers (demo, tests, scripts) -------------------------------

    def create_listener(self, compute_id: str, namespaces: list[str]) -> dict[str, Any]:
        body = {
            "compute_type": "k8s",
            "compute_id": compute_id,
            "compute_config": {"k8s_namespaces": list(namespaces)},
        }
        return self._admin("POST", "/v2/listeners", body=body)

    def get_listener(self, listener_id: str) -> dict[str, Any]:
        return self._admin("GET", f"/v2/listeners/{listener_id}")

    def create_deployment(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._admin("POST", "/v2/deployments", body=body)

    def get_deployment(self, deployment_id: str) -> dict[str, Any]:
        return self._admin("GET", f"/v2/deployments/{deployment_id}")

    def patch_deployment(self, deployment_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._admin("PATCH", f"/v2/deployments/{deployment_id}", body=body)

    def delete_deployment(self, deployment_id: str) -> None:
        self._admin("DELETE", f"/v2/deployments/{deployment_id}", want_body=False)

    def redeploy(self, deployment_id: str, revision_id: str) -> dict[str, Any]:
        """A new revision with the config of an earlier one (a rollback)."""
        return self._admin(
            "POST", f"/v2/deployments/{deployment_id}/revisions/{revision_id}/redeploy"
        )

    def list_revisions(self, deployment_id: str) -> list[dict[str, Any]]:
        """Every revision of a deployment, newest first."""
        revisions: list[dict[str, Any]] = []
        offset = 0
        for _ in range(MAX_PAGES):
            page = self._admin(
                "GET",
                f"/v2/deployments/{deployment_id}/revisions",
                params={"limit": PAGE_SIZE, "offset": offset},
            )
            resources = page.get("resources")
            if not isinstance(resources, list) or not all(isinstance(r, dict) for r in resources):
                raise self._error(
                    ControlPlaneError,
                    f"GET /v2/deployments/{deployment_id}/revisions: `resources` is not a "
                    "list of objects",
                )
            revisions.extend(resources)
            if len(resources) < PAGE_SIZE:
                break
            offset += len(resources)
        return revisions

    def _admin(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        want_body: bool = True,
    ) -> dict[str, Any]:
        reply = self._call(method, path, params, body=body, want_json=want_body)
        if reply.status >= 400:
            raise self._error(
                ControlPlaneError,
                f"{method} {reply.url}: HTTP {reply.status}"
                + (f": {reply.detail}" if reply.detail else ""),
                hint="the control plane rejected the request; fix it as the detail says",
            )
        if not want_body:
            return {}
        if not isinstance(reply.data, dict):
            raise self._error(
                ControlPlaneError, f"{method} {reply.url}: the answer is not a JSON object"
            )
        return reply.data

    # --- one logical request, with retries ------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        body: dict[str, Any] | None = None,
        want_json: bool = True,
    ) -> _Reply:
        """Send with retries. Returns any answer below 500 (but 429); 401/403 raise."""
        request = self._http.build_request(method, path, params=params, json=body)
        url = redact_url(str(request.url))
        started = self._budget.clock()
        try:
            return self._attempts(method, url, request, want_json, started)
        finally:
            self._budget.spend(self._budget.clock() - started)

    def _attempts(
        self, method: str, url: str, request: httpx.Request, want_json: bool, started: float
    ) -> _Reply:
        # A POST that may have reached the server is not repeated: it could create twice.
        idempotent = method != "POST"
        failed = _Failed("")
        for attempt in range(1, MAX_ATTEMPTS + 1):
            limit = self._time_for(method, url, started, attempt - 1, failed.last)
            answer = self._exchange(method, url, request, want_json, limit)
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
        self, method: str, url: str, request: httpx.Request, want_json: bool, limit: float
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
                return self._answer(method, url, response, want_json, limit)
            finally:
                response.close()
        finally:
            self._deadlines.set(None)

    def _answer(
        self, method: str, url: str, response: httpx.Response, want_json: bool, limit: float
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
        try:
            data = _decode(response, content)
        except ValueError as e:
            # Garbage gets the 5xx budget: a proxy page or a cut-off body
            # may be transient, a storm of retries never helps.
            return _Failed(f"HTTP {status} with {e}")
        return _Reply(status, url, data, "", suspect_text=may_hold_surrogates(content))

    # --- bounds ---------------------------------------------------------------------

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


def _claims(raw: Mapping[str, Any], listener_id: str) -> bool | None:
    """Whether a raw record is this listener's: True, False, or None (cannot tell)."""
    config = raw.get("source_config")
    if config is None:
        owner: Any = None
    elif isinstance(config, Mapping):
        owner = config.get("listener_id")
    else:
        return None
    if owner is not None and not isinstance(owner, str):
        return None
    if owner is None or owner.lower() != listener_id.lower():
        return False
    source = raw.get("source")
    if source == "external_docker":
        return True
    return False if isinstance(source, str) else None


def _envelope(data: Any, offset: int, url: str) -> tuple[list[Any], int]:
    """`resources` and the next offset of a page, or _Inconsistent."""
    if not isinstance(data, Mapping):
        raise _Inconsistent(f"GET {url}: the page is not a JSON object")
    resources = data.get("resources")
    if not isinstance(resources, list):
        raise _Inconsistent(f"GET {url}: `resources` is not a list")
    next_offset = data.get("offset")
    if not isinstance(next_offset, int) or isinstance(next_offset, bool):
        raise _Inconsistent(f"GET {url}: `offset` is not an integer")
    # `offset` is where the next page starts: never before this one, and past
    # it when the page is full (else paging would never end).
    if next_offset < offset or (len(resources) >= PAGE_SIZE and next_offset <= offset):
        raise _Inconsistent(
            f"GET {url}: the page at offset {offset} says the next one starts at {next_offset}"
        )
    return resources, next_offset


def _decode(response: httpx.Response, content: bytes | bytearray) -> Any:
    """JSON of an answer, or ValueError. Depth-safe without a walk over the
    result: the C parser raises RecursionError past Python's recursion limit
    (~1,000 levels), caught here; shallower nesting inside a record is checked
    where it is used (models.freeze), and the hot path pays nothing for it."""
    if not content.strip():
        raise ValueError("an empty body where JSON was expected")
    try:
        return json.loads(content)
    except RecursionError:
        raise ValueError("JSON nested too deeply to parse") from None
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


def _record(raw: Any) -> str:
    """A short quote of a malformed record for an error (never the whole of it)."""
    try:
        text = json.dumps(raw, default=str)
    except (ValueError, RecursionError):
        return "a record nested too deeply to quote"
    return _snippet(text)


def _snippet(value: str | bytes | bytearray, limit: int = _SNIPPET) -> str:
    text = value if isinstance(value, str) else value.decode("utf-8", "replace")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
