"""A real local HTTP server standing in for an identity provider: JWKS, discovery, introspection."""

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


@dataclass
class Request:
    """What one request to the IdP carried, for handlers and assertions."""

    method: str
    path: str
    query: dict[str, list[str]]
    form: dict[str, list[str]]
    headers: dict[str, str]


# A route answers (HTTP status, body); a dict or list body is sent as JSON, bytes as they are.
Route = Callable[[Request], tuple[int, Any]]


@dataclass
class LocalIdp:
    """Serves registered routes on 127.0.0.1; can be switched down, slow or garbled per test."""

    routes: dict[str, Route] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    requests: list[Request] = field(default_factory=list)
    down: bool = False
    delay_s: float = 0.0
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def serve_json(self, path: str, body: Any, status: int = 200) -> None:
        self.routes[path] = lambda _request: (status, body)

    def route(self, path: str, handler: Route) -> None:
        self.routes[path] = handler

    def hit_count(self, path: str) -> int:
        with self._lock:
            return self.hits[path]

    def _answer(self, request: Request) -> tuple[int, bytes]:
        with self._lock:
            self.hits[request.path] += 1
            self.requests.append(request)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.down:
            return 503, b'{"error": "down"}'
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
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def log_message(self, format: str, *args: Any) -> None:
            return  # keep test output quiet; requests are in idp.requests

    return Handler


@contextmanager
def local_idp() -> Iterator[LocalIdp]:
    idp = LocalIdp()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(idp))
    server.daemon_threads = True
    idp.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield idp
    finally:
        server.shutdown()
        server.server_close()
