"""The local control plane as a server: the API key gate, uvicorn in a thread or
in the foreground (`gitops-bridge control-plane serve`). The routes are
bridge.localplane.api; what this package serves is documented here:

The documented `/v2` subset a listener and a user need.

Listeners, deployments (create, list, get, patch, delete) and revisions, with
the request validation, status codes and `{"detail": ...}` bodies of the real
LangSmith control plane (FastAPI, like the real one, so 422 bodies match).
It persists to SQLite (`store.py`) and checks `X-Api-Key`. The local plane
"deploys" instantly: every new revision is DEPLOYED and becomes the active one.

It must not grow features the real API lacks (there is no status write-back);
the only extra is fault injection under `/_faults` (`faults.py`), switched on by
`start_in_thread(faults=True)` for the reliability tests and never by `serve`.
This package must not import httpx, and the bridge's client
(bridge.controlplane) never imports this package.
"""

from __future__ import annotations

import hmac
import http.client
import secrets
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.localplane.api import create_api
from bridge.localplane.faults import FaultBook, FaultInjector
from bridge.localplane.store import Store

# --- ASGI layers: auth (fault injection: faults.py) ---------------------------


class ApiKeyGate:
    """401 `{"detail": "Invalid API key"}` unless `X-Api-Key` matches."""

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.key = api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.key is not None:
            given = next((v for k, v in scope["headers"] if k == b"x-api-key"), b"")
            if not hmac.compare_digest(given, self.key):
                response = JSONResponse({"detail": "Invalid API key"}, status_code=401)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(store: Store, api_key: str | None, *, faults: bool = False) -> ASGIApp:
    """The full ASGI app: fault injection (if enabled) outside the key check outside the API."""
    book = FaultBook() if faults else None
    app: ASGIApp = ApiKeyGate(create_api(store, book), api_key)
    if book is not None:
        app = FaultInjector(app, book)
    return app


# --- running it ----------------------------------------------------------------


def _config(app: ASGIApp, **kwargs: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http="h11",  # the `reset` fault relies on h11's transport handling
        ws="none",
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=3,
        **kwargs,
    )


def serve(host: str, port: int, db: Path, api_key: str | None) -> None:
    """Serve until interrupted. Without `api_key` a random one is made and printed."""
    if not api_key:
        api_key = "lsv2_local_" + secrets.token_urlsafe(24)
        print(f"no API key given; clients must send X-Api-Key: {api_key}", file=sys.stderr)
    store = Store(db)
    try:
        print(
            f"local control plane on http://{_netloc(host, port)} (database {db}); Ctrl-C to stop",
            file=sys.stderr,
        )
        uvicorn.Server(_config(create_app(store, api_key), host=host, port=port)).run()
    except KeyboardInterrupt:
        # uvicorn shuts down gracefully on Ctrl-C, then re-raises the signal: done.
        pass
    finally:
        store.close()


@dataclass
class RunningServer:
    """A local control plane served from a background thread."""

    url: str
    _server: uvicorn.Server
    _thread: threading.Thread
    _store: Store

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._store.close()


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def start_in_thread(
    db: Path,
    api_key: str | None,
    host: str = "127.0.0.1",
    port: int = 0,
    faults: bool = False,
) -> RunningServer:
    """Start on `host:port` (0: a free port) and return once it answers HTTP."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio only sets TCP_NODELAY on accepted sockets whose proto
    # says TCP; with proto 0 every answer waits ~40 ms on delayed ACKs (measured).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    actual_port = sock.getsockname()[1]
    store = Store(db)
    server = uvicorn.Server(_config(create_app(store, api_key, faults=faults), log_config=None))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="local-control-plane", daemon=True
    )
    thread.start()
    running = RunningServer(f"http://{_netloc(host, actual_port)}", server, thread, store)
    try:
        _wait_until_answering(server, thread, host, actual_port)
    except BaseException:
        running.stop()
        sock.close()
        raise
    return running


def _wait_until_answering(
    server: uvicorn.Server, thread: threading.Thread, host: str, port: int
) -> None:
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the local control plane stopped while starting")
        if time.monotonic() > deadline:
            raise RuntimeError("the local control plane did not start within 10 s")
        time.sleep(0.01)
    connection = http.client.HTTPConnection(host, port, timeout=5)
    try:
        # Any HTTP answer will do (401 without a key): it proves the loop serves.
        connection.request("GET", "/v2/listeners?limit=1")
        connection.getresponse().read()
    finally:
        connection.close()
