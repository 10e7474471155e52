"""The HTTP endpoint of `run --listen`: /healthz, /readyz, /metrics (and routes to come).

Bounded whatever the clients do. One thread holds every connection in a
selector until its whole request (head and body) has arrived; only then is it
handled, by that thread for the cheap probes and by a small pool of handler
threads for the rest; the answer is written back by the selector thread too,
and the connection closed. So an idle or slow client costs one socket and no
thread, and:

- at most `Limits.max_connections` sockets are open: a new connection over the
  cap closes the oldest one that has not sent its request yet, so a crowd of
  idle clients cannot keep a probe out;
- a request must arrive whole within `Limits.request_deadline` of the accept
  (an idle client, or one trickling its headers a byte at a time, is closed),
  and its answer be taken within `Limits.write_deadline`;
- a head is at most `Limits.max_header_bytes` (431), a body at most its route's
  `max_body` (413, never read), and needs a Content-Length (chunked: 501).

Nothing here ever sees a secret (metrics carry names and ids). Loopback by
default; the Kubernetes manifests in deploy/ listen on 0.0.0.0.
"""

from __future__ import annotations

import errno
import logging
import queue
import re
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from bridge.errors import ConfigError

log = logging.getLogger("bridge.serving")


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(
            f"--listen has value {value!r}; allowed: HOST:PORT (e.g. 127.0.0.1:9090 or :9090)"
        )
    return (host.strip("[]") or "0.0.0.0"), int(port)  # noqa: S104 - ":9090" means all, as usual


@dataclass(frozen=True)
class Limits:
    """The server's bounds. Probes and scrapes send one small request at once;
    webhooks a body of a few KB. Everything else is an attack or a broken client."""

    # Sockets held at once. Kubelet probes, a Prometheus scrape and webhook
    # bursts need a handful; 64 fds and no threads are nothing for the pod.
    max_connections: int = 64
    # Handler threads for routes that are not inline (/metrics, webhooks).
    workers: int = 4
    # From accept to the last byte of the request: probes time out after 1 s
    # by default, scrapers after 10 s; a slow-loris client gets no more.
    request_deadline: float = 10.0
    # To write the answer (a /metrics page is a few hundred KB at most).
    write_deadline: float = 10.0
    # Request line and headers; the usual servers' default (8 KiB) and count.
    max_header_bytes: int = 8192
    max_headers: int = 64


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    headers: Mapping[str, str]  # names in lower case
    body: bytes


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    """`method path` answered by `handler`. `max_body`: bytes a request may carry
    (a larger Content-Length is refused with 413, unread). `inline`: the handler
    is cheap and never blocks, so the selector thread runs it itself and it
    answers even when every handler thread is busy (liveness, readiness)."""

    method: str
    path: str
    handler: Callable[[Request], Response]
    max_body: int = 0
    inline: bool = False


def text(status: int, message: str) -> Response:
    return Response(status, (message + "\n").encode())


# --- one connection ----------------------------------------------------------

_READING, _HANDLING, _WRITING = "reading", "handling", "writing"
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_LENGTH = re.compile(r"[0-9]{1,15}")


