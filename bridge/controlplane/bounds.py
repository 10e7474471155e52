"""How long a control-plane client waits and how much it reads (the `controlPlane` keys).

The control plane's answers are outside input: a server (or a proxy in
between) that trickles, never stops, pads or nests its answers must cost a
cycle, not the process. This module holds the bounds and the pieces that
apply them to one answer; the client (client.py) turns a bound passed into
an error that names it. The deadline of each request is in deadlines.py.

Must not: retry, log, or build user-facing errors (the client does).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from bridge.config import ControlPlaneSettings
from bridge.controlplane.deadlines import Deadlines
from bridge.observability.display import escape

ERROR_BODY = 64 << 10  # bytes of an error answer read: enough for its `detail`
# A JSON text can hold a string UTF-8 cannot encode only as a surrogate escape
# (\ud800-\udfff) or as the raw bytes json.loads lets through (0xED 0xA0-0xBF).
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_SHOWN = 120  # characters of a redirect's target in an error


@dataclass(frozen=True)
class Limits:
    timeout: float = 10.0  # seconds per request, connect to last byte
    cycle_timeout: float | None = None  # seconds of requests per listing cycle; None: no budget
    max_response_bytes: int = 8 << 20
    max_records: int = 50_000

    @classmethod
    def of(cls, settings: ControlPlaneSettings) -> Limits:
        return cls(
            timeout=settings.timeout,
            cycle_timeout=settings.cycle_timeout,
            max_response_bytes=settings.max_response_mb << 20,
            max_records=settings.max_deployments,
        )


class Budget:
    """A cycle's request time: seconds spent in requests since the listing began.
    Summed per request, not read off the wall clock, so the git work between a
    listing and a deletion confirmation costs none of it."""

    def __init__(self, seconds: float | None, clock: Callable[[], float]) -> None:
        self.seconds = seconds
        self.clock = clock
        self._spent: float | None = None  # None: not in a cycle
        self._lock = threading.Lock()  # the pager thread spends too

    def start(self) -> None:
        with self._lock:
            self._spent = 0.0 if self.seconds is not None else None

    def spend(self, seconds: float) -> None:
        with self._lock:
            if self._spent is not None:
                self._spent += seconds

    def left(self, started: float) -> float | None:
        """Seconds left, the request in flight since `started` counted; None
        outside a cycle or without a budget."""
        with self._lock:
            spent = self._spent
        if spent is None or self.seconds is None:
            return None
        return self.seconds - spent - (self.clock() - started)


class TooLarge(Exception):
    """An answer past `maxResponseMb`."""


def read_capped(
    response: httpx.Response, cap: int, deadlines: Deadlines, *, whole: bool
) -> bytearray:
    """The body as it streams in, decoded (a compressed bomb counts what it
    inflates to), never more than `cap` bytes. `whole`: over the cap is
    TooLarge, and a Content-Length over it is refused unread; else (an error
    answer) the body is cut at the cap. A bytearray: json.loads and re take it
    as it is, no copy of a large page."""
    declared = response.headers.get("content-length", "")
    if whole and declared.isdigit() and int(declared) > cap:
        raise TooLarge
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) > cap:
            if not whole:
                del data[cap:]
                break
            raise TooLarge
        left = deadlines.left()
        if left is not None and left <= 0:
            # Behind the network streams' own deadline (deadlines.py): should
            # that ever not be installed, a trickle still ends here.
            raise httpx.ReadTimeout("the request's deadline passed")
    return data


def may_hold_surrogates(content: bytes | bytearray) -> bool:
    """Whether a JSON text may decode to a string UTF-8 cannot encode. Without a
    backslash or an 0xED byte it cannot: two single-byte searches (memchr, ~1 µs
    a page) settle most pages; the regular expression (~4 µs a record, slower
    than json.loads) runs only on a page that has one of them."""
    if b"\\" not in content and b"\xed" not in content:
        return False
    return _SURROGATE.search(content) is not None


def redirect_target(base: str, location: str | None) -> str:
    """Where a redirect points, for an error: scheme, host, port and path only
    (no user info or query, which may carry credentials), escaped, short."""
    if not location:
        return "nowhere (no Location header)"
    try:
        parts = urlsplit(urljoin(base, location))
        port = f":{parts.port}" if parts.port else ""
        target = escape(f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}")
    except ValueError:
        return "a Location that is not a URL"
    return target if len(target) <= _SHOWN else target[: _SHOWN - 1] + "…"
