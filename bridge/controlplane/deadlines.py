"""Deadlines for control-plane requests: from connect to the last byte.

httpx's timeouts are per socket operation: a server that sends one byte just
inside each read timeout holds a request open for ever. The bridge needs a
deadline on the whole request (and, above it, a budget per cycle), so every
socket operation of a request here gets at most the time its request has left.

How: the network streams of httpcore (which httpx drives) are wrapped, and each
connect, TLS handshake, read and write is given `min(its timeout, time left)`,
or fails at once with httpcore's own timeout error (httpx translates it into
`httpx.ReadTimeout` and so on, which the client already handles). The
deadline is per thread, set by the client around each request: a connection
is used by one request at a time, in the thread that sends it.

Installed on the httpx client's own transports (the default one and those of
proxies from the environment), so proxies keep working. This reaches into
httpcore's `ConnectionPool._network_backend`; `install` says whether it
could, and the client also checks the deadline between body chunks, so a
trickle still ends (one read timeout late) if a future httpcore moves it.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

SocketOption = Any  # httpcore's SOCKET_OPTION: a tuple for setsockopt


class Deadlines:
    """The deadline of the request in flight, per thread (monotonic seconds)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def set(self, at: float | None) -> None:
        self._local.at = at

    def left(self) -> float | None:
        """Seconds left, or None without a deadline."""
        at: float | None = getattr(self._local, "at", None)
        return None if at is None else at - time.monotonic()

    def cap(self, timeout: float | None, error: type[Exception]) -> float | None:
        """`timeout` cut to the time left; `error` when none is left."""
        left = self.left()
        if left is None:
            return timeout
        if left <= 0:
            raise error("the request's deadline passed")
        return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, deadlines: Deadlines) -> None:
        self._inner = inner
        self._deadlines = deadlines

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._deadlines.cap(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._deadlines.cap(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        # The handshake is one call; Python's ssl bounds it as a whole by the timeout.
        timeout = self._deadlines.cap(timeout, httpcore.ConnectTimeout)
        return _Stream(
            self._inner.start_tls(ssl_context, server_hostname, timeout), self._deadlines
        )

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend, deadlines: Deadlines) -> None:
        self._inner = inner
        self._deadlines = deadlines

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = self._deadlines.cap(timeout, httpcore.ConnectTimeout)
        stream = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _Stream(stream, self._deadlines)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = self._deadlines.cap(timeout, httpcore.ConnectTimeout)
        stream = self._inner.connect_unix_socket(path, timeout, socket_options)
        return _Stream(stream, self._deadlines)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def install(client: httpx.Client, deadlines: Deadlines) -> bool:
    """Wrap the network backend of each of the client's HTTP transports; False
    when one of them is not the httpx/httpcore this module knows (a mock
    transport in tests has no network to bound)."""
    done = True
    for transport in [client._transport, *client._mounts.values()]:
        if transport is None:  # a NO_PROXY pattern: requests use the default transport
            continue
        pool = getattr(transport, "_pool", None)
        inner = getattr(pool, "_network_backend", None)
        if not isinstance(pool, httpcore.ConnectionPool) or not isinstance(
            inner, httpcore.NetworkBackend
        ):
            done = False
            continue
        if not isinstance(inner, _Backend):
            pool._network_backend = _Backend(inner, deadlines)
    return done
