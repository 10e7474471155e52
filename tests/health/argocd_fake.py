"""A loopback Argo CD API server for the tests: real HTTP, threaded, on 127.0.0.1.

Serves `GET /api/v1/applications` and `GET /api/v1/stream/applications`
(newline-delimited JSON in HTTP/1.1 chunks, deliberately cut across chunk
boundaries) with bearer-token auth, label selectors, `appNamespace` and Argo
CD's `fields` filter, so the client's field list is tested too: a field it
forgets to ask for is missing here as it would be there.

Every body it sends is first checked against the API description in
../shared/reference/consumers/argocd-applications.swagger.json (additional
properties refused, so the fake cannot invent fields); where ../shared is
absent that check is skipped and `swagger_checked` says so.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import queue
import ssl
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.health.support import SWAGGER

END = object()  # put on `events` to end the current stream


def _strict(schema: Any) -> Any:
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


class SwaggerCheck:
    """Validators for the bodies of the two endpoints, from the swagger file."""

    def __init__(self, path: Path = SWAGGER) -> None:
        self.available = path.is_file()
        self._validators: dict[str, Any] = {}
        if not self.available:
            return
        import jsonschema

        doc = json.loads(path.read_text())
        definitions = _strict(doc["definitions"])
        stream = doc["paths"]["/api/v1/stream/applications"]["get"]["responses"]["200"]["schema"]
        for name, schema in (
            ("list", {"$ref": "#/definitions/v1alpha1ApplicationList"}),
            ("stream", _strict(stream)),
            ("error", {"$ref": "#/definitions/runtimeError"}),
        ):
            full = {**schema, "definitions": definitions}
            self._validators[name] = jsonschema.Draft4Validator(full)

    def errors(self, kind: str, body: Any) -> list[str]:
        if not self.available:
            return []
        return [
            f"{kind} {'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in self._validators[kind].iter_errors(body)
        ]


def select(
    apps: list[dict[str, Any]], selector: str, namespace: str | None
) -> list[dict[str, Any]]:
    """Argo CD's label selector, the forms the bridge uses: `key`, `key=value`."""
    out = []
    for app in apps:
        labels = app.get("metadata", {}).get("labels") or {}
        ok = True
        for term in filter(None, (t.strip() for t in selector.split(","))):
            key, eq, value = term.partition("=")
            ok = ok and key in labels and (not eq or labels[key] == value)
        if namespace and app.get("metadata", {}).get("namespace") != namespace:
            ok = False
        if ok:
            out.append(app)
    return out


def trim(doc: Any, fields: list[str]) -> Any:
    """Argo CD's `fields` filter: keep only the listed dot paths (lists mapped)."""
    if not fields:
        return doc

    def keep(node: Any, paths: list[list[str]]) -> Any:
        if any(not p for p in paths):
            return copy.deepcopy(node)
        if isinstance(node, list):
            return [keep(item, paths) for item in node]
        if not isinstance(node, dict):
            return node
        out = {}
        for key in node:
            rest = [p[1:] for p in paths if p[0] == key]
            if rest:
                out[key] = keep(node[key], rest)
        return out

    return keep(doc, [f.split(".") for f in fields])


@dataclass
class FakeArgoCD:
    token: str
    apps: list[dict[str, Any]] = field(default_factory=list)
    swagger: SwaggerCheck = field(default_factory=SwaggerCheck)
    events: queue.Queue[Any] = field(default_factory=queue.Queue)
    requests: list[tuple[str, dict[str, list[str]], str | None]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # swagger violations of what it sent
    fail_next: list[tuple[int, bytes]] = field(default_factory=list)  # (status, body) to send first
    list_body: bytes | None = None  # sent instead of the real list when set
    stream_prefix: list[bytes] = field(default_factory=list)  # raw lines before the ADDEDs
    chunk: int = 7  # bytes per chunk of stream lines: lines cut across chunks
    url: str = ""

    @property
    def swagger_checked(self) -> bool:
        return self.swagger.available

    def list_doc(self, selector: str, namespace: str | None) -> dict[str, Any]:
        return {
            "metadata": {"resourceVersion": "1000"},
            "items": select(self.apps, selector, namespace),
        }

    def check(self, kind: str, body: Any) -> None:
        self.problems += self.swagger.errors(kind, body)


def _handler(fake: FakeArgoCD) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            try:
                self._get()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client hung up first: its right

        def _get(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            fake.requests.append((parts.path, query, self.headers.get("Authorization")))
            if self.headers.get("Authorization") != f"Bearer {fake.token}":
                error = {
                    "error": "invalid session",
                    "code": 16,
                    "message": "invalid session: token is invalid",
                }
                fake.check("error", error)
                return self._send(401, json.dumps(error).encode())
            if fake.fail_next:
                status, body = fake.fail_next.pop(0)
                return self._send(status, body)
            selector = (query.get("selector") or [""])[0]
            namespace = (query.get("appNamespace") or [None])[0]
            fields = [f for f in (query.get("fields") or [""])[0].split(",") if f]
            if parts.path == "/api/v1/applications":
                return self._list(selector, namespace, fields)
            if parts.path == "/api/v1/stream/applications":
                return self._stream(selector, namespace, fields)
            return self._send(404, b'{"error": "Not Found", "code": 5, "message": "Not Found"}')

        def _list(self, selector: str, namespace: str | None, fields: list[str]) -> None:
            if fake.list_body is not None:
                return self._send(200, fake.list_body)
            doc = fake.list_doc(selector, namespace)
            fake.check("list", doc)
            self._send(200, json.dumps(trim(doc, fields)).encode())

        def _stream(self, selector: str, namespace: str | None, fields: list[str]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            lines = list(fake.stream_prefix)
            for app in select(fake.apps, selector, namespace):
                lines.append(self._event("ADDED", app, fields))
            self._write(b"".join(lines))
            while True:
                item = fake.events.get()
                if item is END:
                    break
                if isinstance(item, bytes):
                    self._write(item)
                    continue
                kind, app = item
                self._write(self._event(kind, app, fields))
            self.wfile.write(b"0\r\n\r\n")
            self.close_connection = True

        def _event(self, kind: str, app: dict[str, Any], fields: list[str]) -> bytes:
            doc = {"result": {"type": kind, "application": app}}
            fake.check("stream", doc)
            return json.dumps(trim(doc, fields)).encode() + b"\n"

        def _write(self, data: bytes) -> None:
            # Chunk boundaries fall anywhere in a line, as a proxy may cut them.
            for start in range(0, len(data), fake.chunk):
                piece = data[start : start + fake.chunk]
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                self.wfile.flush()

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (the CA is the certificate itself)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "argocd-fake")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "ca.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@contextmanager
def serve(fake: FakeArgoCD, *, tls: tuple[Path, Path] | None = None) -> Iterator[FakeArgoCD]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    fake.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="argocd-fake", daemon=True
    )
    thread.start()
    try:
        yield fake
    finally:
        fake.events.put(END)  # a stream handler still waiting ends
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def headers_of(requests: list[tuple[str, Mapping[str, list[str]], str | None]]) -> list[str | None]:
    return [auth for _, _, auth in requests]
