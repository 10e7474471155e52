"""Attack: clients of `run --listen` that hold connections open or trickle requests.

Against the real `run --listen` process: 1,500 idle connections leave its
threads and descriptors bounded, /healthz answers all along, the loop still
cycles, and the idle connections are closed; slow-loris clients trickling
headers a byte at a time are cut off without an answer. Against the server in
this process (real sockets): heads and bodies over their bounds are refused
before they are read, and handler threads busy with slow requests do not keep
/healthz from answering.
"""

from __future__ import annotations

import resource
import select
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile.loop import Loop, assert_survived, two_targets

IDLE = 1_500
SLOW = 100


def threads(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def connect(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host.strip("[]"), int(port)), timeout=30)


def closed_by_server(sock: socket.socket) -> bool:
    """The server closed (or reset) the connection: EOF or an error is readable."""
    poller = select.poll()  # select() takes no descriptor over 1023
    poller.register(sock, select.POLLIN)
    if not poller.poll(0):
        return False
    try:
        return sock.recv(65536) == b""
    except OSError:
        return True


@pytest.fixture(scope="module", autouse=True)
def enough_descriptors() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = IDLE + 500
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"needs {want} open files, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def wait_until(check: object, what: str, loop: Loop, timeout: float = 120) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        assert loop.alive(), loop.log()[-3000:]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_idle_connections_are_bounded_and_closed(tmp_path: Path) -> None:
    with two_targets(tmp_path) as env:
        before = {ns: env.folders(ns) for ns in env.remotes}
        loop = env.start()
        loop.wait_cycles(1)
        pid = loop.proc.pid
        base_threads, base_fds = threads(pid), fds(pid)
        held = []
        try:
            for _ in range(IDLE):
                held.append(connect(loop.address))
            # Held by clients that send nothing: the bridge stays small...
            assert loop.get("/healthz") == (200, "ok\n")
            assert threads(pid) <= base_threads + 8, (base_threads, threads(pid))
            assert fds(pid) <= base_fds + 100, (base_fds, fds(pid))
            # ...the oldest were let go to make room, and the loop goes on.
            assert sum(closed_by_server(s) for s in held[:100]) == 100
            loop.wait_cycles(1)
            assert_survived(env, loop, other="staging", before=before)
            assert threads(pid) <= base_threads + 8 and fds(pid) <= base_fds + 100
            # Idle connections do not stay: every one is closed in the end.
            wait_until(lambda: all(closed_by_server(s) for s in held[-50:]), "idle close", loop)
            assert loop.get("/healthz") == (200, "ok\n")
        finally:
            for s in held:
                s.close()


def test_slow_loris_clients_are_cut_off(tmp_path: Path) -> None:
    with two_targets(tmp_path) as env:
        loop = env.start()
        loop.wait_cycles(1)
        pid = loop.proc.pid
        base_threads = threads(pid)
        slow = [connect(loop.address) for _ in range(SLOW)]
        try:
            for s in slow:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            cut: set[int] = set()
            answered = []
            header = b"X-Trickle: " + b"a" * 100_000
            for step in range(len(header)):
                for i, s in enumerate(slow):
                    if i in cut:
                        continue
                    try:
                        s.sendall(header[step : step + 1])
                    except OSError:
                        cut.add(i)
                        continue
                    if closed_by_server(s):
                        cut.add(i)
                # Still served while the trickle goes on, and no thread per client.
                assert loop.get("/healthz") == (200, "ok\n")
                assert threads(pid) <= base_threads + 8
                assert loop.alive(), loop.log()[-3000:]
                if len(cut) == SLOW:
                    break
                time.sleep(0.5)
            assert len(cut) == SLOW, f"{SLOW - len(cut)} slow clients still connected"
            for s in slow:
                s.setblocking(False)
                try:
                    answered.append(s.recv(65536))
                except OSError:
                    answered.append(b"")
            # Cut off, not answered: a trickled head never reaches a handler.
            assert not any(a.startswith(b"HTTP/1.1 200") for a in answered)
            loop.wait_cycles(1)
        finally:
            for s in slow:
                s.close()


# --- the server in this process: routes, bodies, busy handlers ------------------------


def exchange(address: str, data: bytes, *, read_all: bool = True) -> bytes:
    with connect(address) as s:
        s.sendall(data)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            if not read_all:
                break
        return b"".join(chunks)


@pytest.fixture
def served() -> Iterator[tuple[str, list[bytes], threading.Event]]:
    from bridge.observability.metrics import Health, Metrics
    from bridge.observability.serving import Request, Response, Route, start_server

    bodies: list[bytes] = []
    release = threading.Event()

    def hook(request: Request) -> Response:
        bodies.append(request.body)
        return Response(202, b"accepted\n")

    def slow(_request: Request) -> Response:
        release.wait(60)
        return Response(200, b"slow\n")

    routes = [
        Route("POST", "/hook", hook, max_body=1024),
        Route("GET", "/slow", slow),
    ]
    server = start_server("127.0.0.1:0", Health(10), Metrics().registry, routes=routes)
    try:
        yield server.address, bodies, release
    finally:
        release.set()
        server.stop()


def test_bodies_and_heads_are_bounded(served: tuple[str, list[bytes], threading.Event]) -> None:
    address, bodies, _release = served
    post = b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
    assert exchange(address, post % 5 + b"hello").startswith(b"HTTP/1.1 202")
    assert bodies == [b"hello"]
    # Over the route's bound: refused on the head alone, the body never read.
    assert exchange(address, post % 1025, read_all=False).startswith(b"HTTP/1.1 413")
    assert exchange(address, post % 10**12, read_all=False).startswith(b"HTTP/1.1 413")
    chunked = b"POST /hook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert exchange(address, chunked, read_all=False).startswith(b"HTTP/1.1 501")
    # The probes take no body at all, and no other method.
    assert exchange(address, post.replace(b"/hook", b"/healthz") % 5).startswith(b"HTTP/1.1 405")
    huge_head = b"GET /healthz HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 20_000 + b"\r\n\r\n"
    assert exchange(address, huge_head, read_all=False).startswith(b"HTTP/1.1 431")
    assert bodies == [b"hello"]
    # A client that asks first gets a 100 Continue before it sends the body.
    with connect(address) as s:
        s.sendall(
            b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
        )
        assert s.recv(65536).startswith(b"HTTP/1.1 100")
        s.sendall(b"abc")
        assert s.recv(65536).startswith(b"HTTP/1.1 202")
    assert bodies == [b"hello", b"abc"]


def test_busy_handlers_do_not_block_healthz(
    served: tuple[str, list[bytes], threading.Event],
) -> None:
    address, _bodies, release = served
    slow = [connect(address) for _ in range(10)]  # more than there are handler threads
    try:
        for s in slow:
            s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        for _ in range(5):
            with urllib.request.urlopen(f"http://{address}/healthz", timeout=5) as r:
                assert r.status == 200
        release.set()
        for s in slow:
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        for s in slow:
            s.close()
