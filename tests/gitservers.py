"""Real git servers on loopback for tests: smart HTTP with Basic auth (a
threaded WSGI wrapper around `git http-backend`), a real `sshd` with its own
host key, and bare remotes. Measured recipes: toolchain-notes §2, §3, Appendix.

Everything listens on 127.0.0.1 only and is stopped by its own handle.
"""

from __future__ import annotations

import base64
import getpass
import hmac
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

GIT_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
    "LC_ALL": "C",
}


def git(*args: str, cwd: Path | None = None, check: bool = True, **env: str) -> str:
    """Run git for test setup and assertions; stdout as text."""
    out = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**GIT_ENV, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if check and out.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({out.returncode}): {out.stderr}")
    return out.stdout


def bare_remote(path: Path) -> Path:
    """An empty bare repository with `main` as its default branch."""
    path.parent.mkdir(parents=True, exist_ok=True)
    git("init", "-q", "--bare", "-b", "main", str(path))
    return path


# --- smart HTTP ----------------------------------------------------------------


class BaseURL(str):
    """The server's base URL (`http://127.0.0.1:PORT/`); `.requests` lists
    (method, path, user or None, status) of every request served so far."""

    requests: list[tuple[str, str, str | None, str]]


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        if os.environ.get("GIT_HTTP_LOG"):
            super().log_message(format, *args)


def _read_body(environ: dict[str, Any]) -> bytes:
    inp = environ["wsgi.input"]
    if environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
        # wsgiref does not de-chunk; git sends chunked bodies above http.postBuffer.
        out = bytearray()
        while True:
            size = int(inp.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while inp.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(out)
            out += inp.read(size)
            inp.readline()
    n = int(environ.get("CONTENT_LENGTH") or 0)
    return bytes(inp.read(n)) if n else b""


def _git_http_app(
    root: Path,
    users: dict[str, str],
    log: list[tuple[str, str, str | None, str]],
    delay: float = 0.0,
) -> Callable[..., Iterable[bytes]]:
    lock = threading.Lock()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if delay:
            time.sleep(delay)  # a remote that far away (benchmarks/remote.py)
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "")
        auth, user = environ.get("HTTP_AUTHORIZATION", ""), None
        if auth.startswith("Basic "):
            try:
                name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                name, password = "", ""
            if name in users and hmac.compare_digest(users[name], password):
                user = name
        if user is None:
            with lock:
                log.append((method, path, None, "401"))
            start_response(
                "401 Unauthorized",
                [("WWW-Authenticate", 'Basic realm="git"'), ("Content-Type", "text/plain")],
            )
            return [b"auth required\n"]
        body = _read_body(environ)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "REMOTE_USER": user,  # enables receive-pack (push)
            "REMOTE_ADDR": environ.get("REMOTE_ADDR", ""),
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": environ.get("QUERY_STRING", ""),
            "CONTENT_TYPE": environ.get("CONTENT_TYPE", ""),
            "CONTENT_LENGTH": str(len(body)),
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
        }
        if environ.get("HTTP_CONTENT_ENCODING"):
            env["HTTP_CONTENT_ENCODING"] = environ["HTTP_CONTENT_ENCODING"]
        if environ.get("HTTP_GIT_PROTOCOL"):
            env["GIT_PROTOCOL"] = environ["HTTP_GIT_PROTOCOL"]
        proc = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
        )
        head, sep, payload = proc.stdout.partition(b"\r\n\r\n")
        if not sep:
            head, sep, payload = proc.stdout.partition(b"\n\n")
        status, headers = "200 OK", []
        for line in head.decode("latin-1").splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = value.strip()
            elif key:
                headers.append((key.strip(), value.strip()))
        with lock:
            log.append((method, path, user, status.split()[0]))
        start_response(status, headers)
        return [payload]

    return app


@contextmanager
def http_git_server(
    root: Path, user: str, password: str, *, delay: float = 0.0
) -> Iterator[BaseURL]:
    """Smart HTTP git with Basic auth serving the bare repos under `root`, each
    request answered `delay` seconds late.

    Yields the base URL; a repo `root/app.git` is at `url + "app.git"`.
    """
    log: list[tuple[str, str, str | None, str]] = []
    server = make_server(
        "127.0.0.1",
        0,
        _git_http_app(root, {user: password}, log, delay),
        server_class=_ThreadingWSGIServer,
        handler_class=_QuietHandler,
    )
    thread = threading.Thread(target=server.serve_forever, name="git-http", daemon=True)
    thread.start()
    url = BaseURL(f"http://127.0.0.1:{server.server_port}/")
    url.requests = log
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# --- SSH -------------------------------------------------------------------------


