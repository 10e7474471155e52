"""Fault injection for the local control plane: misbehaving answers on demand.

Tests arm rules under `/_faults` (server.create_api serves them when
`start_in_thread(faults=True)`, never `serve`); `FaultInjector`, outermost of
the ASGI layers, applies the first rule that fires to a request: a status
(500, 429), a stall or a reset, garbage or a truncated body, rewritten pages
(shifted, dropped, wrong types), and the hostile answers of issue #20 (a body
that trickles, never ends, nests deep or is padded huge, extra records, a
redirect elsewhere, one record rewritten).

Must not: touch the store or the API's rules; it only rewrites what goes over
the wire. Must not import httpx (only the client does).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import struct
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Doc = dict[str, Any]
NonNegInt = Annotated[int, Field(ge=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


FaultMode = Literal[
    "500",
    "429",
    "slow",
    "reset",
    "garbage",
    "truncated",
    "wrong-types",
    "empty",
    "shift",
    "drop",
    # Hostile answers (tests/hostile): a body that trickles, never ends, nests
    # deep, is padded past any sane size, a page with records added (past the
    # `limit` asked for, or paging on), a redirect elsewhere, one record rewritten.
    "trickle",
    "endless",
    "deep",
    "oversized",
    "extra-records",
    "redirect",
    "patch",
]


class FaultRule(_Model):
    path: str = Field(pattern=r"^/")
    mode: FaultMode
    times: NonNegInt | None = 1  # None: every matching request
    after: NonNegInt = 0
    seconds: float = Field(2.0, gt=0, le=60)  # how long `slow` stalls; `trickle`: per byte
    retry_after: NonNegInt = 1  # the Retry-After of `429`
    method: str | None = None  # None: any method
    depth: int = Field(100_000, ge=1, le=10_000_000)  # `deep`: levels of nesting
    at: str | None = None  # `deep`: a field of the record (dotted) instead of the whole body
    size: int = Field(64 << 20, ge=0, le=16 << 30)  # `oversized`: bytes of padding
    count: NonNegInt = 100  # `extra-records`: records added to the page
    location: str | None = None  # `redirect`: the Location (an absolute URL)
    record: str | None = None  # `patch`, `deep` with `at`: this id (None: the first record)
    changes: dict[str, Any] | None = None  # `patch`: dotted field path -> new value

    @field_validator("mode", mode="before")
    @classmethod
    def _status_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value


class FaultsRequest(_Model):
    rules: list[FaultRule]


@dataclass
class _Armed:
    rule: FaultRule
    seen: int = 0
    hits: int = 0


@dataclass
class FaultBook:
    """The active fault rules and how often each has matched and fired."""

    _rules: list[_Armed] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def set(self, rules: list[FaultRule]) -> None:
        with self._lock:
            self._rules = [_Armed(rule) for rule in rules]

    def snapshot(self) -> list[Doc]:
        with self._lock:
            return [{**a.rule.model_dump(), "seen": a.seen, "hits": a.hits} for a in self._rules]

    def match(self, method: str, path: str) -> FaultRule | None:
        """The rule that fires for this request, counting it on every rule it matches."""
        fired: FaultRule | None = None
        with self._lock:
            for armed in self._rules:
                rule = armed.rule
                prefix = rule.path.rstrip("/")
                if not (path == rule.path or path.startswith(prefix + "/")):
                    continue
                if rule.method is not None and rule.method.upper() != method.upper():
                    continue
                armed.seen += 1
                if fired is None and armed.seen > rule.after:
                    if rule.times is None or armed.hits < rule.times:
                        armed.hits += 1
                        fired = rule
        return fired


Apply = Callable[[ASGIApp, FaultRule, Scope, Receive, Send], Awaitable[None]]


class FaultInjector:
    """Applies the first firing rule of `book` to a request (paths under /_faults exempt)."""

    def __init__(self, app: ASGIApp, book: FaultBook) -> None:
        self.app = app
        self.book = book

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_faults"):
            await self.app(scope, receive, send)
            return
        rule = self.book.match(scope["method"], scope["path"])
        if rule is None:
            await self.app(scope, receive, send)
            return
        await _MODES[rule.mode](self.app, rule, scope, receive, send)


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type), *(extra or [])]
    await _send_whole(send, status, headers, body)


async def _send_whole(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _capture(
    app: ASGIApp, scope: Scope, receive: Receive
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Run the app and keep its whole response, so a fault can rewrite it."""
    status = 500
    headers: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []

    async def keep(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, keep)
    return status, headers, b"".join(chunks)


