"""A real HTTP server on loopback for webhook tests: records every request (headers and JSON body) and
answers with scripted status codes (e.g. 500, 500, then the default 200)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Request:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]  # names lowercased
    raw_body: bytes
    status: int  # what the server answered

    @property
    def json(self):
        return json.loads(self.raw_body)

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer("POST")

    def do_GET(self) -> None:  # noqa: N802 (recorded too: a client that follows a redirect arrives with GET)
        self._answer("GET")

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        owner = self.server.owner
        with owner._lock:
            script = owner._scripts.get(self.path) or owner._script
            status = script.pop(0) if script else owner.defaults.get(self.path, owner.default_status)
            owner.requests.append(Request(method, self.path, {k.lower(): v for k, v in self.headers.items()}, body, status))
            location = owner.locations.get(self.path)
        payload = json.dumps({"status": status}).encode()
        self.send_response(status)
        if location and 300 <= status < 400:
            self.send_header("Location", location)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format, *args) -> None:  # quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: "HttpServer"


class HttpServer:
    """`start()` / `stop()`; `answer(500, 500)` scripts the next answers (to one path, or to any), after which
    the path's default (`always(path, 500)`) or `default_status` applies."""

    def __init__(self, port: int | None = None, default_status: int = 200):
        self.port = port or free_port()
        self.default_status = default_status
        self.requests: list[Request] = []
        self._script: list[int] = []
        self._scripts: dict[str, list[int]] = {}
        self.defaults: dict[str, int] = {}
        self.locations: dict[str, str] = {}
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str = "/") -> str:
        return f"http://{HOST}:{self.port}{path}"

    def start(self) -> "HttpServer":
        assert self._server is None, "already running"
        self._server = _Server((HOST, self.port), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = self._thread = None

    def answer(self, *statuses: int, path: str | None = None) -> None:
        """Answer the next requests (to `path`, or to any path) with these status codes, in order."""
        with self._lock:
            (self._scripts.setdefault(path, []) if path else self._script).extend(statuses)

    def always(self, path: str, status: int) -> None:
        """Answer every request to `path` with `status` once its script is used up."""
        with self._lock:
            self.defaults[path] = status

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        """Answer every request to `path` with a redirect to `location`."""
        with self._lock:
            self.defaults[path] = status
            self.locations[path] = location

    def received(self, path: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    server = HttpServer().start()
    try:
        yield server
    finally:
        server.stop()
