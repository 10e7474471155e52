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
import ssl
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Self
from urllib.parse import quote

import httpx

from bridge.config import ControlPlaneSettings
from bridge.controlplane.bounds import (
    Limits,
)
from bridge.controlplane.http import Requests, _Reply, _snippet, decode_json
from bridge.errors import (
    ControlPlaneError,
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

log = logging.getLogger("bridge.controlplane")

PAGE_SIZE = 100  # the API's maximum `limit`
# Page requests of a listing in flight at once: one round trip to the control
# plane costs a listing of 10,000 records 1/READ_AHEAD of 100 round trips.
READ_AHEAD = 3
MAX_PAGES = 10_000  # of revisions (admin helper): beyond that the server is looping


@dataclass(frozen=True)
class Listing:
    """A complete listing of one listener's deployments (never a partial one)."""

    listener: Listener
    deployments: tuple[Deployment, ...]
    invalid: tuple[InvalidDeployment, ...]


def tls_verification(url: str) -> ssl.SSLContext | bool:
    """How the client checks TLS for a control plane at `url`.

    https: httpx's default (its CA bundle, or SSL_CERT_FILE / SSL_CERT_DIR).
    A plain-http control plane (the local one, or one inside the cluster) is
    never spoken to over TLS: every request goes to `url` and no redirect is
    followed. Loading a CA bundle for it would cost ~55 ms, a tenth of an
    unchanged `run --once` process, for nothing. It gets a context that trusts
    no CA at all, so TLS through it (an https:// proxy) fails closed."""
    if url.lower().startswith("https:"):
        return True
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname, no CAs


class _ReadAhead:
    """The listing's page requests in flight, by offset: READ_AHEAD of them.

    Each page names where the next one starts (`offset`); pages after that
    are asked for too, on the guess that each full page is followed by the next
    PAGE_SIZE records (what offset paging does). A guess the server's answer
    contradicts is dropped, never used: pages are still read in the order the
    server chains them. On a control plane a round trip away (~50-200 ms a
    page), a listing of 10,000 took 100 round trips one after the other; on
    loopback the server and the bridge each waited on the other.

    The next page is decoded where it is read, as before; pages further ahead
    wait as bytes (`_Reply.body`, at most `maxResponseMb` each) and are
    decoded as the listing reaches them, so no more than two pages are ever
    decoded at once."""

    def __init__(self, request: Callable[[int, bool], Future[_Reply]]) -> None:
        self._request = request
        self._flight: dict[int, Future[_Reply]] = {}
        self._dropped: list[Future[_Reply]] = []

    def take(self, offset: int) -> _Reply:
        future = self._flight.pop(offset, None) or self._request(offset, False)
        return future.result()

    def ask(self, offset: int, pages: int) -> None:
        """The `pages` pages from `offset` on asked for; those the chain has
        passed or that are off it are dropped."""
        wanted = {offset + PAGE_SIZE * i for i in range(pages)}
        for at in [at for at in self._flight if at not in wanted]:
            self._dropped.append(self._flight.pop(at))
        for at in sorted(wanted - self._flight.keys()):
            # Only the next page is decoded where it is read: the others wait as bytes.
            self._flight[at] = self._request(at, at != offset)

    def drop(self) -> None:
        """Every request not taken waited for (its answer or error is moot).
        Not cancelled: whether a request was sent must not depend on timing."""
        wait([*self._dropped, *self._flight.values()])
        self._flight.clear()
        self._dropped.clear()


class _Inconsistent(Exception):
    """A page contradicts the pages before it; the listing restarts once."""


@dataclass(frozen=True)
class _Entry:
    """One record of a page, as the listing takes it."""

    raw_id: str  # the id as sent: tells records apart
    dep_id: str  # the id as shown in messages
    name: str
    parsed: Deployment | InvalidDeployment | None  # None: another listener's


@dataclass(frozen=True)
class _Page:
    """One page of the listing, parsed: what the next listing reuses when the
    page's bytes have not changed."""

    size: int  # records on the page (the listener's or not)
    next_offset: int
    entries: list[_Entry]

    def replay(
        self, seen: set[str], deployments: list[Deployment], invalid: list[InvalidDeployment]
    ) -> None:
        for entry in self.entries:
            if entry.raw_id in seen:
                raise _Inconsistent(
                    f"deployment {entry.name!r} ({entry.dep_id}) appeared on two pages"
                )
            seen.add(entry.raw_id)
            if isinstance(entry.parsed, Deployment):
                deployments.append(entry.parsed)
            elif entry.parsed is not None:
                invalid.append(entry.parsed)


class ControlPlaneClient(Requests):
    """The listener's view of the control plane: its deployments, complete or not at all."""

    def __init__(self, http: httpx.Client, **kwargs: Any) -> None:
        super().__init__(http, **kwargs)
        self._pager: ThreadPoolExecutor | None = None  # reads the next page ahead
        # The pages of the last complete listing, by (listener, offset, body digest).
        self._pages: dict[tuple[str, int, bytes], _Page] = {}

    @classmethod
    def from_settings(
        cls,
        settings: ControlPlaneSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        on_response: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> Self:
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
            verify=tls_verification(settings.url),
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
        super().close()

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
        pages: dict[tuple[str, int, bytes], _Page] = {}
        offset = records = full = 0
        ahead = _ReadAhead(lambda at, hold: self._page(listener, at, hold=hold))
        try:
            while True:
                reply = ahead.take(offset)
                if reply.body is not None:
                    reply = self._decoded(listener, offset, reply)
                self._refuse_4xx("GET", reply)
                page = self._read_page(listener, offset, reply)
                records += page.size
                self._refuse_page(reply.url, page.size, records)
                if page.size == PAGE_SIZE:
                    # The next pages download while this one is parsed, at the
                    # offset this one names and the pages after it: one more
                    # with each full page, up to READ_AHEAD, so that a short
                    # listing asks for no page past its end, a long one two.
                    full += 1
                    ahead.ask(page.next_offset, min(full, READ_AHEAD))
                page.replay(seen, deployments, invalid)
                if reply.body_key is not None:
                    pages[(listener.id, offset, reply.body_key)] = page
                if page.size < PAGE_SIZE:
                    self._pages = pages  # only a complete listing's pages are kept
                    return Listing(listener, tuple(deployments), tuple(invalid))
                offset = page.next_offset
        finally:
            # Pages asked for and not used (past the end, or the listing
            # failed): no request is left running on the client.
            ahead.drop()

    def _read_page(self, listener: Listener, offset: int, reply: _Reply) -> _Page:
        """A page's records, parsed, or as the last listing parsed the same bytes.

        An unchanged page is most of an unchanged cycle's listing (~40 us a
        record to parse): the same bytes at the same offset for the same
        listener say the same thing, so they are not decoded or parsed again
        (a digest of the body, `body_key`, tells)."""
        if reply.data is None and reply.body_key is not None:
            known = self._pages.get((listener.id, offset, reply.body_key))
            if known is not None:
                return known
        resources, next_offset = _envelope(reply.data, offset, reply.url)
        entries = [self._take(raw, listener, reply) for raw in resources]
        return _Page(size=len(resources), next_offset=next_offset, entries=entries)

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

    def _page(self, listener: Listener, offset: int, *, hold: bool = False) -> Future[_Reply]:
        """GET one page of deployments on one of the client's READ_AHEAD threads;
        `hold`: its body comes back as bytes, decoded by `_decoded` in turn."""
        if self._pager is None:
            self._pager = ThreadPoolExecutor(max_workers=READ_AHEAD, thread_name_prefix="page")
        return self._pager.submit(self._get_page, listener, offset, hold)

    def _get_page(self, listener: Listener, offset: int, hold: bool = False) -> _Reply:
        params = {"limit": PAGE_SIZE, "offset": offset}
        last = self._pages  # the last complete listing's: only read while this one runs

        def known(key: bytes) -> bool:
            return (listener.id, offset, key) in last

        return self._call("GET", "/v2/deployments", params, known=known, hold=hold)

    def _decoded(self, listener: Listener, offset: int, reply: _Reply) -> _Reply:
        """A page read ahead as bytes, decoded; if they do not decode, the page is
        asked for again here, with the retries and the error of any request."""
        assert reply.body is not None
        try:
            data = decode_json(reply.body)
        except ValueError as e:
            log.debug("GET %s: a page read ahead is asked for again: %s", reply.url, e)
            return self._get_page(listener, offset)
        return replace(reply, data=data, body=None)

    def _take(self, raw: Any, listener: Listener, reply: _Reply) -> _Entry:
        """What one record of a page is: the listener's deployment, a record that
        cannot be parsed (kept as present), or another listener's (None)."""
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
        claim = _claims(raw, listener.id)
        if claim is False:
            return _Entry(raw_id, dep_id, name, None)
        if claim is None:
            return _Entry(
                raw_id,
                dep_id,
                name,
                InvalidDeployment(
                    "its `source` or `source_config.listener_id` is malformed, so it cannot "
                    f"be told whether it belongs to listener {listener.id}",
                    deployment_id=dep_id,
                    deployment_name=name,
                    hint="fix the deployment in the control plane; until then its folder is kept",
                ),
            )
        try:
            return _Entry(
                raw_id, dep_id, name, parse_deployment(raw, check_text=reply.suspect_text)
            )
        except InvalidDeployment as e:
            return _Entry(raw_id, dep_id, name, e)
        except (TypeError, ValueError) as e:
            return _Entry(
                raw_id,
                dep_id,
                name,
                InvalidDeployment(
                    f"cannot be parsed: {e}",
                    deployment_id=dep_id,
                    deployment_name=name,
                    hint="the control plane sent a malformed deployment; it is skipped until fixed",
                ),
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

    def revision_created_at(self, deployment_id: str, revision_id: str) -> datetime | None:
        """The control plane's `created_at` of one revision: where the health
        read-back's road of that revision starts (SPEC §8, lead time). None when
        the control plane no longer has it (404); ControlPlaneError when it
        cannot tell. Counts against the cycle's budget like the listing."""
        try:
            uuid.UUID(deployment_id)
            uuid.UUID(revision_id)
        except ValueError:
            return None  # no control plane object has such an id
        reply = self._call(
            "GET",
            f"/v2/deployments/{quote(deployment_id, safe='')}/revisions/"
            f"{quote(revision_id, safe='')}",
        )
        if reply.status == 404:
            return None
        self._refuse_4xx("GET", reply)
        raw = reply.data
        answered = raw.get("id") if isinstance(raw, Mapping) else None
        if not isinstance(answered, str) or answered.lower() != revision_id.lower():
            raise self._error(
                ControlPlaneError, f"GET {reply.url}: the answer is not revision {revision_id}"
            )
        assert isinstance(raw, Mapping)
        return _timestamp(raw.get("created_at"), reply.url)

    # --- admin helpers (demo, tests, scripts) -------------------------------

    # --- one logical request, with retries ------------------------------------

    # --- bounds ---------------------------------------------------------------------


def _timestamp(value: Any, url: str) -> datetime:
    """An ISO 8601 `created_at`; one without an offset is UTC (FastAPI writes
    naive datetimes that way)."""
    if isinstance(value, str) and len(value) <= 64:
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    raise ControlPlaneError(f"GET {url}: `created_at` is not a timestamp")


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


def _record(raw: Any) -> str:
    """A short quote of a malformed record for an error (never the whole of it)."""
    try:
        text = json.dumps(raw, default=str)
    except (ValueError, RecursionError):
        return "a record nested too deeply to quote"
    return _snippet(text)