async def _read_request(receive: Receive) -> list[Message]:
    messages = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body"):
            return messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay


async def _disconnected_within(receive: Receive, seconds: float) -> bool:
    """Whether the client goes away within `seconds` (the request body already read)."""
    try:
        async with asyncio.timeout(seconds):
            while (await receive())["type"] != "http.disconnect":
                pass
    except TimeoutError:
        return False
    return True


async def _fault_500(app: ASGIApp, rule: FaultRule, scope: Scope, r: Receive, send: Send) -> None:
    await _respond(send, 500, b"Internal Server Error", b"text/plain; charset=utf-8")


async def _fault_429(app: ASGIApp, rule: FaultRule, scope: Scope, r: Receive, send: Send) -> None:
    body = json.dumps({"detail": "Rate limit exceeded."}).encode()
    retry_after = (b"retry-after", str(rule.retry_after).encode())
    await _respond(send, 429, body, b"application/json", [retry_after])


async def _fault_slow(
    app: ASGIApp, rule: FaultRule, scope: Scope, receive: Receive, send: Send
) -> None:
    request = await _read_request(receive)
    # Stall, but stop as soon as the client gives up, so shutdown never waits on us.
    if await _disconnected_within(receive, rule.seconds):
        return
    await app(scope, _replay(request, receive), send)


def _transport_of(send: Send) -> asyncio.Transport | None:
    # uvicorn's h11 protocol hands the app its bound `RequestResponseCycle.send`;
    # its owner holds the connection's transport. Nothing in ASGI exposes it.
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    return transport if isinstance(transport, asyncio.Transport) else None


async def _fault_reset(
    app: ASGIApp, rule: FaultRule, scope: Scope, receive: Receive, send: Send
) -> None:
    transport = _transport_of(send)
    if transport is None:
        raise RuntimeError("the reset fault needs uvicorn's h11 protocol (http='h11')")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger 0: close() sends RST instead of FIN, a real "connection reset by peer".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    # Let uvicorn see the connection gone, so it neither logs nor answers 500.
    await _disconnected_within(receive, 2.0)


async def _fault_garbage(
    app: ASGIApp, rule: FaultRule, scope: Scope, r: Receive, send: Send
) -> None:
    body = b"<html><head><title>502 Bad Gateway</title></head><body>upstream said no</body></html>"
    await _respond(send, 200, body, b"text/html")


async def _fault_empty(app: ASGIApp, rule: FaultRule, scope: Scope, r: Receive, send: Send) -> None:
    await _respond(send, 200, b'{"resources": [], "offset": 0}', b"application/json")