class _Refused(Exception):
    """A request answered with an error without reaching a handler."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.response = Response(status, (message + "\n").encode(), headers=headers or {})


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    deadline: float
    state: str = _READING
    buf: bytearray = field(default_factory=bytearray)
    head: tuple[str, str, str, dict[str, str]] | None = None  # method, path, query, headers
    route: Route | None = None
    body_length: int = 0
    out: memoryview | None = None


def _render(response: Response, head_only: bool) -> bytes:
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = ""
    lines = [
        f"HTTP/1.1 {response.status} {reason}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        # One request per connection: nothing lingers between requests, and a
        # kept-alive idle socket would be one more thing to bound.
        "Connection: close",
        *(f"{k}: {v}" for k, v in response.headers.items()),
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body


class _Routes:
    def __init__(self, routes: Iterable[Route]) -> None:
        self.by_path: dict[str, dict[str, Route]] = {}
        for route in routes:
            self.by_path.setdefault(route.path, {})[route.method] = route

    def find(self, method: str, path: str) -> Route:
        methods = self.by_path.get(path)
        if methods is None:
            raise _Refused(404, "not found")
        route = methods.get("GET" if method == "HEAD" else method)
        if route is None:
            allow = sorted({*methods, *(["HEAD"] if "GET" in methods else [])})
            raise _Refused(405, "method not allowed", {"Allow": ", ".join(allow)})
        return route


def _parse_head(raw: bytes, limits: Limits) -> tuple[str, str, str, dict[str, str]]:
    """method, path, query and headers of a request head (without its blank line)."""
    lines = raw.decode("latin-1").split("\n")
    parts = lines[0].rstrip("\r").split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
        raise _Refused(400, "bad request line")
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise _Refused(505, "HTTP/1.0 or HTTP/1.1 only")
    if len(lines) - 1 > limits.max_headers:
        raise _Refused(431, f"more than {limits.max_headers} header fields")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.rstrip("\r").partition(":")
        if not sep or not _TOKEN.fullmatch(name):
            raise _Refused(400, "bad header field")
        key = name.lower()
        value = value.strip(" \t")
        if headers.get(key, value) != value:
            raise _Refused(400, f"conflicting {name} fields")
        headers[key] = value
    path, _, query = target.partition("?")
    return method, path, query, headers


def _body_length(headers: Mapping[str, str], route: Route) -> int:
    if "transfer-encoding" in headers:
        raise _Refused(501, "chunked bodies are not accepted; send Content-Length")
    value = headers.get("content-length", "0")
    if not _LENGTH.fullmatch(value):
        raise _Refused(400, "bad Content-Length")
    length = int(value)
    if length > route.max_body:
        raise _Refused(413, f"a body of at most {route.max_body} bytes")
    return length


# --- the server -----------------------------------------------------------------


class ListenServer:
    """The selector loop and its handler pool (see the module docstring)."""

    def __init__(
        self,
        sock: socket.socket,
        routes: Iterable[Route],
        limits: Limits,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._routes = _Routes(routes)
        self._listener = sock
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(sock, selectors.EVENT_READ, "listen")
        # Handler threads hand answers back through a queue and a byte on a
        # socket pair, which wakes the selector.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._answers: queue.SimpleQueue[tuple[_Conn, bytes]] = queue.SimpleQueue()
        self._pool = ThreadPoolExecutor(limits.workers, thread_name_prefix="bridge-http-handler")
        # Insertion order is accept order: the first reading one is the oldest.
        self._conns: dict[_Conn, None] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="bridge-http", daemon=True)

    @property
    def address(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # full: the selector wakes all the same; closed: stopping

    def _serve(self) -> None:
        try:
            while not self._stopping.is_set():
                for key, mask in self._selector.select(self._timeout()):
                    if key.data == "listen":
                        self._accept()
                    elif key.data == "wake":
                        self._take_answers()
                    elif key.data in self._conns:  # else closed earlier in this batch
                        self._step(key.data, mask)
                self._expire()
        except Exception:
            # Never silently: liveness probes would fail with no word why.
            log.exception("the HTTP endpoint stopped")
        finally:
            for conn in list(self._conns):
                self._close(conn)
            self._selector.close()
            for s in (self._listener, self._wake_r, self._wake_w):
                s.close()

    def _step(self, conn: _Conn, mask: int) -> None:
        try:
            if mask & selectors.EVENT_READ:
                self._read(conn)
            elif mask & selectors.EVENT_WRITE:
                self._write(conn)
        except Exception:
            # One connection's surprise closes that connection, not the endpoint.
            log.exception("HTTP endpoint: a connection failed; closing it")
            self._close(conn)

    def _timeout(self) -> float:
        """Until the next deadline (at most 1 s, to notice `stop`). A connection
        being handled has none: its handler is ours and bounded."""
        deadlines = [c.deadline for c in self._conns if c.state != _HANDLING]
        if not deadlines:
            return 1.0
        return min(1.0, max(0.0, min(deadlines) - self._clock()))

    def _expire(self) -> None:
        now = self._clock()
        for conn in [c for c in self._conns if c.deadline <= now and c.state != _HANDLING]:
            self._close(conn)

    def _close(self, conn: _Conn) -> None:
        self._conns.pop(conn, None)
        if conn.state != _HANDLING:
            try:
                self._selector.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
        conn.sock.close()

    # -- accepting --------------------------------------------------------------

    def _accept(self) -> None:
        # A bounded batch per wake-up, so a flood of connects cannot starve the
        # reads and writes of the connections already held.
        for _ in range(self.limits.max_connections):
            try:
                sock, _addr = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno not in _OUT_OF_RESOURCES:
                    continue  # that one connection failed (reset while queued)
                # Out of descriptors: free the oldest idle socket, try again on
                # the next wake-up.
                log.debug("accept failed: %s", e)
                if not self._evict_oldest():
                    # Nothing to free: the listener stays readable, and retrying
                    # at once would spin. Pending connects wait in the backlog.
                    self._stopping.wait(0.1)
                return
            if len(self._conns) >= self.limits.max_connections and not self._evict_oldest():
                sock.close()  # every held socket is being answered: no room
                continue
            sock.setblocking(False)
            conn = _Conn(sock, self._clock() + self.limits.request_deadline)
            self._conns[conn] = None
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _evict_oldest(self) -> bool:
        for conn in self._conns:
            if conn.state == _READING:
                self._close(conn)
                return True
        return False

    # -- reading a request ------------------------------------------------------

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._close(conn)  # gone before its request was whole
            return
        conn.buf += data
        try:
            if conn.head is None and not self._read_head(conn):
                return
            if len(conn.buf) < conn.body_length:
                return
        except _Refused as e:
            self._respond(conn, _render(e.response, head_only=False))
            return
        self._dispatch(conn)

    def _read_head(self, conn: _Conn) -> bool:
        """Parse the head once it is whole; False while more is needed."""
        limit = self.limits.max_header_bytes
        end = _HEAD_END.search(conn.buf, 0, limit + 4)
        if end is None:
            if len(conn.buf) > limit:
                raise _Refused(431, f"request head over {limit} bytes")
            return False
        conn.head = _parse_head(bytes(conn.buf[: end.start()]), self.limits)
        method, path, _query, headers = conn.head
        conn.route = self._routes.find(method, path)
        conn.body_length = _body_length(headers, conn.route)
        del conn.buf[: end.end()]
        if conn.body_length > len(conn.buf) and headers.get("expect", "").lower() == (
            "100-continue"
        ):
            # Best effort: the client sends the body anyway after a pause.
            try:
                conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            except OSError:
                pass
        return True

    def _dispatch(self, conn: _Conn) -> None:
        assert conn.head is not None and conn.route is not None
        method, path, query, headers = conn.head
        request = Request(method, path, query, headers, bytes(conn.buf[: conn.body_length]))
        conn.buf = bytearray()
        route = conn.route
        if route.inline:
            self._respond(conn, _answer(route, request))
            return
        self._selector.unregister(conn.sock)
        conn.state = _HANDLING
        self._pool.submit(self._handle, conn, route, request)

    def _handle(self, conn: _Conn, route: Route, request: Request) -> None:
        """In a handler thread: only the handler runs here, never socket I/O."""
        self._answers.put((conn, _answer(route, request)))
        self._wake()

    def _take_answers(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                conn, data = self._answers.get_nowait()
            except queue.Empty:
                return
            if conn in self._conns:  # else closed while it was handled (stopping)
                self._respond(conn, data, registered=False)

    # -- writing the answer -----------------------------------------------------

    def _respond(self, conn: _Conn, data: bytes, *, registered: bool = True) -> None:
        conn.state = _WRITING
        conn.out = memoryview(data)
        conn.deadline = self._clock() + self.limits.write_deadline
        if registered:
            self._selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
        else:
            self._selector.register(conn.sock, selectors.EVENT_WRITE, conn)
        self._write(conn)

    def _write(self, conn: _Conn) -> None:
        assert conn.out is not None
        try:
            sent = conn.sock.send(conn.out)
        except BlockingIOError:
            return
        except OSError:
            self._close(conn)
            return
        conn.out = conn.out[sent:]
        if not conn.out:
            self._close(conn)


def _answer(route: Route, request: Request) -> bytes:
    try:
        response = route.handler(request)
    except Exception:
        log.exception("the handler of %s %s failed", request.method, route.path)
        response = text(500, "internal error; see the bridge's log")
    return _render(response, head_only=request.method == "HEAD")


# --- the bridge's endpoint ---------------------------------------------------------


@dataclass
class RunningServer:
    server: ListenServer

    @property
    def address(self) -> str:
        return self.server.address

    def stop(self) -> None:
        self.server.stop()


def bridge_routes(health: Any, registry: Any) -> list[Route]:
    """/healthz (the process answers), /readyz (a recent good cycle), /metrics."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    def ready(_request: Request) -> Response:
        ok, why = health.ready()
        return text(200 if ok else 503, why)

    return [
        Route("GET", "/healthz", lambda _r: text(200, "ok"), inline=True),
        Route("GET", "/readyz", ready, inline=True),
        Route(
            "GET",
            "/metrics",
            lambda _r: Response(200, generate_latest(registry), CONTENT_TYPE_LATEST),
        ),
    ]


def start_server(
    listen: str,
    health: Any,
    registry: Any,
    *,
    routes: Iterable[Route] = (),
    limits: Limits | None = None,
) -> RunningServer:
    """Serve the bridge's routes (and `routes`, e.g. webhooks) on `listen` in a thread."""
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=128)
    except OSError as e:
        raise ConfigError(f"--listen {listen}: cannot listen ({e.strerror})") from None
    server = ListenServer(sock, [*bridge_routes(health, registry), *routes], limits or Limits())
    server.start()
    return RunningServer(server)
