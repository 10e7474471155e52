"""The Argo CD API as a health source: poll the Application list, or follow its stream.

Owns every request the bridge makes to Argo CD: `GET /api/v1/applications`
and `GET /api/v1/stream/applications`, selected by the label `bootstrap` puts
on what it emits, with a bearer token of an account that may only
`applications, get`. Every answer is outside input: a deadline per request,
a byte cap on every body and stream line, a cap on the number of
Applications, depth-safe JSON (bridge.untrusted). Errors become the
HealthSource* classes below, never an httpx exception, and never carry the
token. The HTTP transport is injected (tests use a loopback fake server).

Must not decide health or match folders (bridge.health.rules and .folders),
and must not write anything: the token is only ever read.
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bridge.errors import BridgeError
from bridge.health.applications import (
    Application,
    StreamError,
    StreamEvent,
    parse_application,
    parse_stream_line,
)
from bridge.health.settings import ArgoCDSettings, read_token_file
from bridge.redaction import Redacted, redact_url, scrub
from bridge.untrusted import UntrustedInput, parse_json

log = logging.getLogger("bridge.health")

# Every Application `bootstrap --for argocd` emits carries it, in both layouts
# (per deployment from the ApplicationSet, per namespace); the per-deployment
# ones also carry `langsmith.com/deployment-id`, which a namespace's cannot.
SELECTOR = "app.kubernetes.io/part-of=langsmith-gitops-bridge"
MAX_APPS = 10_000
MAX_LIST_BYTES = 64 * 1024 * 1024  # ~10,000 trimmed Applications
MAX_LINE_BYTES = 4 * 1024 * 1024  # one stream event: one Application
REQUEST_DEADLINE = 30.0  # seconds for a whole list request, body included
IDLE_TIMEOUT = 300.0  # a stream that says nothing this long is reopened
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 60.0
# What the rules read, and nothing else (Argo CD's `fields` filter; an older
# server that ignores it sends whole Applications, which parse the same).
_FIELDS = (
    "metadata.name",
    "metadata.namespace",
    "spec.source",
    "spec.sources",
    "status.sync.status",
    "status.sync.revision",
    "status.sync.revisions",
    "status.health",
    "status.operationState.phase",
    "status.operationState.startedAt",
    "status.operationState.finishedAt",
    "status.operationState.syncResult.revision",
    "status.operationState.syncResult.revisions",
    "status.reconciledAt",
    "status.conditions",
    "status.history",
)
LIST_FIELDS = ",".join(["metadata.resourceVersion", *(f"items.{f}" for f in _FIELDS)])
STREAM_FIELDS = ",".join(["result.type", *(f"result.application.{f}" for f in _FIELDS)])


class HealthSourceError(BridgeError):
    """A health source answered something the bridge cannot use."""


class HealthSourceUnavailable(HealthSourceError):
    """Timeout, reset, 5xx, an oversized or garbled answer: retried next time."""

    temporary = True


class HealthSourceRefused(HealthSourceError):
    """401/403/404: the token, its RBAC or the URL is wrong; a human must act."""


@dataclass(frozen=True)
class Listing:
    applications: tuple[Application, ...]
    invalid: tuple[str, ...]  # why each malformed Application was skipped
    resource_version: str | None = None


class TokenSource:
    """The bearer token: fixed (from an env var) or re-read from a file before
    each connection, so a rotated (projected) token is picked up."""

    def __init__(self, token: Redacted | None = None, file: Path | None = None) -> None:
        if (token is None) == (file is None):
            raise ValueError("a token or a token file, not both or neither")
        self._token = token
        self._file = file

    def current(self) -> Redacted:
        if self._token is not None:
            return self._token
        assert self._file is not None
        return read_token_file(self._file)


class ArgoCDClient:
    def __init__(
        self,
        http: httpx.Client,
        token: TokenSource,
        *,
        selector: str = SELECTOR,
        app_namespace: str | None = None,
        deadline: float = REQUEST_DEADLINE,
        max_bytes: int = MAX_LIST_BYTES,
        max_apps: int = MAX_APPS,
        max_line_bytes: int = MAX_LINE_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._token = token
        self._params = {"selector": selector} | (
            {"appNamespace": app_namespace} if app_namespace else {}
        )
        self._deadline = deadline
        self._max_bytes = max_bytes
        self._max_apps = max_apps
        self._max_line = max_line_bytes
        self._clock = clock
        self._streaming: httpx.Response | None = None  # the open stream, for interrupt()

    @classmethod
    def from_settings(
        cls,
        settings: ArgoCDSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        selector: str = SELECTOR,
        timeout: float = 10.0,
    ) -> ArgoCDClient:
        verify: ssl.SSLContext | bool = True
        if settings.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(settings.ca_file))
        http = httpx.Client(
            base_url=settings.url.rstrip("/") + "/",
            timeout=httpx.Timeout(timeout, read=max(timeout, 30.0)),
            transport=transport,
            verify=verify,
            follow_redirects=False,
            headers={"Accept": "application/json"},
        )
        token = (
            TokenSource(settings.token, settings.token_file)
            if settings.token_file
            else TokenSource(settings.token or Redacted(""))
        )
        return cls(http, token, selector=selector, app_namespace=settings.app_namespace)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ArgoCDClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ArgoCDClient({redact_url(str(self._http.base_url))!r})"

    # --- poll ----------------------------------------------------------------------

    def list_applications(self) -> Listing:
        """Every selected Application, or an exception: never a partial list (an
        Application missing from a list would be forgotten)."""
        params = self._params | {"fields": LIST_FIELDS}
        deadline = self._clock() + self._deadline
        with self._open("api/v1/applications", params, read_timeout=None) as (response, url):
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > self._max_bytes:
                    raise HealthSourceUnavailable(
                        f"GET {url}: answer larger than {self._max_bytes} bytes"
                    )
                if self._clock() > deadline:
                    raise HealthSourceUnavailable(
                        f"GET {url}: answer took longer than {self._deadline:g}s"
                    )
        try:
            doc = parse_json(bytes(body), source=f"GET {url}", max_bytes=self._max_bytes)
        except UntrustedInput as e:
            raise HealthSourceUnavailable(str(e)) from None
        return self._listing(doc, url)

    def _listing(self, doc: Any, url: str) -> Listing:
        if not isinstance(doc, Mapping):
            raise HealthSourceUnavailable(f"GET {url}: the answer is not an ApplicationList")
        items = doc.get("items")
        if items is None:
            items = []  # grpc-gateway leaves an empty list out
        if not isinstance(items, list):
            raise HealthSourceUnavailable(f"GET {url}: `items` is not a list")
        if len(items) > self._max_apps:
            raise HealthSourceUnavailable(
                f"GET {url}: {len(items)} Applications; at most {self._max_apps} are read",
                hint="narrow the selection: health.argocd.appNamespace, or fewer Applications "
                f"labelled {SELECTOR}",
            )
        apps, invalid = [], []
        for raw in items:
            try:
                apps.append(parse_application(raw))
            except UntrustedInput as e:
                invalid.append(str(e))
        meta = doc.get("metadata")
        version = meta.get("resourceVersion") if isinstance(meta, Mapping) else None
        return Listing(tuple(apps), tuple(invalid), version if isinstance(version, str) else None)

    # --- stream --------------------------------------------------------------------

    def stream(self, *, idle_timeout: float = IDLE_TIMEOUT) -> Iterator[StreamEvent]:
        """Events of one connection to the application stream, until it ends.
        Raises HealthSource* errors; an idle connection ends quietly."""
        params = self._params | {"fields": STREAM_FIELDS}
        with self._open("api/v1/stream/applications", params, read_timeout=idle_timeout) as (
            response,
            url,
        ):
            self._streaming = response
            try:
                for line in self._lines(response, url):
                    try:
                        yield parse_stream_line(line, max_bytes=self._max_line)
                    except StreamError as e:
                        raise HealthSourceUnavailable(
                            f"GET {url}: the stream ended with {e}"
                        ) from None
                    except UntrustedInput as e:
                        # One bad event is skipped: the next MODIFIED of that
                        # Application, or the resync on reconnect, tells it again.
                        log.warning("Argo CD stream: %s; skipped", e)
            except httpx.ReadTimeout:
                return
            finally:
                self._streaming = None

    def interrupt(self) -> None:
        """End a stream blocked in a read, from another thread: shut its socket
        down (closing the pool does not wake a blocked recv everywhere)."""
        response = self._streaming
        stream = response.extensions.get("network_stream") if response is not None else None
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed: nothing to wake

    def _lines(self, response: httpx.Response, url: str) -> Iterator[bytes]:
        pending = bytearray()
        for chunk in response.iter_bytes():
            pending += chunk
            while (end := pending.find(b"\n")) >= 0:
                line = bytes(pending[:end]).strip()
                del pending[: end + 1]
                if line:
                    yield line
            if len(pending) > self._max_line:
                raise HealthSourceUnavailable(
                    f"GET {url}: a stream line larger than {self._max_line} bytes"
                )
        if pending.strip():
            yield bytes(pending).strip()

    # --- one request -----------------------------------------------------------------

    @contextmanager
    def _open(
        self, path: str, params: Mapping[str, str], *, read_timeout: float | None
    ) -> Iterator[tuple[httpx.Response, str]]:
        """An open streamed response with a 2xx status, and its URL (no query,
        no credentials) for messages; every httpx error becomes ours."""
        token = self._token.current()
        timeout: httpx.Timeout | None = None
        if read_timeout is not None:
            timeout = httpx.Timeout(self._http.timeout.connect or 10.0, read=read_timeout)
        request = self._http.build_request(
            "GET",
            path,
            params=params,
            headers={"Authorization": f"Bearer {token.reveal()}"},
            timeout=timeout if timeout is not None else self._http.timeout,
        )
        url = redact_url(str(request.url.copy_with(query=None)))
        try:
            response = self._http.send(request, stream=True)
        except httpx.HTTPError as e:
            raise self._unavailable(url, e) from None
        try:
            self._check_status(response, url)
            yield response, url
        except httpx.HTTPError as e:
            raise self._unavailable(url, e) from None
        finally:
            response.close()

    def _check_status(self, response: httpx.Response, url: str) -> None:
        status = response.status_code
        if status < 300:
            return
        detail = scrub(response.read()[:200].decode("utf-8", "replace"), self._token.current())
        detail = " ".join(detail.split())
        response.close()
        if status in (401, 403):
            raise HealthSourceRefused(
                f"GET {url}: Argo CD refused the token (HTTP {status})",
                hint="give the bridge's account `applications, get` on the project (README: "
                "Health) and put its token in health.argocd.tokenEnv or tokenFile",
            )
        if status == 404:
            raise HealthSourceRefused(
                f"GET {url}: HTTP 404", hint="health.argocd.url must be the Argo CD API server"
            )
        raise HealthSourceUnavailable(
            f"GET {url}: HTTP {status}" + (f" ({detail})" if detail else "")
        )

    def _unavailable(self, url: str, error: httpx.HTTPError) -> HealthSourceUnavailable:
        text = scrub(str(error), self._token.current())
        return HealthSourceUnavailable(
            f"GET {url}: {type(error).__name__}" + (f" ({text})" if text else "")
        )


class StreamFollower:
    """Follows the stream for as long as `stop` is not set: on each (re)connect
    a full list first (`on_listing`, so Applications deleted meanwhile are
    forgotten), then every event (`on_event`). Failures back off exponentially
    (1 s doubling to 60 s, with jitter); `on_reachable` tells /metrics."""

    def __init__(
        self,
        client: ArgoCDClient,
        *,
        on_listing: Callable[[Listing], None],
        on_event: Callable[[StreamEvent], None],
        on_reachable: Callable[[bool, str], None] = lambda ok, why: None,
        wait: Callable[[float], bool] | None = None,
        jitter: Callable[[], float] = random.random,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.client = client
        self.stop = threading.Event()
        self._on_listing, self._on_event, self._on_reachable = on_listing, on_event, on_reachable
        self._wait = wait or self.stop.wait
        self._jitter = jitter
        self._idle = idle_timeout
        self.connections = 0

    def run(self) -> None:
        failures = 0
        while not self.stop.is_set():
            try:
                self._on_listing(self.client.list_applications())
                self.connections += 1
                self._on_reachable(True, "")
                if self.stop.is_set():
                    return
                for event in self.client.stream(idle_timeout=self._idle):
                    failures = 0  # it delivered: the next failure starts the backoff again
                    self._on_event(event)
                    if self.stop.is_set():
                        return
                delay = 0.0
            except HealthSourceError as e:
                if self.stop.is_set():
                    return  # the error is our own interrupt()
                failures += 1
                self._on_reachable(False, str(e))
                delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (failures - 1))
                delay *= 1 + 0.25 * self._jitter()
                log.warning("Argo CD stream: %s; reconnecting in %.0fs", e, delay)
            if self._wait(delay):
                return
