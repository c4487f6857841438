"""A real local JWKS endpoint on 127.0.0.1 that can be switched down, slow, garbled or rotated."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# How the endpoint answers: the document, 503, garbage bytes, a JSON value that is no JWKS,
# or a closed listener (connection refused).
MODES = ("up", "down", "garbage", "not_jwks", "refused")
GARBAGE = b"\x00\xff<html>not json at all\x1b[31m"


class JwksServer:
    """Serves one JWKS document at /jwks; `mode` and `delay_s` may change at any time."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.mode = "up"
        self.delay_s = 0.0
        self.hits = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks"

    def start(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        server.daemon_threads = True
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def set_mode(self, mode: str) -> None:
        """Switch behaviour; "refused" closes the listener, leaving it reopens the same port."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        if mode == "refused" and self._server is not None:
            self.stop()
        elif mode != "refused" and self._server is None:
            self.start()
        self.mode = mode

    def hit_count(self) -> int:
        with self._lock:
            return self.hits

    def answer(self) -> tuple[int, bytes]:
        with self._lock:
            self.hits += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.mode == "down":
            return 503, b'{"error": "down"}'
        if self.mode == "garbage":
            return 200, GARBAGE
        if self.mode == "not_jwks":
            return 200, json.dumps({"keys": "none today", "kty": 7}).encode()
        return 200, json.dumps(self.document).encode()


def _handler(owner: JwksServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = owner.answer() if self.path == "/jwks" else (404, b"{}")
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the gateway gave up waiting (a slow-endpoint test): nothing to do

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@contextmanager
def jwks_server(document: dict[str, Any]) -> Iterator[JwksServer]:
    server = JwksServer(document)
    server.start()
    try:
        yield server
    finally:
        server.stop()