async def _fault_truncated(
    app: ASGIApp, rule: FaultRule, scope: Scope, receive: Receive, send: Send
) -> None:
    status, headers, body = await _capture(app, scope, receive)
    await _send_whole(send, status, headers, body[: len(body) // 2])


async def _fault_wrong_types(
    app: ASGIApp, rule: FaultRule, scope: Scope, receive: Receive, send: Send
) -> None:
    status, headers, body = await _capture(app, scope, receive)
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        resources = data.get("resources")
        target = resources[0] if isinstance(resources, list) and resources else data
        if isinstance(target, dict):
            target["name"] = 42
        body = json.dumps(data).encode()
    await _send_whole(send, status, headers, body)


async def _fault_shift(
    app: ASGIApp, rule: FaultRule, scope: Scope, receive: Receive, send: Send
) -> None:
    # As if one deployment had been inserted at the front since the previous
    # page: this page starts one record early, so that record repeats.
    await _shifted(app, scope, receive, send, -1)


async def _fault_drop(
    app: ASGIApp, rule: FaultRule, scope: Scope, receive: Receive, send: Send
) -> None:
    # As if one deployment of an earlier page had been deleted since that page
    # was read: this page starts one record late, so one record is never listed
    # and nothing in the answer shows it (the hard case for a lister).
    await _shifted(app, scope, receive, send, +1)


async def _shifted(app: ASGIApp, scope: Scope, receive: Receive, send: Send, by: int) -> None:
    query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    offset = next((int(v) for k, v in query if k == "offset" and v.isdigit()), 0)
    if offset > 0:
        query = [(k, str(offset + by) if k == "offset" else v) for k, v in query]
        scope = {**scope, "query_string": urlencode(query).encode("latin-1")}
    status, headers, body = await _capture(app, scope, receive)
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("resources"), list):
        data["offset"] = offset + len(data["resources"])
        body = json.dumps(data).encode()
    await _send_whole(send, status, headers, body)


# --- hostile answers ---------------------------------------------------------------
# Each stops as soon as the client goes away: a test's server thread must never
# spin on a body nobody reads (uvicorn's `send` drops messages once the client
# is gone, silently), and flow control keeps a client that stops reading from
# growing the server instead.

_CHUNK = 64 << 10


def _watch_disconnect(receive: Receive) -> asyncio.Event:
    """An event set once the client disconnects (the request body already read)."""
    gone = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    task = asyncio.get_running_loop().create_task(watch())
    task.add_done_callback(lambda _: gone.set())
    return gone


async def _start(send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def _body(send: Send, chunk: bytes, *, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": chunk, "more_body": more})


async def _fault_trickle(
    app: ASGIApp, rule: FaultRule, scope: Scope, receive: Receive, send: Send
) -> None:
    # The real answer, one byte every `seconds`: each read gets a byte well
    # within a per-read timeout, so only a deadline on the whole request ends it.
    status, headers, body = await _capture(app, scope, receive)
    gone = _watch_disconnect(receive)
    headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
    await _start(send, status, [*headers, (b"content-length", str(len(body)).encode())])
    for i in range(len(body)):
        await _body(send, body[i : i + 1], more=i + 1 < len(body))
        try:
            async with asyncio.timeout(rule.seconds):
                await gone.wait()
            return
        except TimeoutError:
            pass


async def _fault_endless(
    app: ASGIApp, rule: FaultRule, scope: Scope, receive: Receive, send: Send
) -> None:
    # A page that starts as JSON and never ends (chunked, no length): only a
    # cap on the bytes read while streaming stops a client from buffering it all.
    await _read_request(receive)
    gone = _watch_disconnect(receive)
    await _start(send, 200, [(b"content-type", b"application/json")])
    await _body(send, b'{"resources": [')
    filler = b" " * _CHUNK
    while not gone.is_set():
        await _body(send, filler)
        await asyncio.sleep(0)


async def _fault_oversized(
    app: ASGIApp, rule: FaultRule, scope: Scope, receive: Receive, send: Send
) -> None:
    # The real answer followed by `size` bytes of JSON whitespace: valid, and
    # announced in Content-Length, but larger than any honest answer.
    status, headers, body = await _capture(app, scope, receive)
    gone = _watch_disconnect(receive)
    headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
    total = len(body) + rule.size
    await _start(send, status, [*headers, (b"content-length", str(total).encode())])
    await _body(send, body, more=rule.size > 0)
    left = rule.size
    while left > 0 and not gone.is_set():
        n = min(_CHUNK, left)
        left -= n
        await _body(send, b" " * n, more=left > 0)
        await asyncio.sleep(0)


def _nested(depth: int) -> str:
    """JSON text of `depth` objects, each inside the one before."""
    return '{"x":' * (depth - 1) + "{}" + "}" * (depth - 1)


async def _fault_deep(
    app: ASGIApp, rule: FaultRule, scope: Scope, receive: Receive, send: Send
) -> None:
    if rule.at is None:
        # The whole answer: arrays nested `depth` deep (a recursive parser overflows).
        await _read_request(receive)
        body = ("[" * rule.depth + "]" * rule.depth).encode()
        await _respond(send, 200, body, b"application/json")
        return
    # One record's field: a placeholder, swapped for the nested text after
    # encoding (json.dumps itself would recurse once per level).
    marker = "deep-" + secrets.token_hex(8)
    await _rewritten(app, rule, scope, receive, send, {rule.at: marker}, (marker, rule.depth))


async def _fault_patch(
    app: ASGIApp, rule: FaultRule, scope: Scope, receive: Receive, send: Send
) -> None:
    await _rewritten(app, rule, scope, receive, send, rule.changes or {}, None)


async def _rewritten(
    app: ASGIApp,
    rule: FaultRule,
    scope: Scope,
    receive: Receive,
    send: Send,
    changes: dict[str, Any],
    deep: tuple[str, int] | None,
) -> None:
    """The real answer with `changes` made to one record: the one whose id is
    `rule.record` (or the first) of a page, or the answer itself when it is one
    object (a listener, a deployment) and has that id or no `record` is given."""
    status, headers, body = await _capture(app, scope, receive)
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    target: Any = None
    if isinstance(data, dict) and isinstance(data.get("resources"), list):
        records = [r for r in data["resources"] if isinstance(r, dict)]
        target = next((r for r in records if rule.record in (None, r.get("id"))), None)
    elif isinstance(data, dict) and rule.record in (None, data.get("id")):
        target = data
    if target is not None:
        for path, value in changes.items():
            _set_path(target, path, value)
        # ensure_ascii: a lone surrogate in `changes` goes out as its \u escape.
        text = json.dumps(data)
        if deep is not None:
            marker, depth = deep
            text = text.replace(json.dumps(marker), _nested(depth))
        body = text.encode()
    await _send_whole(send, status, headers, body)


def _set_path(doc: Any, path: str, value: Any) -> None:
    """`a.b.0.c` = value; missing (or null) objects and lists on the way are made."""
    parts = path.split(".")
    node = doc
    for part, following in pairwise(parts):
        child: Any = _get_part(node, part)
        if not isinstance(child, dict | list):
            child = [] if following.isdigit() else {}
            _put_part(node, part, child)
        node = child
    _put_part(node, parts[-1], value)


def _get_part(node: Any, part: str) -> Any:
    if isinstance(node, list):
        index = int(part)
        return node[index] if index < len(node) else None
    return node.get(part)


def _put_part(node: Any, part: str, value: Any) -> None:
    if isinstance(node, list):
        index = int(part)
        node.extend([None] * (index + 1 - len(node)))
        node[index] = value
    else:
        node[part] = value


async def _fault_extra_records(
    app: ASGIApp, rule: FaultRule, scope: Scope, receive: Receive, send: Send
) -> None:
    # `count` records added to the page (past the `limit` asked for, or filling
    # it so that paging goes on), each a copy of the first with a fresh id, owned
    # by a listener that does not exist: a client that accepts them changes
    # nothing for its own listener, but must count them and refuse a page too big.
    status, headers, body = await _capture(app, scope, receive)
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("resources"), list):
        resources = data["resources"]
        template = resources[0] if resources and isinstance(resources[0], dict) else {}
        stranger = str(uuid.uuid4())
        for i in range(rule.count):
            extra = json.loads(json.dumps(template))
            extra.update(id=str(uuid.uuid4()), name=f"extra-{i:05d}", source="external_docker")
            _set_path(extra, "source_config.listener_id", stranger)
            resources.append(extra)
        data["offset"] = int(data.get("offset", 0)) + rule.count
        body = json.dumps(data).encode()
    await _send_whole(send, status, headers, body)


async def _fault_redirect(
    app: ASGIApp, rule: FaultRule, scope: Scope, receive: Receive, send: Send
) -> None:
    await _read_request(receive)
    location = (rule.location or "http://127.0.0.1:9/").encode("latin-1")
    body = b"<html><body>Moved</body></html>"
    await _respond(send, 302, body, b"text/html", [(b"location", location)])


_MODES: dict[str, Apply] = {
    "500": _fault_500,
    "429": _fault_429,
    "slow": _fault_slow,
    "reset": _fault_reset,
    "garbage": _fault_garbage,
    "truncated": _fault_truncated,
    "wrong-types": _fault_wrong_types,
    "empty": _fault_empty,
    "shift": _fault_shift,
    "drop": _fault_drop,
    "trickle": _fault_trickle,
    "endless": _fault_endless,
    "deep": _fault_deep,
    "oversized": _fault_oversized,
    "extra-records": _fault_extra_records,
    "redirect": _fault_redirect,
    "patch": _fault_patch,
}
