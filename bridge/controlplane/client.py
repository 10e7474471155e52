"""The control plane client: paging, retries and error translation.

The only module of the bridge that imports httpx. It turns every httpx
exception and every unwelcome status into `bridge.errors` classes, so callers
see a complete listing or an exception, never a partial listing. Messages name
the method and URL (never the API key) and say what to do.

Retry budget, per logical request: 3 attempts. 5xx, 429, timeouts, connection
errors and unreadable bodies (not JSON, truncated) are retried with bounded
exponential backoff and jitter (429 honours `Retry-After`, at most 60 s).
A listing that sees a record twice or a malformed page envelope starts again
from offset 0 once, because another writer moved records between pages.
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
from bridge.errors import (
    AuthRefused,
    ControlPlaneError,
    ControlPlaneUnavailable,
    InvalidDeployment,
    ListenerNotFound,
)
from bridge.models import (
    Deployment,
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
MAX_PAGES = 10_000  # a million deployments: beyond that the server is looping
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
    ) -> None:
        self._http = http
        self._api_key = api_key
        self._api_key_env = api_key_env
        self._listener_id = listener_id
        self._on_response = on_response
        self._sleep = sleep
        self._jitter = jitter
        self._pager: ThreadPoolExecutor | None = None

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
            follow_redirects=False,
        )
        return cls(
            http,
            api_key=settings.api_key,
            api_key_env=settings.api_key_env,
            listener_id=settings.listener_id,
            on_response=on_response,
            sleep=sleep,
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
        """The listener and every deployment assigned to it, or an exception."""
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
        offset = 0
        pending: Future[_Reply] | None = self._page(offset)
        try:
            for _ in range(MAX_PAGES):
                assert pending is not None
                reply, pending = pending.result(), None
                self._refuse_4xx("GET", reply)
                resources, next_offset = _envelope(reply.data, offset, reply.url)
                if len(resources) >= PAGE_SIZE:
                    # The next page (at the offset this one names, as before)
                    # downloads while this one is parsed: the same requests in
                    # the same order, with the server's time and ours overlapped.
                    pending = self._page(next_offset)
                for raw in resources:
                    self._take(raw, listener, reply.url, seen, deployments, invalid)
                if len(resources) < PAGE_SIZE:
                    return Listing(listener, tuple(deployments), tuple(invalid))
                offset = next_offset
        finally:
            if pending is not None:
                # This listing failed; the page it asked for is not used, but
                # no request is left running on the client.
                wait([pending])
        raise self._error(
            ControlPlaneError,
            f"GET /v2/deployments returned full pages past offset {offset}",
            hint="the control plane keeps paging without end; report this to its operator",
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
        url: str,
        seen: set[str],
        deployments: list[Deployment],
        invalid: list[InvalidDeployment],
    ) -> None:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("id"), str):
            # Without an id nothing can be told about the record: which listener
            # owns it, or whether it is one we must keep. No listing beats a wrong one.
            raise self._error(
                ControlPlaneError,
                f"GET {url}: a deployment record has no string `id` "
                f"({_snippet(json.dumps(raw, default=str))})",
                hint="the control plane sent a malformed page; this cycle changed nothing",
            )
        dep_id, name = deployment_identity(raw)
        if dep_id in seen:
            raise _Inconsistent(f"deployment {name!r} ({dep_id}) appeared on two pages")
        seen.add(dep_id)
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
            deployments.append(parse_deployment(raw))
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
        # A POST that may have reached the server is not repeated: it could create twice.
        idempotent = method != "POST"
        last = ""
        retry_after: float | None = None
        for attempt in range(1, MAX_ATTEMPTS + 1):
            delay = self._backoff(attempt)
            retry_after = None  # only the last answer's counts
            try:
                response = self._http.send(request)
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
                last = _describe_transport(e)
                if not idempotent and not isinstance(e, httpx.ConnectError | httpx.ConnectTimeout):
                    break
            else:
                content = response.content
                self._report(str(response.status_code))
                status = response.status_code
                if status == 429 or status >= 500:
                    last = f"HTTP {status}" + self._quote(content)
                    if status == 429:
                        retry_after = _retry_after(response.headers.get("retry-after"))
                        delay = retry_after if retry_after is not None else delay
                    elif not idempotent and status != 503:
                        break
                elif status in (401, 403):
                    raise self._auth_refused(method, url, status, _detail(content))
                elif status >= 400:
                    return _Reply(status, url, None, _detail(content))
                elif not want_json or status == 204:
                    return _Reply(status, url, None, "")
                else:
                    try:
                        return _Reply(status, url, _decode(response, content), "")
                    except ValueError as e:
                        # Garbage gets the 5xx budget: a proxy page or a cut-off body
                        # may be transient, a storm of retries never helps.
                        last = f"HTTP {status} with {e}"
                        if not idempotent:
                            break
            if attempt < MAX_ATTEMPTS:
                # Debug only: the cycle logs the final error once (running.run_loop),
                # so a retry storm is never a log storm.
                log.debug(
                    "%s %s: %s; retry %d of %d in %.1fs",
                    method,
                    url,
                    last,
                    attempt,
                    MAX_ATTEMPTS - 1,
                    delay,
                )
                self._sleep(delay)
        raise self._error(
            ControlPlaneUnavailable,
            f"{method} {url} failed after {attempt} attempt(s); last: {last}",
            hint="the control plane is unreachable, overloaded or sending garbage; this "
            "cycle changed nothing and the next poll tries again. Check controlPlane.url, "
            "the network or proxy in between, and the control plane's health"
            + (f"; it asked us to wait {retry_after:g}s" if retry_after is not None else ""),
            retry_after=retry_after,
        )

    def _backoff(self, attempt: int) -> float:
        base: float = min(BACKOFF_MAX, BACKOFF_BASE * 2.0 ** (attempt - 1))
        return base * (1 + 0.25 * self._jitter())

    def _report(self, label: str) -> None:
        if self._on_response is not None:
            self._on_response(label)

    def _quote(self, content: bytes) -> str:
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


def _decode(response: httpx.Response, content: bytes) -> Any:
    if not content.strip():
        raise ValueError("an empty body where JSON was expected")
    try:
        return json.loads(content)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        kind = response.headers.get("content-type", "no content type")
        if kind.startswith("application/json"):
            raise ValueError(f"JSON that does not parse, probably truncated ({e})") from None
        raise ValueError(f"a body that is not JSON ({kind}: {_snippet(content)!r})") from None


def _detail(content: bytes) -> str:
    """The server's `detail` (a string, or FastAPI's 422 list), short and on one line."""
    try:
        data = json.loads(content)
    except ValueError:
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


def _snippet(value: str | bytes, limit: int = _SNIPPET) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
