"""The test forge's HTTP server: one threaded loopback server per forge.

Paths under `/<owner>/<name>.git/` are git's smart HTTP, served by the tests'
own `git http-backend` wrapper (tests/gitservers.py) on the same bare repo;
everything else is the forge's API, routed to the forge module's handlers.
Real sockets, real threads: the bridge's httpx client and git see a server,
not a mock.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs, unquote
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from tests.forges.fake.state import Exchange, ForgeState
from tests.gitservers import _git_http_app, _read_body


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default


@dataclass
class Response:
    status: int
    data: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None


Handler = Callable[..., Response]


class Router:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        # `{x}` is one path segment; literal segments win over templates by order.
        regex = re.compile(
            "^" + self.prefix + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$"
        )

        def register(handler: Handler) -> Handler:
            self.routes.append((method, regex, handler))
            return handler

        return register

    def find(self, method: str, path: str) -> tuple[Handler, dict[str, str]] | None:
        for route_method, regex, handler in self.routes:
            found = regex.match(path)
            if found and route_method == method:
                return handler, {k: unquote(v) for k, v in found.groupdict().items()}
        return None


STATUS_TEXT = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class ForgeApp:
    """The WSGI application: git for `*.git/` paths, else the forge's API."""

    def __init__(
        self,
        state: ForgeState,
        router: Router,
        authenticate: Callable[[ForgeState, Request], Response | None],
        error_body: Callable[[int, str], Any],
    ) -> None:
        self.state = state
        self.router = router
        self.authenticate = authenticate
        self.error_body = error_body
        self._git = _git_http_app(state.bare.parent.parent, state.git_users, [])

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        path = environ.get("RAW_PATH") or environ.get("PATH_INFO", "")
        if ".git/" in path or path.endswith(".git"):
            # git's smart HTTP on the same bare repo (root/<owner>/<name>.git).
            return self._git(environ, start_response)
        request = Request(
            method=environ["REQUEST_METHOD"],
            path=path,
            query=parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True),
            headers={
                k[5:].replace("_", "-").lower(): v
                for k, v in environ.items()
                if k.startswith("HTTP_")
            },
            body=_read_body(environ),
        )
        if environ.get("CONTENT_TYPE"):
            request.headers["content-type"] = environ["CONTENT_TYPE"]
        fault = self.state.take_fault(request.method, request.path)
        if fault is not None and fault.chunks is not None:
            return self._drip(
                request, fault.status, fault.headers, fault.chunks, fault.delay, start_response
            )
        if fault is not None:
            body = (
                fault.body
                if fault.body is not None
                else json.dumps(self.error_body(fault.status, "injected")).encode()
            )
            response = Response(fault.status, headers=fault.headers, raw=body)
        else:
            response = self._answer(request)
        raw = response.raw
        if raw is None:
            raw = b"" if response.data is None else json.dumps(response.data).encode()
        headers = {"Content-Type": "application/json; charset=utf-8", **response.headers}
        if response.status == 204:
            raw = b""
        self._record(request, response.status, headers, raw, injected=fault is not None)
        start_response(
            f"{response.status} {STATUS_TEXT.get(response.status, 'Status')}", list(headers.items())
        )
        return [raw]

    def _answer(self, request: Request) -> Response:
        denied = self.authenticate(self.state, request)
        if denied is not None:
            return denied
        found = self.router.find(request.method, request.path)
        if found is None:
            return Response(404, self.error_body(404, "Not Found"))
        handler, params = found
        try:
            with self.state.lock:
                return handler(self.state, request, **params)
        except KeyError:
            return Response(404, self.error_body(404, "Not Found"))

    def _drip(
        self,
        request: Request,
        status: int,
        headers: dict[str, str],
        chunks: list[bytes],
        delay: float,
        start_response: Callable[..., Any],
    ) -> Iterator[bytes]:
        self._record(request, status, headers, b"".join(chunks[:3]), injected=True)
        start_response(
            f"{status} {STATUS_TEXT.get(status, 'Status')}",
            [("Content-Type", "application/json"), *headers.items()],
        )
        for chunk in chunks:
            if delay:
                time.sleep(delay)
            yield chunk

    def _record(
        self, request: Request, status: int, headers: dict[str, str], raw: bytes, *, injected: bool
    ) -> None:
        with self.state.lock:
            self.state.exchanges.append(
                Exchange(
                    request.method,
                    request.path,
                    request.query,
                    dict(request.headers),
                    request.body,
                    status,
                    headers,
                    raw,
                    injected,
                )
            )


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = False


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def get_environ(self) -> dict[str, Any]:
        # PATH_INFO is percent-decoded; GitLab's `acme%2Fprod-agents` and a branch
        # `gitops-bridge%2Fmain` must be routed as one segment, so keep the raw path.
        environ: dict[str, Any] = super().get_environ()
        environ["RAW_PATH"] = self.path.split("?", 1)[0]
        return environ


@contextmanager
def serve(app: ForgeApp) -> Iterator[str]:
    """Serve `app` on 127.0.0.1:<free port>; yields the base URL (ends with `/`)."""
    server = make_server("127.0.0.1", 0, app, server_class=_ThreadingServer, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, name="test-forge", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/"
    app.state.base_url = url
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
