"""A real local identity provider on 127.0.0.1: JWKS, discovery, introspection, any JSON route.

It can be switched down (503), garbled, made to answer a non-JWKS, closed (connection refused,
reopening on the same port) or slowed, and counts every request per path.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

JWKS_PATH = "/jwks"
# How every route answers: as registered; 503; bytes that are not JSON; a JSON value that is no
# JWKS; or not at all, the listener closed (connection refused).
MODES = ("up", "down", "garbage", "not_jwks", "refused")
GARBAGE = b"\x00\xff<html>not json at all\x1b[31m"
NOT_JWKS = b'{"keys": "none today", "kty": 7}'


@dataclass
class Request:
    """What one request to the IdP carried, for routes and assertions."""

    method: str
    path: str
    query: dict[str, list[str]]
    form: dict[str, list[str]]
    headers: dict[str, str]


# A route answers (HTTP status, body); a dict or list body is sent as JSON, bytes as they are.
Route = Callable[[Request], tuple[int, Any]]


@dataclass
class LocalIdp:
    """Serves registered routes on 127.0.0.1 while started; see `local_idp`."""

    routes: dict[str, Route] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    requests: list[Request] = field(default_factory=list)
    mode: str = "up"
    delay_s: float = 0.0
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    @property
    def jwks_url(self) -> str:
        return self.url(JWKS_PATH)

    @property
    def down(self) -> bool:
        """Whether every route answers 503 (the common failure, as a flag)."""
        return self.mode == "down"

    @down.setter
    def down(self, value: bool) -> None:
        self.set_mode("down" if value else "up")

    def serve_json(self, path: str, body: Any, status: int = 200) -> None:
        self.routes[path] = lambda _request: (status, body)

    def route(self, path: str, handler: Route) -> None:
        self.routes[path] = handler

    def publish(self, document: dict[str, Any]) -> None:
        """Serve `document` as the key set at JWKS_PATH: publishing a new one rotates keys."""
        self.serve_json(JWKS_PATH, document)

    def hit_count(self, path: str) -> int:
        with self._lock:
            return self.hits[path]

    def set_mode(self, mode: str) -> None:
        """Switch behaviour; "refused" closes the listener, leaving it reopens the same port."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        if mode == "refused":
            self.stop()
        elif self._server is None:
            self.start()
        self.mode = mode

    def start(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler_class(self))
        server.daemon_threads = True
        self.port = int(server.server_address[1])
        self._server = server
        threading.Thread(target=server.serve_forever, name="local-idp", daemon=True).start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def _answer(self, request: Request) -> tuple[int, bytes]:
        with self._lock:
            self.hits[request.path] += 1
            self.requests.append(request)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.mode == "down":
            return 503, b'{"error": "down"}'
        if self.mode == "garbage":
            return 200, GARBAGE
        if self.mode == "not_jwks":
            return 200, NOT_JWKS
        handler = self.routes.get(request.path)
        if handler is None:
            return 404, b'{"error": "not found"}'
        status, body = handler(request)
        return status, body if isinstance(body, bytes) else json.dumps(body).encode()


def _handler_class(idp: LocalIdp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _handle(self, method: str) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            request = Request(
                method,
                parts.path,
                parse_qs(parts.query),
                parse_qs(body),
                {k.lower(): v for k, v in self.headers.items()},
            )
            status, payload = idp._answer(request)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                pass  # the client gave up waiting (a slow-endpoint case): nothing to answer

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def log_message(self, format: str, *args: Any) -> None:
            return  # keep output quiet; requests are in idp.requests

    return Handler


@contextmanager
def local_idp(jwks: dict[str, Any] | None = None) -> Iterator[LocalIdp]:
    """A started LocalIdp, publishing `jwks` at JWKS_PATH when given; stopped on the way out."""
    idp = LocalIdp()
    if jwks is not None:
        idp.publish(jwks)
    idp.start()
    try:
        yield idp
    finally:
        idp.stop()