@dataclass
class SshGitServer:
    root: Path
    port: int
    user: str
    client_key: Path
    known_hosts: Path
    host_key: Path
    log_file: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def url_for(self, repo_name: str) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{self.root / repo_name}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )


def sshd_available() -> bool:
    return Path("/usr/sbin/sshd").exists() and shutil.which("ssh") is not None


@contextmanager
def ssh_git_server(root: Path) -> Iterator[SshGitServer]:
    """A real sshd on 127.0.0.1:<random> that serves git (git-shell) for one
    generated client key, running as the current user (toolchain-notes §3).

    Repos are the bare repos under `root`; config and keys live in `root/.sshd`.
    """
    conf_dir = root / ".sshd"
    conf_dir.mkdir(parents=True, exist_ok=True)
    host_key = conf_dir / "host_ed25519"
    client_key = conf_dir / "client_ed25519"
    _keygen(host_key, "test-host")
    _keygen(client_key, "test-client")
    user = getpass.getuser()
    client_pub = (client_key.with_suffix(".pub")).read_text().strip()
    authorized = conf_dir / "authorized_keys"
    authorized.write_text(
        f'restrict,command="git-shell -c \\"$SSH_ORIGINAL_COMMAND\\"" {client_pub}\n'
    )
    port = _free_port()
    log_file = conf_dir / "sshd.log"
    config = conf_dir / "sshd_config"
    config.write_text(
        "\n".join(
            [
                "ListenAddress 127.0.0.1",
                f"Port {port}",
                f"HostKey {host_key}",
                f"PidFile {conf_dir / 'sshd.pid'}",
                f"AuthorizedKeysFile {authorized}",
                "AuthenticationMethods publickey",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "UsePAM no",
                "StrictModes no",
                f"AllowUsers {user}",
                "AllowTcpForwarding no",
                "X11Forwarding no",
                "PermitTTY no",
                "LogLevel VERBOSE",
                "",
            ]
        )
    )
    known_hosts = conf_dir / "known_hosts"
    host_pub = " ".join(host_key.with_suffix(".pub").read_text().split()[:2])
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub}\n")
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation dir
    sshd = "/usr/sbin/sshd"
    subprocess.run([sshd, "-t", "-f", str(config)], check=True, capture_output=True)
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    server = SshGitServer(root, port, user, client_key, known_hosts, host_key, log_file, proc)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {log_file.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("sshd did not start listening") from None
                time.sleep(0.02)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- hostile HTTP: a redirecting remote and a server that records ----------------


@dataclass
class Recorded:
    """What a recording server received: (method, path, headers) per request."""

    url: str
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def received(self, text: str) -> bool:
        """Whether `text` arrived anywhere: a path or a header (Basic decoded too)."""
        for _method, path, headers in self.requests:
            if text in path or any(text in v for v in headers.values()):
                return True
            auth = headers.get("Authorization", "")
            if auth.startswith("Basic ") and text in base64.b64decode(auth[6:]).decode(
                "utf-8", "replace"
            ):
                return True
        return False


@contextmanager
def _serve(app: Callable[..., Iterable[bytes]], name: str) -> Iterator[str]:
    server = make_server(
        "127.0.0.1", 0, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def recording_server() -> Iterator[Recorded]:
    """A server that records every request and answers 401 asking for Basic
    credentials: what a host that should never see them would collect."""
    lock = threading.Lock()
    recorded = Recorded(url="")

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        headers = {
            key[5:].replace("_", "-").title(): str(value)
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        _read_body(environ)
        with lock:
            recorded.requests.append(
                (environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), headers)
            )
        start_response(
            "401 Unauthorized",
            [("WWW-Authenticate", 'Basic realm="git"'), ("Content-Type", "text/plain")],
        )
        return [b"auth required\n"]

    with _serve(app, "git-recorder") as url:
        recorded.url = url
        yield recorded


@contextmanager
def redirecting_server(to: str, status: str = "302 Found") -> Iterator[str]:
    """A server that answers every request with a redirect to the same path and
    query under `to` (another host:port)."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        query = environ.get("QUERY_STRING", "")
        location = to.rstrip("/") + environ.get("PATH_INFO", "") + (f"?{query}" if query else "")
        start_response(status, [("Location", location), ("Content-Type", "text/plain")])
        return [b"moved\n"]

    with _serve(app, "git-redirect") as url:
        yield url
